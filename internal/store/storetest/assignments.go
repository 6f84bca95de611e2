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
