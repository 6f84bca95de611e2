package retention_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/retention"
	"github.com/mamori/mamori/internal/store"
	"github.com/mamori/mamori/internal/store/storetest"
)

func openStore(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.OpenSQLite(t.Context(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestSettings_DefaultsBoundsAndVersions(t *testing.T) {
	db := openStore(t)
	s, v, err := retention.Load(t.Context(), db)
	must(t, err)
	if v != 0 || s != (retention.Settings{EventsDays: 30, DetectionsDays: 90, TaskRunsDays: 90}) {
		t.Fatalf("never set: %+v version %d", s, v)
	}
	for _, bad := range []retention.Settings{{EventsDays: -1}, {DetectionsDays: retention.MaxDays + 1}, {TaskRunsDays: -30}} {
		if _, err := retention.Save(t.Context(), db, bad, 0); errcode.Of(err) != errcode.Invalid {
			t.Errorf("Save(%+v) = %v, want invalid", bad, err)
		}
	}
	v, err = retention.Save(t.Context(), db, retention.Settings{EventsDays: 7}, 0)
	must(t, err)
	if _, err := retention.Save(t.Context(), db, retention.Settings{EventsDays: 8}, 0); errcode.Of(err) != errcode.Conflict {
		t.Fatalf("saving over a newer version: %v, want conflict", err)
	}
	s, v2, err := retention.Load(t.Context(), db)
	must(t, err)
	if v2 != v || s != (retention.Settings{EventsDays: 7, DetectionsDays: 90, TaskRunsDays: 90}) {
		t.Fatalf("after saving: %+v version %d (saved %d)", s, v2, v)
	}
}

// A pass deletes, in batches, what is older than the settings say, and
// the files old runs uploaded; a second pass finds nothing.
func TestPruner_DeletesWhatOutlivedTheSettingsInBatches(t *testing.T) {
	db := openStore(t)
	ctx := t.Context()
	now := storetest.T0.Add(100 * 24 * time.Hour)
	c := storetest.Enroll(t, db, storetest.NewToken(t, db, store.GroupLostFound, 0), storetest.T0, store.Computer{})
	var events []store.Event
	for i := range 25 {
		events = append(events, store.Event{ID: "old-" + string(rune('a'+i)), Type: "agent.started", OccurredAt: storetest.T0, Data: "{}"})
	}
	_, err := db.ApplyCheckIn(ctx, &store.CheckIn{ComputerID: c.ID, Now: storetest.T0, Events: events})
	must(t, err)
	_, err = db.ApplyCheckIn(ctx, &store.CheckIn{ComputerID: c.ID, Now: now, Events: []store.Event{{ID: "new", Type: "agent.started", OccurredAt: now, Data: "{}"}}})
	must(t, err)
	task := &store.TaskRow{ID: "diag", Name: "diag", Type: "diagnostics", Params: "{}", GroupID: store.GroupAll}
	must(t, db.CreateTask(ctx, task))
	must(t, db.CreateRuns(ctx, []*store.TaskRun{{ID: "r1", TaskID: task.ID, ComputerID: c.ID, Type: "diagnostics", Params: "{}",
		CreatedAt: storetest.T0, NotBefore: storetest.T0, ExpiresAt: now}}))
	must(t, db.CancelRun(ctx, "r1", storetest.T0))
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "r1.tar.gz"), []byte("bundle"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "other.tar.gz"), []byte("bundle"), 0o600))
	must(t, db.SetRunAttachment(ctx, "r1", "r1.tar.gz"))

	var mu sync.Mutex
	statements := map[string]int{}
	p := &retention.Pruner{Store: db, AttachmentDir: dir, Now: func() time.Time { return now }, Batch: 10, Pause: time.Millisecond,
		OnDeleted: func(kind string, n int64) { mu.Lock(); statements[kind]++; mu.Unlock() }}
	res, err := p.Pass(ctx)
	must(t, err)
	if res[retention.KindComputerEvents] != 25 || res[retention.KindTaskRuns] != 1 || res[retention.KindFiles] != 1 {
		t.Fatalf("pass deleted %v", res)
	}
	if statements[retention.KindComputerEvents] != 3 { // 10 + 10 + 5
		t.Fatalf("computer events deleted by %d statements, want 3 of at most 10", statements[retention.KindComputerEvents])
	}
	evs, total, err := db.ComputerEvents(ctx, c.ID, store.EventFilter{Limit: 100})
	must(t, err)
	if total != 1 || evs[0].ID != "new" {
		t.Fatalf("events left: %d %+v", total, evs)
	}
	if _, err := os.Stat(filepath.Join(dir, "r1.tar.gz")); !os.IsNotExist(err) {
		t.Fatalf("the old run's upload is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "other.tar.gz")); err != nil {
		t.Fatalf("a file of no deleted run was removed: %v", err)
	}
	res, err = p.Pass(ctx)
	must(t, err)
	if len(res) != 0 {
		t.Fatalf("second pass deleted %v", res)
	}

	// Longer retention keeps what a shorter one would delete.
	_, err = db.ApplyCheckIn(ctx, &store.CheckIn{ComputerID: c.ID, Now: now.Add(-20 * 24 * time.Hour), Events: []store.Event{{ID: "20d", Type: "agent.started", OccurredAt: now, Data: "{}"}}})
	must(t, err)
	_, err = retention.Save(ctx, db, retention.Settings{EventsDays: 60}, 0)
	must(t, err)
	res, err = p.Pass(ctx)
	must(t, err)
	if res[retention.KindComputerEvents] != 0 {
		t.Fatalf("60 days of retention deleted %v", res)
	}
}

// Run makes its first pass after Delay and stops with its context.
func TestPruner_RunPassesUntilStopped(t *testing.T) {
	db := openStore(t)
	c := storetest.Enroll(t, db, storetest.NewToken(t, db, store.GroupLostFound, 0), storetest.T0, store.Computer{})
	_, err := db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: c.ID, Now: storetest.T0, Events: []store.Event{{ID: "old", Type: "agent.started", OccurredAt: storetest.T0, Data: "{}"}}})
	must(t, err)
	deleted := make(chan string, 10)
	p := &retention.Pruner{Store: db, Now: func() time.Time { return storetest.T0.Add(365 * 24 * time.Hour) }, Delay: time.Millisecond,
		OnDeleted: func(kind string, n int64) { deleted <- kind }}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	select {
	case kind := <-deleted:
		if kind != retention.KindComputerEvents && kind != retention.KindServerEvents {
			t.Fatalf("first deletion: %s", kind)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no pass within 10 s")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop with its context")
	}
}

// failingRuns is a store whose run deletion fails after naming files.
type failingRuns struct {
	*store.DB
}

func (failingRuns) DeleteFinishedRunsBefore(context.Context, time.Time, int) (int64, []string, error) {
	return 0, []string{"r1.tar.gz"}, errors.New("the transaction was cut short")
}

// Files are removed only with their runs: a failed deletion keeps both.
func TestPruner_KeepsTheFilesOfRunsItCouldNotDelete(t *testing.T) {
	db := openStore(t)
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "r1.tar.gz"), []byte("bundle"), 0o600))
	p := &retention.Pruner{Store: failingRuns{db}, AttachmentDir: dir}
	if _, err := p.Pass(t.Context()); err == nil {
		t.Fatal("the failure was not reported")
	}
	if _, err := os.Stat(filepath.Join(dir, "r1.tar.gz")); err != nil {
		t.Fatalf("the file of a run still there is gone: %v", err)
	}
}
