// Package scanner is the on-demand file-system scanner: it walks paths
// recursively, scans regular files in parallel against a compiled engine
// (looking into zip, gzip and tar archives) and streams detections, issues and
// progress to callbacks.
//
// Policies (see docs/engine.md):
//   - Symbolic links named as scan roots are followed. Symbolic links met
//     while walking are not followed (counted as skipped) unless
//     Options.FollowSymlinks is set; then every directory is entered at most
//     once (by device and inode), which also breaks symlink and bind-mount
//     loops.
//   - Only regular files are read. Devices, FIFOs and sockets are skipped
//     without being opened (files are opened non-blocking and re-checked, so a
//     file swapped for a FIFO cannot hang the scan).
//   - A file that vanishes before it is opened, cannot be read, or changes
//     while it is read is reported as an Issue and the scan goes on.
package scanner

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mamori/mamori/internal/engine/archive"
	"github.com/mamori/mamori/internal/engine/builtin"
	"github.com/mamori/mamori/internal/engine/matcher"
)

// Detection kinds.
const (
	KindHash    = "hash"    // a file hash signature matched a file on disk
	KindBody    = "body"    // a body signature matched a file on disk
	KindArchive = "archive" // a signature matched a member inside an archive
)

// Detection is one malicious object found.
type Detection struct {
	// Path names the object: the file's path, or for an archive member the
	// archive's path and member names joined by "!" (a.zip!dir/x.exe!y).
	Path string
	// File is the file on disk that holds the object (what quarantine moves).
	File string
	// Member is the member part of Path ("" for a file on disk).
	Member string
	// Signature is the matching signature's name.
	Signature string
	// Kind is KindHash, KindBody or KindArchive.
	Kind string
	// MatchKind is what matched, "hash" or "body" (for archive members too).
	MatchKind string
	// Size is the object's size in bytes.
	Size int64
	// MD5, SHA1, SHA256 are the object's digests (hex) where the scan
	// computed them, else "".
	MD5, SHA1, SHA256 string
	// EngineVersion is the version of the engine that matched.
	EngineVersion uint64
}

// Issue kinds. Error kinds make a scan fail (exit code 2 in the CLI);
// warning kinds do not.
const (
	IssueIO                 = "io"                  // error: cannot open/read/list
	IssueVanished           = "vanished"            // error: disappeared before it was opened
	IssueChanged            = "changed"             // warning: size or mtime changed while being read
	IssueSizeLimit          = "size_limit"          // warning: larger than Options.MaxFileSize, not scanned
	IssueSymlinkLoop        = "symlink_loop"        // warning: directory already visited (FollowSymlinks)
	IssueArchiveLimit       = archive.KindLimit     // warning: archive limit hit (bomb, depth, size, count)
	IssueArchiveCorrupt     = archive.KindCorrupt   // warning: malformed/truncated archive
	IssueArchiveEncrypted   = archive.KindEncrypted // warning: encrypted member not scanned
	IssueArchiveUnsupported = archive.KindUnsupported
)

// Issue is a problem met while scanning one path.
type Issue struct {
	Path string
	Kind string
	Err  error
}

// IsError reports whether the issue counts as a scan error (as opposed to a
// warning).
func (i Issue) IsError() bool { return i.Kind == IssueIO || i.Kind == IssueVanished }

func (i Issue) Error() string { return i.Path + ": " + i.Err.Error() }

// Progress is a snapshot of a running scan.
type Progress struct {
	Files      int64 // files scanned
	Bytes      int64 // bytes read from files on disk
	Detections int64
	Errors     int64
	Elapsed    time.Duration
}

// Summary is the outcome of a scan.
type Summary struct {
	Files         int64 // regular files scanned
	Dirs          int64 // directories walked
	Bytes         int64 // bytes read from files on disk
	Skipped       int64 // symlinks not followed, special files, excluded paths, files over MaxFileSize
	Detections    int64
	Errors        int64 // issues with IsError
	Warnings      int64 // other issues
	Duration      time.Duration
	EngineVersion uint64
}

// Options configure a scan. The zero value scans with the built-in engine,
// runtime.NumCPU() workers and default archive limits.
type Options struct {
	// Engine to match with; nil means the built-in engine.
	Engine *matcher.Engine
	// Excludes are glob patterns (path/filepath.Match syntax). A path is
	// excluded if a pattern matches the whole path or its base name; an
	// excluded directory is not entered.
	Excludes []string
	// MaxFileSize: files on disk larger than this many bytes are skipped
	// with a size_limit warning. 0 means no limit (files are streamed, so
	// size does not cost memory).
	MaxFileSize int64
	// Workers is the number of files scanned in parallel; default
	// runtime.NumCPU().
	Workers int
	// Archive limits (per file on disk); zero fields take archive's
	// defaults: depth 10, 1 GiB total, 256 MiB per member, ratio 100:1
	// above 1 MiB, 100,000 members.
	Archive archive.Limits
	// FollowSymlinks follows symbolic links met while walking.
	FollowSymlinks bool
	// AllMatch reports every matching signature of every object, and every
	// infected member of an archive, instead of stopping at the first.
	AllMatch bool
	// TempDir is where archive members too large for memory (> 16 MiB) are
	// spooled; default os.TempDir(). Spool files are unlinked at once.
	TempDir string

	// OnDetection receives each detection, after the file that holds it has
	// been scanned completely (so the file may be quarantined from the
	// callback). Callbacks are never called concurrently.
	OnDetection func(Detection)
	// OnIssue receives errors and warnings.
	OnIssue func(Issue)
	// OnProgress is called every ProgressInterval (default 250 ms) and once
	// at the end.
	OnProgress       func(Progress)
	ProgressInterval time.Duration

	// beforeOpen and afterRead are test hooks run before a file is opened
	// and after it has been read.
	beforeOpen func(path string)
	afterRead  func(path string)
}

// Scan scans paths (files or directories) and returns a summary. Problems
// with individual paths are reported through OnIssue and counted; Scan itself
// fails only if the built-in engine cannot be loaded or ctx is cancelled (it
// then returns the partial summary and ctx's error).
func Scan(ctx context.Context, paths []string, opts Options) (Summary, error) {
	start := time.Now()
	if opts.Engine == nil {
		e, err := builtin.Engine()
		if err != nil {
			return Summary{}, err
		}
		opts.Engine = e
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.NumCPU()
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = 250 * time.Millisecond
	}
	opts.Archive = opts.Archive.WithDefaults()
	for _, p := range opts.Excludes {
		if _, err := filepath.Match(p, ""); err != nil {
			return Summary{}, errors.New("bad exclude pattern " + p + ": " + err.Error())
		}
	}
	r := &run{opts: &opts, e: opts.Engine, start: start}
	jobs := make(chan job, 256)
	var wg sync.WaitGroup
	for i := 0; i < opts.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &worker{r: r, sc: r.e.NewScanner()}
			for j := range jobs {
				if ctx.Err() != nil {
					continue
				}
				w.scanFile(ctx, j)
			}
		}()
	}
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		if opts.OnProgress == nil {
			return
		}
		t := time.NewTicker(opts.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				r.progress()
			case <-stopProgress:
				return
			}
		}
	}()
	wk := &walker{r: r, ctx: ctx, jobs: jobs, seen: map[fileID]bool{}}
	for _, p := range paths {
		if ctx.Err() != nil {
			break
		}
		wk.root(p)
	}
	close(jobs)
	wg.Wait()
	close(stopProgress)
	<-progressDone
	if opts.OnProgress != nil {
		r.progress()
	}
	sum := Summary{
		Files: r.files.Load(), Dirs: r.dirs.Load(), Bytes: r.bytes.Load(), Skipped: r.skipped.Load(),
		Detections: r.detections.Load(), Errors: r.errors.Load(), Warnings: r.warnings.Load(),
		Duration: time.Since(start), EngineVersion: r.e.Version(),
	}
	return sum, ctx.Err()
}

// run is the shared state of one Scan call.
type run struct {
	opts  *Options
	e     *matcher.Engine
	start time.Time
	mu    sync.Mutex // serializes callbacks

	files, dirs, bytes, skipped, detections, errors, warnings atomic.Int64
}

func (r *run) issue(path, kind string, err error) {
	is := Issue{Path: path, Kind: kind, Err: err}
	if is.IsError() {
		r.errors.Add(1)
	} else {
		r.warnings.Add(1)
	}
	if r.opts.OnIssue != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.opts.OnIssue(is)
	}
}

func (r *run) progress() {
	p := Progress{Files: r.files.Load(), Bytes: r.bytes.Load(), Detections: r.detections.Load(),
		Errors: r.errors.Load(), Elapsed: time.Since(r.start)}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opts.OnProgress(p)
}

func (r *run) emit(ds []Detection) {
	if len(ds) == 0 {
		return
	}
	r.detections.Add(int64(len(ds)))
	if r.opts.OnDetection == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range ds {
		r.opts.OnDetection(d)
	}
}

func (r *run) excluded(path string) bool {
	if len(r.opts.Excludes) == 0 {
		return false
	}
	base := filepath.Base(path)
	for _, p := range r.opts.Excludes {
		if ok, _ := filepath.Match(p, path); ok {
			return true
		}
		if ok, _ := filepath.Match(p, base); ok {
			return true
		}
	}
	return false
}

type job struct {
	path   string
	follow bool // open through a symlink (scan roots)
}

// walker enumerates files. It runs in the caller's goroutine.
type walker struct {
	r    *run
	ctx  context.Context
	jobs chan<- job
	seen map[fileID]bool
}

func (w *walker) root(p string) {
	if w.r.excluded(p) {
		w.r.skipped.Add(1)
		return
	}
	fi, err := os.Stat(p) // roots are followed
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, lerr := os.Lstat(p); lerr == nil {
				w.r.issue(p, IssueIO, errors.New("dangling symbolic link"))
				return
			}
		}
		w.r.issue(p, IssueIO, err)
		return
	}
	switch {
	case fi.IsDir():
		w.dir(p, fi, 0)
	case fi.Mode().IsRegular():
		w.send(job{path: p, follow: true})
	default:
		w.r.skipped.Add(1)
	}
}

// maxDirDepth bounds directory recursion whatever the file system does.
const maxDirDepth = 512

func (w *walker) send(j job) {
	select {
	case w.jobs <- j:
	case <-w.ctx.Done():
	}
}

func (w *walker) dir(p string, fi os.FileInfo, depth int) {
	if depth > maxDirDepth {
		w.r.issue(p, IssueIO, fmt.Errorf("directory nesting deeper than %d levels; not entered", maxDirDepth))
		return
	}
	if id, ok := idOf(p, fi); ok {
		if w.seen[id] {
			if w.r.opts.FollowSymlinks {
				w.r.issue(p, IssueSymlinkLoop, errors.New("directory already scanned (symbolic link loop or bind mount)"))
			} else {
				w.r.skipped.Add(1)
			}
			return
		}
		w.seen[id] = true
	}
	w.r.dirs.Add(1)
	f, err := os.Open(p)
	if err != nil {
		w.r.issue(p, ioKind(err), err)
		return
	}
	defer f.Close()
	for {
		if w.ctx.Err() != nil {
			return
		}
		ents, err := f.ReadDir(1024)
		for _, e := range ents {
			w.entry(filepath.Join(p, e.Name()), e, depth)
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			w.r.issue(p, IssueIO, err)
			return
		}
	}
}

func (w *walker) entry(p string, e fs.DirEntry, depth int) {
	if w.r.excluded(p) {
		w.r.skipped.Add(1)
		return
	}
	t := e.Type()
	switch {
	case t.IsRegular():
		w.send(job{path: p})
	case t.IsDir():
		fi, err := e.Info()
		if err != nil {
			w.r.issue(p, ioKind(err), err)
			return
		}
		w.dir(p, fi, depth+1)
	case t&fs.ModeSymlink != 0:
		if !w.r.opts.FollowSymlinks {
			w.r.skipped.Add(1)
			return
		}
		fi, err := os.Stat(p)
		if err != nil {
			w.r.skipped.Add(1) // dangling link
			return
		}
		switch {
		case fi.IsDir():
			w.dir(p, fi, depth+1)
		case fi.Mode().IsRegular():
			w.send(job{path: p, follow: true})
		default:
			w.r.skipped.Add(1)
		}
	default:
		w.r.skipped.Add(1) // device, FIFO, socket
	}
}

func ioKind(err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return IssueVanished
	}
	return IssueIO
}

// worker scans files; one per goroutine.
type worker struct {
	r  *run
	sc *matcher.Scanner
}

func (w *worker) scanFile(ctx context.Context, j job) {
	r := w.r
	if r.opts.beforeOpen != nil {
		r.opts.beforeOpen(j.path)
	}
	f, err := openFile(j.path, j.follow)
	if err != nil {
		if errors.Is(err, errNotRegular) || errors.Is(err, errSymlink) {
			r.skipped.Add(1)
			return
		}
		r.issue(j.path, ioKind(err), err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		r.issue(j.path, IssueIO, err)
		return
	}
	if !fi.Mode().IsRegular() {
		r.skipped.Add(1)
		return
	}
	size := fi.Size()
	if r.opts.MaxFileSize > 0 && size > r.opts.MaxFileSize {
		r.skipped.Add(1)
		r.issue(j.path, IssueSizeLimit, errors.New("larger than the maximum file size; not scanned"))
		return
	}
	fs := &fileScan{w: w, ctx: ctx, file: j.path, budget: archive.NewBudget(r.opts.Archive)}
	obj := &object{name: j.path, prefix: j.path, size: size, ra: f,
		open: func() (io.ReadCloser, error) { return io.NopCloser(io.NewSectionReader(f, 0, size)), nil }}
	n := fs.scan(obj, 0)
	if r.opts.afterRead != nil {
		r.opts.afterRead(j.path)
	}
	r.files.Add(1)
	r.bytes.Add(n)
	if fi2, err := f.Stat(); err == nil && (fi2.Size() != size || !fi2.ModTime().Equal(fi.ModTime())) {
		r.issue(j.path, IssueChanged, errors.New("file changed while it was scanned"))
	} else if fs.short {
		r.issue(j.path, IssueChanged, errors.New("file shrank while it was scanned"))
	}
	r.emit(fs.dets)
}

func hexOrEmpty(b []byte) string {
	if b == nil {
		return ""
	}
	return hex.EncodeToString(b)
}
