package server

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/store"
)

type nopPresence struct{}

func (nopPresence) ApplyPresence(context.Context, []store.PresenceUpdate) error { return nil }

func testHub() *Hub {
	return newHub(nopPresence{}, slog.New(slog.DiscardHandler), newMetrics(), time.Second, 10*time.Second, 1000)
}

// leavingAgent is a connected agent that records the messages sent to it
// and, as a real agent does on a RetryLater, ends its session.
type leavingAgent struct {
	conn *agentConn
	mu   sync.Mutex
	got  []*agentproto.ServerMessage
}

func attachLeaving(h *Hub, id string, capability uint32, endOnHint bool) *leavingAgent {
	a := &leavingAgent{}
	a.conn = &agentConn{computerID: id, fingerprint: "fp-" + id, remote: id, capability: capability,
		connectedAt: time.Now(), cancel: func() {}, drop: func() {}}
	a.conn.send = func(m *agentproto.ServerMessage) error {
		a.mu.Lock()
		a.got = append(a.got, m)
		a.mu.Unlock()
		if endOnHint && m.GetRetryLater() != nil {
			go h.detach(a.conn)
		}
		return nil
	}
	h.attach(a.conn)
	return a
}

func (a *leavingAgent) messages() []*agentproto.ServerMessage {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.got)
}

// Every agent of capability 3 is told once when to come back, at the
// plan's times (the first after After, then Rate per second, each time
// given once); older agents are told nothing; leave returns once the told
// agents have ended their sessions.
func TestHubLeave_SpreadsReturnTimesOverTheAgentsAndWaitsForThemToGo(t *testing.T) {
	h := testHub()
	var told, old []*leavingAgent
	for i := range 50 {
		told = append(told, attachLeaving(h, fmt.Sprintf("new-%d", i), 3, true))
	}
	for i := range 3 {
		old = append(old, attachLeaving(h, fmt.Sprintf("old-%d", i), 2, false))
	}
	plan := returnPlan{After: 2 * time.Second, Rate: 10}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if n := h.leave(ctx, plan); n != len(told) {
		t.Fatalf("leave told %d agents, want %d", n, len(told))
	}
	if ctx.Err() != nil {
		t.Fatal("leave waited for its deadline although every told agent ended its session")
	}
	var hints []time.Duration
	for _, a := range told {
		msgs := a.messages()
		if len(msgs) != 1 || msgs[0].GetRetryLater() == nil {
			t.Fatalf("agent %s got %v, want one RetryLater", a.conn.computerID, msgs)
		}
		rl := msgs[0].GetRetryLater()
		if rl.Reason == "" {
			t.Error("a hint without a reason")
		}
		hints = append(hints, time.Duration(rl.RetryAfterMs)*time.Millisecond)
	}
	slices.Sort(hints)
	for i, d := range hints {
		if want := plan.hint(i); d != want {
			t.Fatalf("hint %d is %s, want %s (all: %v)", i, d, want, hints)
		}
	}
	if hints[0] != 2*time.Second || hints[len(hints)-1] != 2*time.Second+49*100*time.Millisecond {
		t.Errorf("hints from %s to %s, want 2s to 6.9s", hints[0], hints[len(hints)-1])
	}
	for _, a := range old {
		if msgs := a.messages(); len(msgs) != 0 {
			t.Errorf("capability-2 agent %s was sent %v", a.conn.computerID, msgs)
		}
	}
	if n := h.Connected(); n != len(old) {
		t.Errorf("%d computers still connected, want the %d older agents (closeAll drops them)", n, len(old))
	}
}

// An agent that does not end its session (or cannot be written to) does
// not hold the shutdown past the caller's deadline.
func TestHubLeave_StopsAtTheDeadlineWhenAgentsStay(t *testing.T) {
	h := testHub()
	attachLeaving(h, "stays", 3, false)
	blocked := &agentConn{computerID: "stuck", fingerprint: "fp", remote: "stuck", capability: 3, connectedAt: time.Now(),
		cancel: func() {}, drop: func() {}}
	release := make(chan struct{})
	blocked.send = func(*agentproto.ServerMessage) error { <-release; return fmt.Errorf("connection closed") }
	h.attach(blocked)
	defer close(release)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- h.leave(ctx, returnPlan{After: time.Second, Rate: 1000}) }()
	select {
	case n := <-done:
		if n != 1 {
			t.Errorf("leave counted %d agents told, want 1: one send succeeded, the other never completed", n)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("leave did not return after its deadline")
	}
	if ctx.Err() == nil {
		t.Error("leave returned before its deadline although both agents stayed connected")
	}
}

func TestHubLeave_NobodyToTell(t *testing.T) {
	h := testHub()
	attachLeaving(h, "old", 1, false)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if n := h.leave(ctx, returnPlan{After: time.Second, Rate: 1}); n != 0 {
		t.Fatalf("told %d", n)
	}
	if ctx.Err() != nil {
		t.Fatal("leave waited although it told nobody")
	}
}

// ctxPresence fails writes whose context has ended, as a store does, and
// keeps the others.
type ctxPresence struct {
	mu      sync.Mutex
	written []store.PresenceUpdate
}

func (p *ctxPresence) ApplyPresence(ctx context.Context, ups []store.PresenceUpdate) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.written = append(p.written, ups...)
	return nil
}

// levels counts records by level.
type levels struct {
	slog.Handler
	mu sync.Mutex
	n  map[slog.Level]int
}

func (l *levels) Enabled(context.Context, slog.Level) bool { return true }
func (l *levels) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n[r.Level]++
	return nil
}

// A periodic presence write cut short by the shutdown is not an error: the
// status changes go back to pending and the shutdown's own flush (with a
// context of its own) writes them.
func TestHubFlush_CutShortByShutdownIsWrittenByTheLastFlush(t *testing.T) {
	st := &ctxPresence{}
	lv := &levels{n: map[slog.Level]int{}}
	h := newHub(st, slog.New(lv), newMetrics(), time.Second, 10*time.Second, 1000)
	a := attachLeaving(h, "c1", 3, false)
	stopped, stop := context.WithCancel(context.Background())
	stop()
	h.flush(stopped, false)
	if len(st.written) != 0 || lv.n[slog.LevelError] != 0 {
		t.Fatalf("cut-short write: %d written, %d errors logged; want none", len(st.written), lv.n[slog.LevelError])
	}
	h.flush(context.Background(), true)
	var statuses []string
	for _, u := range st.written {
		if u.ComputerID == "c1" && u.Status != "" {
			statuses = append(statuses, u.Status)
		}
	}
	if !slices.Equal(statuses, []string{store.StatusOnline}) {
		t.Fatalf("the last flush wrote statuses %v for c1, want the cut-short one (online)", statuses)
	}
	h.detach(a.conn)
}
