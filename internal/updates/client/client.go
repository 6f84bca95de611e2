// Package client updates an endpoint's detection engine from update sources:
// it verifies the repository's metadata through TUF (trust), picks the
// cheapest way from the installed engine to the latest (at most three
// logical deltas, or the compressed full engine), downloads with resume,
// verifies every hash, rebuilds the database locally and swaps it in
// atomically, keeping earlier versions for rollback.
//
// Direct performs one update (the one-shot command and tests use it);
// package updater runs it on a schedule.
//
// State directory:
//
//	metadata/        trusted TUF metadata (root, timestamp, snapshot, targets)
//	engines/, engine.json   the engine store (see Store)
//	downloads/       partial downloads, resumed by the next attempt
//	status.json      last attempt, success, error (see Status)
//	lock             held while updating
package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/updates/filelock"
	"github.com/mamori/mamori/internal/updates/scheme"
	"github.com/mamori/mamori/internal/updates/source"
	"github.com/mamori/mamori/internal/updates/trust"
)

// Defaults.
const (
	DefaultOfflineMaxAge = 30 * 24 * time.Hour
	DefaultKeepVersions  = 3
	DefaultRollbackHold  = 24 * time.Hour
)

// Config configures a Direct client.
type Config struct {
	// StateDir holds metadata, engines and downloads (see the package doc).
	StateDir string
	// Sources are tried in order: mirror URLs (http, https), folders, or
	// .tar bundles.
	Sources []string
	// TrustedRoot is the repository's root.json, needed once: later runs
	// use the trusted root in StateDir/metadata.
	TrustedRoot []byte
	// RootSHA256 pins the repository's 1.root.json instead of TrustedRoot.
	RootSHA256 string
	// Proxy for HTTP sources: "" from the environment, "none", or a URL.
	Proxy string
	// HTTPClient overrides the client built from Proxy.
	HTTPClient *http.Client
	// OfflineMaxAge is how long after its metadata expired a folder or
	// bundle is still accepted (default 30 days; 0 after
	// SetStrictOffline means not at all).
	OfflineMaxAge time.Duration
	strictOffline bool
	// KeepVersions engines are kept on disk, the current one included
	// (default 3).
	KeepVersions int
	// MaxRetryWait is the longest Retry-After honoured in place (default 10 min).
	MaxRetryWait time.Duration
	// StallTimeout cuts a transfer without progress (default 60 s).
	StallTimeout time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
	// UserAgent for HTTP requests.
	UserAgent string
	// Now returns the time (tests); default time.Now.
	Now func() time.Time
	// OnInstall is called after a new engine became current.
	OnInstall func(version uint64, path string)
	// DryRunFrom, when non-zero, makes Update behave as if this engine
	// version were installed, download and verify what it would need, and
	// install nothing (benchmarks; needs no installed engine).
	DryRunFrom uint64

	// sleep replaces waiting in sources (tests).
	sleep func(ctx context.Context, d time.Duration) error
}

// SetStrictOffline makes folder and bundle sources obey metadata expiry like
// online ones (OfflineMaxAge 0).
func (c *Config) SetStrictOffline() { c.OfflineMaxAge, c.strictOffline = 0, true }

// Result describes one update.
type Result struct {
	From            uint64  `json:"from"`
	To              uint64  `json:"to"`
	Method          string  `json:"method"` // none, delta, full, dry-run
	Deltas          int     `json:"deltas"`
	Source          string  `json:"source"`
	BytesDownloaded int64   `json:"bytes_downloaded"` // everything received, metadata included
	PayloadBytes    int64   `json:"payload_bytes"`    // engine files (deltas or full)
	Requests        int64   `json:"requests"`         // all requests (metadata included)
	PayloadRequests int     `json:"payload_requests"` // engine files fetched
	Seconds         float64 `json:"seconds"`
	Note            string  `json:"note,omitempty"`
}

// Direct performs single updates.
type Direct struct {
	cfg     Config
	storeMu sync.Mutex // guards store (replaced at each update)
	store   *Store
	hc      *http.Client
	log     *slog.Logger
	now     func() time.Time
}

// New validates cfg and opens the state directory.
func New(cfg Config) (*Direct, error) {
	if cfg.StateDir == "" {
		return nil, errcode.New(errcode.Invalid, "no state directory")
	}
	if cfg.OfflineMaxAge < 0 {
		return nil, errcode.New(errcode.Invalid, "offline max age must not be negative")
	}
	if cfg.OfflineMaxAge == 0 && !cfg.strictOffline {
		cfg.OfflineMaxAge = DefaultOfflineMaxAge
	}
	if cfg.KeepVersions <= 0 {
		cfg.KeepVersions = DefaultKeepVersions
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	hc := cfg.HTTPClient
	if hc == nil {
		var err error
		if hc, err = source.NewHTTPClient(cfg.Proxy); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{cfg.StateDir, filepath.Join(cfg.StateDir, "downloads")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	st, err := OpenStore(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	return &Direct{cfg: cfg, store: st, hc: hc, log: cfg.Logger, now: cfg.Now}, nil
}

// Store returns the engine store.
func (d *Direct) Store() *Store {
	d.storeMu.Lock()
	defer d.storeMu.Unlock()
	return d.store
}

func (d *Direct) setStore(st *Store) {
	d.storeMu.Lock()
	d.store = st
	d.storeMu.Unlock()
}

// Current returns the current engine version and file ("" = built-in). Safe
// to call while an update runs.
func (d *Direct) Current() (uint64, string) { return d.Store().Current() }

func (d *Direct) lock() (*filelock.Lock, error) {
	l, err := filelock.TryLock(filepath.Join(d.cfg.StateDir, "lock"))
	if errors.Is(err, filelock.ErrLocked) {
		return nil, errcode.New(errcode.Conflict, "another engine update is running on this computer")
	}
	return l, err
}

// UpdateOptions modify one update.
type UpdateOptions struct {
	// Force ignores a rollback hold (and clears it on success).
	Force bool
}

// Update brings the engine to the latest version the first working source
// offers. On failure the installed engine is unchanged and the error says
// why (errcode; trust.KindOf tells verification failures apart).
func (d *Direct) Update(ctx context.Context, o UpdateOptions) (Result, error) {
	start := d.now()
	if len(d.cfg.Sources) == 0 {
		return Result{}, errcode.New(errcode.Invalid, "no update source configured")
	}
	var l *filelock.Lock
	if d.cfg.DryRunFrom == 0 {
		var err error
		if l, err = d.lock(); err != nil {
			return Result{}, err
		}
		defer l.Unlock()
	}
	res, err := d.update(ctx, o)
	res.Seconds = d.now().Sub(start).Seconds()
	if d.cfg.DryRunFrom == 0 {
		d.recordAttempt(start, res, err)
	}
	return res, err
}

func (d *Direct) update(ctx context.Context, o UpdateOptions) (Result, error) {
	var res Result
	// re-read engine.json: another process may have changed it
	st, err := openStore(d.cfg.StateDir, d.cfg.DryRunFrom == 0)
	if err != nil {
		return res, err
	}
	old := d.Store()
	st.writeFile, st.crash = old.writeFile, old.crash
	d.setStore(st)
	res.From, _ = st.Current()
	if d.cfg.DryRunFrom != 0 {
		res.From = d.cfg.DryRunFrom
	}
	res.To = res.From
	if d.cfg.DryRunFrom == 0 && st.Held(d.now()) && !o.Force {
		res.Method = "none"
		res.Note = "automatic updates are held until " + st.State().HoldUntil.Format(time.RFC3339) + " after a rollback"
		return res, nil
	}
	var errs []error
	for _, spec := range d.cfg.Sources {
		stats := new(source.Stats)
		r, err := d.fromSource(ctx, spec, res.From, stats)
		r.BytesDownloaded, r.Requests = stats.Bytes.Load(), stats.Requests.Load()
		res.BytesDownloaded += r.BytesDownloaded
		res.Requests += r.Requests
		if err == nil {
			r.BytesDownloaded, r.Requests = res.BytesDownloaded, res.Requests
			if o.Force && d.cfg.DryRunFrom == 0 {
				st.ClearHold()
			}
			return r, nil
		}
		d.log.Warn("engine update from source failed", "source", spec, "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", spec, err))
		if ctx.Err() != nil {
			break
		}
	}
	return res, joinErrors(errs)
}

// joinErrors keeps the first error's code (the preferred source's) and lists
// all messages.
func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return &multiError{first: errs[0], msg: strings.Join(msgs, "; ")}
}

type multiError struct {
	first error
	msg   string
}

func (m *multiError) Error() string { return m.msg }
func (m *multiError) Unwrap() error { return m.first }

func (d *Direct) sourceOptions(stats *source.Stats) source.Options {
	return source.Options{Client: d.hc, UserAgent: d.cfg.UserAgent, Stats: stats, MaxRetryWait: d.cfg.MaxRetryWait,
		StallTimeout: d.cfg.StallTimeout, Logger: d.log, Sleep: d.cfg.sleep}
}

// fromSource updates from one source.
func (d *Direct) fromSource(ctx context.Context, spec string, from uint64, stats *source.Stats) (Result, error) {
	res := Result{From: from, To: from, Source: spec}
	src, err := source.Open(spec, d.sourceOptions(stats))
	if err != nil {
		return res, err
	}
	defer src.Close()
	ref := d.now()
	if src.Offline() {
		ref = ref.Add(-d.cfg.OfflineMaxAge)
	}
	cache := filepath.Join(d.cfg.StateDir, "metadata")
	if d.cfg.DryRunFrom != 0 {
		if cache, err = os.MkdirTemp(d.cfg.StateDir, ".dry-run-*"); err != nil {
			return res, err
		}
		defer os.RemoveAll(cache)
	}
	ts, err := trust.Refresh(ctx, src, trust.Options{CacheDir: cache, InitialRoot: d.cfg.TrustedRoot, RootSHA256: d.cfg.RootSHA256, RefTime: ref})
	if err != nil {
		if src.Offline() && trust.KindOf(err) == trust.KindVersion {
			return res, fmt.Errorf("the bundle is older than metadata this computer already trusts: %w", err)
		}
		return res, err
	}
	full, info, err := latestFull(ts)
	if err != nil {
		return res, err
	}
	switch {
	case info.Version == from:
		res.Method = "none"
		return res, nil
	case info.Version < from:
		res.Method = "none"
		res.Note = fmt.Sprintf("the source offers engine %d, older than the installed %d; keeping the installed one", info.Version, from)
		return res, nil
	}
	res.To = info.Version
	var edges []scheme.Edge
	for p, tf := range ts.Targets() {
		if k, f, t := scheme.ParsePath(p); k == scheme.KindDelta {
			edges = append(edges, scheme.Edge{From: f, To: t, Path: p, Length: tf.Length})
		}
	}
	var db []byte
	if chain, total, ok := scheme.Plan(edges, from, info.Version, scheme.MaxHops); ok && total < full.Length {
		var fallback bool
		db, fallback, err = d.viaDeltas(ctx, src, ts, chain, info, &res)
		switch {
		case err != nil && fallback:
			// a delta that cannot be used costs the full engine, not the update
			d.log.Warn("delta update failed; downloading the full engine", "err", err)
			res.Note = "delta path failed (" + err.Error() + "); full engine downloaded"
			db = nil
		case err != nil:
			return res, err
		}
	}
	if db == nil {
		res.Method, res.Deltas = "full", 0
		if db, err = d.viaFull(ctx, src, full, info, &res); err != nil {
			return res, err
		}
	}
	if d.cfg.DryRunFrom != 0 {
		res.Method = "dry-run"
		return res, nil
	}
	st := d.Store()
	if err := st.InstallPublished(info.Version, db, info.DBSHA256, d.cfg.KeepVersions, d.now(), info.Published); err != nil {
		return res, err
	}
	d.cleanDownloads()
	v, path := st.Current()
	d.log.Info("engine updated", "from", from, "to", v, "method", res.Method, "source", spec)
	if d.cfg.OnInstall != nil {
		d.cfg.OnInstall(v, path)
	}
	return res, nil
}

// latestFull finds the newest full engine the targets offer.
func latestFull(ts *trust.State) (*metadata.TargetFiles, scheme.FullInfo, error) {
	var best *metadata.TargetFiles
	var bestV uint64
	for p, tf := range ts.Targets() {
		if k, _, v := scheme.ParsePath(p); k == scheme.KindFull && v > bestV {
			best, bestV = tf, v
		}
	}
	if best == nil {
		return nil, scheme.FullInfo{}, errcode.New(errcode.NotFound, "the repository offers no engine yet")
	}
	info, err := scheme.ParseFullInfo(best.Custom, best.Path)
	if err != nil {
		return nil, info, errcode.New(errcode.Invalid, "%v", err)
	}
	if best.Length <= 0 || best.Length > scheme.MaxDBLength {
		return nil, info, errcode.New(errcode.Invalid, "target %s: bad length", best.Path)
	}
	return best, info, nil
}

// viaDeltas downloads and applies a chain of deltas. fallback is true when
// the failure is not the source's fault or is a missing delta (a bundle made
// without deltas): then the full engine is worth trying from the same
// source. A tampered blob or a network failure is not.
func (d *Direct) viaDeltas(ctx context.Context, src source.Source, ts *trust.State, chain []scheme.Edge, info scheme.FullInfo, res *Result) (db []byte, fallback bool, err error) {
	res.Method, res.Deltas = "delta", len(chain)
	deltas := make([]enginedb.Delta, 0, len(chain))
	for _, e := range chain {
		tf := ts.Targets()[e.Path]
		di, err := scheme.ParseDeltaInfo(tf.Custom, e.Path)
		if err != nil {
			return nil, true, errcode.New(errcode.Invalid, "%v", err)
		}
		blob, err := d.fetch(ctx, src, tf, res)
		if err != nil {
			return nil, source.IsNotFound(err), err
		}
		if d.cfg.DryRunFrom != 0 {
			continue // downloaded and verified; nothing to apply
		}
		raw, err := decompress(blob, di.Raw)
		if err != nil {
			return nil, true, fmt.Errorf("delta %s: %w", e.Path, err)
		}
		dl, err := enginedb.ReadDelta(bytes.NewReader(raw))
		if err != nil {
			return nil, true, fmt.Errorf("delta %s: %w", e.Path, err)
		}
		if dl.From != e.From || dl.To != e.To {
			return nil, true, fmt.Errorf("delta %s says %d->%d", e.Path, dl.From, dl.To)
		}
		deltas = append(deltas, dl)
	}
	if d.cfg.DryRunFrom != 0 {
		return []byte{}, false, nil
	}
	cur, err := d.Store().LoadCurrent()
	if err != nil {
		return nil, true, err
	}
	if cur.Version() != chain[0].From {
		return nil, true, fmt.Errorf("the installed engine is %d, the deltas start at %d", cur.Version(), chain[0].From)
	}
	recs, err := cur.Records()
	if err != nil {
		return nil, true, err
	}
	for _, dl := range deltas {
		if recs, err = enginedb.Apply(recs, dl); err != nil {
			return nil, true, err
		}
	}
	if db, err = enginedb.Build(recs, info.Version); err != nil {
		return nil, true, err
	}
	if err := checkDB(db, info); err != nil {
		return nil, true, err
	}
	return db, false, nil
}

func (d *Direct) viaFull(ctx context.Context, src source.Source, tf *metadata.TargetFiles, info scheme.FullInfo, res *Result) ([]byte, error) {
	blob, err := d.fetch(ctx, src, tf, res)
	if err != nil {
		return nil, err
	}
	if d.cfg.DryRunFrom != 0 {
		return []byte{}, nil
	}
	db, err := decompress(blob, info.DBLength)
	if err != nil {
		return nil, fmt.Errorf("engine %s: %w", tf.Path, err)
	}
	if err := checkDB(db, info); err != nil {
		return nil, err
	}
	return db, nil
}

// checkDB checks a rebuilt or downloaded database against the signed
// length and SHA-256, and that it loads.
func checkDB(db []byte, info scheme.FullInfo) error {
	sum := sha256.Sum256(db)
	if int64(len(db)) != info.DBLength || hex.EncodeToString(sum[:]) != info.DBSHA256 {
		return trust.HashMismatch(scheme.FullPath(info.Version), fmt.Errorf("the engine database does not match its signed SHA-256"))
	}
	if _, err := enginedb.Load(db); err != nil {
		return errcode.New(errcode.Invalid, "engine %d does not load: %v", info.Version, err)
	}
	return nil
}

// fetch downloads a target (resuming a partial download of the same
// content) and verifies its length and SHA-256.
func (d *Direct) fetch(ctx context.Context, src source.Source, tf *metadata.TargetFiles, res *Result) ([]byte, error) {
	remote, err := trust.RemotePath(tf)
	if err != nil {
		return nil, err
	}
	sha, _ := trust.TargetSHA256(tf)
	dir := filepath.Join(d.cfg.StateDir, "downloads")
	if d.cfg.DryRunFrom != 0 {
		// dry runs share nothing on disk: verify while streaming
		return nil, d.fetchDry(ctx, src, remote, tf, res)
	}
	part := filepath.Join(dir, sha+".part")
	res.PayloadRequests++
	before := partSize(part)
	if err := src.Download(ctx, remote, part, tf.Length); err != nil {
		res.PayloadBytes += max(0, partSize(part)-before)
		return nil, err
	}
	res.PayloadBytes += tf.Length - before
	data, err := os.ReadFile(part)
	if err != nil {
		return nil, err
	}
	if err := trust.VerifyTarget(tf, data); err != nil {
		os.Remove(part)
		os.Remove(part + ".meta")
		return nil, err
	}
	os.Remove(part)
	os.Remove(part + ".meta")
	return data, nil
}

func (d *Direct) fetchDry(ctx context.Context, src source.Source, remote string, tf *metadata.TargetFiles, res *Result) error {
	f, err := os.CreateTemp(d.cfg.StateDir, ".dry-*.part")
	if err != nil {
		return err
	}
	part := f.Name()
	f.Close()
	defer os.Remove(part)
	defer os.Remove(part + ".meta")
	os.Remove(part)
	res.PayloadRequests++
	if err := src.Download(ctx, remote, part, tf.Length); err != nil {
		return err
	}
	res.PayloadBytes += tf.Length
	data, err := os.ReadFile(part)
	if err != nil {
		return err
	}
	return trust.VerifyTarget(tf, data)
}

func partSize(p string) int64 {
	if fi, err := os.Stat(p); err == nil {
		return fi.Size()
	}
	return 0
}

// cleanDownloads removes partial downloads older than a week.
func (d *Direct) cleanDownloads() {
	dir := filepath.Join(d.cfg.StateDir, "downloads")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && d.now().Sub(fi.ModTime()) > 7*24*time.Hour {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// decompress inflates a zstd blob that must be exactly want bytes.
func decompress(blob []byte, want int64) ([]byte, error) {
	dec, err := zstd.NewReader(bytes.NewReader(blob), zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(max(uint64(want)+1, 256<<20)), zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	out := bytes.NewBuffer(make([]byte, 0, want))
	n, err := io.Copy(out, io.LimitReader(dec, want+1))
	if err != nil {
		return nil, fmt.Errorf("decompressing: %v", err)
	}
	if n != want {
		return nil, fmt.Errorf("decompressed to %d bytes, its metadata says %d", n, want)
	}
	return out.Bytes(), nil
}

// Rollback makes the previous kept engine current and holds automatic
// updates for hold (default 24 h when 0).
func (d *Direct) Rollback(hold time.Duration) (RollbackResult, error) {
	if hold <= 0 {
		hold = DefaultRollbackHold
	}
	l, err := d.lock()
	if err != nil {
		return RollbackResult{}, err
	}
	defer l.Unlock()
	st, err := openStore(d.cfg.StateDir, true)
	if err != nil {
		return RollbackResult{}, err
	}
	d.setStore(st)
	r, err := st.Rollback(hold, d.now())
	if err == nil && d.cfg.OnInstall != nil {
		v, p := st.Current()
		d.cfg.OnInstall(v, p)
	}
	return r, err
}
