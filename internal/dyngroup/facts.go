package dyngroup

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/store"
)

// Facts is what rules read about one computer.
type Facts struct {
	ComputerID      string
	GroupID         string // static group
	Hostname        string
	OSFamily        string
	OSName          string
	OSVersion       string
	Architecture    string
	AgentVersion    string
	EngineVersion   string
	EnginePublished time.Time // zero when unknown (the built-in engine)
	HasEngine       bool
	IPs             []netip.Addr
	MACs            []string
	Software        map[string][]string // package name -> versions
	LoggedInUsers   []string
	Tags            []string
	Status          string
	LastSeen        time.Time
	CloneSuspected  bool
	Unresolved      int
	RAMBytes        int64
	CPUCores        int64
	hasHW           bool
}

type field struct {
	kind    kind
	section string // inventory section the field needs ("" = computer row)
	values  func(f *Facts, now time.Time) []any
	doc     string
}

func one(v any) []any { return []any{v} }

func strs(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func nonEmpty(s string) []any {
	if s == "" {
		return nil
	}
	return one(s)
}

// fields is the catalog of what rules can test.
var fields = map[string]field{
	"hostname":       {kindText, "", func(f *Facts, _ time.Time) []any { return nonEmpty(f.Hostname) }, "host name"},
	"os.family":      {kindText, "", func(f *Facts, _ time.Time) []any { return nonEmpty(f.OSFamily) }, "linux, windows, darwin"},
	"os.name":        {kindText, "", func(f *Facts, _ time.Time) []any { return nonEmpty(f.OSName) }, "e.g. Debian GNU/Linux"},
	"os.version":     {kindVersion, "", func(f *Facts, _ time.Time) []any { return nonEmpty(f.OSVersion) }, "e.g. 12"},
	"architecture":   {kindText, "system", func(f *Facts, _ time.Time) []any { return nonEmpty(f.Architecture) }, "amd64, arm64"},
	"agent.version":  {kindVersion, "", func(f *Facts, _ time.Time) []any { return nonEmpty(f.AgentVersion) }, "agent version"},
	"engine.version": {kindVersion, "agent", func(f *Facts, _ time.Time) []any { return nonEmpty(f.EngineVersion) }, "detection engine version"},
	"engine.age": {kindAge, "agent", func(f *Facts, now time.Time) []any {
		if !f.HasEngine || f.EnginePublished.IsZero() {
			return nil // unknown age: "does not exist"
		}
		return one(now.Sub(f.EnginePublished))
	}, "time since the engine was published"},
	"ip": {kindIP, "network", func(f *Facts, _ time.Time) []any {
		out := make([]any, len(f.IPs))
		for i, a := range f.IPs {
			out[i] = a
		}
		return out
	}, "any address of any interface"},
	"mac":            {kindText, "network", func(f *Facts, _ time.Time) []any { return strs(f.MACs) }, "any interface's MAC address"},
	"software.name":  {kindText, "software", func(f *Facts, _ time.Time) []any { return strs(mapKeys(f.Software)) }, "any installed package's name"},
	"software":       {kindSoftware, "software", nil, `"NAME" (installed) or "NAME VERSION" compared with the installed version`},
	"logged_in_user": {kindText, "users", func(f *Facts, _ time.Time) []any { return strs(f.LoggedInUsers) }, "any logged-in user"},
	"tag":            {kindText, "", func(f *Facts, _ time.Time) []any { return strs(f.Tags) }, "any tag"},
	"status":         {kindText, "", func(f *Facts, _ time.Time) []any { return nonEmpty(f.Status) }, "online or offline"},
	"last_seen.age": {kindAge, "", func(f *Facts, now time.Time) []any {
		if f.LastSeen.IsZero() {
			return nil
		}
		return one(now.Sub(f.LastSeen))
	}, "time since the agent was last heard from"},
	"clone_suspected":       {kindBool, "", func(f *Facts, _ time.Time) []any { return one(f.CloneSuspected) }, "true or false"},
	"detections.unresolved": {kindNumber, "", func(f *Facts, _ time.Time) []any { return one(int64(f.Unresolved)) }, "count of unresolved detections"},
	"hardware.ram":          {kindNumber, "hardware", func(f *Facts, _ time.Time) []any { return hw(f, f.RAMBytes) }, "bytes; 8G works"},
	"hardware.cpu_cores":    {kindNumber, "hardware", func(f *Facts, _ time.Time) []any { return hw(f, f.CPUCores) }, "logical CPUs"},
}

func hw(f *Facts, v int64) []any {
	if !f.hasHW {
		return nil
	}
	return one(v)
}

func mapKeys(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// FieldInfo describes a field for clients.
type FieldInfo struct {
	Name      string   `json:"name"`
	Type      string   `json:"type"`
	Operators []string `json:"operators"`
	Doc       string   `json:"doc"`
}

// FieldNames lists the fields, sorted.
func FieldNames() []string {
	out := make([]string, 0, len(fields))
	for k := range fields {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Fields describes every field (for forms and documentation).
func Fields() []FieldInfo {
	var out []FieldInfo
	all := []Operator{Eq, Ne, Lt, Le, Gt, Ge, Contains, NotContains, Prefix, NotPrefix, Suffix, NotSuffix, InRange, NotInRange}
	for _, n := range FieldNames() {
		f := fields[n]
		fi := FieldInfo{Name: n, Type: f.kind.String(), Doc: f.doc}
		for _, op := range all {
			if f.kind.allows(plainOf(op)) {
				fi.Operators = append(fi.Operators, string(op))
			}
		}
		out = append(out, fi)
	}
	return out
}

// Sections of the inventory as stored (protojson with proto names).
type systemJSON struct {
	Architecture string `json:"architecture"`
}

type hardwareJSON struct {
	CPUCores int64       `json:"cpu_cores"`
	RAMBytes json.Number `json:"ram_bytes"`
}

type networkJSON struct {
	Interfaces []struct {
		MAC       string   `json:"mac"`
		Addresses []string `json:"addresses"`
		Loopback  bool     `json:"loopback"`
	} `json:"interfaces"`
}

type softwareJSON struct {
	Packages []struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"packages"`
}

type usersJSON struct {
	LoggedIn []struct {
		Name string `json:"name"`
	} `json:"logged_in"`
}

type agentJSON struct {
	// protojson: 64-bit numbers are JSON strings.
	EngineVersion       json.Number `json:"engine_version"`
	EnginePublishedUnix json.Number `json:"engine_published_unix"`
}

// NewFacts builds the facts of a computer from its row, tags and the
// inventory sections given (only the ones the templates need; others may
// be missing). Malformed sections are treated as missing.
func NewFacts(c *store.Computer, tags []string, sections map[string]string, now time.Time) *Facts {
	f := &Facts{ComputerID: c.ID, GroupID: c.GroupID, Hostname: c.Hostname, OSName: c.OSName, OSVersion: c.OSVersion,
		OSFamily: c.Platform, AgentVersion: c.AgentVersion, Tags: tags, Status: c.Status, LastSeen: c.LastSeen,
		CloneSuspected: c.CloneSuspected, Unresolved: c.UnresolvedDetections}
	if s, ok := sections["system"]; ok {
		var v systemJSON
		if json.Unmarshal([]byte(s), &v) == nil {
			f.Architecture = v.Architecture
		}
	}
	if s, ok := sections["hardware"]; ok {
		var v hardwareJSON
		if json.Unmarshal([]byte(s), &v) == nil {
			f.hasHW = true
			f.CPUCores = v.CPUCores
			f.RAMBytes, _ = v.RAMBytes.Int64()
		}
	}
	if s, ok := sections["network"]; ok {
		var v networkJSON
		if json.Unmarshal([]byte(s), &v) == nil {
			for _, i := range v.Interfaces {
				if i.MAC != "" {
					f.MACs = append(f.MACs, i.MAC)
				}
				for _, a := range i.Addresses {
					if p, err := netip.ParsePrefix(a); err == nil {
						f.IPs = append(f.IPs, p.Addr())
					} else if ip, err := netip.ParseAddr(a); err == nil {
						f.IPs = append(f.IPs, ip)
					}
				}
			}
		}
	}
	if s, ok := sections["software"]; ok {
		var v softwareJSON
		if json.Unmarshal([]byte(s), &v) == nil {
			f.Software = make(map[string][]string, len(v.Packages))
			for _, p := range v.Packages {
				f.Software[strings.ToLower(p.Name)] = append(f.Software[strings.ToLower(p.Name)], p.Version)
			}
		}
	}
	if s, ok := sections["users"]; ok {
		var v usersJSON
		if json.Unmarshal([]byte(s), &v) == nil {
			for _, u := range v.LoggedIn {
				f.LoggedInUsers = append(f.LoggedInUsers, u.Name)
			}
		}
	}
	if s, ok := sections["agent"]; ok {
		var v agentJSON
		if json.Unmarshal([]byte(s), &v) == nil && v.EngineVersion != "" && v.EngineVersion != "0" {
			f.EngineVersion, f.HasEngine = v.EngineVersion.String(), true
			if sec, err := v.EnginePublishedUnix.Int64(); err == nil && sec > 0 && sec < 1<<40 {
				f.EnginePublished = time.Unix(sec, 0).UTC()
			}
		}
	}
	return f
}
