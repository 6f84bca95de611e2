// Package trust runs The Update Framework's client workflow (root rotation,
// timestamp, snapshot, targets) against a source, on top of go-tuf's
// trustedmetadata, and keeps the trusted metadata in a local cache directory.
// Both the agent (before it downloads an engine) and the mirror (before it
// serves anything) go through it.
//
// Errors are *VerifyError values whose Kind tells what failed (expired,
// version, signature, hash, format) and which carry an errcode: invalid for
// bad signatures, hashes and formats; conflict for rollbacks and
// mix-and-match; unavailable for expired metadata. Source failures keep the
// source's errcode.
package trust

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"

	"github.com/mamori/mamori/internal/atomicfile"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/updates/source"
)

// Size limits for metadata files (bytes).
const (
	MaxRootSize      = 512 << 10
	MaxTimestampSize = 16 << 10
	MaxSnapshotSize  = 1 << 20
	MaxTargetsSize   = 8 << 20
	MaxRootRotations = 64
)

// Cache file names.
const (
	rootFile      = "root.json"
	timestampFile = "timestamp.json"
	snapshotFile  = "snapshot.json"
	targetsFile   = "targets.json"
)

// Kind classifies a verification failure.
type Kind string

// Kinds of verification failures.
const (
	KindExpired   Kind = "expired"   // freeze attack or a stale source
	KindVersion   Kind = "version"   // rollback, or metadata that does not belong together (mix-and-match)
	KindSignature Kind = "signature" // missing or wrong signatures (wrong key, below threshold)
	KindHash      Kind = "hash"      // length or hash differs from what signed metadata says
	KindFormat    Kind = "format"    // not metadata of the expected type
	KindNoRoot    Kind = "no_root"   // no trusted root to start from
)

// VerifyError is a verification failure.
type VerifyError struct {
	Kind Kind
	File string
	Err  error
	code *errcode.Error
}

func (e *VerifyError) Error() string {
	return "verification failed: " + e.File + ": " + e.Err.Error()
}

// Unwrap exposes the errcode for errcode.Of.
func (e *VerifyError) Unwrap() error { return e.code }

func verr(kind Kind, file string, err error) *VerifyError {
	code := errcode.Invalid
	switch kind {
	case KindExpired:
		code = errcode.Unavailable
	case KindVersion:
		code = errcode.Conflict
	}
	ve := &VerifyError{Kind: kind, File: file, Err: err}
	ve.code = errcode.New(code, "%s", ve.Error())
	return ve
}

// classify maps go-tuf errors to kinds.
func classify(file string, err error) error {
	switch {
	case errors.Is(err, &metadata.ErrExpiredMetadata{}):
		return verr(KindExpired, file, err)
	case errors.Is(err, &metadata.ErrBadVersionNumber{}):
		return verr(KindVersion, file, err)
	case errors.Is(err, &metadata.ErrUnsignedMetadata{}):
		return verr(KindSignature, file, err)
	case errors.Is(err, &metadata.ErrLengthOrHashMismatch{}):
		return verr(KindHash, file, err)
	}
	return verr(KindFormat, file, err)
}

// KindOf returns the verification kind of err, or "".
func KindOf(err error) Kind {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return ve.Kind
	}
	return ""
}

// Options configure a refresh.
type Options struct {
	// CacheDir holds the trusted metadata (created with mode 0700).
	CacheDir string
	// InitialRoot is a trusted root.json used when the cache has none or
	// an older one.
	InitialRoot []byte
	// RootSHA256 pins the repository's first root: with no root in the
	// cache and no InitialRoot, metadata/1.root.json is fetched from the
	// source and used only if its SHA-256 (hex) matches.
	RootSHA256 string
	// RefTime is the time expiry is judged at; zero means now.
	RefTime time.Time
}

// State is a verified repository state.
type State struct {
	Trusted *trustedmetadata.TrustedMetadata
	// Raw bytes of the verified metadata, as the repository signed them.
	RootRaw, TimestampRaw, SnapshotRaw, TargetsRaw []byte
	// NewRoots are the root versions fetched during this refresh (version →
	// raw), for mirrors that re-serve them.
	NewRoots map[int64][]byte
	// InitialRootVersion is the root version the refresh started from.
	InitialRootVersion int64
}

// Targets returns the top-level targets.
func (s *State) Targets() map[string]*metadata.TargetFiles {
	return s.Trusted.Targets[metadata.TARGETS].Signed.Targets
}

// TimestampVersion, SnapshotVersion and TargetsVersion of the state.
func (s *State) TimestampVersion() int64 { return s.Trusted.Timestamp.Signed.Version }

// SnapshotVersion of the state.
func (s *State) SnapshotVersion() int64 { return s.Trusted.Snapshot.Signed.Version }

// TargetsVersion of the state.
func (s *State) TargetsVersion() int64 { return s.Trusted.Targets[metadata.TARGETS].Signed.Version }

// RootVersion of the state.
func (s *State) RootVersion() int64 { return s.Trusted.Root.Signed.Version }

// Expires is the earliest expiry of the state's metadata.
func (s *State) Expires() time.Time {
	t := s.Trusted.Timestamp.Signed.Expires
	for _, e := range []time.Time{s.Trusted.Snapshot.Signed.Expires, s.Trusted.Targets[metadata.TARGETS].Signed.Expires, s.Trusted.Root.Signed.Expires} {
		if e.Before(t) {
			t = e
		}
	}
	return t
}

// SHA256Hex returns the hex SHA-256 of b.
func SHA256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// CachedRoot returns the trusted root in the cache directory, if any.
func CachedRoot(cacheDir string) ([]byte, error) {
	return os.ReadFile(filepath.Join(cacheDir, rootFile))
}

func readCache(dir, name string) []byte {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil
	}
	return b
}

func writeCache(dir, name string, b []byte) error {
	return atomicfile.Write(filepath.Join(dir, name), b, 0o644)
}

func rootVersion(raw []byte) (int64, error) {
	r, err := metadata.Root().FromBytes(raw)
	if err != nil {
		return 0, err
	}
	return r.Signed.Version, nil
}

// startRoot picks the root to start from: the newest of the cache's and the
// initial one, or the pinned first root fetched from the source.
func startRoot(ctx context.Context, src source.Source, o Options) ([]byte, error) {
	cached := readCache(o.CacheDir, rootFile)
	switch {
	case cached != nil && o.InitialRoot != nil:
		cv, err1 := rootVersion(cached)
		iv, err2 := rootVersion(o.InitialRoot)
		if err2 != nil {
			return nil, verr(KindFormat, "initial root", err2)
		}
		if err1 != nil || iv > cv {
			return o.InitialRoot, nil
		}
		return cached, nil
	case cached != nil:
		return cached, nil
	case o.InitialRoot != nil:
		return o.InitialRoot, nil
	case o.RootSHA256 != "":
		pin := strings.ToLower(strings.TrimPrefix(o.RootSHA256, "sha256:"))
		raw, err := src.ReadFile(ctx, "metadata/1.root.json", MaxRootSize)
		if err != nil {
			return nil, err
		}
		if got := SHA256Hex(raw); got != pin {
			return nil, verr(KindHash, "1.root.json", fmt.Errorf("SHA-256 %s does not match the pinned %s", got, pin))
		}
		return raw, nil
	}
	return nil, verr(KindNoRoot, "root.json", errors.New("no trusted root: give the repository's root.json or its SHA-256"))
}

// Refresh verifies the source's current metadata against the trusted
// metadata in the cache (rollback protection) and updates the cache. Roots
// are rotated first; a cached timestamp or snapshot whose keys were rotated
// away is discarded (fast-forward attack recovery).
func Refresh(ctx context.Context, src source.Source, o Options) (*State, error) {
	if err := os.MkdirAll(o.CacheDir, 0o700); err != nil {
		return nil, err
	}
	raw, err := startRoot(ctx, src, o)
	if err != nil {
		return nil, err
	}
	tm, err := trustedmetadata.New(raw)
	if err != nil {
		return nil, classify("root.json", err)
	}
	if !o.RefTime.IsZero() {
		tm.RefTime = o.RefTime.UTC()
	}
	st := &State{Trusted: tm, NewRoots: map[int64][]byte{}, InitialRootVersion: tm.Root.Signed.Version}
	if !bytes.Equal(raw, readCache(o.CacheDir, rootFile)) {
		if err := writeCache(o.CacheDir, rootFile, raw); err != nil {
			return nil, err
		}
	}
	// 1. root rotation
	oldTS, oldSnap := roleKeys(tm, metadata.TIMESTAMP), roleKeys(tm, metadata.SNAPSHOT)
	for i := 0; i < MaxRootRotations; i++ {
		next := tm.Root.Signed.Version + 1
		name := strconv.FormatInt(next, 10) + ".root.json"
		b, err := src.ReadFile(ctx, "metadata/"+name, MaxRootSize)
		if source.IsNotFound(err) {
			break
		}
		if err != nil {
			return nil, err
		}
		if _, err := tm.UpdateRoot(b); err != nil {
			return nil, classify(name, err)
		}
		st.NewRoots[next] = b
		raw = b
		if err := writeCache(o.CacheDir, rootFile, b); err != nil {
			return nil, err
		}
	}
	st.RootRaw = raw
	if len(st.NewRoots) > 0 {
		if !slices.Equal(oldTS, roleKeys(tm, metadata.TIMESTAMP)) {
			os.Remove(filepath.Join(o.CacheDir, timestampFile))
		}
		if !slices.Equal(oldSnap, roleKeys(tm, metadata.SNAPSHOT)) {
			os.Remove(filepath.Join(o.CacheDir, snapshotFile))
		}
	}
	// 2. timestamp
	localTS := readCache(o.CacheDir, timestampFile)
	if localTS != nil {
		// an expired local timestamp still protects against rollback
		if _, err := tm.UpdateTimestamp(localTS); err != nil && !errors.Is(err, &metadata.ErrExpiredMetadata{}) {
			localTS = nil
			tm.Timestamp = nil
		}
	}
	ts, err := src.ReadFile(ctx, "metadata/"+timestampFile, MaxTimestampSize)
	if err != nil {
		return nil, err
	}
	if _, err := tm.UpdateTimestamp(ts); err != nil {
		if !errors.Is(err, &metadata.ErrEqualVersionNumber{}) {
			return nil, classify(timestampFile, err)
		}
		// same version as the cache: keep the cached one, but it must not
		// be expired, and the source must be serving the same bytes
		if !bytes.Equal(ts, localTS) {
			return nil, verr(KindVersion, timestampFile, errors.New("the source's timestamp has the trusted version number but different content"))
		}
		if tm.Timestamp.Signed.IsExpired(tm.RefTime) {
			return nil, verr(KindExpired, timestampFile, errors.New("timestamp.json is expired"))
		}
	} else if err := writeCache(o.CacheDir, timestampFile, ts); err != nil {
		return nil, err
	}
	st.TimestampRaw = ts
	// 3. snapshot
	snapMeta := tm.Timestamp.Signed.Meta["snapshot.json"]
	if snapMeta == nil {
		return nil, verr(KindFormat, timestampFile, errors.New("no snapshot.json entry"))
	}
	local := readCache(o.CacheDir, snapshotFile)
	snapOK := false
	if local != nil {
		// a cached snapshot that is no longer current is still loaded as
		// an intermediate: the new one must not roll its versions back
		if _, err := tm.UpdateSnapshot(local, true); err == nil && snapMeta.VerifyLengthHashes(local) == nil {
			snapOK, st.SnapshotRaw = true, local
		}
	}
	if !snapOK {
		name := strconv.FormatInt(snapMeta.Version, 10) + ".snapshot.json"
		b, err := src.ReadFile(ctx, "metadata/"+name, lengthOr(snapMeta.Length, MaxSnapshotSize))
		if err != nil {
			return nil, err
		}
		if _, err := tm.UpdateSnapshot(b, false); err != nil {
			return nil, classify(name, err)
		}
		if err := writeCache(o.CacheDir, snapshotFile, b); err != nil {
			return nil, err
		}
		st.SnapshotRaw = b
	}
	// 4. targets
	tMeta := tm.Snapshot.Signed.Meta["targets.json"]
	if tMeta == nil {
		return nil, verr(KindFormat, "snapshot.json", errors.New("no targets.json entry"))
	}
	local = readCache(o.CacheDir, targetsFile)
	if local != nil {
		if _, err := tm.UpdateTargets(local); err == nil {
			st.TargetsRaw = local
		}
	}
	if st.TargetsRaw == nil {
		name := strconv.FormatInt(tMeta.Version, 10) + ".targets.json"
		b, err := src.ReadFile(ctx, "metadata/"+name, lengthOr(tMeta.Length, MaxTargetsSize))
		if err != nil {
			return nil, err
		}
		if _, err := tm.UpdateTargets(b); err != nil {
			return nil, classify(name, err)
		}
		if err := writeCache(o.CacheDir, targetsFile, b); err != nil {
			return nil, err
		}
		st.TargetsRaw = b
	}
	if tm.Targets[metadata.TARGETS].Signed.Delegations != nil {
		return nil, verr(KindFormat, targetsFile, errors.New("delegations are not supported"))
	}
	return st, nil
}

func lengthOr(n, def int64) int64 {
	if n > 0 && n <= def {
		return n
	}
	return def
}

func roleKeys(tm *trustedmetadata.TrustedMetadata, role string) []string {
	r := tm.Root.Signed.Roles[role]
	if r == nil {
		return nil
	}
	k := slices.Clone(r.KeyIDs)
	slices.Sort(k)
	return k
}

// VerifyRootChain checks that roots (raw root versions 1..n in order, as a
// mirror would serve them) form a valid rotation chain that ends at the
// trusted root. Mirrors use it to serve the roots below the one they were
// given.
func VerifyRootChain(roots [][]byte, trusted []byte) error {
	if len(roots) == 0 {
		return verr(KindNoRoot, "root.json", errors.New("empty root chain"))
	}
	tm, err := trustedmetadata.New(roots[0])
	if err != nil {
		return classify("1.root.json", err)
	}
	if tm.Root.Signed.Version != 1 {
		return verr(KindVersion, "1.root.json", fmt.Errorf("first root has version %d", tm.Root.Signed.Version))
	}
	for i, r := range roots[1:] {
		if _, err := tm.UpdateRoot(r); err != nil {
			return classify(strconv.Itoa(i+2)+".root.json", err)
		}
	}
	if !bytes.Equal(roots[len(roots)-1], trusted) {
		return verr(KindVersion, "root.json", errors.New("the root chain does not end at the trusted root"))
	}
	return nil
}

// VerifyTarget checks data against a target's signed length and hashes.
func VerifyTarget(tf *metadata.TargetFiles, data []byte) error {
	if err := tf.VerifyLengthHashes(data); err != nil {
		return verr(KindHash, tf.Path, err)
	}
	return nil
}

// TargetSHA256 returns a target's signed SHA-256 (hex); targets without one
// are refused.
func TargetSHA256(tf *metadata.TargetFiles) (string, error) {
	h, ok := tf.Hashes["sha256"]
	if !ok || len(h) != sha256.Size {
		return "", verr(KindFormat, tf.Path, errors.New("target has no SHA-256"))
	}
	return hex.EncodeToString(h), nil
}

// RemotePath is where a target is stored with consistent snapshots:
// "targets/<dir>/<sha256>.<base>".
func RemotePath(tf *metadata.TargetFiles) (string, error) {
	h, err := TargetSHA256(tf)
	if err != nil {
		return "", err
	}
	dir, base := "", tf.Path
	if i := strings.LastIndexByte(tf.Path, '/'); i >= 0 {
		dir, base = tf.Path[:i+1], tf.Path[i+1:]
	}
	return "targets/" + dir + h + "." + base, nil
}

// HashMismatch returns a VerifyError for a downloaded target whose hash is
// wrong.
func HashMismatch(path string, err error) error { return verr(KindHash, path, err) }
