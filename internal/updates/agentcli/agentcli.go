// Package agentcli implements "mamori-agent engine update|rollback|status"
// for the agent binary (it links only agent-side packages).
package agentcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/updates/clikit"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/flagenv"
	"github.com/mamori/mamori/internal/updates/client"
	"github.com/mamori/mamori/internal/updates/trust"
)

const agentUsage = `usage: mamori-agent engine <command> [flags]

Commands:
  update    update the detection engine once from the given sources
  rollback  go back to the previous engine and hold automatic updates
  status    show the engine version and the last update attempts

Run "mamori-agent engine <command> -h" for the command's flags.
`

// Engine implements "mamori-agent engine ..." with --state naming the
// engine state directory itself. args are the arguments after "engine".
// Exit codes: 0 done, 1 failed, 2 usage.
func Engine(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return Options{}.Run(ctx, args, stdout, stderr)
}

var errNoState = errors.New("--state is required")

// Options adapt the commands to a binary whose --state is a larger
// directory holding the engine state (the agent's).
type Options struct {
	// StateDefault, StateEnv and StateHelp describe --state (defaults: none,
	// so --state is required; MAMORI_ENGINE_STATE; "engine state
	// directory").
	StateDefault, StateEnv, StateHelp string
	// EngineDir maps --state to the engine state directory (nil: the same).
	EngineDir func(state string) string
}

func (o Options) stateFlag(fs *flagenv.Set) func() string {
	def, env, help := o.StateDefault, o.StateEnv, o.StateHelp
	if env == "" {
		env = "MAMORI_ENGINE_STATE"
	}
	if help == "" {
		help = "engine state directory"
	}
	state := fs.String("state", env, def, help)
	return func() string {
		if *state == "" {
			return ""
		}
		if o.EngineDir != nil {
			return o.EngineDir(*state)
		}
		return *state
	}
}

// Run implements "mamori-agent engine ...".
func (o Options) Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	sub, rest := clikit.Subcommand(args)
	c := clikit.Cmd{Prog: "mamori-agent engine " + sub, Stdout: stdout, Stderr: stderr}
	switch sub {
	case "update":
		return engineUpdate(ctx, c, o, rest)
	case "rollback":
		return engineRollback(c, o, rest)
	case "status":
		return engineStatus(c, o, rest)
	case "", "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, agentUsage)
		if sub == "" {
			return clikit.ExitUsage
		}
		return clikit.ExitOK
	}
	c.Prog = "mamori-agent engine"
	return c.Usage(fmt.Errorf("unknown command %q", sub))
}

const updateHelp = `usage: mamori-agent engine update --source URL|DIR [--source ...] [flags]

Updates the engine once from the first source that works (mirror URLs,
folders such as a USB stick, or bundle .tar files, in order). Everything is
verified (signatures, hashes, never backwards); on failure the installed
engine is unchanged and the exit code is 1. Prints from, to,
bytes_downloaded, requests and seconds (--json: one object). A manual update
ends a rollback hold.

`

func engineUpdate(ctx context.Context, c clikit.Cmd, o Options, args []string) int {
	fs := clikit.NewFlags(c.Prog)
	sources := fs.List("source", "MAMORI_UPDATE_SOURCES", "update source: URL, offline:URL (a mirror fed by bundles), folder or .tar (repeatable, in order)")
	stateDir := o.stateFlag(fs)
	root := fs.String("root", "MAMORI_UPDATE_ROOT", "", "trusted root.json (needed once; later the state's is used)")
	rootSHA := fs.String("root-sha256", "MAMORI_UPDATE_ROOT_SHA256", "", "or: SHA-256 of the repository's 1.root.json")
	proxy := fs.String("proxy", "MAMORI_UPDATE_PROXY", "", `HTTP proxy ("" from the environment, "none")`)
	offline := fs.Duration("offline-max-age", "MAMORI_OFFLINE_MAX_AGE", client.DefaultOfflineMaxAge, "accept folder/bundle metadata expired up to this long ago (0: not at all)")
	keep := fs.Int("keep", "MAMORI_ENGINE_KEEP", client.DefaultKeepVersions, "engine versions kept on disk (for rollback)")
	timeout := fs.Duration("timeout", "MAMORI_UPDATE_TIMEOUT", 30*time.Minute, "give up after this long")
	dry := fs.Bool("dry-run", false, "download and verify what the update needs, install nothing")
	asJSON := fs.Bool("json", false, "print JSON")
	verbose := fs.Bool("v", false, "log progress to stderr")
	if done, code := c.Parse(fs, args, updateHelp); done {
		return code
	}
	switch {
	case stateDir() == "":
		return c.Usage(errNoState)
	case len(*sources) == 0:
		return c.Usage(errors.New("--source is required"))
	case *offline < 0:
		return c.Usage(errors.New("--offline-max-age must not be negative"))
	case *keep < 1 || *keep > 100:
		return c.Usage(errors.New("--keep must be between 1 and 100"))
	case *timeout <= 0:
		return c.Usage(errors.New("--timeout must be positive"))
	}
	rb, err := clikit.ReadRoot(*root)
	if err != nil {
		return c.Usage(err)
	}
	level := slog.LevelError
	if *verbose {
		level = slog.LevelDebug
	}
	cfg := client.Config{StateDir: stateDir(), Sources: *sources, TrustedRoot: rb, RootSHA256: *rootSHA, Proxy: *proxy,
		OfflineMaxAge: *offline, KeepVersions: *keep, Logger: slog.New(slog.NewTextHandler(c.Stderr, &slog.HandlerOptions{Level: level}))}
	if *offline == 0 {
		cfg.SetStrictOffline()
	}
	d, err := client.New(cfg)
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	if *dry {
		v, _ := d.Current()
		cfg.DryRunFrom = v
		if d, err = client.New(cfg); err != nil {
			return c.FailJSON(*asJSON, err, nil)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := d.Update(ctx, client.UpdateOptions{Force: true})
	if err != nil {
		extra := map[string]any{"from": res.From, "to": res.From, "bytes_downloaded": res.BytesDownloaded, "requests": res.Requests, "seconds": res.Seconds}
		if k := trust.KindOf(err); k != "" {
			extra["kind"] = string(k)
		}
		return c.FailJSON(*asJSON, err, extra)
	}
	if *asJSON {
		c.JSON(res)
		return clikit.ExitOK
	}
	switch {
	case res.Method == "none" && res.Note != "":
		fmt.Fprintf(c.Stdout, "engine %d kept: %s\n", res.From, res.Note)
	case res.Method == "none":
		fmt.Fprintf(c.Stdout, "engine %d is up to date\n", res.From)
	default:
		how := res.Method
		if res.Method == "delta" {
			how = fmt.Sprintf("%d delta(s)", res.Deltas)
		}
		fmt.Fprintf(c.Stdout, "engine updated from %d to %d by %s from %s\n", res.From, res.To, how, res.Source)
	}
	fmt.Fprintf(c.Stdout, "from=%d to=%d bytes_downloaded=%d requests=%d seconds=%.3f\n", res.From, res.To, res.BytesDownloaded, res.Requests, res.Seconds)
	return clikit.ExitOK
}

func engineRollback(c clikit.Cmd, o Options, args []string) int {
	fs := clikit.NewFlags(c.Prog)
	stateDir := o.stateFlag(fs)
	hold := fs.Duration("hold", "MAMORI_ENGINE_ROLLBACK_HOLD", client.DefaultRollbackHold, "hold automatic updates this long")
	asJSON := fs.Bool("json", false, "print JSON")
	help := "usage: mamori-agent engine rollback [--state DIR] [--hold 24h] [--json]\n\nMakes the previous kept engine current and holds automatic updates for --hold\n(a manual \"engine update\" ends the hold).\n\n"
	if done, code := c.Parse(fs, args, help); done {
		return code
	}
	if *hold <= 0 {
		return c.Usage(errors.New("--hold must be positive"))
	}
	if stateDir() == "" {
		return c.Usage(errNoState)
	}
	d, err := client.New(client.Config{StateDir: stateDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	res, err := d.Rollback(*hold)
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	if *asJSON {
		c.JSON(res)
		return clikit.ExitOK
	}
	fmt.Fprintf(c.Stdout, "engine rolled back from %d to %d; automatic updates held until %s\n", res.From, res.To, res.HoldUntil.Format(time.RFC3339))
	return clikit.ExitOK
}

func engineStatus(c clikit.Cmd, o Options, args []string) int {
	fs := clikit.NewFlags(c.Prog)
	stateDir := o.stateFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if done, code := c.Parse(fs, args, "usage: mamori-agent engine status [--state DIR] [--json]\n\n"); done {
		return code
	}
	if stateDir() == "" {
		return c.Usage(errNoState)
	}
	st, err := client.ReadStatus(stateDir(), time.Now())
	if err != nil {
		if errcode.Is(err, errcode.NotFound) && !*asJSON {
			return c.Fail(err)
		}
		return c.FailJSON(*asJSON, err, nil)
	}
	if *asJSON {
		c.JSON(st)
		return clikit.ExitOK
	}
	eng := fmt.Sprintf("%d", st.EngineVersion)
	if st.Builtin {
		eng += " (built-in)"
	}
	var inst []string
	for _, v := range st.Installed {
		inst = append(inst, fmt.Sprint(v))
	}
	fmt.Fprintf(c.Stdout, "engine %s, state %s\nkept: %s\n", eng, st.State, strings.Join(inst, ", "))
	line := func(label string, t time.Time) {
		if !t.IsZero() {
			fmt.Fprintf(c.Stdout, "%s: %s\n", label, t.Local().Format(time.RFC3339))
		}
	}
	line("last attempt", st.LastAttempt)
	line("last success", st.LastSuccess)
	line("next attempt", st.NextAttempt)
	line("held until", st.HeldUntil)
	if st.LastError != "" {
		fmt.Fprintf(c.Stdout, "last error (%d in a row): %s\n", st.ConsecutiveFailures, st.LastError)
	}
	return clikit.ExitOK
}
