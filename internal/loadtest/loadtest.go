// Package loadtest simulates many agents speaking the real agent protocol
// over real mTLS connections against one server, and measures what the
// server pays for them. See docs/benchmarks.md for the scenarios, the
// figures and how they were taken.
//
// Each simulated agent is a real agent.Direct client (its own gRPC
// connection, TLS session cache and client certificate) with a synthetic
// inventory (varied operating systems and interfaces, 200-2,000 packages),
// driven with the agent's own reconnection policy. Identities are enrolled
// once and cached on disk, so large runs start fast.
//
// Scenarios:
//   - steady: N agents check in every Interval (±Jitter) for Duration; with
//     Interval 0 the fleet checks in as fast as the server answers
//     (InFlight check-ins outstanding), which measures capacity.
//   - churn: steady, with ChangeRate of the agents changing their software
//     list per minute.
//   - wakeup-fanout: the whole group "All" is woken through the API; the
//     time until every agent has replicated.
//   - reconnect-storm: the server is restarted (Restart); the time until
//     every agent has a session again, and how many gave up.
//   - echo: steady against the echo endpoint EchoServer (server.Echo: the
//     same protocol stack doing no work) — the ceiling of the machine. With
//     EchoServer set, steady and churn run the same loop against it after
//     the server and report echo_ratio.
//   - management: a policy assigned to All, then a task run now on All;
//     the time until every agent applied the policy and finished the run
//     (as stored by the server), with the API's latency meanwhile (read
//     endpoints polled at APIRate). See management.go.
package loadtest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mamori/mamori/internal/agent"
	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/pki"
)

// Scenarios.
const (
	Steady         = "steady"
	ReconnectStorm = "reconnect-storm"
	WakeupFanout   = "wakeup-fanout"
	Churn          = "churn"
	Echo           = "echo"
	Management     = "management"
)

// Config describes a run. Zero values take the documented defaults.
type Config struct {
	// Scenario is one of steady (default), reconnect-storm, wakeup-fanout,
	// churn, echo, management.
	Scenario string
	// Server is the server's agent endpoint HOST:PORT (the echo scenario
	// uses it only to enroll identities it does not have yet).
	Server string
	// EchoServer is an echo endpoint (mamori-loadtest echo-server): the
	// target of the echo scenario; with steady or churn the same loop runs
	// against it after the server and the report carries echo_ratio.
	// EchoDebugURL is its --debug-listen base URL (memory and CPU).
	EchoServer, EchoDebugURL string
	// API is the server's https://HOST:PORT: enrollment tokens, wake-ups,
	// /metrics. Not needed by the echo scenario with cached identities.
	API string
	// DataDir is the server's data directory (its CA certificate, and the
	// initial admin password unless Password is set). CAFile may name the
	// CA certificate instead.
	DataDir, CAFile string
	// Password is the admin password (default: DataDir/initial-admin-password).
	Password string
	// Token is an enrollment token to use instead of creating one.
	Token string
	// Agents is the number of simulated agents. Required.
	Agents int
	// Ramp is the number of new connections per second; default 500.
	Ramp int
	// Duration of the measured part of steady, churn and echo; default 30s.
	Duration time.Duration
	// Interval between check-ins of each agent, ±Jitter (default 0.1); 0
	// means none for wakeup-fanout and reconnect-storm, and "as fast as
	// the server answers" for steady, churn and echo, with InFlight
	// (default 256) check-ins outstanding across the fleet.
	Interval time.Duration
	Jitter   float64
	InFlight int
	// Settle is the wait after connecting before the idle memory reading;
	// default 10s.
	Settle time.Duration
	// ChangeRate is, for churn, the fraction of agents that change their
	// software list per minute; default 0.1. ChangePackages is how much of
	// the list one change touches: a fraction of the packages when below
	// 1, else a number of packages; default 3.
	ChangeRate, ChangePackages float64
	// PackagesMin/PackagesMax bound the packages of each synthetic
	// inventory; defaults 200 and 2000.
	PackagesMin, PackagesMax int
	// Restart restarts the server for reconnect-storm and returns when
	// the command to do so has finished (RestartCommand builds one from a
	// shell command).
	Restart func(ctx context.Context) error
	// StormTimeout is how long agents have to come back after a restart
	// before they count as given up; default 3m. WakeTimeout is the same
	// for wakeup-fanout; default 60s.
	StormTimeout, WakeTimeout time.Duration
	// At, when set, is when the wake-up (wakeup-fanout) or the restart
	// (reconnect-storm) happens, instead of right after connecting: several
	// generators, each simulating part of one fleet, measure the same
	// event. With Observe this generator only measures; another one wakes
	// the group or restarts the servers at At.
	At      time.Time
	Observe bool
	// ManageTimeout is how long management waits for every agent to apply
	// the policy, and again to finish the task; default 5m.
	ManageTimeout time.Duration
	// APIRate is how many read requests per second management sends to
	// the API while it measures (their latency is reported); default 10,
	// negative: none.
	APIRate int
	// VerifyConfigs is how many computers' applied configuration
	// management reads back through the API after measuring (a random
	// sample when below Agents); default all, negative: none.
	VerifyConfigs int
	// SourceAddrs are local addresses to connect from, round-robin (e.g.
	// 127.0.0.2, 127.0.0.3): each source/destination pair has ~28,000
	// ephemeral ports.
	SourceAddrs []string
	// Client is what simulated agents open their sessions with:
	// ClientGRPC (default, the real agent's client) or ClientLean.
	Client string
	// CacheDir holds enrolled identities; default DataDir/../loadtest-cache.
	CacheDir string
	// PprofURL is the server's --debug-listen base URL; when set, the
	// server collects garbage before each memory reading.
	PprofURL string
	// ProfileDir, with PprofURL, receives the server's profiles: its heap
	// once idle, and its CPU during the measured part (file names say
	// which scenario and target).
	ProfileDir string
	// Log receives progress lines; default discarded.
	Log io.Writer
}

// RestartCommand returns a Restart function that runs a shell command.
func RestartCommand(command string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		out, err := execShell(ctx, command)
		if err != nil {
			return fmt.Errorf("restart command: %w: %s", err, strings.TrimSpace(out))
		}
		return nil
	}
}

func (c *Config) setDefaults() error {
	if c.Scenario == "" {
		c.Scenario = Steady
	}
	switch c.Scenario {
	case Steady, Churn, Echo, WakeupFanout, ReconnectStorm, Management:
	default:
		return fmt.Errorf("unknown scenario %q (steady, reconnect-storm, wakeup-fanout, churn, echo, management)", c.Scenario)
	}
	if c.Agents <= 0 {
		return errors.New("--agents must be positive")
	}
	if c.Server == "" {
		return errors.New("--server is required")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Ramp, 500)
	def(&c.InFlight, 256)
	def(&c.PackagesMin, 200)
	def(&c.PackagesMax, 2000)
	defD(&c.Duration, 30*time.Second)
	defD(&c.Settle, 10*time.Second)
	defD(&c.StormTimeout, 3*time.Minute)
	defD(&c.WakeTimeout, time.Minute)
	defD(&c.ManageTimeout, 5*time.Minute)
	if c.APIRate == 0 {
		c.APIRate = 10
	}
	if c.VerifyConfigs == 0 {
		c.VerifyConfigs = c.Agents
	}
	if c.Jitter == 0 {
		c.Jitter = 0.1
	}
	if c.Jitter < 0 || c.Jitter > 0.5 {
		return errors.New("--jitter must be within [0, 0.5]")
	}
	if c.Interval < 0 {
		return errors.New("--interval must not be negative")
	}
	switch c.Scenario {
	case Churn:
		if c.ChangeRate == 0 {
			c.ChangeRate = 0.1
		}
	case Echo: // the echo loop may churn too, to mirror a churn run
	default:
		c.ChangeRate = 0
	}
	if c.ChangeRate < 0 || c.ChangePackages < 0 {
		return errors.New("--change-rate and --change-packages must not be negative")
	}
	if c.ChangePackages == 0 {
		c.ChangePackages = 3
	}
	if c.PackagesMax < c.PackagesMin {
		return errors.New("--packages-max is below --packages-min")
	}
	switch c.Client {
	case "":
		c.Client = ClientGRPC
	case ClientGRPC, ClientLean:
	default:
		return errcode.New(errcode.Invalid, "--client %q: want %s or %s", c.Client, ClientGRPC, ClientLean)
	}
	if c.Observe && (c.At.IsZero() || (c.Scenario != ReconnectStorm && c.Scenario != WakeupFanout)) {
		return errcode.New(errcode.Invalid, "--observe needs --at and the reconnect-storm or wakeup-fanout scenario")
	}
	if c.Scenario == ReconnectStorm && c.Restart == nil && !c.Observe {
		return errors.New("reconnect-storm needs a way to restart the server (--restart-cmd)")
	}
	if c.Scenario == Echo && c.EchoServer == "" {
		return errors.New("the echo scenario needs --echo-server")
	}
	if (c.Scenario == WakeupFanout || c.Scenario == Management) && c.API == "" {
		return fmt.Errorf("%s needs --api", c.Scenario)
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.CacheDir == "" {
		if c.DataDir == "" {
			return errors.New("--cache is required without --data")
		}
		c.CacheDir = filepath.Join(filepath.Dir(filepath.Clean(c.DataDir)), "loadtest-cache")
	}
	return nil
}

// Report holds the results. JSON keys are stable; docs/benchmarks.md
// explains each.
type Report struct {
	Scenario string `json:"scenario"`
	// Client is what the simulated agents opened sessions with (grpc or lean).
	Client string `json:"client"`
	Target string `json:"target"`
	Agents int    `json:"agents"`
	// Connected agents (a session open and its first check-in
	// acknowledged) at the end of the connect phase; for reconnect-storm,
	// after the storm.
	Connected      int            `json:"connected"`
	ConnectSeconds float64        `json:"connect_seconds"`
	Errors         int            `json:"errors"`
	ErrorsByKind   map[string]int `json:"errors_by_kind"`
	// ErrorExamples is the first message seen of each kind of error.
	ErrorExamples map[string]string `json:"error_examples,omitempty"`
	// RetryLater counts explicit back-pressure answers received (not errors).
	RetryLater int `json:"retry_later"`

	// Check-ins in the measured window (steady, churn, echo).
	CheckIns           int     `json:"checkins"`
	CheckInsPerSec     float64 `json:"checkins_per_sec"`
	ChangedCheckIns    int     `json:"changed_checkins"`
	P50ms              float64 `json:"p50_ms"`
	P95ms              float64 `json:"p95_ms"`
	P99ms              float64 `json:"p99_ms"`
	Maxms              float64 `json:"max_ms"`
	ChangedP50ms       float64 `json:"changed_p50_ms,omitempty"`
	ChangedP99ms       float64 `json:"changed_p99_ms,omitempty"`
	BytesPerCheckIn    float64 `json:"bytes_per_checkin"`
	BytesPerCheckInUp  float64 `json:"bytes_per_checkin_up"`
	BytesPerCheckInDn  float64 `json:"bytes_per_checkin_down"`
	BytesPerChanged    float64 `json:"bytes_per_changed_checkin,omitempty"`
	WireBytesPerAgentM float64 `json:"wire_bytes_per_agent_per_minute"`
	FirstCheckInBytes  float64 `json:"first_checkin_bytes"`

	// Wake-up: from the API request until each agent's answering
	// check-in was acknowledged.
	WakeupRequested  int     `json:"wakeup_requested,omitempty"`
	WakeupP50ms      float64 `json:"wakeup_p50_ms,omitempty"`
	WakeupP95ms      float64 `json:"wakeup_p95_ms,omitempty"`
	WakeupP99ms      float64 `json:"wakeup_p99_ms,omitempty"`
	WakeupMaxms      float64 `json:"wakeup_max_ms,omitempty"`
	WakeupAllSeconds float64 `json:"wakeup_all_seconds,omitempty"`
	WakeupMissed     int     `json:"wakeup_missed"`

	// Reconnect storm: from the start of the restart.
	RestartSeconds   float64 `json:"restart_seconds,omitempty"`
	StormAllBackSecs float64 `json:"storm_all_back_seconds,omitempty"`
	StormP50Secs     float64 `json:"storm_p50_seconds,omitempty"`
	StormP99Secs     float64 `json:"storm_p99_seconds,omitempty"`
	StormBack        int     `json:"storm_back,omitempty"`
	// NotBack agents were not back when the storm's time was up (gave-up
	// ones included); GaveUp stopped trying (a refusal the agent's
	// reconnection policy does not retry).
	NotBack         int     `json:"not_back,omitempty"`
	GaveUp          int     `json:"gave_up"`
	ResumedFraction float64 `json:"tls_resumed_fraction,omitempty"`

	// Management, policy: from the request creating the policy until each
	// agent's check-in reporting the new version applied was acknowledged
	// (the server acknowledges after storing it); the first and the last
	// push received show the server's work before pushing and its pacing
	// (ConfigPushRate). PolicyVerified computers showed the version
	// applied through the API afterwards.
	PolicyVersion        string  `json:"policy_version,omitempty"`
	PolicyRequestMs      float64 `json:"policy_request_ms,omitempty"`
	PolicyApplied        int     `json:"policy_applied"`
	PolicyAllAppliedSecs float64 `json:"policy_all_applied_s,omitempty"`
	PolicyP50Secs        float64 `json:"policy_p50_s,omitempty"`
	PolicyP99Secs        float64 `json:"policy_p99_s,omitempty"`
	PolicyFirstPushSecs  float64 `json:"policy_first_push_s,omitempty"`
	PolicyLastPushSecs   float64 `json:"policy_last_push_s,omitempty"`
	PolicyVerified       int     `json:"policy_verified_per_api"`
	// Management, task: from the request creating the task until each
	// agent's task.finished was acknowledged (the run is then succeeded in
	// the store); the first and the last run received show the server's
	// work before delivering and its pacing (TaskDeliveryPerSecond).
	// TaskRunStates are the task's run counts by state as the API reports
	// them afterwards.
	TaskID                string         `json:"task_id,omitempty"`
	TaskRequestMs         float64        `json:"task_request_ms,omitempty"`
	TaskFinished          int            `json:"task_finished"`
	TaskAllFinishedSecs   float64        `json:"task_all_finished_s,omitempty"`
	TaskP50Secs           float64        `json:"task_p50_s,omitempty"`
	TaskP99Secs           float64        `json:"task_p99_s,omitempty"`
	TaskFirstDeliverySecs float64        `json:"task_first_delivery_s,omitempty"`
	TaskLastDeliverySecs  float64        `json:"task_last_delivery_s,omitempty"`
	TaskRunStates         map[string]int `json:"task_run_states,omitempty"`
	// API read latency while management measured (all polled endpoints,
	// and each); errors are failed requests (transport, status >= 300).
	APIRequests   int                   `json:"api_requests,omitempty"`
	APIErrors     int                   `json:"api_errors"`
	APIP50ms      float64               `json:"api_p50_ms,omitempty"`
	APIP99ms      float64               `json:"api_p99_ms,omitempty"`
	APIMaxms      float64               `json:"api_max_ms,omitempty"`
	APIByEndpoint map[string]APIFigures `json:"api_by_endpoint,omitempty"`

	// Server process (from its /metrics): RSS at the end, per idle agent
	// after garbage collection, CPU during the measured part.
	ServerRSS             float64 `json:"server_rss_bytes"`
	ServerRSSBaseline     float64 `json:"server_rss_baseline_bytes"`
	ServerRSSPerAgent     float64 `json:"server_rss_per_agent_bytes"`
	ServerHeapPerAgent    float64 `json:"server_heap_per_agent_bytes"`
	ServerStackPerAgent   float64 `json:"server_stack_per_agent_bytes"`
	ServerGoroutinesAgent float64 `json:"server_goroutines_per_agent"`
	ServerCPUSeconds      float64 `json:"server_cpu_seconds"`
	// ServerCounters are the server's handshake and session counters at
	// the end (TLS handshakes full/resumed/shed/..., RetryLater sent).
	ServerCounters map[string]float64 `json:"server_counters,omitempty"`
	ServerCPUCores float64            `json:"server_cpu_cores"`
	ClientCPUCores float64            `json:"client_cpu_cores"`
	// ClientRSSBytes is the load generator's own resident memory at the
	// end of the measured part (the Go runtime's reservation where /proc
	// is not available).
	ClientRSSBytes  float64 `json:"client_rss_bytes"`
	MeasuredSeconds float64 `json:"measured_seconds"`
	// MachineLoad is the 1-minute load average at the start and the end
	// of the measured part: the machine is shared, so say how busy it was.
	MachineLoad [2]float64 `json:"machine_load_1m"`

	// Echo holds the same loop against the echo endpoint, and EchoRatio
	// is checkins_per_sec divided by the echo's.
	Echo      *Report `json:"echo,omitempty"`
	EchoRatio float64 `json:"echo_ratio,omitempty"`
}

// env is what every phase needs.
type env struct {
	cfg       *Config
	ca        *x509.Certificate
	api       *apiClient
	ids       []*agentIdentity
	serverMet *metricsSource
	echoMet   *metricsSource
}

// Run executes cfg's scenario and returns the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	limit := raiseFileLimit()
	if need := uint64(cfg.Agents) + 256; limit > 0 && need > limit {
		return nil, fmt.Errorf("%d agents need about %d open files but this process may have %d: "+
			"run several mamori-loadtest processes (see docs/benchmarks.md)", cfg.Agents, need, limit)
	}
	e, err := newEnv(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	switch cfg.Scenario {
	case Steady, Churn:
		rep, err := runSteady(ctx, e, cfg.Server, e.serverMet, cfg.PprofURL != "")
		if err != nil || cfg.EchoServer == "" {
			return rep, err
		}
		fmt.Fprintf(cfg.Log, "same loop against the echo endpoint %s\n", cfg.EchoServer)
		echo, err := runSteady(ctx, e, cfg.EchoServer, e.echoMet, cfg.EchoDebugURL != "")
		if err != nil {
			return rep, fmt.Errorf("echo run: %w", err)
		}
		echo.Scenario = Echo
		rep.Echo = echo
		if echo.CheckInsPerSec > 0 {
			rep.EchoRatio = rep.CheckInsPerSec / echo.CheckInsPerSec
		}
		return rep, nil
	case Echo:
		return runSteady(ctx, e, cfg.EchoServer, e.echoMet, cfg.EchoDebugURL != "")
	case WakeupFanout:
		return runFanout(ctx, e)
	case ReconnectStorm:
		return runStorm(ctx, e)
	case Management:
		return runManagement(ctx, e)
	}
	return nil, fmt.Errorf("unknown scenario %q", cfg.Scenario)
}

func newEnv(ctx context.Context, cfg *Config) (*env, error) {
	e := &env{cfg: cfg}
	caPath := cfg.CAFile
	if caPath == "" && cfg.DataDir != "" {
		caPath = filepath.Join(cfg.DataDir, "ca.crt")
	}
	if caPath == "" {
		return nil, errors.New("the server's CA certificate is needed: --data DIR or --ca-file FILE")
	}
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return nil, fmt.Errorf("reading the server CA: %w", err)
	}
	if e.ca, err = pki.ParseCertPEM(caPEM); err != nil {
		return nil, err
	}
	if cfg.API != "" {
		pw := cfg.Password
		if pw == "" && cfg.DataDir != "" {
			if b, err := os.ReadFile(filepath.Join(cfg.DataDir, "initial-admin-password")); err == nil {
				pw = strings.TrimSpace(string(b))
			}
		}
		e.api = newAPI(cfg.API, e.ca, pw)
		e.serverMet = &metricsSource{url: strings.TrimSuffix(cfg.API, "/") + "/metrics", gcURL: strings.TrimSuffix(cfg.PprofURL, "/"), api: e.api}
	}
	if cfg.EchoDebugURL != "" {
		u := strings.TrimSuffix(cfg.EchoDebugURL, "/")
		e.echoMet = &metricsSource{url: u + "/metrics", gcURL: u, c: http.DefaultClient}
	}
	if e.ids, err = identities(ctx, cfg, e.ca, e.api); err != nil {
		return nil, err
	}
	return e, nil
}

// fleet is N simulated agents against one target.
type fleet struct {
	cfg    *Config
	env    *env
	target string
	sims   []*sim
	up     atomic.Int64 // agents with an open session whose first check-in was acknowledged
	// periodic is closed when the agents start their periodic check-ins:
	// after everyone has connected and the idle memory was read, so the
	// connect phase measures connecting and the steady phase a steady state.
	periodic     chan struct{}
	periodicOnce sync.Once
	rec          recorder
	errs         errCounter
	// watch is the title of the task runs the management scenario
	// measures (see sim.acceptRuns).
	watch atomic.Pointer[string]

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newFleet(e *env, target string) (*fleet, error) {
	f := &fleet{cfg: e.cfg, env: e, target: target, periodic: make(chan struct{})}
	for i, id := range e.ids {
		s, err := newSim(f, i, id)
		if err != nil {
			return nil, err
		}
		f.sims = append(f.sims, s)
	}
	return f, nil
}

// connect starts every agent at the ramp rate and waits until all are
// connected (or until a generous deadline); it returns the time taken.
func (f *fleet) connect(ctx context.Context) time.Duration {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel = cancel
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(f.cfg.Ramp))
	defer tick.Stop()
	for _, s := range f.sims {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return time.Since(start)
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			s.run(fctx)
		}()
	}
	deadline := time.Now().Add(60 * time.Second)
	for int(f.up.Load()) < len(f.sims) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// startPeriodic lets the agents begin their periodic check-ins.
func (f *fleet) startPeriodic() { f.periodicOnce.Do(func() { close(f.periodic) }) }

// stop ends every agent's session and connection.
func (f *fleet) stop() {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
	var wg sync.WaitGroup
	for _, s := range f.sims {
		wg.Add(1)
		go func() { defer wg.Done(); s.close() }()
	}
	wg.Wait()
	if err := saveConfigs(f); err != nil {
		fmt.Fprintf(f.cfg.Log, "keeping the agents' configuration versions: %v\n", err)
	}
}

func (f *fleet) jittered() time.Duration {
	iv := float64(f.cfg.Interval)
	return time.Duration(iv + (rand.Float64()*2-1)*iv*f.cfg.Jitter)
}

// changeGap is the time until an agent's next software change: exponential
// with a mean of one minute divided by the change rate.
func (f *fleet) changeGap() time.Duration {
	return time.Duration(rand.ExpFloat64() * float64(time.Minute) / f.cfg.ChangeRate)
}

func (f *fleet) bytes() (in, out uint64) {
	for _, s := range f.sims {
		in += s.in.Load()
		out += s.out.Load()
	}
	return in, out
}

// recorder collects check-in figures while on.
type recorder struct {
	on                 atomic.Bool
	mu                 sync.Mutex
	lat, latChanged    []time.Duration
	up, down           uint64 // no-change check-ins
	changedBytes       uint64
	firstBytes, firsts uint64
}

func (r *recorder) checkIn(d time.Duration, in, out uint64, changed bool, reason agentproto.CheckInReason) {
	if reason == agentproto.CheckInReason_CHECK_IN_REASON_STARTUP {
		r.mu.Lock()
		r.firstBytes += in + out
		r.firsts++
		r.mu.Unlock()
		return
	}
	if !r.on.Load() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if changed {
		r.latChanged = append(r.latChanged, d)
		r.changedBytes += in + out
		return
	}
	r.lat = append(r.lat, d)
	r.up += out
	r.down += in
}

// errCounter counts failures by kind, and keeps the first message of each
// kind as an example.
type errCounter struct {
	mu sync.Mutex
	m  map[string]int
	ex map[string]string
}

// addErr counts err under its kind (errKind).
func (c *errCounter) addErr(err error) {
	kind := errKind(err)
	if kind == "" {
		return
	}
	c.add(kind)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ex == nil {
		c.ex = map[string]string{}
	}
	if _, ok := c.ex[kind]; !ok {
		c.ex[kind] = errcode.Message(err)
	}
}

// examples returns the example message of each kind, prefixed.
func (c *errCounter) examples(prefix string, into map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, v := range c.ex {
		if k != "retry_later" {
			into[prefix+k] = v
		}
	}
}

func (c *errCounter) add(kind string) {
	if kind == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[kind]++
}

// reset forgets the counts and examples (agents may be adding to them).
func (c *errCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m, c.ex = nil, nil
}

func (c *errCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

// keepExamples adds c's example messages to the report.
func (rep *Report) keepExamples(c *errCounter, prefix string) {
	if rep.ErrorExamples == nil {
		rep.ErrorExamples = map[string]string{}
	}
	c.examples(prefix, rep.ErrorExamples)
}

// errKind names a failure for the report.
func errKind(err error) string {
	var rl *agent.RetryLaterError
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		return ""
	case errors.As(err, &rl):
		return "retry_later"
	case errors.Is(err, errAckTimeout):
		return "ack_timeout"
	case errors.Is(err, errNotConnected):
		return "not_connected"
	}
	msg := errcode.Message(err)
	switch {
	case strings.Contains(msg, "connection refused"):
		return "connection_refused"
	case strings.Contains(msg, "handshake"), strings.Contains(msg, "tls:"):
		return "tls_handshake"
	case strings.Contains(msg, "closed the session"), strings.Contains(msg, "EOF"), strings.Contains(msg, "connection reset"),
		strings.Contains(msg, "error reading from server"), strings.Contains(msg, "transport is closing"):
		return "connection_lost"
	case strings.Contains(msg, "deadline exceeded"), strings.Contains(msg, "timed out"), strings.Contains(msg, "timeout"):
		return "timeout"
	}
	return string(errcode.Of(err))
}

// tally moves the error counts into the report: retry_later is
// back-pressure, not an error.
func (rep *Report) tally(m map[string]int) {
	rep.ErrorsByKind = m
	rep.Errors = 0
	for k, v := range m {
		if strings.HasSuffix(k, "retry_later") {
			rep.RetryLater += v
			continue
		}
		rep.Errors += v
	}
}

// connectPhase builds a fleet against target, reads the memory baseline,
// connects every agent and reads idle memory after the settle time.
func connectPhase(ctx context.Context, e *env, target string, met *metricsSource, gc bool, rep *Report) (*fleet, map[string]float64, error) {
	cfg := e.cfg
	f, err := newFleet(e, target)
	if err != nil {
		return nil, nil, err
	}
	base, err := met.read(gc)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the target's metrics: %w", err)
	}
	rep.ServerRSSBaseline = base["process_resident_memory_bytes"]
	fmt.Fprintf(cfg.Log, "%s: connecting %d agents to %s at %d/s\n", cfg.Scenario, len(f.sims), target, cfg.Ramp)
	rep.ConnectSeconds = f.connect(ctx).Seconds()
	rep.Connected = int(f.up.Load())
	if f.rec.firsts > 0 {
		rep.FirstCheckInBytes = float64(f.rec.firstBytes) / float64(f.rec.firsts)
	}
	fmt.Fprintf(cfg.Log, "%d/%d connected in %.1fs; settling %s\n", rep.Connected, len(f.sims), rep.ConnectSeconds, cfg.Settle)
	if rep.Connected == 0 {
		f.stop()
		rep.tally(f.errs.snapshot())
		return nil, nil, fmt.Errorf("no agent connected (%v)", rep.ErrorsByKind)
	}
	sleep(ctx, cfg.Settle)
	idle, err := met.read(gc)
	if err != nil {
		f.stop()
		return nil, nil, err
	}
	if len(idle) > 0 {
		n := float64(rep.Connected)
		rep.ServerRSS = idle["process_resident_memory_bytes"]
		rep.ServerRSSPerAgent = (idle["process_resident_memory_bytes"] - base["process_resident_memory_bytes"]) / n
		rep.ServerHeapPerAgent = (idle["go_memstats_heap_alloc_bytes"] - base["go_memstats_heap_alloc_bytes"]) / n
		rep.ServerStackPerAgent = (idle["go_memstats_stack_inuse_bytes"] - base["go_memstats_stack_inuse_bytes"]) / n
		rep.ServerGoroutinesAgent = (idle["go_goroutines"] - base["go_goroutines"]) / n
	}
	return f, idle, nil
}

// profile saves the target's CPU profile over the next d (in the
// background; wait on the returned channel), or does nothing without a
// profile directory or pprof URL.
func profile(cfg *Config, base, name string, d time.Duration) <-chan struct{} {
	done := make(chan struct{})
	if cfg.ProfileDir == "" || base == "" {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		secs := max(1, int(d.Seconds()))
		saveURL(cfg, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimSuffix(base, "/"), secs), name+".cpu.pprof")
	}()
	return done
}

// selfProfile saves the load generator's own CPU profile over the next d
// (or until the returned stop is called), and its goroutines halfway
// through: on one box the agents' side is half the picture. Without a
// profile directory it does nothing.
func selfProfile(cfg *Config, d time.Duration) (stop func()) {
	if cfg.ProfileDir == "" {
		return func() {}
	}
	os.MkdirAll(cfg.ProfileDir, 0o755)
	path := filepath.Join(cfg.ProfileDir, cfg.Scenario+"-loadgen")
	cpu, err := os.Create(path + ".cpu.pprof")
	if err == nil {
		err = pprof.StartCPUProfile(cpu)
	}
	if err != nil {
		fmt.Fprintf(cfg.Log, "load generator profile: %v\n", err)
		return func() {}
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer cpu.Close()
		defer pprof.StopCPUProfile()
		select {
		case <-time.After(d / 2):
		case <-quit:
			return
		}
		if g, err := os.Create(path + ".goroutines.txt"); err == nil {
			pprof.Lookup("goroutine").WriteTo(g, 1)
			g.Close()
		}
		select {
		case <-time.After(d - d/2):
		case <-quit:
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-done
	}
}

// heapProfile saves the target's heap profile (after a collection).
func heapProfile(cfg *Config, base, name string) {
	if cfg.ProfileDir != "" && base != "" {
		saveURL(cfg, strings.TrimSuffix(base, "/")+"/debug/pprof/heap?gc=1", name+".heap.pprof")
	}
}

func saveURL(cfg *Config, url, file string) {
	c := &http.Client{Timeout: 2 * time.Minute}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintf(cfg.Log, "profile %s: %v\n", file, err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	os.MkdirAll(cfg.ProfileDir, 0o755)
	path := filepath.Join(cfg.ProfileDir, cfg.Scenario+"-"+file)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		fmt.Fprintf(cfg.Log, "profile %s: %v\n", file, err)
	}
}

// pprofBase is the debug URL of a target.
func (e *env) pprofBase(target string) string {
	if target == e.cfg.EchoServer {
		return e.cfg.EchoDebugURL
	}
	return e.cfg.PprofURL
}

// runSteady: steady, churn and echo.
func runSteady(ctx context.Context, e *env, target string, met *metricsSource, gc bool) (*Report, error) {
	cfg := e.cfg
	rep := newReport(cfg, target)
	f, before, err := connectPhase(ctx, e, target, met, gc, rep)
	if err != nil {
		return rep, err
	}
	defer f.stop()
	connectErrs := f.errs.snapshot()
	rep.keepExamples(&f.errs, "connect:")
	f.errs.reset()
	who := "server"
	if target == cfg.EchoServer {
		who = "echo"
	}
	heapProfile(cfg, e.pprofBase(target), who+"-idle")
	profiled := profile(cfg, e.pprofBase(target), who, min(cfg.Duration-time.Second, 30*time.Second))

	in0, out0 := f.bytes()
	cpu0 := clientCPU()
	rep.MachineLoad[0] = loadAverage()
	f.rec.on.Store(true)
	start := time.Now()
	f.startPeriodic()
	mode := fmt.Sprintf("every %s ±%.0f%%", cfg.Interval, cfg.Jitter*100)
	if cfg.Interval == 0 {
		mode = fmt.Sprintf("as fast as answered, %d in flight", cfg.InFlight)
	}
	fmt.Fprintf(cfg.Log, "measuring %s: check-ins %s\n", cfg.Duration, mode)
	if cfg.Interval == 0 {
		closedLoop(ctx, f, cfg.Duration)
	} else {
		sleep(ctx, cfg.Duration)
	}
	f.rec.on.Store(false)
	el := time.Since(start)
	<-profiled
	in1, out1 := f.bytes()
	if err := rep.endMeasure(met, before, el, cpu0); err != nil {
		return rep, err
	}

	f.rec.mu.Lock()
	rep.CheckIns = len(f.rec.lat) + len(f.rec.latChanged)
	rep.ChangedCheckIns = len(f.rec.latChanged)
	rep.CheckInsPerSec = float64(rep.CheckIns) / el.Seconds()
	all := append(slices.Clone(f.rec.lat), f.rec.latChanged...)
	rep.P50ms, rep.P95ms, rep.P99ms, rep.Maxms = pct(all, 50), pct(all, 95), pct(all, 99), pct(all, 100)
	if n := len(f.rec.lat); n > 0 {
		rep.BytesPerCheckInUp = float64(f.rec.up) / float64(n)
		rep.BytesPerCheckInDn = float64(f.rec.down) / float64(n)
		rep.BytesPerCheckIn = rep.BytesPerCheckInUp + rep.BytesPerCheckInDn
	}
	if n := len(f.rec.latChanged); n > 0 {
		rep.ChangedP50ms, rep.ChangedP99ms = pct(f.rec.latChanged, 50), pct(f.rec.latChanged, 99)
		rep.BytesPerChanged = float64(f.rec.changedBytes) / float64(n)
	}
	f.rec.mu.Unlock()
	rep.WireBytesPerAgentM = float64(in1-in0+out1-out0) / float64(len(f.sims)) / el.Minutes()
	errs := f.errs.snapshot()
	for k, v := range connectErrs {
		errs["connect:"+k] += v
	}
	rep.keepExamples(&f.errs, "")
	rep.tally(errs)
	return rep, nil
}

// closedLoop keeps cfg.InFlight check-ins outstanding across the fleet for
// d: each worker checks in the next connected agent as soon as its
// previous check-in was acknowledged.
func closedLoop(ctx context.Context, f *fleet, d time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var next atomic.Uint64
	var wg sync.WaitGroup
	for range min(f.cfg.InFlight, len(f.sims)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			misses := 0
			for ctx.Err() == nil {
				s := f.sims[next.Add(1)%uint64(len(f.sims))]
				if !s.connected.Load() {
					if misses++; misses > len(f.sims) {
						time.Sleep(10 * time.Millisecond)
						misses = 0
					}
					continue
				}
				misses = 0
				if err := s.checkIn(ctx, agentproto.CheckInReason_CHECK_IN_REASON_INTERVAL, ""); err != nil && ctx.Err() == nil {
					f.errs.addErr(err)
				}
			}
		}()
	}
	wg.Wait()
}

// serverFigures adds CPU and RSS from two metric readings.
// endLoad records the measured part's length, and the load generator's CPU
// (since cpu0) and the machine's load over it.
func (rep *Report) endLoad(el, cpu0 time.Duration) {
	rep.MeasuredSeconds = el.Seconds()
	rep.ClientCPUCores = (clientCPU() - cpu0).Seconds() / el.Seconds()
	rep.ClientRSSBytes = clientRSS()
	rep.MachineLoad[1] = loadAverage()
}

// endMeasure is endLoad, then the server's figures from its metrics now
// and before the measured part.
func (rep *Report) endMeasure(met *metricsSource, before map[string]float64, el, cpu0 time.Duration) error {
	after, err := met.read(false)
	if err != nil {
		return err
	}
	rep.endLoad(el, cpu0)
	serverFigures(rep, before, after, el)
	return nil
}

func serverFigures(rep *Report, before, after map[string]float64, el time.Duration) {
	if len(after) == 0 {
		return
	}
	rep.ServerRSS = after["process_resident_memory_bytes"]
	rep.ServerCPUSeconds = after["process_cpu_seconds_total"] - before["process_cpu_seconds_total"]
	rep.ServerCPUCores = rep.ServerCPUSeconds / el.Seconds()
	rep.ServerCounters = serverCounters(after)
}

// serverCounters picks the handshake and session counters.
func serverCounters(m map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if r, ok := strings.CutPrefix(k, `mamori_agent_tls_handshakes_total{result="`); ok {
			out["handshakes_"+strings.TrimSuffix(r, `"}`)] = v
		}
		if r, ok := strings.CutPrefix(k, `mamori_agent_sessions_total{result="`); ok {
			out["sessions_"+strings.TrimSuffix(r, `"}`)] = v
		}
		if r, ok := strings.CutPrefix(k, `mamori_pushes_total{kind="`); ok {
			out["pushes_"+strings.TrimSuffix(r, `"}`)] = v
		}
	}
	return out
}

// runFanout wakes the group "All" and waits until every agent replicated.
func runFanout(ctx context.Context, e *env) (*Report, error) {
	cfg := e.cfg
	rep := newReport(cfg, cfg.Server)
	f, before, err := connectPhase(ctx, e, cfg.Server, e.serverMet, cfg.PprofURL != "", rep)
	if err != nil {
		return rep, err
	}
	defer f.stop()
	f.startPeriodic()
	for _, s := range f.sims {
		s.wokenAt.Store(0)
	}
	if err := waitAt(ctx, cfg); err != nil {
		return rep, err
	}
	cpu0 := clientCPU()
	rep.MachineLoad[0] = loadAverage()
	t0 := time.Now()
	profiled := profile(cfg, cfg.PprofURL, "server", 5*time.Second)
	defer func() { <-profiled }()
	if cfg.Observe {
		fmt.Fprintf(cfg.Log, "another generator wakes group All at %s; measuring %d agents\n", cfg.At.Format(time.RFC3339), rep.Connected)
	} else {
		n, err := e.api.wakeGroup("All")
		if err != nil {
			return rep, err
		}
		rep.WakeupRequested = n
		fmt.Fprintf(cfg.Log, "woke group All: %d connected computers\n", n)
	}
	deadline := t0.Add(cfg.WakeTimeout)
	var lat []time.Duration
	for {
		lat = lat[:0]
		for _, s := range f.sims {
			if w := s.wokenAt.Load(); w > t0.UnixNano() {
				lat = append(lat, time.Duration(w-t0.UnixNano()))
			}
		}
		if len(lat) >= rep.Connected || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	el := time.Since(t0)
	if err := rep.endMeasure(e.serverMet, before, el, cpu0); err != nil {
		return rep, err
	}
	rep.WakeupMissed = rep.Connected - len(lat)
	rep.WakeupP50ms, rep.WakeupP95ms, rep.WakeupP99ms, rep.WakeupMaxms = pct(lat, 50), pct(lat, 95), pct(lat, 99), pct(lat, 100)
	rep.WakeupAllSeconds = rep.WakeupMaxms / 1000
	errs := f.errs.snapshot()
	rep.keepExamples(&f.errs, "")
	if rep.WakeupMissed > 0 {
		errs["wakeup_missed"] = rep.WakeupMissed
	}
	rep.tally(errs)
	return rep, nil
}

// waitAt waits until cfg.At (nothing to wait for when unset). Agents that
// connected only after it would measure a different event: an error.
func waitAt(ctx context.Context, cfg *Config) error {
	if cfg.At.IsZero() {
		return nil
	}
	d := time.Until(cfg.At)
	if d < -time.Second {
		return errcode.New(errcode.Unavailable, "connected %s after --at %s: start the generators earlier or choose a later --at",
			(-d).Round(time.Second), cfg.At.Format(time.RFC3339))
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// runStorm restarts the server and waits until every agent is back.
func runStorm(ctx context.Context, e *env) (*Report, error) {
	cfg := e.cfg
	rep := newReport(cfg, cfg.Server)
	f, _, err := connectPhase(ctx, e, cfg.Server, e.serverMet, cfg.PprofURL != "", rep)
	if err != nil {
		return rep, err
	}
	defer f.stop()
	f.startPeriodic()
	connected := rep.Connected
	connectErrs := f.errs.snapshot()
	rep.keepExamples(&f.errs, "connect:")
	f.errs.reset()
	if err := waitAt(ctx, cfg); err != nil {
		return rep, err
	}
	cpu0 := clientCPU()
	rep.MachineLoad[0] = loadAverage()
	t0 := time.Now()
	if cfg.Observe {
		fmt.Fprintf(cfg.Log, "another generator restarts the servers at %s; measuring %d agents\n", cfg.At.Format(time.RFC3339), connected)
	} else {
		fmt.Fprintf(cfg.Log, "restarting the server with %d agents connected\n", connected)
		if err := cfg.Restart(ctx); err != nil {
			return rep, err
		}
		rep.RestartSeconds = time.Since(t0).Seconds()
	}
	profiled := profile(cfg, cfg.PprofURL, "server", 30*time.Second)
	defer func() { <-profiled }()
	stopSelfProfile := selfProfile(cfg, 30*time.Second)
	defer stopSelfProfile()
	deadline := t0.Add(cfg.StormTimeout)
	var back []time.Duration
	resumed, gaveUp := 0, 0
	lastLog := time.Now()
	for {
		back, resumed, gaveUp = back[:0], 0, 0
		for _, s := range f.sims {
			if u := s.upAt.Load(); u > t0.UnixNano() && s.connected.Load() {
				back = append(back, time.Duration(u-t0.UnixNano()))
				if s.resumed.Load() {
					resumed++
				}
			}
			if s.gaveUp.Load() {
				gaveUp++
			}
		}
		if len(back) >= connected || len(back)+gaveUp >= len(f.sims) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		if time.Since(lastLog) > 5*time.Second {
			// The progress of the storm on both sides: the agents' failed
			// attempts so far, and the server's handshakes and sessions.
			line := fmt.Sprintf("  %.0fs: %d back; agents' failed attempts %s", time.Since(t0).Seconds(), len(back), kinds(f.errs.snapshot()))
			if m, err := e.serverMet.read(false); err == nil && len(m) > 0 {
				line += "; server " + floatKinds(serverCounters(m))
			}
			fmt.Fprintln(cfg.Log, line)
			lastLog = time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	el := time.Since(t0)
	rep.endLoad(el, cpu0)
	rep.StormBack = len(back)
	rep.Connected = int(f.up.Load())
	rep.NotBack = connected - len(back)
	rep.GaveUp = gaveUp
	rep.StormAllBackSecs = pct(back, 100) / 1000
	rep.StormP50Secs, rep.StormP99Secs = pct(back, 50)/1000, pct(back, 99)/1000
	if len(back) > 0 {
		rep.ResumedFraction = float64(resumed) / float64(len(back))
	}
	// The server process is new: its counters and CPU cover its whole life,
	// start-up and storm.
	after, err := e.serverMet.read(false)
	if err == nil && len(after) > 0 {
		rep.ServerRSS = after["process_resident_memory_bytes"]
		rep.ServerCPUSeconds = after["process_cpu_seconds_total"]
		rep.ServerCPUCores = rep.ServerCPUSeconds / el.Seconds()
		rep.ServerCounters = serverCounters(after)
	}
	// Reconnect attempts that failed while the server was away are the
	// storm itself, not errors; agents that did not come back are.
	storm := f.errs.snapshot()
	rep.keepExamples(&f.errs, "storm:")
	errs := map[string]int{}
	for k, v := range connectErrs {
		errs["connect:"+k] = v
	}
	for k, v := range storm {
		if k == "retry_later" {
			rep.RetryLater += v
			continue
		}
		errs["storm:"+k] = v
	}
	rep.ErrorsByKind = errs
	rep.Errors = rep.NotBack
	for k, v := range connectErrs {
		if k == "retry_later" {
			rep.RetryLater += v
		} else {
			rep.Errors += v
		}
	}
	return rep, nil
}

func pct(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(float64(len(s))*p/100)) - 1
	i = min(max(i, 0), len(s)-1)
	return float64(s[i].Microseconds()) / 1000
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// loadAverage is the machine's 1-minute load average (0 if unknown).
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	fmt.Sscan(string(b), &l)
	return l
}

// newReport starts the report of a run of cfg against target.
func newReport(cfg *Config, target string) *Report {
	return &Report{Scenario: cfg.Scenario, Client: cfg.Client, Target: target, Agents: cfg.Agents}
}

// clientRSS is this process's resident memory in bytes.
func clientRSS() float64 {
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for line := range strings.Lines(string(b)) {
			if kb, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				if n, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(kb), " kB"), 64); err == nil {
					return n * 1024
				}
			}
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.Sys)
}
