// Package enginecli implements the engine, scan and quarantine commands so
// the binaries stay thin: each function takes the arguments after its
// sub-command, writes to the given writers and returns the process exit code.
//
//	mamori engine build --from DIR... --out FILE --version N   -> Build
//	mamori engine info FILE [--json]                           -> Info
//	mamori-agent scan PATH... [flags]                          -> Scan
//	mamori-agent quarantine list|restore|delete ...            -> Quarantine
//
// Flags may come before, between or after positional arguments; "--" ends
// flag parsing. A bad flag or argument prints one line to stderr and exits 2.
package enginecli

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mamori/mamori/internal/engine/bytesize"
)

// Exit codes shared by the commands.
const (
	ExitOK    = 0 // success; for scan: nothing found
	ExitFound = 1 // scan: detections (and no errors); quarantine: operation refused/failed
	ExitError = 2 // usage error, unusable engine, or (scan) errors occurred
)

// newFlagSet returns a FlagSet that reports nothing by itself.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseArgs parses flags interleaved with positional arguments and returns
// the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageErr prints "prog: message" as one line and returns ExitError.
func usageErr(stderr io.Writer, prog string, err error) int {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	fmt.Fprintf(stderr, "%s: %s (see %s -h)\n", prog, msg, prog)
	return ExitError
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// sizeFlag is a byte size flag accepting 512K, 100M, 2G, 1T (binary
// multiples, optional B or iB) or a plain number of bytes.
type sizeFlag struct{ n int64 }

func (s *sizeFlag) String() string { return strconv.FormatInt(s.n, 10) }
func (s *sizeFlag) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	s.n = n
	return nil
}

// ParseSize parses a byte size: 512, 512K, 100M, 2G, 1T (powers of 1024),
// optionally followed by B or iB; case-insensitive.
func ParseSize(v string) (int64, error) { return bytesize.Parse(v) }

// displayPath quotes a path that contains control characters, invalid
// UTF-8 or leading/trailing spaces, so one output line is one record.
func displayPath(p string) string {
	if !utf8.ValidString(p) || strings.IndexFunc(p, func(r rune) bool { return unicode.IsControl(r) }) >= 0 ||
		strings.TrimSpace(p) != p {
		return strconv.Quote(p)
	}
	return p
}

// isTerminal reports whether w is a character device (a TTY).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
