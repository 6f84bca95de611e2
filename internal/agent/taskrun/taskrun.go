// Package taskrun executes the client task runs the server pushes to the
// agent: it remembers every run id it accepted (a run delivered twice, after
// a reconnect, runs once), runs them with bounded concurrency, stops the ones
// the administrator cancels, and reports task.started and task.finished
// through the agent's durable outbox, so results survive a lost connection
// or an agent restart.
package taskrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mamori/mamori/internal/agent"
	"github.com/mamori/mamori/internal/agent/agentcfg"
	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/atomicfile"
	"github.com/mamori/mamori/internal/tasks"
)

// Event types of run results (internal/store reads them).
const (
	EventStarted  = "task.started"
	EventFinished = "task.finished"
)

// Limits.
const (
	// MaxRemembered is how many run ids are kept to refuse duplicates.
	MaxRemembered = 2000
	// MaxConcurrent runs execute at once; scans and engine changes run one
	// at a time among them.
	MaxConcurrent = 4
	// MaxRunsPerMessage bounds one push.
	MaxRunsPerMessage = 1000
	// MaxParamsBytes bounds a run's parameters.
	MaxParamsBytes = 64 << 10
	// ledgerFile remembers accepted runs in the state directory.
	ledgerFile = "task-runs.json"
)

// Outbox is where results go (outbox.Outbox).
type Outbox interface {
	Append(typ string, data any) (string, error)
}

// Engine updates and rolls back the detection engine (the update client).
type Engine interface {
	Update(ctx context.Context) (string, error)
	Rollback(ctx context.Context) (string, error)
}

// Uploader sends a file of a run to the server (the Upload call).
type Uploader interface {
	Upload(ctx context.Context, runID, name string, r io.Reader, size int64) error
}

// Power restarts or shuts the computer down after delay.
type Power interface {
	Restart(ctx context.Context, delay time.Duration, reason string) (string, error)
	Shutdown(ctx context.Context, delay time.Duration, reason string) (string, error)
}

// Notifier shows a message to the computer's users.
type Notifier interface {
	Display(ctx context.Context, title, message, level string) error
}

// Runner executes task runs.
type Runner struct {
	StateDir string
	Outbox   Outbox
	Config   *agentcfg.Manager
	Engine   Engine   // nil: engine tasks fail with a reason
	Upload   Uploader // nil: diagnostics fail with a reason
	Power    Power
	Notify   Notifier
	// Scan runs an on-demand scan (default: the built-in scanner on the
	// agent's engine, see scan.go).
	Scan func(ctx context.Context, r ScanRequest) (ScanResult, error)
	// StopManaging is called after a stop_managing run reported success:
	// the agent unenrolls and ends.
	StopManaging func()
	// Diagnostics adds agent state to bundles (status, recent log lines).
	Diagnostics func() map[string][]byte
	Log         *slog.Logger
	Now         func() time.Time

	mu      sync.Mutex
	ledger  map[string]*entry
	running map[string]context.CancelFunc
	sem     chan struct{}
	heavy   sync.Mutex
	wg      sync.WaitGroup
	ctx     context.Context
}

type entry struct {
	Type     string    `json:"type"`
	State    string    `json:"state"` // accepted, running, finished, cancelled
	Received time.Time `json:"received"`
}

// Start loads the ledger and reports runs an earlier agent process left
// unfinished. ctx bounds every run.
func (r *Runner) Start(ctx context.Context) error {
	if r.Log == nil {
		r.Log = slog.Default()
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Scan == nil {
		r.Scan = r.builtinScan
	}
	r.ctx = ctx
	r.sem = make(chan struct{}, MaxConcurrent)
	r.running = map[string]context.CancelFunc{}
	r.ledger = map[string]*entry{}
	raw, err := os.ReadFile(filepath.Join(r.StateDir, ledgerFile))
	if err == nil {
		if json.Unmarshal(raw, &r.ledger) != nil {
			r.Log.Error("task run ledger is damaged; starting a new one", "file", ledgerFile)
			r.ledger = map[string]*entry{}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var interrupted []string
	for id, e := range r.ledger {
		if e.State == "accepted" || e.State == "running" {
			interrupted = append(interrupted, id)
		}
	}
	sort.Strings(interrupted)
	for _, id := range interrupted {
		e := r.ledger[id]
		res := result{state: "failed", err: "the agent stopped while the run was in progress"}
		if e.Type == string(tasks.Restart) && e.State == "running" {
			res = result{state: "succeeded", output: "the computer restarted"}
		}
		if err := r.finish(id, res); err != nil {
			return err
		}
	}
	if r.Config != nil {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.runSchedules(ctx)
		}()
	}
	return nil
}

// Wait waits for the runs in progress (after ctx of Start ended).
func (r *Runner) Wait() { r.wg.Wait() }

func (r *Runner) save() error {
	if len(r.ledger) > MaxRemembered {
		ids := make([]string, 0, len(r.ledger))
		for id := range r.ledger {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return r.ledger[ids[i]].Received.Before(r.ledger[ids[j]].Received) })
		for _, id := range ids[:len(ids)-MaxRemembered] {
			if s := r.ledger[id].State; s == "finished" || s == "cancelled" {
				delete(r.ledger, id)
			}
		}
	}
	b, _ := json.Marshal(r.ledger)
	return atomicfile.Write(filepath.Join(r.StateDir, ledgerFile), b, 0o600)
}

// Handle accepts a push: new runs start, known ones are ignored, cancelled
// ones stop. It does not block on the runs.
func (r *Runner) Handle(m *agentproto.TaskRuns) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range m.GetCancelled() {
		if cancel, ok := r.running[id]; ok {
			cancel()
			r.Log.Info("task run cancelled by the administrator", "run", id)
		} else if e, ok := r.ledger[id]; ok && e.State == "accepted" {
			e.State = "cancelled"
		}
	}
	runs := m.GetRuns()
	if len(runs) > MaxRunsPerMessage {
		r.Log.Warn("too many task runs in one push; taking the first ones", "count", len(runs))
		runs = runs[:MaxRunsPerMessage]
	}
	var start []*agentproto.TaskRun
	for _, run := range runs {
		id := run.GetId()
		if id == "" || len(id) > 64 || !utf8.ValidString(id) {
			r.Log.Warn("ignoring a task run without a usable id")
			continue
		}
		if _, seen := r.ledger[id]; seen {
			continue
		}
		r.ledger[id] = &entry{Type: run.GetType(), State: "accepted", Received: r.Now()}
		start = append(start, run)
	}
	if len(start) == 0 {
		return
	}
	if err := r.save(); err != nil {
		// Without the ledger a run could execute twice; refuse them now
		// (the server delivers them again).
		r.Log.Error("cannot record task runs; not starting them", "err", err)
		for _, run := range start {
			delete(r.ledger, run.GetId())
		}
		return
	}
	for _, run := range start {
		ctx, cancel := context.WithCancel(r.ctx)
		r.running[run.GetId()] = cancel
		r.wg.Add(1)
		go r.execute(ctx, cancel, run)
	}
}

type result struct {
	state    string // succeeded, failed
	exitCode *int
	output   string
	err      string
}

func (r *Runner) execute(ctx context.Context, cancel context.CancelFunc, run *agentproto.TaskRun) {
	defer r.wg.Done()
	defer cancel()
	id := run.GetId()
	select {
	case r.sem <- struct{}{}:
		defer func() { <-r.sem }()
	case <-ctx.Done():
		_ = r.finish(id, result{state: "failed", err: "cancelled before it started"})
		return
	}
	r.mu.Lock()
	cancelled := r.ledger[id].State == "cancelled"
	r.mu.Unlock()
	if cancelled {
		_ = r.finish(id, result{state: "failed", err: "cancelled before it started"})
		return
	}
	if exp := run.GetExpiresUnixMs(); exp > 0 && r.Now().UnixMilli() > exp {
		_ = r.finish(id, result{state: "failed", err: "expired before the agent could start it"})
		return
	}
	if _, err := r.Outbox.Append(EventStarted, map[string]any{"run_id": id, "type": run.GetType()}); err != nil {
		r.Log.Error("recording a task start", "run", id, "err", err)
	}
	r.mu.Lock()
	r.ledger[id].State = "running"
	_ = r.save()
	r.mu.Unlock()
	r.Log.Info("task run started", "run", id, "type", run.GetType())
	res := r.dispatch(ctx, run)
	if ctx.Err() != nil && r.ctx.Err() == nil && res.state != "succeeded" {
		res.err = strings.TrimSpace("cancelled by the administrator; " + res.err)
	}
	if r.ctx.Err() != nil && res.state != "succeeded" {
		return // the agent is stopping: reported as interrupted at the next start
	}
	if err := r.finish(id, res); err != nil {
		r.Log.Error("recording a task result", "run", id, "err", err)
	}
	r.Log.Info("task run finished", "run", id, "type", run.GetType(), "state", res.state)
	if tasks.Type(run.GetType()) == tasks.StopManaging && res.state == "succeeded" && r.StopManaging != nil {
		r.StopManaging()
	}
}

func (r *Runner) finish(id string, res result) error {
	out := res.output
	if len(out) > tasks.MaxOutput {
		out = clip(out, tasks.MaxOutput-40) + "\n[output truncated]"
	}
	data := map[string]any{"run_id": id, "state": res.state, "output": strings.ToValidUTF8(out, "\uFFFD"),
		"error": clip(strings.ToValidUTF8(res.err, "\uFFFD"), 4000)}
	if res.exitCode != nil {
		data["exit_code"] = *res.exitCode
	}
	if _, err := r.Outbox.Append(EventFinished, data); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.ledger[id]; ok {
		e.State = "finished"
	}
	delete(r.running, id)
	return r.save()
}

// clip cuts s to at most n bytes on a character boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func failed(format string, args ...any) result {
	return result{state: "failed", err: fmt.Sprintf(format, args...)}
}

func (r *Runner) dispatch(ctx context.Context, run *agentproto.TaskRun) result {
	typ := tasks.Type(run.GetType())
	if len(run.GetParamsJson()) > MaxParamsBytes {
		return failed("parameters larger than %d bytes", MaxParamsBytes)
	}
	// The server validated the parameters; the agent checks them again
	// (an older or newer server, a damaged message).
	if tasks.IsServer(typ) {
		return failed("%s is a server task", typ)
	}
	p, err := tasks.ParseParams(typ, json.RawMessage(run.GetParamsJson()))
	if err != nil {
		return failed("%v", err)
	}
	switch typ {
	case tasks.Scan:
		r.heavy.Lock()
		defer r.heavy.Unlock()
		return r.scan(ctx, run.GetId(), p)
	case tasks.EngineUpdate, tasks.EngineRollback:
		if r.Engine == nil {
			return failed("engine updates are not set up on this agent")
		}
		r.heavy.Lock()
		defer r.heavy.Unlock()
		f := r.Engine.Update
		if typ == tasks.EngineRollback {
			f = r.Engine.Rollback
		}
		out, err := f(ctx)
		if err != nil {
			return result{state: "failed", output: out, err: err.Error()}
		}
		return result{state: "succeeded", output: out}
	case tasks.RunCommand:
		return runCommand(ctx, p)
	case tasks.DisplayMessage:
		if r.Notify == nil {
			return failed("no way to show messages on this agent")
		}
		if err := r.Notify.Display(ctx, str(p, "title"), str(p, "message"), str(p, "level")); err != nil {
			return failed("%v", err)
		}
		return result{state: "succeeded", output: "message shown"}
	case tasks.ExportConfig:
		if r.Config == nil {
			return failed("no configuration manager")
		}
		b, _ := json.MarshalIndent(map[string]any{"version": r.Config.Version(), "settings": r.Config.Effective()}, "", "  ")
		return result{state: "succeeded", output: string(b)}
	case tasks.Diagnostics:
		return r.diagnostics(ctx, run.GetId(), p)
	case tasks.Restart, tasks.Shutdown:
		if r.Power == nil {
			return failed("no way to restart or shut down on this agent")
		}
		delay, _ := time.ParseDuration(str(p, "delay"))
		f := r.Power.Restart
		if typ == tasks.Shutdown {
			f = r.Power.Shutdown
		}
		out, err := f(ctx, delay, str(p, "reason"))
		if err != nil {
			return result{state: "failed", output: out, err: err.Error()}
		}
		return result{state: "succeeded", output: out}
	case tasks.StopManaging:
		if r.StopManaging == nil {
			return failed("this agent cannot unenroll itself")
		}
		return result{state: "succeeded", output: "the agent unenrolls, removes its state and stops"}
	}
	return failed("task type %q is not supported by this agent", typ)
}

func str(p tasks.Params, k string) string { s, _ := p[k].(string); return s }

func num(p tasks.Params, k string) int64 {
	switch n := p[k].(type) {
	case int64:
		return n
	case int:
		return int64(n)
	case float64:
		return int64(n)
	case json.Number:
		x, _ := n.Int64()
		return x
	}
	return 0
}

func list(p tasks.Params, k string) []string { l, _ := p[k].([]string); return l }

// StartTasks implements agent.TaskExecutor: it takes the agent's outbox,
// configuration, upload and unenrollment, then starts.
func (r *Runner) StartTasks(ctx context.Context, env agent.TaskEnv) error {
	r.StateDir, r.Outbox, r.Config = env.StateDir, env.Outbox, env.Config
	if env.Upload != nil {
		r.Upload = uploadFunc(env.Upload)
	}
	r.StopManaging, r.Diagnostics = env.StopManaging, env.Diagnostics
	if r.Engine == nil && env.Engine != nil {
		r.Engine = env.Engine
	}
	return r.Start(ctx)
}

type uploadFunc func(ctx context.Context, runID, name string, r io.Reader, size int64) error

func (f uploadFunc) Upload(ctx context.Context, runID, name string, r io.Reader, size int64) error {
	return f(ctx, runID, name, r, size)
}
