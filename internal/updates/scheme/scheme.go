// Package scheme is the shared vocabulary of the update repository: how
// targets are named, what their signed custom metadata says, which logical
// deltas the publisher makes (the schedule), and how a client chooses the
// cheapest way from its engine version to the latest (the plan).
//
// It is pure (no I/O) and safe for the agent.
//
// # Target naming
//
// Every file the repository distributes is a TUF target whose path starts with
// a product prefix, so the same repository can later carry agent releases
// ("agent/…") next to engines:
//
//	engine/full-<V>.mdb.zst        the engine database of version V, zstd-compressed
//	engine/delta-<F>-<T>.zst       the logical delta F→T (enginedb text form), zstd-compressed
//
// With consistent snapshots a target is stored and fetched as
// "targets/<dir>/<sha256>.<name>", so every file but timestamp.json is
// immutable and content-addressed.
//
// # Delta schedule
//
// Releases are numbered by their publication order (the release index i,
// 0, 1, 2, …); version numbers may have gaps. Every Checkpoint-th release
// (i % S == 0) is a checkpoint. Release i publishes deltas from:
//
//   - every release since the last checkpoint before it: [c, i) where c is
//     the largest multiple of S below i (so i−1 → i always exists);
//   - if i is a checkpoint, every earlier checkpoint at most Window releases
//     back.
//
// A client at release v ≥ n−Window reaches the latest release n in at most
// three deltas: v → a (a = the first checkpoint ≥ v), a → c (checkpoint to
// checkpoint) and c → n, each the *net* change over its range. See
// docs/updates.md for the cost argument.
package scheme

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Product prefixes of target paths.
const (
	EngineDir = "engine"
	AgentDir  = "agent" // reserved for agent releases
)

// Defaults of the publisher's delta schedule.
const (
	DefaultWindow     = 180 // releases: ≈ 5 weeks at 5 releases a day
	DefaultCheckpoint = 16  // releases between checkpoints
	MaxHops           = 3   // deltas a client chains at most
)

// FullPath is the target path of the full engine of version v.
func FullPath(v uint64) string { return EngineDir + "/full-" + strconv.FormatUint(v, 10) + ".mdb.zst" }

// DeltaPath is the target path of the delta from → to.
func DeltaPath(from, to uint64) string {
	return EngineDir + "/delta-" + strconv.FormatUint(from, 10) + "-" + strconv.FormatUint(to, 10) + ".zst"
}

// Kind of an engine target.
type Kind int

// Target kinds.
const (
	KindUnknown Kind = iota
	KindFull
	KindDelta
)

// ParsePath parses an engine target path. It returns KindUnknown for any
// other path (other products, or a malformed name).
func ParsePath(p string) (k Kind, from, to uint64) {
	rest, ok := strings.CutPrefix(p, EngineDir+"/")
	if !ok {
		return KindUnknown, 0, 0
	}
	if s, ok := strings.CutPrefix(rest, "full-"); ok {
		if s, ok = strings.CutSuffix(s, ".mdb.zst"); ok {
			if v, ok := parseVersion(s); ok {
				return KindFull, 0, v
			}
		}
		return KindUnknown, 0, 0
	}
	if s, ok := strings.CutPrefix(rest, "delta-"); ok {
		if s, ok = strings.CutSuffix(s, ".zst"); ok {
			a, b, found := strings.Cut(s, "-")
			f, ok1 := parseVersion(a)
			t, ok2 := parseVersion(b)
			if found && ok1 && ok2 && f < t {
				return KindDelta, f, t
			}
		}
	}
	return KindUnknown, 0, 0
}

// parseVersion accepts canonical decimal numbers only (no sign, no leading
// zeros), so each version has exactly one path.
func parseVersion(s string) (uint64, bool) {
	if s == "" || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil && v > 0
}

// FullInfo is the signed custom metadata of a full engine target.
type FullInfo struct {
	Version  uint64 `json:"version"`
	Release  uint64 `json:"release"`   // release index (publication order)
	DBLength int64  `json:"db_length"` // bytes of the uncompressed database
	DBSHA256 string `json:"db_sha256"` // SHA-256 (hex) of the uncompressed database
	Records  int64  `json:"records"`
	// Published is when the release was published (UTC; absent from older
	// repositories): agents report their engine's age with it.
	Published time.Time `json:"published,omitzero"`
}

// DeltaInfo is the signed custom metadata of a delta target.
type DeltaInfo struct {
	Raw int64 `json:"raw"` // bytes of the uncompressed delta
}

// Limits on what a client accepts from (signed) custom metadata.
const (
	MaxDBLength    = 2 << 30 // 2 GiB
	MaxDeltaLength = 1 << 30 // 1 GiB
)

// ParseFullInfo decodes and checks a full target's custom metadata.
func ParseFullInfo(raw *json.RawMessage, path string) (FullInfo, error) {
	var fi FullInfo
	if raw == nil {
		return fi, fmt.Errorf("target %s: missing custom metadata", path)
	}
	if err := json.Unmarshal(*raw, &fi); err != nil {
		return fi, fmt.Errorf("target %s: bad custom metadata: %v", path, err)
	}
	k, _, v := ParsePath(path)
	switch {
	case k != KindFull || fi.Version != v:
		return fi, fmt.Errorf("target %s: custom version %d does not match its path", path, fi.Version)
	case fi.DBLength <= 0 || fi.DBLength > MaxDBLength:
		return fi, fmt.Errorf("target %s: database length %d out of range", path, fi.DBLength)
	case len(fi.DBSHA256) != 64 || strings.Trim(fi.DBSHA256, "0123456789abcdef") != "":
		return fi, fmt.Errorf("target %s: bad database sha256", path)
	case fi.Records < 0:
		return fi, fmt.Errorf("target %s: negative record count", path)
	}
	return fi, nil
}

// ParseDeltaInfo decodes and checks a delta target's custom metadata.
func ParseDeltaInfo(raw *json.RawMessage, path string) (DeltaInfo, error) {
	var di DeltaInfo
	if raw == nil {
		return di, fmt.Errorf("target %s: missing custom metadata", path)
	}
	if err := json.Unmarshal(*raw, &di); err != nil {
		return di, fmt.Errorf("target %s: bad custom metadata: %v", path, err)
	}
	if di.Raw <= 0 || di.Raw > MaxDeltaLength {
		return di, fmt.Errorf("target %s: delta length %d out of range", path, di.Raw)
	}
	return di, nil
}

// Schedule is the publisher's delta schedule over release indices.
type Schedule struct {
	Window     int // K: releases a client may be behind and still get deltas
	Checkpoint int // S: releases between checkpoints
}

// Validate checks the schedule's parameters.
func (s Schedule) Validate() error {
	switch {
	case s.Window < 0 || s.Window > 100000:
		return errors.New("window must be between 0 and 100000 releases")
	case s.Checkpoint < 1 || s.Checkpoint > 10000:
		return errors.New("checkpoint interval must be between 1 and 10000 releases")
	case s.Window > 0 && s.Window < s.Checkpoint:
		return fmt.Errorf("window (%d) must be at least the checkpoint interval (%d)", s.Window, s.Checkpoint)
	}
	return nil
}

// IsCheckpoint reports whether release i is a checkpoint.
func (s Schedule) IsCheckpoint(i int) bool { return i%s.Checkpoint == 0 }

// prevCheckpoint is the largest checkpoint strictly below i (i ≥ 1).
func (s Schedule) prevCheckpoint(i int) int { return (i - 1) / s.Checkpoint * s.Checkpoint }

// Sources returns the release indices from which deltas into release i are
// published, ascending.
func (s Schedule) Sources(i int) []int {
	if i <= 0 || s.Window == 0 {
		return nil
	}
	c := s.prevCheckpoint(i)
	var out []int
	if s.IsCheckpoint(i) {
		for a := c - s.Checkpoint; a >= 0 && i-a <= s.Window; a -= s.Checkpoint {
			out = append(out, a)
		}
		// reverse to ascending
		for l, r := 0, len(out)-1; l < r; l, r = l+1, r-1 {
			out[l], out[r] = out[r], out[l]
		}
	}
	for v := c; v < i; v++ {
		if i-v <= s.Window {
			out = append(out, v)
		}
	}
	return out
}

// Hop is one delta between two release indices.
type Hop struct{ From, To int }

// Path returns the deltas a client at release v takes to reach release n
// (v < n, n−v ≤ Window), at most three. It returns nil when v is outside
// the window.
func (s Schedule) Path(v, n int) []Hop {
	if v < 0 || v >= n || n-v > s.Window {
		return nil
	}
	c := s.prevCheckpoint(n)
	if v >= c {
		return []Hop{{v, n}}
	}
	a := (v + s.Checkpoint - 1) / s.Checkpoint * s.Checkpoint
	var hops []Hop
	if a != v {
		hops = append(hops, Hop{v, a})
	}
	if s.IsCheckpoint(n) {
		return append(hops, Hop{a, n})
	}
	if a < c {
		hops = append(hops, Hop{a, c})
	}
	return append(hops, Hop{c, n})
}

// Needed returns every delta some client inside the window of release n
// needs, as a set (the targets metadata of n lists exactly these). first is
// the lowest release index that exists.
func (s Schedule) Needed(n, first int) map[Hop]bool {
	out := map[Hop]bool{}
	lo := max(n-s.Window, first)
	for v := lo; v < n; v++ {
		for _, h := range s.Path(v, n) {
			out[h] = true
		}
	}
	return out
}
