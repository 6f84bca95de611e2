package e2e

import (
	"cmp"
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/loadtest"
	mserver "github.com/mamori/mamori/internal/server"
	"github.com/mamori/mamori/internal/store/storetest"
)

// The load harness at a size CI can afford: every scenario runs, reports
// sane figures and no errors. The large runs are benchmarks
// (docs/benchmarks.md), not tests.

const harnessAgents = 200

// restartable is an in-process server that can be restarted on the same
// addresses and data directory, as a reconnect storm needs.
type restartable struct {
	t        *testing.T
	cfg      mserver.Config
	mu       sync.Mutex
	srv      *mserver.Server
	stopRun  context.CancelFunc
	runDone  chan error
	restarts int
}

// The TestLoadtest_* tests do not run in parallel: each runs 200 agents
// against its own server, and several at once on a 2-core machine (beside
// the other end-to-end tests) measure the machine, not the harness.

func startRestartable(t *testing.T, tweak func(*mserver.Config)) *restartable {
	t.Helper()
	r := &restartable{t: t, cfg: mserver.Config{
		DataDir: filepath.Join(t.TempDir(), "data"), AgentListen: "127.0.0.1:0", APIListen: "127.0.0.1:0",
		AdminPassword: "correct horse battery staple",
		Log:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		// The restart here takes a fraction of a second, not the
		// default's 5 s.
		ReturnAfter: time.Second,
	}}
	if tweak != nil {
		tweak(&r.cfg)
	}
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	// The next starts reuse the addresses the first one got.
	r.cfg.AgentListen, r.cfg.APIListen = r.srv.AgentAddr(), r.srv.APIAddr()
	t.Cleanup(func() { r.stop() })
	return r
}

func (r *restartable) start() error {
	srv, err := mserver.New(context.Background(), r.cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	r.mu.Lock()
	r.srv, r.stopRun, r.runDone = srv, cancel, done
	r.mu.Unlock()
	return nil
}

func (r *restartable) stop() {
	r.mu.Lock()
	srv, cancel, done := r.srv, r.stopRun, r.runDone
	r.srv = nil
	r.mu.Unlock()
	if srv == nil {
		return
	}
	cancel()
	if err := <-done; err != nil {
		r.t.Errorf("server Run: %v", err)
	}
	srv.Close()
}

// restart is the storm's trigger: stop, then start on the same addresses.
func (r *restartable) restart(context.Context) error {
	r.stop()
	r.restarts++
	return r.start()
}

func (r *restartable) config(scenario string) loadtest.Config {
	return loadtest.Config{
		Scenario: scenario, Server: r.cfg.AgentListen, API: "https://" + r.cfg.APIListen, DataDir: r.cfg.DataDir,
		Password: "correct horse battery staple", Agents: harnessAgents, Ramp: 2000, Settle: 100 * time.Millisecond,
		Duration: 2 * time.Second, PackagesMin: 200, PackagesMax: 400, CacheDir: filepath.Join(filepath.Dir(r.cfg.DataDir), "cache"),
		StormTimeout: 60 * time.Second, WakeTimeout: 20 * time.Second,
	}
}

func startEcho(t *testing.T, dataDir string) *mserver.Echo {
	t.Helper()
	return startEchoOn(t, dataDir, "127.0.0.1:0", false)
}

func startEchoOn(t *testing.T, dataDir, listen string, reusePort bool) *mserver.Echo {
	t.Helper()
	e, err := mserver.NewEcho(mserver.EchoConfig{DataDir: dataDir, Listen: listen, DebugListen: "127.0.0.1:0", ReusePort: reusePort,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		e.Close()
	})
	return e
}

func runHarness(t *testing.T, cfg loadtest.Config) *loadtest.Report {
	t.Helper()
	rep, err := loadtest.Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("%s: %v (report %+v)", cfg.Scenario, err, rep)
	}
	var table strings.Builder
	rep.WriteTable(&table)
	t.Log("\n" + table.String())
	if rep.Connected != harnessAgents || rep.Errors != 0 || rep.GaveUp != 0 {
		t.Fatalf("%s: connected %d of %d, errors %d %v (%v), gave up %d", cfg.Scenario, rep.Connected, harnessAgents, rep.Errors, rep.ErrorsByKind, rep.ErrorExamples, rep.GaveUp)
	}
	if rep.ServerRSS <= 0 && cfg.Scenario != loadtest.Echo {
		t.Errorf("%s: no server RSS reading", cfg.Scenario)
	}
	if rep.ClientRSSBytes <= 0 {
		t.Errorf("%s: no reading of the load generator's own RSS", cfg.Scenario)
	}
	if want := cmp.Or(cfg.Client, loadtest.ClientGRPC); rep.Client != want {
		t.Errorf("%s: report says client %q, want %q", cfg.Scenario, rep.Client, want)
	}
	return rep
}

func checkCheckIns(t *testing.T, rep *loadtest.Report) {
	t.Helper()
	if rep.CheckIns == 0 || rep.CheckInsPerSec <= 0 {
		t.Fatalf("%s: no check-ins measured: %+v", rep.Scenario, rep)
	}
	if rep.P50ms <= 0 || rep.P95ms < rep.P50ms || rep.P99ms < rep.P95ms || rep.Maxms < rep.P99ms {
		t.Errorf("%s: latency percentiles out of order: p50 %.2f p95 %.2f p99 %.2f max %.2f", rep.Scenario, rep.P50ms, rep.P95ms, rep.P99ms, rep.Maxms)
	}
	if rep.BytesPerCheckIn <= 0 || rep.BytesPerCheckIn > 500 || rep.BytesPerCheckInUp <= 0 || rep.BytesPerCheckInDn <= 0 {
		t.Errorf("%s: bytes per no-change check-in %.0f (%.0f up, %.0f down), want within (0, 500]", rep.Scenario,
			rep.BytesPerCheckIn, rep.BytesPerCheckInUp, rep.BytesPerCheckInDn)
	}
}

func TestLoadtest_SteadyAsFastAsAnsweredWithEchoBaseline(t *testing.T) {
	srv := startRestartable(t, nil)
	echo := startEcho(t, srv.cfg.DataDir)
	cfg := srv.config(loadtest.Steady)
	cfg.Interval = 0 // closed loop: capacity
	cfg.InFlight = 32
	cfg.EchoServer, cfg.EchoDebugURL = echo.Addr(), "http://"+echo.DebugAddr()
	rep := runHarness(t, cfg)
	checkCheckIns(t, rep)
	if rep.FirstCheckInBytes <= rep.BytesPerCheckIn {
		t.Errorf("first check-in %.0f bytes is not larger than a no-change one (%.0f)", rep.FirstCheckInBytes, rep.BytesPerCheckIn)
	}
	if rep.Echo == nil || rep.Echo.Connected != harnessAgents || rep.Echo.Errors != 0 {
		t.Fatalf("echo run: %+v", rep.Echo)
	}
	checkCheckIns(t, rep.Echo)
	if rep.EchoRatio <= 0 || rep.EchoRatio != rep.CheckInsPerSec/rep.Echo.CheckInsPerSec {
		t.Errorf("echo ratio %.3f, server %.0f/s, echo %.0f/s", rep.EchoRatio, rep.CheckInsPerSec, rep.Echo.CheckInsPerSec)
	}
	if rep.ServerCPUSeconds <= 0 || rep.Echo.ServerCPUSeconds <= 0 {
		t.Errorf("CPU not measured: server %.2fs, echo %.2fs", rep.ServerCPUSeconds, rep.Echo.ServerCPUSeconds)
	}
}

func TestLoadtest_SteadyOnAnIntervalChecksInAtThatRate(t *testing.T) {
	srv := startRestartable(t, nil)
	cfg := srv.config(loadtest.Steady)
	cfg.Interval, cfg.Duration = 500*time.Millisecond, 3*time.Second
	rep := runHarness(t, cfg)
	checkCheckIns(t, rep)
	want := float64(harnessAgents) / cfg.Interval.Seconds() // 400/s
	if rep.CheckInsPerSec < 0.6*want || rep.CheckInsPerSec > 1.3*want {
		t.Errorf("%.0f check-ins/s, want about %.0f (%d agents every %s)", rep.CheckInsPerSec, want, harnessAgents, cfg.Interval)
	}
}

func TestLoadtest_ChurnStoresChangedSoftwareLists(t *testing.T) {
	srv := startRestartable(t, nil)
	cfg := srv.config(loadtest.Churn)
	cfg.Interval, cfg.Duration = 250*time.Millisecond, 3*time.Second
	cfg.ChangeRate = 60 // each agent about once a second
	rep := runHarness(t, cfg)
	checkCheckIns(t, rep)
	if rep.ChangedCheckIns < harnessAgents/4 || rep.ChangedP50ms <= 0 || rep.BytesPerChanged <= rep.BytesPerCheckIn {
		t.Errorf("churn: %d changed check-ins (p50 %.2f ms, %.0f bytes each)", rep.ChangedCheckIns, rep.ChangedP50ms, rep.BytesPerChanged)
	}
}

func TestLoadtest_WakeupFanoutReachesEveryAgent(t *testing.T) {
	srv := startRestartable(t, nil)
	rep := runHarness(t, srv.config(loadtest.WakeupFanout))
	if rep.WakeupRequested != harnessAgents || rep.WakeupMissed != 0 {
		t.Fatalf("wake-up: requested %d, missed %d", rep.WakeupRequested, rep.WakeupMissed)
	}
	if rep.WakeupAllSeconds <= 0 || rep.WakeupAllSeconds > 10 || rep.WakeupP50ms > rep.WakeupMaxms {
		t.Errorf("wake-up figures: all in %.2fs, p50 %.1f ms, max %.1f ms", rep.WakeupAllSeconds, rep.WakeupP50ms, rep.WakeupMaxms)
	}
}

// After a restart every agent comes back, and on abbreviated handshakes:
// the session ticket keys survive the restart in the data directory.
func TestLoadtest_ReconnectStormAllBackOnResumedSessions(t *testing.T) {
	srv := startRestartable(t, nil)
	cfg := srv.config(loadtest.ReconnectStorm)
	cfg.Restart = srv.restart
	rep := runHarness(t, cfg)
	if srv.restarts != 1 || rep.StormBack != harnessAgents || rep.StormAllBackSecs <= 0 {
		t.Fatalf("storm: %d restarts, %d back in %.1fs", srv.restarts, rep.StormBack, rep.StormAllBackSecs)
	}
	if rep.ResumedFraction < 0.95 || rep.ServerCounters["handshakes_resumed"] < 0.95*harnessAgents {
		t.Errorf("only %.0f%% of reconnects resumed their TLS session (server: %v)", 100*rep.ResumedFraction, rep.ServerCounters)
	}
}

// With room for one session setup at a time the server sheds the storm with
// RetryLater, and every agent still comes back.
func TestLoadtest_ReconnectStormShedWithRetryLaterNobodyGivesUp(t *testing.T) {
	srv := startRestartable(t, func(c *mserver.Config) { c.MaxSessionSetups = 1 })
	cfg := srv.config(loadtest.ReconnectStorm)
	cfg.Restart = srv.restart
	rep := runHarness(t, cfg)
	if rep.StormBack != harnessAgents {
		t.Fatalf("storm: %d of %d back", rep.StormBack, harnessAgents)
	}
	if rep.RetryLater == 0 || rep.ServerCounters["sessions_retry_later"] == 0 {
		t.Errorf("no RetryLater during the storm (agents %d, server %v)", rep.RetryLater, rep.ServerCounters)
	}
}

// A server stopped on purpose tells every agent when to come back, spread
// over them: the simulated agents (both clients) honour the times, so the
// storm lasts at least as long as the schedule and nobody is back early.
func TestLoadtest_ReconnectStormFollowsTheStoppingServersSchedule(t *testing.T) {
	const after, rate = 1 * time.Second, 100 // 200 agents over 2 s
	for _, client := range []string{loadtest.ClientGRPC, loadtest.ClientLean} {
		t.Run(client, func(t *testing.T) {
			srv := startRestartable(t, func(c *mserver.Config) { c.ReturnAfter, c.ReturnRate = after, rate })
			cfg := srv.config(loadtest.ReconnectStorm)
			cfg.Client = client
			cfg.Restart = srv.restart
			rep := runHarness(t, cfg)
			if rep.StormBack != harnessAgents || rep.NotBack != 0 || rep.GaveUp != 0 {
				t.Fatalf("storm: %d of %d back, %d not back, %d gave up", rep.StormBack, harnessAgents, rep.NotBack, rep.GaveUp)
			}
			// One hint each from the stopping server; the new one had
			// nothing to refuse (200 agents, 1,024 set-ups at once).
			if rep.RetryLater != harnessAgents || rep.ServerCounters["sessions_retry_later"] != 0 {
				t.Errorf("%d RetryLater received, want %d (one per agent); new server's RetryLater %v", rep.RetryLater, harnessAgents,
					rep.ServerCounters["sessions_retry_later"])
			}
			last := after + time.Duration(harnessAgents-1)*time.Second/rate
			if got := time.Duration(rep.StormAllBackSecs * float64(time.Second)); got < last {
				t.Errorf("all back after %s, before the last agent's return time %s", got, last)
			}
			if got := time.Duration(rep.StormP50Secs * float64(time.Second)); got < after+time.Second*harnessAgents/2/rate-100*time.Millisecond {
				t.Errorf("half back after %s: earlier than the schedule allows", got)
			}
		})
	}
}

func TestLoadtest_EchoScenarioAloneMeasuresTheBaseline(t *testing.T) {
	srv := startRestartable(t, nil)
	echo := startEcho(t, srv.cfg.DataDir)
	cfg := srv.config(loadtest.Echo)
	cfg.EchoServer, cfg.EchoDebugURL = echo.Addr(), "http://"+echo.DebugAddr()
	cfg.Interval = 0
	cfg.InFlight = 32
	rep := runHarness(t, cfg)
	checkCheckIns(t, rep)
}

// Echo endpoints share one address with ReusePort, as servers do (one
// process holds at most 20,000 agents here): the kernel spreads the agents
// over them. Without it a second endpoint cannot bind the address.
func TestLoadtest_EchoEndpointsShareAnAddress(t *testing.T) {
	srv := startRestartable(t, nil)
	first := startEchoOn(t, srv.cfg.DataDir, "127.0.0.1:0", true)
	second := startEchoOn(t, srv.cfg.DataDir, first.Addr(), true)
	if e, err := mserver.NewEcho(mserver.EchoConfig{DataDir: srv.cfg.DataDir, Listen: first.Addr()}); err == nil {
		e.Close()
		t.Fatal("an echo endpoint without ReusePort bound an address two others listen on")
	}
	cfg := srv.config(loadtest.Echo)
	cfg.EchoServer = first.Addr()
	cfg.Interval = 0
	cfg.InFlight = 32
	rep := runHarness(t, cfg)
	checkCheckIns(t, rep)
	for i, e := range []*mserver.Echo{first, second} {
		m := &apiClient{base: "http://" + e.DebugAddr(), http: &http.Client{Timeout: 10 * time.Second}}
		n := m.metric(t, `mamori_agent_tls_handshakes_total{result="full"}`) + m.metric(t, `mamori_agent_tls_handshakes_total{result="resumed"}`)
		if n == 0 || n == harnessAgents {
			t.Errorf("echo endpoint %d took %.0f of the %d agents' connections, want some but not all", i+1, n, harnessAgents)
		}
	}
}

// checkManagement asserts that every agent applied the policy and finished
// the task, as the agents saw it (acknowledged reports) and as the API
// reports it afterwards, with the API answering meanwhile.
func checkManagement(t *testing.T, rep *loadtest.Report) {
	t.Helper()
	if rep.PolicyVersion == "" || rep.PolicyApplied != harnessAgents || rep.PolicyAllAppliedSecs <= 0 || rep.PolicyVerified != harnessAgents {
		t.Errorf("policy %q: applied by %d of %d in %.2fs, %d confirmed by the API", rep.PolicyVersion, rep.PolicyApplied, harnessAgents,
			rep.PolicyAllAppliedSecs, rep.PolicyVerified)
	}
	if rep.PolicyFirstPushSecs <= 0 || rep.PolicyLastPushSecs < rep.PolicyFirstPushSecs || rep.PolicyLastPushSecs > rep.PolicyAllAppliedSecs || rep.PolicyP50Secs > rep.PolicyP99Secs {
		t.Errorf("policy timings: pushes %.2fs–%.2fs, p50 %.2fs, p99 %.2fs, all %.2fs", rep.PolicyFirstPushSecs, rep.PolicyLastPushSecs,
			rep.PolicyP50Secs, rep.PolicyP99Secs, rep.PolicyAllAppliedSecs)
	}
	if rep.TaskFinished != harnessAgents || rep.TaskAllFinishedSecs <= 0 || rep.TaskRunStates["succeeded"] != harnessAgents || len(rep.TaskRunStates) != 1 {
		t.Errorf("task: finished by %d of %d in %.2fs; run states per the API %v", rep.TaskFinished, harnessAgents, rep.TaskAllFinishedSecs, rep.TaskRunStates)
	}
	if rep.TaskFirstDeliverySecs <= 0 || rep.TaskLastDeliverySecs < rep.TaskFirstDeliverySecs || rep.TaskLastDeliverySecs > rep.TaskAllFinishedSecs || rep.TaskP50Secs > rep.TaskP99Secs {
		t.Errorf("task timings: runs %.2fs–%.2fs, p50 %.2fs, p99 %.2fs, all %.2fs", rep.TaskFirstDeliverySecs, rep.TaskLastDeliverySecs,
			rep.TaskP50Secs, rep.TaskP99Secs, rep.TaskAllFinishedSecs)
	}
	if rep.ServerCounters["pushes_configuration"] < harnessAgents || rep.ServerCounters["pushes_task_runs"] < harnessAgents {
		t.Errorf("server pushes during the measurement: %v", rep.ServerCounters)
	}
	if rep.APIRequests == 0 || rep.APIErrors != 0 || rep.APIP50ms <= 0 || rep.APIP99ms < rep.APIP50ms || rep.APIMaxms < rep.APIP99ms {
		t.Errorf("API reads: %d requests, %d errors, p50 %.1f ms, p99 %.1f ms, max %.1f ms", rep.APIRequests, rep.APIErrors, rep.APIP50ms, rep.APIP99ms, rep.APIMaxms)
	}
	if a := rep.APIByEndpoint["GET /api/v1/computers?limit=50"]; a.Requests == 0 || a.P50ms <= 0 {
		t.Errorf("the computer list was not polled: %v", rep.APIByEndpoint)
	}
}

// A policy assigned to All reaches every agent, which reports it applied;
// a task run now on All is delivered to every agent, which reports it
// started and finished.
func TestLoadtest_ManagementPolicyAndTaskReachEveryAgent(t *testing.T) {
	srv := startRestartable(t, nil)
	cfg := srv.config(loadtest.Management)
	cfg.APIRate = 5 // open loop: more starves a race-enabled server on 2 cores
	rep := runHarness(t, cfg)
	checkManagement(t, rep)
}

// The server paces both: configuration pushes at ConfigPushRate (spread
// evenly) and task runs at TaskDeliveryPerSecond (a second's worth at
// once, then at that rate), so at 100/s 200 agents take seconds to reach
// however fast the machine is.
func TestLoadtest_ManagementIsPacedByTheServersRates(t *testing.T) {
	const rate = 100
	srv := startRestartable(t, func(c *mserver.Config) { c.ConfigPushRate, c.TaskDeliveryPerSecond = rate, rate })
	cfg := srv.config(loadtest.Management)
	rep := runHarness(t, cfg)
	checkManagement(t, rep)
	// The first push goes at once, the last one 199 later.
	if pacing := float64(harnessAgents-1) / rate; rep.PolicyLastPushSecs < pacing*0.95 {
		t.Errorf("the last configuration push arrived %.2fs after the change; at %d/s it cannot before %.2fs", rep.PolicyLastPushSecs, rate, pacing)
	}
	// The first 100 runs go at once, the other 100 a second later.
	if pacing := float64(harnessAgents-rate) / rate; rep.TaskLastDeliverySecs < pacing*0.95 {
		t.Errorf("the last task run arrived %.2fs after run now; at %d/s it cannot before %.2fs", rep.TaskLastDeliverySecs, rate, pacing)
	}
	// Both phases last seconds at the default 10 requests/s: every
	// endpoint was read meanwhile.
	if len(rep.APIByEndpoint) != 3 {
		t.Errorf("polled endpoints: %v", rep.APIByEndpoint)
	}
}

// The same harness against a server on PostgreSQL: the management scenario
// (policy push, task runs to every agent, API reads) and a reconnect storm.
func TestLoadtest_OnPostgreSQLManagementAndStormReachEveryAgent(t *testing.T) {
	database := storetest.PostgresSchema(t, storetest.PostgresURL(t))
	srv := startRestartable(t, func(c *mserver.Config) { c.Database = database })
	cfg := srv.config(loadtest.Management)
	cfg.APIRate = 5
	checkManagement(t, runHarness(t, cfg))

	cfg = srv.config(loadtest.ReconnectStorm)
	cfg.Restart = srv.restart
	rep := runHarness(t, cfg)
	if srv.restarts != 1 || rep.StormBack != harnessAgents || rep.GaveUp != 0 {
		t.Fatalf("storm on PostgreSQL: %d restarts, %d of %d back, %d gave up", srv.restarts, rep.StormBack, harnessAgents, rep.GaveUp)
	}
}

// Two generators share one fleet, as the scale-out benchmark runs them
// (scripts/bench-cluster.sh): at --at one wakes group All, or restarts the
// server, and the other only measures; both see all their agents replicate,
// or come back.
func TestLoadtest_TwoGeneratorsMeasureOneEventAtTheSameTime(t *testing.T) {
	srv := startRestartable(t, nil)
	caches := []string{filepath.Join(t.TempDir(), "cache-a"), filepath.Join(t.TempDir(), "cache-b")}
	// Enroll both fleets first, so --at only has to cover connecting them,
	// and leave three times what connecting took here: CI machines are
	// slow and busy with other packages' tests.
	lead := 5 * time.Second
	for _, dir := range caches {
		cfg := srv.config(loadtest.Steady)
		cfg.CacheDir, cfg.Duration = dir, 100*time.Millisecond
		rep, err := loadtest.Run(t.Context(), cfg)
		if err != nil {
			t.Fatalf("enrolling %s: %v", dir, err)
		}
		lead += 3 * time.Duration(rep.ConnectSeconds*float64(time.Second))
	}
	t.Logf("generators start %s before the event", lead.Round(time.Millisecond))
	for _, scenario := range []string{loadtest.WakeupFanout, loadtest.ReconnectStorm} {
		at := time.Now().Add(lead)
		reps, errs := make([]*loadtest.Report, 2), make([]error, 2)
		var wg sync.WaitGroup
		for i := range 2 {
			cfg := srv.config(scenario)
			cfg.CacheDir, cfg.At, cfg.Observe = caches[i], at, i == 1
			if scenario == loadtest.ReconnectStorm && i == 0 {
				cfg.Restart = srv.restart
			}
			wg.Go(func() { reps[i], errs[i] = loadtest.Run(t.Context(), cfg) })
		}
		wg.Wait()
		for i, rep := range reps {
			if errs[i] != nil {
				t.Fatalf("%s, generator %d: %v", scenario, i, errs[i])
			}
			if rep.Connected != harnessAgents || rep.Errors != 0 || rep.GaveUp != 0 {
				t.Fatalf("%s, generator %d: connected %d, errors %v, gave up %d", scenario, i, rep.Connected, rep.ErrorsByKind, rep.GaveUp)
			}
			switch scenario {
			case loadtest.WakeupFanout:
				if rep.WakeupMissed != 0 || rep.WakeupAllSeconds <= 0 {
					t.Errorf("generator %d: %d missed, all in %.2fs", i, rep.WakeupMissed, rep.WakeupAllSeconds)
				}
			case loadtest.ReconnectStorm:
				if rep.StormBack != harnessAgents {
					t.Errorf("generator %d: %d back", i, rep.StormBack)
				}
			}
		}
		if scenario == loadtest.WakeupFanout && (reps[0].WakeupRequested != 2*harnessAgents || reps[1].WakeupRequested != 0) {
			t.Errorf("wake-ups requested: %d by the waker (want the whole fleet, %d), %d by the observer", reps[0].WakeupRequested, 2*harnessAgents, reps[1].WakeupRequested)
		}
	}
	if srv.restarts != 1 {
		t.Errorf("server restarted %d times, want once (by one generator)", srv.restarts)
	}
}

func TestLoadtest_ObserveNeedsAtAndAnEventScenario(t *testing.T) {
	for _, cfg := range []loadtest.Config{
		{Scenario: loadtest.WakeupFanout, Observe: true},
		{Scenario: loadtest.Steady, Observe: true, At: time.Now()},
	} {
		cfg.Server, cfg.API, cfg.Agents, cfg.Token = "127.0.0.1:1", "https://127.0.0.1:1", 1, "t"
		if _, err := loadtest.Run(t.Context(), cfg); errcode.Of(err) != errcode.Invalid {
			t.Errorf("%s observe (at %v): %v, want invalid", cfg.Scenario, cfg.At, err)
		}
	}
}

// The lean client speaks the same wire as the agent's: the scenarios that
// drive the server's features reach every agent with it too.
func TestLoadtest_LeanClientSteadyFanoutAndManagement(t *testing.T) {
	srv := startRestartable(t, nil)
	for _, scenario := range []string{loadtest.Steady, loadtest.WakeupFanout, loadtest.Management} {
		cfg := srv.config(scenario)
		cfg.Client = loadtest.ClientLean
		switch scenario {
		case loadtest.Steady:
			cfg.Interval, cfg.Duration = 500*time.Millisecond, 3*time.Second
		case loadtest.Management:
			cfg.APIRate = 5
		}
		rep := runHarness(t, cfg)
		switch scenario {
		case loadtest.Steady:
			checkCheckIns(t, rep)
		case loadtest.WakeupFanout:
			if rep.WakeupRequested != harnessAgents || rep.WakeupMissed != 0 || rep.WakeupAllSeconds <= 0 {
				t.Errorf("wake-up: requested %d, missed %d, all in %.2fs", rep.WakeupRequested, rep.WakeupMissed, rep.WakeupAllSeconds)
			}
		case loadtest.Management:
			checkManagement(t, rep)
		}
	}
}

// Shed with RetryLater, lean agents retry on the connection they hold, come
// back on resumed TLS sessions, and none gives up.
func TestLoadtest_LeanClientStormShedWithRetryLaterAllBackResumed(t *testing.T) {
	srv := startRestartable(t, func(c *mserver.Config) { c.MaxSessionSetups = 1 })
	cfg := srv.config(loadtest.ReconnectStorm)
	cfg.Client, cfg.Restart = loadtest.ClientLean, srv.restart
	rep := runHarness(t, cfg)
	if srv.restarts != 1 || rep.StormBack != harnessAgents {
		t.Fatalf("storm: %d restarts, %d of %d back", srv.restarts, rep.StormBack, harnessAgents)
	}
	if rep.RetryLater == 0 || rep.ServerCounters["sessions_retry_later"] == 0 {
		t.Errorf("no RetryLater during the storm (agents %d, server %v)", rep.RetryLater, rep.ServerCounters)
	}
	if rep.ResumedFraction < 0.95 {
		t.Errorf("only %.0f%% of reconnects resumed their TLS session (server: %v)", 100*rep.ResumedFraction, rep.ServerCounters)
	}
}

func TestLoadtest_UnknownClientIsRefused(t *testing.T) {
	cfg := loadtest.Config{Scenario: loadtest.Steady, Server: "127.0.0.1:1", API: "https://127.0.0.1:1", Agents: 1, Token: "t", Client: "quic"}
	if _, err := loadtest.Run(t.Context(), cfg); errcode.Of(err) != errcode.Invalid || !strings.Contains(errcode.Message(err), "quic") {
		t.Errorf("--client quic: %v, want invalid naming it", err)
	}
}

// Agents keep the configuration they applied between runs, as real agents
// keep it on disk: a second run of the same fleet is pushed nothing.
func TestLoadtest_AgentsKeepTheirConfigurationBetweenRuns(t *testing.T) {
	srv := startRestartable(t, nil)
	pushes := make([]float64, 2)
	for i := range pushes {
		cfg := srv.config(loadtest.Steady)
		cfg.Client, cfg.Duration = loadtest.ClientLean, 500*time.Millisecond
		pushes[i] = runHarness(t, cfg).ServerCounters["pushes_configuration"]
	}
	if pushes[0] < harnessAgents || pushes[1] != pushes[0] {
		t.Errorf("configuration pushes (server total) after the first run %.0f, after the second %.0f: want %d, then none more", pushes[0], pushes[1], harnessAgents)
	}
}

// Agents still trying when the storm's time is up are counted as not back,
// apart from agents that gave up (none here: the server only restarted).
func TestLoadtest_StormTimeUpCountsAgentsNotBackApartFromGaveUp(t *testing.T) {
	srv := startRestartable(t, nil)
	cfg := srv.config(loadtest.ReconnectStorm)
	cfg.Restart, cfg.StormTimeout = srv.restart, time.Millisecond
	rep, err := loadtest.Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.NotBack == 0 || rep.GaveUp != 0 || rep.Errors != rep.NotBack || rep.StormBack+rep.NotBack != harnessAgents {
		t.Errorf("storm cut short: %d back, %d not back, %d gave up, %d errors", rep.StormBack, rep.NotBack, rep.GaveUp, rep.Errors)
	}
}
