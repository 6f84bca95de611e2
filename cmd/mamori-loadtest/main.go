// Command mamori-loadtest simulates many agents against a running server
// and reports what they cost it; it also runs the echo endpoint the
// figures are compared with. See docs/benchmarks.md.
//
//	mamori-loadtest --server HOST:PORT --api URL --data DIR --agents N \
//	    --scenario steady|reconnect-storm|wakeup-fanout|churn|echo|management \
//	    [--duration D] [--interval I] [--json FILE] ...
//	mamori-loadtest echo-server --data DIR [--listen ADDR] [--debug-listen ADDR] [--reuse-port]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/mamori/mamori/internal/flagenv"
	"github.com/mamori/mamori/internal/loadtest"
	"github.com/mamori/mamori/internal/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if len(os.Args) > 1 && os.Args[1] == "echo-server" {
		err = runEcho(ctx, os.Args[2:])
	} else {
		err = runLoad(ctx, os.Args[1:], os.Stdout)
	}
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "mamori-loadtest:", err)
		}
		os.Exit(1)
	}
}

func runLoad(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flagenv.New("mamori-loadtest")
	var cfg loadtest.Config
	scenario := fs.String("scenario", "", "steady", "steady, reconnect-storm, wakeup-fanout, churn, echo or management")
	srv := fs.String("server", "MAMORI_SERVER", "127.0.0.1:2222", "the server's agent endpoint HOST:PORT (the echo scenario enrolls through it)")
	api := fs.String("api", "MAMORI_API", "https://127.0.0.1:8443", "the server's API base URL (tokens, wake-ups, /metrics)")
	data := fs.String("data", "MAMORI_DATA", "", "the server's data directory: CA certificate and initial admin password")
	caFile := fs.String("ca-file", "", "", "the server's CA certificate, when --data is not readable from here")
	token := fs.String("token", "MAMORI_TOKEN", "", "an enrollment token to use instead of creating one (needs no admin password)")
	agents := fs.Int("agents", "", 1000, "simulated agents")
	duration := fs.Duration("duration", "", 30*time.Second, "measured time of steady, churn and echo")
	interval := fs.Duration("interval", "", 60*time.Second, "check-in interval per agent (±jitter); 0: none for the storm and fan-out, as fast as answered for steady, churn and echo")
	jitter := fs.Float64("jitter", 0.1, "check-in interval jitter (fraction)")
	inflight := fs.Int("inflight", "", 256, "check-ins outstanding across the fleet with --interval 0")
	ramp := fs.Int("ramp", "", 500, "new connections per second")
	settle := fs.Duration("settle", "", 10*time.Second, "wait after connecting before reading idle memory")
	changeRate := fs.Float64("change-rate", 0, "churn: fraction of agents changing their software list per minute (default 0.1)")
	changePk := fs.Float64("change-packages", 3, "churn: packages one change touches (below 1: a fraction of the list)")
	pkMin := fs.Int("packages-min", "", 200, "fewest packages in a synthetic inventory")
	pkMax := fs.Int("packages-max", "", 2000, "most packages in a synthetic inventory")
	restart := fs.String("restart-cmd", "", "", "reconnect-storm: shell command that restarts the server and returns once it is up")
	stormTimeout := fs.Duration("storm-timeout", "", 3*time.Minute, "reconnect-storm: agents not back by then count as given up")
	at := fs.String("at", "", "", "wakeup-fanout, reconnect-storm: when the wake-up or restart happens (RFC 3339 or Unix seconds) instead of right after connecting; for several generators sharing one fleet")
	observe := fs.BoolEnv("observe", "", false, "with --at: only measure; another generator wakes the group or restarts the servers")
	wakeTimeout := fs.Duration("wake-timeout", "", time.Minute, "wakeup-fanout: agents not replicated by then count as missed")
	manageTimeout := fs.Duration("manage-timeout", "", 5*time.Minute, "management: time for every agent to apply the policy, and again to finish the task")
	apiRate := fs.Int("api-rate", "", 10, "management: API read requests per second while measuring (latency reported); negative: none")
	verify := fs.Int("verify-configs", "", 0, "management: computers whose applied configuration is read back through the API afterwards (0: all, negative: none)")
	echo := fs.String("echo-server", "", "", "echo endpoint HOST:PORT: the echo scenario's target; with steady or churn the same loop runs against it afterwards (echo_ratio)")
	echoDebug := fs.String("echo-debug", "", "", "the echo endpoint's --debug-listen URL (http://HOST:PORT)")
	client := fs.String("client", "", "grpc", "what simulated agents open sessions with: grpc (the real agent's client, grpc-go) or lean (the same wire, one goroutine per connection: more agents per machine)")
	sources := fs.List("source-addrs", "", "local addresses to connect from, round-robin (127.0.0.2,127.0.0.3...)")
	cache := fs.String("cache", "", "", "identity cache directory (default: next to --data)")
	pprofURL := fs.String("pprof", "", "", "the server's --debug-listen URL (http://HOST:PORT): collect garbage before memory readings")
	jsonOut := fs.String("json", "", "", "also write the report as JSON to this file")
	profileDir := fs.String("profile-dir", "", "", "with --pprof (and --echo-debug): save the server's heap when idle and its CPU profile while measured here")
	selfDebug := fs.String("self-debug", "", "", "serve this load generator's own pprof profiles here (plain HTTP; a loopback address)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *selfDebug != "" {
		ln, err := net.Listen("tcp", *selfDebug)
		if err != nil {
			return fmt.Errorf("--self-debug: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		go (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
		defer ln.Close()
	}
	cfg = loadtest.Config{Scenario: *scenario, Server: *srv, API: *api, DataDir: *data, CAFile: *caFile, Token: *token,
		Password: os.Getenv("MAMORI_ADMIN_PASSWORD"), Agents: *agents, Duration: *duration, Interval: *interval, Jitter: *jitter,
		InFlight: *inflight, Ramp: *ramp, Settle: *settle, ChangeRate: *changeRate, ChangePackages: *changePk, PackagesMin: *pkMin, PackagesMax: *pkMax,
		StormTimeout: *stormTimeout, WakeTimeout: *wakeTimeout, ManageTimeout: *manageTimeout, APIRate: *apiRate, VerifyConfigs: *verify,
		EchoServer: *echo, EchoDebugURL: *echoDebug,
		SourceAddrs: *sources, Client: *client, CacheDir: *cache, PprofURL: *pprofURL, ProfileDir: *profileDir, Log: os.Stderr}
	if *at != "" {
		t, err := parseAt(*at)
		if err != nil {
			return err
		}
		cfg.At = t
	}
	cfg.Observe = *observe
	if *restart != "" {
		cfg.Restart = loadtest.RestartCommand(*restart)
	}
	// The harness shares the machine's CPUs with the server it measures:
	// collect garbage less often than by default (its heap is large and
	// long-lived, tens of thousands of connections; memory is plentiful
	// next to CPU). A reconnect storm with GOGC=50 spent half the load
	// generator's CPU in the collector. GOGC in the environment overrides.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
	rep, err := loadtest.Run(ctx, cfg)
	if rep != nil {
		rep.WriteTable(stdout)
		if *jsonOut != "" {
			b, _ := json.MarshalIndent(rep, "", "  ")
			if werr := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); werr != nil {
				return werr
			}
		}
	}
	if err != nil {
		return err
	}
	if rep.Errors > 0 || rep.GaveUp > 0 {
		return fmt.Errorf("%d errors, %d agents not back in time, %d gave up", rep.Errors, rep.NotBack, rep.GaveUp)
	}
	return nil
}

func runEcho(ctx context.Context, args []string) error {
	fs := flagenv.New("mamori-loadtest echo-server")
	data := fs.String("data", "MAMORI_DATA", "", "the server's data directory (CA and server certificate are read)")
	listen := fs.String("listen", "", ":2223", "agent address")
	debugListen := fs.String("debug-listen", "", "", "serve /metrics and pprof here (plain HTTP; use a loopback address)")
	transport := fs.String("agent-transport", "MAMORI_AGENT_TRANSPORT", "lean", "the server's --agent-transport: lean or grpc")
	reusePort := fs.BoolEnv("reuse-port", "", false, "let several echo endpoints listen on --listen (SO_REUSEPORT), as servers with --reuse-port")
	kaTime := fs.Duration("keepalive-time", "", 30e9, "the server's --keepalive-time")
	kaTimeout := fs.Duration("keepalive-timeout", "", 20e9, "the server's --keepalive-timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kaTime <= 0 || *kaTimeout <= 0 {
		return fmt.Errorf("--keepalive-time and --keepalive-timeout must be positive")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e, err := server.NewEcho(server.EchoConfig{DataDir: *data, Listen: *listen, DebugListen: *debugListen, Transport: *transport,
		ReusePort: *reusePort, KeepaliveTime: *kaTime, KeepaliveTimeout: *kaTimeout, Log: log})
	if err != nil {
		return err
	}
	defer e.Close()
	fmt.Fprintf(os.Stderr, "echo endpoint on %s\n", e.Addr())
	return e.Run(ctx)
}

// parseAt reads --at: RFC 3339 or Unix seconds.
func parseAt(v string) (time.Time, error) {
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Unix(secs, 0), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("--at %q: want RFC 3339 (2026-11-22T12:00:00Z) or Unix seconds", v)
	}
	return t, nil
}
