package main

import (
	"context"
	"io"
	"os"

	"github.com/mamori/mamori/internal/flagenv"
	"github.com/mamori/mamori/internal/logging"
	"github.com/mamori/mamori/internal/server"
)

func runServer(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flagenv.New("mamori server")
	fs.SetOutput(stderr)
	var cfg server.Config
	data := fs.String("data", "MAMORI_DATA", "", "data directory: store, CA, server certificate (required)")
	agentListen := fs.String("agent-listen", "MAMORI_AGENT_LISTEN", ":2222", "agent mTLS listen address")
	apiListen := fs.String("api-listen", "MAMORI_API_LISTEN", ":8443", "HTTPS API listen address")
	hosts := fs.List("host", "MAMORI_HOSTS", "extra DNS name or IP for the server certificate (repeatable)")
	apiCert := fs.String("api-cert", "MAMORI_API_CERT", "", "PEM certificate for the API listener instead of the internal CA's")
	apiKey := fs.String("api-key", "MAMORI_API_KEY", "", "PEM key for --api-cert")
	interval := fs.Duration("check-in-interval", "MAMORI_CHECK_IN_INTERVAL", 0, "check-in interval pushed to agents; 0 keeps theirs (60s by default)")
	kaTime := fs.Duration("keepalive-time", "MAMORI_KEEPALIVE_TIME", 15e9, "idle time before the server pings an agent connection")
	kaTimeout := fs.Duration("keepalive-timeout", "MAMORI_KEEPALIVE_TIMEOUT", 10e9, "time to wait for a ping answer before dropping the connection")
	warn := fs.Duration("offline-warning", "MAMORI_OFFLINE_WARNING", 48*3600e9, "warn about computers not connected for this long")
	crit := fs.Duration("offline-critical", "MAMORI_OFFLINE_CRITICAL", 336*3600e9, "critical level for computers not connected for this long")
	wakeRate := fs.Int("wakeup-rate", "MAMORI_WAKEUP_RATE", 10000, "bulk wake-ups pushed per second")
	sync := fs.String("sqlite-synchronous", "MAMORI_SQLITE_SYNCHRONOUS", "FULL", "SQLite synchronous mode: FULL (survives power loss) or NORMAL")
	debug := fs.String("debug-listen", "MAMORI_DEBUG_LISTEN", "", "serve pprof profiles here (no authentication; use a loopback address)")
	level := fs.String("log-level", "MAMORI_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	format := fs.String("log-format", "MAMORI_LOG_FORMAT", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	log, err := logging.New(stderr, *level, *format)
	if err != nil {
		return usageError{err}
	}
	cfg = server.Config{
		DataDir: *data, AgentListen: *agentListen, APIListen: *apiListen, Hosts: *hosts,
		APICertFile: *apiCert, APIKeyFile: *apiKey, AdminPassword: os.Getenv("MAMORI_ADMIN_PASSWORD"),
		CheckInInterval: *interval, KeepaliveTime: *kaTime, KeepaliveTimeout: *kaTimeout,
		OfflineWarning: *warn, OfflineCritical: *crit, SQLiteSynchronous: *sync, DebugListen: *debug, WakeupRate: *wakeRate, Log: log,
	}
	s, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Run(ctx)
}
