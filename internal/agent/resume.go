package agent

import (
	"context"
	"time"
)

// Clock is the time source of the resume detector (tests inject one).
type Clock interface {
	// Now returns the wall-clock time and the monotonic time elapsed since
	// some fixed start; the monotonic clock does not advance while the
	// machine sleeps.
	Now() (wall time.Time, mono time.Duration)
}

type realClock struct{ start time.Time }

func newRealClock() realClock { return realClock{start: time.Now()} }

func (c realClock) Now() (time.Time, time.Duration) {
	n := time.Now()
	return n.Round(0), n.Sub(c.start)
}

// watchResume reports a resume from suspend (or the wall clock jumping
// forward): wall-clock time elapsed beyond the monotonic time elapsed means
// the machine was away. It checks on every tick and reports a gap above
// threshold with its length. Backward jumps (clock corrections) are not
// resumes and are ignored.
func watchResume(ctx context.Context, clk Clock, tick <-chan time.Time, threshold time.Duration, report func(gap time.Duration)) {
	pw, pm := clk.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		w, m := clk.Now()
		if gap := w.Sub(pw) - (m - pm); gap > threshold {
			report(gap)
		}
		pw, pm = w, m
	}
}
