// Package source fetches files of an update repository from where they are:
// a mirror or repository over HTTP(S), a folder (a USB stick, a copied
// directory) or a bundle tar file. Sources move bytes only; everything they
// return is verified by the caller through TUF.
//
// The HTTP source honours 429/503 with Retry-After (jittered), retries
// transient failures, resumes interrupted downloads with Range/If-Range,
// goes through an HTTP proxy, detects stalled transfers and counts requests
// and bytes.
package source

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/updates/bundle"
)

// Source is one place the repository can be read from. Names are slash paths
// relative to the repository root ("metadata/timestamp.json",
// "targets/engine/<sha256>.full-7.mdb.zst").
type Source interface {
	// String names the source for logs and status.
	String() string
	// Offline reports whether this is a folder or bundle (offline rules
	// apply to its metadata's age).
	Offline() bool
	// ReadFile returns the whole file, at most max bytes: errcode not_found
	// when it does not exist, too_large when it is longer than max.
	ReadFile(ctx context.Context, name string, max int64) ([]byte, error)
	// Download makes the file at part hold the first size bytes of name,
	// resuming from what part already holds when it can. It does not
	// verify the content; errcode too_large if the file is longer.
	Download(ctx context.Context, name, part string, size int64) error
	// Close releases the source.
	Close() error
}

// Stats counts what a source fetched. Safe for concurrent use.
type Stats struct {
	Requests atomic.Int64 // requests made (HTTP requests, or files opened)
	Bytes    atomic.Int64 // bytes received (compressed bytes on the wire for HTTP)
}

// OfflinePrefix marks an HTTP source that carries offline bundles (an
// air-gapped site's mirror fed by USB): "offline:http://mirror.lan:8080".
// Offline staleness rules apply to it like to folders.
const OfflinePrefix = "offline:"

// Open returns the source for spec: an http:// or https:// URL (optionally
// prefixed with "offline:"), or a path to a folder or a .tar bundle. A
// folder that contains public/metadata (a publisher's repository directory)
// is read from public/.
func Open(spec string, opts Options) (Source, error) {
	if u, ok := strings.CutPrefix(spec, OfflinePrefix); ok && (strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")) {
		h, err := NewHTTP(u, opts)
		if err != nil {
			return nil, err
		}
		h.offline = true
		return h, nil
	}
	if strings.HasPrefix(spec, "http://") || strings.HasPrefix(spec, "https://") {
		return NewHTTP(spec, opts)
	}
	if strings.Contains(spec, "://") {
		return nil, errcode.New(errcode.Invalid, "update source %q: only http, https, folders and .tar bundles are supported", spec)
	}
	fi, err := os.Stat(spec)
	if err != nil {
		return nil, errcode.New(errcode.NotFound, "update source %s: %v", spec, errors.Unwrap(err))
	}
	if fi.IsDir() {
		if st, err := os.Stat(filepath.Join(spec, "public", "metadata")); err == nil && st.IsDir() {
			spec = filepath.Join(spec, "public")
		}
		return &Dir{root: spec, stats: opts.stats()}, nil
	}
	t, err := bundle.OpenTar(spec)
	if err != nil {
		return nil, errcode.New(errcode.Invalid, "update source %s: %v", spec, err)
	}
	return &Tar{path: spec, t: t, stats: opts.stats()}, nil
}

// Dir reads a repository copy from a folder.
type Dir struct {
	root  string
	stats *Stats
}

// NewDir returns a folder source.
func NewDir(root string, stats *Stats) *Dir {
	if stats == nil {
		stats = new(Stats)
	}
	return &Dir{root: root, stats: stats}
}

func (d *Dir) String() string { return d.root }

// Offline is true for folders.
func (d *Dir) Offline() bool { return true }

// Close does nothing.
func (d *Dir) Close() error { return nil }

func (d *Dir) open(name string) (*os.File, int64, error) {
	if err := bundle.CheckName(name); err != nil {
		return nil, 0, errcode.New(errcode.Invalid, "%v", err)
	}
	d.stats.Requests.Add(1)
	f, err := os.Open(filepath.Join(d.root, filepath.FromSlash(name)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, errcode.New(errcode.NotFound, "%s: not found in %s", name, d.root)
	}
	if err != nil {
		return nil, 0, errcode.New(errcode.Unavailable, "%s: %v", name, errors.Unwrap(err))
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, errcode.New(errcode.Invalid, "%s in %s is not a regular file", name, d.root)
	}
	return f, fi.Size(), nil
}

// ReadFile reads a file of the folder.
func (d *Dir) ReadFile(ctx context.Context, name string, max int64) ([]byte, error) {
	f, _, err := d.open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAllMax(ctx, f, name, max, d.stats)
}

// Download copies a file of the folder (from the start: local reads need no
// resume).
func (d *Dir) Download(ctx context.Context, name, part string, size int64) error {
	f, _, err := d.open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	return copyWhole(ctx, f, name, part, size, d.stats)
}

// Tar reads a repository copy from a bundle tar file.
type Tar struct {
	path  string
	t     *bundle.Tar
	stats *Stats
}

func (t *Tar) String() string { return t.path }

// Offline is true for bundles.
func (t *Tar) Offline() bool { return true }

// Close closes the tar file.
func (t *Tar) Close() error { return t.t.Close() }

func (t *Tar) open(name string) (io.Reader, error) {
	if err := bundle.CheckName(name); err != nil {
		return nil, errcode.New(errcode.Invalid, "%v", err)
	}
	t.stats.Requests.Add(1)
	r, _, err := t.t.Open(name)
	if err != nil {
		return nil, errcode.New(errcode.NotFound, "%s: not found in %s", name, t.path)
	}
	return r, nil
}

// ReadFile reads a file of the bundle.
func (t *Tar) ReadFile(ctx context.Context, name string, max int64) ([]byte, error) {
	r, err := t.open(name)
	if err != nil {
		return nil, err
	}
	return readAllMax(ctx, r, name, max, t.stats)
}

// Download copies a file of the bundle.
func (t *Tar) Download(ctx context.Context, name, part string, size int64) error {
	r, err := t.open(name)
	if err != nil {
		return err
	}
	return copyWhole(ctx, r, name, part, size, t.stats)
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func readAllMax(ctx context.Context, r io.Reader, name string, max int64, st *Stats) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(ctxReader{ctx, r}, max+1))
	st.Bytes.Add(int64(len(b)))
	if err != nil {
		return nil, errcode.New(errcode.Unavailable, "reading %s: %v", name, err)
	}
	if int64(len(b)) > max {
		return nil, errcode.New(errcode.TooLarge, "%s is larger than %d bytes", name, max)
	}
	return b, nil
}

func copyWhole(ctx context.Context, r io.Reader, name, part string, size int64, st *Stats) error {
	f, err := os.OpenFile(part, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(ctxReader{ctx, r}, size+1))
	st.Bytes.Add(n)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		return errcode.New(errcode.Unavailable, "copying %s: %v", name, err)
	case n > size:
		return errcode.New(errcode.TooLarge, "%s is larger than the %d bytes its metadata says", name, size)
	case n < size:
		return errcode.New(errcode.Invalid, "%s is shorter (%d bytes) than the %d bytes its metadata says", name, n, size)
	}
	return nil
}

// IsNotFound reports whether err says the file does not exist.
func IsNotFound(err error) bool { return errcode.Is(err, errcode.NotFound) }
