// Package mirror re-serves an update repository: it syncs from an upstream
// (the publisher's repository, another mirror, a folder or a bundle tar),
// verifies everything through TUF before serving it, and serves the files
// as static, cache-friendly HTTP with a connection limit, global and
// per-client bandwidth caps, and metrics.
//
// Lifecycle: New (loads and re-verifies what the directory already holds,
// so serving starts at once) → Handler (mount it; safe before the first
// sync) → Run (periodic and on-demand sync until ctx ends) → Close.
//
// Directory layout (the same as the repository's public/ plus private state):
//
//	metadata/<n>.root.json, <n>.snapshot.json, <n>.targets.json, timestamp.json
//	targets/<dir>/<sha256>.<name>
//	.mirror/tuf/         trusted metadata (rollback protection across syncs)
//	.mirror/state.json   the verified states being served
//	.mirror/lock         held by the process that owns the directory
package mirror

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mamori/mamori/internal/atomicfile"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/updates/filelock"
	"github.com/mamori/mamori/internal/updates/scheme"
	"github.com/mamori/mamori/internal/updates/source"
	"github.com/mamori/mamori/internal/updates/trust"
)

// Defaults.
const (
	DefaultSyncInterval    = 5 * time.Minute
	DefaultMaxConns        = 512
	DefaultTimestampMaxAge = 60 * time.Second
	DefaultRetain          = 24 * time.Hour
	DefaultOfflineMaxAge   = 30 * 24 * time.Hour
	DefaultMaxRetryAfter   = 300 * time.Second
)

// Config configures a mirror.
type Config struct {
	// Dir holds the mirrored files and private state (created).
	Dir string
	// Upstream is a repository or mirror URL, a folder, or a bundle tar;
	// empty serves what Dir holds without syncing.
	Upstream string
	// TrustedRoot (a root.json) or RootSHA256 (pin of 1.root.json) is
	// needed for the first sync; later the trusted root in Dir is used.
	TrustedRoot []byte
	RootSHA256  string
	// Proxy for an HTTP upstream: "" from the environment, "none", or a URL.
	Proxy string
	// HTTPClient overrides the upstream client built from Proxy.
	HTTPClient *http.Client
	// SyncInterval between syncs (default 5 min, ±10 % jitter).
	SyncInterval time.Duration
	// MaxConns is how many target files are sent at once (default 512; -1
	// unlimited); over it the mirror answers 503 with Retry-After at once.
	// Metadata answers (small, from memory) have their own limit of
	// 8 × MaxConns.
	MaxConns int
	// Rate caps the bytes/s sent to all clients together (0: no cap).
	Rate int64
	// ClientRate caps the bytes/s sent to one client address (0: no cap).
	ClientRate int64
	// TimestampMaxAge is the Cache-Control max-age of timestamp.json and of
	// 404 answers (default 60 s).
	TimestampMaxAge time.Duration
	// Retain keeps a superseded state's files for this long (default 24 h)
	// so clients and caches that fetched an older timestamp still find
	// what it names.
	Retain time.Duration
	// OfflineMaxAge: metadata from a folder or tar upstream is accepted up
	// to this long after it expired (default 30 days).
	OfflineMaxAge time.Duration
	// MaxRetryAfter bounds the Retry-After the mirror hands out (default 300 s).
	MaxRetryAfter time.Duration

	// Logger; default slog.Default().
	Logger *slog.Logger
	// Registerer receives the mirror's metrics (nil: none).
	Registerer prometheus.Registerer
	// Progress is told the bytes of targets fetched during a sync.
	Progress func(done, total int64)
	// Now returns the time (tests); default time.Now.
	Now func() time.Time
}

// Status describes a mirror.
type Status struct {
	Upstream         string    `json:"upstream"`
	EngineVersion    uint64    `json:"engine_version"`
	TimestampVersion int64     `json:"timestamp_version"`
	Expires          time.Time `json:"expires,omitzero"`
	LastSync         time.Time `json:"last_sync,omitzero"`
	LastSyncSuccess  time.Time `json:"last_sync_success,omitzero"`
	LastSyncError    string    `json:"last_sync_error,omitempty"`
	Files            int       `json:"files"`
	Bytes            int64     `json:"bytes"`
	ActiveRequests   int64     `json:"active_requests"`
}

// SyncResult describes one sync.
type SyncResult struct {
	Changed          bool    `json:"changed"`
	TimestampVersion int64   `json:"timestamp_version"`
	EngineVersion    uint64  `json:"engine_version"`
	Fetched          int     `json:"fetched"` // files downloaded
	FetchedBytes     int64   `json:"fetched_bytes"`
	Removed          int     `json:"removed"` // files no longer served
	Seconds          float64 `json:"seconds"`
}

// fileRec is one served file in the persisted state.
type fileRec struct {
	Name   string `json:"name"` // served path, e.g. metadata/3.targets.json
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

type servedState struct {
	TimestampVersion int64     `json:"timestamp_version"`
	EngineVersion    uint64    `json:"engine_version"`
	Expires          time.Time `json:"expires"`
	SyncedAt         time.Time `json:"synced_at"`
	SupersededAt     time.Time `json:"superseded_at,omitzero"`
	Files            []fileRec `json:"files"`
}

type persisted struct {
	Roots  []fileRec     `json:"roots"`
	States []servedState `json:"states"` // newest last
	// Timestamp is the current timestamp.json (served from memory).
	Timestamp []byte `json:"timestamp"`
}

// Mirror is a running mirror.
type Mirror struct {
	cfg  Config
	log  *slog.Logger
	now  func() time.Time
	lock *filelock.Lock

	syncMu  sync.Mutex // one sync at a time
	state   persisted
	idx     atomic.Pointer[index]
	trigger chan struct{}

	statusMu sync.Mutex
	status   Status

	lim *limits
	met *metrics
}

// New opens the mirror directory, takes its lock, and loads and re-checks
// (sizes and SHA-256) what it already serves.
func New(cfg Config) (*Mirror, error) {
	if cfg.Dir == "" {
		return nil, errcode.New(errcode.Invalid, "mirror: no directory")
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = DefaultSyncInterval
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConns < -1 || cfg.Rate < 0 || cfg.ClientRate < 0 {
		return nil, errcode.New(errcode.Invalid, "mirror: limits must not be negative")
	}
	if cfg.TimestampMaxAge <= 0 {
		cfg.TimestampMaxAge = DefaultTimestampMaxAge
	}
	if cfg.Retain <= 0 {
		cfg.Retain = DefaultRetain
	}
	if cfg.OfflineMaxAge <= 0 {
		cfg.OfflineMaxAge = DefaultOfflineMaxAge
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = DefaultMaxRetryAfter
	}

	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Mirror{cfg: cfg, log: cfg.Logger, now: cfg.Now, trigger: make(chan struct{}, 1)}
	for _, d := range []string{filepath.Join(cfg.Dir, ".mirror", "tuf"), filepath.Join(cfg.Dir, ".mirror", "tmp"), filepath.Join(cfg.Dir, "metadata"), filepath.Join(cfg.Dir, "targets")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	l, err := filelock.TryLock(filepath.Join(cfg.Dir, ".mirror", "lock"))
	if errors.Is(err, filelock.ErrLocked) {
		return nil, errcode.New(errcode.Conflict, "mirror directory %s is in use by another process", cfg.Dir)
	}
	if err != nil {
		return nil, err
	}
	m.lock = l
	m.lim = newLimits(cfg)
	m.met = newMetrics(m)
	if cfg.Registerer != nil {
		if err := m.met.register(cfg.Registerer); err != nil {
			l.Unlock()
			return nil, err
		}
	}
	m.status.Upstream = cfg.Upstream
	if err := m.load(); err != nil {
		m.log.Warn("mirror: discarding the stored state; it will be synced again", "err", err)
		m.state = persisted{}
	}
	m.publish()
	return m, nil
}

// Close releases the directory.
func (m *Mirror) Close() error { return m.lock.Unlock() }

// Dir is the mirror's directory.
func (m *Mirror) Dir() string { return m.cfg.Dir }

func (m *Mirror) statePath() string { return filepath.Join(m.cfg.Dir, ".mirror", "state.json") }

func (m *Mirror) path(name string) string {
	return filepath.Join(m.cfg.Dir, filepath.FromSlash(name))
}

// load reads state.json and checks every file it names.
func (m *Mirror) load() error {
	b, err := os.ReadFile(m.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var p persisted
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	check := func(f fileRec) error {
		if err := checkServedName(f.Name); err != nil {
			return err
		}
		got, n, err := hashFile(m.path(f.Name))
		if err != nil {
			return err
		}
		if got != f.SHA256 || n != f.Size {
			return fmt.Errorf("%s changed on disk", f.Name)
		}
		return nil
	}
	for _, f := range p.Roots {
		if err := check(f); err != nil {
			return err
		}
	}
	for _, s := range p.States {
		for _, f := range s.Files {
			if err := check(f); err != nil {
				return err
			}
		}
	}
	m.state = p
	if n := len(p.States); n > 0 {
		cur := p.States[n-1]
		m.statusMu.Lock()
		m.status.EngineVersion, m.status.TimestampVersion, m.status.Expires = cur.EngineVersion, cur.TimestampVersion, cur.Expires
		m.status.LastSyncSuccess = cur.SyncedAt
		m.statusMu.Unlock()
	}
	return nil
}

// checkServedName accepts only the names a mirror writes.
func checkServedName(name string) error {
	if (strings.HasPrefix(name, "metadata/") || strings.HasPrefix(name, "targets/")) && !strings.Contains(name, "..") && !strings.Contains(name, "//") && !strings.HasPrefix(filepath.Base(name), ".") {
		return nil
	}
	return fmt.Errorf("unexpected file name %q in the mirror state", name)
}

func hashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Status returns the mirror's status.
func (m *Mirror) Status() Status {
	m.statusMu.Lock()
	s := m.status
	m.statusMu.Unlock()
	if ix := m.idx.Load(); ix != nil {
		s.Files, s.Bytes = len(ix.files), ix.bytes
	}
	s.ActiveRequests = m.lim.active.Load() + m.lim.activeMeta.Load()
	return s
}

// SyncNow asks Run to sync at once (it returns immediately).
func (m *Mirror) SyncNow() {
	select {
	case m.trigger <- struct{}{}:
	default:
	}
}

// Run syncs at start, then every SyncInterval (±10 %) and whenever SyncNow
// is called, until ctx ends. Sync failures are logged and counted; the
// mirror keeps serving what it verified last.
func (m *Mirror) Run(ctx context.Context) error {
	if m.cfg.Upstream == "" {
		<-ctx.Done()
		return nil
	}
	for {
		if _, err := m.Sync(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("mirror sync failed", "upstream", m.cfg.Upstream, "err", err)
		}
		m.lim.sweep(m.now())
		d := m.cfg.SyncInterval
		d += time.Duration((rand.Float64()*0.2 - 0.1) * float64(d))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-m.trigger:
			t.Stop()
		case <-t.C:
		}
	}
}

// Sync fetches and verifies the upstream's current state and starts
// serving it. Nothing is served that did not verify.
func (m *Mirror) Sync(ctx context.Context) (SyncResult, error) {
	m.syncMu.Lock()
	defer m.syncMu.Unlock()
	start := m.now()
	res, err := m.sync(ctx)
	res.Seconds = m.now().Sub(start).Seconds()
	m.statusMu.Lock()
	m.status.LastSync = start
	if err != nil {
		m.status.LastSyncError = err.Error()
		m.met.syncs.WithLabelValues("error").Inc()
	} else {
		m.status.LastSyncError = ""
		m.status.LastSyncSuccess = start
		m.status.EngineVersion, m.status.TimestampVersion = res.EngineVersion, res.TimestampVersion
		m.met.lastSync.Set(float64(start.Unix()))
		m.met.engineVersion.Set(float64(res.EngineVersion))
		if n := len(m.state.States); n > 0 {
			m.status.Expires = m.state.States[n-1].Expires
			m.met.expires.Set(float64(m.status.Expires.Unix()))
		}
		if res.Changed {
			m.met.syncs.WithLabelValues("changed").Inc()
		} else {
			m.met.syncs.WithLabelValues("unchanged").Inc()
		}
	}
	m.statusMu.Unlock()
	return res, err
}

func (m *Mirror) sync(ctx context.Context) (SyncResult, error) {
	var res SyncResult
	if m.cfg.Upstream == "" {
		return res, errcode.New(errcode.Invalid, "mirror: no upstream")
	}
	stats := new(source.Stats)
	src, err := source.Open(m.cfg.Upstream, source.Options{Client: m.cfg.HTTPClient, Proxy: m.cfg.Proxy, Stats: stats, Logger: m.log})
	if err != nil {
		return res, err
	}
	defer src.Close()
	ref := m.now()
	if src.Offline() {
		ref = ref.Add(-m.cfg.OfflineMaxAge)
	}
	ts, err := trust.Refresh(ctx, src, trust.Options{CacheDir: filepath.Join(m.cfg.Dir, ".mirror", "tuf"),
		InitialRoot: m.cfg.TrustedRoot, RootSHA256: m.cfg.RootSHA256, RefTime: ref})
	if err != nil {
		return res, err
	}
	res.TimestampVersion = ts.TimestampVersion()
	res.EngineVersion = engineVersion(ts)
	if n := len(m.state.States); n > 0 && m.state.States[n-1].TimestampVersion == ts.TimestampVersion() && bytes.Equal(m.state.Timestamp, ts.TimestampRaw) {
		return res, nil
	}
	res.Changed = true
	// roots 1..R
	roots, err := m.syncRoots(ctx, src, ts)
	if err != nil {
		return res, err
	}
	// targets, verified before they are renamed into place
	known := map[string]fileRec{}
	for _, s := range m.state.States {
		for _, f := range s.Files {
			known[f.Name] = f
		}
	}
	type want struct {
		name string
		tf   fileRec
		sha  string
	}
	var wants []want
	var total int64
	paths := make([]string, 0, len(ts.Targets()))
	for p := range ts.Targets() {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		tf := ts.Targets()[p]
		name, err := trust.RemotePath(tf)
		if err != nil {
			return res, err
		}
		sha, _ := trust.TargetSHA256(tf)
		wants = append(wants, want{name: name, tf: fileRec{Name: name, SHA256: sha, Size: tf.Length}})
		total += tf.Length
	}
	newFiles := []fileRec{}
	var done int64
	for _, w := range wants {
		if k, ok := known[w.name]; ok && k.SHA256 == w.tf.SHA256 && k.Size == w.tf.Size {
			newFiles = append(newFiles, w.tf)
			done += w.tf.Size
			continue
		}
		dst := m.path(w.name)
		if got, n, err := hashFile(dst); err == nil && got == w.tf.SHA256 && n == w.tf.Size {
			newFiles = append(newFiles, w.tf)
			done += w.tf.Size
			continue
		}
		part := filepath.Join(m.cfg.Dir, ".mirror", "tmp", w.tf.SHA256+".part")
		if err := src.Download(ctx, w.name, part, w.tf.Size); err != nil {
			return res, err
		}
		got, n, err := hashFile(part)
		if err != nil {
			return res, err
		}
		if got != w.tf.SHA256 || n != w.tf.Size {
			os.Remove(part)
			os.Remove(part + ".meta")
			return res, trust.HashMismatch(w.name, fmt.Errorf("upstream sent %d bytes with SHA-256 %s, signed metadata says %d bytes, %s", n, got, w.tf.Size, w.tf.SHA256))
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return res, err
		}
		// world-readable like the rest of the tree, so any static server
		// (nginx, a CDN origin) can serve the directory as well
		if err := os.Chmod(part, 0o644); err != nil {
			return res, err
		}
		if err := os.Rename(part, dst); err != nil {
			return res, err
		}
		os.Remove(part + ".meta")
		res.Fetched++
		res.FetchedBytes += n
		done += n
		newFiles = append(newFiles, w.tf)
		if m.cfg.Progress != nil {
			m.cfg.Progress(done, total)
		}
	}
	if m.cfg.Progress != nil {
		m.cfg.Progress(total, total)
	}
	// metadata (immutable versioned files; timestamp.json is served from
	// memory and written last for plain static serving of the directory)
	meta := []struct {
		name string
		raw  []byte
	}{
		{"metadata/" + strconv.FormatInt(ts.SnapshotVersion(), 10) + ".snapshot.json", ts.SnapshotRaw},
		{"metadata/" + strconv.FormatInt(ts.TargetsVersion(), 10) + ".targets.json", ts.TargetsRaw},
	}
	for _, x := range meta {
		if err := m.writeImmutable(x.name, x.raw); err != nil {
			return res, err
		}
		newFiles = append(newFiles, fileRec{Name: x.name, SHA256: trust.SHA256Hex(x.raw), Size: int64(len(x.raw))})
	}
	if err := atomicfile.Write(m.path("metadata/timestamp.json"), ts.TimestampRaw, 0o644); err != nil {
		return res, err
	}
	now := m.now().UTC()
	next := persisted{Roots: roots, Timestamp: ts.TimestampRaw}
	for _, s := range m.state.States {
		if s.SupersededAt.IsZero() {
			s.SupersededAt = now
		}
		if now.Sub(s.SupersededAt) < m.cfg.Retain {
			next.States = append(next.States, s)
		}
	}
	next.States = append(next.States, servedState{TimestampVersion: ts.TimestampVersion(), EngineVersion: res.EngineVersion,
		Expires: ts.Expires(), SyncedAt: now, Files: newFiles})
	b, err := json.Marshal(next)
	if err != nil {
		return res, err
	}
	if err := atomicfile.Write(m.statePath(), b, 0o644); err != nil {
		return res, err
	}
	m.state = next
	m.publish()
	res.Removed = m.removeUnreferenced()
	m.log.Info("mirror synced", "engine", res.EngineVersion, "timestamp", res.TimestampVersion, "fetched", res.Fetched, "bytes", res.FetchedBytes)
	return res, nil
}

func (m *Mirror) writeImmutable(name string, raw []byte) error {
	p := m.path(name)
	if got, _, err := hashFile(p); err == nil && got == trust.SHA256Hex(raw) {
		return nil
	}
	return atomicfile.Write(p, raw, 0o644)
}

// syncRoots makes sure every root version 1..R is on disk and forms a valid
// chain to the trusted root.
func (m *Mirror) syncRoots(ctx context.Context, src source.Source, ts *trust.State) ([]fileRec, error) {
	have := map[string]fileRec{}
	for _, f := range m.state.Roots {
		have[f.Name] = f
	}
	R := ts.RootVersion()
	chain := make([][]byte, 0, R)
	var out []fileRec
	for v := int64(1); v <= R; v++ {
		name := "metadata/" + strconv.FormatInt(v, 10) + ".root.json"
		var raw []byte
		if b, ok := ts.NewRoots[v]; ok {
			raw = b
		} else if v == R {
			raw = ts.RootRaw
		} else if f, ok := have[name]; ok {
			b, err := os.ReadFile(m.path(name))
			if err != nil || trust.SHA256Hex(b) != f.SHA256 {
				return nil, fmt.Errorf("%s changed on disk", name)
			}
			raw = b
		} else {
			b, err := src.ReadFile(ctx, name, trust.MaxRootSize)
			if err != nil {
				return nil, err
			}
			raw = b
		}
		chain = append(chain, raw)
		out = append(out, fileRec{Name: name, SHA256: trust.SHA256Hex(raw), Size: int64(len(raw))})
	}
	if err := trust.VerifyRootChain(chain, ts.RootRaw); err != nil {
		return nil, err
	}
	for i, raw := range chain {
		if err := m.writeImmutable(out[i].Name, raw); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func engineVersion(ts *trust.State) uint64 {
	var v uint64
	for p := range ts.Targets() {
		if k, _, to := scheme.ParsePath(p); k == scheme.KindFull && to > v {
			v = to
		}
	}
	return v
}

// removeUnreferenced deletes files under metadata/ and targets/ that no
// retained state names.
func (m *Mirror) removeUnreferenced() int {
	keep := map[string]bool{"metadata/timestamp.json": true}
	for _, f := range m.state.Roots {
		keep[f.Name] = true
	}
	for _, s := range m.state.States {
		for _, f := range s.Files {
			keep[f.Name] = true
		}
	}
	n := 0
	for _, top := range []string{"metadata", "targets"} {
		root := filepath.Join(m.cfg.Dir, top)
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			rel, err := filepath.Rel(m.cfg.Dir, p)
			if err != nil {
				return nil
			}
			if !keep[filepath.ToSlash(rel)] && os.Remove(p) == nil {
				n++
			}
			return nil
		})
	}
	return n
}

// publish builds the serving index from the current state and swaps it in.
func (m *Mirror) publish() {
	ix := &index{files: map[string]*entry{}}
	old := m.idx.Load()
	add := func(f fileRec, immutable bool) {
		e := &entry{name: f.Name, path: m.path(f.Name), size: f.Size, etag: `"` + f.SHA256 + `"`, immutable: immutable}
		if o := oldEntry(old, f.Name); o != nil && o.etag == e.etag && o.fds != nil {
			e.fds = o.fds // same content: keep its descriptors
		} else {
			e.fds = make(chan *fileBody, 16)
		}
		if fi, err := os.Stat(e.path); err == nil {
			e.mod = fi.ModTime()
		}
		switch {
		case strings.HasSuffix(f.Name, ".json"):
			if b, err := os.ReadFile(e.path); err == nil && int64(len(b)) == f.Size {
				e.data = b
				e.gz = gzipBytes(b)
			}
		}
		ix.files[f.Name] = e
		ix.bytes += f.Size
	}
	for _, f := range m.state.Roots {
		add(f, true)
	}
	for _, s := range m.state.States {
		for _, f := range s.Files {
			add(f, true)
		}
	}
	if ts := m.state.Timestamp; len(ts) > 0 {
		e := &entry{name: "metadata/timestamp.json", size: int64(len(ts)), etag: `"` + trust.SHA256Hex(ts) + `"`, data: ts, gz: gzipBytes(ts), mod: m.now()}
		if n := len(m.state.States); n > 0 {
			e.mod = m.state.States[n-1].SyncedAt
		}
		ix.files[e.name] = e
		ix.bytes += e.size
	}
	m.idx.Store(ix)
	// descriptors of files no longer served are closed
	if old != nil {
		for name, e := range old.files {
			if n := ix.files[name]; (n == nil || n.fds != e.fds) && e.fds != nil {
				e.closeIdle()
			}
		}
	}
}

func oldEntry(ix *index, name string) *entry {
	if ix == nil {
		return nil
	}
	return ix.files[name]
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	if buf.Len() >= len(b) {
		return nil
	}
	return buf.Bytes()
}
