// Command mamori-agent is the endpoint agent.
//
//	mamori-agent run --state DIR [--server HOST:PORT,... --token T --ca-fingerprint sha256:HEX] [--instance NAME] [--proxy URL]
//	mamori-agent config show|set KEY VALUE|unset KEY [--state DIR]
//	mamori-agent version
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"text/tabwriter"

	"github.com/mamori/mamori/internal/agent"
	"github.com/mamori/mamori/internal/agent/agentcfg"
	"github.com/mamori/mamori/internal/agent/scancmd"
	"github.com/mamori/mamori/internal/agent/taskrun"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/flagenv"
	"github.com/mamori/mamori/internal/logging"
	"github.com/mamori/mamori/internal/updates/agentcli"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

const usage = `usage: mamori-agent <command> [flags]

commands:
  run          enroll (first run) and keep the computer connected to its server
  scan         scan files and directories (detections go to the server)
  quarantine   list, restore or delete quarantined files
  config       show the configuration in effect, or set local values
  engine       update the detection engine now, roll it back, or show its status
  version      print the version

Run "mamori-agent <command> -h" for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = runAgent(ctx, args[1:], stderr)
	case "scan":
		return scancmd.Scan(ctx, args[1:], stateDefault(), stdout, stderr)
	case "quarantine":
		return scancmd.Quarantine(args[1:], stateDefault(), stdout, stderr)
	case "config":
		err = configCmd(args[1:], stdout, stderr)
	case "engine":
		return agentcli.Options{StateDefault: defaultState(), StateEnv: "MAMORI_AGENT_STATE",
			StateHelp: "agent state directory (the engine and its update state are in STATE/engine)",
			EngineDir: agent.EngineStateDir}.Run(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "mamori-agent", version, runtime.GOOS+"/"+runtime.GOARCH)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "mamori-agent: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errcode.Of(err) == errcode.Internal:
		fmt.Fprintln(stderr, "mamori-agent:", err)
	default:
		fmt.Fprintln(stderr, "mamori-agent:", errcode.Message(err))
	}
	if errcode.Of(err) == errcode.Invalid {
		return 2
	}
	return 1
}

func defaultState() string {
	switch runtime.GOOS {
	case "windows":
		return `C:\ProgramData\Mamori\Agent`
	case "darwin":
		return "/Library/Application Support/Mamori/Agent"
	}
	return "/var/lib/mamori-agent"
}

// stateDefault is the state directory when --state is not given.
func stateDefault() string {
	if v := os.Getenv("MAMORI_AGENT_STATE"); v != "" {
		return v
	}
	return defaultState()
}

func runAgent(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flagenv.New("mamori-agent run")
	fs.SetOutput(stderr)
	state := fs.String("state", "MAMORI_AGENT_STATE", defaultState(), "state directory: identity and outbox")
	servers := fs.List("server", "MAMORI_SERVER", "server HOST:PORT, tried in order (repeatable or comma-separated; needed to enroll)")
	token := fs.String("token", "MAMORI_ENROLL_TOKEN", "", "enrollment token (first run only)")
	pin := fs.String("ca-fingerprint", "MAMORI_CA_FINGERPRINT", "", "server CA fingerprint sha256:HEX (first run only)")
	instance := fs.String("instance", "MAMORI_AGENT_INSTANCE", "", "instance name for several agents on one host; also names the computer")
	proxy := fs.String("proxy", "MAMORI_PROXY", "", "http:// CONNECT proxy URL (default: HTTPS_PROXY)")
	interval := fs.Duration("interval", "MAMORI_CHECK_IN_INTERVAL", 60e9, "time between check-ins (±10% jitter)")
	level := fs.String("log-level", "MAMORI_LOG_LEVEL", "info", "log level: debug, info, warn, error (a policy's agent.log_level wins)")
	powerCmd := fs.String("power-command", "MAMORI_POWER_COMMAND", "", "command run for restart/shutdown tasks with ACTION SECONDS REASON (default: the system's shutdown)")
	messageCmd := fs.String("message-command", "MAMORI_MESSAGE_COMMAND", "", "command run for display-message tasks with LEVEL TITLE MESSAGE (messages are always logged and kept in STATE/messages.jsonl)")
	format := fs.String("log-format", "MAMORI_LOG_FORMAT", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errcode.New(errcode.Invalid, "%v", err)
	}
	recent := logging.NewRing(recentLogBytes) // for diagnostics bundles
	log, levelVar, err := logging.NewVar(io.MultiWriter(stderr, recent), *level, *format)
	if err != nil {
		return errcode.New(errcode.Invalid, "%v", err)
	}
	runner := &taskrun.Runner{Log: log, Power: taskrun.SystemPower{Command: *powerCmd},
		Notify: taskrun.FileNotifier{StateDir: *state, Command: *messageCmd, Log: log}}
	a, err := agent.New(agent.Config{
		StateDir: *state, Servers: *servers, Token: *token, CAFingerprint: *pin, Instance: *instance,
		Proxy: *proxy, Interval: *interval, Version: version, Log: log, LogLevel: levelVar, RecentLog: recent.Bytes, Tasks: runner,
	})
	if err != nil {
		return err
	}
	defer a.Close()
	err = a.Run(ctx)
	if errors.Is(err, agent.ErrUnmanaged) {
		fmt.Fprintln(stderr, "mamori-agent:", err)
		return nil
	}
	return err
}

// recentLogBytes is how much of its log the agent keeps for diagnostics.
const recentLogBytes = 512 << 10

// configCmd: mamori-agent config show|set KEY VALUE|unset KEY.
func configCmd(args []string, stdout, stderr io.Writer) error {
	fs := flagenv.New("mamori-agent config")
	fs.SetOutput(stderr)
	state := fs.String("state", "MAMORI_AGENT_STATE", defaultState(), "state directory")
	asJSON := fs.Bool("json", false, "JSON output (show)")
	if err := fs.FlagSet.Parse(args); err != nil { // positional arguments follow
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, configUsage)
			return err
		}
		return errcode.New(errcode.Invalid, "%v", err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return errcode.New(errcode.Invalid, "config needs a subcommand: show, set KEY VALUE or unset KEY")
	}
	// Flags may also follow the subcommand and its arguments:
	// config set KEY VALUE --state DIR.
	var pos []string
	for len(rest) > 0 {
		pos = append(pos, rest[0])
		if err := fs.FlagSet.Parse(rest[1:]); err != nil {
			return errcode.New(errcode.Invalid, "%v", err)
		}
		rest = fs.Args()
	}
	rest = pos
	switch {
	case rest[0] == "show" && len(rest) == 1:
		m, err := agentcfg.Open(*state, slog.New(slog.DiscardHandler))
		if err != nil {
			return err
		}
		eff := m.Effective()
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(map[string]any{"version": m.Version(), "settings": eff})
		}
		v := m.Version()
		if v == "" {
			v = "none (defaults; the server has not configured this agent)"
		}
		fmt.Fprintf(stdout, "configuration version: %s\n", v)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SETTING\tVALUE\tSOURCE")
		for _, e := range eff {
			val, _ := json.Marshal(e.Value)
			fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Key, val, e.Source)
		}
		return tw.Flush()
	case rest[0] == "set" && len(rest) == 3:
		if err := agentcfg.SetLocal(*state, rest[1], &rest[2]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s set locally; the running agent applies it within seconds\n", rest[1])
		return nil
	case rest[0] == "unset" && len(rest) == 2:
		if err := agentcfg.SetLocal(*state, rest[1], nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s no longer set locally\n", rest[1])
		return nil
	}
	return errcode.New(errcode.Invalid, "usage: mamori-agent config show | set KEY VALUE | unset KEY")
}

const configUsage = `usage: mamori-agent config show|set KEY VALUE|unset KEY [--state DIR] [--json]

Shows every setting in effect with its source (forced by a policy, set
locally, applied by a policy, or the default), or sets a local value.
Precedence: forced > local > policy > default; forced settings cannot be set
locally. Lists are comma-separated: set protection.scan_exclusions '/mnt/*,/media/*'
or a JSON array when items hold commas:
set protection.scheduled_scans '["0 3 * * 1 /home,/srv"]'
`
