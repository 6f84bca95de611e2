// Package admincli implements the "mamori" administration commands that
// talk to the REST API of a running server (login, users, groups, tokens,
// enrollment-tokens, permission-sets, audit, computers, dynamic-groups,
// policies, tasks, task-runs), so that cmd/mamori only dispatches to Run.
//
// Exit codes: 0 success; 1 the server refused (the line "mamori: <its
// message>") or could not be reached; 2 a usage error (bad flags or
// arguments, no server or token configured).
//
// Connection settings come, in this order, from flags, environment
// variables and the config file written by "mamori login" (see Config);
// the config file's token and CA pin are used only for the server they
// were stored for. Passwords are never flag values: they are read from
// MAMORI_PASSWORD (login), from stdin (--password-stdin) or at a prompt.
package admincli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mamori/mamori/internal/apiclient"
	"github.com/mamori/mamori/internal/errcode"
)

// Environment variables.
const (
	EnvServer        = "MAMORI_SERVER_URL"
	EnvToken         = "MAMORI_TOKEN"
	EnvConfig        = "MAMORI_CLI_CONFIG"
	EnvCAFingerprint = "MAMORI_CA_FINGERPRINT"
	EnvCAFile        = "MAMORI_CA_FILE"
	EnvOutput        = "MAMORI_OUTPUT"
	EnvUser          = "MAMORI_USER"
	EnvPassword      = "MAMORI_PASSWORD"
)

// Usage lists the commands of this package, for cmd/mamori's usage text.
const Usage = `  login             log in to a server and store an API token (mamori login --server URL)
  logout            revoke the stored API token
  whoami            show who the stored credentials are
  users             list|show|create|disable|enable|unlock|reset-password|delete|remove-totp|set-permission-sets
  groups            list|show|create|rename|move|delete static groups
  tokens            list|create|revoke personal API tokens
  enrollment-tokens list|create|revoke agent enrollment tokens through the API
  permission-sets   list|show
  audit             list|export the audit log
  computers         list|show|move|revoke|tag|untag|effective-config
  dynamic-groups    list|show|create|update|delete|members|preview groups a template selects
  policies          list|show|create|update|delete|schema|assign|unassign|rank
  tasks             types|list|show|create|update|delete|run|runs, trigger add|list|update|delete
  task-runs         show|cancel|retry|download runs of tasks
  settings          retention: how long events, detections and task runs are kept
`

// commands maps each command to its implementation.
var commands = map[string]func(*invocation, []string) error{
	"login":             (*invocation).login,
	"logout":            (*invocation).logout,
	"whoami":            (*invocation).whoami,
	"users":             (*invocation).users,
	"groups":            (*invocation).groups,
	"tokens":            (*invocation).tokens,
	"enrollment-tokens": (*invocation).enrollmentTokens,
	"permission-sets":   (*invocation).permissionSets,
	"audit":             (*invocation).audit,
	"computers":         (*invocation).computers,
	"dynamic-groups":    (*invocation).dynamicGroups,
	"policies":          (*invocation).policies,
	"tasks":             (*invocation).tasks,
	"task-runs":         (*invocation).taskRuns,
	"settings":          (*invocation).settings,
}

// subcommands lists each group's subcommands in the order usage shows them.
var subcommands = map[string][]string{
	"users":             {"list", "show", "create", "disable", "enable", "unlock", "reset-password", "delete", "remove-totp", "set-permission-sets"},
	"groups":            {"list", "show", "create", "rename", "move", "delete"},
	"tokens":            {"list", "create", "revoke"},
	"enrollment-tokens": {"list", "create", "revoke"},
	"permission-sets":   {"list", "show"},
	"audit":             {"list", "export"},
	"computers":         {"list", "show", "move", "revoke", "tag", "untag", "effective-config"},
	"dynamic-groups":    {"list", "show", "create", "update", "delete", "members", "preview"},
	"policies":          {"list", "show", "create", "update", "delete", "schema", "assign", "unassign", "rank"},
	"tasks":             {"types", "list", "show", "create", "update", "delete", "run", "runs", "trigger"},
	"tasks trigger":     {"add", "list", "update", "delete"},
	"task-runs":         {"show", "cancel", "retry", "download"},
	"settings":          {"retention"},
}

// IsCommand reports whether name is a command Run handles.
func IsCommand(name string) bool {
	_, ok := commands[name]
	return ok
}

// Run runs one administration command; args[0] is the command ("users",
// "login", ...). It returns the exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &CLI{Stdin: stdin, Stdout: stdout, Stderr: stderr}
	return c.Run(ctx, args)
}

// CLI is the environment of the commands; zero fields take the process's.
type CLI struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Getenv reads environment variables; default os.Getenv.
	Getenv func(string) string
	// Terminal reports whether Stdin is an interactive terminal (prompts
	// are shown, new passwords asked twice); default: Stdin is an *os.File
	// that is a character device.
	Terminal func() bool
}

// invocation is one run of a command.
type invocation struct {
	ctx    context.Context
	cli    *CLI
	stdout io.Writer
	stderr io.Writer
	in     *bufio.Reader // Stdin, shared by every read of the run
	name   string        // "users create", for usage texts
}

// Run runs one command (args[0] is its name) and returns the exit code.
func (c *CLI) Run(ctx context.Context, args []string) int {
	if c.Stdin == nil {
		c.Stdin = os.Stdin
	}
	if c.Stdout == nil {
		c.Stdout = os.Stdout
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
	if c.Getenv == nil {
		c.Getenv = os.Getenv
	}
	if c.Terminal == nil {
		c.Terminal = func() bool { return isTerminal(c.Stdin) }
	}
	if len(args) == 0 || !IsCommand(args[0]) {
		fmt.Fprintf(c.Stderr, "usage: mamori <command> [flags]\n\ncommands:\n%s", Usage)
		return 2
	}
	inv := &invocation{ctx: ctx, cli: c, stdout: c.Stdout, stderr: c.Stderr, in: bufio.NewReader(c.Stdin), name: args[0]}
	err := commands[args[0]](inv, args[1:])
	return exitCode(err, c.Stderr)
}

func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// usageError is a mistake in the command line (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// exitCode prints err as one line and returns the exit code.
func exitCode(err error, stderr io.Writer) int {
	var ue *usageError
	var ce *errcode.Error
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsageShown):
		return 2 // the usage (or the flag package) already said what is wrong
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "mamori:", ue.msg)
		return 2
	case errors.As(err, &ce):
		fmt.Fprintln(stderr, "mamori:", ce.Message)
	default:
		fmt.Fprintln(stderr, "mamori:", err)
	}
	return 1
}

var errUsageShown = errors.New("usage shown")

// group dispatches "mamori GROUP SUB ...".
func (inv *invocation) group(args []string, subs map[string]func([]string) error) error {
	names := subcommands[inv.name]
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(inv.stderr, "usage: mamori %s %s [flags]\n\nRun \"mamori %s <subcommand> -h\" for its flags.\n", inv.name, strings.Join(names, "|"), inv.name)
		if len(args) == 0 {
			return errUsageShown
		}
		return nil
	}
	run, ok := subs[args[0]]
	if !ok {
		return usagef("unknown subcommand %q of %s; one of: %s", args[0], inv.name, strings.Join(names, ", "))
	}
	inv.name += " " + args[0]
	return run(args[1:])
}

// flags returns a flag set for the current command; synopsis names its
// arguments ("NAME [flags]").
func (inv *invocation) flags(synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("mamori "+inv.name, flag.ContinueOnError)
	fs.SetOutput(inv.stderr)
	fs.Usage = func() {
		fmt.Fprintf(inv.stderr, "usage: mamori %s %s\n\nflags:\n", inv.name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args, flags and arguments in any order ("--" ends flags),
// and checks that there are min to max arguments (max < 0: no limit).
func (inv *invocation) parse(fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errUsageShown
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	switch {
	case len(pos) < min:
		fs.Usage()
		return nil, usagef("%s: missing arguments", inv.name)
	case max >= 0 && len(pos) > max:
		fs.Usage()
		return nil, usagef("%s: unexpected arguments %q", inv.name, pos[max:])
	}
	return pos, nil
}

func (inv *invocation) getenv(name string) string { return inv.cli.Getenv(name) }

// envOr returns the environment variable name, or def when it is unset.
func (inv *invocation) envOr(name, def string) string {
	if v := inv.getenv(name); v != "" {
		return v
	}
	return def
}

// --- Output ----------------------------------------------------------------

// emit prints the API's JSON (--output json) or the text view.
func (inv *invocation) emit(g *globals, raw json.RawMessage, text func(w io.Writer)) error {
	if g.output == "json" {
		return writeJSON(inv.stdout, raw)
	}
	tw := tabwriter.NewWriter(inv.stdout, 0, 4, 2, ' ', 0)
	text(tw)
	return tw.Flush()
}

// writeJSON writes raw indented, followed by a newline.
func writeJSON(w io.Writer, raw json.RawMessage) error {
	if len(raw) == 0 {
		raw = json.RawMessage("{}")
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		return fmt.Errorf("the server's answer is not JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// marshal encodes a value the CLI composed itself (for --output json).
func marshal(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// moreNote tells on stderr that a list has more entries than shown.
func (inv *invocation) moreNote(g *globals, shown, total, offset int) {
	if g.output == "text" && offset+shown < total {
		fmt.Fprintf(inv.stderr, "(%d of %d shown; use --limit and --offset for more)\n", shown, total)
	}
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04")
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// done prints the confirmation of a change whose answer has no body.
func (inv *invocation) done(g *globals, format string, args ...any) {
	if g.output == "text" {
		fmt.Fprintf(inv.stdout, format+"\n", args...)
	}
}

// client returns the connected client of a command's global flags.
func (inv *invocation) client(g *globals) (*apiclient.Client, error) {
	s, err := inv.resolve(g, true)
	if err != nil {
		return nil, err
	}
	return s.client(g.timeout)
}
