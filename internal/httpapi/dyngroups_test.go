package httpapi

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

const tplWeb = `{"op":"and","rules":[{"field":"hostname","operator":"prefix","value":"web"}]}`

func TestDynamicGroups_CreatePreviewMembersUpdateDelete(t *testing.T) {
	f := newFleet(t)
	// Preview before saving: web-01 and web-02 are under Servers/Web.
	q := url.Values{"parent": {"Servers"}, "template": {tplWeb}}
	p := decodeAs[computerList](t, f.call(t, "GET", "/api/v1/dynamic-groups/preview?"+q.Encode(), ""), http.StatusOK)
	if p.Total != 2 || !strings.Contains(strings.Join(names(p.Items), ","), "web-01") {
		t.Fatalf("preview %v (total %d)", names(p.Items), p.Total)
	}
	q.Set("parent", "Laptops")
	if p := decodeAs[computerList](t, f.call(t, "GET", "/api/v1/dynamic-groups/preview?"+q.Encode(), ""), http.StatusOK); p.Total != 0 {
		t.Fatalf("preview under Laptops %v", names(p.Items))
	}
	if evs, _ := f.db.ServerEventsAfter(t.Context(), 0, []string{store.EventJoinedDynamicGroup, store.EventLeftDynamicGroup}, 10); len(evs) != 0 {
		t.Fatal("a preview changed membership")
	}

	g := decodeAs[dynGroupJSON](t, f.call(t, "POST", "/api/v1/dynamic-groups", `{"name":"Web servers","parent":"Servers","template":`+tplWeb+`}`), http.StatusCreated)
	if g.Parent == nil || g.Parent.Path != "All/Servers" || g.AccessGroup.Path != "All/Servers" || g.Version != 1 {
		t.Fatalf("created %+v", g)
	}
	child := decodeAs[dynGroupJSON](t, f.call(t, "POST", "/api/v1/dynamic-groups",
		fmt.Sprintf(`{"name":"Online web","parent_dynamic":%q,"template":{"op":"and","rules":[{"field":"status","operator":"=","value":"online"}]}}`, g.ID)), http.StatusCreated)
	if child.ParentDynamic == nil || *child.ParentDynamic != g.ID || child.AccessGroup.Path != "All/Servers" {
		t.Fatalf("child %+v", child)
	}
	// Members as the evaluator would record them.
	if err := f.db.ApplyMembership(t.Context(), g.ID, []string{"c-web01", "c-web02"}, nil, f.now); err != nil {
		t.Fatal(err)
	}
	m := decodeAs[computerList](t, f.call(t, "GET", "/api/v1/dynamic-groups/"+g.ID+"/members?sort=name", ""), http.StatusOK)
	if m.Total != 2 || m.Items[0].Name != "web-01" {
		t.Fatalf("members %v", names(m.Items))
	}
	if c := decodeAs[computerList](t, f.call(t, "GET", "/api/v1/computers?dynamic_group="+g.ID+"&name=02", ""), http.StatusOK); c.Total != 1 {
		t.Fatalf("computers?dynamic_group %v", names(c.Items))
	}
	d := decodeAs[computerDetail](t, f.call(t, "GET", "/api/v1/computers/c-web01", ""), http.StatusOK)
	if len(d.DynamicGroups) != 1 || d.DynamicGroups[0] != g.ID {
		t.Fatalf("computer's dynamic groups %v", d.DynamicGroups)
	}

	// Update with a stale version fails; with the right one it changes.
	wantError(t, f.call(t, "PATCH", "/api/v1/dynamic-groups/"+g.ID, `{"name":"x","version":7}`), http.StatusConflict, errcode.Conflict)
	up := decodeAs[dynGroupJSON](t, f.call(t, "PATCH", "/api/v1/dynamic-groups/"+g.ID,
		`{"template":{"op":"or","rules":[{"field":"tag","operator":"=","value":"web"}]},"version":1}`), http.StatusOK)
	if up.Version != 2 || !strings.Contains(string(up.Template), `"or"`) {
		t.Fatalf("updated %+v", up)
	}
	wantError(t, f.call(t, "PATCH", "/api/v1/dynamic-groups/"+g.ID, `{"parent":"Laptops","version":2}`), http.StatusBadRequest, errcode.Invalid)
	// A group with a dynamic subgroup cannot be deleted.
	wantError(t, f.call(t, "DELETE", "/api/v1/dynamic-groups/"+g.ID+"?version=2", ""), http.StatusConflict, errcode.Conflict)
	if rec := f.call(t, "DELETE", "/api/v1/dynamic-groups/"+child.ID+"?version=1", ""); rec.Code != http.StatusNoContent {
		t.Fatalf("delete child: %d %s", rec.Code, rec.Body)
	}
	if rec := f.call(t, "DELETE", "/api/v1/dynamic-groups/"+g.ID+"?version=2", ""); rec.Code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	wantError(t, f.call(t, "GET", "/api/v1/dynamic-groups/"+g.ID, ""), http.StatusNotFound, errcode.NotFound)
}

func TestDynamicGroups_BadInputNamesTheField(t *testing.T) {
	f := newLoggedIn(t)
	cases := map[string]string{
		`{"name":"x","template":{"op":"and","rules":[{"field":"colour","operator":"=","value":"red"}]}}`:        `unknown field "colour"`,
		`{"name":"x","template":{"op":"and","rules":[{"field":"hardware.ram","operator":">","value":"lots"}]}}`: "rule 1 (hardware.ram)",
		`{"name":"x","template":{"op":"xor","rules":[{"field":"hostname","operator":"=","value":"a"}]}}`:        "op must be",
		`{"name":"","template":{"op":"and","rules":[{"field":"hostname","operator":"=","value":"a"}]}}`:         "name must be",
		`{"name":"x"}`: "required",
		`{"name":"x","parent":"All","parent_dynamic":"y","template":{"op":"and","rules":[{"field":"hostname","operator":"=","value":"a"}]}}`: "not both",
	}
	for body, want := range cases {
		msg := wantError(t, f.call(t, "POST", "/api/v1/dynamic-groups", body), http.StatusBadRequest, errcode.Invalid)
		wantContains(t, body, msg, want)
	}
	wantError(t, f.call(t, "POST", "/api/v1/dynamic-groups", `{"name":"x","parent":"Nope","template":`+tplWeb+`}`), http.StatusNotFound, errcode.NotFound)
	wantError(t, f.call(t, "GET", "/api/v1/dynamic-groups/preview", ""), http.StatusBadRequest, errcode.Invalid)
	if _, _, err := f.db.ListAudit(t.Context(), store.AuditFilter{Domain: "dynamic_groups"}); err != nil {
		t.Fatal(err)
	}
	fields := decodeAs[map[string]any](t, f.call(t, "GET", "/api/v1/dynamic-groups/fields", ""), http.StatusOK)
	if !strings.Contains(fmt.Sprint(fields["fields"]), "software") {
		t.Fatalf("fields %v", fields)
	}
}
