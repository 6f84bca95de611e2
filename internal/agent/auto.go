package agent

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/agent/agentcfg"
	"github.com/mamori/mamori/internal/agent/inventory"
	"github.com/mamori/mamori/internal/agent/outbox"
	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/sectionzip"
)

// Collector gathers the inventory (inventory.Collector on real systems).
type Collector interface {
	Collect(ctx context.Context) (*inventory.Snapshot, error)
}

// Limits of the session loop.
const (
	maxEventsPerCheckIn = 500
	ackTimeout          = 60 * time.Second
	backoffBase         = time.Second
	backoffMax          = 60 * time.Second
	// retryJitterMax bounds the jitter added to a RetryLater hint.
	retryJitterMax = 10 * time.Second
	// refusedBackoffMax caps the backoff while the server's host refuses
	// connections (nothing listens: the server is restarting). A refusal
	// costs the server's kernel a reset and the server nothing, and a
	// shorter wait brings agents back sooner after an upgrade.
	refusedBackoffMax = 15 * time.Second
	// A session that lasted this long was healthy: the next reconnect
	// starts the backoff over.
	healthySession = 30 * time.Second
)

// Status is a snapshot of the agent's connection, for status output and
// tests.
type Status struct {
	Connected   bool
	Server      string
	LastCheckIn time.Time
	CheckIns    uint64
	Outbox      int
}

// Auto owns the loops on top of Direct: it keeps one session open with the
// first server that answers (failing over along the list), checks in on an
// interval with jitter and whenever the server wakes it, flushes the outbox,
// reconnects with jittered exponential backoff, and reconnects at once after
// a resume from suspend.
type Auto struct {
	d         *Direct
	servers   []string
	hello     *agentproto.Hello
	ob        *outbox.Outbox
	collector Collector
	log       *slog.Logger
	interval  time.Duration // guarded by mu
	jitter    float64
	resumed   chan time.Duration
	// config is the configuration manager (capability 2 pushes); tasks
	// executes pushed task runs. Either may be nil (tests, old wiring).
	config *agentcfg.Manager
	tasks  TaskExecutor
	// intervalPinned: the configuration sets the interval, so the
	// server's Welcome/Ack hints do not override it.
	intervalPinned bool // guarded by mu
	// onWelcome, when set, sees every Welcome (the engine updater takes the
	// server's update mirror from it).
	onWelcome func(server string, w *agentproto.Welcome)
	// invChanged asks for a check-in because the inventory changed (an
	// engine update); nil: not used.
	invChanged chan struct{}

	mu     sync.Mutex
	status Status
	first  bool // the next check-in is the first of this process
}

// errResumed ends a session after a resume so the agent reconnects at once.
var errResumed = errors.New("resumed from suspend")

func (a *Auto) setStatus(f func(*Status)) {
	a.mu.Lock()
	f(&a.status)
	a.mu.Unlock()
}

// Status returns the current status.
func (a *Auto) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.status
	s.Outbox = a.ob.Len()
	return s
}

// Run keeps a session open until ctx ends. It returns nil when ctx ends and
// an error when the server refuses this agent for good (revoked or unknown
// certificate).
func (a *Auto) Run(ctx context.Context) error {
	attempt := 0
	for i := 0; ; i++ {
		servers := a.getServers()
		i %= len(servers)
		server := servers[i]
		start := time.Now()
		err := a.session(ctx, server)
		a.setStatus(func(s *Status) { s.Connected = false })
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errResumed) {
			a.log.Info("resumed from suspend; reconnecting now")
			i-- // same server, no delay
			attempt = 0
			continue
		}
		if time.Since(start) > healthySession {
			attempt = 0
		}
		delay, retry := ReconnectDelay(err, attempt)
		var rl *RetryLaterError
		switch {
		case !retry:
			return err
		case errors.As(err, &rl):
			a.log.Info("server asked to retry later", "server", server, "reason", rl.Reason, "retry_in", delay.Round(time.Millisecond))
		default:
			attempt++
			a.log.Warn("connection to server lost", "server", server, "err", errcode.Message(err), "retry_in", delay.Round(time.Millisecond))
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		case gap := <-a.resumed:
			t.Stop()
			a.log.Info("resumed from suspend while disconnected; reconnecting now", "slept", gap.Round(time.Second))
			attempt = 0
		}
	}
}

// ReconnectDelay is the agent's reconnection policy: how long to wait
// before the next session attempt after err ended the previous one
// (attempt counts the failures since the last healthy session, from 0).
// It returns false when the agent must not retry: the server refused its
// certificate (forbidden, unauthorized).
//
// A RetryLater answer is honoured with jitter: its hint plus up to a fifth
// of it again (at most retryJitterMax), so agents told the same time do not
// return together while a server that spreads its hints (sessionGate) does
// not see its schedule stretched; it does not count as a failure. Anything
// else backs off exponentially (see backoff), at most refusedBackoffMax
// while connections are refused. The load harness (internal/loadtest)
// simulates agents with this same policy.
func ReconnectDelay(err error, attempt int) (time.Duration, bool) {
	var rl *RetryLaterError
	var refused *RefusedError
	switch code := errcode.Of(err); {
	case errors.As(err, &rl):
		after := min(max(rl.After, time.Second), time.Hour) // a server's hint, within reason
		return after + time.Duration(rand.Int64N(int64(min(after/5, retryJitterMax))+1)), true
	case code == errcode.Forbidden || code == errcode.Unauthorized:
		return 0, false
	case errors.As(err, &refused):
		return backoffUpTo(attempt, refusedBackoffMax), true
	}
	return backoff(attempt), true
}

// backoff is exponential with "equal jitter": half fixed, half random, so
// a crowd of agents spreads out but none waits much less than planned.
func backoff(attempt int) time.Duration { return backoffUpTo(attempt, backoffMax) }

func backoffUpTo(attempt int, most time.Duration) time.Duration {
	d := backoffBase << min(attempt, 10)
	if d > most || d <= 0 {
		d = most
	}
	if attempt == 0 {
		return time.Duration(rand.Int64N(int64(backoffBase))) // first retry: 0-1s
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func (a *Auto) jittered() time.Duration {
	iv := a.getInterval()
	j := float64(iv) * a.jitter
	return iv + time.Duration((rand.Float64()*2-1)*j)
}

// sessionState is one open session's bookkeeping.
type sessionState struct {
	s       *Session
	server  string
	hashes  map[agentproto.Section][]byte // what the server holds
	seq     uint64
	msgs    chan *agentproto.ServerMessage
	recvErr chan error
	wakes   []string // wake-ups that arrived while waiting for an ack
	// configDue: a configuration was applied or refused; report it.
	configDue bool
}

func (a *Auto) getServers() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.servers)
}

func (a *Auto) setServers(servers []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.servers = slices.Clone(servers)
}

// handlePush handles a server message other than an Ack: wake-ups are
// queued for the session loop, configurations applied (the result is
// reported by the next check-in, which configDue asks for), task runs
// handed to the executor.
func (a *Auto) handlePush(st *sessionState, m *agentproto.ServerMessage) {
	switch x := m.Msg.(type) {
	case *agentproto.ServerMessage_WakeUp:
		st.wakes = append(st.wakes, x.WakeUp.Id)
	case *agentproto.ServerMessage_Configuration:
		if a.config == nil {
			return
		}
		_ = a.config.Apply(x.Configuration.GetVersion(), x.Configuration.GetDocumentJson()) // refusals are reported
		st.configDue = true
	case *agentproto.ServerMessage_TaskRuns:
		if a.tasks != nil {
			a.tasks.Handle(x.TaskRuns)
		} else {
			a.log.Warn("the server sent task runs but this agent has no task executor")
		}
	}
}

// inventoryChanged asks the session for a check-in soon (it returns at
// once; several requests make one check-in).
func (a *Auto) inventoryChanged() {
	select {
	case a.invChanged <- struct{}{}:
	default:
	}
}

func (a *Auto) getInterval() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.interval
}

// hintInterval takes the server's check-in interval unless the
// configuration sets it.
func (a *Auto) hintInterval(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.intervalPinned {
		a.interval = d
	}
}

// setInterval applies the configuration's interval (pinned) or, with
// pinned false, lets the server's hints apply again from base.
func (a *Auto) setInterval(d time.Duration, pinned bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.interval, a.intervalPinned = d, pinned
}

func (a *Auto) session(ctx context.Context, server string) error {
	if a.config != nil {
		a.hello.ConfigVersion = a.config.Version()
	}
	s, welcome, err := a.d.OpenSession(ctx, server, a.hello)
	if err != nil {
		return err
	}
	defer s.Close()
	st := &sessionState{s: s, server: server, hashes: map[agentproto.Section][]byte{},
		msgs: make(chan *agentproto.ServerMessage, 16), recvErr: make(chan error, 1)}
	for _, h := range welcome.SectionHashes {
		st.hashes[h.Section] = h.Hash
	}
	if a.onWelcome != nil {
		a.onWelcome(server, welcome)
	}
	if welcome.CheckInIntervalSeconds > 0 {
		a.hintInterval(time.Duration(welcome.CheckInIntervalSeconds) * time.Second)
	}
	interval := a.getInterval()
	a.setStatus(func(x *Status) { x.Connected, x.Server = true, server })
	a.log.Info("connected", "server", server, "computer", welcome.ComputerId, "interval", interval)
	go func() {
		for {
			m, err := s.Recv()
			if err != nil {
				st.recvErr <- err
				return
			}
			select {
			case st.msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()

	reason := agentproto.CheckInReason_CHECK_IN_REASON_INTERVAL
	a.mu.Lock()
	if a.first {
		reason, a.first = agentproto.CheckInReason_CHECK_IN_REASON_STARTUP, false
	}
	a.mu.Unlock()
	if err := a.checkIn(ctx, st, reason, ""); err != nil {
		return err
	}
	timer := time.NewTimer(a.jittered())
	defer timer.Stop()
	for {
		for len(st.wakes) > 0 {
			id := st.wakes[0]
			st.wakes = st.wakes[1:]
			if err := a.checkIn(ctx, st, agentproto.CheckInReason_CHECK_IN_REASON_WAKE_UP, id); err != nil {
				return err
			}
		}
		if st.configDue {
			// Tell the server at once what the new configuration did.
			st.configDue = false
			if err := a.checkIn(ctx, st, agentproto.CheckInReason_CHECK_IN_REASON_EVENTS, ""); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case gap := <-a.resumed:
			a.log.Info("resume detected", "slept", gap.Round(time.Second))
			return errResumed
		case err := <-st.recvErr:
			return err
		case m := <-st.msgs:
			a.handlePush(st, m) // wake-ups and configuration reports are sent at the top of the loop
		case <-a.invChanged:
			if err := a.checkIn(ctx, st, agentproto.CheckInReason_CHECK_IN_REASON_INTERVAL, ""); err != nil {
				return err
			}
		case <-a.ob.Notify():
			if a.ob.Len() > 0 {
				if err := a.checkIn(ctx, st, agentproto.CheckInReason_CHECK_IN_REASON_EVENTS, ""); err != nil {
					return err
				}
			}
		case <-timer.C:
			if err := a.checkIn(ctx, st, agentproto.CheckInReason_CHECK_IN_REASON_INTERVAL, ""); err != nil {
				return err
			}
			timer.Reset(a.jittered())
		}
	}
}

// checkIn sends changed sections and pending events and waits for the
// acknowledgement; events leave the outbox only then. It repeats while the
// outbox holds more than one check-in's worth.
func (a *Auto) checkIn(ctx context.Context, st *sessionState, reason agentproto.CheckInReason, wakeID string) error {
	var sections []*agentproto.InventorySection
	if reason != agentproto.CheckInReason_CHECK_IN_REASON_EVENTS {
		snap, err := a.collector.Collect(ctx)
		if err != nil {
			a.log.Warn("collecting inventory", "err", err)
		} else {
			for _, sec := range snap.Sections {
				if string(st.hashes[sec.Section]) != string(sec.Hash) {
					sections = append(sections, sec)
				}
			}
		}
	}
	for {
		evs, err := a.ob.Pending(maxEventsPerCheckIn)
		if err != nil {
			return err
		}
		st.seq++
		ci := &agentproto.CheckIn{Seq: st.seq, Reason: reason, WakeId: wakeID}
		var report agentcfg.Report
		var reporting bool
		if a.config != nil {
			if report, reporting = a.config.TakeReport(); reporting {
				ci.ConfigVersion, ci.ConfigError = report.Version, report.Error
			}
		}
		if err := sectionzip.Pack(ci, sections); err != nil {
			return err
		}
		for _, e := range evs {
			ci.Events = append(ci.Events, &agentproto.Event{Id: e.ID, Type: e.Type, TimeUnixMs: e.Time.UnixMilli(), DataJson: e.Data})
		}
		if err := st.s.Send(ci); err != nil {
			if reporting {
				a.config.Restore(report)
			}
			// The receiving goroutine has the server's reason.
			select {
			case rerr := <-st.recvErr:
				return rerr
			case <-time.After(time.Second):
				return err
			}
		}
		ack, err := a.awaitAck(ctx, st, st.seq)
		if err != nil {
			if reporting {
				a.config.Restore(report)
			}
			return err
		}
		for _, r := range ack.Rejected {
			a.log.Error("server refused an event; dropping it", "event", r.Id, "reason", r.Reason)
		}
		seqs := make([]uint64, len(evs))
		for i, e := range evs {
			seqs[i] = e.Seq
		}
		if err := a.ob.Ack(seqs); err != nil {
			return err
		}
		for _, sec := range sections {
			st.hashes[sec.Section] = sec.Hash
		}
		if ack.CheckInIntervalSeconds > 0 {
			a.hintInterval(time.Duration(ack.CheckInIntervalSeconds) * time.Second)
		}
		a.setStatus(func(x *Status) { x.LastCheckIn = time.Now(); x.CheckIns++ })
		if len(evs) < maxEventsPerCheckIn {
			return nil
		}
		sections, wakeID, reason = nil, "", agentproto.CheckInReason_CHECK_IN_REASON_EVENTS
	}
}

func (a *Auto) awaitAck(ctx context.Context, st *sessionState, seq uint64) (*agentproto.Ack, error) {
	t := time.NewTimer(ackTimeout)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-st.recvErr:
			return nil, err
		case <-t.C:
			return nil, errcode.New(errcode.Unavailable, "no acknowledgement from %s within %s", st.server, ackTimeout)
		case m := <-st.msgs:
			switch x := m.Msg.(type) {
			case *agentproto.ServerMessage_Ack:
				if x.Ack.Seq == seq {
					return x.Ack, nil
				}
			default:
				a.handlePush(st, m)
			}
		}
	}
}

func newHello(version, fingerprint, instance string) *agentproto.Hello {
	host, _ := os.Hostname()
	return &agentproto.Hello{
		CapabilityVersion:   agentproto.CapabilityVersion,
		AgentVersion:        version,
		HardwareFingerprint: fingerprint,
		SessionId:           uuid.NewString(),
		BootId:              bootID(),
		Instance:            instance,
		Hostname:            host,
	}
}
