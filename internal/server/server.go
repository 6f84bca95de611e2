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

	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/configs"
	"github.com/mamori/mamori/internal/dyngroup"
	"github.com/mamori/mamori/internal/enrollment"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/httpapi"
	"github.com/mamori/mamori/internal/password"
	"github.com/mamori/mamori/internal/pki"
	"github.com/mamori/mamori/internal/retention"
	"github.com/mamori/mamori/internal/scheduler"
	"github.com/mamori/mamori/internal/store"
	"github.com/mamori/mamori/internal/updates/filelock"
)

// Config configures a server. Zero values take the documented defaults.
type Config struct {
	// DataDir holds the store, the CA and the server certificate. Required.
	DataDir string
	// Database is a PostgreSQL URL (postgres://...) for the store instead
	// of the SQLite file in DataDir; servers sharing one database must
	// share the data directory's CA and keys too (docs/architecture.md).
	Database string
	// ReusePort lets several servers sharing a PostgreSQL store on one
	// machine listen on the same agent and API addresses (SO_REUSEPORT;
	// the kernel spreads connections over them). Unix only.
	ReusePort bool
	// AgentListen is the agents' mTLS gRPC address; default ":2222".
	AgentListen string
	// AgentTransport serves gRPC on the agent listener: "lean" (default;
	// grpclite, one goroutine per connection) or "grpc" (grpc-go). The
	// wire is the same; see docs/architecture.md ("Agent wire").
	AgentTransport string
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
	// default 30s. KeepaliveTimeout is how long it waits for the answer
	// before declaring the connection dead; default 20s. A silently dead
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
	// WakeupRate paces bulk wake-ups (computers per second); default 20000.
	WakeupRate int
	// HandshakeSlots bounds the agent TLS handshakes the server works on
	// at once, in each of two pools (full, resumed); default 128. A slot is
	// held from the ClientHello until the server's flight is written.
	// HandshakeQueue bounds the connections in their handshake, waiting
	// for a slot or for the agent (beyond it a new connection is closed at
	// once and the agent backs off); default 10000. HandshakeTimeout is the
	// time from accepting a connection to the end of its handshake; default
	// 30s: a handshake given up late wastes the server's work, and a slow
	// agent holds no slot.
	HandshakeSlots, HandshakeQueue int
	HandshakeTimeout               time.Duration
	// MaxSessionSetups bounds the agent sessions being set up at once
	// (authentication, section hashes, Welcome); beyond it agents are
	// answered RetryLater with a time to come back; default 1024.
	MaxSessionSetups int
	// ReturnAfter and ReturnRate spread the return of the agents when the
	// server stops on purpose (a restart): each connected agent is told
	// when to come back, the first after ReturnAfter (default 5s, the
	// time a restart takes), then ReturnRate per second (default 2000:
	// 100,000 agents over 50 s).
	ReturnAfter time.Duration
	ReturnRate  int
	// SQLiteSynchronous: FULL (default) or NORMAL.
	SQLiteSynchronous string
	// ConfigPushRate is how many configuration pushes per second go to
	// agents after a change (default 2000).
	ConfigPushRate int
	// TaskDeliveryPerSecond bounds task runs handed to agents per second
	// (default 2000).
	TaskDeliveryPerSecond int
	// UpdatesUpstream, when set, turns on the built-in update mirror (in
	// DataDir/mirror, served on the API listener under /updates/, the
	// agents' default update source): the repository or mirror URL, a
	// folder or a bundle .tar it syncs from. UpdatesRootSHA256 (the
	// repository's 1.root.json) or UpdatesRootFile is needed on first use.
	UpdatesUpstream, UpdatesRootSHA256, UpdatesRootFile string
	// UpdatesURL is the mirror's address as agents reach it; default
	// https://<the host the agent connected to>:<API port>/updates.
	UpdatesURL string
	// UpdatesSyncInterval between syncs (default 5 min); UpdatesRate and
	// UpdatesClientRate cap the bytes/s sent to all agents and to one
	// (0: no cap).
	UpdatesSyncInterval            time.Duration
	UpdatesRate, UpdatesClientRate int64
	// RetentionInterval is the time between retention passes (default 1 h;
	// the first pass comes after at most a minute).
	RetentionInterval time.Duration
	// DebugListen, if set, serves Go's pprof profiles and /metrics (plain
	// HTTP, no authentication: bind it to loopback). Empty disables it.
	DebugListen string
	// MetricsListen, if set, serves /metrics without credentials (plain
	// HTTP) for a scraper on a private interface; the API's /metrics needs
	// a user who may read the server settings. Empty disables it.
	MetricsListen string
	// Log is the logger; default slog.Default().
	Log *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		return errcode.New(errcode.Invalid, "a data directory is required (--data)")
	}
	if c.Database != "" && !store.IsPostgresURL(c.Database) {
		return errcode.New(errcode.Invalid, "--database must be a postgres:// URL (empty: SQLite in the data directory)")
	}
	if c.ReusePort && c.Database == "" {
		return errcode.New(errcode.Invalid, "--reuse-port is for servers sharing a PostgreSQL store (--database); SQLite has one server")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.AgentListen == "" {
		c.AgentListen = ":2222"
	}
	switch c.AgentTransport {
	case "":
		c.AgentTransport = TransportLean
	case TransportLean, TransportGRPC:
	default:
		return errcode.New(errcode.Invalid, "agent transport must be %q or %q", TransportLean, TransportGRPC)
	}
	if c.APIListen == "" {
		c.APIListen = ":8443"
	}
	def(&c.KeepaliveTime, 30*time.Second)
	def(&c.KeepaliveTimeout, 20*time.Second)
	def(&c.PresenceFlush, time.Second)
	def(&c.LastSeenFlush, 10*time.Second)
	def(&c.OfflineWarning, 48*time.Hour)
	def(&c.OfflineCritical, 14*24*time.Hour)
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.WakeupRate == 0 {
		c.WakeupRate = 20000
	}
	if c.HandshakeSlots == 0 {
		c.HandshakeSlots = 128
	}
	if c.HandshakeQueue == 0 {
		c.HandshakeQueue = 10000
	}
	def(&c.HandshakeTimeout, 30*time.Second)
	if c.MaxSessionSetups == 0 {
		c.MaxSessionSetups = 1024
	}
	if c.HandshakeSlots < 0 || c.HandshakeQueue < 0 || c.MaxSessionSetups < 0 {
		return errcode.New(errcode.Invalid, "handshake slots, handshake queue and session setups must be positive")
	}
	if c.ConfigPushRate == 0 {
		c.ConfigPushRate = 2000
	}
	if c.TaskDeliveryPerSecond == 0 {
		c.TaskDeliveryPerSecond = 2000
	}
	if c.ConfigPushRate < 0 || c.TaskDeliveryPerSecond < 0 {
		return errcode.New(errcode.Invalid, "configuration push rate and task delivery rate must be positive")
	}
	def(&c.ReturnAfter, 5*time.Second)
	if c.ReturnRate == 0 {
		c.ReturnRate = 2000
	}
	if c.ReturnRate < 0 || c.ReturnAfter < 0 || c.ReturnAfter > time.Hour {
		return errcode.New(errcode.Invalid, "return rate must be positive and return delay between 0 and 1h")
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
	dataLock *filelock.Lock // the data directory's, on the embedded store
	pruner   *retention.Pruner
	db       *store.DB
	ca       *pki.CA
	metrics  *metrics
	hub      *Hub
	agent    *agentEndpoint
	http     *http.Server
	agentLn  net.Listener
	agentTLS *tls.Config
	apiLn    net.Listener
	debugLn  net.Listener
	metricLn net.Listener
	conns    sync.Map // accepted agent connections by remote address
	svc      *agentService
	dyn      *dyngroup.Evaluator
	configs  *configs.Service
	pusher   *configPusher
	sched    *scheduler.Scheduler
	updates  *updatesMirror // nil: no built-in mirror
	cluster  *cluster
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
	var updatesTrust []byte
	if cfg.UpdatesUpstream != "" { // before anything is created
		var err error
		if updatesTrust, err = updatesRoot(cfg); err != nil {
			return nil, err
		}
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
	if cfg.Database == "" {
		// The embedded store has one server. A second one on the same data
		// directory would take the first one's agents for stopped and mark
		// them offline before it failed to listen.
		s.dataLock, err = filelock.TryLock(filepath.Join(cfg.DataDir, "server.lock"))
		if errors.Is(err, filelock.ErrLocked) {
			return nil, errcode.New(errcode.Conflict, "another mamori server is running on %s (the embedded store serves one server); stop it first, or share a PostgreSQL store (--database) to run several", cfg.DataDir)
		} else if err != nil {
			return nil, fmt.Errorf("data directory lock: %w", err)
		}
	}
	s.db, err = store.Open(ctx, cfg.Database, cfg.DataDir, store.Options{Observer: s.metrics.observeStore, Synchronous: cfg.SQLiteSynchronous})
	if err != nil {
		return nil, err
	}
	s.log.Info("store open", "location", s.db.Location(), "schema_version", s.db.SchemaVersion())
	// Servers sharing the store start one at a time: the first creates the
	// CA, keys and first admin the others load.
	unlock, err := s.db.StartupLock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
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
	hostname, _ := os.Hostname()
	s.cluster = &cluster{db: s.db, id: uuid.NewString(), name: hostname + " " + cfg.AgentListen, log: s.log}
	if err := s.cluster.start(ctx); err != nil {
		return nil, err
	}

	s.hub = newHub(s.db, s.log, s.metrics, cfg.PresenceFlush, cfg.LastSeenFlush, cfg.WakeupRate)
	s.hub.serverID, s.cluster.hub = s.cluster.id, s.hub
	enroll := &enrollment.Service{Store: s.db, CA: ca, Audit: s.db}
	s.svc = &agentService{store: s.db, enroll: enroll, hub: s.hub, metrics: s.metrics, log: s.log, interval: cfg.CheckInInterval, now: time.Now,
		drop: func(remote string) { closeConn(&s.conns, remote) }, gate: newSessionGate(cfg.MaxSessionSetups)}

	s.agentTLS = agentTLSConfig(serverCert, ca.Cert)
	ticketKeys, err := rotateTicketKeys(cfg.DataDir, time.Now())
	if err != nil {
		return nil, fmt.Errorf("TLS session ticket keys: %w", err)
	}
	s.agentTLS.SetSessionTicketKeys(ticketKeys)

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
	// Management: dynamic groups, configurations pushed to agents, tasks.
	s.dyn = &dyngroup.Evaluator{Store: s.db, Log: s.log}
	s.configs = &configs.Service{Store: s.db, Leading: s.cluster.leading.Load}
	s.pusher = newConfigPusher(s.configs, s.db, s.hub, s.log, cfg.ConfigPushRate)
	s.configs.Changed = func(ids []string) {
		s.pusher.Changed(ids)
		s.cluster.post(signalConfig, signalData{IDs: ids})
	}
	s.cluster.pushConfig = func(ids []string) {
		s.configs.Invalidate() // the other server changed what documents are made of
		s.pusher.Changed(ids)
	}
	s.cluster.reevaluate = s.dyn.Reevaluate
	attachments := filepath.Join(cfg.DataDir, "attachments")
	presence := clusterPresence{Hub: s.hub, c: s.cluster}
	s.sched = &scheduler.Scheduler{Store: s.db, Deliver: s.hub, Log: s.log, PerStep: max(1, cfg.TaskDeliveryPerSecond),
		Server:   &scheduler.ServerTasks{Store: s.db, Disconnect: presence.Disconnect},
		ServerID: s.cluster.id, Leading: s.cluster.leading.Load}
	s.svc.uploads = newUploads(s.db, attachments, s.log)
	s.pruner = &retention.Pruner{Store: s.db, AttachmentDir: attachments, Log: s.log.With("part", "retention"),
		Every: cfg.RetentionInterval, Delay: min(time.Minute, cfg.RetentionInterval), // 0: the pruner's defaults
		OnDeleted: func(kind string, n int64) { s.metrics.retained.WithLabelValues(kind).Add(float64(n)) }}
	s.svc.configs = s.pusher
	s.svc.connected = s.sched.Connected
	if cfg.UpdatesUpstream != "" {
		if s.updates, err = newUpdatesMirror(cfg, s, updatesTrust); err != nil {
			return nil, err
		}
		s.svc.updates = s.updates
	}
	var latestEngine func() uint64
	if s.updates != nil {
		latestEngine = func() uint64 { return s.updates.m.Status().EngineVersion }
	}
	api := httpapi.New(httpapi.Config{
		LatestEngine:    latestEngine,
		Store:           s.db,
		Auth:            &auth.Service{Store: s.db, Sealer: sealer},
		Enrollment:      enroll,
		Presence:        presence,
		ServerID:        s.cluster.id,
		DynamicGroups:   clusterDynamicGroups{Evaluator: s.dyn, c: s.cluster},
		Configurations:  s.configs,
		Scheduler:       s.sched,
		Runs:            presence,
		AttachmentDir:   attachments,
		CAFingerprint:   ca.Fingerprint(),
		CAPEM:           pki.EncodeCert(ca.Cert.Raw),
		Metrics:         s.promHandler(),
		Log:             s.log,
		OfflineWarning:  cfg.OfflineWarning,
		OfflineCritical: cfg.OfflineCritical,
	})
	s.http = &http.Server{
		Handler:           withUpdates(s.updates, api),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{apiCert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}

	if s.agentLn, err = listen(cfg.AgentListen, cfg.ReusePort); err != nil {
		return nil, fmt.Errorf("agent listener: %w", err)
	}
	if s.apiLn, err = listen(cfg.APIListen, cfg.ReusePort); err != nil {
		return nil, fmt.Errorf("API listener: %w", err)
	}
	if cfg.DebugListen != "" {
		if s.debugLn, err = net.Listen("tcp", cfg.DebugListen); err != nil {
			return nil, fmt.Errorf("debug listener: %w", err)
		}
	}
	if cfg.MetricsListen != "" {
		if s.metricLn, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return nil, fmt.Errorf("metrics listener: %w", err)
		}
	}
	s.agent = newAgentEndpoint(endpointOptions{
		Transport:      cfg.AgentTransport,
		TLS:            s.agentTLS,
		Listener:       countingListener{Listener: s.agentLn, in: &s.metrics.in, out: &s.metrics.out, conns: &s.conns},
		HandshakeSlots: cfg.HandshakeSlots, HandshakeQueue: cfg.HandshakeQueue, HandshakeTimeout: cfg.HandshakeTimeout,
		KeepaliveTime: cfg.KeepaliveTime, KeepaliveTimeout: cfg.KeepaliveTimeout,
		Metrics: s.metrics, Log: s.log,
	}, s.svc)
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
		s.log.Info("created first admin user; its password is in the data directory, to be changed at the first login", "username", "admin", "file", path)
	} else {
		s.log.Info("created first admin user with the password from MAMORI_ADMIN_PASSWORD", "username", "admin")
	}
	// A generated password sits in a file until someone reads it: it opens
	// only the password change. One the operator chose is theirs to keep.
	return s.db.CreateUser(ctx, &store.User{ID: uuid.NewString(), Username: "admin", PasswordHash: hash, MustChangePassword: generated,
		HomeGroupID: store.GroupAll, PermissionSetIDs: []string{store.PermSetAdministrator}})
}

// promHandler serves the server's metrics in the Prometheus text format.
func (s *Server) promHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
}

// AgentAddr is the bound agent listener address.
func (s *Server) AgentAddr() string { return s.agentLn.Addr().String() }

// APIAddr is the bound API listener address.
func (s *Server) APIAddr() string { return s.apiLn.Addr().String() }

// CAFingerprint is the pin agents need.
func (s *Server) CAFingerprint() string { return s.ca.Fingerprint() }

// leaveTimeout bounds telling the agents when to come back at shutdown and
// waiting for them to end their sessions.
const leaveTimeout = 3 * time.Second

// Run serves until ctx ends, then shuts down gracefully: agents are told
// when to come back (Hub.leave) and their connections closed (GOAWAY),
// presence is flushed with everyone offline.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workCtx, stopWork := context.WithCancel(context.Background())
	defer stopWork() // after the agent listener has stopped
	s.svc.writes = newBatcher(s.db, s.log, 256)
	go s.svc.writes.run(workCtx)
	s.svc.work = newWorkPool(workCtx, 4*runtime.GOMAXPROCS(0), s.metrics.workWaiting)
	s.svc.writes.queued, s.svc.writes.batchSize = s.metrics.writeQueue, s.metrics.writeBatch
	errc := make(chan error, 2)
	go func() {
		if err := s.agent.serve(); err != nil {
			errc <- err
		}
	}()
	go s.rotateTicketKeys(ctx)
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
		mux.Handle("/metrics", s.promHandler())
		dbg := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go dbg.Serve(s.debugLn)
		defer dbg.Close()
		s.log.Warn("pprof debug endpoint enabled (no authentication)", "listen", s.debugLn.Addr().String())
	}
	if s.metricLn != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", s.promHandler())
		ms := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: time.Minute}
		go ms.Serve(s.metricLn)
		defer ms.Close()
		s.log.Info("metrics endpoint enabled (no authentication)", "listen", s.metricLn.Addr().String())
	}
	hubDone := make(chan struct{})
	go func() { defer close(hubDone); s.hub.run(ctx) }()
	var mgmt sync.WaitGroup
	mgmt.Add(4)
	// What must run once among servers sharing the store runs on the leader
	// (a lone server always leads).
	go func() {
		defer mgmt.Done()
		s.cluster.run(ctx, s.dyn.Run, func(context.Context) { s.configs.Queue(nil) }, s.sweepSessions, s.pruner.Run)
	}()
	go func() { defer mgmt.Done(); s.configs.Run(ctx, s.db, s.log) }()
	go func() { defer mgmt.Done(); s.pusher.run(ctx) }()
	go func() {
		defer mgmt.Done()
		if err := s.sched.Run(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("task scheduler stopped", "err", err)
		}
	}()
	if s.updates != nil {
		mgmt.Add(1)
		go func() { defer mgmt.Done(); s.updates.run(ctx) }()
	}
	defer mgmt.Wait()
	s.log.Info("server running", "agent_listen", s.AgentAddr(), "api_listen", s.APIAddr(), "ca_fingerprint", s.ca.Fingerprint())

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		cancel()
	}
	<-hubDone
	s.agent.stopAccepting()
	leaveCtx, left := context.WithTimeout(context.Background(), leaveTimeout)
	if n := s.hub.leave(leaveCtx, returnPlan{After: s.cfg.ReturnAfter, Rate: s.cfg.ReturnRate}); n > 0 {
		s.log.Info("agents told when to come back", "agents", n, "first_after", s.cfg.ReturnAfter, "per_second", s.cfg.ReturnRate)
	}
	left()
	shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	s.http.Shutdown(shutdownCtx)
	s.hub.closeAll() // drops agent connections so a graceful stop can finish
	s.agent.stop(shutdownCtx)
	// Everyone offline, in one write: with many servers stopping at once
	// on a shared store it can take more than the 5 s above.
	flushCtx, flushed := context.WithTimeout(context.Background(), time.Minute)
	s.hub.flush(flushCtx, true)
	flushed()
	s.cluster.stop(context.Background())
	s.log.Info("server stopped")
	return err
}

// rotateTicketKeys renews the agent listener's session ticket keys every
// hour (a new encryption key each day; see ticketkeys.go).
func (s *Server) rotateTicketKeys(ctx context.Context) {
	every(ctx, time.Hour, func(now time.Time) {
		keys, err := rotateTicketKeys(s.cfg.DataDir, now)
		if err != nil {
			s.log.Warn("rotating TLS session ticket keys", "err", err)
			return
		}
		s.agentTLS.SetSessionTicketKeys(keys)
	})
}

func (s *Server) sweepSessions(ctx context.Context) {
	every(ctx, 10*time.Minute, func(now time.Time) {
		if _, err := s.db.DeleteExpiredSessions(ctx, now); err != nil && ctx.Err() == nil {
			s.log.Warn("removing expired sessions", "err", err)
		}
	})
}

// Close releases the listeners and the store.
func (s *Server) Close() error {
	s.closeMu.Do(func() {
		var errs []error
		if s.agent != nil {
			s.agent.close()
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
		if s.metricLn != nil {
			s.metricLn.Close()
		}
		if s.db != nil {
			errs = append(errs, s.db.Close())
		}
		if s.updates != nil {
			errs = append(errs, s.updates.m.Close())
		}
		errs = append(errs, s.dataLock.Unlock()) // after the store is closed
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
