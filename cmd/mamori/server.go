package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	rtdebug "runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/flagenv"
	"github.com/mamori/mamori/internal/logging"
	"github.com/mamori/mamori/internal/server"
	"github.com/mamori/mamori/internal/updates/clikit"
)

func runServer(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flagenv.New("mamori server")
	fs.SetOutput(stderr)
	var cfg server.Config
	data := fs.String("data", "MAMORI_DATA", "", "data directory: store, CA, server certificate (required)")
	database := fs.String("database", "MAMORI_DATABASE", "", "PostgreSQL URL for the store, postgres://user:pass@host/db?sslmode=verify-full (empty: SQLite in --data)")
	reusePort := fs.BoolEnv("reuse-port", "MAMORI_REUSE_PORT", false, "let several servers sharing a --database listen on the same addresses (SO_REUSEPORT; Linux, BSD, macOS)")
	agentListen := fs.String("agent-listen", "MAMORI_AGENT_LISTEN", ":2222", "agent mTLS listen address")
	apiListen := fs.String("api-listen", "MAMORI_API_LISTEN", ":8443", "HTTPS API listen address")
	hosts := fs.List("host", "MAMORI_HOSTS", "extra DNS name or IP for the server certificate (repeatable)")
	apiCert := fs.String("api-cert", "MAMORI_API_CERT", "", "PEM certificate for the API listener instead of the internal CA's")
	apiKey := fs.String("api-key", "MAMORI_API_KEY", "", "PEM key for --api-cert")
	interval := fs.Duration("check-in-interval", "MAMORI_CHECK_IN_INTERVAL", 0, "check-in interval pushed to agents; 0 keeps theirs (60s by default)")
	kaTime := fs.Duration("keepalive-time", "MAMORI_KEEPALIVE_TIME", 30e9, "idle time before the server pings an agent connection")
	kaTimeout := fs.Duration("keepalive-timeout", "MAMORI_KEEPALIVE_TIMEOUT", 20e9, "time to wait for a ping answer before dropping the connection")
	warn := fs.Duration("offline-warning", "MAMORI_OFFLINE_WARNING", 48*3600e9, "warn about computers not connected for this long")
	crit := fs.Duration("offline-critical", "MAMORI_OFFLINE_CRITICAL", 336*3600e9, "critical level for computers not connected for this long")
	wakeRate := fs.Int("wakeup-rate", "MAMORI_WAKEUP_RATE", 20000, "bulk wake-ups pushed per second (100,000 agents in 5 s)")
	transport := fs.String("agent-transport", "MAMORI_AGENT_TRANSPORT", "lean", "gRPC server of the agent listener: lean (one goroutine per connection) or grpc (grpc-go)")
	hsSlots := fs.Int("handshake-slots", "MAMORI_HANDSHAKE_SLOTS", 128, "agent TLS handshakes the server works on at once (per pool: full, resumed)")
	hsQueue := fs.Int("handshake-queue", "MAMORI_HANDSHAKE_QUEUE", 10000, "agent connections in their TLS handshake (waiting for a slot or for the agent); beyond it new ones are refused")
	hsTimeout := fs.Duration("handshake-timeout", "MAMORI_HANDSHAKE_TIMEOUT", 30e9, "time from accepting an agent connection to the end of its TLS handshake")
	setups := fs.Int("max-session-setups", "MAMORI_MAX_SESSION_SETUPS", 1024, "agent sessions set up at once; beyond it agents are told to retry later")
	returnAfter := fs.Duration("return-after", "MAMORI_RETURN_AFTER", 5e9, "when the server stops on purpose, the earliest time its agents are told to come back (cover a restart)")
	returnRate := fs.Int("return-rate", "MAMORI_RETURN_RATE", 2000, "when the server stops on purpose, agents told to come back per second after --return-after (100,000 over 50 s)")
	memLimit := fs.String("memory-limit", "MAMORI_MEMORY_LIMIT", "", "soft memory limit of the Go runtime, e.g. 3GiB (see docs/benchmarks.md); default GOMEMLIMIT or none")
	sync := fs.String("sqlite-synchronous", "MAMORI_SQLITE_SYNCHRONOUS", "FULL", "SQLite synchronous mode: FULL (survives power loss) or NORMAL")
	debug := fs.String("debug-listen", "MAMORI_DEBUG_LISTEN", "", "serve pprof profiles and /metrics here (no authentication; use a loopback address)")
	metricsListen := fs.String("metrics-listen", "MAMORI_METRICS_LISTEN", "", "also serve /metrics here without credentials (plain HTTP; a private interface or loopback); the API's /metrics needs an API token")
	pushRate := fs.Int("config-push-rate", "MAMORI_CONFIG_PUSH_RATE", 2000, "configuration pushes per second to agents after a policy change")
	taskRate := fs.Int("task-delivery-rate", "MAMORI_TASK_DELIVERY_RATE", 2000, "task runs handed to agents per second")
	upstream := fs.String("updates-upstream", "MAMORI_UPDATES_UPSTREAM", "", "built-in update mirror: repository or mirror URL, folder or bundle .tar to sync from (empty: no mirror)")
	rootSHA := fs.String("updates-root-sha256", "MAMORI_UPDATES_ROOT_SHA256", "", "SHA-256 of the update repository's 1.root.json (first sync)")
	rootFile := fs.String("updates-root", "MAMORI_UPDATES_ROOT", "", "or: the update repository's trusted root.json (first sync)")
	updatesURL := fs.String("updates-url", "MAMORI_UPDATES_URL", "", "the mirror's address as agents reach it (default https://<server host>:<API port>/updates)")
	updatesSync := fs.Duration("updates-sync-interval", "MAMORI_UPDATES_SYNC_INTERVAL", 5*60e9, "time between mirror syncs")
	retentionEvery := fs.Duration("retention-interval", "MAMORI_RETENTION_INTERVAL", 60*60e9, "time between retention passes, which delete what outlived `mamori settings retention`")
	updatesRate := fs.String("updates-rate", "MAMORI_UPDATES_RATE", "", "cap on bytes/s sent by the mirror to all agents, e.g. 50M (MiB/s; empty: none)")
	updatesClientRate := fs.String("updates-client-rate", "MAMORI_UPDATES_CLIENT_RATE", "", "cap on bytes/s sent by the mirror to one agent, e.g. 2M (empty: none)")
	level := fs.String("log-level", "MAMORI_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	format := fs.String("log-format", "MAMORI_LOG_FORMAT", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	log, err := logging.New(stderr, *level, *format)
	if err != nil {
		return usageError{err}
	}
	if *memLimit != "" {
		n, err := parseBytes(*memLimit)
		if err != nil {
			return usageError{fmt.Errorf("--memory-limit: %w", err)}
		}
		rtdebug.SetMemoryLimit(n)
	}
	rates := make([]int64, 2)
	for i, f := range []struct{ name, v string }{{"--updates-rate", *updatesRate}, {"--updates-client-rate", *updatesClientRate}} {
		if f.v == "" {
			continue
		}
		n, err := clikit.ParseSize(f.v) // as mamori mirror serve --rate
		if err != nil {
			return usageError{fmt.Errorf("%s: %w", f.name, err)}
		}
		rates[i] = n
	}
	if *updatesSync < time.Second {
		return usageError{fmt.Errorf("--updates-sync-interval must be at least 1s")}
	}
	if *retentionEvery < time.Second {
		return usageError{fmt.Errorf("--retention-interval must be at least 1s")}
	}
	if *returnRate <= 0 || *returnAfter < 0 || *returnAfter > time.Hour {
		return usageError{fmt.Errorf("--return-rate must be positive and --return-after between 0 and 1h")}
	}
	if *pushRate <= 0 || *taskRate <= 0 {
		return usageError{fmt.Errorf("--config-push-rate and --task-delivery-rate must be positive")}
	}
	cfg = server.Config{
		DataDir: *data, Database: *database, ReusePort: *reusePort, AgentListen: *agentListen, APIListen: *apiListen, Hosts: *hosts,
		APICertFile: *apiCert, APIKeyFile: *apiKey, AdminPassword: os.Getenv("MAMORI_ADMIN_PASSWORD"),
		CheckInInterval: *interval, KeepaliveTime: *kaTime, KeepaliveTimeout: *kaTimeout,
		OfflineWarning: *warn, OfflineCritical: *crit, SQLiteSynchronous: *sync, DebugListen: *debug, MetricsListen: *metricsListen, WakeupRate: *wakeRate, Log: log,
		AgentTransport: *transport, HandshakeSlots: *hsSlots, HandshakeQueue: *hsQueue, HandshakeTimeout: *hsTimeout, MaxSessionSetups: *setups,
		ReturnAfter: *returnAfter, ReturnRate: *returnRate,
		ConfigPushRate: *pushRate, TaskDeliveryPerSecond: *taskRate,
		UpdatesUpstream: *upstream, UpdatesRootSHA256: *rootSHA, UpdatesRootFile: *rootFile, UpdatesURL: *updatesURL,
		UpdatesSyncInterval: *updatesSync, UpdatesRate: rates[0], UpdatesClientRate: rates[1], RetentionInterval: *retentionEvery,
	}
	s, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Run(ctx)
}

// parseBytes reads a size like 3GiB, 512MiB, 2GB or a plain number of bytes.
func parseBytes(v string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	num, mult := strings.TrimSpace(v), 1.0
	for _, u := range units {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 || f*mult > math.MaxInt64 {
		return 0, fmt.Errorf("%q is not a size like 3GiB or 512MiB", v)
	}
	return int64(f * mult), nil
}
