package storetest

// Conformance tests for task runs: lists scoped to what a caller may read,
// pending runs of many computers at once.

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/store"
)

func testListRunsScoped(t *testing.T, db *store.DB) {
	ctx := t.Context()
	a, err := db.CreateGroup(ctx, store.GroupAll, "A")
	must(t, err)
	b, err := db.CreateGroup(ctx, store.GroupAll, "B")
	must(t, err)
	inA, inB := computerIn(t, db, a.ID), computerIn(t, db, b.ID)
	taskA := &store.TaskRow{ID: uuid.NewString(), Name: "in A", Type: "scan", Params: `{}`, GroupID: a.ID}
	taskAll := &store.TaskRow{ID: uuid.NewString(), Name: "in All", Type: "scan", Params: `{}`, GroupID: store.GroupAll}
	must(t, db.CreateTask(ctx, taskA))
	must(t, db.CreateTask(ctx, taskAll))
	var runs []*store.TaskRun
	add := func(task *store.TaskRow, computer string, n int) {
		for range n {
			at := T0.Add(time.Duration(len(runs)) * time.Second)
			runs = append(runs, &store.TaskRun{ID: uuid.NewString(), TaskID: task.ID, ComputerID: computer, Type: "scan", Params: `{}`,
				State: store.RunPlanned, CreatedAt: at, NotBefore: at, ExpiresAt: at.Add(time.Hour)})
		}
	}
	add(taskAll, inA.ID, 3)
	add(taskAll, inB.ID, 4)
	add(taskAll, "", 1) // a run without a computer (a server task's)
	add(taskA, inA.ID, 2)
	must(t, db.CreateRuns(ctx, runs))

	for _, tc := range []struct {
		name            string
		f               store.RunFilter
		wantTotal, page int
	}{
		{"no restriction", store.RunFilter{Limit: 100}, 10, 10},
		{"computers in A", store.RunFilter{ComputerGroupIDs: []string{a.ID}, Limit: 100}, 6, 6},
		{"computers in A, pages of 2", store.RunFilter{ComputerGroupIDs: []string{a.ID}, Limit: 2, Offset: 4}, 6, 2},
		{"no computers", store.RunFilter{ComputerGroupIDs: []string{}, Limit: 100}, 1, 1},
		{"tasks in A", store.RunFilter{TaskGroupIDs: []string{a.ID}, Limit: 100}, 2, 2},
		{"no tasks", store.RunFilter{TaskGroupIDs: []string{}, Limit: 100}, 0, 0},
		{"tasks in All, computers in B", store.RunFilter{TaskID: taskAll.ID, TaskGroupIDs: []string{store.GroupAll, a.ID, b.ID},
			ComputerGroupIDs: []string{b.ID}, Limit: 100}, 5, 5},
		{"one computer out of reach", store.RunFilter{ComputerID: inB.ID, ComputerGroupIDs: []string{a.ID}, Limit: 100}, 0, 0},
	} {
		got, total, err := db.ListRuns(ctx, tc.f)
		must(t, err)
		if total != tc.wantTotal || len(got) != tc.page {
			t.Errorf("%s: %d runs, total %d; want %d, total %d", tc.name, len(got), total, tc.page, tc.wantTotal)
		}
		for _, r := range got {
			if tc.f.ComputerGroupIDs != nil && r.ComputerID == inB.ID && !slices.Contains(tc.f.ComputerGroupIDs, b.ID) {
				t.Errorf("%s: lists a run on the computer in B", tc.name)
			}
		}
	}
}

// PendingRuns answers for many computers at once (one query per 500): the
// runs each has not started, due and not expired, earliest first, at most
// perComputer each.
func testPendingRunsBatched(t *testing.T, db *store.DB) {
	ctx := t.Context()
	task := &store.TaskRow{ID: uuid.NewString(), Name: "pending", Type: "scan", Params: `{}`, GroupID: store.GroupAll}
	must(t, db.CreateTask(ctx, task))
	c1, c2, c3 := computerIn(t, db, store.GroupAll), computerIn(t, db, store.GroupAll), computerIn(t, db, store.GroupAll)
	now := T0.Add(time.Hour)
	var runs []*store.TaskRun
	add := func(c *store.Computer, state string, notBefore, expires time.Time) string {
		r := &store.TaskRun{ID: uuid.NewString(), TaskID: task.ID, ComputerID: c.ID, Type: "scan", Params: `{}`,
			State: state, CreatedAt: T0, NotBefore: notBefore, ExpiresAt: expires}
		runs = append(runs, r)
		return r.ID
	}
	// c1: three due, planned or delivered; the limit keeps the two earliest.
	third := add(c1, store.RunPlanned, now.Add(-time.Minute), now.Add(time.Hour))
	first := add(c1, store.RunDelivered, now.Add(-3*time.Minute), now.Add(time.Hour))
	second := add(c1, store.RunPlanned, now.Add(-2*time.Minute), now.Add(time.Hour))
	// c2: one due; the others started, not yet due, or expired.
	due := add(c2, store.RunPlanned, now, now.Add(time.Minute))
	add(c2, store.RunRunning, now.Add(-time.Minute), now.Add(time.Hour))
	add(c2, store.RunPlanned, now.Add(time.Second), now.Add(time.Hour))
	add(c2, store.RunPlanned, now.Add(-time.Hour), now)
	// c3: finished only.
	add(c3, store.RunSucceeded, now.Add(-time.Minute), now.Add(time.Hour))
	must(t, db.CreateRuns(ctx, runs))

	// 600 ids: the real ones at both ends, so that both chunks are read.
	ids := []string{c1.ID}
	for i := range 598 {
		ids = append(ids, "unknown-"+strconv.Itoa(i))
	}
	ids = append(ids, c2.ID, c3.ID)
	got, err := db.PendingRuns(ctx, ids, now, 2)
	must(t, err)
	idsOf := func(rs []*store.TaskRun) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	if len(got) != 2 || !slices.Equal(idsOf(got[c1.ID]), []string{first, second}) || !slices.Equal(idsOf(got[c2.ID]), []string{due}) {
		t.Fatalf("PendingRuns = %d computers, c1 %v, c2 %v; want c1 [%s %s], c2 [%s]", len(got), idsOf(got[c1.ID]), idsOf(got[c2.ID]), first, second, due)
	}
	if got, err := db.PendingRuns(ctx, []string{c1.ID}, now, 100); err != nil || len(got[c1.ID]) != 3 || got[c1.ID][2].ID != third {
		t.Fatalf("PendingRuns(c1, 100) = %v, %v; want all three, %s last", got, err, third)
	}
	if got, err := db.PendingRuns(ctx, nil, now, 100); err != nil || len(got) != 0 {
		t.Fatalf("PendingRuns(none) = %v, %v", got, err)
	}
}
