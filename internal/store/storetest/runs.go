package storetest

// Conformance tests for ListRuns scoped to what a caller may read.

import (
	"slices"
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
