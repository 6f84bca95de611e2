package enginedb

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/mamori/mamori/internal/engine/signature"
)

// ReadSources parses signature sources: each path is a signature file or a
// directory whose regular files (not recursing into sub-directories, which
// are an error) are all signature files. Every file must be in a supported
// format; any bad file or line fails the whole read, with errors naming file,
// line and reason. Files are read in sorted order.
func ReadSources(paths []string) ([]signature.Record, error) {
	if len(paths) == 0 {
		return nil, errors.New("no signature sources given")
	}
	var files []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			files = append(files, p)
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		n := 0
		for _, e := range ents {
			fp := filepath.Join(p, e.Name())
			switch {
			case e.IsDir():
				return nil, &signature.ParseError{File: fp, Reason: "sub-directories are not supported in a signature source"}
			case !e.Type().IsRegular():
				if fi, err := os.Stat(fp); err != nil || !fi.Mode().IsRegular() {
					return nil, &signature.ParseError{File: fp, Reason: "not a regular file"}
				}
			}
			files = append(files, fp)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("%s: no signature files", p)
		}
	}
	sort.Strings(files)
	var (
		recs []signature.Record
		errs []error
	)
	for _, f := range files {
		if _, err := signature.FormatFor(f); err != nil {
			errs = append(errs, err)
			continue
		}
		fh, err := os.Open(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rs, err := signature.ParseFile(f, fh)
		fh.Close()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		recs = append(recs, rs...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return recs, nil
}
