package repo

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/mamori/mamori/internal/atomicfile"
	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/errcode"
)

func sha256Bytes(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func sha256Hex(b []byte) string { return hex.EncodeToString(sha256Bytes(b)) }

func hexDecode(s string) ([]byte, error) { return hex.DecodeString(s) }

// PublishEngineFile publishes an engine database file. Its version is the
// file's unless version is non-zero. The published database is rebuilt from
// the file's records (so deltas applied on endpoints reproduce it byte for
// byte).
func (r *Repo) PublishEngineFile(path string, version uint64) (PublishResult, error) {
	db, err := enginedb.LoadFile(path)
	if err != nil {
		return PublishResult{}, errcode.New(errcode.Invalid, "%s: %v", path, err)
	}
	recs, err := db.Records()
	if err != nil {
		return PublishResult{}, errcode.New(errcode.Invalid, "%s: %v", path, err)
	}
	if version == 0 {
		version = db.Version()
	}
	return r.Publish(recs, version)
}

// RefreshResult says what Refresh re-signed.
type RefreshResult struct {
	Timestamp, Snapshot, Targets bool
	Expires                      time.Time // new timestamp expiry
}

// Refresh re-signs the timestamp (always) and the snapshot and targets when
// less than half of their lifetime is left, without changing what is
// published. Run it at least daily (hourly from a timer is good) so
// metadata never expires between releases.
func (r *Repo) Refresh() (RefreshResult, error) {
	var res RefreshResult
	c, err := r.readCurrent()
	if err != nil {
		return res, err
	}
	now := r.now()
	half := func(exp time.Time, life Duration) bool { return exp.Sub(now) < time.Duration(life)/2 }
	switch {
	case half(c.targets.Signed.Expires, r.settings.TargetsExpiry):
		files, err := r.listing()
		if err != nil {
			return res, err
		}
		if len(r.hist.Releases) == 0 {
			files = c.targets.Signed.Targets
		}
		res.Targets, res.Snapshot = true, true
		err = r.writeTopLevel(files, false)
		if err != nil {
			return res, err
		}
	case half(c.snapshot.Signed.Expires, r.settings.SnapshotExpiry):
		traw, err := c.targets.ToBytes(false)
		if err != nil {
			return res, err
		}
		// re-read the exact published bytes (ToBytes may not reproduce them)
		tv := c.targets.Signed.Version
		if b, err := os.ReadFile(r.pub("metadata", strconv.FormatInt(tv, 10)+".targets.json")); err == nil {
			traw = b
		}
		sv, err := r.latestVersionFile("snapshot")
		if err != nil {
			return res, err
		}
		res.Snapshot = true
		if err := r.writeSnapshotAndTimestamp(tv, traw, sv+1); err != nil {
			return res, err
		}
	default:
		sv := c.timestamp.Signed.Meta["snapshot.json"].Version
		sraw, err := os.ReadFile(r.pub("metadata", strconv.FormatInt(sv, 10)+".snapshot.json"))
		if err != nil {
			return res, err
		}
		if err := r.writeTimestamp(sv, sraw); err != nil {
			return res, err
		}
	}
	res.Timestamp = true
	res.Expires = now.Add(time.Duration(r.settings.TimestampExpiry))
	return res, nil
}

// PruneResult says what Prune removed.
type PruneResult struct {
	Releases      int   // releases dropped from the history (outside the window)
	Files         int   // files removed from public/
	Bytes         int64 // their size
	KeptFiles     int
	KeptBytes     int64
	MetadataFiles int // old metadata versions removed
}

// Prune removes what falls out of the window: releases older than the
// window from the history, and every target file and metadata version that
// neither the current targets nor any targets metadata published within
// grace (default 24 h) reference — mirrors and clients that fetched an
// older timestamp keep finding what it names for that long.
func (r *Repo) Prune(grace time.Duration) (PruneResult, error) {
	var res PruneResult
	if grace < 0 {
		return res, errcode.New(errcode.Invalid, "grace must not be negative")
	}
	c, err := r.readCurrent()
	if err != nil {
		return res, err
	}
	now := r.now()
	// history: keep the window (and always the latest)
	if n := len(r.hist.Releases); n > 0 {
		latest := r.hist.Releases[n-1].Index
		keep := 0
		for keep < n-1 && r.hist.Releases[keep].Index < latest-r.settings.Window {
			os.Remove(r.state("steps", strconv.FormatUint(r.hist.Releases[keep].Version, 10)+".delta.zst"))
			keep++
		}
		if keep > 0 {
			r.hist.Releases = append([]Release(nil), r.hist.Releases[keep:]...)
			res.Releases = keep
			if err := r.saveHistory(); err != nil {
				return res, err
			}
		}
	}
	// metadata versions to keep: the current ones, the one before, and
	// those written within grace
	curT, curS := c.targets.Signed.Version, c.timestamp.Signed.Meta["snapshot.json"].Version
	keepBlobs := map[string]bool{}
	addTargets := func(t *metadata.Metadata[metadata.TargetsType]) {
		for p, tf := range t.Signed.Targets {
			h := hex.EncodeToString(tf.Hashes["sha256"])
			dir, base := filepath.Split(filepath.FromSlash(p))
			keepBlobs[filepath.Join(dir, h+"."+base)] = true
		}
	}
	addTargets(c.targets)
	ents, err := os.ReadDir(r.pub("metadata"))
	if err != nil {
		return res, err
	}
	for _, e := range ents {
		name := e.Name()
		for _, role := range []string{"targets", "snapshot"} {
			vs, ok := strings.CutSuffix(name, "."+role+".json")
			if !ok {
				continue
			}
			v, err := strconv.ParseInt(vs, 10, 64)
			if err != nil {
				continue
			}
			cur := curT
			if role == "snapshot" {
				cur = curS
			}
			fi, err := e.Info()
			if err != nil {
				continue
			}
			recent := now.Sub(fi.ModTime()) < grace
			if v >= cur-1 || recent {
				if role == "targets" && v != cur {
					if t, err := metadata.Targets().FromFile(r.pub("metadata", name)); err == nil {
						addTargets(t)
					}
				}
				continue
			}
			if v > cur { // written by a publication that never committed
				continue
			}
			if err := os.Remove(r.pub("metadata", name)); err == nil {
				res.MetadataFiles++
			}
		}
	}
	root := r.pub("targets")
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if keepBlobs[rel] || strings.HasPrefix(d.Name(), ".") {
			res.KeptFiles++
			res.KeptBytes += fi.Size()
			return nil
		}
		if err := os.Remove(p); err == nil {
			res.Files++
			res.Bytes += fi.Size()
		}
		return nil
	})
	return res, err
}

// RotateOptions configure a root rotation.
type RotateOptions struct {
	// OldRootKeys sign the new root for the old one (threshold of the
	// current root); default keys/root.pem.
	OldRootKeys []string
	// NewRootKey is the new root key file: used if it exists, generated if
	// not. Empty keeps the current root key (a root re-sign, e.g. to extend
	// its expiry, or with RotateOnline).
	NewRootKey string
	// RotateOnline replaces the targets, snapshot and timestamp keys with
	// new ones (the old key files are renamed <role>.pem.retired-<n>).
	RotateOnline bool
}

// RotateResult describes a rotation.
type RotateResult struct {
	Version int64 // new root version
	Expires time.Time
}

// RotateRoot writes root version n+1, signed by the current root key(s) and
// the new one, and re-signs targets, snapshot and timestamp so clients
// move to it at their next update (TUF root rotation).
func (r *Repo) RotateRoot(o RotateOptions) (RotateResult, error) {
	var res RotateResult
	c, err := r.readCurrent()
	if err != nil {
		return res, err
	}
	if len(o.OldRootKeys) == 0 {
		o.OldRootKeys = []string{r.keyPath(metadata.ROOT)}
	}
	old := c.root
	next := metadata.Root(r.now().Add(time.Duration(r.settings.RootExpiry)))
	next.Signed.ConsistentSnapshot = true
	next.Signed.Version = old.Signed.Version + 1
	for role, rr := range old.Signed.Roles {
		if nr, ok := next.Signed.Roles[role]; ok && rr.Threshold > 0 {
			nr.Threshold = rr.Threshold
		}
	}
	// the old root key(s) must be able to sign for the current root
	for _, kf := range o.OldRootKeys {
		priv, err := LoadKey(kf)
		if err != nil {
			return res, err
		}
		id, err := keyID(priv)
		if err != nil {
			return res, err
		}
		if !contains(old.Signed.Roles[metadata.ROOT].KeyIDs, id) {
			return res, errcode.New(errcode.Forbidden, "%s is not a root key of root version %d", kf, old.Signed.Version)
		}
	}
	rootKeys := []string{}
	if o.NewRootKey != "" {
		if _, err := os.Stat(o.NewRootKey); errors.Is(err, os.ErrNotExist) {
			if _, err := GenerateKey(o.NewRootKey); err != nil {
				return res, err
			}
		}
		rootKeys = append(rootKeys, o.NewRootKey)
	} else {
		rootKeys = append(rootKeys, o.OldRootKeys...)
	}
	retired := map[string]string{}
	for _, role := range []string{metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		if !o.RotateOnline {
			continue
		}
		kp := r.keyPath(role)
		ret := kp + ".retired-" + strconv.FormatInt(old.Signed.Version, 10)
		if err := os.Rename(kp, ret); err != nil {
			return res, err
		}
		retired[kp] = ret
		if _, err := GenerateKey(kp); err != nil {
			for k, v := range retired {
				os.Remove(k)
				os.Rename(v, k)
			}
			return res, err
		}
	}
	restore := func() {
		for k, v := range retired {
			os.Remove(k)
			os.Rename(v, k)
		}
	}
	add := func(role, kf string) error {
		priv, err := LoadKey(kf)
		if err != nil {
			return err
		}
		k, err := tufKey(priv)
		if err != nil {
			return err
		}
		return next.Signed.AddKey(k, role)
	}
	for _, kf := range rootKeys {
		if err := add(metadata.ROOT, kf); err != nil {
			restore()
			return res, err
		}
	}
	for _, role := range []string{metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		if err := add(role, r.keyPath(role)); err != nil {
			restore()
			return res, err
		}
	}
	signers := append([]string{}, o.OldRootKeys...)
	for _, kf := range rootKeys {
		if !contains(signers, kf) {
			signers = append(signers, kf)
		}
	}
	if err := r.signRoot(next, signers); err != nil {
		restore()
		return res, err
	}
	// self-check: the old root accepts the new one, which accepts itself
	if err := old.VerifyDelegate(metadata.ROOT, next); err != nil {
		restore()
		return res, fmt.Errorf("new root does not verify against the old one: %w", err)
	}
	if err := next.VerifyDelegate(metadata.ROOT, next); err != nil {
		restore()
		return res, fmt.Errorf("new root does not verify against itself: %w", err)
	}
	raw, err := next.ToBytes(false)
	if err != nil {
		restore()
		return res, err
	}
	name := strconv.FormatInt(next.Signed.Version, 10) + ".root.json"
	if err := atomicfile.Write(r.pub("metadata", name), raw, 0o644); err != nil {
		restore()
		return res, err
	}
	if o.NewRootKey != "" && o.NewRootKey != r.keyPath(metadata.ROOT) {
		r.log.Info("new root key written; keep it offline", "file", o.NewRootKey)
	}
	// re-sign everything under the new root
	files := c.targets.Signed.Targets
	if len(r.hist.Releases) > 0 {
		if files, err = r.listing(); err != nil {
			return res, err
		}
	}
	if err := r.writeTopLevel(files, false); err != nil {
		return res, err
	}
	res.Version = next.Signed.Version
	res.Expires = next.Signed.Expires
	return res, nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// Status describes a repository.
type Status struct {
	Dir              string    `json:"dir"`
	EngineVersion    uint64    `json:"engine_version"`
	Release          int       `json:"release"`
	Releases         int       `json:"releases_in_history"`
	Records          int64     `json:"records"`
	FullBytes        int64     `json:"full_bytes"`
	Window           int       `json:"window"`
	Checkpoint       int       `json:"checkpoint"`
	Targets          int       `json:"targets_listed"`
	TargetsBytes     int64     `json:"targets_metadata_bytes"`
	RootVersion      int64     `json:"root_version"`
	RootSHA256       string    `json:"root_sha256"` // of 1.root.json
	TimestampVersion int64     `json:"timestamp_version"`
	RootExpires      time.Time `json:"root_expires"`
	TargetsExpires   time.Time `json:"targets_expires"`
	SnapshotExpires  time.Time `json:"snapshot_expires"`
	TimestampExpires time.Time `json:"timestamp_expires"`
	PublicBytes      int64     `json:"public_bytes"`
	PublicFiles      int       `json:"public_files"`
}

// Status reads the repository's state.
func (r *Repo) Status() (Status, error) {
	st := Status{Dir: r.dir, Window: r.settings.Window, Checkpoint: r.settings.Checkpoint, Releases: len(r.hist.Releases)}
	c, err := r.readCurrent()
	if err != nil {
		return st, err
	}
	if raw, err := os.ReadFile(r.pub("metadata", "1.root.json")); err == nil {
		st.RootSHA256 = sha256Hex(raw)
	}
	st.RootVersion = c.root.Signed.Version
	st.TimestampVersion = c.timestamp.Signed.Version
	st.RootExpires, st.TargetsExpires = c.root.Signed.Expires, c.targets.Signed.Expires
	st.SnapshotExpires, st.TimestampExpires = c.snapshot.Signed.Expires, c.timestamp.Signed.Expires
	st.Targets = len(c.targets.Signed.Targets)
	if fi, err := os.Stat(r.pub("metadata", strconv.FormatInt(c.targets.Signed.Version, 10)+".targets.json")); err == nil {
		st.TargetsBytes = fi.Size()
	}
	if n := len(r.hist.Releases); n > 0 {
		l := r.hist.Releases[n-1]
		st.EngineVersion, st.Release, st.Records, st.FullBytes = l.Version, l.Index, l.Records, l.Full.Length
	}
	filepath.WalkDir(r.pub(), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				st.PublicBytes += fi.Size()
				st.PublicFiles++
			}
		}
		return nil
	})
	return st, nil
}

// CurrentTargets returns the target paths the current targets metadata
// lists with their lengths (for tests and the benchmark).
func (r *Repo) CurrentTargets() (map[string]int64, error) {
	c, err := r.readCurrent()
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for p, tf := range c.targets.Signed.Targets {
		out[p] = tf.Length
	}
	return out, nil
}
