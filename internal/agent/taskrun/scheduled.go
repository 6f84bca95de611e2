package taskrun

import (
	"context"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/agent/agentcfg"
	"github.com/mamori/mamori/internal/policy"
)

// EventScheduledScan is the outbox event a scheduled scan ends with.
const EventScheduledScan = "scan.scheduled"

// ScheduledScanEvent is its data.
type ScheduledScanEvent struct {
	Cron       string   `json:"cron"`
	Paths      []string `json:"paths"`
	Detections int      `json:"detections"`
	ExitCode   int      `json:"exit_code"`
	Error      string   `json:"error,omitempty"`
	Started    string   `json:"started"`
	Finished   string   `json:"finished"`
}

// runSchedules runs the configuration's scheduled scans
// (protection.scheduled_scans) until ctx ends, following configuration
// changes. A time missed while the agent was stopped is not made up; a scan
// still running when its next time comes makes that time missed. Scans
// take their turn with the other heavy work (scan tasks, engine updates).
func (r *Runner) runSchedules(ctx context.Context) {
	changed := make(chan struct{}, 1)
	r.Config.OnChange(func(*agentcfg.Settings) {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	for {
		now := r.Now()
		at, scan, ok := nextScheduled(r.Config.Settings().ScheduledScans, now, r.Log.Warn)
		var fire <-chan time.Time // nil: nothing scheduled, only a change wakes
		var t *time.Timer
		if ok {
			t = time.NewTimer(at.Sub(now))
			fire = t.C
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-fire:
			r.scheduledScan(ctx, scan)
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// nextScheduled is the scheduled scan due first after now; expressions
// that do not parse (validated by the server: a damaged file) are skipped
// and reported through warn.
func nextScheduled(scans []agentcfg.ScheduledScan, now time.Time, warn func(string, ...any)) (time.Time, agentcfg.ScheduledScan, bool) {
	var at time.Time
	var first agentcfg.ScheduledScan
	for _, sc := range scans {
		sched, err := policy.ParseCron(sc.Cron)
		if err != nil {
			warn("scheduled scan skipped: bad cron expression", "cron", sc.Cron, "err", err)
			continue
		}
		if next := sched.Next(now); !next.IsZero() && (at.IsZero() || next.Before(at)) {
			at, first = next, sc
		}
	}
	return at, first, !at.IsZero()
}

func (r *Runner) scheduledScan(ctx context.Context, sc agentcfg.ScheduledScan) {
	r.heavy.Lock()
	defer r.heavy.Unlock()
	started := r.Now().UTC()
	r.Log.Info("scheduled scan started", "cron", sc.Cron, "paths", sc.Paths)
	res, err := r.Scan(ctx, ScanRequest{RunID: "scheduled", Paths: sc.Paths,
		Source: "scheduled scan " + sc.Cron + " " + strings.Join(sc.Paths, ",")})
	ev := ScheduledScanEvent{Cron: sc.Cron, Paths: sc.Paths, Detections: res.Detections, ExitCode: res.ExitCode,
		Started: started.Format(time.RFC3339), Finished: r.Now().UTC().Format(time.RFC3339), Error: scanFailure(ctx, res, err)}
	r.Log.Info("scheduled scan finished", "cron", sc.Cron, "detections", ev.Detections, "exit_code", ev.ExitCode, "error", ev.Error)
	if _, err := r.Outbox.Append(EventScheduledScan, ev); err != nil {
		r.Log.Error("scheduled scan result could not be queued for the server", "err", err)
	}
}
