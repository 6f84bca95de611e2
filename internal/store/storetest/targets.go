package storetest

import (
	"testing"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

// Assignments carry a version: a rank change or an unassignment based on
// an older one is a conflict and changes nothing.
func testAssignmentVersions(t *testing.T, db *store.DB) {
	ctx := t.Context()
	must(t, db.CreatePolicy(ctx, &store.PolicyRow{ID: "p", Name: "p", Product: "agent", GroupID: store.GroupAll, Settings: "{}"}))
	a := &store.PolicyAssignment{ID: "a", PolicyID: "p", TargetType: "static", TargetID: store.GroupAll, Rank: 1}
	must(t, db.AssignPolicy(ctx, a))
	if a.Version != 1 {
		t.Fatalf("new assignment version %d", a.Version)
	}
	must(t, db.SetAssignmentRank(ctx, "a", 5, 1))
	WantCode(t, db.SetAssignmentRank(ctx, "a", 9, 1), errcode.Conflict)
	WantCode(t, db.SetAssignmentRank(ctx, "nope", 9, 1), errcode.NotFound)
	got, err := db.PolicyAssignmentByID(ctx, "a")
	must(t, err)
	if got.Rank != 5 || got.Version != 2 {
		t.Fatalf("after a rank change and a stale one: %+v", got)
	}
	WantCode(t, db.Unassign(ctx, "a", 1), errcode.Conflict)
	must(t, db.Unassign(ctx, "a", 2))
	WantCode(t, db.Unassign(ctx, "a", 2), errcode.NotFound)
}

// Deleting a group takes it out of the triggers aimed at it; a trigger left
// aiming at nothing, or following a deleted dynamic group's joins, is
// disabled; other triggers are untouched.
func testTriggersLoseDeletedGroups(t *testing.T, db *store.DB) {
	ctx := t.Context()
	g := newGroup(t, db, store.GroupAll, "Gone")
	must(t, db.CreateDynamicGroup(ctx, &store.DynamicGroup{ID: "dyn", Name: "dyn", StaticParentID: store.GroupAll, Template: `{"op":"and","rules":[]}`}))
	must(t, db.CreateTask(ctx, &store.TaskRow{ID: "task", Name: "task", Type: "scan", Params: "{}", GroupID: store.GroupAll}))
	trig := func(id, spec, targets string) {
		must(t, db.CreateTrigger(ctx, &store.TriggerRow{ID: id, TaskID: "task", Spec: spec, Targets: targets, Enabled: true, CreatedAt: T0}))
	}
	daily := `{"kind":"daily","at":"03:00"}`
	trig("only", daily, `[{"type":"static_group","id":"`+g.ID+`"}]`)
	trig("mixed", daily, `[{"type":"static_group","id":"`+g.ID+`"},{"type":"static_group","id":"all"}]`)
	trig("other", daily, `[{"type":"static_group","id":"all"}]`)
	trig("joins", `{"kind":"joined_dynamic_group","dynamic_group_id":"dyn"}`, `[]`)
	trig("dyn-target", daily, `[{"type":"dynamic_group","id":"dyn"}]`)

	must(t, db.DeleteGroup(ctx, g.ID, "", g.Version))
	must(t, db.DeleteDynamicGroup(ctx, "dyn", 1))

	for id, want := range map[string]struct {
		enabled bool
		targets string
	}{
		"only":       {false, `[]`},
		"mixed":      {true, `[{"type":"static_group","id":"all"}]`},
		"other":      {true, `[{"type":"static_group","id":"all"}]`},
		"joins":      {false, `[]`},
		"dyn-target": {false, `[]`},
	} {
		tr, err := db.TriggerByID(ctx, id)
		must(t, err)
		if tr.Enabled != want.enabled || tr.Targets != want.targets {
			t.Errorf("trigger %s: enabled %v targets %s; want %v %s", id, tr.Enabled, tr.Targets, want.enabled, want.targets)
		}
	}
}
