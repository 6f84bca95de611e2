// Package scheduler turns triggers into task runs on the server: it fires
// clock triggers, follows the server events that drive event triggers,
// delivers due runs to connected agents (bounded per step), expires runs
// whose computer never came, and executes server tasks.
package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
	"github.com/mamori/mamori/internal/tasks"
)

// Store is what the scheduler reads and writes.
type Store interface {
	TargetStore
	TaskByID(ctx context.Context, id string) (*store.TaskRow, error)
	TaskTriggers(ctx context.Context, taskID string) ([]*store.TriggerRow, error)
	DueTriggers(ctx context.Context, now time.Time) ([]*store.TriggerRow, error)
	FireTrigger(ctx context.Context, triggerID string, next, at time.Time, fired bool, throttleState string, runs []*store.TaskRun) error
	ResetThrottles(ctx context.Context) error
	ServerEventSeq(ctx context.Context) (int64, error)
	ServerEventsAfter(ctx context.Context, after int64, types []string, limit int) ([]store.ServerEvent, error)
	SchedulerState(ctx context.Context, key string) (string, error)
	SetSchedulerState(ctx context.Context, key, value string) error
	RunByID(ctx context.Context, id string) (*store.TaskRun, error)
	ExpireRuns(ctx context.Context, now time.Time) (int64, error)
	DeliverableRuns(ctx context.Context, now time.Time, serverID string, computerIDs []string, limit int) ([]*store.TaskRun, error)
	PendingRuns(ctx context.Context, computerIDs []string, now time.Time, perComputer int) (map[string][]*store.TaskRun, error)
	MarkDelivered(ctx context.Context, ids []string, at time.Time) error
	DueServerRuns(ctx context.Context, now time.Time) ([]*store.TaskRun, error)
	FinishServerRun(ctx context.Context, id string, ok bool, output, errText string, started, now time.Time) error
}

// Deliverer hands runs to the agent of a connected computer.
type Deliverer interface {
	// Deliver sends runs to computerID's agent; false when it is not
	// connected (the runs stay planned).
	Deliver(computerID string, runs []*store.TaskRun) bool
}

// ServerRunner executes a server task run and returns its output.
type ServerRunner interface {
	RunServerTask(ctx context.Context, run *store.TaskRun) (output string, err error)
}

// Server event types triggers follow, by trigger event name.
var eventTypes = map[string]string{
	"detection_found": "detection.found",
	"agent_connected": "agent.connected",
	"task_failed":     "task.failed",
}

const eventCursorKey = "event_seq"

// Scheduler fires triggers into runs, delivers runs to connected agents,
// expires the ones whose computer never came and runs server tasks. Step
// does one pass; Run calls it every Tick and when kicked.
type Scheduler struct {
	Store   Store
	Deliver Deliverer    // nil: runs are only planned
	Server  ServerRunner // nil: server runs stay planned
	Now     func() time.Time
	Rand    func(n int64) int64 // [0, n); default math/rand/v2
	Log     *slog.Logger
	Tick    time.Duration // default 1s
	// PerStep bounds the runs delivered per Tick (the server's
	// TaskDeliveryPerSecond), however many steps kicks add in between: a
	// budget refilled continuously at PerStep per Tick, holding at most
	// PerStep. Default 2000.
	PerStep  int
	MaxBatch int // events read per step; default 1000
	// KickGap is the least time from one step to a step asked for by a
	// kick (Tick steps are not delayed). Default 100ms.
	KickGap time.Duration
	// ServerID is the server this scheduler delivers for: the runs of
	// computers online on it. Servers sharing a PostgreSQL store each
	// deliver to their own agents.
	ServerID string
	// Leading reports whether this server leads the ones sharing its
	// store: only the leader fires triggers, follows events, expires runs
	// and runs server tasks. nil: it always leads (a lone server).
	Leading func() bool

	once      sync.Once
	kick      chan struct{}
	mu        sync.Mutex
	connected []string // computers that connected since the last step
	started   atomic.Bool

	// The delivery budget (dispatch runs on one goroutine at a time):
	// tokens left (negative after a computer's runs went over) as of
	// refilled.
	tokens   float64
	refilled time.Time
}

func (s *Scheduler) init() {
	s.once.Do(func() {
		s.kick = make(chan struct{}, 1)
		if s.Now == nil {
			s.Now = time.Now
		}
		if s.Rand == nil {
			s.Rand = rand.Int64N
		}
		if s.Log == nil {
			s.Log = slog.Default()
		}
		if s.Tick <= 0 {
			s.Tick = time.Second
		}
		if s.PerStep <= 0 {
			s.PerStep = 2000
		}
		if s.MaxBatch <= 0 {
			s.MaxBatch = 1000
		}
		if s.KickGap <= 0 {
			s.KickGap = 100 * time.Millisecond
		}
	})
}

// Kick asks for a step now (a trigger was created, a run retried).
func (s *Scheduler) Kick() {
	s.init()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Connected tells the scheduler an agent connected: its pending runs are
// delivered at the next step.
func (s *Scheduler) Connected(computerID string) {
	s.init()
	s.mu.Lock()
	s.connected = append(s.connected, computerID)
	s.mu.Unlock()
	s.Kick()
}

// Start prepares the scheduler after a server start: throttling counters
// start over and event triggers follow events from now on.
func (s *Scheduler) Start(ctx context.Context) error {
	s.init()
	if err := s.Store.ResetThrottles(ctx); err != nil {
		return err
	}
	s.started.Store(true)
	if v, err := s.Store.SchedulerState(ctx, eventCursorKey); err != nil || v != "" {
		return err
	}
	seq, err := s.Store.ServerEventSeq(ctx)
	if err != nil {
		return err
	}
	return s.Store.SetSchedulerState(ctx, eventCursorKey, jsonInt(seq))
}

// Run steps until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	s.init()
	if err := s.Start(ctx); err != nil {
		return err
	}
	t := time.NewTicker(s.Tick)
	defer t.Stop()
	for {
		began := time.Now()
		if err := s.Step(ctx); err != nil && ctx.Err() == nil {
			s.Log.Error("task scheduler step", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.kick:
			// Kicks come with every agent that connects: thousands a
			// second after a restart. A step's fixed queries run at most
			// every KickGap; the agents that connected meanwhile are
			// served together.
			if wait := s.KickGap - time.Since(began); wait > 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait):
				}
			}
			// Kicks that came while waiting are served by this step.
			select {
			case <-s.kick:
			default:
			}
		}
	}
}

// Step fires due triggers, follows events, expires runs, delivers due runs
// and runs due server tasks; a server that does not lead only delivers.
func (s *Scheduler) Step(ctx context.Context) error {
	s.init()
	now := s.Now().UTC()
	var errs []error
	if s.Leading != nil && !s.Leading() {
		return s.dispatch(ctx, now)
	}
	if s.started.Swap(false) {
		if err := s.fireStarted(ctx, now); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.fireDue(ctx, now); err != nil {
		errs = append(errs, err)
	}
	if err := s.followEvents(ctx, now); err != nil {
		errs = append(errs, err)
	}
	if n, err := s.Store.ExpireRuns(ctx, now); err != nil {
		errs = append(errs, err)
	} else if n > 0 {
		s.Log.Info("task runs expired", "count", n)
	}
	if err := s.dispatch(ctx, now); err != nil {
		errs = append(errs, err)
	}
	if err := s.runServer(ctx, now); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// fireStarted fires the server_started triggers once after Start.
func (s *Scheduler) fireStarted(ctx context.Context, now time.Time) error {
	all, err := s.Store.TaskTriggers(ctx, "")
	if err != nil {
		return err
	}
	for _, tr := range all {
		if !tr.Enabled {
			continue
		}
		if spec, err := tasks.ParseTrigger(tr.Spec); err == nil && spec.Kind == tasks.ServerStarted {
			if err := s.fire(ctx, tr, spec, time.Time{}, now); err != nil {
				s.Log.Error("trigger failed to fire", "trigger", tr.ID, "task", tr.TaskID, "err", err)
			}
		}
	}
	return nil
}

// fireDue fires the triggers due by the clock. A trigger whose time passed
// while the server was down fires once, then follows its schedule from now.
func (s *Scheduler) fireDue(ctx context.Context, now time.Time) error {
	due, err := s.Store.DueTriggers(ctx, now)
	if err != nil {
		return err
	}
	for _, tr := range due {
		if err := s.fireTimed(ctx, tr, now); err != nil {
			s.Log.Error("trigger failed to fire", "trigger", tr.ID, "task", tr.TaskID, "err", err)
			if ctx.Err() != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Scheduler) fireTimed(ctx context.Context, tr *store.TriggerRow, now time.Time) error {
	spec, err := tasks.ParseTrigger(tr.Spec)
	if err != nil {
		// A stored trigger that no longer parses never fires again.
		return s.Store.FireTrigger(ctx, tr.ID, time.Time{}, now, false, tr.ThrottleState, nil)
	}
	next, ok := spec.Next(now, tr.CreatedAt)
	if !ok {
		next = time.Time{}
	}
	return s.fire(ctx, tr, spec, next, now)
}

// fire plans the runs of a trigger firing by the clock or at start.
func (s *Scheduler) fire(ctx context.Context, tr *store.TriggerRow, spec *tasks.Trigger, next, now time.Time) error {
	var st tasks.ThrottleState
	_ = json.Unmarshal([]byte(tr.ThrottleState), &st)
	if !spec.Allow(&st, now) {
		return s.Store.FireTrigger(ctx, tr.ID, next, now, false, jsonOf(st), nil)
	}
	task, err := s.Store.TaskByID(ctx, tr.TaskID)
	if err != nil {
		return err
	}
	var computers []string
	if !tasks.IsServer(tasks.Type(task.Type)) {
		ts, err := tasks.ParseTargets(tr.Targets)
		if err != nil {
			return s.Store.FireTrigger(ctx, tr.ID, next, now, false, jsonOf(st), nil)
		}
		set, err := Resolve(ctx, s.Store, ts)
		if err != nil {
			return err
		}
		for id := range set {
			computers = append(computers, id)
		}
	} else {
		computers = []string{""}
	}
	runs := s.plan(task, tr.ID, spec, computers, now)
	s.Log.Info("trigger fired", "trigger", tr.ID, "task", task.ID, "runs", len(runs))
	return s.Store.FireTrigger(ctx, tr.ID, next, now, true, jsonOf(st), runs)
}

// plan makes one run per computer ("": the server), each with its own
// random delay.
func (s *Scheduler) plan(task *store.TaskRow, triggerID string, spec *tasks.Trigger, computers []string, now time.Time) []*store.TaskRun {
	delay, expiry := spec.RandomDelayDuration(), spec.ExpiryDuration()
	runs := make([]*store.TaskRun, 0, len(computers))
	for _, c := range computers {
		nb := now
		if delay > 0 {
			nb = now.Add(time.Duration(s.Rand(int64(delay))))
		}
		nb = nb.Truncate(time.Millisecond)
		runs = append(runs, &store.TaskRun{ID: uuid.NewString(), TaskID: task.ID, TriggerID: triggerID, ComputerID: c,
			Type: task.Type, Params: task.Params, State: store.RunPlanned, Attempt: 1, CreatedAt: now.Truncate(time.Millisecond),
			NotBefore: nb, ExpiresAt: nb.Add(expiry)})
	}
	return runs
}

// eventTrigger is an event or joined-dynamic-group trigger, parsed, with
// its targets resolved lazily.
type eventTrigger struct {
	row     *store.TriggerRow
	spec    *tasks.Trigger
	task    *store.TaskRow
	targets []tasks.Target
	members map[string]bool
	state   tasks.ThrottleState
	runs    []*store.TaskRun
	seen    bool // had an occurrence in this step
}

func (s *Scheduler) followEvents(ctx context.Context, now time.Time) error {
	v, err := s.Store.SchedulerState(ctx, eventCursorKey)
	if err != nil {
		return err
	}
	var cursor int64
	_ = json.Unmarshal([]byte(v), &cursor)
	evs, err := s.Store.ServerEventsAfter(ctx, cursor, []string{store.EventJoinedDynamicGroup, "detection.found", "agent.connected", "task.failed"}, s.MaxBatch)
	if err != nil || len(evs) == 0 {
		return err
	}
	all, err := s.Store.TaskTriggers(ctx, "")
	if err != nil {
		return err
	}
	var trigs []*eventTrigger
	for _, tr := range all {
		if !tr.Enabled {
			continue
		}
		spec, err := tasks.ParseTrigger(tr.Spec)
		if err != nil || spec.IsTimed() {
			continue
		}
		task, err := s.Store.TaskByID(ctx, tr.TaskID)
		if err != nil {
			continue
		}
		ts, err := tasks.ParseTargets(tr.Targets)
		if err != nil || tasks.IsServer(tasks.Type(task.Type)) {
			continue
		}
		et := &eventTrigger{row: tr, spec: spec, task: task, targets: ts}
		_ = json.Unmarshal([]byte(tr.ThrottleState), &et.state)
		trigs = append(trigs, et)
	}
	for _, ev := range evs {
		cursor = ev.Seq
		if ev.ComputerID == "" {
			continue
		}
		for _, et := range trigs {
			if !matches(et.spec, &ev) {
				continue
			}
			if ev.Type == "task.failed" {
				// A task whose own failure triggers it would loop.
				if r, err := s.Store.RunByID(ctx, ev.SubjectID); err == nil && r.TaskID == et.task.ID {
					continue
				}
			}
			if et.members == nil {
				ts := et.targets
				if len(ts) == 0 && et.spec.Kind == tasks.JoinedDynamic {
					ts = []tasks.Target{{Type: tasks.TargetDynamicGroup, ID: et.spec.DynamicGroupID}}
				}
				if et.members, err = Resolve(ctx, s.Store, ts); err != nil {
					return err
				}
			}
			if !et.members[ev.ComputerID] {
				continue
			}
			et.seen = true
			if !et.spec.Allow(&et.state, ev.At) {
				continue
			}
			et.runs = append(et.runs, s.plan(et.task, et.row.ID, et.spec, []string{ev.ComputerID}, now)...)
		}
	}
	for _, et := range trigs {
		if !et.seen {
			continue
		}
		if len(et.runs) > 0 {
			s.Log.Info("trigger fired", "trigger", et.row.ID, "task", et.task.ID, "runs", len(et.runs))
		}
		if err := s.Store.FireTrigger(ctx, et.row.ID, time.Time{}, now, len(et.runs) > 0, jsonOf(et.state), et.runs); err != nil {
			return err
		}
	}
	return s.Store.SetSchedulerState(ctx, eventCursorKey, jsonInt(cursor))
}

func matches(t *tasks.Trigger, ev *store.ServerEvent) bool {
	switch t.Kind {
	case tasks.JoinedDynamic:
		return ev.Type == store.EventJoinedDynamicGroup && ev.SubjectID == t.DynamicGroupID
	case tasks.OnEvent:
		return eventTypes[t.Event] == ev.Type
	}
	return false
}

// budget refills the delivery budget for the time since the last step and
// returns the runs that may be delivered now.
func (s *Scheduler) budget(now time.Time) int {
	if s.refilled.IsZero() {
		s.tokens = float64(s.PerStep)
	} else if el := now.Sub(s.refilled); el > 0 {
		s.tokens = min(float64(s.PerStep), s.tokens+float64(s.PerStep)*float64(el)/float64(s.Tick))
	}
	if now.After(s.refilled) {
		s.refilled = now
	}
	return int(s.tokens)
}

// dispatch delivers due runs: first every pending run of computers that
// just connected, then due runs of connected computers, within the
// delivery budget (PerStep per Tick). What the budget leaves waits for the
// next steps; the Tick comes back for it.
func (s *Scheduler) dispatch(ctx context.Context, now time.Time) error {
	if s.Deliver == nil {
		return nil
	}
	s.mu.Lock()
	conn := s.connected
	s.connected = nil
	s.mu.Unlock()
	budget := s.budget(now)
	spent := 0
	defer func() { s.tokens -= float64(spent) }()
	var delivered []string
	ids := uniq(conn)
	// One query for every computer that connected (thousands after a
	// restart), then deliveries in the order they connected.
	pending := map[string][]*store.TaskRun{}
	if len(ids) > 0 && budget > 0 {
		var err error
		if pending, err = s.Store.PendingRuns(ctx, ids, now, 100); err != nil {
			s.mu.Lock()
			s.connected = append(ids, s.connected...)
			s.mu.Unlock()
			return err
		}
	}
	for i, id := range ids {
		if budget <= 0 {
			// Over budget: keep the rest for the next step (not kicked:
			// the budget refills with time).
			s.mu.Lock()
			s.connected = append(ids[i:], s.connected...)
			s.mu.Unlock()
			break
		}
		runs := pending[id]
		if len(runs) == 0 {
			continue
		}
		if s.Deliver.Deliver(id, runs) {
			budget -= len(runs)
			spent += len(runs)
			for _, r := range runs {
				delivered = append(delivered, r.ID)
			}
		}
	}
	if budget > 0 {
		runs, err := s.Store.DeliverableRuns(ctx, now, s.ServerID, nil, budget)
		if err != nil {
			return err
		}
		byComputer := map[string][]*store.TaskRun{}
		var order []string
		for _, r := range runs {
			if _, ok := byComputer[r.ComputerID]; !ok {
				order = append(order, r.ComputerID)
			}
			byComputer[r.ComputerID] = append(byComputer[r.ComputerID], r)
		}
		for _, id := range order {
			if s.Deliver.Deliver(id, byComputer[id]) {
				spent += len(byComputer[id])
				for _, r := range byComputer[id] {
					delivered = append(delivered, r.ID)
				}
			}
		}
	}
	return s.Store.MarkDelivered(ctx, delivered, now)
}

// uniq returns ids without repeats, in first-seen order.
func uniq(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := ids[:0:0]
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func (s *Scheduler) runServer(ctx context.Context, now time.Time) error {
	if s.Server == nil {
		return nil
	}
	runs, err := s.Store.DueServerRuns(ctx, now)
	if err != nil {
		return err
	}
	for _, r := range runs {
		started := s.Now().UTC()
		out, rerr := s.Server.RunServerTask(ctx, r)
		msg := ""
		if rerr != nil {
			msg = errcode.Message(rerr)
			s.Log.Warn("server task failed", "run", r.ID, "task", r.TaskID, "type", r.Type, "err", rerr)
		}
		if err := s.Store.FinishServerRun(ctx, r.ID, rerr == nil, out, msg, started, s.Now().UTC()); err != nil {
			return err
		}
	}
	return nil
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func jsonInt(n int64) string { return jsonOf(n) }
