package scanner

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/mamori/mamori/internal/engine/archive"
	"github.com/mamori/mamori/internal/engine/matcher"
)

// Spooling of archive members that must be read more than once (nested
// archives, gzip content): in memory up to memSpoolMax bytes per member and
// memSpoolTotal per file on disk, else in an unlinked temporary file.
const (
	memSpoolMax   = 16 << 20
	memSpoolTotal = 64 << 20
)

// object is something to scan: a file on disk or an archive member.
type object struct {
	name   string // display path of the object itself
	prefix string // display path its members hang from (differs for gzip content)
	size   int64  // -1 if unknown
	ra     io.ReaderAt
	open   func() (io.ReadCloser, error) // re-openable content, or nil
	stream io.Reader                     // one-shot content when open is nil
}

// fileScan is the scan of one file on disk and everything inside it.
type fileScan struct {
	w       *worker
	ctx     context.Context
	file    string
	budget  *archive.Budget
	dets    []Detection
	short   bool // the file on disk ended before its size
	stop    bool // !AllMatch and something was found
	spooled int64
}

var errStop = errors.New("stop")

// scan scans an object at nesting depth (0 = file on disk) and returns its
// size in bytes.
func (fs *fileScan) scan(obj *object, depth int) int64 {
	if fs.stop || fs.ctx.Err() != nil {
		return 0
	}
	head, err := fs.head(obj)
	if err != nil {
		fs.readIssue(obj, depth, err)
		return 0
	}
	format := archive.Sniff(head)
	if format != archive.None && depth >= fs.budget.L.MaxDepth {
		fs.issue(obj.name, archive.KindLimit, fmt.Errorf("%s nested deeper than %d levels; scanned as a plain file", format, fs.budget.L.MaxDepth))
		format = archive.None
	}
	if format == archive.None {
		fs.content(obj, depth, false)
		return obj.size
	}
	if obj.open == nil || (format == archive.Zip && obj.ra == nil) {
		// One-shot stream, or a zip without random access: spool it.
		src := obj.stream
		if src == nil {
			rc, err := obj.open()
			if err != nil {
				fs.readIssue(obj, depth, err)
				return 0
			}
			defer rc.Close()
			src = rc
		}
		sp, err := fs.spool(src)
		if err != nil {
			fs.readIssue(obj, depth, err)
			return 0
		}
		defer sp.close()
		obj.ra, obj.open, obj.size, obj.stream = sp.ra, sp.open, sp.size, nil
	}
	// The archive's own hash first: an allow-listed archive is not
	// looked into, and a hash signature of the archive itself is reported.
	if fs.w.r.e.HashesNeeded(obj.size) != 0 {
		if allowed := fs.content(obj, depth, true); allowed || fs.stop {
			return obj.size
		}
	}
	if !fs.container(obj, format, depth) {
		// Not really an archive (or unreadable as one): scan it as a plain file.
		fs.content(obj, depth, false)
	}
	return obj.size
}

// head returns up to archive.SniffLen leading bytes.
func (fs *fileScan) head(obj *object) ([]byte, error) {
	buf := make([]byte, archive.SniffLen)
	switch {
	case obj.ra != nil:
		n, err := obj.ra.ReadAt(buf, 0)
		if err != nil && err != io.EOF {
			return nil, err
		}
		return buf[:n], nil
	case obj.open != nil:
		rc, err := obj.open()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		n, err := io.ReadFull(rc, buf)
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return nil, err
		}
		return buf[:n], nil
	default:
		br := bufio.NewReaderSize(obj.stream, 64<<10)
		obj.stream = br
		h, err := br.Peek(archive.SniffLen)
		if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
		return h, nil
	}
}

// container walks an archive's members. It returns false if obj could not
// be opened as the archive its magic announced (it is then scanned as a
// plain file, and the problem reported).
func (fs *fileScan) container(obj *object, format archive.Format, depth int) bool {
	b := fs.budget
	memberName := func(n string) string { return obj.prefix + "!" + n }
	onMember := func(m archive.Member) error {
		if m.Err != nil {
			fs.issue(memberName(m.Name), m.Err.Kind, m.Err)
			return nil
		}
		child := &object{name: memberName(m.Name), prefix: memberName(m.Name), size: m.Size}
		if format == archive.Zip {
			child.open = m.Open
		} else {
			rc, err := m.Open()
			if err != nil {
				fs.issue(child.name, archive.KindCorrupt, err)
				return nil
			}
			child.stream = rc
		}
		fs.scan(child, depth+1)
		if fs.stop || fs.ctx.Err() != nil {
			return errStop
		}
		return nil
	}
	switch format {
	case archive.Zip:
		err := archive.WalkZip(obj.ra, obj.size, b, onMember)
		return fs.walkErr(obj, err)
	case archive.Tar:
		rc, err := obj.open()
		if err != nil {
			fs.readIssue(obj, depth, err)
			return true
		}
		defer rc.Close()
		err = archive.WalkTar(rc, b, onMember)
		return fs.walkErr(obj, err) || true // tar headers were validated by Sniff
	case archive.Gzip:
		rc, err := obj.open()
		if err != nil {
			fs.readIssue(obj, depth, err)
			return true
		}
		defer rc.Close()
		stored, content, err := archive.OpenGzip(rc, b)
		if err != nil {
			return fs.walkErr(obj, err)
		}
		sp, err := fs.spool(content)
		if err != nil {
			fs.walkErr(obj, err)
			return true
		}
		defer sp.close()
		inner := archive.GzipInnerName(baseName(obj.name), stored)
		child := &object{name: memberName(inner), prefix: obj.prefix, size: sp.size, ra: sp.ra, open: sp.open}
		fs.scan(child, depth+1)
		return true
	}
	return false
}

func baseName(p string) string {
	if i := strings.LastIndexAny(p, "/\\!"); i >= 0 {
		return p[i+1:]
	}
	return p
}

// walkErr reports an archive walk error and says whether the archive was
// opened at all.
func (fs *fileScan) walkErr(obj *object, err error) bool {
	if err == nil || errors.Is(err, errStop) {
		return true
	}
	var ae *archive.Error
	if errors.As(err, &ae) {
		fs.issue(obj.name, ae.Kind, ae)
		return ae.Kind != archive.KindCorrupt || ae.Reason != "cannot read archive" && ae.Reason != "bad header"
	}
	if ce := fs.ctx.Err(); ce != nil {
		return true
	}
	fs.issue(obj.name, archive.KindCorrupt, err)
	return true
}

// content runs the matcher over an object's bytes and records detections.
// It reports whether the object is on an allow-list.
func (fs *fileScan) content(obj *object, depth int, noBody bool) (allowed bool) {
	var r io.Reader
	if obj.stream != nil {
		r, obj.stream = obj.stream, nil
	} else {
		rc, err := obj.open()
		if err != nil {
			fs.readIssue(obj, depth, err)
			return false
		}
		defer rc.Close()
		r = rc
	}
	opts := matcher.Options{AllMatch: fs.w.r.opts.AllMatch, NoBody: noBody}
	res, err := fs.w.sc.Scan(&ctxReader{ctx: fs.ctx, r: r}, obj.size, opts)
	switch {
	case err == nil:
	case errors.Is(err, matcher.ErrSizeMismatch):
		if depth == 0 {
			fs.short = true
		} else {
			fs.issue(obj.name, archive.KindCorrupt, fmt.Errorf("member has %d bytes, declared %d", res.Size, obj.size))
		}
	default:
		fs.readIssue(obj, depth, err)
		return false
	}
	for _, m := range res.Matches {
		if fs.seen(obj.name, m.Name, string(m.Kind)) {
			continue // already reported by an earlier pass over the same object
		}
		d := Detection{
			Path: obj.name, File: fs.file, Signature: m.Name, Kind: string(m.Kind), MatchKind: string(m.Kind),
			Size: res.Size, MD5: hexOrEmpty(res.Hashes.MD5), SHA1: hexOrEmpty(res.Hashes.SHA1),
			SHA256: hexOrEmpty(res.Hashes.SHA256), EngineVersion: fs.w.r.e.Version(),
		}
		if depth > 0 {
			d.Kind = KindArchive
			d.Member = strings.TrimPrefix(obj.name, fs.file+"!")
		}
		fs.dets = append(fs.dets, d)
		if !fs.w.r.opts.AllMatch {
			fs.stop = true
			break
		}
	}
	return res.Allowed
}

func (fs *fileScan) seen(path, sig, kind string) bool {
	for _, d := range fs.dets {
		if d.Path == path && d.Signature == sig && d.MatchKind == kind {
			return true
		}
	}
	return false
}

// readIssue reports a failure to read an object: an I/O error for a file on
// disk, an archive problem for a member.
func (fs *fileScan) readIssue(obj *object, depth int, err error) {
	if fs.ctx.Err() != nil {
		return
	}
	var ae *archive.Error
	switch {
	case errors.As(err, &ae):
		fs.issue(obj.name, ae.Kind, ae)
	case depth == 0:
		fs.issue(obj.name, ioKind(err), err)
	default:
		fs.issue(obj.name, archive.KindCorrupt, err)
	}
}

func (fs *fileScan) issue(path, kind string, err error) { fs.w.r.issue(path, kind, err) }

// spooled is re-readable content.
type spooled struct {
	ra    io.ReaderAt
	size  int64
	open  func() (io.ReadCloser, error)
	close func()
}

// spool reads r to its end into memory or an unlinked temporary file.
func (fs *fileScan) spool(r io.Reader) (*spooled, error) {
	r = &ctxReader{ctx: fs.ctx, r: r}
	limit := min(int64(memSpoolMax), memSpoolTotal-fs.spooled)
	mem, err := io.ReadAll(io.LimitReader(r, max(limit, 0)+1))
	if err != nil {
		return nil, err
	}
	if int64(len(mem)) <= limit {
		fs.spooled += int64(len(mem))
		br := bytes.NewReader(mem)
		size := int64(len(mem))
		return &spooled{ra: br, size: size, close: func() { fs.spooled -= size },
			open: func() (io.ReadCloser, error) { return io.NopCloser(io.NewSectionReader(br, 0, size)), nil }}, nil
	}
	f, err := os.CreateTemp(fs.w.r.opts.TempDir, "mamori-spool-*")
	if err != nil {
		return nil, fmt.Errorf("spool archive member: %w", err)
	}
	name := f.Name()
	unlinked := runtime.GOOS != "windows" && os.Remove(name) == nil
	cleanup := func() {
		f.Close()
		if !unlinked {
			os.Remove(name)
		}
	}
	if _, err := f.Write(mem); err != nil {
		cleanup()
		return nil, fmt.Errorf("spool archive member: %w", err)
	}
	n, err := io.Copy(f, r)
	if err != nil {
		cleanup()
		return nil, err
	}
	size := int64(len(mem)) + n
	return &spooled{ra: f, size: size, close: cleanup,
		open: func() (io.ReadCloser, error) { return io.NopCloser(io.NewSectionReader(f, 0, size)), nil }}, nil
}

// ctxReader stops reading when the context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
