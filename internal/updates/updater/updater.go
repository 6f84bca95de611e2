// Package updater keeps an agent's detection engine up to date: it runs
// client.Direct on a schedule (an interval with a random splay, backoff
// after failures), at once when the server asks (UpdateNow), and exposes
// the status the agent reports in its inventory.
//
// Lifecycle: New → Run(ctx) in a goroutine (returns when ctx ends) →
// UpdateNow / Status / EnginePath / Rollback from any goroutine.
//
// Schedule: the first attempt comes a random 0–Splay after start if the last
// success is older than Interval (so agents restarted together do not hit
// the mirror together), else at last success + Interval + random 0–Splay.
// After a success: Interval + random 0–Splay. After a failure: RetryMin,
// doubling per consecutive failure up to Interval, plus up to 50 % jitter.
// A rollback holds automatic attempts (UpdateNow included) until the hold
// ends; client.UpdateOptions.Force (the one-shot command) overrides it.
package updater

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/updates/client"
)

// Defaults.
const (
	DefaultInterval = 60 * time.Minute
	DefaultRetryMin = 5 * time.Minute
)

// Config configures the updater.
type Config struct {
	client.Config
	// Interval between successful attempts (default 60 min).
	Interval time.Duration
	// Splay is the random extra delay added to every scheduled attempt
	// (default Interval/4).
	Splay time.Duration
	// RetryMin is the delay after a first failure (default 5 min), doubled
	// per consecutive failure up to Interval.
	RetryMin time.Duration
	// OnStatus is called after every attempt.
	OnStatus func(client.Status)
}

// Updater runs engine updates on a schedule.
type Updater struct {
	cfg  Config
	d    *client.Direct
	wake chan struct{}

	mu       sync.Mutex
	updating bool
	next     time.Time
}

// New checks the configuration and opens the state directory.
func New(cfg Config) (*Updater, error) {
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Interval < time.Second {
		return nil, errcode.New(errcode.Invalid, "update interval must be at least 1s")
	}
	if cfg.Splay == 0 {
		cfg.Splay = cfg.Interval / 4
	}
	if cfg.Splay < 0 {
		return nil, errcode.New(errcode.Invalid, "splay must not be negative")
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = min(DefaultRetryMin, cfg.Interval)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d, err := client.New(cfg.Config)
	if err != nil {
		return nil, err
	}
	return &Updater{cfg: cfg, d: d, wake: make(chan struct{}, 1)}, nil
}

// Direct returns the one-shot client underneath.
func (u *Updater) Direct() *client.Direct { return u.d }

// UpdateNow asks Run to attempt an update at once (a wake-up from the
// server). It returns immediately.
func (u *Updater) UpdateNow() {
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// EnginePath returns the current engine file ("" for the built-in engine)
// and its version, for the scanner.
func (u *Updater) EnginePath() (string, uint64) {
	v, p := u.d.Current()
	return p, v
}

// Status returns the engine update status (for the inventory).
func (u *Updater) Status() client.Status {
	s, err := client.ReadStatus(u.cfg.StateDir, u.cfg.Now())
	if err != nil {
		s.State = "failing"
		s.LastError = err.Error()
	}
	u.mu.Lock()
	if u.updating {
		s.State = "updating"
	}
	if !u.next.IsZero() {
		s.NextAttempt = u.next
	}
	u.mu.Unlock()
	return s
}

// Rollback switches to the previous kept engine and holds automatic updates
// for hold (default 24 h).
func (u *Updater) Rollback(hold time.Duration) (client.RollbackResult, error) {
	return u.d.Rollback(hold)
}

func (u *Updater) splay() time.Duration {
	if u.cfg.Splay <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(u.cfg.Splay)))
}

// firstAttempt decides when the first attempt after start is due.
func (u *Updater) firstAttempt(now time.Time) time.Time {
	s := u.Status()
	if !s.LastSuccess.IsZero() && now.Sub(s.LastSuccess) < u.cfg.Interval && s.ConsecutiveFailures == 0 {
		return s.LastSuccess.Add(u.cfg.Interval + u.splay())
	}
	return now.Add(u.splay())
}

// after decides the next attempt after one that ended at now.
func (u *Updater) after(now time.Time, err error, failures int) time.Time {
	if err == nil {
		return now.Add(u.cfg.Interval + u.splay())
	}
	d := u.cfg.RetryMin
	for i := 1; i < failures && d < u.cfg.Interval; i++ {
		d *= 2
	}
	d = min(d, u.cfg.Interval)
	return now.Add(d + time.Duration(rand.Int64N(int64(d/2)+1)))
}

// Run attempts updates on the schedule until ctx ends.
func (u *Updater) Run(ctx context.Context) error {
	u.setNext(u.firstAttempt(u.cfg.Now()))
	for {
		u.mu.Lock()
		wait := u.next.Sub(u.cfg.Now())
		u.mu.Unlock()
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-u.wake:
			t.Stop()
		case <-t.C:
		}
		u.mu.Lock()
		u.updating = true
		u.mu.Unlock()
		_, err := u.d.Update(ctx, client.UpdateOptions{})
		u.mu.Lock()
		u.updating = false
		u.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		s := u.Status()
		next := u.after(u.cfg.Now(), err, s.ConsecutiveFailures)
		if s.State == "held" && next.Before(s.HeldUntil) {
			next = s.HeldUntil.Add(u.splay())
		}
		u.setNext(next)
		if u.cfg.OnStatus != nil {
			u.cfg.OnStatus(u.Status())
		}
	}
}

func (u *Updater) setNext(t time.Time) {
	u.mu.Lock()
	u.next = t
	u.mu.Unlock()
	client.SetNextAttempt(u.cfg.StateDir, t)
}
