// Package clikit is the command-line plumbing shared by the update commands
// (updatecli, agentcli): one-line errors, --json error objects, flag sets
// with environment fallbacks, byte-size flags, and a progress bar drawn only
// on a terminal.
package clikit

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mamori/mamori/internal/engine/bytesize"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/flagenv"
)

// Exit codes.
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2
)

type Cmd struct {
	Prog   string
	Stdout io.Writer
	Stderr io.Writer
}

func (c Cmd) Usage(err error) int {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	fmt.Fprintf(c.Stderr, "%s: %s (see %s -h)\n", c.Prog, msg, c.Prog)
	return ExitUsage
}

func (c Cmd) Fail(err error) int {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	fmt.Fprintf(c.Stderr, "%s: %s\n", c.Prog, msg)
	return ExitFailed
}

// FailJSON prints an error object on stdout (for --json) and the line on
// stderr.
func (c Cmd) FailJSON(asJSON bool, err error, extra map[string]any) int {
	if asJSON {
		obj := map[string]any{"error": err.Error(), "code": string(errcode.Of(err))}
		for k, v := range extra {
			obj[k] = v
		}
		c.JSON(obj)
	}
	return c.Fail(err)
}

func (c Cmd) JSON(v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(c.Stdout, "%s\n", b)
}

// NewFlags returns a flag set that prints nothing by itself.
func NewFlags(prog string) *flagenv.Set {
	fs := flagenv.New(prog)
	fs.SetOutput(io.Discard)
	return fs
}

// Parse parses flags; it returns (true, code) when the command should end
// (help or a usage error).
func (c Cmd) Parse(fs *flagenv.Set, args []string, help string) (bool, int) {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(c.Stdout, help)
		fs.SetOutput(c.Stdout)
		fs.PrintDefaults()
		return true, ExitOK
	}
	if err != nil {
		return true, c.Usage(err)
	}
	return false, 0
}

// Size is a byte count flag: a plain number of bytes or a number with
// K, M, G, T (powers of 1024, optional "B"/"iB") and an optional "/s".
type Size struct{ N int64 }

func (s *Size) String() string { return strconv.FormatInt(s.N, 10) }

func (s *Size) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	s.N = n
	return nil
}

// ParseSize parses a byte count like 52428800, 50M, 50MiB, 1.5G or 50M/s.
func ParseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	s = strings.TrimSuffix(s, "/s")
	if s == "" || len(s) > 32 {
		return 0, fmt.Errorf("bad size %q", v)
	}
	upper, mult := bytesize.Unit(s)
	if upper == "" || strings.TrimLeft(upper, "0123456789.") != "" || strings.Count(upper, ".") > 1 {
		return 0, fmt.Errorf("bad size %q (want bytes, or a number with K, M, G, T)", v)
	}
	f, err := strconv.ParseFloat(upper, 64)
	if err != nil || f < 0 || f*float64(mult) > 1<<62 {
		return 0, fmt.Errorf("bad size %q", v)
	}
	return int64(f * float64(mult)), nil
}

// SizeFlag registers a size flag with an environment fallback.
func SizeFlag(fs *flagenv.Set, name, env string, def int64, help string) (*Size, error) {
	v := &Size{N: def}
	if e, ok := os.LookupEnv(env); ok && env != "" {
		if err := v.Set(e); err != nil {
			return nil, fmt.Errorf("%s=%q: %v", env, e, err)
		}
	}
	fs.FlagSet.Var(v, name, help+" (env "+env+")")
	return v, nil
}

// ReadRoot reads a trusted root file given with --root.
func ReadRoot(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > 512<<10 {
		return nil, fmt.Errorf("%s is too large for a root.json", path)
	}
	return os.ReadFile(path)
}

// IsTerminal reports whether w is a character device (a TTY).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Progress draws a progress bar on a terminal (nothing otherwise).
type Progress struct {
	w     io.Writer
	label string
	on    bool
	mu    sync.Mutex
	last  time.Time
	drawn bool
}

func NewProgress(w io.Writer, label string) *Progress {
	return &Progress{w: w, label: label, on: IsTerminal(w)}
}

func (p *Progress) Update(done, total int64) {
	if !p.on || total <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.last) < 100*time.Millisecond && done < total {
		return
	}
	p.last = time.Now()
	const width = 30
	fill := int(float64(width) * float64(done) / float64(total))
	fill = min(max(fill, 0), width)
	fmt.Fprintf(p.w, "\r%s [%s%s] %3d%% %s / %s", p.label, strings.Repeat("#", fill), strings.Repeat("-", width-fill),
		done*100/total, HumanBytes(done), HumanBytes(total))
	p.drawn = true
}

func (p *Progress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

func HumanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// Subcommand splits "sub args..." and handles help.
func Subcommand(args []string) (string, []string) {
	if len(args) == 0 {
		return "", nil
	}
	return args[0], args[1:]
}
