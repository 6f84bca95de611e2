// Package archive reads the archive formats the scanner looks into — zip,
// gzip and tar (so also .tar.gz) — under limits that make decompression bombs
// and hostile archives harmless: nesting depth, total unpacked bytes,
// per-member size, compression ratio and member count. It never writes
// anything to disk and never interprets member names as paths.
package archive

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
)

// Format is a recognised archive format.
type Format int

// Formats.
const (
	None Format = iota
	Zip
	Gzip
	Tar
)

func (f Format) String() string {
	switch f {
	case Zip:
		return "zip"
	case Gzip:
		return "gzip"
	case Tar:
		return "tar"
	}
	return "none"
}

// SniffLen is how many leading bytes Sniff wants.
const SniffLen = 512

// Sniff recognises an archive from its first bytes (up to SniffLen). Only
// magic numbers count, never file names: zip local-file or end-of-directory
// signature, gzip magic with the deflate method and no reserved flags, and a
// POSIX/GNU tar header with "ustar" magic and a valid header checksum.
func Sniff(head []byte) Format {
	switch {
	case len(head) >= 4 && head[0] == 'P' && head[1] == 'K' &&
		((head[2] == 3 && head[3] == 4) || (head[2] == 5 && head[3] == 6)):
		return Zip
	case len(head) >= 10 && head[0] == 0x1f && head[1] == 0x8b && head[2] == 8 && head[3]&0xe0 == 0:
		return Gzip
	case len(head) >= 512 && string(head[257:262]) == "ustar" && tarChecksumOK(head[:512]):
		return Tar
	}
	return None
}

func tarChecksumOK(h []byte) bool {
	field := strings.TrimRight(strings.TrimLeft(string(h[148:156]), " \x00"), " \x00")
	want, err := strconv.ParseInt(field, 8, 64)
	if err != nil {
		return false
	}
	var sum int64
	for i, b := range h {
		if i >= 148 && i < 156 {
			b = ' '
		}
		sum += int64(b)
	}
	return sum == want
}

// Limits bound what is unpacked from one scanned file, across all nesting
// levels. Zero fields take the defaults.
type Limits struct {
	// MaxDepth is the deepest archive nesting opened (a file on disk is
	// depth 0, its members depth 1). Default 10.
	MaxDepth int
	// MaxTotalSize is the most bytes unpacked from one file on disk, all
	// members and levels together. Default 1 GiB.
	MaxTotalSize int64
	// MaxMemberSize is the largest member unpacked. Default 256 MiB.
	MaxMemberSize int64
	// MaxRatio is the highest compression ratio (unpacked ÷ packed bytes)
	// accepted for a member once it exceeds RatioMinSize. Default 100.
	MaxRatio int64
	// RatioMinSize is the unpacked size below which the ratio is not
	// checked. Default 1 MiB.
	RatioMinSize int64
	// MaxMembers is the most members examined in one file. Default 100,000.
	MaxMembers int
}

// Defaults for Limits.
const (
	DefaultMaxDepth      = 10
	DefaultMaxTotalSize  = 1 << 30
	DefaultMaxMemberSize = 256 << 20
	DefaultMaxRatio      = 100
	DefaultRatioMinSize  = 1 << 20
	DefaultMaxMembers    = 100_000
)

// WithDefaults fills zero fields with the defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxTotalSize <= 0 {
		l.MaxTotalSize = DefaultMaxTotalSize
	}
	if l.MaxMemberSize <= 0 {
		l.MaxMemberSize = DefaultMaxMemberSize
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = DefaultMaxRatio
	}
	if l.RatioMinSize <= 0 {
		l.RatioMinSize = DefaultRatioMinSize
	}
	if l.MaxMembers <= 0 {
		l.MaxMembers = DefaultMaxMembers
	}
	return l
}

// Error kinds.
const (
	KindLimit       = "archive_limit"       // a limit was hit (bomb, too deep, too big, too many members)
	KindCorrupt     = "archive_corrupt"     // malformed, truncated or failing its checksums
	KindEncrypted   = "archive_encrypted"   // encrypted member, cannot be scanned
	KindUnsupported = "archive_unsupported" // e.g. a zip compression method other than store/deflate
)

// Error is an archive problem. Kind is one of the Kind constants.
type Error struct {
	Kind   string
	Format Format
	Reason string
	Err    error
}

func (e *Error) Error() string {
	s := e.Format.String() + ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

func limitErr(f Format, format string, a ...any) *Error {
	return &Error{Kind: KindLimit, Format: f, Reason: fmt.Sprintf(format, a...)}
}

func corruptErr(f Format, reason string, err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	return &Error{Kind: KindCorrupt, Format: f, Reason: reason, Err: err}
}

// Budget tracks the limits for one file on disk. It is not safe for
// concurrent use.
type Budget struct {
	L       Limits
	used    int64
	members int
}

// NewBudget returns a budget with the limits (defaults applied).
func NewBudget(l Limits) *Budget { return &Budget{L: l.WithDefaults()} }

// Used is the number of bytes unpacked so far.
func (b *Budget) Used() int64 { return b.used }

func (b *Budget) addMember(f Format) error {
	b.members++
	if b.members > b.L.MaxMembers {
		return limitErr(f, "more than %d members", b.L.MaxMembers)
	}
	return nil
}

// meter counts unpacked bytes against the budget and the member's limits.
type meter struct {
	r          io.Reader
	b          *Budget
	f          Format
	n          int64
	declared   int64        // -1: unknown
	compressed func() int64 // packed bytes consumed so far (or declared); nil: no ratio check
}

func (m *meter) Read(p []byte) (int, error) {
	k, err := m.r.Read(p)
	m.n += int64(k)
	m.b.used += int64(k)
	switch {
	case m.b.used > m.b.L.MaxTotalSize:
		return k, limitErr(m.f, "total unpacked size exceeds %d bytes", m.b.L.MaxTotalSize)
	case m.n > m.b.L.MaxMemberSize:
		return k, limitErr(m.f, "member larger than %d bytes", m.b.L.MaxMemberSize)
	case m.declared >= 0 && m.n > m.declared:
		return k, &Error{Kind: KindCorrupt, Format: m.f, Reason: fmt.Sprintf("member larger than its declared %d bytes", m.declared)}
	}
	if m.compressed != nil && m.n > m.b.L.RatioMinSize {
		if c := m.compressed(); c <= 0 || m.n/c > m.b.L.MaxRatio {
			return k, limitErr(m.f, "compression ratio above %d:1 (decompression bomb?)", m.b.L.MaxRatio)
		}
	}
	if err != nil && err != io.EOF {
		err = corruptErr(m.f, "read error", err)
	}
	return k, err
}

// Member is one file inside an archive.
type Member struct {
	Name string // as stored in the archive (not sanitised; never used as a path)
	Size int64  // unpacked size; -1 if unknown
	// Err, if set, says why the member is not unpacked (a limit, encryption,
	// an unsupported method); Open must not be called then.
	Err *Error
	// Open returns the member's content. Zip members can be opened again;
	// tar members only once, before the walk moves on.
	Open func() (io.ReadCloser, error)
}

// WalkZip calls fn for each regular member of a zip archive held in ra. It
// checks the declared sizes and ratio before anything is unpacked, so a zip
// bomb is reported (Member.Err of kind archive_limit) without being
// inflated. It returns a *Error for a malformed archive or when the budget's
// total or member-count limit stops the walk; fn's error stops the walk too.
func WalkZip(ra io.ReaderAt, size int64, b *Budget, fn func(Member) error) error {
	zr, err := zip.NewReader(ra, size)
	if errors.Is(err, zip.ErrInsecurePath) && zr != nil {
		err = nil // names are labels here, never paths
	}
	if err != nil {
		return corruptErr(Zip, "cannot read archive", err)
	}
	for _, f := range zr.File {
		if f.Mode().IsDir() || strings.HasSuffix(f.Name, "/") || !f.Mode().IsRegular() {
			continue
		}
		if err := b.addMember(Zip); err != nil {
			return err
		}
		m := Member{Name: f.Name, Size: int64(f.UncompressedSize64)}
		u, c := f.UncompressedSize64, f.CompressedSize64
		switch {
		case u > uint64(b.L.MaxMemberSize):
			m.Err = limitErr(Zip, "member declares %d bytes, more than %d", u, b.L.MaxMemberSize)
		case u > uint64(b.L.RatioMinSize) && (c == 0 || u/c > uint64(b.L.MaxRatio)):
			m.Err = limitErr(Zip, "compression ratio %d:1 above %d:1 (decompression bomb?)", u/max(c, 1), b.L.MaxRatio)
		case int64(u) > b.L.MaxTotalSize-b.used:
			return limitErr(Zip, "total unpacked size would exceed %d bytes", b.L.MaxTotalSize)
		case f.Flags&1 != 0:
			m.Err = &Error{Kind: KindEncrypted, Format: Zip, Reason: "encrypted member"}
		case f.Method != zip.Store && f.Method != zip.Deflate:
			m.Err = &Error{Kind: KindUnsupported, Format: Zip, Reason: fmt.Sprintf("compression method %d", f.Method)}
		}
		if m.Err == nil {
			f := f
			m.Open = func() (io.ReadCloser, error) {
				rc, err := f.Open()
				if err != nil {
					return nil, corruptErr(Zip, "cannot open member", err)
				}
				cs := int64(f.CompressedSize64)
				return struct {
					io.Reader
					io.Closer
				}{&meter{r: rc, b: b, f: Zip, declared: int64(f.UncompressedSize64), compressed: func() int64 { return cs }}, rc}, nil
			}
		}
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

// WalkTar calls fn for each regular file in a tar stream. Members can be
// opened once, during fn. Non-regular entries (directories, links, devices)
// are skipped.
func WalkTar(r io.Reader, b *Budget, fn func(Member) error) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if errors.Is(err, tar.ErrInsecurePath) && h != nil {
			err = nil // names are labels here, never paths
		}
		if err != nil {
			return corruptErr(Tar, "bad header", err)
		}
		if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeRegA && h.Typeflag != tar.TypeGNUSparse {
			continue
		}
		if err := b.addMember(Tar); err != nil {
			return err
		}
		m := Member{Name: h.Name, Size: h.Size}
		switch {
		case h.Size > b.L.MaxMemberSize:
			m.Err = limitErr(Tar, "member is %d bytes, more than %d", h.Size, b.L.MaxMemberSize)
		case h.Size > b.L.MaxTotalSize-b.used:
			return limitErr(Tar, "total unpacked size would exceed %d bytes", b.L.MaxTotalSize)
		}
		if m.Err == nil {
			opened := false
			m.Open = func() (io.ReadCloser, error) {
				if opened {
					return nil, errors.New("tar member opened twice")
				}
				opened = true
				return io.NopCloser(&meter{r: tr, b: b, f: Tar, declared: h.Size}), nil
			}
		}
		if err := fn(m); err != nil {
			return err
		}
	}
}

// countingReader counts bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n += int64(k)
	return k, err
}

// OpenGzip returns the decompressed content of a gzip stream (all
// concatenated members) and the original file name from its header ("" if
// none). The reader enforces the budget and the compression ratio as it goes.
func OpenGzip(r io.Reader, b *Budget) (name string, content io.Reader, err error) {
	cr := &countingReader{r: r}
	zr, err := gzip.NewReader(cr)
	if err != nil {
		return "", nil, corruptErr(Gzip, "bad header", err)
	}
	if err := b.addMember(Gzip); err != nil {
		return "", nil, err
	}
	return zr.Name, &meter{r: zr, b: b, f: Gzip, declared: -1, compressed: func() int64 { return cr.n }}, nil
}

// GzipInnerName names the content of a gzip file: the name stored in the
// header if any, else the outer name without .gz (.tgz becomes .tar).
func GzipInnerName(outer, stored string) string {
	if stored != "" {
		return path.Base(strings.ReplaceAll(stored, "\\", "/"))
	}
	base := path.Base(strings.ReplaceAll(outer, "\\", "/"))
	lower := strings.ToLower(base)
	switch {
	case strings.HasSuffix(lower, ".tgz"):
		return base[:len(base)-4] + ".tar"
	case strings.HasSuffix(lower, ".gz"):
		return base[:len(base)-3]
	}
	return base + ".out"
}
