package taskrun

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/agent/agentcfg"
)

// A scan the configuration schedules runs at its time on its paths: its
// detections reach the outbox naming the schedule, then a scan.scheduled
// event with the count. The clock starts just before a minute boundary so
// that "every minute" comes at once.
func TestScheduledScan_RunsAtItsTimeAndReports(t *testing.T) {
	dir, infected := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(infected, "eicar.com"), eicar, 0o600); err != nil {
		t.Fatal(err)
	}
	line := "* * * * * " + infected
	if err := agentcfg.SetLocal(dir, "protection.scheduled_scans", &line); err != nil {
		t.Fatal(err)
	}
	cfg, err := agentcfg.Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	out := newRecorder()
	start := time.Now()
	base := start.Truncate(time.Minute).Add(time.Minute - 300*time.Millisecond)
	r := &Runner{StateDir: dir, Outbox: out, Config: cfg, Log: slog.New(slog.DiscardHandler),
		Now: func() time.Time { return base.Add(time.Since(start)) }}
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); r.Wait() }()
	deadline := time.After(30 * time.Second)
	for len(out.of(EventScheduledScan, "")) == 0 {
		select {
		case <-out.added:
		case <-deadline:
			t.Fatalf("no scheduled scan in 30s; events %+v", out.events)
		}
	}
	done := out.of(EventScheduledScan, "")
	if len(done) != 1 || done[0]["detections"] != float64(1) || done[0]["cron"] != "* * * * *" || done[0]["error"] != nil {
		t.Fatalf("scan.scheduled events %+v, want one with 1 detection and no error", done)
	}
	found := out.of("detection.found", "")
	if len(found) != 1 || !strings.HasPrefix(found[0]["source"].(string), "scheduled scan * * * * * ") {
		t.Fatalf("detections %+v, want one from the scheduled scan", found)
	}
}

// The first scan due is chosen; an expression that does not parse (a
// damaged file: the server validates them) is skipped with a warning.
func TestNextScheduled_EarliestAndBadExpressions(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)
	var warned []string
	warn := func(msg string, _ ...any) { warned = append(warned, msg) }
	scans := []agentcfg.ScheduledScan{
		{Cron: "0 3 * * *", Paths: []string{"/a"}},
		{Cron: "not cron", Paths: []string{"/b"}},
		{Cron: "45 10 * * *", Paths: []string{"/c"}},
		{Cron: "@daily", Paths: []string{"/d"}},
	}
	at, sc, ok := nextScheduled(scans, now, warn)
	if !ok || sc.Paths[0] != "/c" || !at.Equal(time.Date(2026, 11, 22, 10, 45, 0, 0, time.UTC)) || len(warned) != 1 {
		t.Fatalf("next = %v %+v %v, warnings %v; want /c at 10:45 and one warning", at, sc, ok, warned)
	}
	if _, _, ok := nextScheduled(nil, now, warn); ok {
		t.Fatal("a scan is due with no schedule")
	}
}
