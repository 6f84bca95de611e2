package enginecli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/engine/matcher"
	"github.com/mamori/mamori/internal/engine/signature"
)

const buildUsage = `usage: mamori engine build --from DIR [--from DIR...] --out FILE --version N

Compiles ClamAV signature sources (.hdb .hsb .ndb .fp .sfp files; a --from
may also name a single file) into one engine database. Any unsupported file
or bad line fails the build with file:line: reason.
`

// Build implements `mamori engine build`. args are the arguments after
// "build".
func Build(args []string, stdout, stderr io.Writer) int {
	const prog = "mamori engine build"
	fs := newFlagSet(prog)
	var from stringList
	fs.Var(&from, "from", "signature source directory or file (repeatable)")
	out := fs.String("out", "", "output engine database file")
	version := fs.Uint64("version", 0, "engine version number (> 0)")
	pos, err := parseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, buildUsage)
		return ExitOK
	}
	switch {
	case err != nil:
		return usageErr(stderr, prog, err)
	case len(pos) > 0:
		return usageErr(stderr, prog, fmt.Errorf("unexpected argument %q", pos[0]))
	case len(from) == 0:
		return usageErr(stderr, prog, errors.New("--from is required"))
	case *out == "":
		return usageErr(stderr, prog, errors.New("--out is required"))
	case *version == 0:
		return usageErr(stderr, prog, errors.New("--version N (N > 0) is required"))
	}
	start := time.Now()
	recs, err := enginedb.ReadSources(from)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return ExitError
	}
	data, err := enginedb.Build(recs, *version)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return ExitError
	}
	if err := writeFileAtomic(*out, data); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return ExitError
	}
	db, err := enginedb.Load(data)
	if err != nil { // cannot happen for Build's output; checked anyway
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return ExitError
	}
	fmt.Fprintf(stdout, "wrote %s: engine version %d, %d records (%s), %d bytes, sha256 %s, in %.2fs\n",
		*out, db.Version(), db.RecordCount(), countsText(db), db.Size(), db.Checksum(), time.Since(start).Seconds())
	return ExitOK
}

func countsText(db *enginedb.DB) string {
	c := db.Counts()
	var parts []string
	for t := signature.TypeMD5; t <= signature.TypeAllowSHA256; t++ {
		if n := c[t]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", t, n))
		}
	}
	if len(parts) == 0 {
		return "empty"
	}
	return strings.Join(parts, ", ")
}

// writeFileAtomic writes data to a temporary file beside path, syncs it and
// renames it over path.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
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
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

const infoUsage = `usage: mamori engine info FILE [--json]

Loads an engine database (verifying its checksum and structure) and prints
its version, record counts, checksum and load time.
`

// Info implements `mamori engine info`. args are the arguments after "info".
func Info(args []string, stdout, stderr io.Writer) int {
	const prog = "mamori engine info"
	fs := newFlagSet(prog)
	asJSON := fs.Bool("json", false, "print one JSON object")
	pos, err := parseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, infoUsage)
		return ExitOK
	}
	switch {
	case err != nil:
		return usageErr(stderr, prog, err)
	case len(pos) != 1:
		return usageErr(stderr, prog, errors.New("want exactly one FILE"))
	}
	start := time.Now()
	data, err := os.ReadFile(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return ExitError
	}
	db, err := enginedb.Load(data)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s: %v\n", prog, pos[0], err)
		return ExitError
	}
	e, err := matcher.Compile(db)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s: %v\n", prog, pos[0], err)
		return ExitError
	}
	load := time.Since(start)
	st := e.Stats()
	if *asJSON {
		counts := map[string]int{}
		for t, n := range db.Counts() {
			counts[t.String()] = n
		}
		json.NewEncoder(stdout).Encode(map[string]any{
			"file": pos[0], "format_version": enginedb.FormatVersion, "engine_version": db.Version(),
			"records": db.RecordCount(), "counts": counts, "sha256": db.Checksum(), "size": db.Size(),
			"load_seconds": load.Seconds(), "body_parts": st.BodyParts, "lanes": st.Lanes, "window_bytes": st.WindowBytes,
		})
		return ExitOK
	}
	lanes := append([]string(nil), st.Lanes...)
	sort.Strings(lanes)
	fmt.Fprintf(stdout, "file:            %s\nformat version:  %d\nengine version:  %d\nrecords:         %d (%s)\nsha256:          %s\nsize:            %d bytes\nload+compile:    %.1f ms\nbody automaton:  %d parts; lanes: %s; window %d bytes\n",
		pos[0], enginedb.FormatVersion, db.Version(), db.RecordCount(), countsText(db), db.Checksum(), db.Size(),
		float64(load.Microseconds())/1000, st.BodyParts, strings.Join(lanes, "; "), st.WindowBytes)
	return ExitOK
}
