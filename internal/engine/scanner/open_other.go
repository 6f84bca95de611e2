//go:build !unix

package scanner

import (
	"os"
	"path/filepath"
)

func openFile(path string, follow bool) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, errNotRegular
	}
	return f, nil
}

// fileID identifies a directory; without inode numbers the absolute path
// with links resolved is used, which still stops loops through links.
type fileID struct{ path string }

func idOf(path string, fi os.FileInfo) (fileID, bool) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fileID{}, false
	}
	abs, err := filepath.Abs(real)
	if err != nil {
		return fileID{}, false
	}
	return fileID{abs}, true
}
