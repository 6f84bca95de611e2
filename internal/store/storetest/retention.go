package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

// Retention deletes, in batches, computer events and server events older
// than the cutoff, detections resolved before it and runs finished before
// it (returning their uploads), and nothing else: unresolved detections,
// runs not finished, younger rows and the latest server event stay.
func testRetention(t *testing.T, db *store.DB) {
	ctx := t.Context()
	const day = 24 * time.Hour
	old, young, cutoff := T0.Add(time.Hour), T0.Add(40*day), T0.Add(30*day)
	c := computerIn(t, db, store.GroupAll)
	ev := func(id, typ string, at time.Time) store.Event {
		return store.Event{ID: id, Type: typ, OccurredAt: at, Data: `{"signature":"EICAR-Test-File","path":"/x/` + id + `"}`}
	}
	if _, err := db.ApplyCheckIn(ctx, &store.CheckIn{ComputerID: c.ID, Now: old, Events: []store.Event{
		ev("e1", "agent.started", old), ev("e2", "agent.stopped", old),
		ev("det-old-resolved", store.DetectionEventType, old), ev("det-old-open", store.DetectionEventType, old)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ApplyCheckIn(ctx, &store.CheckIn{ComputerID: c.ID, Now: young, Events: []store.Event{
		ev("e3", "agent.started", young), ev("det-young-resolved", store.DetectionEventType, young)}}); err != nil {
		t.Fatal(err)
	}
	must(t, db.SetDetectionState(ctx, "det-old-resolved", store.DetectionResolved, "alice", old.Add(time.Hour)))
	must(t, db.SetDetectionState(ctx, "det-young-resolved", store.DetectionResolved, "alice", young))

	task := &store.TaskRow{ID: uuid.NewString(), Name: "diag", Type: "diagnostics", Params: `{}`, GroupID: store.GroupAll}
	must(t, db.CreateTask(ctx, task))
	run := func(id string) *store.TaskRun {
		return &store.TaskRun{ID: id, TaskID: task.ID, ComputerID: c.ID, Type: "diagnostics", Params: `{}`, CreatedAt: T0, NotBefore: T0, ExpiresAt: young.Add(day)}
	}
	must(t, db.CreateRuns(ctx, []*store.TaskRun{run("run-old"), run("run-open"), run("run-young")}))
	must(t, db.CancelRun(ctx, "run-old", old))
	must(t, db.SetRunAttachment(ctx, "run-old", "run-old.tar.gz"))
	must(t, db.CancelRun(ctx, "run-young", young))

	// Computer events, one at a time: the old check-in's four.
	var deleted int64
	for i := 0; ; i++ {
		n, err := db.DeleteComputerEventsBefore(ctx, cutoff, 1)
		must(t, err)
		deleted += n
		if n < 1 || i > 10 {
			break
		}
	}
	evs, _, err := db.ComputerEvents(ctx, c.ID, store.EventFilter{Limit: 100})
	must(t, err)
	var left []string
	for _, e := range evs {
		left = append(left, e.ID)
	}
	slices.Sort(left)
	if deleted != 4 || !slices.Equal(left, []string{"det-young-resolved", "e3"}) {
		t.Fatalf("deleted %d computer events, left %v; want 4, [det-young-resolved e3]", deleted, left)
	}

	// Server events: the old ones go; the young ones stay.
	before, err := db.ServerEventsAfter(ctx, 0, nil, 1000)
	must(t, err)
	n, err := db.DeleteServerEventsBefore(ctx, cutoff, 1000)
	must(t, err)
	after, err := db.ServerEventsAfter(ctx, 0, nil, 1000)
	must(t, err)
	oldOnes := 0
	for _, e := range before {
		if e.At.Before(cutoff) {
			oldOnes++
		}
	}
	if oldOnes == 0 || n != int64(oldOnes) || len(after) != len(before)-oldOnes {
		t.Fatalf("server events: %d before (%d old), deleted %d, %d after", len(before), oldOnes, n, len(after))
	}
	for _, e := range after {
		if e.At.Before(cutoff) {
			t.Fatalf("an old server event stayed: %+v", e)
		}
	}
	// The latest one stays whatever its age: the feed's consumers start from it.
	seq, err := db.ServerEventSeq(ctx)
	must(t, err)
	n, err = db.DeleteServerEventsBefore(ctx, young.Add(365*day), 1000)
	must(t, err)
	after, err = db.ServerEventsAfter(ctx, 0, nil, 1000)
	must(t, err)
	if len(after) != 1 || after[0].Seq != seq {
		t.Fatalf("after deleting everything: %+v (deleted %d), want only seq %d", after, n, seq)
	}

	// Detections: only the one resolved before the cutoff.
	n, err = db.DeleteResolvedDetectionsBefore(ctx, cutoff, 10)
	must(t, err)
	if n != 1 {
		t.Fatalf("deleted %d detections, want 1", n)
	}
	WantCode(t, func() error { _, err := db.DetectionByID(ctx, "det-old-resolved"); return err }(), errcode.NotFound)
	for _, id := range []string{"det-old-open", "det-young-resolved"} {
		if _, err := db.DetectionByID(ctx, id); err != nil {
			t.Fatalf("detection %s: %v", id, err)
		}
	}

	// Runs: only the one finished before the cutoff, with its upload's name.
	n, files, err := db.DeleteFinishedRunsBefore(ctx, cutoff, 10)
	must(t, err)
	if n != 1 || !slices.Equal(files, []string{"run-old.tar.gz"}) {
		t.Fatalf("deleted %d runs with files %v, want 1 with [run-old.tar.gz]", n, files)
	}
	WantCode(t, func() error { _, err := db.RunByID(ctx, "run-old"); return err }(), errcode.NotFound)
	for _, id := range []string{"run-open", "run-young"} {
		if _, err := db.RunByID(ctx, id); err != nil {
			t.Fatalf("run %s: %v", id, err)
		}
	}
	// Unlike server events, computer events may all go.
	if n, err := db.DeleteComputerEventsBefore(ctx, young.Add(365*day), 100); err != nil || n != 2 {
		t.Fatalf("deleting every computer event: %d, %v; want 2", n, err)
	}
	if _, total, err := db.ComputerEvents(ctx, c.ID, store.EventFilter{Limit: 100}); err != nil || total != 0 {
		t.Fatalf("%d computer events left (%v)", total, err)
	}
	// Nothing left to delete.
	for name, del := range map[string]func() (int64, error){
		"events":     func() (int64, error) { return db.DeleteComputerEventsBefore(ctx, cutoff, 10) },
		"detections": func() (int64, error) { return db.DeleteResolvedDetectionsBefore(ctx, cutoff, 10) },
		"runs":       func() (int64, error) { n, _, err := db.DeleteFinishedRunsBefore(ctx, cutoff, 10); return n, err },
	} {
		if n, err := del(); err != nil || n != 0 {
			t.Fatalf("second pass over %s: %d, %v", name, n, err)
		}
	}
}
