// Package server is the management server: it owns the data directory (store,
// CA), listens for agents (mTLS gRPC, one persistent Session stream each) and
// for administrators (HTTPS REST API), and keeps presence true.
//
// Lifecycle: New (opens the store, applies migrations, loads or creates the
// CA, server certificate and first admin, binds both listeners) → Run (serves
// until its context ends) → Close (releases everything; safe to call once
// after New succeeded, whether or not Run ran).
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/enrollment"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/httpapi"
	"github.com/mamori/mamori/internal/password"
	"github.com/mamori/mamori/internal/pki"
	"github.com/mamori/mamori/internal/store"
)

// Config configures a server. Zero values take the documented defaults.
type Config struct {
	// DataDir holds the store, the CA and the server certificate. Required.
	DataDir string
	// AgentListen is the agents' mTLS gRPC address; default ":2222".
	AgentListen string
	// APIListen is the HTTPS API address; default ":8443".
	APIListen string
	// Hosts are extra names and addresses for the server certificate
	// (localhost, 127.0.0.1, ::1 and the host name are always included).
	Hosts []string
	// APICertFile/APIKeyFile replace the internal-CA certificate on the API
	// listener (for a certificate browsers already trust).
	APICertFile, APIKeyFile string
	// AdminPassword sets the first admin's password on first start
	// (MAMORI_ADMIN_PASSWORD); empty generates one and writes it to
	// DataDir/initial-admin-password.
	AdminPassword string
	// CheckInInterval is asked of agents in Welcome; 0 lets agents keep
	// theirs (default 60s on the agent).
	CheckInInterval time.Duration
	// KeepaliveTime is the idle time after which the server pings an agent;
	// default 15s. KeepaliveTimeout is how long it waits for the answer
	// before declaring the connection dead; default 10s. A silently dead
	// network is detected within their sum plus one presence flush.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// PresenceFlush is how often status changes are written; default 1s.
	PresenceFlush time.Duration
	// LastSeenFlush is how often last_seen of connected agents is written;
	// default 10s.
	LastSeenFlush time.Duration
	// OfflineWarning/OfflineCritical: "not connected for" warning levels;
	// defaults 48h and 336h (14 days).
	OfflineWarning, OfflineCritical time.Duration
	// WakeupRate paces bulk wake-ups (computers per second); default 10000.
	WakeupRate int
	// SQLiteSynchronous: FULL (default) or NORMAL.
	SQLiteSynchronous string
	// DebugListen, if set, serves Go's pprof profiles (plain HTTP, no
	// authentication: bind it to loopback). Empty disables it.
	DebugListen string
	// Log is the logger; default slog.Default().
	Log *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		return errcode.New(errcode.Invalid, "a data directory is required (--data)")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.AgentListen == "" {
		c.AgentListen = ":2222"
	}
	if c.APIListen == "" {
		c.APIListen = ":8443"
	}
	def(&c.KeepaliveTime, 15*time.Second)
	def(&c.KeepaliveTimeout, 10*time.Second)
	def(&c.PresenceFlush, time.Second)
	def(&c.LastSeenFlush, 10*time.Second)
	def(&c.OfflineWarning, 48*time.Hour)
	def(&c.OfflineCritical, 14*24*time.Hour)
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.WakeupRate == 0 {
		c.WakeupRate = 10000
	}
	if c.WakeupRate < 0 {
		return errcode.New(errcode.Invalid, "wake-up rate must be positive")
	}
	if c.CheckInInterval < 0 || (c.CheckInInterval > 0 && c.CheckInInterval < time.Second) {
		return errcode.New(errcode.Invalid, "check-in interval must be 0 or at least 1s")
	}
	if c.OfflineCritical < c.OfflineWarning {
		return errcode.New(errcode.Invalid, "offline critical threshold must not be below the warning threshold")
	}
	return nil
}

// Server is a running management server.
type Server struct {
	cfg      Config
	log      *slog.Logger
	db       *store.DB
	ca       *pki.CA
	metrics  *metrics
	hub      *Hub
	grpc     *grpc.Server
	http     *http.Server
	agentLn  net.Listener
	apiLn    net.Listener
	debugLn  net.Listener
	conns    sync.Map // accepted agent connections by remote address
	svc      *agentService
	closeMu  sync.Once
	closeErr error
}

// InitialPasswordFile is where the generated first admin password goes.
const InitialPasswordFile = "initial-admin-password"

// MinAdminPasswordLen applies to MAMORI_ADMIN_PASSWORD.
const MinAdminPasswordLen = 12

// New prepares a server; see the package lifecycle.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Log, metrics: newMetrics()}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	var err error
	s.db, err = store.OpenSQLite(ctx, cfg.DataDir, store.Options{Observer: s.metrics.observeStore, Synchronous: cfg.SQLiteSynchronous})
	if err != nil {
		return nil, err
	}
	s.log.Info("store open", "path", filepath.Join(cfg.DataDir, store.FileName), "schema_version", s.db.SchemaVersion())
	ca, created, err := pki.LoadOrCreateCA(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("certificate authority: %w", err)
	}
	s.ca = ca
	if created {
		s.log.Info("created internal CA", "fingerprint", ca.Fingerprint())
	}
	hosts := append([]string{"localhost", "127.0.0.1", "::1"}, cfg.Hosts...)
	if hn, err := os.Hostname(); err == nil {
		hosts = append(hosts, hn)
	}
	serverCert, err := ca.ServerCertificate(cfg.DataDir, hosts)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	if err := s.bootstrapAdmin(ctx); err != nil {
		return nil, err
	}
	if n, err := s.db.MarkAllOffline(ctx); err != nil {
		return nil, err
	} else if n > 0 {
		s.log.Info("marked computers offline after restart", "computers", n)
	}

	s.hub = newHub(s.db, s.log, s.metrics, cfg.PresenceFlush, cfg.LastSeenFlush, cfg.WakeupRate)
	enroll := &enrollment.Service{Store: s.db, CA: ca}
	s.svc = &agentService{store: s.db, enroll: enroll, hub: s.hub, metrics: s.metrics, log: s.log, interval: cfg.CheckInInterval, now: time.Now,
		drop: func(remote string) { closeConn(&s.conns, remote) }}

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	agentTLS := &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.VerifyClientCertIfGiven, // Enroll is the one call made without a certificate
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS13,
	}
	s.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(agentTLS)),
		// Memory per idle connection is what limits agents per server; see
		// docs/architecture.md ("Agent wire").
		grpc.ReadBufferSize(0),
		grpc.WriteBufferSize(4<<10),
		grpc.SharedWriteBuffer(true),
		grpc.InitialWindowSize(64<<10),
		grpc.InitialConnWindowSize(64<<10),
		grpc.MaxRecvMsgSize(16<<20),
		grpc.MaxConcurrentStreams(16),
		grpc.MaxHeaderListSize(16<<10),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.KeepaliveTime, Timeout: cfg.KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	agentproto.RegisterAgentServer(s.grpc, s.svc)

	apiCert := serverCert
	if cfg.APICertFile != "" || cfg.APIKeyFile != "" {
		apiCert, err = tls.LoadX509KeyPair(cfg.APICertFile, cfg.APIKeyFile)
		if err != nil {
			return nil, fmt.Errorf("API certificate: %w", err)
		}
	}
	sealer, err := auth.LoadOrCreateSealer(filepath.Join(cfg.DataDir, "secret.key"))
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	api := httpapi.New(httpapi.Config{
		Store:           s.db,
		Auth:            &auth.Service{Store: s.db, Sealer: sealer},
		Enrollment:      enroll,
		Presence:        s.hub,
		CAFingerprint:   ca.Fingerprint(),
		CAPEM:           pki.EncodeCert(ca.Cert.Raw),
		Metrics:         promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}),
		Log:             s.log,
		OfflineWarning:  cfg.OfflineWarning,
		OfflineCritical: cfg.OfflineCritical,
	})
	s.http = &http.Server{
		Handler:           api,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{apiCert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}

	if s.agentLn, err = net.Listen("tcp", cfg.AgentListen); err != nil {
		return nil, fmt.Errorf("agent listener: %w", err)
	}
	if s.apiLn, err = net.Listen("tcp", cfg.APIListen); err != nil {
		return nil, fmt.Errorf("API listener: %w", err)
	}
	if cfg.DebugListen != "" {
		if s.debugLn, err = net.Listen("tcp", cfg.DebugListen); err != nil {
			return nil, fmt.Errorf("debug listener: %w", err)
		}
	}
	ok = true
	return s, nil
}

func (s *Server) bootstrapAdmin(ctx context.Context) error {
	n, err := s.db.CountUsers(ctx)
	if err != nil || n > 0 {
		return err
	}
	pw := s.cfg.AdminPassword
	generated := pw == ""
	if generated {
		pw = password.Generate(24)
	} else if len(pw) < MinAdminPasswordLen {
		return errcode.New(errcode.Invalid, "MAMORI_ADMIN_PASSWORD must be at least %d characters", MinAdminPasswordLen)
	}
	hash, err := password.Hash(pw)
	if err != nil {
		return err
	}
	if generated {
		// Write the file first: a crash between the two steps must not leave
		// an admin whose password nobody knows.
		path := filepath.Join(s.cfg.DataDir, InitialPasswordFile)
		if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		s.log.Info("created first admin user; its password is in the data directory", "username", "admin", "file", path)
	} else {
		s.log.Info("created first admin user with the password from MAMORI_ADMIN_PASSWORD", "username", "admin")
	}
	return s.db.CreateUser(ctx, &store.User{ID: uuid.NewString(), Username: "admin", PasswordHash: hash,
		HomeGroupID: store.GroupAll, PermissionSetIDs: []string{store.PermSetAdministrator}})
}

// AgentAddr is the bound agent listener address.
func (s *Server) AgentAddr() string { return s.agentLn.Addr().String() }

// APIAddr is the bound API listener address.
func (s *Server) APIAddr() string { return s.apiLn.Addr().String() }

// CAFingerprint is the pin agents need.
func (s *Server) CAFingerprint() string { return s.ca.Fingerprint() }

// Run serves until ctx ends, then shuts down gracefully: agents are told
// (GOAWAY), presence is flushed with everyone offline.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workCtx, stopWork := context.WithCancel(context.Background())
	defer stopWork() // after the agent listener has stopped
	s.svc.work = newWorkPool(workCtx, 4*runtime.GOMAXPROCS(0))
	s.svc.writes = newBatcher(s.db, s.log, 256)
	go s.svc.writes.run(workCtx)
	errc := make(chan error, 2)
	go func() {
		err := s.grpc.Serve(countingListener{Listener: s.agentLn, in: &s.metrics.in, out: &s.metrics.out, conns: &s.conns})
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("agent listener: %w", err)
		}
	}()
	go func() {
		err := s.http.ServeTLS(s.apiLn, "", "")
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("API listener: %w", err)
		}
	}()
	if s.debugLn != nil {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		dbg := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go dbg.Serve(s.debugLn)
		defer dbg.Close()
		s.log.Warn("pprof debug endpoint enabled (no authentication)", "listen", s.debugLn.Addr().String())
	}
	hubDone := make(chan struct{})
	go func() { defer close(hubDone); s.hub.run(ctx) }()
	go s.sweepSessions(ctx)
	s.log.Info("server running", "agent_listen", s.AgentAddr(), "api_listen", s.APIAddr(), "ca_fingerprint", s.ca.Fingerprint())

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		cancel()
	}
	<-hubDone
	shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	s.http.Shutdown(shutdownCtx)
	s.hub.closeAll(shutdownCtx) // drops agent connections so GracefulStop can finish
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-shutdownCtx.Done():
		s.grpc.Stop()
	}
	s.hub.flush(context.Background(), true)
	s.log.Info("server stopped")
	return err
}

func (s *Server) sweepSessions(ctx context.Context) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.db.DeleteExpiredSessions(ctx, time.Now()); err != nil && ctx.Err() == nil {
				s.log.Warn("removing expired sessions", "err", err)
			}
		}
	}
}

// Close releases the listeners and the store.
func (s *Server) Close() error {
	s.closeMu.Do(func() {
		var errs []error
		if s.grpc != nil {
			s.grpc.Stop()
		}
		if s.agentLn != nil {
			s.agentLn.Close()
		}
		if s.apiLn != nil {
			s.apiLn.Close()
		}
		if s.debugLn != nil {
			s.debugLn.Close()
		}
		if s.db != nil {
			errs = append(errs, s.db.Close())
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
