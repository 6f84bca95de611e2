// Package repo is the publisher side of engine updates: a TUF repository
// (roles root, targets, snapshot, timestamp; consistent snapshots) of
// content-addressed engine files and logical deltas.
//
// A repository directory holds:
//
//	repo.json                 settings (window, checkpoint interval, expiries)
//	keys/<role>.pem           Ed25519 keys (root.pem belongs offline after init)
//	public/                   what mirrors copy and serve
//	  metadata/<n>.root.json, <n>.snapshot.json, <n>.targets.json, timestamp.json
//	  targets/engine/<sha256>.full-<V>.mdb.zst, <sha256>.delta-<F>-<T>.zst
//	state/history.json        releases in the window and the deltas made for each
//	state/engines/<V>.mdb     the latest engine (to diff the next one against)
//	state/steps/<V>.delta.zst the delta from the previous release into V
//
// Lifecycle: Init once (or Open), then Publish per release, Refresh at least
// daily (re-signs timestamp and anything near expiry), Prune now and then,
// RotateRoot when a key must change. Close releases the directory lock.
package repo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/mamori/mamori/internal/atomicfile"
	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/engine/signature"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/updates/filelock"
	"github.com/mamori/mamori/internal/updates/scheme"
)

// Default metadata lifetimes.
const (
	DefaultRootExpiry      = 365 * 24 * time.Hour
	DefaultTargetsExpiry   = 30 * 24 * time.Hour
	DefaultSnapshotExpiry  = 14 * 24 * time.Hour
	DefaultTimestampExpiry = 2 * 24 * time.Hour
	DefaultPruneGrace      = 24 * time.Hour
)

// Roles in key-file order.
var roles = []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP}

// Duration is a time.Duration written as text ("48h0m0s") in repo.json.
type Duration time.Duration

// MarshalJSON writes the duration as text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration written as text.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Settings are a repository's publishing settings (repo.json).
type Settings struct {
	Format          int      `json:"format"`
	Window          int      `json:"window"`
	Checkpoint      int      `json:"checkpoint"`
	RootExpiry      Duration `json:"root_expiry"`
	TargetsExpiry   Duration `json:"targets_expiry"`
	SnapshotExpiry  Duration `json:"snapshot_expiry"`
	TimestampExpiry Duration `json:"timestamp_expiry"`
}

// DefaultSettings returns the defaults: window 180 releases, checkpoint
// every 16, metadata lifetimes root 365 d, targets 30 d, snapshot 14 d,
// timestamp 2 d.
func DefaultSettings() Settings {
	return Settings{Format: 1, Window: scheme.DefaultWindow, Checkpoint: scheme.DefaultCheckpoint,
		RootExpiry: Duration(DefaultRootExpiry), TargetsExpiry: Duration(DefaultTargetsExpiry),
		SnapshotExpiry: Duration(DefaultSnapshotExpiry), TimestampExpiry: Duration(DefaultTimestampExpiry)}
}

// Validate checks the settings.
func (s Settings) Validate() error {
	if err := s.schedule().Validate(); err != nil {
		return errcode.New(errcode.Invalid, "%v", err)
	}
	for name, d := range map[string]Duration{"root": s.RootExpiry, "targets": s.TargetsExpiry, "snapshot": s.SnapshotExpiry, "timestamp": s.TimestampExpiry} {
		if time.Duration(d) < time.Minute || time.Duration(d) > 20*365*24*time.Hour {
			return errcode.New(errcode.Invalid, "%s expiry %s is out of range (1m to 20 years)", name, time.Duration(d))
		}
	}
	return nil
}

func (s Settings) schedule() scheme.Schedule {
	return scheme.Schedule{Window: s.Window, Checkpoint: s.Checkpoint}
}

// Blob is a published target file.
type Blob struct {
	Path   string `json:"path"` // target path, e.g. engine/delta-5-9.zst
	SHA256 string `json:"sha256"`
	Length int64  `json:"length"`
	Raw    int64  `json:"raw,omitempty"` // deltas: uncompressed length
}

// Release is one published engine version.
type Release struct {
	Index    int       `json:"index"`
	Version  uint64    `json:"version"`
	Time     time.Time `json:"time"`
	Full     Blob      `json:"full"`
	DBSHA256 string    `json:"db_sha256"`
	DBLength int64     `json:"db_length"`
	Records  int64     `json:"records"`
	Step     Blob      `json:"step"`   // delta from the previous release (empty for the first)
	Deltas   []Delta   `json:"deltas"` // deltas into this release
}

// Delta is a delta made into a release.
type Delta struct {
	From uint64 `json:"from"`
	Blob
}

type history struct {
	NextIndex int       `json:"next_index"`
	Releases  []Release `json:"releases"`
}

// Options for Init and Open.
type Options struct {
	// Now returns the current time (tests); default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
	// KeysDir overrides DIR/keys.
	KeysDir string
}

// Repo is an open repository (holding its directory lock).
type Repo struct {
	dir      string
	keysDir  string
	settings Settings
	now      func() time.Time
	log      *slog.Logger
	lock     *filelock.Lock
	hist     history
	enc      *zstd.Encoder
	// last published record set, kept between publications in one process
	lastVersion uint64
	lastRecs    []signature.Record
}

// Paths inside a repository directory.
func (r *Repo) pub(parts ...string) string {
	return filepath.Join(append([]string{r.dir, "public"}, parts...)...)
}
func (r *Repo) state(parts ...string) string {
	return filepath.Join(append([]string{r.dir, "state"}, parts...)...)
}
func (r *Repo) keyPath(role string) string { return filepath.Join(r.keysDir, role+".pem") }

// Dir is the repository directory.
func (r *Repo) Dir() string { return r.dir }

// PublicDir is the directory mirrors copy (public/).
func (r *Repo) PublicDir() string { return r.pub() }

// Settings returns the repository's settings.
func (r *Repo) Settings() Settings { return r.settings }

func (o *Options) defaults() {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

func newRepo(dir string, o Options) (*Repo, error) {
	o.defaults()
	keys := o.KeysDir
	if keys == "" {
		keys = filepath.Join(dir, "keys")
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return &Repo{dir: dir, keysDir: keys, now: func() time.Time { return o.Now().UTC() }, log: o.Logger, enc: enc}, nil
}

func (r *Repo) takeLock() error {
	l, err := filelock.TryLock(filepath.Join(r.dir, ".lock"))
	if errors.Is(err, filelock.ErrLocked) {
		return errcode.New(errcode.Conflict, "repository %s is in use by another command", r.dir)
	}
	if err != nil {
		return err
	}
	r.lock = l
	return nil
}

// InitResult describes a new repository.
type InitResult struct {
	RootSHA256 string   // SHA-256 of metadata/1.root.json: the pin agents and mirrors may use
	KeyFiles   []string // key files written
}

// Init creates a repository in dir (which must be empty or absent) with new
// keys for every role, and publishes empty signed metadata (version 1 of
// every role), so mirrors and agents can already verify it.
func Init(dir string, s Settings, o Options) (*Repo, InitResult, error) {
	var res InitResult
	if err := s.Validate(); err != nil {
		return nil, res, err
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return nil, res, errcode.New(errcode.Conflict, "%s is not empty", dir)
	}
	r, err := newRepo(dir, o)
	if err != nil {
		return nil, res, err
	}
	r.settings = s
	for _, d := range []string{r.pub("metadata"), r.pub("targets", scheme.EngineDir), r.state("engines"), r.state("steps")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, res, err
		}
	}
	if err := r.takeLock(); err != nil {
		return nil, res, err
	}
	keys := map[string]*metadata.Key{}
	for _, role := range roles {
		priv, err := GenerateKey(r.keyPath(role))
		if err != nil {
			r.Close()
			return nil, res, err
		}
		res.KeyFiles = append(res.KeyFiles, r.keyPath(role))
		if keys[role], err = tufKey(priv); err != nil {
			r.Close()
			return nil, res, err
		}
	}
	root := metadata.Root(r.now().Add(time.Duration(s.RootExpiry)))
	root.Signed.ConsistentSnapshot = true
	for _, role := range roles {
		if err := root.Signed.AddKey(keys[role], role); err != nil {
			r.Close()
			return nil, res, err
		}
	}
	if err := r.signRoot(root, []string{r.keyPath(metadata.ROOT)}); err != nil {
		r.Close()
		return nil, res, err
	}
	raw, err := root.ToBytes(false)
	if err != nil {
		r.Close()
		return nil, res, err
	}
	if err := atomicfile.Write(r.pub("metadata", "1.root.json"), raw, 0o644); err != nil {
		r.Close()
		return nil, res, err
	}
	res.RootSHA256 = sha256Hex(raw)
	if err := r.saveSettings(); err != nil {
		r.Close()
		return nil, res, err
	}
	if err := r.saveHistory(); err != nil {
		r.Close()
		return nil, res, err
	}
	if err := r.writeTopLevel(map[string]*metadata.TargetFiles{}, true); err != nil {
		r.Close()
		return nil, res, err
	}
	return r, res, nil
}

// Open opens an existing repository and takes its lock.
func Open(dir string, o Options) (*Repo, error) {
	r, err := newRepo(dir, o)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "repo.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errcode.New(errcode.NotFound, "%s is not a repository (no repo.json; run mamori repo init)", dir)
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &r.settings); err != nil {
		return nil, errcode.New(errcode.Invalid, "%s/repo.json: %v", dir, err)
	}
	if r.settings.Format != 1 {
		return nil, errcode.New(errcode.Invalid, "%s/repo.json: unsupported format %d", dir, r.settings.Format)
	}
	if err := r.settings.Validate(); err != nil {
		return nil, err
	}
	if err := r.takeLock(); err != nil {
		return nil, err
	}
	if err := r.loadHistory(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Close releases the lock.
func (r *Repo) Close() error {
	if r.enc != nil {
		r.enc.Close()
	}
	return r.lock.Unlock()
}

// SetSchedule changes the window and checkpoint interval for later
// publications.
func (r *Repo) SetSchedule(window, checkpoint int) error {
	s := r.settings
	s.Window, s.Checkpoint = window, checkpoint
	if err := s.Validate(); err != nil {
		return err
	}
	r.settings = s
	return r.saveSettings()
}

func (r *Repo) saveSettings() error {
	b, _ := json.MarshalIndent(r.settings, "", "  ")
	return atomicfile.Write(filepath.Join(r.dir, "repo.json"), append(b, '\n'), 0o644)
}

func (r *Repo) saveHistory() error {
	b, err := json.Marshal(r.hist)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(r.state(), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(r.state("history.json"), b, 0o644)
}

// loadHistory reads the history and drops releases that were being
// published when a publisher died (written to the history but never
// committed by a timestamp).
func (r *Repo) loadHistory() error {
	b, err := os.ReadFile(r.state("history.json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &r.hist); err != nil {
		return errcode.New(errcode.Invalid, "%s: %v", r.state("history.json"), err)
	}
	latest, err := r.publishedVersion()
	if err != nil {
		return err
	}
	n := len(r.hist.Releases)
	for n > 0 && r.hist.Releases[n-1].Version > latest {
		n--
	}
	if n != len(r.hist.Releases) {
		r.log.Warn("dropping releases that were never committed", "count", len(r.hist.Releases)-n)
		r.hist.Releases = r.hist.Releases[:n]
		r.hist.NextIndex = 0
		if n > 0 {
			r.hist.NextIndex = r.hist.Releases[n-1].Index + 1
		}
		return r.saveHistory()
	}
	return nil
}

// current reads the published (committed) top-level metadata.
type current struct {
	root      *metadata.Metadata[metadata.RootType]
	timestamp *metadata.Metadata[metadata.TimestampType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	targets   *metadata.Metadata[metadata.TargetsType]
}

func (r *Repo) readCurrent() (*current, error) {
	c := &current{}
	rv, err := r.latestVersionFile("root")
	if err != nil {
		return nil, err
	}
	if c.root, err = metadata.Root().FromFile(r.pub("metadata", strconv.FormatInt(rv, 10)+".root.json")); err != nil {
		return nil, err
	}
	if c.timestamp, err = metadata.Timestamp().FromFile(r.pub("metadata", "timestamp.json")); err != nil {
		return nil, err
	}
	sv := c.timestamp.Signed.Meta["snapshot.json"].Version
	if c.snapshot, err = metadata.Snapshot().FromFile(r.pub("metadata", strconv.FormatInt(sv, 10)+".snapshot.json")); err != nil {
		return nil, err
	}
	tv := c.snapshot.Signed.Meta["targets.json"].Version
	if c.targets, err = metadata.Targets().FromFile(r.pub("metadata", strconv.FormatInt(tv, 10)+".targets.json")); err != nil {
		return nil, err
	}
	return c, nil
}

// publishedVersion is the engine version the committed targets offer (0 if
// none).
func (r *Repo) publishedVersion() (uint64, error) {
	c, err := r.readCurrent()
	if err != nil {
		return 0, err
	}
	var v uint64
	for p := range c.targets.Signed.Targets {
		if k, _, to := scheme.ParsePath(p); k == scheme.KindFull && to > v {
			v = to
		}
	}
	return v, nil
}

// latestVersionFile returns the highest n of metadata/<n>.<role>.json.
func (r *Repo) latestVersionFile(role string) (int64, error) {
	ents, err := os.ReadDir(r.pub("metadata"))
	if err != nil {
		return 0, err
	}
	var best int64
	for _, e := range ents {
		if s, ok := strings.CutSuffix(e.Name(), "."+role+".json"); ok {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > best {
				best = n
			}
		}
	}
	if best == 0 {
		return 0, errcode.New(errcode.NotFound, "no %s metadata in %s", role, r.pub("metadata"))
	}
	return best, nil
}

func (r *Repo) signRoot(root *metadata.Metadata[metadata.RootType], keyFiles []string) error {
	for _, kf := range keyFiles {
		priv, err := LoadKey(kf)
		if err != nil {
			return err
		}
		s, err := signer(priv)
		if err != nil {
			return err
		}
		if _, err := root.Sign(s); err != nil {
			return err
		}
	}
	return nil
}

func signWith[T metadata.Roles](m *metadata.Metadata[T], keyFile string) error {
	priv, err := LoadKey(keyFile)
	if err != nil {
		return err
	}
	s, err := signer(priv)
	if err != nil {
		return err
	}
	m.ClearSignatures()
	_, err = m.Sign(s)
	return err
}

// writeTopLevel signs and writes new targets (with the given target
// files), snapshot and timestamp versions; the timestamp is written last and
// commits them.
func (r *Repo) writeTopLevel(files map[string]*metadata.TargetFiles, first bool) error {
	now := r.now()
	tv, sv := int64(1), int64(1)
	if !first {
		var err error
		if tv, err = r.latestVersionFile("targets"); err != nil {
			return err
		}
		if sv, err = r.latestVersionFile("snapshot"); err != nil {
			return err
		}
		tv, sv = tv+1, sv+1
	}
	targets := metadata.Targets(now.Add(time.Duration(r.settings.TargetsExpiry)))
	targets.Signed.Version = tv
	targets.Signed.Targets = files
	if err := signWith(targets, r.keyPath(metadata.TARGETS)); err != nil {
		return err
	}
	traw, err := targets.ToBytes(false)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(r.pub("metadata", strconv.FormatInt(tv, 10)+".targets.json"), traw, 0o644); err != nil {
		return err
	}
	return r.writeSnapshotAndTimestamp(tv, traw, sv)
}

func (r *Repo) writeSnapshotAndTimestamp(tv int64, traw []byte, sv int64) error {
	now := r.now()
	snap := metadata.Snapshot(now.Add(time.Duration(r.settings.SnapshotExpiry)))
	snap.Signed.Version = sv
	snap.Signed.Meta["targets.json"] = metaFile(tv, traw)
	if err := signWith(snap, r.keyPath(metadata.SNAPSHOT)); err != nil {
		return err
	}
	sraw, err := snap.ToBytes(false)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(r.pub("metadata", strconv.FormatInt(sv, 10)+".snapshot.json"), sraw, 0o644); err != nil {
		return err
	}
	return r.writeTimestamp(sv, sraw)
}

func (r *Repo) writeTimestamp(sv int64, sraw []byte) error {
	tsv := int64(1)
	if old, err := metadata.Timestamp().FromFile(r.pub("metadata", "timestamp.json")); err == nil {
		tsv = old.Signed.Version + 1
	}
	ts := metadata.Timestamp(r.now().Add(time.Duration(r.settings.TimestampExpiry)))
	ts.Signed.Version = tsv
	ts.Signed.Meta["snapshot.json"] = metaFile(sv, sraw)
	if err := signWith(ts, r.keyPath(metadata.TIMESTAMP)); err != nil {
		return err
	}
	raw, err := ts.ToBytes(false)
	if err != nil {
		return err
	}
	return atomicfile.Write(r.pub("metadata", "timestamp.json"), raw, 0o644)
}

func metaFile(version int64, raw []byte) *metadata.MetaFiles {
	m := metadata.MetaFile(version)
	m.Length = int64(len(raw))
	m.Hashes = metadata.Hashes{"sha256": sha256Bytes(raw)}
	return m
}

func marshalCustom(v any) *json.RawMessage {
	b, _ := json.Marshal(v)
	raw := json.RawMessage(b)
	return &raw
}

// blobFile is where a blob is stored on disk (consistent snapshots).
func (r *Repo) blobFile(b Blob) string {
	dir, base := filepath.Split(filepath.FromSlash(b.Path))
	return r.pub("targets", dir, b.SHA256+"."+base)
}

// writeBlob stores data as target path (content-addressed; an existing
// identical file is kept).
func (r *Repo) writeBlob(path string, data []byte) (Blob, error) {
	b := Blob{Path: path, SHA256: sha256Hex(data), Length: int64(len(data))}
	f := r.blobFile(b)
	if fi, err := os.Stat(f); err == nil && fi.Size() == b.Length {
		return b, nil
	}
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		return b, err
	}
	return b, atomicfile.Write(f, data, 0o644)
}

func (r *Repo) compress(data []byte) []byte { return r.enc.EncodeAll(data, nil) }

func (r *Repo) readStep(v uint64) (enginedb.Delta, error) {
	b, err := os.ReadFile(r.state("steps", strconv.FormatUint(v, 10)+".delta.zst"))
	if err != nil {
		return enginedb.Delta{}, err
	}
	dec, err := zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return enginedb.Delta{}, err
	}
	defer dec.Close()
	return enginedb.ReadDelta(dec)
}

// PublishResult describes a publication.
type PublishResult struct {
	Version     uint64
	Release     int
	Records     int64
	FullBytes   int64 // compressed full engine
	DBBytes     int64
	StepAdded   int   // records added since the previous release
	StepRemoved int   // records removed since the previous release
	Deltas      int   // deltas made into this release
	DeltaBytes  int64 // their compressed total
	Listed      int   // targets listed in the new targets metadata
	// Step is the logical delta from the previous release (nil for the first).
	Step *enginedb.Delta
}

// LatestVersion is the last published engine version (0 if none).
func (r *Repo) LatestVersion() uint64 {
	if n := len(r.hist.Releases); n > 0 {
		return r.hist.Releases[n-1].Version
	}
	return 0
}

// Releases returns the releases the history holds (oldest first).
func (r *Repo) Releases() []Release { return append([]Release(nil), r.hist.Releases...) }

// Publish adds engine version (records) as the next release: the full
// engine, the deltas into it the schedule calls for, and new signed
// targets, snapshot and timestamp. version must exceed the last published
// one and builtin's 1; 0 means last+1 (2 for the first).
func (r *Repo) Publish(recs []signature.Record, version uint64) (PublishResult, error) {
	var res PublishResult
	last := r.LatestVersion()
	if version == 0 {
		version = max(last+1, 2)
	}
	if version <= last || version < 2 {
		return res, errcode.New(errcode.Conflict, "engine version %d must be greater than the last published %d (and than 1, the built-in engine)", version, last)
	}
	recs = enginedb.Normalize(recs)
	db, err := enginedb.Build(recs, version)
	if err != nil {
		return res, errcode.New(errcode.Invalid, "building engine %d: %v", version, err)
	}
	rel := Release{Index: r.hist.NextIndex, Version: version, Time: r.now(), DBSHA256: sha256Hex(db), DBLength: int64(len(db)), Records: int64(len(recs))}
	full := r.compress(db)
	rel.Full, err = r.writeBlob(scheme.FullPath(version), full)
	if err != nil {
		return res, err
	}
	res = PublishResult{Version: version, Release: rel.Index, Records: rel.Records, FullBytes: rel.Full.Length, DBBytes: rel.DBLength}
	if len(r.hist.Releases) > 0 {
		prev := r.hist.Releases[len(r.hist.Releases)-1]
		prevRecs := r.lastRecs
		if r.lastVersion != prev.Version || prevRecs == nil {
			pdb, err := enginedb.LoadFile(r.state("engines", strconv.FormatUint(prev.Version, 10)+".mdb"))
			if err != nil {
				return res, fmt.Errorf("loading the previous engine: %w", err)
			}
			if prevRecs, err = pdb.Records(); err != nil {
				return res, err
			}
		}
		step := enginedb.Diff(prevRecs, recs, prev.Version, version)
		res.Step = &step
		res.StepAdded, res.StepRemoved = len(step.Added), len(step.Removed)
		var buf bytes.Buffer
		if _, err := step.WriteTo(&buf); err != nil {
			return res, err
		}
		stepZ := r.compress(buf.Bytes())
		if err := atomicfile.Write(r.state("steps", strconv.FormatUint(version, 10)+".delta.zst"), stepZ, 0o644); err != nil {
			return res, err
		}
		rel.Step = Blob{Path: scheme.DeltaPath(prev.Version, version), SHA256: sha256Hex(stepZ), Length: int64(len(stepZ)), Raw: int64(buf.Len())}
		if err := r.makeDeltas(&rel, step); err != nil {
			return res, err
		}
	}
	for _, d := range rel.Deltas {
		res.Deltas++
		res.DeltaBytes += d.Length
	}
	// keep the new engine for the next diff before committing anything
	if err := atomicfile.Write(r.state("engines", strconv.FormatUint(version, 10)+".mdb"), db, 0o644); err != nil {
		return res, err
	}
	r.hist.Releases = append(r.hist.Releases, rel)
	r.hist.NextIndex = rel.Index + 1
	if err := r.saveHistory(); err != nil {
		return res, err
	}
	files, err := r.listing()
	if err != nil {
		return res, err
	}
	res.Listed = len(files)
	if err := r.writeTopLevel(files, false); err != nil {
		return res, err
	}
	r.lastVersion, r.lastRecs = version, recs
	// committed: keep this engine and the previous one (a publisher that
	// dies before committing the next release must find this one again)
	r.removeOldEngines(version, prevVersion(r.hist.Releases))
	r.log.Info("published engine", "version", version, "release", rel.Index, "records", rel.Records, "deltas", res.Deltas)
	return res, nil
}

func prevVersion(rels []Release) uint64 {
	if len(rels) < 2 {
		return 0
	}
	return rels[len(rels)-2].Version
}

func (r *Repo) removeOldEngines(keep ...uint64) {
	ents, _ := os.ReadDir(r.state("engines"))
	for _, e := range ents {
		v, ok := strings.CutSuffix(e.Name(), ".mdb")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err == nil && slices.Contains(keep, n) {
			continue
		}
		os.Remove(r.state("engines", e.Name()))
	}
}

// makeDeltas makes the deltas into rel from every source release the
// schedule names, composing step deltas backwards from rel.
func (r *Repo) makeDeltas(rel *Release, step enginedb.Delta) error {
	sched := r.settings.schedule()
	srcs := sched.Sources(rel.Index)
	if len(srcs) == 0 {
		return nil
	}
	byIndex := map[int]int{}
	for i, x := range r.hist.Releases {
		byIndex[x.Index] = i
	}
	want := map[int]bool{}
	lowest := rel.Index
	for _, s := range srcs {
		if _, ok := byIndex[s]; ok {
			want[s] = true
			lowest = min(lowest, s)
		}
	}
	net := scheme.NewNet(rel.Version)
	if err := net.Prepend(step); err != nil {
		return err
	}
	// walk back: after prepending the step into release j, the net starts at
	// release j-1
	j := len(r.hist.Releases) - 1 // the previous release
	for {
		cur := r.hist.Releases[j]
		if want[cur.Index] {
			if err := r.emitDelta(rel, net.Delta()); err != nil {
				return err
			}
		}
		if cur.Index <= lowest || j == 0 {
			break
		}
		d, err := r.readStep(cur.Version)
		if err != nil {
			return fmt.Errorf("reading the step delta into %d: %w", cur.Version, err)
		}
		if err := net.Prepend(d); err != nil {
			return err
		}
		j--
	}
	sort.Slice(rel.Deltas, func(a, b int) bool { return rel.Deltas[a].From < rel.Deltas[b].From })
	return nil
}

func (r *Repo) emitDelta(rel *Release, d enginedb.Delta) error {
	var buf bytes.Buffer
	if _, err := d.WriteTo(&buf); err != nil {
		return err
	}
	b, err := r.writeBlob(scheme.DeltaPath(d.From, d.To), r.compress(buf.Bytes()))
	if err != nil {
		return err
	}
	b.Raw = int64(buf.Len())
	rel.Deltas = append(rel.Deltas, Delta{From: d.From, Blob: b})
	return nil
}

// listing builds the target files of the latest release: its full engine
// and every delta a client inside the window needs.
func (r *Repo) listing() (map[string]*metadata.TargetFiles, error) {
	files := map[string]*metadata.TargetFiles{}
	n := len(r.hist.Releases)
	if n == 0 {
		return files, nil
	}
	latest := r.hist.Releases[n-1]
	full := targetFile(latest.Full)
	full.Custom = marshalCustom(scheme.FullInfo{Version: latest.Version, Release: uint64(latest.Index), DBLength: latest.DBLength, DBSHA256: latest.DBSHA256, Records: latest.Records,
		Published: latest.Time.UTC().Truncate(time.Second)})
	files[latest.Full.Path] = full
	byIndex := map[int]Release{}
	for _, x := range r.hist.Releases {
		byIndex[x.Index] = x
	}
	first := r.hist.Releases[0].Index
	for h := range r.settings.schedule().Needed(latest.Index, first) {
		from, ok1 := byIndex[h.From]
		to, ok2 := byIndex[h.To]
		if !ok1 || !ok2 {
			continue
		}
		for _, d := range to.Deltas {
			if d.From != from.Version {
				continue
			}
			if fi, err := os.Stat(r.blobFile(d.Blob)); err != nil || fi.Size() != d.Length {
				r.log.Warn("delta missing from the repository; clients will take another way", "path", d.Path)
				break
			}
			tf := targetFile(d.Blob)
			tf.Custom = marshalCustom(scheme.DeltaInfo{Raw: d.Raw})
			files[d.Path] = tf
			break
		}
	}
	return files, nil
}

func targetFile(b Blob) *metadata.TargetFiles {
	tf := metadata.TargetFile()
	tf.Length = b.Length
	h, _ := hexDecode(b.SHA256)
	tf.Hashes["sha256"] = h
	tf.Path = b.Path
	return tf
}
