package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/policy"
	"github.com/mamori/mamori/internal/store"
)

func effectiveOf(t *testing.T, f *fixture, computer, key string) policy.Effective {
	t.Helper()
	eff := decodeAs[effectiveJSON](t, f.call(t, "GET", "/api/v1/computers/"+computer+"/effective-config", ""), http.StatusOK)
	for _, e := range eff.Settings {
		if e.Product+"."+e.Key == key {
			return e
		}
	}
	t.Fatalf("no %s in %+v", key, eff)
	return policy.Effective{}
}

func TestPolicies_AssignOrderForceAndRevertWithProvenance(t *testing.T) {
	f := newFleet(t)
	base := decodeAs[policyJSON](t, f.call(t, "POST", "/api/v1/policies", `{"name":"Base agent","product":"agent","group":"All",
		"settings":{"check_in_interval":{"flag":"apply","value":"5m"},"servers":{"flag":"apply","value":["a.example:2222"]}}}`), http.StatusCreated)
	web := decodeAs[policyJSON](t, f.call(t, "POST", "/api/v1/policies", `{"name":"Web agent","product":"agent",
		"settings":{"check_in_interval":{"flag":"apply","value":"30s"},"servers":{"flag":"apply","value":["b.example:2222"],"merge":"append"}}}`), http.StatusCreated)
	lock := decodeAs[policyJSON](t, f.call(t, "POST", "/api/v1/policies", `{"name":"Locked log level","product":"agent",
		"settings":{"log_level":{"flag":"force","value":"warn"}}}`), http.StatusCreated)
	mine := decodeAs[policyJSON](t, f.call(t, "POST", "/api/v1/policies", `{"name":"Debug web-01","product":"agent",
		"settings":{"log_level":{"flag":"force","value":"debug"},"check_in_interval":{"flag":"apply","value":"10s"}}}`), http.StatusCreated)

	// Defaults before any assignment.
	if e := effectiveOf(t, f, "c-web01", "agent.check_in_interval"); !e.Default || e.Value != "60s" || e.Source != nil {
		t.Fatalf("default %+v", e)
	}
	decodeAs[assignmentJSON](t, f.call(t, "POST", "/api/v1/policies/"+base.ID+"/assignments", `{"target_type":"static","target":"All"}`), http.StatusCreated)
	aw := decodeAs[assignmentJSON](t, f.call(t, "POST", "/api/v1/policies/"+web.ID+"/assignments", `{"target_type":"static","target":"Servers/Web"}`), http.StatusCreated)
	decodeAs[assignmentJSON](t, f.call(t, "POST", "/api/v1/policies/"+lock.ID+"/assignments", `{"target_type":"static","target":"Servers"}`), http.StatusCreated)
	decodeAs[assignmentJSON](t, f.call(t, "POST", "/api/v1/policies/"+mine.ID+"/assignments", `{"target_type":"computer","target":"c-web01"}`), http.StatusCreated)
	wantError(t, f.call(t, "POST", "/api/v1/policies/"+base.ID+"/assignments", `{"target_type":"static","target":"All"}`), http.StatusConflict, errcode.Conflict)

	// The computer's own policy comes last but cannot beat an earlier force.
	if e := effectiveOf(t, f, "c-web01", "agent.log_level"); e.Value != "warn" || !e.Forced || e.Source.PolicyName != "Locked log level" || e.Source.TargetName != "All/Servers" {
		t.Fatalf("log_level %+v (source %+v)", e, e.Source)
	}
	if e := effectiveOf(t, f, "c-web01", "agent.check_in_interval"); e.Value != "10s" || e.Source.TargetType != "computer" || e.Source.TargetName != "web-01" {
		t.Fatalf("interval %+v (source %+v)", e, e.Source)
	}
	if e := effectiveOf(t, f, "c-web01", "agent.servers"); fmt.Sprint(e.Value) != "[a.example:2222 b.example:2222]" || len(e.Sources) != 2 {
		t.Fatalf("servers %+v", e)
	}
	// db-01 is under Servers but not Servers/Web.
	if e := effectiveOf(t, f, "c-db01", "agent.check_in_interval"); e.Value != "5m0s" || e.Source.PolicyID != base.ID {
		t.Fatalf("db-01 interval %+v", e)
	}
	// Removing the Web assignment reverts to the next policy down.
	wantError(t, f.call(t, "DELETE", "/api/v1/policies/"+web.ID+"/assignments/"+aw.ID, ""), http.StatusBadRequest, errcode.Invalid) // no version
	if rec := f.call(t, "DELETE", fmt.Sprintf("/api/v1/policies/%s/assignments/%s?version=%d", web.ID, aw.ID, aw.Version), ""); rec.Code != http.StatusNoContent {
		t.Fatalf("unassign %d %s", rec.Code, rec.Body)
	}
	if e := effectiveOf(t, f, "c-web01", "agent.servers"); fmt.Sprint(e.Value) != "[a.example:2222]" {
		t.Fatalf("servers after unassign %+v", e)
	}
	// Editing a policy changes the result; a stale version is refused.
	up := decodeAs[policyJSON](t, f.call(t, "PATCH", "/api/v1/policies/"+base.ID, fmt.Sprintf(`{"settings":{"check_in_interval":{"flag":"apply","value":"7m"}},"version":%d}`, base.Version)), http.StatusOK)
	wantError(t, f.call(t, "PATCH", "/api/v1/policies/"+base.ID, fmt.Sprintf(`{"description":"x","version":%d}`, base.Version)), http.StatusConflict, errcode.Conflict)
	if e := effectiveOf(t, f, "c-db01", "agent.check_in_interval"); e.Value != "7m0s" {
		t.Fatalf("after edit %+v", e)
	}
	// Deleting the policy removes its assignments.
	if rec := f.call(t, "DELETE", fmt.Sprintf("/api/v1/policies/%s?version=%d", base.ID, up.Version), ""); rec.Code != http.StatusNoContent {
		t.Fatalf("delete %d %s", rec.Code, rec.Body)
	}
	if e := effectiveOf(t, f, "c-db01", "agent.check_in_interval"); !e.Default {
		t.Fatalf("after delete %+v", e)
	}
}

func TestPolicies_DynamicGroupAssignmentAndRanks(t *testing.T) {
	f := newFleet(t)
	dg := decodeAs[dynGroupJSON](t, f.call(t, "POST", "/api/v1/dynamic-groups", `{"name":"Debian","template":{"op":"and","rules":[{"field":"os.name","operator":"contains","value":"debian"}]}}`), http.StatusCreated)
	if err := f.db.ApplyMembership(t.Context(), dg.ID, []string{"c-web01"}, nil, f.now); err != nil {
		t.Fatal(err)
	}
	p1 := decodeAs[policyJSON](t, f.call(t, "POST", "/api/v1/policies", `{"name":"first","product":"updates","settings":{"interval":{"flag":"apply","value":"2h"}}}`), http.StatusCreated)
	p2 := decodeAs[policyJSON](t, f.call(t, "POST", "/api/v1/policies", `{"name":"second","product":"updates","settings":{"interval":{"flag":"apply","value":"3h"}}}`), http.StatusCreated)
	a1 := decodeAs[assignmentJSON](t, f.call(t, "POST", "/api/v1/policies/"+p1.ID+"/assignments", `{"target_type":"dynamic","target":"`+dg.ID+`","rank":1}`), http.StatusCreated)
	decodeAs[assignmentJSON](t, f.call(t, "POST", "/api/v1/policies/"+p2.ID+"/assignments", `{"target_type":"dynamic","target":"`+dg.ID+`","rank":2}`), http.StatusCreated)
	if e := effectiveOf(t, f, "c-web01", "updates.interval"); e.Value != "3h0m0s" || e.Source.TargetType != "dynamic" || e.Source.TargetName != "Debian" {
		t.Fatalf("rank 2 wins: %+v %+v", e, e.Source)
	}
	ranked := decodeAs[assignmentJSON](t, f.call(t, "PATCH", "/api/v1/policies/"+p1.ID+"/assignments/"+a1.ID, fmt.Sprintf(`{"rank":3,"version":%d}`, a1.Version)), http.StatusOK)
	if ranked.Version != a1.Version+1 || ranked.Rank != 3 {
		t.Fatalf("ranked %+v", ranked)
	}
	// Another administrator's rank from the old version is refused.
	wantError(t, f.call(t, "PATCH", "/api/v1/policies/"+p1.ID+"/assignments/"+a1.ID, fmt.Sprintf(`{"rank":0,"version":%d}`, a1.Version)), http.StatusConflict, errcode.Conflict)
	if e := effectiveOf(t, f, "c-web01", "updates.interval"); e.Value != "2h0m0s" {
		t.Fatalf("after re-ranking: %+v", e)
	}
	if e := effectiveOf(t, f, "c-db01", "updates.interval"); !e.Default {
		t.Fatalf("non-member got the dynamic group's policy: %+v", e)
	}
}

func TestPolicies_BadInputNamesTheSettingAndStoresNothing(t *testing.T) {
	f := newLoggedIn(t)
	cases := map[string]string{
		`{"name":"x","product":"firewall"}`: "product must be",
		`{"name":"x","product":"agent","settings":{"check_in_interval":{"flag":"apply","value":"1s"}}}`:                "agent.check_in_interval",
		`{"name":"x","product":"agent","settings":{"colour":{"flag":"apply","value":"red"}}}`:                          `no setting "colour"`,
		`{"name":"x","product":"protection","settings":{"scheduled_scans":{"flag":"apply","value":["99 * * * * /"]}}}`: "bad cron",
		`{"product":"agent"}`: "required",
	}
	for body, want := range cases {
		msg := wantError(t, f.call(t, "POST", "/api/v1/policies", body), http.StatusBadRequest, errcode.Invalid)
		wantContains(t, body, msg, want)
	}
	if ps, _ := f.db.Policies(t.Context()); len(ps) != 0 {
		t.Fatalf("refused policies were stored: %d", len(ps))
	}
	p := decodeAs[policyJSON](t, f.call(t, "POST", "/api/v1/policies", `{"name":"ok","product":"agent"}`), http.StatusCreated)
	wantError(t, f.call(t, "PATCH", "/api/v1/policies/"+p.ID, `{"product":"updates","version":1}`), http.StatusBadRequest, errcode.Invalid)
	for body, code := range map[string]int{
		`{"target_type":"planet","target":"x"}`:                   http.StatusBadRequest,
		`{"target_type":"static","target":"Nope"}`:                http.StatusNotFound,
		`{"target_type":"dynamic","target":"nope"}`:               http.StatusNotFound,
		`{"target_type":"computer","target":"nope"}`:              http.StatusNotFound,
		`{"target_type":"static","target":"All","rank":99999999}`: http.StatusBadRequest,
	} {
		if rec := f.call(t, "POST", "/api/v1/policies/"+p.ID+"/assignments", body); rec.Code != code {
			t.Errorf("%s: %d %s, want %d", body, rec.Code, rec.Body, code)
		}
	}
	if as, _ := f.db.PolicyAssignments(t.Context(), p.ID); len(as) != 0 {
		t.Fatalf("refused assignments stored: %d", len(as))
	}
	schema := decodeAs[map[string]any](t, f.call(t, "GET", "/api/v1/policies/schema", ""), http.StatusOK)
	if len(schema["settings"].([]any)) != len(policy.Schema) {
		t.Fatalf("schema %v", schema)
	}
	_ = store.GroupAll
}

// A proxy's password set in a policy reaches the agents' configuration
// but is hidden from views, the audit log and the effective configuration;
// a client that sends back the settings it read keeps the password, and a
// new one replaces it.
func TestPolicies_ProxyPasswordsAreHiddenAndKept(t *testing.T) {
	f := newFleet(t)
	p := decodeAs[policyJSON](t, f.call(t, "POST", "/api/v1/policies", `{"name":"Proxy","product":"agent","group":"All",
		"settings":{"proxy":{"flag":"apply","value":"http://agent:S3cretPw@proxy.example:3128"}}}`), http.StatusCreated)
	decodeAs[assignmentJSON](t, f.call(t, "POST", "/api/v1/policies/"+p.ID+"/assignments", `{"target_type":"static","target":"All"}`), http.StatusCreated)
	stored := func() string {
		t.Helper()
		row, err := f.db.PolicyByID(t.Context(), p.ID)
		if err != nil {
			t.Fatal(err)
		}
		return row.Settings
	}
	sent := func() any {
		t.Helper()
		_, doc, err := f.api.cfg.Configurations.Effective(t.Context(), "c-web01")
		if err != nil {
			t.Fatal(err)
		}
		return doc.Settings["agent"]["proxy"]
	}
	for name, body := range map[string]string{
		"created":   mustJSON(t, p),
		"read":      f.call(t, "GET", "/api/v1/policies/"+p.ID, "").Body.String(),
		"listed":    f.call(t, "GET", "/api/v1/policies", "").Body.String(),
		"effective": f.call(t, "GET", "/api/v1/computers/c-web01/effective-config", "").Body.String(),
		"audit":     f.call(t, "GET", "/api/v1/audit?domain=policies", "").Body.String(),
	} {
		if strings.Contains(body, "S3cretPw") || !strings.Contains(body, "agent:xxxxx@proxy.example:3128") {
			t.Errorf("%s shows %s", name, body)
		}
	}
	if got := sent(); got != "http://agent:S3cretPw@proxy.example:3128" {
		t.Fatalf("the agents' configuration has proxy %v", got)
	}
	// Sent back as read, with another setting changed: the password stays.
	up := decodeAs[policyJSON](t, f.call(t, "PATCH", "/api/v1/policies/"+p.ID, fmt.Sprintf(`{"settings":{"proxy":{"flag":"apply","value":%q},
		"log_level":{"flag":"apply","value":"debug"}},"version":%d}`, p.Settings["proxy"].Value, p.Version)), http.StatusOK)
	if s := stored(); !strings.Contains(s, "agent:S3cretPw@proxy.example:3128") || !strings.Contains(s, "debug") {
		t.Fatalf("stored after an edit that sent the hidden password back: %s", s)
	}
	// Another host with the hidden form is not given the old password.
	decodeAs[policyJSON](t, f.call(t, "PATCH", "/api/v1/policies/"+p.ID, fmt.Sprintf(`{"settings":{"proxy":{"flag":"apply","value":"http://agent:xxxxx@other.example:3128"}},"version":%d}`, up.Version)), http.StatusOK)
	if s := stored(); strings.Contains(s, "S3cretPw") {
		t.Fatalf("the old password went to another proxy: %s", s)
	}
	decodeAs[policyJSON](t, f.call(t, "PATCH", "/api/v1/policies/"+p.ID, fmt.Sprintf(`{"settings":{"proxy":{"flag":"apply","value":"http://agent:N3wPw@proxy.example:3128"}},"version":%d}`, up.Version+1)), http.StatusOK)
	if got := sent(); got != "http://agent:N3wPw@proxy.example:3128" {
		t.Fatalf("a new password did not replace the old one: %v", got)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
