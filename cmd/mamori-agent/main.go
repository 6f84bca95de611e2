// Command mamori-agent is the endpoint agent.
//
//	mamori-agent run --state DIR [--server HOST:PORT,... --token T --ca-fingerprint sha256:HEX] [--instance NAME] [--proxy URL]
//	mamori-agent version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/mamori/mamori/internal/agent"
	"github.com/mamori/mamori/internal/agent/scancmd"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/flagenv"
	"github.com/mamori/mamori/internal/logging"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

const usage = `usage: mamori-agent <command> [flags]

commands:
  run          enroll (first run) and keep the computer connected to its server
  scan         scan files and directories (detections go to the server)
  quarantine   list, restore or delete quarantined files
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
	level := fs.String("log-level", "MAMORI_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	format := fs.String("log-format", "MAMORI_LOG_FORMAT", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errcode.New(errcode.Invalid, "%v", err)
	}
	log, err := logging.New(stderr, *level, *format)
	if err != nil {
		return errcode.New(errcode.Invalid, "%v", err)
	}
	a, err := agent.New(agent.Config{
		StateDir: *state, Servers: *servers, Token: *token, CAFingerprint: *pin, Instance: *instance,
		Proxy: *proxy, Interval: *interval, Version: version, Log: log,
	})
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Run(ctx)
}
