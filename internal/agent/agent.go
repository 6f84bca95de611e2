// Package agent is the endpoint: it enrolls with a server, keeps one
// persistent mTLS session, replicates inventory (only the sections that
// changed) and the durable outbox's events, and answers wake-ups.
//
// Lifecycle: New (validates the configuration, loads the identity if the
// state directory has one) → Run (enrolls if needed, then runs until its
// context ends; on the way out it records agent.stopped and tries briefly
// to deliver it) → Close.
package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mamori/mamori/internal/agent/agentcfg"
	"github.com/mamori/mamori/internal/agent/inventory"
	"github.com/mamori/mamori/internal/agent/outbox"
	"github.com/mamori/mamori/internal/agent/spool"
	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/instance"
	"github.com/mamori/mamori/internal/pki"
)

// Config configures an agent. Zero values take the documented defaults.
type Config struct {
	// StateDir holds the identity and the outbox. Required.
	StateDir string
	// Servers are "host:port" addresses tried in order (failover). Required
	// to enroll; afterwards the enrolled list is used unless this is set.
	Servers []string
	// Token and CAFingerprint are needed only to enroll.
	Token         string
	CAFingerprint string
	// Instance names one of several agents on one host (and the computer).
	Instance string
	// Proxy is an http:// CONNECT proxy URL; empty uses HTTPS_PROXY.
	Proxy string
	// Interval between check-ins; default 60s, jitter ±Jitter (default 10%).
	Interval time.Duration
	Jitter   float64
	// Version is the agent version reported to the server.
	Version string
	// Collector gathers inventory; default the platform collector.
	Collector Collector
	// MaxOutboxEvents bounds the outbox; default outbox.DefaultMaxEvents.
	MaxOutboxEvents int
	// ResumeThreshold is the wall-clock jump that counts as a resume from
	// suspend; default 10s, checked every ResumeTick (default 2s).
	ResumeThreshold, ResumeTick time.Duration
	// Clock is the resume detector's clock; default the system clock.
	Clock Clock
	// StopFlushTimeout is how long Run tries to deliver agent.stopped on the
	// way out; default 3s.
	StopFlushTimeout time.Duration
	// SpoolInterval is how often events spooled by other agent commands
	// (scan) are moved into the outbox; default 5s.
	SpoolInterval time.Duration
	// Log is the logger; default slog.Default().
	Log *slog.Logger
	// RecentLog, when set, returns the agent's recent log lines; a
	// diagnostics bundle carries them as agent-log.txt.
	RecentLog func() []byte
	// LogLevel, when set, follows the configuration's agent.log_level
	// (while the configuration leaves it at its default, the level given
	// here stays).
	LogLevel *slog.LevelVar
	// Tasks executes the task runs the server pushes (taskrun.Runner);
	// nil: runs pushed to this agent are logged and ignored.
	Tasks TaskExecutor
}

// TaskExecutor executes task runs pushed by the server.
type TaskExecutor interface {
	// StartTasks is called once the outbox is open; results go there.
	StartTasks(ctx context.Context, env TaskEnv) error
	// Handle takes a push without blocking on the runs.
	Handle(m *agentproto.TaskRuns)
	// Wait returns when the runs in progress have ended (after ctx).
	Wait()
}

// TaskEnv is what task runs may use of the agent.
type TaskEnv struct {
	StateDir string
	Outbox   *outbox.Outbox
	Config   *agentcfg.Manager
	// Upload sends a file of a run to the connected server.
	Upload func(ctx context.Context, runID, name string, r io.Reader, size int64) error
	// StopManaging makes the agent unenroll once the run's result reached
	// the server: Run removes the state and returns ErrUnmanaged.
	StopManaging func()
	// Diagnostics returns agent state for a diagnostics bundle.
	Diagnostics func() map[string][]byte
	// Engine updates and rolls back the detection engine.
	Engine EngineControl
}

// EngineControl updates and rolls back the detection engine now; the
// result is a line for the task run's output.
type EngineControl interface {
	Update(ctx context.Context) (string, error)
	Rollback(ctx context.Context) (string, error)
}

// ErrUnmanaged is returned by Run after a stop_managing task: the agent
// removed its identity and state and must not start again.
var ErrUnmanaged = errors.New("this computer is no longer managed: the agent removed its identity and state")

// Agent is the endpoint agent.
type Agent struct {
	cfg       Config
	log       *slog.Logger
	id        *Identity
	auto      *Auto
	ob        *outbox.Outbox
	config    *agentcfg.Manager
	unmanaged chan struct{}
	stopOnce  sync.Once
	engine    *engineUpdates
}

// New validates cfg and loads the identity if present.
func New(cfg Config) (*Agent, error) {
	if cfg.StateDir == "" {
		return nil, errcode.New(errcode.Invalid, "a state directory is required (--state)")
	}
	if cfg.Interval == 0 {
		cfg.Interval = 60 * time.Second
	}
	if cfg.Interval < time.Second {
		return nil, errcode.New(errcode.Invalid, "interval must be at least 1s")
	}
	if cfg.Jitter == 0 {
		cfg.Jitter = 0.1
	}
	if cfg.Jitter < 0 || cfg.Jitter > 0.5 {
		return nil, errcode.New(errcode.Invalid, "jitter must be between 0 and 0.5")
	}
	if cfg.ResumeThreshold == 0 {
		cfg.ResumeThreshold = 10 * time.Second
	}
	if cfg.ResumeTick == 0 {
		cfg.ResumeTick = 2 * time.Second
	}
	if cfg.StopFlushTimeout == 0 {
		cfg.StopFlushTimeout = 3 * time.Second
	}
	if cfg.SpoolInterval == 0 {
		cfg.SpoolInterval = 5 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = newRealClock()
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if !instance.Valid(cfg.Instance) {
		return nil, errcode.New(errcode.Invalid, "instance must be at most 64 characters of letters, digits, '.', '_' and '-'")
	}
	for _, s := range cfg.Servers {
		if err := validServer(s); err != nil {
			return nil, err
		}
	}
	if cfg.Proxy != "" {
		u, err := proxyFor(cfg.Proxy, "x:1")
		if err != nil {
			return nil, errcode.New(errcode.Invalid, "%v", err)
		}
		if u.Scheme != "http" { // refused here, not at every connection
			return nil, errcode.New(errcode.Invalid, "proxy %s: only http:// proxies are supported", u.Redacted())
		}
	}
	a := &Agent{cfg: cfg, log: cfg.Log, unmanaged: make(chan struct{})}
	a.engine = &engineUpdates{dir: EngineStateDir(cfg.StateDir), log: cfg.Log}
	id, err := LoadIdentity(cfg.StateDir)
	defer func() {
		if a.id != nil {
			a.cfg.Instance = a.id.Instance
		}
	}()
	switch {
	case err == nil:
		a.id = id
		if cfg.Token != "" {
			a.log.Info("already enrolled; ignoring the enrollment token", "computer", id.ComputerID)
		}
		if cfg.Instance != "" && cfg.Instance != id.Instance {
			return nil, errcode.New(errcode.Invalid, "this state directory belongs to instance %q, not %q", id.Instance, cfg.Instance)
		}
	case errors.Is(err, ErrNotEnrolled):
		if len(cfg.Servers) == 0 || cfg.Token == "" || cfg.CAFingerprint == "" {
			return nil, errcode.New(errcode.Invalid, "not enrolled yet: the first run needs --server, --token and --ca-fingerprint")
		}
		if _, err := pki.ParseFingerprint(cfg.CAFingerprint); err != nil {
			return nil, err
		}
	default:
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	if a.config, err = agentcfg.Open(cfg.StateDir, cfg.Log); err != nil {
		return nil, err
	}
	if a.cfg.Collector == nil {
		instance := cfg.Instance
		if a.id != nil {
			instance = a.id.Instance
		}
		c, err := inventory.NewCollector(inventory.Options{AgentVersion: cfg.Version, Instance: instance,
			Fingerprint: HardwareFingerprint(instance), StartedUnix: time.Now().Unix(), Agent: a.engine.fill})
		if err != nil {
			return nil, errcode.New(errcode.Invalid, "%v", err)
		}
		a.cfg.Collector = c
	}
	return a, nil
}

func validServer(s string) error {
	host, port, ok := strings.Cut(s, ":")
	if i := strings.LastIndex(s, ":"); i > 0 {
		host, port, ok = s[:i], s[i+1:], true
	}
	if !ok || host == "" || port == "" || strings.ContainsAny(s, "/ ") {
		return errcode.New(errcode.Invalid, "server %q must be HOST:PORT", s)
	}
	return nil
}

// Enrolled reports whether the agent has an identity.
func (a *Agent) Enrolled() bool { return a.id != nil }

// Identity returns the identity (nil before enrollment).
func (a *Agent) Identity() *Identity { return a.id }

// Status returns the connection status (zero before Run).
func (a *Agent) Status() Status {
	if a.auto == nil {
		return Status{}
	}
	return a.auto.Status()
}

// Enroll enrolls now if the state directory has no identity. Refusals
// (unknown, expired or used-up token, untrusted server) are returned at
// once; unreachable servers are retried with backoff until ctx ends.
// Nothing is written to the state directory unless enrollment succeeds.
func (a *Agent) Enroll(ctx context.Context) error {
	if a.id != nil {
		return nil
	}
	pin, _ := pki.ParseFingerprint(a.cfg.CAFingerprint)
	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	csr, err := pki.NewCSR(key, host)
	if err != nil {
		return err
	}
	req := &agentproto.EnrollRequest{
		CapabilityVersion:   agentproto.CapabilityVersion,
		Token:               a.cfg.Token,
		CsrDer:              csr,
		Hostname:            host,
		Instance:            a.cfg.Instance,
		HardwareFingerprint: HardwareFingerprint(a.cfg.Instance),
		AgentVersion:        a.cfg.Version,
		Platform:            runtime.GOOS,
	}
	d := NewDirect(DirectOptions{Pin: pin, Proxy: a.cfg.Proxy})
	defer d.Close()
	for attempt := 0; ; attempt++ {
		var lastErr error
		for _, server := range a.cfg.Servers {
			resp, err := d.Enroll(ctx, server, req)
			if err == nil {
				return a.saveEnrollment(resp, key, pin)
			}
			if errcode.Of(err) != errcode.Unavailable {
				return err
			}
			lastErr = err
		}
		delay := backoff(attempt + 1)
		a.log.Warn("enrollment: no server reachable; retrying", "err", errcode.Message(lastErr), "retry_in", delay.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return fmt.Errorf("enrollment interrupted: %s", errcode.Message(lastErr))
		case <-time.After(delay):
		}
	}
}

func (a *Agent) saveEnrollment(resp *agentproto.EnrollResponse, key crypto.Signer, pin string) error {
	if pki.Fingerprint(resp.CaCertificateDer) != pin {
		return errcode.New(errcode.Forbidden, "server returned a CA that does not match the pinned fingerprint")
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return err
	}
	id := &Identity{
		ComputerID:   resp.ComputerId,
		ComputerName: resp.ComputerName,
		GroupPath:    resp.GroupPath,
		Servers:      a.cfg.Servers,
		Proxy:        a.cfg.Proxy,
		Instance:     a.cfg.Instance,
		KeyPEM:       string(keyPEM),
		CertPEM:      string(pki.EncodeCert(resp.CertificateDer)),
		CAPEM:        string(pki.EncodeCert(resp.CaCertificateDer)),
		EnrolledAt:   time.Now().UTC(),
	}
	cert, err := id.certificate() // also checks that the certificate is for our key
	if err != nil {
		return errcode.New(errcode.Invalid, "server returned an unusable certificate: %v", err)
	}
	ca, err := id.ca()
	if err != nil {
		return errcode.New(errcode.Invalid, "server returned an unusable CA certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil || leaf.CheckSignatureFrom(ca) != nil {
		return errcode.New(errcode.Invalid, "server returned a certificate not signed by its CA")
	}
	if err := id.Save(a.cfg.StateDir); err != nil {
		return err
	}
	a.id = id
	a.log.Info("enrolled", "computer", id.ComputerID, "name", id.ComputerName, "group", id.GroupPath)
	return nil
}

// Run enrolls if needed and runs until ctx ends. It returns an error when
// enrollment is refused or the server refuses the agent for good.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.Enroll(ctx); err != nil {
		return err
	}
	id := a.id
	cert, err := id.certificate()
	if err != nil {
		return err
	}
	ca, err := id.ca()
	if err != nil {
		return err
	}
	servers := id.Servers
	if len(a.cfg.Servers) > 0 {
		servers = a.cfg.Servers
	}
	proxy := id.Proxy
	if a.cfg.Proxy != "" {
		proxy = a.cfg.Proxy
	}
	if !slices.Equal(servers, id.Servers) || proxy != id.Proxy {
		id.Servers, id.Proxy = servers, proxy
		if err := id.Save(a.cfg.StateDir); err != nil {
			return err
		}
	}
	ob, err := outbox.Open(filepath.Join(a.cfg.StateDir, OutboxFile), a.cfg.MaxOutboxEvents)
	if err != nil {
		return err
	}
	a.ob = ob
	fp := HardwareFingerprint(id.Instance)
	collector := a.cfg.Collector
	d := NewDirect(DirectOptions{Pin: pki.Fingerprint(ca.Raw), CA: ca, Cert: &cert, Proxy: proxy})
	defer d.Close()
	a.auto = &Auto{
		d: d, servers: servers, hello: newHello(a.cfg.Version, fp, id.Instance), ob: ob, collector: collector,
		log: a.log, interval: a.cfg.Interval, jitter: a.cfg.Jitter, resumed: make(chan time.Duration, 1), first: true,
		config: a.config, tasks: a.cfg.Tasks, invChanged: make(chan struct{}, 1),
	}
	a.engine.ca, a.engine.agentProxy = ca, proxy
	a.engine.onStatus = a.auto.inventoryChanged
	a.auto.onWelcome = func(server string, w *agentproto.Welcome) {
		a.engine.setServer(serverMirrorURL(w.UpdateUrl, server), w.UpdateRootSha256)
	}
	a.config.OnChange(a.applySettings)
	a.config.OnChange(func(s *agentcfg.Settings) { ob.SetMaxEvents(outboxLimit(s, a.cfg.MaxOutboxEvents)) })
	if _, err := ob.Append("agent.started", map[string]any{"version": a.cfg.Version, "instance": id.Instance, "pid": os.Getpid()}); err != nil {
		return err
	}

	autoCtx, stopAuto := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAuto()
	done := make(chan error, 1)
	go func() { done <- a.auto.Run(autoCtx) }()
	tick := time.NewTicker(a.cfg.ResumeTick)
	defer tick.Stop()
	go watchResume(autoCtx, a.cfg.Clock, tick.C, a.cfg.ResumeThreshold, func(gap time.Duration) {
		if _, err := ob.Append("agent.resumed", map[string]any{"slept_seconds": int64(gap.Seconds())}); err != nil {
			a.log.Error("recording resume", "err", err)
		}
		select {
		case a.auto.resumed <- gap:
		default:
		}
	})

	go a.importSpool(autoCtx)
	a.engine.start(autoCtx)
	go a.watchLocalConfig(autoCtx)
	if a.cfg.Tasks != nil {
		env := TaskEnv{StateDir: a.cfg.StateDir, Outbox: ob, Config: a.config, StopManaging: a.stopManaging,
			Diagnostics: a.diagnostics, Engine: a.engine,
			Upload: func(ctx context.Context, runID, name string, r io.Reader, size int64) error {
				st := a.auto.Status()
				if !st.Connected {
					return errcode.New(errcode.Unavailable, "not connected to a server")
				}
				return d.Upload(ctx, st.Server, runID, name, r, size)
			}}
		if err := a.cfg.Tasks.StartTasks(autoCtx, env); err != nil {
			return err
		}
		// Whichever way Run ends, the tasks' context ends first, then
		// their work is waited for (scheduled scans wait on it).
		defer func() {
			stopAuto()
			a.cfg.Tasks.Wait()
		}()
	}

	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	case <-a.unmanaged:
		return a.unenroll(ob, stopAuto, done)
	}
	if _, err := ob.Append("agent.stopped", map[string]any{"reason": "shutdown"}); err != nil {
		a.log.Error("recording stop", "err", err)
	}
	deadline := time.Now().Add(a.cfg.StopFlushTimeout)
	for ob.Len() > 0 && a.auto.Status().Connected && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stopAuto()
	<-done
	return nil
}

// importSpool moves events spooled by other agent commands into the outbox,
// at start and then every SpoolInterval.
func (a *Agent) importSpool(ctx context.Context) {
	t := time.NewTicker(a.cfg.SpoolInterval)
	defer t.Stop()
	for {
		if n, err := spool.Import(a.cfg.StateDir, a.ob); err != nil {
			a.log.Warn("importing spooled events", "imported", n, "err", err)
		} else if n > 0 {
			a.log.Debug("imported spooled events", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close releases the outbox.
func (a *Agent) Close() error {
	if a.ob != nil {
		return a.ob.Close()
	}
	return nil
}

// applySettings puts configuration changes into effect. Values left at
// their default keep what the command line chose.
func (a *Agent) applySettings(s *agentcfg.Settings) {
	a.engine.setSettings(s)
	if a.auto != nil {
		if s.Sources["agent.check_in_interval"] == agentcfg.SourceDefault {
			a.auto.setInterval(a.cfg.Interval, false)
		} else {
			a.auto.setInterval(s.CheckInInterval, true)
		}
	}
	if a.cfg.LogLevel != nil {
		if s.Sources["agent.log_level"] != agentcfg.SourceDefault {
			a.cfg.LogLevel.Set(s.LogLevel)
		}
	}
	if len(s.Servers) > 0 && a.auto != nil {
		valid := true
		for _, srv := range s.Servers {
			if validServer(srv) != nil {
				valid = false
			}
		}
		if valid && !slices.Equal(s.Servers, a.auto.getServers()) {
			a.auto.setServers(s.Servers)
			a.log.Info("server list changed by configuration; used from the next connection", "servers", s.Servers)
		}
	}
	if a.auto != nil {
		configured := ""
		if s.Sources["agent.proxy"] != agentcfg.SourceDefault {
			configured = s.Proxy
		}
		changed := a.auto.d.SetConfiguredProxy(configured, func(err error) {
			a.log.Warn("the configuration's proxy failed; connecting the agent's own way for a while",
				"proxy", redactedProxy(configured), "retry_in", configuredProxyPause, "err", err)
		})
		switch {
		case changed && configured == "":
			a.log.Info("the configuration no longer sets a proxy; the agent's own way from the next connection")
		case changed:
			a.log.Info("proxy set by configuration; used from the next connection", "proxy", redactedProxy(configured))
		}
	}
}

// outboxLimit is the outbox's bound: the configuration's when it sets one,
// else the command line's (0: the outbox's default).
func outboxLimit(s *agentcfg.Settings, commandLine int) int {
	if s.Sources["agent.outbox_max_events"] == agentcfg.SourceDefault {
		return commandLine
	}
	return s.OutboxMaxEvents
}

// watchLocalConfig applies edits of the local configuration file.
func (a *Agent) watchLocalConfig(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.config.ReloadLocal(); err != nil {
				a.log.Error("local configuration is invalid; keeping the previous values", "err", err)
			}
		}
	}
}

func (a *Agent) stopManaging() {
	a.stopOnce.Do(func() { close(a.unmanaged) })
}

// unenroll ends management after a stop_managing task: the result is
// delivered first (for up to a minute), then the identity and every state
// file are removed.
func (a *Agent) unenroll(ob *outbox.Outbox, stopAuto func(), done chan error) error {
	deadline := time.Now().Add(time.Minute)
	for ob.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	stopAuto()
	<-done
	if a.cfg.Tasks != nil {
		a.cfg.Tasks.Wait()
	}
	_ = ob.Close()
	a.ob = nil
	entries, err := os.ReadDir(a.cfg.StateDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(a.cfg.StateDir, e.Name())); err != nil {
			return err
		}
	}
	a.log.Warn("stopped managing this computer at the administrator's request; identity and state removed")
	return ErrUnmanaged
}

// diagnostics is the agent's part of a diagnostics bundle: status, the
// public parts of the identity (never the key), the configuration in
// effect and the recent log.
func (a *Agent) diagnostics() map[string][]byte {
	out := map[string][]byte{}
	st := a.Status()
	b, _ := json.MarshalIndent(st, "", "  ")
	out["status.json"] = b
	if a.id != nil {
		pub := map[string]any{"computer_id": a.id.ComputerID, "computer_name": a.id.ComputerName, "group": a.id.GroupPath,
			"instance": a.id.Instance, "servers": a.id.Servers, "proxy": a.id.Proxy, "version": a.cfg.Version}
		if cert, err := a.id.certificate(); err == nil && cert.Leaf != nil {
			pub["certificate_not_after"] = cert.Leaf.NotAfter
			pub["certificate_serial"] = cert.Leaf.SerialNumber.String()
		}
		b, _ := json.MarshalIndent(pub, "", "  ")
		out["identity-public.json"] = b
	}
	b, _ = json.MarshalIndent(a.config.Effective(), "", "  ")
	out["effective-config.json"] = b
	if a.cfg.RecentLog != nil {
		out["agent-log.txt"] = a.cfg.RecentLog()
	}
	return out
}

// Config is the agent's configuration manager.
func (a *Agent) Config() *agentcfg.Manager { return a.config }
