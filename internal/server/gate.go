package server

import (
	"sync"
	"sync/atomic"
	"time"
)

// sessionGate bounds the agent sessions being set up at once
// (authentication, section hashes, attach, Welcome). Beyond the bound a new
// session is answered RetryLater: explicit back-pressure instead of a
// queue that grows until clients time out.
//
// The hint is a schedule, not a constant: refused agents are given
// successive return times at scheduleAhead times the rate setups have
// recently completed, after the current backlog has drained, so a crowd
// that arrives at once comes back spread out (the agent adds up to +20 %
// jitter of its own).
type sessionGate struct {
	max                int64
	minAfter, maxAfter time.Duration

	inFlight atomic.Int64

	mu          sync.Mutex
	windowStart time.Time
	windowDone  int
	rate        float64   // completed setups per second, smoothed
	next        time.Time // the last return time handed out
}

// Lowest drain rate assumed when computing hints (setups per second).
const minSetupRate = 50

// scheduleAhead: returns are scheduled at this multiple of the measured
// completion rate. The rate is measured on what the schedule lets in, so a
// schedule at exactly that rate could never discover spare capacity; an
// agent that comes back too early is answered RetryLater again on the
// connection it kept open (no handshake), which costs little.
const scheduleAhead = 2

func newSessionGate(max int) *sessionGate {
	return &sessionGate{max: int64(max), minAfter: time.Second, maxAfter: 2 * time.Minute}
}

// enter admits a session, or returns false and how long the agent should
// wait before coming back.
func (g *sessionGate) enter(now time.Time) (bool, time.Duration) {
	if g.inFlight.Add(1) <= g.max {
		return true, 0
	}
	g.inFlight.Add(-1)
	g.mu.Lock()
	defer g.mu.Unlock()
	rate := max(g.rate*scheduleAhead, minSetupRate)
	per := time.Duration(float64(time.Second) / rate)
	if floor := now.Add(g.minAfter); g.next.Before(floor) {
		// Nobody is scheduled that late: this one comes back after the
		// floor, and after the sessions in setup now are done.
		g.next = now.Add(max(g.minAfter, time.Duration(g.max)*per))
	} else {
		g.next = g.next.Add(per)
	}
	if g.next.Sub(now) > g.maxAfter {
		g.next = now.Add(g.maxAfter)
	}
	return false, g.next.Sub(now)
}

// leave ends a setup admitted by enter.
func (g *sessionGate) leave(now time.Time) {
	g.inFlight.Add(-1)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.windowStart.IsZero() {
		g.windowStart = now
	}
	g.windowDone++
	switch el := now.Sub(g.windowStart); {
	case el > 5*time.Second:
		// A quiet period says nothing about capacity.
		g.windowStart, g.windowDone = now, 0
	case el >= time.Second:
		r := float64(g.windowDone) / el.Seconds()
		if g.rate == 0 {
			g.rate = r
		} else {
			g.rate = (g.rate + r) / 2
		}
		g.windowStart, g.windowDone = now, 0
	}
}

// inProgress is the number of sessions being set up.
func (g *sessionGate) inProgress() int64 { return g.inFlight.Load() }
