// Package bundle reads and writes offline update bundles: a copy of an update
// repository (metadata/ and targets/, the same layout a mirror serves) as a
// directory or as one uncompressed tar file, for air-gapped sites and USB
// sticks. A bundle is trusted only through its TUF metadata; this package
// only moves bytes, and refuses tar files whose structure is ambiguous
// (duplicate names, links, special files, unsafe names).
package bundle

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Limits of a tar bundle.
const (
	MaxEntries = 200_000
	MaxNameLen = 1024
)

// ManifestName is an informational file at the top of a bundle (agents do
// not trust it; TUF metadata is the manifest).
const ManifestName = "bundle.json"

// CheckName reports whether name is a safe relative slash path: not empty,
// no leading slash, no backslash, no "." or ".." or empty components, no
// control characters.
func CheckName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("bad file name length %d", len(name))
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c == 0x7f || c == '\\' || c == ':' {
			return fmt.Errorf("file name %q has a forbidden character", name)
		}
	}
	for _, p := range strings.Split(name, "/") {
		if p == "" || p == "." || p == ".." {
			return fmt.Errorf("file name %q is not a clean relative path", name)
		}
	}
	return nil
}

type entry struct{ off, size int64 }

// Tar is an opened tar bundle with an index of its regular files.
type Tar struct {
	f       *os.File
	size    int64
	entries map[string]entry
}

// posReader tracks the offset of reads and seeks on the file so the data
// offset of each tar entry is known; it implements io.Seeker so the tar
// reader skips file data without reading it.
type posReader struct {
	f   *os.File
	pos int64
}

func (p *posReader) Read(b []byte) (int, error) {
	n, err := p.f.Read(b)
	p.pos += int64(n)
	return n, err
}

func (p *posReader) Seek(off int64, whence int) (int64, error) {
	n, err := p.f.Seek(off, whence)
	if err == nil {
		p.pos = n
	}
	return n, err
}

// OpenTar opens a tar bundle and indexes it. Only regular files and
// directories are allowed; names must pass CheckName (a leading "./" is
// ignored); a name may appear once.
func OpenTar(path string) (*Tar, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	t, err := indexTar(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	return t, nil
}

func indexTar(f *os.File) (*Tar, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	t := &Tar{f: f, size: fi.Size(), entries: map[string]entry{}}
	pr := &posReader{f: f}
	tr := tar.NewReader(pr)
	for n := 0; ; n++ {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading tar: %v", err)
		}
		if n >= MaxEntries {
			return nil, fmt.Errorf("more than %d entries", MaxEntries)
		}
		name := strings.TrimPrefix(h.Name, "./")
		if h.Typeflag == tar.TypeDir {
			name = strings.TrimSuffix(name, "/")
			if name == "" || name == "." {
				continue
			}
			if err := CheckName(name); err != nil {
				return nil, err
			}
			continue
		}
		if h.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("entry %q: only regular files and directories are allowed", h.Name)
		}
		if err := CheckName(name); err != nil {
			return nil, err
		}
		if _, dup := t.entries[name]; dup {
			return nil, fmt.Errorf("entry %q appears twice", name)
		}
		if h.Size < 0 || pr.pos+h.Size > t.size {
			return nil, fmt.Errorf("entry %q: size %d runs past the end of the file", name, h.Size)
		}
		t.entries[name] = entry{off: pr.pos, size: h.Size}
	}
	return t, nil
}

// Open returns a reader for the named file and its size; the error wraps
// os.ErrNotExist when the bundle has no such file.
func (t *Tar) Open(name string) (*io.SectionReader, int64, error) {
	e, ok := t.entries[name]
	if !ok {
		return nil, 0, fmt.Errorf("%s: %w", name, os.ErrNotExist)
	}
	return io.NewSectionReader(t.f, e.off, e.size), e.size, nil
}

// Names returns the number of regular files in the bundle.
func (t *Tar) Len() int { return len(t.entries) }

// Close closes the bundle file.
func (t *Tar) Close() error { return t.f.Close() }

// File is one file to write into a bundle.
type File struct {
	Name string // slash path inside the bundle
	Path string // file to copy from, or
	Data []byte // content (when Path is empty)
}

// Progress is called with bytes written so far and the total.
type Progress func(done, total int64)

func (f File) size() (int64, error) {
	if f.Path == "" {
		return int64(len(f.Data)), nil
	}
	fi, err := os.Stat(f.Path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (f File) open() (io.ReadCloser, error) {
	if f.Path == "" {
		return io.NopCloser(strings.NewReader(string(f.Data))), nil
	}
	return os.Open(f.Path)
}

// WriteTar writes files as an uncompressed tar (the blobs are already
// compressed) with fixed modes and the given modification time.
func WriteTar(w io.Writer, files []File, mtime time.Time, progress Progress) error {
	total, err := totalSize(files)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	var done int64
	for _, f := range files {
		if err := CheckName(f.Name); err != nil {
			return err
		}
		// parent directories first, once
		parts := strings.Split(f.Name, "/")
		for i := 1; i < len(parts); i++ {
			d := strings.Join(parts[:i], "/")
			if !dirs[d] {
				dirs[d] = true
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
					return err
				}
			}
		}
		size, err := f.size()
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.Name, Size: size, Mode: 0o644, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
		rc, err := f.open()
		if err != nil {
			return err
		}
		n, err := io.Copy(tw, io.LimitReader(rc, size))
		rc.Close()
		if err != nil {
			return err
		}
		if n != size {
			return fmt.Errorf("%s changed while being written", f.Name)
		}
		done += n
		if progress != nil {
			progress(done, total)
		}
	}
	return tw.Close()
}

func totalSize(files []File) (int64, error) {
	var total int64
	for _, f := range files {
		n, err := f.size()
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}
