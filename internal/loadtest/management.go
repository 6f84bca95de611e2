package loadtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// policyPrefix names the policies the management scenario creates; a run
// deletes those of earlier runs before connecting, so its change is a
// change.
const policyPrefix = "loadtest management "

// APIFigures are the latencies of one polled endpoint.
type APIFigures struct {
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	Maxms    float64 `json:"max_ms"`
}

// runManagement connects the fleet, then (a) creates a policy assigned to
// All and waits until every agent's report of the new version was
// acknowledged — the server acknowledges a check-in after storing it, so
// that is when the server holds "applied" for the computer — and (b)
// creates a display_message task, runs it now on All and waits until every
// agent's task.finished was acknowledged (the run is then succeeded in the
// store). Meanwhile read endpoints of the API are polled at APIRate. The
// server's own view is checked afterwards: the task's run counts, and the
// applied version of every computer (VerifyConfigs of them) through
// GET /computers/{id}/effective-config.
func runManagement(ctx context.Context, e *env) (*Report, error) {
	cfg := e.cfg
	rep := newReport(cfg, cfg.Server)
	if err := e.api.login(); err != nil {
		return rep, err
	}
	if err := e.api.deletePolicies(policyPrefix); err != nil {
		return rep, fmt.Errorf("deleting the policies of earlier runs: %w", err)
	}
	f, _, err := connectPhase(ctx, e, cfg.Server, e.serverMet, cfg.PprofURL != "", rep)
	if err != nil {
		return rep, err
	}
	defer f.stop()
	f.startPeriodic()
	connectErrs := f.errs.snapshot()
	rep.keepExamples(&f.errs, "connect:")
	f.errs.reset()
	// Agents that connected report the configuration they got on
	// connecting; measure from a quiet fleet.
	if !waitUntil(ctx, time.Minute, func() bool { return f.quiet() }) {
		return rep, fmt.Errorf("the fleet still had reports to send a minute after settling")
	}
	before, err := e.serverMet.read(false)
	if err != nil {
		return rep, err
	}
	cpu0 := clientCPU()
	rep.MachineLoad[0] = loadAverage()
	start := time.Now()
	poll := startPoller(ctx, e, f)
	profiled := profile(cfg, cfg.PprofURL, "server", 20*time.Second)

	phaseErr := managePolicy(ctx, e, f, rep)
	if phaseErr == nil {
		phaseErr = manageTask(ctx, e, f, rep, poll)
	}
	poll.stop()
	el := time.Since(start)
	<-profiled
	if err := rep.endMeasure(e.serverMet, before, el, cpu0); err != nil {
		return rep, err
	}
	for k, v := range serverCounters(before) {
		if strings.HasPrefix(k, "pushes_") {
			rep.ServerCounters[k] -= v // during the measured part
		}
	}
	poll.figures(rep)

	errs := f.errs.snapshot()
	for k, v := range connectErrs {
		errs["connect:"+k] += v
	}
	if phaseErr == nil && rep.PolicyVersion != "" {
		rep.PolicyVerified, err = verifyConfigs(ctx, e, f, rep.PolicyVersion, cfg.VerifyConfigs)
		if err != nil {
			phaseErr = err
		}
		if want := min(len(f.sims), cfg.VerifyConfigs); rep.PolicyVerified < want {
			errs["policy_not_applied_per_api"] = want - rep.PolicyVerified
		}
	}
	if missing := len(f.sims) - rep.PolicyApplied; rep.PolicyVersion != "" && missing > 0 {
		errs["policy_not_applied"] = missing
	}
	if missing := len(f.sims) - rep.TaskFinished; rep.TaskID != "" && missing > 0 {
		errs["task_not_finished"] = missing
	}
	if rep.TaskID != "" {
		if n := len(f.sims) - rep.TaskRunStates["succeeded"]; n > 0 {
			errs["task_runs_not_succeeded_per_api"] = n
		}
	}
	if rep.APIErrors > 0 {
		errs["api"] = rep.APIErrors
	}
	rep.keepExamples(&f.errs, "")
	rep.tally(errs)
	return rep, phaseErr
}

// managePolicy is phase (a).
func managePolicy(ctx context.Context, e *env, f *fleet, rep *Report) error {
	cfg := e.cfg
	name := policyPrefix + time.Now().UTC().Format("2006-01-02T15:04:05.000")
	t0 := time.Now()
	var pol struct{ ID string }
	if err := e.api.post("/api/v1/policies", map[string]any{"name": name, "product": "agent",
		"settings": map[string]any{"log_level": map[string]string{"flag": "force", "value": "warn"}}}, &pol); err != nil {
		return err
	}
	if err := e.api.post("/api/v1/policies/"+pol.ID+"/assignments", map[string]any{"target_type": "static", "target": "All"}, nil); err != nil {
		return err
	}
	rep.PolicyRequestMs = float64(time.Since(t0).Microseconds()) / 1000
	// Every agent is in All and nothing else is assigned: one document,
	// one version for all.
	var eff struct {
		Version string `json:"version"`
	}
	if err := e.api.get("/api/v1/computers/"+url.PathEscape(f.sims[0].id.ComputerID)+"/effective-config", &eff); err != nil {
		return err
	}
	rep.PolicyVersion = eff.Version
	fmt.Fprintf(cfg.Log, "policy %q assigned to All (version %s); waiting for %d agents to apply it\n", name, eff.Version, len(f.sims))
	applied := func(s *sim) bool {
		v := s.configAcked.Load()
		return v != nil && *v == eff.Version && s.configAckAt.Load() > t0.UnixNano()
	}
	done := waitProgress(ctx, cfg, "applied", cfg.ManageTimeout, len(f.sims), func() int { return count(f, applied) })
	var lat, push []time.Duration
	for _, s := range f.sims {
		if applied(s) {
			lat = append(lat, time.Duration(s.configAckAt.Load()-t0.UnixNano()))
			push = append(push, time.Duration(s.configPushAt.Load()-t0.UnixNano()))
		}
	}
	rep.PolicyApplied = len(lat)
	rep.PolicyP50Secs, rep.PolicyP99Secs = pct(lat, 50)/1000, pct(lat, 99)/1000
	rep.PolicyFirstPushSecs, rep.PolicyLastPushSecs = pct(push, 0)/1000, pct(push, 100)/1000
	if done {
		rep.PolicyAllAppliedSecs = pct(lat, 100) / 1000
	}
	return ctx.Err()
}

// manageTask is phase (b).
func manageTask(ctx context.Context, e *env, f *fleet, rep *Report, poll *poller) error {
	cfg := e.cfg
	title := fmt.Sprintf("loadtest %d", rand.Uint64())
	f.watch.Store(&title)
	t0 := time.Now()
	var task struct{ ID string }
	if err := e.api.post("/api/v1/tasks", map[string]any{"name": "loadtest " + time.Now().UTC().Format("2006-01-02T15:04:05.000"),
		"type": "display_message", "params": map[string]any{"title": title, "message": "load harness"}}, &task); err != nil {
		return err
	}
	if err := e.api.post("/api/v1/tasks/"+task.ID+"/run", map[string]any{"targets": []map[string]string{{"type": "static_group", "path": "All"}}}, nil); err != nil {
		return err
	}
	rep.TaskRequestMs = float64(time.Since(t0).Microseconds()) / 1000
	rep.TaskID = task.ID
	poll.task.Store(&task.ID)
	fmt.Fprintf(cfg.Log, "task %s run now on All; waiting for %d agents to finish it\n", task.ID, len(f.sims))
	finished := func(s *sim) bool { return s.taskAckAt.Load() > t0.UnixNano() }
	done := waitProgress(ctx, cfg, "finished", cfg.ManageTimeout, len(f.sims), func() int { return count(f, finished) })
	var lat, push []time.Duration
	for _, s := range f.sims {
		if finished(s) {
			lat = append(lat, time.Duration(s.taskAckAt.Load()-t0.UnixNano()))
		}
		if p := s.taskPushAt.Load(); p > t0.UnixNano() {
			push = append(push, time.Duration(p-t0.UnixNano()))
		}
	}
	rep.TaskFinished = len(lat)
	rep.TaskP50Secs, rep.TaskP99Secs = pct(lat, 50)/1000, pct(lat, 99)/1000
	rep.TaskFirstDeliverySecs, rep.TaskLastDeliverySecs = pct(push, 0)/1000, pct(push, 100)/1000
	if done {
		rep.TaskAllFinishedSecs = pct(lat, 100) / 1000
	}
	// The server's view: the run counts of the task.
	var t struct {
		Runs map[string]int `json:"runs"`
	}
	if err := e.api.get("/api/v1/tasks/"+url.PathEscape(task.ID), &t); err != nil {
		return err
	}
	rep.TaskRunStates = t.Runs
	return ctx.Err()
}

// verifyConfigs reads the applied version of up to limit computers (all
// when limit covers the fleet, else a random sample) through the API and
// returns how many show version applied.
func verifyConfigs(ctx context.Context, e *env, f *fleet, version string, limit int) (int, error) {
	ids := make([]string, len(f.sims))
	for i, s := range f.sims {
		ids[i] = s.id.ComputerID
	}
	if limit <= 0 {
		return 0, nil
	}
	if limit < len(ids) {
		rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		ids = ids[:limit]
	}
	if len(ids) == 0 {
		return 0, nil
	}
	fmt.Fprintf(e.cfg.Log, "checking the applied version of %d computers through the API\n", len(ids))
	var ok atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, id := range ids {
		g.Go(func() error {
			var eff struct {
				Version        string `json:"version"`
				AppliedVersion string `json:"applied_version"`
			}
			if err := e.api.get("/api/v1/computers/"+url.PathEscape(id)+"/effective-config", &eff); err != nil {
				return err
			}
			if eff.Version == version && eff.AppliedVersion == version {
				ok.Add(1)
			}
			return gctx.Err()
		})
	}
	err := g.Wait()
	return int(ok.Load()), err
}

// quiet reports whether no agent has anything left to report.
func (f *fleet) quiet() bool {
	for _, s := range f.sims {
		s.pmu.Lock()
		busy := s.report != nil || len(s.outbox) > 0
		s.pmu.Unlock()
		if busy {
			return false
		}
	}
	return true
}

func count(f *fleet, ok func(*sim) bool) int {
	n := 0
	for _, s := range f.sims {
		if ok(s) {
			n++
		}
	}
	return n
}

// waitProgress waits until n() reaches want (true) or timeout passes,
// logging progress every 5 s.
func waitProgress(ctx context.Context, cfg *Config, what string, timeout time.Duration, want int, n func() int) bool {
	start := time.Now()
	last := start
	for {
		got := n()
		if got >= want {
			return true
		}
		if time.Since(start) > timeout || ctx.Err() != nil {
			fmt.Fprintf(cfg.Log, "  gave up after %s: %d of %d %s\n", timeout, got, want, what)
			return false
		}
		if time.Since(last) >= 5*time.Second {
			fmt.Fprintf(cfg.Log, "  %.0fs: %d of %d %s\n", time.Since(start).Seconds(), got, want, what)
			last = time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitUntil(ctx context.Context, timeout time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// poller reads API endpoints an administrator's console would, open loop
// at a fixed rate (a slow answer does not delay the next request, so slow
// answers are not hidden), taking the endpoints in turn: the computer
// list, and the task's runs once the task exists (before that, one
// computer's effective configuration).
type poller struct {
	e      *env
	f      *fleet
	task   atomic.Pointer[string]
	cancel context.CancelFunc
	wg     sync.WaitGroup
	c      *http.Client

	mu   sync.Mutex
	lat  map[string][]time.Duration
	errs map[string]int
}

func startPoller(ctx context.Context, e *env, f *fleet) *poller {
	sending, cancel := context.WithCancel(ctx)
	t := e.api.c.Transport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	p := &poller{e: e, f: f, cancel: cancel, lat: map[string][]time.Duration{}, errs: map[string]int{},
		c: &http.Client{Jar: e.api.c.Jar, Timeout: 30 * time.Second, Transport: t}}
	rate := e.cfg.APIRate
	if rate <= 0 {
		return p
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-sending.Done():
				return
			case <-tick.C:
			}
			// Outstanding requests are bounded by the rate times the
			// client's timeout; stop lets them finish (the slowest
			// answers are the ones still outstanding).
			name, path := p.next(i)
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.request(ctx, name, path)
			}()
		}
	}()
	return p
}

// next is the i-th request: its endpoint's name and its path.
func (p *poller) next(i int) (string, string) {
	if i%2 == 0 {
		return "GET /api/v1/computers?limit=50", "/api/v1/computers?limit=50"
	}
	if id := p.task.Load(); id != nil {
		return "GET /api/v1/tasks/{id}/runs?limit=50", "/api/v1/tasks/" + url.PathEscape(*id) + "/runs?limit=50"
	}
	s := p.f.sims[rand.IntN(len(p.f.sims))]
	return "GET /api/v1/computers/{id}/effective-config", "/api/v1/computers/" + url.PathEscape(s.id.ComputerID) + "/effective-config"
}

func (p *poller) request(ctx context.Context, name, path string) {
	t0 := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.e.api.base+path, nil)
	resp, err := p.c.Do(req)
	if err == nil {
		_, err = drain(resp)
	}
	d := time.Since(t0)
	if ctx.Err() != nil {
		return // the whole run was interrupted: not a measurement
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.errs[name]++
		return
	}
	p.lat[name] = append(p.lat[name], d)
}

// stop sends no more requests and waits for the outstanding ones.
func (p *poller) stop() {
	p.cancel()
	p.wg.Wait()
}

// figures puts the latencies into the report: all endpoints together and
// each alone.
func (p *poller) figures(rep *Report) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var all []time.Duration
	rep.APIByEndpoint = map[string]APIFigures{}
	names := map[string]bool{}
	for k := range p.lat {
		names[k] = true
	}
	for k := range p.errs {
		names[k] = true
	}
	for name := range names {
		l := p.lat[name]
		all = append(all, l...)
		rep.APIByEndpoint[name] = APIFigures{Requests: len(l) + p.errs[name], Errors: p.errs[name],
			P50ms: pct(l, 50), P99ms: pct(l, 99), Maxms: pct(l, 100)}
		rep.APIErrors += p.errs[name]
	}
	rep.APIRequests = len(all) + rep.APIErrors
	rep.APIP50ms, rep.APIP99ms, rep.APIMaxms = pct(all, 50), pct(all, 99), pct(all, 100)
}
