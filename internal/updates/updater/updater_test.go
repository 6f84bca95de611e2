package updater

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/updates/client"
	"github.com/mamori/mamori/internal/updates/updatestest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newUpdater(t *testing.T, cfg Config) *Updater {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	u, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestAfter_IntervalWithSplayAndDoublingBackoff(t *testing.T) {
	u := newUpdater(t, Config{Config: client.Config{StateDir: t.TempDir()}, Interval: time.Hour, Splay: 10 * time.Minute, RetryMin: time.Minute})
	now := time.Now()
	for i := 0; i < 200; i++ {
		if n := u.after(now, nil, 0).Sub(now); n < time.Hour || n >= 70*time.Minute {
			t.Fatalf("after a success: %v", n)
		}
	}
	fail := errors.New("x")
	for failures, base := range map[int]time.Duration{1: time.Minute, 2: 2 * time.Minute, 3: 4 * time.Minute, 6: 32 * time.Minute, 7: time.Hour, 20: time.Hour} {
		for i := 0; i < 50; i++ {
			if n := u.after(now, fail, failures).Sub(now); n < base || n > base+base/2 {
				t.Fatalf("after %d failures: %v, want %v..%v", failures, n, base, base+base/2)
			}
		}
	}
	if _, err := New(Config{Config: client.Config{StateDir: t.TempDir()}, Interval: time.Millisecond}); err == nil {
		t.Fatal("an interval under a second was accepted")
	}
	if _, err := New(Config{Config: client.Config{StateDir: t.TempDir()}, Splay: -1}); err == nil {
		t.Fatal("a negative splay was accepted")
	}
}

func TestFirstAttempt_SpreadsAStartAndRespectsARecentSuccess(t *testing.T) {
	r := updatestest.NewRepo(t, 10, 2, 50)
	r.PublishNext(t, 3, 0)
	state := t.TempDir()
	u := newUpdater(t, Config{Config: client.Config{StateDir: state, Sources: []string{r.Dir}, TrustedRoot: r.Root}, Interval: time.Hour, Splay: 5 * time.Minute})
	now := time.Now()
	seen := map[time.Duration]bool{}
	for i := 0; i < 50; i++ {
		d := u.firstAttempt(now).Sub(now)
		if d < 0 || d >= 5*time.Minute {
			t.Fatalf("first attempt of a never-updated agent in %v", d)
		}
		seen[d.Round(time.Second)] = true
	}
	if len(seen) < 10 {
		t.Fatalf("first attempts are not spread: %d distinct delays in 50", len(seen))
	}
	if _, err := u.Direct().Update(context.Background(), client.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	last := u.Status().LastSuccess
	if d := u.firstAttempt(time.Now()).Sub(last); d < time.Hour || d >= 65*time.Minute {
		t.Fatalf("after a recent success the first attempt is %v after it", d)
	}
}

func TestRun_UpdatesAtStartAndOnWakeUpAndReportsStatus(t *testing.T) {
	r := updatestest.NewRepo(t, 10, 2, 50)
	v1 := r.PublishNext(t, 3, 0)
	var mu sync.Mutex
	var statuses []client.Status
	u := newUpdater(t, Config{Config: client.Config{StateDir: filepath.Join(t.TempDir(), "s"), Sources: []string{r.Dir}, TrustedRoot: r.Root},
		Interval: time.Hour, Splay: time.Nanosecond, OnStatus: func(s client.Status) { mu.Lock(); statuses = append(statuses, s); mu.Unlock() }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { u.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, func() bool { _, v := u.EnginePath(); return v == v1 })
	v2 := r.PublishNext(t, 3, 0)
	u.UpdateNow()
	waitFor(t, func() bool { _, v := u.EnginePath(); return v == v2 })
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(statuses) >= 2 })
	st := u.Status()
	if st.EngineVersion != v2 || st.LastSuccess.IsZero() || st.LastError != "" || st.State != "idle" || st.Builtin {
		t.Fatalf("status %+v", st)
	}
	if d := time.Until(st.NextAttempt); d < 59*time.Minute || d > time.Hour+time.Second {
		t.Fatalf("next attempt in %v, want about an hour", d)
	}
	path, _ := u.EnginePath()
	if path == "" || filepath.Base(path) == "" {
		t.Fatal("no engine path")
	}
	// a rollback holds even a wake-up
	if _, err := u.Rollback(time.Hour); err != nil {
		t.Fatal(err)
	}
	u.UpdateNow()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(statuses) >= 3 })
	if _, v := u.EnginePath(); v != v1 {
		t.Fatalf("a wake-up during the hold updated the engine to %d", v)
	}
	if st := u.Status(); st.State != "held" || time.Until(st.NextAttempt) < 59*time.Minute {
		t.Fatalf("status during the hold %+v", st)
	}
}

func TestRun_BacksOffWhileFailing(t *testing.T) {
	var mu sync.Mutex
	var attempts []time.Time
	u := newUpdater(t, Config{Config: client.Config{StateDir: t.TempDir(), Sources: []string{filepath.Join(t.TempDir(), "missing")}},
		Interval: time.Hour, Splay: time.Nanosecond, RetryMin: 20 * time.Millisecond,
		OnStatus: func(s client.Status) { mu.Lock(); attempts = append(attempts, s.LastAttempt); mu.Unlock() }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { u.Run(ctx); close(done) }()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(attempts) >= 4 })
	cancel()
	<-done
	st := u.Status()
	if st.State != "failing" || st.LastError == "" || st.LastErrorCode != "not_found" || st.ConsecutiveFailures < 4 {
		t.Fatalf("status %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < 3; i++ {
		gap, base := attempts[i+1].Sub(attempts[i]), 20*time.Millisecond<<i
		if gap < base {
			t.Fatalf("retry %d came %v after the previous attempt, want at least %v", i+1, gap, base)
		}
	}
}

func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
