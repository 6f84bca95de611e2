// Package inventory collects what the agent replicates about its computer,
// as the hashed sections of the wire protocol. Parsers of the system files
// are pure functions (tested and fuzzed on their own); reading them is
// per platform. Platforms without a collector yet return ErrNotSupported.
package inventory

import (
	"crypto/sha256"
	"errors"
	"runtime"

	"google.golang.org/protobuf/proto"

	"github.com/mamori/mamori/internal/agentproto"
)

// ErrNotSupported is returned on platforms whose collector is not written
// yet.
var ErrNotSupported = errors.New("inventory collection is not supported on " + runtime.GOOS + " yet")

// HashLen is the length of a section hash.
const HashLen = 16

// Options tune collection.
type Options struct {
	// Root prefixes every file read (tests point it at a fixture tree).
	Root         string
	AgentVersion string
	Instance     string
	Fingerprint  string
	StartedUnix  int64
	// Agent, when set, fills further fields of the agent section (the
	// detection engine and its updates).
	Agent func(*agentproto.AgentInfo)
}

// Snapshot is one collection: every section with its hash.
type Snapshot struct {
	Sections []*agentproto.InventorySection
}

// Hashes returns the section hashes by section.
func (s *Snapshot) Hashes() map[agentproto.Section][]byte {
	m := make(map[agentproto.Section][]byte, len(s.Sections))
	for _, sec := range s.Sections {
		m[sec.Section] = sec.Hash
	}
	return m
}

// Hash returns the hash of a section body: SHA-256 of its deterministic
// protobuf encoding, truncated to HashLen bytes.
func Hash(m proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(err) // only fails for invalid UTF-8 in strings; sections are sanitised
	}
	sum := sha256.Sum256(b)
	return sum[:HashLen]
}

// NewSnapshot builds hashed sections from bodies. Nil bodies are skipped.
func NewSnapshot(sys *agentproto.SystemInfo, hw *agentproto.HardwareInfo, net *agentproto.NetworkInfo,
	sw *agentproto.SoftwareInfo, users *agentproto.UsersInfo, ag *agentproto.AgentInfo) *Snapshot {
	s := &Snapshot{}
	add := func(sec agentproto.Section, m proto.Message, wrap func() *agentproto.InventorySection) {
		v := wrap()
		v.Section, v.Hash = sec, Hash(m)
		s.Sections = append(s.Sections, v)
	}
	if sys != nil {
		add(agentproto.Section_SECTION_SYSTEM, sys, func() *agentproto.InventorySection {
			return &agentproto.InventorySection{Body: &agentproto.InventorySection_System{System: sys}}
		})
	}
	if hw != nil {
		add(agentproto.Section_SECTION_HARDWARE, hw, func() *agentproto.InventorySection {
			return &agentproto.InventorySection{Body: &agentproto.InventorySection_Hardware{Hardware: hw}}
		})
	}
	if net != nil {
		add(agentproto.Section_SECTION_NETWORK, net, func() *agentproto.InventorySection {
			return &agentproto.InventorySection{Body: &agentproto.InventorySection_Network{Network: net}}
		})
	}
	if sw != nil {
		add(agentproto.Section_SECTION_SOFTWARE, sw, func() *agentproto.InventorySection {
			return &agentproto.InventorySection{Body: &agentproto.InventorySection_Software{Software: sw}}
		})
	}
	if users != nil {
		add(agentproto.Section_SECTION_USERS, users, func() *agentproto.InventorySection {
			return &agentproto.InventorySection{Body: &agentproto.InventorySection_Users{Users: users}}
		})
	}
	if ag != nil {
		add(agentproto.Section_SECTION_AGENT, ag, func() *agentproto.InventorySection {
			return &agentproto.InventorySection{Body: &agentproto.InventorySection_Agent{Agent: ag}}
		})
	}
	return s
}

func agentInfo(o Options) *agentproto.AgentInfo {
	ai := &agentproto.AgentInfo{
		Version:             o.AgentVersion,
		CapabilityVersion:   agentproto.CapabilityVersion,
		Instance:            o.Instance,
		HardwareFingerprint: o.Fingerprint,
		StartedUnix:         o.StartedUnix,
	}
	if o.Agent != nil {
		o.Agent(ai)
	}
	return ai
}
