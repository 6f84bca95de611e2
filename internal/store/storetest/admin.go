package storetest

// Conformance tests for the admin plane: the group tree operations, users
// and their security state, permission sets, API tokens, the audit log,
// settings, tags, and the versioned edits of computers.

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

// ---- helpers ---------------------------------------------------------------

func newGroup(t *testing.T, db *store.DB, parent, name string) *store.Group {
	t.Helper()
	g, err := db.CreateGroup(t.Context(), parent, name)
	must(t, err)
	return g
}

func groupByID(t *testing.T, db *store.DB, id string) *store.Group {
	t.Helper()
	g, ok := groups(t, db).Get(id)
	if !ok {
		t.Fatalf("group %s not found", id)
	}
	return g
}

func groupPaths(t *testing.T, db *store.DB) []string {
	t.Helper()
	var out []string
	for _, g := range groups(t, db).List() {
		out = append(out, g.Path)
	}
	return out
}

func newUser(t *testing.T, db *store.DB, id, name string, sets ...string) *store.User {
	t.Helper()
	u := &store.User{ID: id, Username: name, PasswordHash: "hash-" + id, PermissionSetIDs: sets}
	must(t, db.CreateUser(t.Context(), u))
	return u
}

func user(t *testing.T, db *store.DB, id string) *store.User {
	t.Helper()
	u, err := db.UserByID(t.Context(), id)
	must(t, err)
	return u
}

func permSet(t *testing.T, db *store.DB, id string) *store.PermissionSet {
	t.Helper()
	ps, err := db.PermissionSetByID(t.Context(), id)
	must(t, err)
	return ps
}

func newPermSet(t *testing.T, db *store.DB, id, accessGroup string, scope []string, grants map[string]int) *store.PermissionSet {
	t.Helper()
	ps := &store.PermissionSet{ID: id, Name: "Set " + id, GroupID: accessGroup, Groups: scope, Grants: grants}
	must(t, db.CreatePermissionSet(t.Context(), ps))
	return ps
}

// computerIn enrolls a computer and moves it into groupID.
func computerIn(t *testing.T, db *store.DB, groupID string) *store.Computer {
	t.Helper()
	c := Enroll(t, db, NewToken(t, db, store.GroupLostFound, 0), T0, store.Computer{})
	must(t, db.MoveComputer(t.Context(), c.ID, groupID, c.Version))
	return computer(t, db, c.ID)
}

func userNames(us []*store.User) []string {
	out := []string{}
	for _, u := range us {
		out = append(out, u.Username)
	}
	return out
}

func setIDs(sets []*store.PermissionSet) []string {
	out := []string{}
	for _, s := range sets {
		out = append(out, s.ID)
	}
	return out
}

func auditIDs(es []*store.AuditEntry) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, e.ObjectID)
	}
	return out
}

// ---- group tree operations -------------------------------------------------

func testIsWithin(t *testing.T, db *store.DB) {
	servers := newGroup(t, db, store.GroupAll, "Servers")
	web := newGroup(t, db, servers.ID, "Web")
	laptops := newGroup(t, db, store.GroupAll, "Laptops")
	tree := groups(t, db)
	for _, tc := range []struct {
		id, ancestor string
		want         bool
	}{
		{web.ID, web.ID, true},
		{web.ID, servers.ID, true},
		{web.ID, store.GroupAll, true},
		{servers.ID, store.GroupAll, true},
		{store.GroupAll, store.GroupAll, true},
		{store.GroupLostFound, store.GroupAll, true},
		{servers.ID, web.ID, false}, // an ancestor is not within its descendant
		{store.GroupAll, servers.ID, false},
		{web.ID, laptops.ID, false},
		{laptops.ID, servers.ID, false},
		{store.GroupLostFound, servers.ID, false},
		{"nope", store.GroupAll, false},
		{"", store.GroupAll, false},
		{web.ID, "nope", false},
	} {
		if got := tree.IsWithin(tc.id, tc.ancestor); got != tc.want {
			t.Errorf("IsWithin(%s, %s) = %v, want %v", tc.id, tc.ancestor, got, tc.want)
		}
	}
}

func testRenameGroup(t *testing.T, db *store.DB) {
	ctx := t.Context()
	servers := newGroup(t, db, store.GroupAll, "Servers")
	web := newGroup(t, db, servers.ID, "Web")
	newGroup(t, db, store.GroupAll, "Laptops")

	WantCode(t, db.RenameGroup(ctx, store.GroupAll, "Everything", groupByID(t, db, store.GroupAll).Version), errcode.Invalid)
	WantCode(t, db.RenameGroup(ctx, servers.ID, "a/b", servers.Version), errcode.Invalid)
	WantCode(t, db.RenameGroup(ctx, servers.ID, " Servers", servers.Version), errcode.Invalid)
	WantCode(t, db.RenameGroup(ctx, servers.ID, "Laptops", servers.Version), errcode.Conflict)
	WantCode(t, db.RenameGroup(ctx, "nope", "Other", 1), errcode.NotFound)
	if g := groupByID(t, db, servers.ID); g.Name != "Servers" || g.Version != servers.Version {
		t.Fatalf("refused renames changed the group: %+v", g)
	}

	must(t, db.RenameGroup(ctx, servers.ID, "Hosts", servers.Version))
	tree := groups(t, db)
	got, _ := tree.Get(servers.ID)
	if got.Name != "Hosts" || got.Path != "All/Hosts" || got.Version != servers.Version+1 {
		t.Fatalf("renamed group = %+v, want name Hosts, version %d", got, servers.Version+1)
	}
	if w, _ := tree.Get(web.ID); w.Path != "All/Hosts/Web" {
		t.Fatalf("subgroup path = %q, want All/Hosts/Web", w.Path)
	}
	if _, err := tree.Resolve("Servers"); errcode.Of(err) != errcode.NotFound {
		t.Fatalf("the old name still resolves: %v", err)
	}

	// The version read before the rename is stale now.
	WantCode(t, db.RenameGroup(ctx, servers.ID, "Again", servers.Version), errcode.Conflict)
	if g := groupByID(t, db, servers.ID); g.Name != "Hosts" {
		t.Fatalf("stale rename applied: %+v", g)
	}
}

func testMoveGroup(t *testing.T, db *store.DB) {
	ctx := t.Context()
	a := newGroup(t, db, store.GroupAll, "A")
	b := newGroup(t, db, a.ID, "B")
	c := newGroup(t, db, b.ID, "C")
	d := newGroup(t, db, store.GroupAll, "D")
	before := groupPaths(t, db)

	WantCode(t, db.MoveGroup(ctx, store.GroupAll, d.ID, 1), errcode.Invalid)
	WantCode(t, db.MoveGroup(ctx, a.ID, a.ID, a.Version), errcode.Invalid) // into itself
	WantCode(t, db.MoveGroup(ctx, a.ID, b.ID, a.Version), errcode.Invalid) // into its child
	WantCode(t, db.MoveGroup(ctx, a.ID, c.ID, a.Version), errcode.Invalid) // into its grandchild
	WantCode(t, db.MoveGroup(ctx, a.ID, "nope", a.Version), errcode.NotFound)
	WantCode(t, db.MoveGroup(ctx, "nope", d.ID, 1), errcode.NotFound)
	if after := groupPaths(t, db); !slices.Equal(after, before) {
		t.Fatalf("refused moves changed the tree: %q, want %q", after, before)
	}

	// B moves under D with its subtree.
	must(t, db.MoveGroup(ctx, b.ID, d.ID, b.Version))
	tree := groups(t, db)
	if g, _ := tree.Get(b.ID); g.ParentID != d.ID || g.Path != "All/D/B" || g.Version != b.Version+1 {
		t.Fatalf("moved group = %+v", g)
	}
	if g, _ := tree.Get(c.ID); g.Path != "All/D/B/C" {
		t.Fatalf("subgroup of the moved group at %q, want All/D/B/C", g.Path)
	}
	WantCode(t, db.MoveGroup(ctx, b.ID, a.ID, b.Version), errcode.Conflict) // stale version

	// A destination that has a group with the same name.
	newGroup(t, db, a.ID, "B")
	WantCode(t, db.MoveGroup(ctx, b.ID, a.ID, b.Version+1), errcode.Conflict)
	if g := groupByID(t, db, b.ID); g.ParentID != d.ID {
		t.Fatalf("conflicting move applied: %+v", g)
	}

	// A is no longer above C, so it may go below it; then D, above C, may
	// not go below A.
	must(t, db.MoveGroup(ctx, a.ID, c.ID, a.Version))
	if g := groupByID(t, db, a.ID); g.Path != "All/D/B/C/A" {
		t.Fatalf("A at %q, want All/D/B/C/A", g.Path)
	}
	WantCode(t, db.MoveGroup(ctx, d.ID, a.ID, d.Version), errcode.Invalid)
}

func testGroupMembersOf(t *testing.T, db *store.DB) {
	ctx := t.Context()
	g := newGroup(t, db, store.GroupAll, "G")
	sub := newGroup(t, db, g.ID, "Sub")
	empty := newGroup(t, db, store.GroupAll, "Empty")

	tok := NewToken(t, db, g.ID, 0) // lands in G, lives in All
	Enroll(t, db, tok, T0, store.Computer{})
	Enroll(t, db, tok, T0, store.Computer{})
	revoked := Enroll(t, db, tok, T0, store.Computer{})
	must(t, db.RevokeComputer(ctx, revoked.ID, T0))
	computerIn(t, db, sub.ID) // a subgroup's member is not G's
	both := &store.EnrollmentToken{ID: "both", SecretHash: randomHex(t, 32), GroupID: g.ID, AccessGroupID: g.ID,
		ExpiresAt: T0.Add(time.Hour), CreatedAt: T0}
	must(t, db.CreateEnrollmentToken(ctx, both)) // counted once
	newPermSet(t, db, "s1", g.ID, []string{store.GroupAll}, map[string]int{"computers": 1})
	newPermSet(t, db, "scoped", store.GroupAll, []string{g.ID}, map[string]int{"computers": 1}) // scope is not membership
	must(t, db.CreateUser(ctx, &store.User{ID: "u1", Username: "alice", PasswordHash: "h", HomeGroupID: g.ID}))
	must(t, db.CreateUser(ctx, &store.User{ID: "u2", Username: "bob", PasswordHash: "h", HomeGroupID: g.ID}))

	m, err := db.GroupMembersOf(ctx, g.ID)
	must(t, err)
	want := store.GroupMembers{Subgroups: 1, Computers: 2, EnrollmentTokens: 2, PermissionSets: 1, Users: 2}
	if m != want || m.Empty() {
		t.Fatalf("GroupMembersOf(G) = %+v (empty %v), want %+v", m, m.Empty(), want)
	}
	m, err = db.GroupMembersOf(ctx, empty.ID)
	must(t, err)
	if !m.Empty() {
		t.Fatalf("GroupMembersOf(Empty) = %+v, want empty", m)
	}
}

func testDeleteGroupRefusals(t *testing.T, db *store.DB) {
	ctx := t.Context()
	for _, id := range []string{store.GroupAll, store.GroupLostFound} {
		v := groupByID(t, db, id).Version
		WantCode(t, db.DeleteGroup(ctx, id, "", v), errcode.Invalid)
		WantCode(t, db.DeleteGroup(ctx, id, store.GroupAll, v), errcode.Invalid)
	}
	WantCode(t, db.DeleteGroup(ctx, "nope", "", 1), errcode.NotFound)

	g := newGroup(t, db, store.GroupAll, "G")
	sub := newGroup(t, db, g.ID, "Sub")
	WantCode(t, db.DeleteGroup(ctx, g.ID, "", g.Version), errcode.Conflict)
	WantCode(t, db.DeleteGroup(ctx, g.ID, store.GroupLostFound, g.Version), errcode.Conflict) // subgroups block even with moveTo

	must(t, db.RenameGroup(ctx, sub.ID, "Sub2", sub.Version))
	WantCode(t, db.DeleteGroup(ctx, sub.ID, "", sub.Version), errcode.Conflict) // stale
	WantCode(t, db.DeleteGroup(ctx, sub.ID, sub.ID, sub.Version+1), errcode.Invalid)
	WantCode(t, db.DeleteGroup(ctx, sub.ID, "nope", sub.Version+1), errcode.NotFound)
	if n := len(groups(t, db).List()); n != 4 {
		t.Fatalf("%d groups after refused deletions, want 4", n)
	}

	must(t, db.DeleteGroup(ctx, sub.ID, "", sub.Version+1))
	must(t, db.DeleteGroup(ctx, g.ID, "", g.Version)) // no subgroups any more
	if paths := groupPaths(t, db); !slices.Equal(paths, []string{"All", "All/Lost & Found"}) {
		t.Fatalf("groups after deletion = %q", paths)
	}
	WantCode(t, db.DeleteGroup(ctx, g.ID, "", g.Version), errcode.NotFound)
}

func testDeleteGroupNotEmpty(t *testing.T, db *store.DB) {
	ctx := t.Context()
	for i, tc := range []struct {
		name string
		fill func(g string)
	}{
		{"computer", func(g string) { computerIn(t, db, g) }},
		{"enrollment token", func(g string) { NewToken(t, db, g, 0) }},
		{"token's access group", func(g string) {
			must(t, db.CreateEnrollmentToken(ctx, &store.EnrollmentToken{ID: "acc-" + g, SecretHash: randomHex(t, 32),
				GroupID: store.GroupLostFound, AccessGroupID: g, ExpiresAt: T0.Add(time.Hour), CreatedAt: T0}))
		}},
		{"permission set", func(g string) { newPermSet(t, db, "ps-"+g, g, nil, nil) }},
		{"user's home group", func(g string) {
			must(t, db.CreateUser(ctx, &store.User{ID: "u-" + g, Username: "user-" + g, PasswordHash: "h", HomeGroupID: g}))
		}},
		{"policy", func(g string) {
			must(t, db.CreatePolicy(ctx, &store.PolicyRow{ID: "p-" + g, Name: "policy " + g, Product: "agent", GroupID: g, Settings: "{}"}))
		}},
		{"task", func(g string) {
			must(t, db.CreateTask(ctx, &store.TaskRow{ID: "t-" + g, Name: "task " + g, Type: "scan", Params: "{}", GroupID: g}))
		}},
		{"dynamic group", func(g string) {
			must(t, db.CreateDynamicGroup(ctx, &store.DynamicGroup{ID: "d-" + g, Name: "dyn " + g, StaticParentID: g, Template: `{"op":"and","rules":[]}`}))
		}},
	} {
		g := newGroup(t, db, store.GroupAll, fmt.Sprintf("G%d", i))
		tc.fill(g.ID)
		m, err := db.GroupMembersOf(ctx, g.ID)
		must(t, err)
		if m.Empty() {
			t.Fatalf("%s: GroupMembersOf is empty", tc.name)
		}
		err = db.DeleteGroup(ctx, g.ID, "", g.Version)
		if errcode.Of(err) != errcode.Conflict {
			t.Fatalf("%s: DeleteGroup without moveTo = %v, want conflict", tc.name, err)
		}
		if _, ok := groups(t, db).Get(g.ID); !ok {
			t.Fatalf("%s: group deleted", tc.name)
		}
	}
}

func testDeleteGroupMovesMembers(t *testing.T, db *store.DB) {
	ctx := t.Context()
	old := newGroup(t, db, store.GroupAll, "Old")
	dest := newGroup(t, db, store.GroupAll, "New")
	other := newGroup(t, db, store.GroupAll, "Other")

	tokIn := NewToken(t, db, old.ID, 0)
	c1 := Enroll(t, db, tokIn, T0, store.Computer{})
	c2 := Enroll(t, db, tokIn, T0, store.Computer{})
	gone := Enroll(t, db, tokIn, T0, store.Computer{})
	must(t, db.RevokeComputer(ctx, gone.ID, T0))
	bystander := computerIn(t, db, other.ID)
	tokAccess := &store.EnrollmentToken{ID: "access", SecretHash: randomHex(t, 32), GroupID: other.ID, AccessGroupID: old.ID,
		ExpiresAt: T0.Add(time.Hour), CreatedAt: T0}
	must(t, db.CreateEnrollmentToken(ctx, tokAccess))
	ops := newPermSet(t, db, "ops", old.ID, []string{old.ID, other.ID}, map[string]int{"computers": 3})
	only := newPermSet(t, db, "only-old", store.GroupAll, []string{old.ID}, map[string]int{"computers": 1})
	must(t, db.CreateUser(ctx, &store.User{ID: "u1", Username: "alice", PasswordHash: "h", HomeGroupID: old.ID}))
	must(t, db.CreateUser(ctx, &store.User{ID: "u2", Username: "bob", PasswordHash: "h"}))
	must(t, db.CreatePolicy(ctx, &store.PolicyRow{ID: "p-old", Name: "old policy", Product: "agent", GroupID: old.ID, Settings: "{}"}))
	must(t, db.CreateTask(ctx, &store.TaskRow{ID: "t-old", Name: "old task", Type: "scan", Params: "{}", GroupID: old.ID}))

	// A dynamic group would select other computers elsewhere: it blocks.
	dyn := &store.DynamicGroup{ID: "d-old", Name: "dyn", StaticParentID: old.ID, Template: `{"op":"and","rules":[]}`}
	must(t, db.CreateDynamicGroup(ctx, dyn))
	if err := db.DeleteGroup(ctx, old.ID, dest.ID, old.Version); errcode.Of(err) != errcode.Conflict || !strings.Contains(err.Error(), "dynamic group") {
		t.Fatalf("DeleteGroup holding a dynamic group = %v, want a conflict naming it", err)
	}
	must(t, db.DeleteDynamicGroup(ctx, dyn.ID, 1))

	must(t, db.DeleteGroup(ctx, old.ID, dest.ID, old.Version))

	if _, ok := groups(t, db).Get(old.ID); ok {
		t.Fatal("deleted group still in the tree")
	}
	for _, id := range []string{c1.ID, c2.ID, gone.ID} {
		if c := computer(t, db, id); c.GroupID != dest.ID {
			t.Errorf("computer %s in %s, want %s (revoked ones move too)", id, c.GroupID, dest.ID)
		}
	}
	if c := computer(t, db, bystander.ID); c.GroupID != other.ID {
		t.Errorf("bystander moved to %s", c.GroupID)
	}
	if tok := token(t, db, tokIn.ID); tok.GroupID != dest.ID || tok.AccessGroupID != store.GroupAll {
		t.Errorf("token enrolling into the group = group %s, access %s; want %s, all", tok.GroupID, tok.AccessGroupID, dest.ID)
	}
	if tok := token(t, db, tokAccess.ID); tok.GroupID != other.ID || tok.AccessGroupID != dest.ID {
		t.Errorf("token living in the group = group %s, access %s; want %s, %s", tok.GroupID, tok.AccessGroupID, other.ID, dest.ID)
	}
	// Scopes lose the group; they are never re-scoped to the destination.
	if ps := permSet(t, db, ops.ID); ps.GroupID != dest.ID || !slices.Equal(ps.Groups, []string{other.ID}) {
		t.Errorf("permission set = access %s, scope %q; want access %s, scope [%s]", ps.GroupID, ps.Groups, dest.ID, other.ID)
	}
	if ps := permSet(t, db, only.ID); ps.GroupID != store.GroupAll || len(ps.Groups) != 0 {
		t.Errorf("set scoped to the deleted group only = access %s, scope %q; want all, empty", ps.GroupID, ps.Groups)
	}
	if u := user(t, db, "u1"); u.HomeGroupID != dest.ID {
		t.Errorf("user's home group = %s, want %s", u.HomeGroupID, dest.ID)
	}
	if u := user(t, db, "u2"); u.HomeGroupID != store.GroupAll {
		t.Errorf("bystander user's home group = %s", u.HomeGroupID)
	}
	m, err := db.GroupMembersOf(ctx, dest.ID)
	must(t, err)
	if want := (store.GroupMembers{Computers: 2, EnrollmentTokens: 2, PermissionSets: 1, Users: 1, Policies: 1, Tasks: 1}); m != want {
		t.Errorf("GroupMembersOf(destination) = %+v, want %+v", m, want)
	}
}

func testDeleteGroupWithOnlyRevokedComputers(t *testing.T, db *store.DB) {
	ctx := t.Context()
	g := newGroup(t, db, store.GroupAll, "G")
	other := newGroup(t, db, store.GroupAll, "Other")
	c := computerIn(t, db, g.ID)
	must(t, db.RevokeComputer(ctx, c.ID, T0))
	ps := newPermSet(t, db, "ps", store.GroupAll, []string{g.ID, other.ID}, map[string]int{"computers": 1})

	must(t, db.DeleteGroup(ctx, g.ID, "", g.Version)) // revoked computers and scopes do not make a group busy
	if got := computer(t, db, c.ID); got.GroupID != store.GroupLostFound {
		t.Fatalf("revoked computer in %s, want Lost & Found", got.GroupID)
	}
	if got := permSet(t, db, ps.ID); !slices.Equal(got.Groups, []string{other.ID}) {
		t.Fatalf("scope = %q, want [%s]", got.Groups, other.ID)
	}
}

// ---- computers ---------------------------------------------------------------

func testMoveComputer(t *testing.T, db *store.DB) {
	ctx := t.Context()
	g := newGroup(t, db, store.GroupAll, "G")
	c := Enroll(t, db, NewToken(t, db, store.GroupLostFound, 0), T0, store.Computer{})
	WantCode(t, db.MoveComputer(ctx, c.ID, "nope", c.Version), errcode.NotFound)
	WantCode(t, db.MoveComputer(ctx, "nope", g.ID, 1), errcode.NotFound)
	if got := computer(t, db, c.ID); got.GroupID != store.GroupLostFound || got.Version != c.Version {
		t.Fatalf("refused moves changed the computer: %+v", got)
	}
	must(t, db.MoveComputer(ctx, c.ID, g.ID, c.Version))
	got := computer(t, db, c.ID)
	if got.GroupID != g.ID || got.Version != c.Version+1 {
		t.Fatalf("moved computer: group %s version %d, want %s %d", got.GroupID, got.Version, g.ID, c.Version+1)
	}
	WantCode(t, db.MoveComputer(ctx, c.ID, store.GroupLostFound, c.Version), errcode.Conflict)
	if got := computer(t, db, c.ID); got.GroupID != g.ID {
		t.Fatalf("stale move applied: %+v", got)
	}
}

func testComputerIDs(t *testing.T, db *store.DB) {
	ctx := t.Context()
	g1 := newGroup(t, db, store.GroupAll, "G1")
	g2 := newGroup(t, db, store.GroupAll, "G2")
	a, b := computerIn(t, db, g1.ID), computerIn(t, db, g1.ID)
	c := computerIn(t, db, g2.ID)
	r := computerIn(t, db, g1.ID)
	must(t, db.RevokeComputer(ctx, r.ID, T0))
	sorted := func(ids ...string) []string { slices.Sort(ids); return ids }
	for _, tc := range []struct {
		groups []string
		want   []string
	}{
		{nil, sorted(a.ID, b.ID, c.ID)},
		{[]string{g1.ID}, sorted(a.ID, b.ID)},
		{[]string{g1.ID, g2.ID}, sorted(a.ID, b.ID, c.ID)},
		{[]string{store.GroupAll}, nil}, // members only, not subgroups
		{[]string{}, nil},
		{[]string{"nope"}, nil},
	} {
		got, err := db.ComputerIDs(ctx, tc.groups)
		must(t, err)
		if len(got) != len(tc.want) || (len(got) > 0 && !slices.Equal(got, tc.want)) {
			t.Errorf("ComputerIDs(%q) = %q, want %q", tc.groups, got, tc.want)
		}
	}
}

func testListTagFilter(t *testing.T, db *store.DB) {
	ctx := t.Context()
	g := newGroup(t, db, store.GroupAll, "G")
	c1, c2 := computerIn(t, db, g.ID), computerIn(t, db, store.GroupLostFound)
	c3 := computerIn(t, db, g.ID)
	must(t, db.AddTag(ctx, c1.ID, "web"))
	must(t, db.AddTag(ctx, c2.ID, "web"))
	must(t, db.AddTag(ctx, c2.ID, "db"))
	must(t, db.AddTag(ctx, c3.ID, "webserver")) // exact tags, not substrings
	for _, tc := range []struct {
		f    store.ComputerFilter
		want []string
	}{
		{store.ComputerFilter{Tag: "web"}, []string{c1.ID, c2.ID}},
		{store.ComputerFilter{Tag: "db"}, []string{c2.ID}},
		{store.ComputerFilter{Tag: "we"}, nil},
		{store.ComputerFilter{Tag: "web", GroupIDs: []string{g.ID}}, []string{c1.ID}},
	} {
		cs, total := list(t, db, tc.f)
		if got, want := sortedIDs(cs), slices.Sorted(slices.Values(tc.want)); total != len(tc.want) || len(got) != len(want) ||
			(len(got) > 0 && !slices.Equal(got, want)) {
			t.Errorf("ListComputers(%+v) = %q (total %d), want %q", tc.f, got, total, want)
		}
	}
}

func testTokenAccessGroup(t *testing.T, db *store.DB) {
	ctx := t.Context()
	g := newGroup(t, db, store.GroupAll, "G")
	def := NewToken(t, db, store.GroupLostFound, 0)
	if def.AccessGroupID != store.GroupAll {
		t.Fatalf("CreateEnrollmentToken left AccessGroupID %q, want all", def.AccessGroupID)
	}
	if got := token(t, db, def.ID); got.AccessGroupID != store.GroupAll {
		t.Fatalf("stored default access group %q, want all", got.AccessGroupID)
	}
	tok := &store.EnrollmentToken{ID: "in-g", SecretHash: randomHex(t, 32), GroupID: store.GroupLostFound, AccessGroupID: g.ID,
		ExpiresAt: T0.Add(time.Hour), CreatedAt: T0.Add(time.Minute)}
	must(t, db.CreateEnrollmentToken(ctx, tok))
	if got := token(t, db, tok.ID); got.AccessGroupID != g.ID || got.GroupID != store.GroupLostFound {
		t.Fatalf("EnrollmentTokenByID: group %s, access %s", got.GroupID, got.AccessGroupID)
	}
	all, err := db.ListEnrollmentTokens(ctx)
	must(t, err)
	if len(all) != 2 || all[0].ID != tok.ID || all[0].AccessGroupID != g.ID || all[1].AccessGroupID != store.GroupAll {
		t.Fatalf("ListEnrollmentTokens = %+v, %+v", all[0], all[len(all)-1])
	}
	checked, err := db.CheckEnrollmentToken(ctx, tok.SecretHash, T0)
	must(t, err)
	if checked.AccessGroupID != g.ID {
		t.Fatalf("CheckEnrollmentToken access group %q, want %q", checked.AccessGroupID, g.ID)
	}
}

// ---- permission sets ---------------------------------------------------------

func testBuiltinPermissionSets(t *testing.T, db *store.DB) {
	sets, err := db.PermissionSets(t.Context())
	must(t, err)
	var names []string
	for _, s := range sets {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"Administrator", "Reviewer"}) {
		t.Fatalf("permission sets on a new store = %q, want Administrator and Reviewer", names)
	}
	if len(authz.All) != 14 {
		t.Fatalf("authz knows %d functionalities; this test expects the 14 the built-ins were written for", len(authz.All))
	}
	for id, level := range map[string]int{store.PermSetAdministrator: 3, store.PermSetReviewer: 1} {
		ps := permSet(t, db, id)
		if !ps.Builtin || ps.GroupID != store.GroupAll || !slices.Equal(ps.Groups, []string{store.GroupAll}) || ps.Version != 1 {
			t.Errorf("%s = builtin %v, access %s, scope %q, version %d", id, ps.Builtin, ps.GroupID, ps.Groups, ps.Version)
		}
		want := map[string]int{}
		for _, f := range authz.All {
			want[string(f)] = level
		}
		if !maps.Equal(ps.Grants, want) {
			t.Errorf("%s grants = %v, want every functionality at %d", id, ps.Grants, level)
		}
	}
}

func testPermSetCRUD(t *testing.T, db *store.DB) {
	ctx := t.Context()
	g1 := newGroup(t, db, store.GroupAll, "G1")
	g2 := newGroup(t, db, store.GroupAll, "G2")
	ps := &store.PermissionSet{ID: "ops", Name: "Operators", Description: "day to day", GroupID: g1.ID,
		Groups: []string{g2.ID, g1.ID, g2.ID}, Grants: map[string]int{"computers": 3, "detections": 1}}
	must(t, db.CreatePermissionSet(ctx, ps))
	if ps.Version != 1 || ps.CreatedAt.IsZero() {
		t.Fatalf("created set: version %d, created %v", ps.Version, ps.CreatedAt)
	}
	got := permSet(t, db, "ops")
	wantScope := slices.Sorted(slices.Values([]string{g1.ID, g2.ID}))
	if got.Name != "Operators" || got.Description != "day to day" || got.GroupID != g1.ID || got.Builtin || got.Version != 1 ||
		!slices.Equal(got.Groups, wantScope) || !maps.Equal(got.Grants, ps.Grants) || !got.CreatedAt.Equal(ps.CreatedAt) {
		t.Fatalf("stored set = %+v", got)
	}
	sets, err := db.PermissionSets(ctx)
	must(t, err)
	if ids := setIDs(sets); !slices.Equal(ids, []string{store.PermSetAdministrator, "ops", store.PermSetReviewer}) {
		t.Fatalf("PermissionSets (by name) = %q", ids)
	}
	if !maps.Equal(sets[1].Grants, ps.Grants) || !slices.Equal(sets[1].Groups, wantScope) {
		t.Fatalf("PermissionSets did not load details: %+v", sets[1])
	}

	got.Name, got.Description, got.GroupID = "Ops", "", store.GroupAll
	got.Groups, got.Grants = []string{g1.ID}, map[string]int{"tasks": 2}
	must(t, db.UpdatePermissionSet(ctx, got))
	if got.Version != 2 {
		t.Fatalf("version after update = %d, want 2", got.Version)
	}
	upd := permSet(t, db, "ops")
	if upd.Name != "Ops" || upd.Description != "" || upd.GroupID != store.GroupAll || upd.Version != 2 ||
		!slices.Equal(upd.Groups, []string{g1.ID}) || !maps.Equal(upd.Grants, map[string]int{"tasks": 2}) {
		t.Fatalf("updated set = %+v (old grants and groups must be replaced)", upd)
	}

	stale := *upd
	stale.Version, stale.Name = 1, "Stale"
	WantCode(t, db.UpdatePermissionSet(ctx, &stale), errcode.Conflict)
	if s := permSet(t, db, "ops"); s.Name != "Ops" || s.Version != 2 {
		t.Fatalf("stale update applied: %+v", s)
	}

	must(t, db.DeletePermissionSet(ctx, "ops"))
	_, err = db.PermissionSetByID(ctx, "ops")
	WantCode(t, err, errcode.NotFound)
	WantCode(t, db.DeletePermissionSet(ctx, "ops"), errcode.NotFound)
	WantCode(t, db.UpdatePermissionSet(ctx, upd), errcode.NotFound)
}

func testPermSetNameConflict(t *testing.T, db *store.DB) {
	ctx := t.Context()
	a := newPermSet(t, db, "a", store.GroupAll, nil, nil)
	b := newPermSet(t, db, "b", store.GroupAll, nil, nil)
	for _, name := range []string{a.Name, "Administrator"} {
		err := db.CreatePermissionSet(ctx, &store.PermissionSet{ID: "c-" + name, Name: name, GroupID: store.GroupAll})
		WantCode(t, err, errcode.Conflict)
	}
	b.Name = a.Name
	WantCode(t, db.UpdatePermissionSet(ctx, b), errcode.Conflict)
	if got := permSet(t, db, "b"); got.Name != "Set b" || got.Version != 1 {
		t.Fatalf("conflicting rename applied: %+v", got)
	}
	sets, err := db.PermissionSets(ctx)
	must(t, err)
	if len(sets) != 4 {
		t.Fatalf("%d sets, want 4", len(sets))
	}
}

func testPermSetUnknownGroups(t *testing.T, db *store.DB) {
	ctx := t.Context()
	WantCode(t, db.CreatePermissionSet(ctx, &store.PermissionSet{ID: "x", Name: "X", GroupID: "nope"}), errcode.NotFound)
	WantCode(t, db.CreatePermissionSet(ctx, &store.PermissionSet{ID: "x", Name: "X", GroupID: store.GroupAll,
		Groups: []string{store.GroupAll, "nope"}, Grants: map[string]int{"computers": 1}}), errcode.NotFound)
	_, err := db.PermissionSetByID(ctx, "x")
	WantCode(t, err, errcode.NotFound) // nothing half-written

	ps := newPermSet(t, db, "ps", store.GroupAll, []string{store.GroupAll}, map[string]int{"computers": 1})
	ps.Groups = []string{"nope"}
	WantCode(t, db.UpdatePermissionSet(ctx, ps), errcode.NotFound)
	if ps.Version != 1 {
		t.Fatalf("a failed update moved the caller's version to %d, want 1", ps.Version)
	}
	if got := permSet(t, db, "ps"); got.Version != 1 || !slices.Equal(got.Groups, []string{store.GroupAll}) {
		t.Fatalf("failed update applied: %+v", got)
	}
	ps.Groups = []string{store.GroupLostFound}
	must(t, db.UpdatePermissionSet(ctx, ps)) // the corrected retry goes through
	if got := permSet(t, db, "ps"); got.Version != 2 || !slices.Equal(got.Groups, []string{store.GroupLostFound}) {
		t.Fatalf("retried update = %+v", got)
	}
}

func testPermSetBuiltinsImmutable(t *testing.T, db *store.DB) {
	ctx := t.Context()
	for _, id := range []string{store.PermSetAdministrator, store.PermSetReviewer} {
		ps := permSet(t, db, id)
		desc := ps.Description
		ps.Description, ps.Grants = "changed", map[string]int{"computers": 3}
		WantCode(t, db.UpdatePermissionSet(ctx, ps), errcode.Conflict)
		WantCode(t, db.DeletePermissionSet(ctx, id), errcode.Conflict)
		got := permSet(t, db, id)
		if got.Description != desc || got.Version != 1 || len(got.Grants) != len(authz.All) {
			t.Fatalf("built-in %s changed: %+v", id, got)
		}
	}
}

func testUserPermissionSets(t *testing.T, db *store.DB) {
	ctx := t.Context()
	g := newGroup(t, db, store.GroupAll, "G")
	ops := newPermSet(t, db, "ops", store.GroupAll, []string{g.ID}, map[string]int{"computers": 3})
	newUser(t, db, "u1", "alice", store.PermSetReviewer, ops.ID)
	newUser(t, db, "u2", "bob")
	sets, err := db.UserPermissionSets(ctx, "u1")
	must(t, err)
	if ids := setIDs(sets); !slices.Equal(ids, []string{store.PermSetReviewer, ops.ID}) { // by name: Reviewer, Set ops
		t.Fatalf("UserPermissionSets(alice) = %q", ids)
	}
	if !maps.Equal(sets[1].Grants, ops.Grants) || !slices.Equal(sets[1].Groups, []string{g.ID}) || len(sets[0].Grants) != len(authz.All) {
		t.Fatalf("UserPermissionSets did not load details: %+v %+v", sets[0], sets[1])
	}
	for _, id := range []string{"u2", "nobody"} {
		sets, err := db.UserPermissionSets(ctx, id)
		must(t, err)
		if len(sets) != 0 {
			t.Fatalf("UserPermissionSets(%s) = %q, want none", id, setIDs(sets))
		}
	}
	must(t, db.DeletePermissionSet(ctx, ops.ID)) // removes the assignment
	if u := user(t, db, "u1"); !slices.Equal(u.PermissionSetIDs, []string{store.PermSetReviewer}) {
		t.Fatalf("alice's sets after deleting ops = %q", u.PermissionSetIDs)
	}
}

// ---- users -------------------------------------------------------------------

func testCreateUserWithSets(t *testing.T, db *store.DB) {
	ctx := t.Context()
	g := newGroup(t, db, store.GroupAll, "G")
	u := &store.User{ID: "u1", Username: "alice", PasswordHash: "h",
		PermissionSetIDs: []string{store.PermSetReviewer, store.PermSetAdministrator, store.PermSetReviewer}}
	must(t, db.CreateUser(ctx, u))
	got := user(t, db, "u1")
	if !slices.Equal(got.PermissionSetIDs, []string{store.PermSetAdministrator, store.PermSetReviewer}) ||
		got.HomeGroupID != store.GroupAll || got.Version != 1 || u.Version != 1 {
		t.Fatalf("created user = sets %q, home %s, version %d", got.PermissionSetIDs, got.HomeGroupID, got.Version)
	}
	must(t, db.CreateUser(ctx, &store.User{ID: "u2", Username: "bob", PasswordHash: "h", HomeGroupID: g.ID}))
	if got := user(t, db, "u2"); got.HomeGroupID != g.ID || len(got.PermissionSetIDs) != 0 {
		t.Fatalf("bob = home %s, sets %q", got.HomeGroupID, got.PermissionSetIDs)
	}

	WantCode(t, db.CreateUser(ctx, &store.User{ID: "u3", Username: "carol", PasswordHash: "h", HomeGroupID: "nope"}), errcode.NotFound)
	WantCode(t, db.CreateUser(ctx, &store.User{ID: "u3", Username: "carol", PasswordHash: "h", PermissionSetIDs: []string{"nope"}}), errcode.NotFound)
	_, err := db.UserByName(ctx, "carol")
	WantCode(t, err, errcode.NotFound) // nothing half-written
	if n, err := db.CountUsers(ctx); err != nil || n != 2 {
		t.Fatalf("CountUsers = %d, %v; want 2", n, err)
	}
}

func testUpdateUser(t *testing.T, db *store.DB) {
	ctx := t.Context()
	g := newGroup(t, db, store.GroupAll, "G")
	newUser(t, db, "u1", "alice", store.PermSetAdministrator)
	u := user(t, db, "u1")
	u.PasswordHash, u.Disabled, u.HomeGroupID, u.Description = "h2", true, g.ID, "ops lead"
	u.MustChangePassword, u.PasswordChangedAt = true, T0
	u.TOTPSecret, u.TOTPPending, u.TOTPEnabled, u.TOTPRequired, u.TOTPLastStep = "sealed", "pending", true, true, 42
	u.PermissionSetIDs = []string{store.PermSetReviewer}
	must(t, db.UpdateUser(ctx, u))
	if u.Version != 2 {
		t.Fatalf("version after update = %d, want 2", u.Version)
	}
	got := user(t, db, "u1")
	if got.PasswordHash != "h2" || !got.Disabled || got.HomeGroupID != g.ID || got.Description != "ops lead" || !got.MustChangePassword ||
		!got.PasswordChangedAt.Equal(T0) || got.TOTPSecret != "sealed" || got.TOTPPending != "pending" || !got.TOTPEnabled ||
		!got.TOTPRequired || got.TOTPLastStep != 42 || got.Version != 2 || !slices.Equal(got.PermissionSetIDs, []string{store.PermSetReviewer}) {
		t.Fatalf("updated user = %+v", got)
	}

	stale := *got
	stale.Version, stale.Description = 1, "stale"
	WantCode(t, db.UpdateUser(ctx, &stale), errcode.Conflict)
	bad := *got
	bad.HomeGroupID = "nope"
	WantCode(t, db.UpdateUser(ctx, &bad), errcode.NotFound)
	bad = *got
	bad.PermissionSetIDs, bad.Description = []string{"nope"}, "bad set"
	WantCode(t, db.UpdateUser(ctx, &bad), errcode.NotFound)
	if again := user(t, db, "u1"); again.Description != "ops lead" || again.HomeGroupID != g.ID || again.Version != 2 ||
		!slices.Equal(again.PermissionSetIDs, []string{store.PermSetReviewer}) {
		t.Fatalf("refused updates applied: %+v", again)
	}

	must(t, db.DeleteUser(ctx, "u1"))
	WantCode(t, db.UpdateUser(ctx, got), errcode.NotFound)
}

func testListUsers(t *testing.T, db *store.DB) {
	ctx := t.Context()
	g := newGroup(t, db, store.GroupAll, "G")
	newUser(t, db, "u1", "alice", store.PermSetReviewer)
	must(t, db.CreateUser(ctx, &store.User{ID: "u2", Username: "bob", PasswordHash: "h", HomeGroupID: g.ID}))
	must(t, db.CreateUser(ctx, &store.User{ID: "u3", Username: "carol", PasswordHash: "h", HomeGroupID: g.ID}))
	newUser(t, db, "u4", "dave_x")
	must(t, db.RecordLoginSuccess(ctx, "u1", T0.Add(3*time.Hour), "192.0.2.1"))
	must(t, db.RecordLoginSuccess(ctx, "u2", T0.Add(1*time.Hour), "192.0.2.2"))
	must(t, db.RecordLoginSuccess(ctx, "u3", T0.Add(2*time.Hour), "192.0.2.3"))

	for _, tc := range []struct {
		f     store.UserFilter
		want  []string
		total int
	}{
		{store.UserFilter{}, []string{"alice", "bob", "carol", "dave_x"}, 4},
		{store.UserFilter{Name: "a"}, []string{"alice", "carol", "dave_x"}, 3},
		{store.UserFilter{Name: "ALI"}, []string{"alice"}, 1},
		{store.UserFilter{Name: "_"}, []string{"dave_x"}, 1}, // LIKE metacharacters are literal
		{store.UserFilter{Name: "%"}, []string{}, 0},
		{store.UserFilter{GroupIDs: []string{g.ID}}, []string{"bob", "carol"}, 2},
		{store.UserFilter{GroupIDs: []string{g.ID, store.GroupAll}}, []string{"alice", "bob", "carol", "dave_x"}, 4},
		{store.UserFilter{GroupIDs: []string{}}, []string{}, 0},
		{store.UserFilter{GroupIDs: []string{g.ID}, Name: "c"}, []string{"carol"}, 1},
		{store.UserFilter{Sort: "-username"}, []string{"dave_x", "carol", "bob", "alice"}, 4},
		{store.UserFilter{Sort: "last_login_at"}, []string{"dave_x", "bob", "carol", "alice"}, 4},
		{store.UserFilter{Sort: "-last_login_at"}, []string{"alice", "carol", "bob", "dave_x"}, 4},
		{store.UserFilter{Limit: 2, Offset: 1}, []string{"bob", "carol"}, 4},
		{store.UserFilter{Limit: 2, Offset: 3}, []string{"dave_x"}, 4},
		{store.UserFilter{Offset: 4}, []string{}, 4},
	} {
		us, total, err := db.ListUsers(ctx, tc.f)
		if err != nil {
			t.Errorf("ListUsers(%+v): %v", tc.f, err)
			continue
		}
		if got := userNames(us); !slices.Equal(got, tc.want) || total != tc.total {
			t.Errorf("ListUsers(%+v) = %q (total %d), want %q (total %d)", tc.f, got, total, tc.want, tc.total)
		}
	}
	for _, sort := range []string{"password_hash", "-nope"} {
		_, _, err := db.ListUsers(ctx, store.UserFilter{Sort: sort})
		WantCode(t, err, errcode.Invalid)
	}
	us, _, err := db.ListUsers(ctx, store.UserFilter{Name: "alice"})
	must(t, err)
	if len(us) != 1 || !slices.Equal(us[0].PermissionSetIDs, []string{store.PermSetReviewer}) || !us[0].LastLoginAt.Equal(T0.Add(3*time.Hour)) {
		t.Fatalf("listed alice = %+v", us)
	}
}

func testDeleteUserCascades(t *testing.T, db *store.DB) {
	ctx := t.Context()
	newUser(t, db, "u1", "alice", store.PermSetReviewer)
	newUser(t, db, "u2", "bob", store.PermSetReviewer)
	for i, uid := range []string{"u1", "u2"} {
		must(t, db.CreateSession(ctx, &store.Session{TokenHash: "s-" + uid, UserID: uid, CreatedAt: T0, ExpiresAt: T0.Add(time.Hour), LastUsedAt: T0, SecondFactor: true}))
		must(t, db.CreateAPIToken(ctx, &store.APIToken{ID: "t-" + uid, UserID: uid, Name: "ci", TokenHash: "th-" + uid,
			CreatedAt: T0.Add(time.Duration(i) * time.Second), ExpiresAt: T0.Add(time.Hour)}))
		must(t, db.SetRecoveryCodes(ctx, uid, []string{"r1-" + uid, "r2-" + uid}))
	}
	must(t, db.AppendAudit(ctx, &store.AuditEntry{At: T0, UserID: "u1", Username: "alice", Domain: "users", Action: "login", Result: store.AuditSuccess}))

	must(t, db.DeleteUser(ctx, "u1"))
	_, err := db.UserByID(ctx, "u1")
	WantCode(t, err, errcode.NotFound)
	_, _, err = db.SessionByTokenHash(ctx, "s-u1", T0)
	WantCode(t, err, errcode.NotFound)
	_, err = db.APITokenByHash(ctx, "th-u1")
	WantCode(t, err, errcode.NotFound)
	if n, err := db.RecoveryCodesLeft(ctx, "u1"); err != nil || n != 0 {
		t.Fatalf("recovery codes left for a deleted user = %d, %v", n, err)
	}
	if sets, err := db.UserPermissionSets(ctx, "u1"); err != nil || len(sets) != 0 {
		t.Fatalf("deleted user's sets = %d, %v", len(sets), err)
	}
	// bob keeps everything.
	if _, _, err := db.SessionByTokenHash(ctx, "s-u2", T0); err != nil {
		t.Fatalf("bob's session: %v", err)
	}
	if _, err := db.APITokenByHash(ctx, "th-u2"); err != nil {
		t.Fatalf("bob's token: %v", err)
	}
	if n, _ := db.RecoveryCodesLeft(ctx, "u2"); n != 2 {
		t.Fatalf("bob's recovery codes = %d, want 2", n)
	}
	// The audit log outlives the user.
	if es, total, err := db.ListAudit(ctx, store.AuditFilter{}); err != nil || total != 1 || es[0].UserID != "u1" {
		t.Fatalf("audit after deleting the user: %d entries, %v", total, err)
	}
	WantCode(t, db.DeleteUser(ctx, "u1"), errcode.NotFound)

	// A new user with the same id inherits nothing.
	newUser(t, db, "u1", "alice2")
	if ok, err := db.UseRecoveryCode(ctx, "u1", "r1-u1", T0); err != nil || ok {
		t.Fatalf("old recovery code usable by the new user: %v, %v", ok, err)
	}
	if ts, err := db.APITokens(ctx, "u1"); err != nil || len(ts) != 0 {
		t.Fatalf("new user has %d tokens, %v", len(ts), err)
	}
	if u := user(t, db, "u1"); len(u.PermissionSetIDs) != 0 {
		t.Fatalf("new user has sets %q", u.PermissionSetIDs)
	}
}

func testLoginFailureLocking(t *testing.T, db *store.DB) {
	ctx := t.Context()
	newUser(t, db, "u1", "alice")
	lock := T0.Add(15 * time.Minute)
	for i := 1; i < 3; i++ {
		locked, err := db.RecordLoginFailure(ctx, "u1", false, 3, lock)
		must(t, err)
		if u := user(t, db, "u1"); !locked.IsZero() || u.FailedLogins != i || !u.LockedUntil.IsZero() {
			t.Fatalf("failure %d: locked %v, user failures %d, locked until %v", i, locked, u.FailedLogins, u.LockedUntil)
		}
	}
	locked, err := db.RecordLoginFailure(ctx, "u1", false, 3, lock)
	must(t, err)
	if u := user(t, db, "u1"); !locked.Equal(lock) || !u.LockedUntil.Equal(lock) || u.FailedLogins != 0 {
		t.Fatalf("failure 3 of 3: locked %v, user locked until %v, failures %d; want %v and a restarted count", locked, u.LockedUntil, u.FailedLogins, lock)
	}
	// The count restarts: the next lock takes maxFailures more.
	lock2 := T0.Add(time.Hour)
	for i := 1; i < 3; i++ {
		locked, err := db.RecordLoginFailure(ctx, "u1", false, 3, lock2)
		must(t, err)
		if !locked.IsZero() {
			t.Fatalf("failure %d after the lock locked again", i)
		}
	}
	if locked, _ := db.RecordLoginFailure(ctx, "u1", false, 3, lock2); !locked.Equal(lock2) {
		t.Fatalf("third failure after the lock = %v, want %v", locked, lock2)
	}

	_, err = db.RecordLoginFailure(ctx, "u1", false, 3, lock2)
	must(t, err)
	if u := user(t, db, "u1"); u.FailedLogins != 1 || !u.LockedUntil.Equal(lock2) {
		t.Fatalf("before success: failures %d, locked until %v", u.FailedLogins, u.LockedUntil)
	}
	at := T0.Add(2 * time.Hour)
	if u := user(t, db, "u1"); u.LastLoginAddr != "" {
		t.Fatalf("never logged in, last login address %q", u.LastLoginAddr)
	}
	must(t, db.RecordLoginSuccess(ctx, "u1", at, "2001:db8::7"))
	if u := user(t, db, "u1"); u.FailedLogins != 0 || !u.LockedUntil.IsZero() || !u.LastLoginAt.Equal(at) || u.LastLoginAddr != "2001:db8::7" {
		t.Fatalf("after success: failures %d, locked until %v, last login %v from %q", u.FailedLogins, u.LockedUntil, u.LastLoginAt, u.LastLoginAddr)
	}
	must(t, db.RecordLoginSuccess(ctx, "u1", at.Add(time.Minute), "192.0.2.9"))
	if u, err := db.UserByName(ctx, "alice"); err != nil || u.LastLoginAddr != "192.0.2.9" {
		t.Fatalf("second success: %+v, %v; want the last address 192.0.2.9", u, err)
	}
	// Failures from the last login's address count and lock apart.
	for i := 1; i < 3; i++ {
		if locked, err := db.RecordLoginFailure(ctx, "u1", true, 3, lock); err != nil || !locked.IsZero() {
			t.Fatalf("failure %d from the last address: locked %v, %v", i, locked, err)
		}
	}
	if u := user(t, db, "u1"); u.AddrFailedLogins != 2 || u.FailedLogins != 0 || !u.AddrLockedUntil.IsZero() || !u.LockedUntil.IsZero() {
		t.Fatalf("two failures from the last address: %d and %d failures, locks %v and %v", u.AddrFailedLogins, u.FailedLogins, u.AddrLockedUntil, u.LockedUntil)
	}
	if locked, err := db.RecordLoginFailure(ctx, "u1", true, 3, lock); err != nil || !locked.Equal(lock) {
		t.Fatalf("third failure from the last address: locked %v, %v", locked, err)
	}
	if u := user(t, db, "u1"); !u.AddrLockedUntil.Equal(lock) || !u.LockedUntil.IsZero() || u.AddrFailedLogins != 0 {
		t.Fatalf("after the third: locked %v there, %v elsewhere, %d failures", u.AddrLockedUntil, u.LockedUntil, u.AddrFailedLogins)
	}
	must(t, db.UnlockUser(ctx, "u1"))
	if u := user(t, db, "u1"); !u.AddrLockedUntil.IsZero() || u.AddrFailedLogins != 0 {
		t.Fatalf("unlock left the last address locked until %v (%d failures)", u.AddrLockedUntil, u.AddrFailedLogins)
	}
	_, err = db.RecordLoginFailure(ctx, "u1", true, 3, lock)
	must(t, err)
	must(t, db.RecordLoginSuccess(ctx, "u1", at.Add(2*time.Minute), "192.0.2.9"))
	if u := user(t, db, "u1"); u.AddrFailedLogins != 0 {
		t.Fatalf("a success left %d failures from the last address", u.AddrFailedLogins)
	}
	if locked, err := db.RecordLoginFailure(ctx, "u1", false, 1, lock); err != nil || !locked.Equal(lock) {
		t.Fatalf("maxFailures 1: locked %v, %v; want locked at the first failure", locked, err)
	}
	_, err = db.RecordLoginFailure(ctx, "nobody", false, 3, lock)
	WantCode(t, err, errcode.NotFound)
}

func testUseTOTPStep(t *testing.T, db *store.DB) {
	ctx := t.Context()
	newUser(t, db, "u1", "alice")
	newUser(t, db, "u2", "bob")
	for _, tc := range []struct {
		user string
		step int64
		want bool
	}{
		{"u1", 100, true},
		{"u1", 100, false}, // the same step again
		{"u1", 99, false},  // an older step
		{"u1", 101, true},
		{"u2", 100, true}, // steps are per user
		{"nobody", 100, false},
	} {
		ok, err := db.UseTOTPStep(ctx, tc.user, tc.step)
		if err != nil || ok != tc.want {
			t.Fatalf("UseTOTPStep(%s, %d) = %v, %v; want %v", tc.user, tc.step, ok, err, tc.want)
		}
	}
	if u := user(t, db, "u1"); u.TOTPLastStep != 101 {
		t.Fatalf("TOTPLastStep = %d, want 101", u.TOTPLastStep)
	}
}

func testRecoveryCodes(t *testing.T, db *store.DB) {
	ctx := t.Context()
	newUser(t, db, "u1", "alice")
	newUser(t, db, "u2", "bob")
	left := func(uid string, want int) {
		t.Helper()
		if n, err := db.RecoveryCodesLeft(ctx, uid); err != nil || n != want {
			t.Fatalf("RecoveryCodesLeft(%s) = %d, %v; want %d", uid, n, err, want)
		}
	}
	use := func(uid, code string, want bool) {
		t.Helper()
		if ok, err := db.UseRecoveryCode(ctx, uid, code, T0); err != nil || ok != want {
			t.Fatalf("UseRecoveryCode(%s, %s) = %v, %v; want %v", uid, code, ok, err, want)
		}
	}
	left("u1", 0)
	must(t, db.SetRecoveryCodes(ctx, "u1", []string{"a", "b", "c"}))
	must(t, db.SetRecoveryCodes(ctx, "u2", []string{"x"}))
	left("u1", 3)
	use("u1", "a", true)
	left("u1", 2)
	use("u1", "a", false) // single use
	use("u2", "b", false) // another user's code
	use("u1", "x", false)
	use("u1", "nope", false)
	left("u2", 1)

	must(t, db.SetRecoveryCodes(ctx, "u1", []string{"d", "e"}))
	left("u1", 2)
	use("u1", "b", false) // replaced
	use("u1", "d", true)
	must(t, db.SetRecoveryCodes(ctx, "u1", nil))
	left("u1", 0)
	use("u1", "e", false)
	left("u2", 1)
}

func testSessionSecondFactor(t *testing.T, db *store.DB) {
	ctx := t.Context()
	withUser(t, db)
	for _, h := range []string{"s1", "s2"} {
		must(t, db.CreateSession(ctx, &store.Session{TokenHash: h, UserID: "u1", CreatedAt: T0, ExpiresAt: T0.Add(time.Hour), LastUsedAt: T0}))
	}
	must(t, db.CreateSession(ctx, &store.Session{TokenHash: "full", UserID: "u1", CreatedAt: T0, ExpiresAt: T0.Add(time.Hour), LastUsedAt: T0, SecondFactor: true}))
	second := func(h string) bool {
		t.Helper()
		s, _, err := db.SessionByTokenHash(ctx, h, T0)
		must(t, err)
		return s.SecondFactor
	}
	if second("s1") || second("s2") || !second("full") {
		t.Fatalf("SecondFactor flags = %v %v %v, want false false true", second("s1"), second("s2"), second("full"))
	}
	must(t, db.CompleteSecondFactor(ctx, "s1"))
	if !second("s1") || second("s2") {
		t.Fatalf("after CompleteSecondFactor(s1): s1 %v, s2 %v; want true, false", second("s1"), second("s2"))
	}
}

func testDeleteUserSessions(t *testing.T, db *store.DB) {
	ctx := t.Context()
	newUser(t, db, "u1", "alice")
	newUser(t, db, "u2", "bob")
	for _, s := range []struct{ hash, user string }{{"a1", "u1"}, {"a2", "u1"}, {"b1", "u2"}} {
		must(t, db.CreateSession(ctx, &store.Session{TokenHash: s.hash, UserID: s.user, CreatedAt: T0, ExpiresAt: T0.Add(time.Hour), LastUsedAt: T0}))
	}
	must(t, db.DeleteUserSessions(ctx, "u1"))
	for _, h := range []string{"a1", "a2"} {
		_, _, err := db.SessionByTokenHash(ctx, h, T0)
		WantCode(t, err, errcode.NotFound)
	}
	if _, _, err := db.SessionByTokenHash(ctx, "b1", T0); err != nil {
		t.Fatalf("another user's session ended: %v", err)
	}
	user(t, db, "u1") // the user stays
	must(t, db.DeleteUserSessions(ctx, "u1"))
}

// ---- API tokens --------------------------------------------------------------

func testAPITokens(t *testing.T, db *store.DB) {
	ctx := t.Context()
	newUser(t, db, "u1", "alice")
	newUser(t, db, "u2", "bob")
	mk := func(id, uid string, created time.Time) *store.APIToken {
		tok := &store.APIToken{ID: id, UserID: uid, Name: "name-" + id, TokenHash: "hash-" + id, CreatedAt: created, ExpiresAt: created.Add(90 * 24 * time.Hour)}
		must(t, db.CreateAPIToken(ctx, tok))
		return tok
	}
	t1 := mk("t1", "u1", T0)
	mk("t2", "u1", T0.Add(time.Hour))
	mk("t3", "u2", T0.Add(2*time.Hour))
	tokenIDs := func(uid string) []string {
		t.Helper()
		ts, err := db.APITokens(ctx, uid)
		must(t, err)
		out := []string{}
		for _, tok := range ts {
			out = append(out, tok.ID)
		}
		return out
	}
	byHash := func(id string) *store.APIToken {
		t.Helper()
		tok, err := db.APITokenByHash(ctx, "hash-"+id)
		must(t, err)
		return tok
	}

	got := byHash("t1")
	if got.ID != "t1" || got.UserID != "u1" || got.Name != t1.Name || got.TokenHash != t1.TokenHash || !got.CreatedAt.Equal(T0) ||
		!got.ExpiresAt.Equal(t1.ExpiresAt) || !got.LastUsedAt.IsZero() || !got.RevokedAt.IsZero() {
		t.Fatalf("APITokenByHash = %+v", got)
	}
	_, err := db.APITokenByHash(ctx, "nope")
	WantCode(t, err, errcode.NotFound)
	if ids := tokenIDs("u1"); !slices.Equal(ids, []string{"t2", "t1"}) {
		t.Fatalf("APITokens(alice) = %q, want newest first", ids)
	}
	if ids := tokenIDs("u2"); !slices.Equal(ids, []string{"t3"}) {
		t.Fatalf("APITokens(bob) = %q", ids)
	}
	if ids := tokenIDs("nobody"); len(ids) != 0 {
		t.Fatalf("APITokens(nobody) = %q", ids)
	}

	WantCode(t, db.RevokeAPIToken(ctx, "u2", "t1", T0.Add(3*time.Hour)), errcode.NotFound) // not bob's
	WantCode(t, db.RevokeAPIToken(ctx, "u1", "nope", T0.Add(3*time.Hour)), errcode.NotFound)
	if tok := byHash("t1"); !tok.RevokedAt.IsZero() {
		t.Fatal("another user revoked alice's token")
	}
	must(t, db.RevokeAPIToken(ctx, "u1", "t1", T0.Add(3*time.Hour)))
	must(t, db.RevokeAPIToken(ctx, "u1", "t1", T0.Add(4*time.Hour))) // again: keeps the first time
	if tok := byHash("t1"); !tok.RevokedAt.Equal(T0.Add(3 * time.Hour)) {
		t.Fatalf("RevokedAt = %v, want %v", tok.RevokedAt, T0.Add(3*time.Hour))
	}
	if ids := tokenIDs("u1"); !slices.Equal(ids, []string{"t2", "t1"}) {
		t.Fatalf("revoked tokens are still listed: %q", ids)
	}

	must(t, db.TouchAPIToken(ctx, "t2", T0.Add(5*time.Hour)))
	if tok := byHash("t2"); !tok.LastUsedAt.Equal(T0.Add(5 * time.Hour)) {
		t.Fatalf("LastUsedAt = %v", tok.LastUsedAt)
	}

	must(t, db.RevokeUserAPITokens(ctx, "u1", T0.Add(6*time.Hour)))
	if tok := byHash("t1"); !tok.RevokedAt.Equal(T0.Add(3 * time.Hour)) {
		t.Fatalf("RevokeUserAPITokens moved an earlier revocation to %v", tok.RevokedAt)
	}
	if tok := byHash("t2"); !tok.RevokedAt.Equal(T0.Add(6 * time.Hour)) {
		t.Fatalf("t2 RevokedAt = %v, want %v", tok.RevokedAt, T0.Add(6*time.Hour))
	}
	if tok := byHash("t3"); !tok.RevokedAt.IsZero() {
		t.Fatal("RevokeUserAPITokens revoked another user's token")
	}
}

// ---- audit log ---------------------------------------------------------------

func appendAudit(t *testing.T, db *store.DB) []*store.AuditEntry {
	t.Helper()
	es := []*store.AuditEntry{
		{At: T0, UserID: "u1", Username: "alice", Via: "session", RemoteAddr: "192.0.2.1", Domain: "users", Action: "create",
			ObjectID: "e1", ObjectName: "bob", Diff: `{"name":[null,"bob"]}`, Result: store.AuditSuccess, Detail: "first"},
		{At: T0.Add(1 * time.Minute), Username: "bob", Domain: "computers", Action: "move", ObjectID: "e2", Result: store.AuditFailure},
		{At: T0.Add(2 * time.Minute), Username: "alice", Domain: "computers", Action: "move", ObjectID: "e3", Result: store.AuditSuccess},
		{At: T0.Add(3 * time.Minute), Username: "alice", Domain: "settings", Action: "update", ObjectID: "e4", Result: store.AuditSuccess},
		{At: T0.Add(4 * time.Minute), Via: "system", Domain: "computers", Action: "revoke", ObjectID: "e5", Result: store.AuditSuccess},
	}
	for _, e := range es {
		must(t, db.AppendAudit(t.Context(), e))
	}
	return es
}

func testAuditFilters(t *testing.T, db *store.DB) {
	ctx := t.Context()
	in := appendAudit(t, db)
	all, total, err := db.ListAudit(ctx, store.AuditFilter{})
	must(t, err)
	if ids := auditIDs(all); total != 5 || !slices.Equal(ids, []string{"e5", "e4", "e3", "e2", "e1"}) {
		t.Fatalf("ListAudit = %q (total %d), want newest first", ids, total)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq >= all[i-1].Seq {
			t.Fatalf("seq not strictly decreasing: %d then %d", all[i-1].Seq, all[i].Seq)
		}
	}
	e1 := all[4]
	want := *in[0]
	want.Seq, want.At = e1.Seq, e1.At
	if !e1.At.Equal(in[0].At) || *e1 != want {
		t.Fatalf("stored entry = %+v\nwant %+v", *e1, want)
	}

	for _, tc := range []struct {
		f     store.AuditFilter
		want  []string
		total int // every match, not only the page
	}{
		{store.AuditFilter{Username: "alice"}, []string{"e4", "e3", "e1"}, 3},
		{store.AuditFilter{Domain: "computers"}, []string{"e5", "e3", "e2"}, 3},
		{store.AuditFilter{Action: "move"}, []string{"e3", "e2"}, 2},
		{store.AuditFilter{Result: store.AuditFailure}, []string{"e2"}, 1},
		{store.AuditFilter{Result: store.AuditSuccess}, []string{"e5", "e4", "e3", "e1"}, 4},
		{store.AuditFilter{Domain: "computers", Result: store.AuditSuccess}, []string{"e5", "e3"}, 2},
		{store.AuditFilter{Since: T0.Add(time.Minute)}, []string{"e5", "e4", "e3", "e2"}, 4}, // inclusive
		{store.AuditFilter{Until: T0.Add(3 * time.Minute)}, []string{"e3", "e2", "e1"}, 3},   // exclusive
		{store.AuditFilter{Since: T0.Add(time.Minute), Until: T0.Add(3 * time.Minute)}, []string{"e3", "e2"}, 2},
		{store.AuditFilter{Username: "nobody"}, []string{}, 0},
		{store.AuditFilter{Limit: 2}, []string{"e5", "e4"}, 5},
		{store.AuditFilter{Limit: 2, Offset: 2}, []string{"e3", "e2"}, 5},
		{store.AuditFilter{Limit: 2, Offset: 4}, []string{"e1"}, 5},
		{store.AuditFilter{Username: "alice", Limit: 1, Offset: 1}, []string{"e3"}, 3},
	} {
		es, total, err := db.ListAudit(ctx, tc.f)
		must(t, err)
		if ids := auditIDs(es); !slices.Equal(ids, tc.want) || total != tc.total {
			t.Errorf("ListAudit(%+v) = %q (total %d), want %q (total %d)", tc.f, ids, total, tc.want, tc.total)
		}
	}
	_, _, err = db.ListAudit(ctx, store.AuditFilter{Result: "maybe"})
	WantCode(t, err, errcode.Invalid)
}

func testEachAudit(t *testing.T, db *store.DB) {
	ctx := t.Context()
	appendAudit(t, db)
	collect := func(f store.AuditFilter) []string {
		t.Helper()
		out := []string{}
		must(t, db.EachAudit(ctx, f, func(e *store.AuditEntry) error { out = append(out, e.ObjectID); return nil }))
		return out
	}
	if ids := collect(store.AuditFilter{}); !slices.Equal(ids, []string{"e5", "e4", "e3", "e2", "e1"}) {
		t.Fatalf("EachAudit = %q, want newest first", ids)
	}
	if ids := collect(store.AuditFilter{Domain: "computers"}); !slices.Equal(ids, []string{"e5", "e3", "e2"}) {
		t.Fatalf("EachAudit(computers) = %q", ids)
	}
	if ids := collect(store.AuditFilter{Limit: 1, Offset: 1}); len(ids) != 5 {
		t.Fatalf("EachAudit with a limit gave %d entries, want all 5 (it ignores paging)", len(ids))
	}
	stop := errors.New("stop")
	calls := 0
	err := db.EachAudit(ctx, store.AuditFilter{}, func(*store.AuditEntry) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("EachAudit with a failing callback = %v after %d calls, want the callback's error after 1", err, calls)
	}
	WantCode(t, db.EachAudit(ctx, store.AuditFilter{Result: "maybe"}, func(*store.AuditEntry) error { return nil }), errcode.Invalid)
}

func testDeleteAuditBefore(t *testing.T, db *store.DB) {
	ctx := t.Context()
	appendAudit(t, db)
	all, _, err := db.ListAudit(ctx, store.AuditFilter{})
	must(t, err)
	maxSeq := all[0].Seq

	n, err := db.DeleteAuditBefore(ctx, T0.Add(2*time.Minute))
	must(t, err)
	if n != 2 {
		t.Fatalf("DeleteAuditBefore removed %d, want 2 (e1, e2)", n)
	}
	es, total, err := db.ListAudit(ctx, store.AuditFilter{})
	must(t, err)
	if ids := auditIDs(es); total != 3 || !slices.Equal(ids, []string{"e5", "e4", "e3"}) {
		t.Fatalf("after retention: %q (total %d)", ids, total)
	}
	if n, err := db.DeleteAuditBefore(ctx, T0.Add(2*time.Minute)); err != nil || n != 0 {
		t.Fatalf("second DeleteAuditBefore = %d, %v", n, err)
	}
	// Even an emptied log never hands out a sequence number again.
	if n, err := db.DeleteAuditBefore(ctx, T0.Add(time.Hour)); err != nil || n != 3 {
		t.Fatalf("DeleteAuditBefore(all) = %d, %v", n, err)
	}
	must(t, db.AppendAudit(ctx, &store.AuditEntry{At: T0, Domain: "users", Action: "create", ObjectID: "e6", Result: store.AuditSuccess}))
	es, _, err = db.ListAudit(ctx, store.AuditFilter{})
	must(t, err)
	if len(es) != 1 || es[0].Seq <= maxSeq {
		t.Fatalf("entry appended after deletion has seq %d, want > %d", es[0].Seq, maxSeq)
	}
}

func testAuditClipsLongFields(t *testing.T, db *store.DB) {
	ctx := t.Context()
	in := store.AuditEntry{
		At:         T0,
		Username:   strings.Repeat("u", 300),
		RemoteAddr: strings.Repeat("1", 100),
		ObjectID:   "a" + strings.Repeat("é", 200), // 401 bytes; byte 256 is inside an é
		ObjectName: strings.Repeat("n", 600),
		Diff:       strings.Repeat("d", 17<<10),
		Detail:     "xy" + strings.Repeat("€", 400), // 1202 bytes; byte 1024 is inside a €
		Domain:     "users", Action: "create", Result: store.AuditSuccess,
	}
	must(t, db.AppendAudit(ctx, &in))
	es, _, err := db.ListAudit(ctx, store.AuditFilter{})
	must(t, err)
	got := es[0]
	for _, f := range []struct {
		name      string
		got, orig string
		wantLen   int
	}{
		{"Username", got.Username, in.Username, 256},
		{"RemoteAddr", got.RemoteAddr, in.RemoteAddr, 64},
		{"ObjectID", got.ObjectID, in.ObjectID, 255},
		{"ObjectName", got.ObjectName, in.ObjectName, 512},
		{"Diff", got.Diff, in.Diff, 16 << 10},
		{"Detail", got.Detail, in.Detail, 1022},
	} {
		if len(f.got) != f.wantLen || !utf8.ValidString(f.got) || !strings.HasPrefix(f.orig, f.got) {
			t.Errorf("%s clipped to %d bytes (valid UTF-8 %v, prefix %v), want the longest valid prefix of %d bytes",
				f.name, len(f.got), utf8.ValidString(f.got), strings.HasPrefix(f.orig, f.got), f.wantLen)
		}
	}
}

// ---- settings ----------------------------------------------------------------

func testSettings(t *testing.T, db *store.DB) {
	ctx := t.Context()
	setting := func(key string) *store.Setting {
		t.Helper()
		s, err := db.SettingByKey(ctx, key)
		must(t, err)
		return s
	}
	if s := setting("k"); s.Key != "k" || s.Value != "" || s.Version != 0 || !s.UpdatedAt.IsZero() {
		t.Fatalf("unset setting = %+v, want version 0", s)
	}
	first := &store.Setting{Key: "k", Value: `{"a":1}`}
	must(t, db.PutSetting(ctx, first))
	if first.Version != 1 {
		t.Fatalf("version after the first put = %d", first.Version)
	}
	if s := setting("k"); s.Value != `{"a":1}` || s.Version != 1 || s.UpdatedAt.IsZero() {
		t.Fatalf("stored setting = %+v", s)
	}
	// Someone else's first put now conflicts.
	WantCode(t, db.PutSetting(ctx, &store.Setting{Key: "k", Value: `{"a":2}`}), errcode.Conflict)
	second := &store.Setting{Key: "k", Value: `{"a":3}`, Version: 1}
	must(t, db.PutSetting(ctx, second))
	if second.Version != 2 {
		t.Fatalf("version after the update = %d", second.Version)
	}
	WantCode(t, db.PutSetting(ctx, &store.Setting{Key: "k", Value: `{"a":4}`, Version: 1}), errcode.Conflict) // stale
	if s := setting("k"); s.Value != `{"a":3}` || s.Version != 2 {
		t.Fatalf("after refused puts = %+v", s)
	}
	WantCode(t, db.PutSetting(ctx, &store.Setting{Key: "other", Value: "1", Version: 3}), errcode.Conflict) // never set
	if s := setting("other"); s.Version != 0 {
		t.Fatalf("refused put created the setting: %+v", s)
	}
}

// ---- tags --------------------------------------------------------------------

func testValidateTag(t *testing.T, db *store.DB) {
	c := computerIn(t, db, store.GroupLostFound)
	for _, tc := range []struct {
		tag   string
		valid bool
	}{
		{"web", true},
		{"a", true},
		{"prod eu-west", true},
		{"Ünïcødé", true},
		{strings.Repeat("t", store.MaxTagLen), true},
		{"", false},
		{" web", false},
		{"web ", false},
		{"a,b", false},
		{"tab\there", false},
		{"line\n", false},
		{"nul\x00", false},
		{"zero\u200bwidth", false},
		{strings.Repeat("t", store.MaxTagLen+1), false},
	} {
		err := store.ValidateTag(tc.tag)
		addErr := db.AddTag(t.Context(), c.ID, tc.tag)
		if tc.valid && (err != nil || addErr != nil) {
			t.Errorf("tag %q refused: %v, %v", tc.tag, err, addErr)
		}
		if !tc.valid && (errcode.Of(err) != errcode.Invalid || errcode.Of(addErr) != errcode.Invalid) {
			t.Errorf("tag %q: ValidateTag %v, AddTag %v; want invalid", tc.tag, err, addErr)
		}
	}
	tags, err := db.ComputerTags(t.Context(), c.ID)
	must(t, err)
	if len(tags) != 5 {
		t.Fatalf("computer has %d tags %q, want the 5 valid ones", len(tags), tags)
	}
}

func testTags(t *testing.T, db *store.DB) {
	ctx := t.Context()
	g1 := newGroup(t, db, store.GroupAll, "G1")
	g2 := newGroup(t, db, store.GroupAll, "G2")
	c1, c2, c3 := computerIn(t, db, g1.ID), computerIn(t, db, g1.ID), computerIn(t, db, g2.ID)
	old := computerIn(t, db, g1.ID)
	tags := func(id string) []string {
		t.Helper()
		ts, err := db.ComputerTags(ctx, id)
		must(t, err)
		return ts
	}
	if ts := tags(c1.ID); len(ts) != 0 {
		t.Fatalf("new computer has tags %q", ts)
	}
	must(t, db.AddTag(ctx, c1.ID, "web"))
	must(t, db.AddTag(ctx, c1.ID, "web")) // idempotent
	must(t, db.AddTag(ctx, c1.ID, "db"))
	if ts := tags(c1.ID); !slices.Equal(ts, []string{"db", "web"}) {
		t.Fatalf("ComputerTags = %q, want sorted [db web]", ts)
	}
	for _, a := range []struct{ c, tag string }{{c2.ID, "web"}, {c3.ID, "web"}, {c3.ID, "linux"}, {old.ID, "web"}, {old.ID, "retired"}} {
		must(t, db.AddTag(ctx, a.c, a.tag))
	}
	must(t, db.RevokeComputer(ctx, old.ID, T0))

	for _, tc := range []struct {
		groups []string
		want   []store.TagCount
	}{
		{nil, []store.TagCount{{Tag: "db", Computers: 1}, {Tag: "linux", Computers: 1}, {Tag: "web", Computers: 3}}}, // the revoked computer does not count
		{[]string{g1.ID}, []store.TagCount{{Tag: "db", Computers: 1}, {Tag: "web", Computers: 2}}},
		{[]string{g2.ID}, []store.TagCount{{Tag: "linux", Computers: 1}, {Tag: "web", Computers: 1}}},
		{[]string{g1.ID, g2.ID}, []store.TagCount{{Tag: "db", Computers: 1}, {Tag: "linux", Computers: 1}, {Tag: "web", Computers: 3}}},
		{[]string{store.GroupAll}, []store.TagCount{}}, // members only, not subgroups
		{[]string{}, []store.TagCount{}},
	} {
		got, err := db.Tags(ctx, tc.groups)
		must(t, err)
		if !slices.Equal(got, tc.want) {
			t.Errorf("Tags(%q) = %v, want %v", tc.groups, got, tc.want)
		}
	}

	must(t, db.RemoveTag(ctx, c1.ID, "web"))
	if ts := tags(c1.ID); !slices.Equal(ts, []string{"db"}) {
		t.Fatalf("after RemoveTag = %q", ts)
	}
	WantCode(t, db.RemoveTag(ctx, c1.ID, "web"), errcode.NotFound)
	WantCode(t, db.RemoveTag(ctx, c1.ID, "never"), errcode.NotFound)
	if ts := tags(c2.ID); !slices.Equal(ts, []string{"web"}) {
		t.Fatalf("removing c1's tag touched c2: %q", ts)
	}
}

func testTagLimit(t *testing.T, db *store.DB) {
	ctx := t.Context()
	c, other := computerIn(t, db, store.GroupLostFound), computerIn(t, db, store.GroupLostFound)
	for i := range store.MaxTagsPerComputer {
		must(t, db.AddTag(ctx, c.ID, fmt.Sprintf("t%02d", i)))
	}
	WantCode(t, db.AddTag(ctx, c.ID, "one-too-many"), errcode.Invalid)
	// Adding a tag the computer has is a no-op, even at the limit.
	if err := db.AddTag(ctx, c.ID, "t00"); err != nil {
		t.Fatalf("re-adding a tag at the limit: %v", err)
	}
	ts, err := db.ComputerTags(ctx, c.ID)
	must(t, err)
	if len(ts) != store.MaxTagsPerComputer || slices.Contains(ts, "one-too-many") {
		t.Fatalf("computer has %d tags, want %d without the refused one", len(ts), store.MaxTagsPerComputer)
	}
	must(t, db.AddTag(ctx, other.ID, "one-too-many")) // the limit is per computer
	must(t, db.RemoveTag(ctx, c.ID, "t00"))
	must(t, db.AddTag(ctx, c.ID, "one-too-many"))
}
