package authz

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/mamori/mamori/internal/store"
)

// tree: All / Lost & Found, All / Servers / Web, All / Laptops
func tree(t *testing.T) (*store.GroupTree, map[string]string) {
	t.Helper()
	db, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir()), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ids := map[string]string{"All": store.GroupAll, "Lost": store.GroupLostFound}
	srv, _ := db.CreateGroup(t.Context(), store.GroupAll, "Servers")
	web, _ := db.CreateGroup(t.Context(), srv.ID, "Web")
	lap, _ := db.CreateGroup(t.Context(), store.GroupAll, "Laptops")
	ids["Servers"], ids["Web"], ids["Laptops"] = srv.ID, web.ID, lap.ID
	tr, err := db.Groups(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return tr, ids
}

func TestAllows_ScopeIncludesSubgroupsAndLevelsNest(t *testing.T) {
	tr, g := tree(t)
	p := FromSets([]*store.PermissionSet{{Groups: []string{g["Servers"]}, Grants: map[string]int{"computers": 2, "detections": 1}}})
	cases := []struct {
		f     Functionality
		l     Level
		group string
		want  bool
	}{
		{Computers, Read, g["Servers"], true},
		{Computers, Use, g["Web"], true},       // subgroup
		{Computers, Write, g["Web"], false},    // level too low
		{Computers, Read, g["Laptops"], false}, // other branch
		{Computers, Read, g["All"], false},     // parent is not in scope
		{Detections, Read, g["Web"], true},
		{Detections, Use, g["Web"], false},
		{Users, Read, g["Servers"], false}, // not granted at all
	}
	for _, c := range cases {
		if got := p.Allows(c.f, c.l, c.group, tr); got != c.want {
			t.Errorf("Allows(%s, %s, %s) = %v, want %v", c.f, c.l, c.group, got, c.want)
		}
	}
	if got := p.Groups(Computers, Use, tr); len(got) != 2 {
		t.Errorf("Groups(computers, use) = %v, want Servers and Web", got)
	}
	if got := p.Groups(Users, Read, tr); got == nil || len(got) != 0 {
		t.Errorf("Groups(users) = %#v, want empty non-nil", got)
	}
}

func TestFromSets_SetsAddUp(t *testing.T) {
	tr, g := tree(t)
	p := FromSets([]*store.PermissionSet{
		{Groups: []string{g["Servers"]}, Grants: map[string]int{"computers": 1}},
		{Groups: []string{g["Laptops"]}, Grants: map[string]int{"computers": 3}},
	})
	if !p.Allows(Computers, Write, g["Laptops"], tr) || p.Allows(Computers, Write, g["Servers"], tr) || !p.Allows(Computers, Read, g["Web"], tr) {
		t.Fatal("sets did not add up per scope")
	}
}

func TestGlobalFunctionalitiesNeedAllInScope(t *testing.T) {
	tr, g := tree(t)
	narrow := FromSets([]*store.PermissionSet{{Groups: []string{g["Servers"]}, Grants: map[string]int{"audit_log": 3, "server_settings": 3}}})
	if narrow.Any(AuditLog, Read) || narrow.Allows(ServerSettings, Read, g["Servers"], tr) {
		t.Fatal("a set scoped to Servers granted a global functionality")
	}
	wide := FromSets([]*store.PermissionSet{{Groups: []string{g["All"]}, Grants: map[string]int{"audit_log": 1}}})
	if !wide.Allows(AuditLog, Read, "", tr) || wide.Allows(AuditLog, Write, "", tr) {
		t.Fatal("global grant on All")
	}
}

func TestCovers_NobodyHandsOutMoreThanTheyHold(t *testing.T) {
	tr, g := tree(t)
	p := FromSets([]*store.PermissionSet{{Groups: []string{g["Servers"]}, Grants: map[string]int{"computers": 3, "detections": 1}}})
	ok := &store.PermissionSet{Groups: []string{g["Web"]}, Grants: map[string]int{"computers": 2, "detections": 1}}
	wider := &store.PermissionSet{Groups: []string{g["All"]}, Grants: map[string]int{"computers": 1}}
	higher := &store.PermissionSet{Groups: []string{g["Web"]}, Grants: map[string]int{"detections": 3}}
	other := &store.PermissionSet{Groups: []string{g["Web"]}, Grants: map[string]int{"users": 1}}
	global := &store.PermissionSet{Groups: []string{g["All"]}, Grants: map[string]int{"audit_log": 1}}
	if !p.Covers(ok, tr) {
		t.Error("a narrower set is not covered")
	}
	for name, s := range map[string]*store.PermissionSet{"wider scope": wider, "higher level": higher, "other functionality": other, "global": global} {
		if p.Covers(s, tr) {
			t.Errorf("%s covered", name)
		}
	}
}

func TestParseLevelAndSummary(t *testing.T) {
	for s, want := range map[string]Level{"read": Read, "use": Use, "write": Write} {
		if l, err := ParseLevel(s); err != nil || l != want || l.String() != s {
			t.Errorf("ParseLevel(%q) = %v %v", s, l, err)
		}
	}
	if _, err := ParseLevel("admin"); err == nil {
		t.Error("ParseLevel accepted admin")
	}
	_, g := tree(t)
	p := FromSets([]*store.PermissionSet{
		{Groups: []string{g["Servers"]}, Grants: map[string]int{"computers": 1}},
		{Groups: []string{g["Laptops"]}, Grants: map[string]int{"computers": 3}},
	})
	sum := p.Summary()
	if len(sum) != 2 || sum[0].Level != Write || sum[0].Groups[0] != g["Laptops"] || sum[1].Level != Read || sum[1].Groups[0] != g["Servers"] {
		t.Fatalf("summary %+v", sum)
	}
}
