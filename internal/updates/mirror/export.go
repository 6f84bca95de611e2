package mirror

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/atomicfile"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/updates/bundle"
	"github.com/mamori/mamori/internal/updates/scheme"
	"github.com/mamori/mamori/internal/updates/source"
	"github.com/mamori/mamori/internal/updates/trust"
)

// ExportConfig configures an export.
type ExportConfig struct {
	// Dir is a mirror directory or a publisher's repository (or its public/).
	Dir string
	// To is the bundle to write: a path ending in .tar writes one tar
	// file, anything else a directory (which must not exist or be empty).
	To string
	// FullOnly leaves the deltas out (smaller; agents download the full
	// engine).
	FullOnly bool
	// TrustedRoot or RootSHA256 verify what is exported; by default the
	// mirror's own trusted root (Dir/.mirror/tuf/root.json), else the
	// directory's 1.root.json (a publisher exporting its own repository).
	TrustedRoot []byte
	RootSHA256  string
	// OfflineMaxAge: metadata expired for up to this long is still
	// exported (default 30 days); the result says when it expires.
	OfflineMaxAge time.Duration
	Progress      func(done, total int64)
	Now           func() time.Time
}

// Manifest is bundle.json: informational (agents trust the TUF metadata,
// not this file).
type Manifest struct {
	Format        string    `json:"format"` // "mamori-update-bundle"
	Version       int       `json:"version"`
	Created       time.Time `json:"created"`
	EngineVersion uint64    `json:"engine_version"`
	Expires       time.Time `json:"expires"` // earliest metadata expiry
	FullOnly      bool      `json:"full_only"`
	Files         int       `json:"files"`
	Bytes         int64     `json:"bytes"`
}

// ExportResult describes a written bundle.
type ExportResult struct {
	Manifest
	Path    string `json:"path"`
	Expired bool   `json:"expired"` // already expired when written
}

// Export writes an offline bundle of the directory's current verified
// state: all root versions, the current snapshot, targets and timestamp,
// and the targets they list (the full engine, and the deltas unless
// FullOnly). Everything is verified again while it is copied.
func Export(ctx context.Context, cfg ExportConfig) (ExportResult, error) {
	var res ExportResult
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OfflineMaxAge <= 0 {
		cfg.OfflineMaxAge = DefaultOfflineMaxAge
	}
	if cfg.To == "" {
		return res, errcode.New(errcode.Invalid, "export: no destination")
	}
	if _, err := os.Stat(cfg.To); err == nil {
		if ents, err := os.ReadDir(cfg.To); err != nil || len(ents) > 0 {
			return res, errcode.New(errcode.Conflict, "export: %s already exists", cfg.To)
		}
	}
	stats := new(source.Stats)
	src, err := source.Open(cfg.Dir, source.Options{Stats: stats})
	if err != nil {
		return res, err
	}
	defer src.Close()
	root := cfg.TrustedRoot
	if root == nil && cfg.RootSHA256 == "" {
		if b, err := trust.CachedRoot(filepath.Join(cfg.Dir, ".mirror", "tuf")); err == nil {
			root = b
		} else if b, err := src.ReadFile(ctx, "metadata/1.root.json", trust.MaxRootSize); err == nil {
			root = b
		} else {
			return res, errcode.New(errcode.Invalid, "export: no trusted root for %s", cfg.Dir)
		}
	}
	tmpCache, err := os.MkdirTemp("", "mamori-export-*")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(tmpCache)
	now := cfg.Now()
	ts, err := trust.Refresh(ctx, src, trust.Options{CacheDir: tmpCache, InitialRoot: root, RootSHA256: cfg.RootSHA256, RefTime: now.Add(-cfg.OfflineMaxAge)})
	if err != nil {
		return res, err
	}
	var files []bundle.File
	// roots 1..R, verified as a chain
	var chain [][]byte
	for v := int64(1); v <= ts.RootVersion(); v++ {
		name := "metadata/" + strconv.FormatInt(v, 10) + ".root.json"
		b, err := src.ReadFile(ctx, name, trust.MaxRootSize)
		if err != nil {
			return res, err
		}
		chain = append(chain, b)
		files = append(files, bundle.File{Name: name, Data: b})
	}
	if err := trust.VerifyRootChain(chain, ts.RootRaw); err != nil {
		return res, err
	}
	files = append(files,
		bundle.File{Name: "metadata/" + strconv.FormatInt(ts.SnapshotVersion(), 10) + ".snapshot.json", Data: ts.SnapshotRaw},
		bundle.File{Name: "metadata/" + strconv.FormatInt(ts.TargetsVersion(), 10) + ".targets.json", Data: ts.TargetsRaw},
		bundle.File{Name: "metadata/timestamp.json", Data: ts.TimestampRaw})
	// targets, fetched into a staging directory and verified
	stage, err := os.MkdirTemp("", "mamori-export-stage-*")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(stage)
	paths := make([]string, 0)
	var total int64
	for p, tf := range ts.Targets() {
		k, _, _ := scheme.ParsePath(p)
		if cfg.FullOnly && k == scheme.KindDelta {
			continue
		}
		paths = append(paths, p)
		total += tf.Length
	}
	sort.Strings(paths)
	var done int64
	for i, p := range paths {
		tf := ts.Targets()[p]
		name, err := trust.RemotePath(tf)
		if err != nil {
			return res, err
		}
		part := filepath.Join(stage, strconv.Itoa(i))
		if err := src.Download(ctx, name, part, tf.Length); err != nil {
			return res, err
		}
		data, err := os.ReadFile(part)
		if err != nil {
			return res, err
		}
		if err := trust.VerifyTarget(tf, data); err != nil {
			return res, err
		}
		files = append(files, bundle.File{Name: name, Path: part})
		done += tf.Length
		if cfg.Progress != nil {
			cfg.Progress(done, total)
		}
	}
	res.Manifest = Manifest{Format: "mamori-update-bundle", Version: 1, Created: now.UTC(), EngineVersion: engineVersion(ts),
		Expires: ts.Expires(), FullOnly: cfg.FullOnly, Files: len(files)}
	for _, f := range files {
		if f.Path == "" {
			res.Bytes += int64(len(f.Data))
		} else if fi, err := os.Stat(f.Path); err == nil {
			res.Bytes += fi.Size()
		}
	}
	mb, _ := json.MarshalIndent(res.Manifest, "", "  ")
	files = append([]bundle.File{{Name: bundle.ManifestName, Data: append(mb, '\n')}}, files...)
	res.Expired = now.After(res.Expires)
	res.Path = cfg.To
	if strings.HasSuffix(cfg.To, ".tar") {
		return res, writeTarFile(cfg.To, files, now)
	}
	return res, writeDir(cfg.To, files)
}

func writeTarFile(to string, files []bundle.File, mtime time.Time) error {
	f, err := os.CreateTemp(filepath.Dir(to), "."+filepath.Base(to)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = bundle.WriteTar(f, files, mtime, nil)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, to)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func writeDir(to string, files []bundle.File) error {
	parent := filepath.Dir(filepath.Clean(to))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(to)+".tmp-*")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	for _, f := range files {
		if err := bundle.CheckName(f.Name); err != nil {
			return err
		}
		p := filepath.Join(tmp, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		data := f.Data
		if f.Path != "" {
			var err error
			if data, err = os.ReadFile(f.Path); err != nil {
				return err
			}
		}
		if err := atomicfile.Write(p, data, 0o644); err != nil {
			return err
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	os.Remove(to) // an empty directory may be there
	if err := os.Rename(tmp, to); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	ok = true
	return nil
}
