package httpapi

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/scheduler"
	"github.com/mamori/mamori/internal/store"
	"github.com/mamori/mamori/internal/tasks"
)

func (f *fixture) scheduler(t *testing.T) *scheduler.Scheduler {
	t.Helper()
	s := &scheduler.Scheduler{Store: f.db, Now: func() time.Time { return f.now }, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Server: &scheduler.ServerTasks{Store: f.db, Now: func() time.Time { return f.now }}}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

func step(t *testing.T, s *scheduler.Scheduler) {
	t.Helper()
	if err := s.Step(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestTasks_CreateValidatesTypeAndParameters(t *testing.T) {
	f := newFleet(t)
	for body, want := range map[string]string{
		`{"name":"x","type":"format_disk"}`:                                                                         "unknown task type",
		`{"name":"x","type":"scan"}`:                                                                                "scan.paths: required",
		`{"name":"x","type":"scan","params":{"paths":["relative/dir"]}}`:                                            "absolute path",
		`{"name":"x","type":"scan","params":{"paths":["/"],"depth":3}}`:                                             `no parameter "depth"`,
		`{"name":"x","type":"run_command","params":{"command":"ls","timeout":"2h"}}`:                                "run_command.timeout",
		`{"name":"x","type":"display_message","params":{"title":"` + strings.Repeat("t", 129) + `","message":"m"}}`: "display_message.title",
		`{"name":"x","type":"delete_not_connecting","params":{"days":0}}`:                                           "delete_not_connecting.days",
		`{"name":"x","type":"delete_not_connecting","params":{"days":3,"group":"Nowhere"}}`:                         "Nowhere",
		`{"name":"x","type":"rename_computers","params":{"pattern":"a/b"}}`:                                         "rename_computers.pattern",
		`{"name":" x","type":"engine_update"}`:                                                                      "name",
		`{"type":"engine_update"}`:                                                                                  "required",
		`{"name":"x","type":"engine_update","params":[1]}`:                                                          "JSON object",
		`{"name":"x","type":"engine_update","extra":1}`:                                                             "extra",
	} {
		wantContains(t, body, wantError(t, f.call(t, "POST", "/api/v1/tasks", body), http.StatusBadRequest, errcode.Invalid), want)
	}
	// An unknown access group is not found, like everywhere else.
	wantError(t, f.call(t, "POST", "/api/v1/tasks", `{"name":"x","type":"engine_update","group":"Nowhere"}`), http.StatusNotFound, errcode.NotFound)
	got := decodeAs[taskJSON](t, f.call(t, "POST", "/api/v1/tasks", `{"name":"Nightly scan","type":"scan","group":"Servers",
		"params":{"paths":["/srv","/home"]}}`), http.StatusCreated)
	if got.Group.Path != "All/Servers" || got.Type != "scan" || got.Server || got.CreatedBy != testUser ||
		string(got.Params) != `{"paths":["/srv","/home"]}` { // no action: each computer's policy decides
		t.Fatalf("created %+v params %s", got, got.Params)
	}
	wantError(t, f.call(t, "PATCH", "/api/v1/tasks/"+got.ID, `{"type":"run_command","version":1}`), http.StatusBadRequest, errcode.Invalid)
	up := decodeAs[taskJSON](t, f.call(t, "PATCH", "/api/v1/tasks/"+got.ID, `{"params":{"paths":["/var"],"action":"report"},"version":1}`), http.StatusOK)
	if up.Version != 2 || string(up.Params) != `{"action":"report","paths":["/var"]}` {
		t.Fatalf("updated %+v %s", up, up.Params)
	}
	wantError(t, f.call(t, "PATCH", "/api/v1/tasks/"+got.ID, `{"description":"stale","version":1}`), http.StatusConflict, errcode.Conflict)
	srv := decodeAs[taskJSON](t, f.call(t, "POST", "/api/v1/tasks", `{"name":"Forget old","type":"delete_not_connecting","params":{"days":30,"group":"Laptops"}}`), http.StatusCreated)
	if !srv.Server || !strings.Contains(string(srv.Params), `"group":"All/Laptops"`) {
		t.Fatalf("server task %+v %s", srv, srv.Params)
	}
	// A group given by id is kept as its path, which the scheduler reads.
	tree, err := f.db.Groups(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	lap, err := tree.Resolve("Laptops")
	if err != nil {
		t.Fatal(err)
	}
	byID := decodeAs[taskJSON](t, f.call(t, "POST", "/api/v1/tasks", `{"name":"Forget old by id","type":"delete_not_connecting","params":{"days":30,"group":"`+lap.ID+`"}}`), http.StatusCreated)
	if !strings.Contains(string(byID.Params), `"group":"All/Laptops"`) {
		t.Fatalf("server task given the group's id: %s", byID.Params)
	}
	types := decodeAs[map[string]any](t, f.call(t, "GET", "/api/v1/tasks/types", ""), http.StatusOK)
	if n := len(types["types"].([]any)); n != len(tasks.Types) {
		t.Fatalf("%d types", n)
	}
	list := decodeAs[listResponse[taskJSON]](t, f.call(t, "GET", "/api/v1/tasks?type=scan", ""), http.StatusOK)
	if list.Total != 1 || list.Items[0].ID != got.ID {
		t.Fatalf("list %+v", list)
	}
	if rec := f.call(t, "DELETE", fmt.Sprintf("/api/v1/tasks/%s?version=%d", got.ID, up.Version), ""); rec.Code != http.StatusNoContent {
		t.Fatalf("delete %d %s", rec.Code, rec.Body)
	}
	wantError(t, f.call(t, "GET", "/api/v1/tasks/"+got.ID, ""), http.StatusNotFound, errcode.NotFound)
}

func TestTasks_TriggersValidateKindsTargetsAndServerRules(t *testing.T) {
	f := newFleet(t)
	scan := decodeAs[taskJSON](t, f.call(t, "POST", "/api/v1/tasks", `{"name":"s","type":"scan","params":{"paths":["/"]}}`), http.StatusCreated)
	path := "/api/v1/tasks/" + scan.ID + "/triggers"
	for body, want := range map[string]string{
		`{}`: "trigger is required",
		`{"trigger":{"kind":"hourly"},"targets":[{"type":"computer","id":"c-db01"}]}`:                                        "kind must be one of",
		`{"trigger":{"kind":"daily","at":"25:00"},"targets":[{"type":"computer","id":"c-db01"}]}`:                            "at must be a time of day",
		`{"trigger":{"kind":"daily","at":"03:00","time_zone":"Mars/Olympus"},"targets":[{"type":"computer","id":"c-db01"}]}`: "time_zone",
		`{"trigger":{"kind":"cron","cron":"61 * * * *"},"targets":[{"type":"computer","id":"c-db01"}]}`:                      "cron",
		`{"trigger":{"kind":"asap","random_delay":"48h"},"targets":[{"type":"computer","id":"c-db01"}]}`:                     "random_delay",
		`{"trigger":{"kind":"asap","expiry":"9s"},"targets":[{"type":"computer","id":"c-db01"}]}`:                            "expiry",
		`{"trigger":{"kind":"asap"}}`:                                                                                 "targets are required",
		`{"trigger":{"kind":"asap"},"targets":[{"type":"planet","id":"x"}]}`:                                          "target type",
		`{"trigger":{"kind":"asap"},"targets":[{"type":"computer","id":"c-db01"},{"type":"computer","id":"c-db01"}]}`: "twice",
		`{"trigger":{"kind":"event","event":"reboot"},"targets":[{"type":"computer","id":"c-db01"}]}`:                 "event must be one of",
		`{"trigger":{"kind":"asap","surprise":true},"targets":[{"type":"computer","id":"c-db01"}]}`:                   "surprise",
	} {
		wantContains(t, body, wantError(t, f.call(t, "POST", path, body), http.StatusBadRequest, errcode.Invalid), want)
	}
	wantError(t, f.call(t, "POST", path, `{"trigger":{"kind":"asap"},"targets":[{"type":"computer","id":"c-nope"}]}`), http.StatusNotFound, errcode.NotFound)
	wantError(t, f.call(t, "POST", path, `{"trigger":{"kind":"asap"},"targets":[{"type":"static_group","path":"Nowhere"}]}`), http.StatusNotFound, errcode.NotFound)
	wantError(t, f.call(t, "POST", path, `{"trigger":{"kind":"joined_dynamic_group","dynamic_group_id":"nope"}}`), http.StatusNotFound, errcode.NotFound)

	// Berlin 03:00 is 02:00 UTC in November; the fixture's clock is 12:00 UTC.
	tr := decodeAs[triggerJSON](t, f.call(t, "POST", path, `{"trigger":{"kind":"daily","at":"03:00","time_zone":"Europe/Berlin"},
		"targets":[{"type":"static_group","path":"Servers"},{"type":"computer","id":"c-lap7"}]}`), http.StatusCreated)
	if tr.NextFireAt == nil || *tr.NextFireAt != ts(time.Date(2026, 11, 24, 2, 0, 0, 0, time.UTC)) || len(tr.Targets) != 2 || !tr.Enabled {
		t.Fatalf("trigger %+v next %v", tr, *tr.NextFireAt)
	}
	off := decodeAs[triggerJSON](t, f.call(t, "PATCH", path+"/"+tr.ID, `{"enabled":false,"version":1}`), http.StatusOK)
	if off.Enabled || off.Version != 2 || len(off.Targets) != 2 {
		t.Fatalf("disabled %+v", off)
	}
	wantError(t, f.call(t, "PATCH", path+"/"+tr.ID, `{"enabled":true,"version":1}`), http.StatusConflict, errcode.Conflict)
	got := decodeAs[taskJSON](t, f.call(t, "GET", "/api/v1/tasks/"+scan.ID, ""), http.StatusOK)
	if len(got.Triggers) != 1 || got.Triggers[0].ID != tr.ID {
		t.Fatalf("task triggers %+v", got.Triggers)
	}
	// Deleting a trigger names the version deleted, as editing it does.
	wantError(t, f.call(t, "DELETE", path+"/"+tr.ID, ""), http.StatusBadRequest, errcode.Invalid)
	wantError(t, f.call(t, "DELETE", path+"/"+tr.ID+"?version=x", ""), http.StatusBadRequest, errcode.Invalid)
	wantError(t, f.call(t, "DELETE", path+"/"+tr.ID+"?version=1", ""), http.StatusConflict, errcode.Conflict)
	if rec := f.call(t, "DELETE", path+"/"+tr.ID+"?version=2", ""); rec.Code != http.StatusNoContent {
		t.Fatalf("delete trigger at its version: %d %s", rec.Code, rec.Body)
	}
	wantError(t, f.call(t, "GET", path+"/"+tr.ID, ""), http.StatusNotFound, errcode.NotFound)

	srv := decodeAs[taskJSON](t, f.call(t, "POST", "/api/v1/tasks", `{"name":"r","type":"rename_computers","params":{"pattern":"{hostname}"}}`), http.StatusCreated)
	spath := "/api/v1/tasks/" + srv.ID + "/triggers"
	wantContains(t, "server targets", wantError(t, f.call(t, "POST", spath, `{"trigger":{"kind":"asap"},"targets":[{"type":"computer","id":"c-db01"}]}`),
		http.StatusBadRequest, errcode.Invalid), "no targets")
	wantContains(t, "server event", wantError(t, f.call(t, "POST", spath, `{"trigger":{"kind":"event","event":"agent_connected"}}`),
		http.StatusBadRequest, errcode.Invalid), "server task")
	decodeAs[triggerJSON](t, f.call(t, "POST", spath, `{"trigger":{"kind":"weekly","at":"01:00","weekdays":["sun"]}}`), http.StatusCreated)
	wantError(t, f.call(t, "POST", spath, `{"trigger":{"kind":"server_started"}}`), http.StatusConflict, errcode.Conflict)
}

func TestTasks_RunNowPlansDeliversAndRecordsResults(t *testing.T) {
	f := newFleet(t)
	s := f.scheduler(t)
	cmd := decodeAs[taskJSON](t, f.call(t, "POST", "/api/v1/tasks", `{"name":"uptime","type":"run_command","params":{"command":"uptime"}}`), http.StatusCreated)
	res := decodeAs[map[string]triggerJSON](t, f.call(t, "POST", "/api/v1/tasks/"+cmd.ID+"/run",
		`{"targets":[{"type":"static_group","path":"Servers/Web"},{"type":"computer","id":"c-db01"}]}`), http.StatusAccepted)
	if tr := res["trigger"]; tr.NextFireAt == nil || *tr.NextFireAt != ts(f.now) {
		t.Fatalf("run-now trigger %+v", tr)
	}
	step(t, s)
	runs := decodeAs[listResponse[runJSON]](t, f.call(t, "GET", "/api/v1/tasks/"+cmd.ID+"/runs", ""), http.StatusOK)
	if runs.Total != 3 {
		t.Fatalf("%d runs, want 3 (web-01, web-02, db-01)", runs.Total)
	}
	byName := map[string]runJSON{}
	for _, r := range runs.Items {
		byName[r.Computer.Path] = r
		if r.State != store.RunPlanned || r.Type != "run_command" || r.Attempt != 1 {
			t.Errorf("run %+v", r)
		}
	}
	web := byName["web-01"]
	// The agent reports the run failed.
	if _, err := f.db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: "c-web01", Now: f.now, Events: []store.Event{{ID: "e1",
		Type: store.EventTaskFinished, OccurredAt: f.now, Data: `{"run_id":"` + web.ID + `","state":"failed","exit_code":127,"output":"sh: uptime: not found"}`}}}); err != nil {
		t.Fatal(err)
	}
	got := decodeAs[runJSON](t, f.call(t, "GET", "/api/v1/task-runs/"+web.ID, ""), http.StatusOK)
	if got.State != store.RunFailed || got.ExitCode == nil || *got.ExitCode != 127 || got.Output != "sh: uptime: not found" {
		t.Fatalf("failed run %+v", got)
	}
	failed := decodeAs[listResponse[runJSON]](t, f.call(t, "GET", "/api/v1/tasks/"+cmd.ID+"/runs?state=failed", ""), http.StatusOK)
	if failed.Total != 1 {
		t.Fatalf("failed filter %+v", failed)
	}
	wantError(t, f.call(t, "GET", "/api/v1/tasks/"+cmd.ID+"/runs?state=odd", ""), http.StatusBadRequest, errcode.Invalid)
	mine := decodeAs[listResponse[runJSON]](t, f.call(t, "GET", "/api/v1/computers/c-web01/task-runs", ""), http.StatusOK)
	if mine.Total != 1 || mine.Items[0].ID != web.ID {
		t.Fatalf("computer runs %+v", mine)
	}
	// Retry: only finished-unsuccessfully runs, as a new attempt.
	wantError(t, f.call(t, "POST", "/api/v1/task-runs/"+byName["db-01"].ID+"/retry", ""), http.StatusConflict, errcode.Conflict)
	retry := decodeAs[runJSON](t, f.call(t, "POST", "/api/v1/task-runs/"+web.ID+"/retry", ""), http.StatusCreated)
	if retry.Attempt != 2 || retry.State != store.RunPlanned || retry.Computer.ID != "c-web01" || retry.ID == web.ID {
		t.Fatalf("retry %+v", retry)
	}
	// Cancel a planned run; cancelling again is a conflict.
	c := decodeAs[runJSON](t, f.call(t, "POST", "/api/v1/task-runs/"+byName["db-01"].ID+"/cancel", ""), http.StatusOK)
	if c.State != store.RunCancelled || c.FinishedAt == nil {
		t.Fatalf("cancelled %+v", c)
	}
	wantError(t, f.call(t, "POST", "/api/v1/task-runs/"+byName["db-01"].ID+"/cancel", ""), http.StatusConflict, errcode.Conflict)
	wantError(t, f.call(t, "GET", "/api/v1/task-runs/nope", ""), http.StatusNotFound, errcode.NotFound)
	// No attachment on a command run.
	wantError(t, f.call(t, "GET", "/api/v1/task-runs/"+web.ID+"/attachment", ""), http.StatusNotFound, errcode.NotFound)
}

func TestTasks_ServerTaskRunNowActsAndIsAudited(t *testing.T) {
	f := newFleet(t)
	s := f.scheduler(t)
	del := decodeAs[taskJSON](t, f.call(t, "POST", "/api/v1/tasks", `{"name":"Forget laptops","type":"delete_not_connecting","params":{"days":14,"group":"Laptops"}}`), http.StatusCreated)
	wantError(t, f.call(t, "POST", "/api/v1/tasks/"+del.ID+"/run", `{"targets":[{"type":"computer","id":"c-lap7"}]}`), http.StatusBadRequest, errcode.Invalid)
	res := decodeAs[map[string]runJSON](t, f.call(t, "POST", "/api/v1/tasks/"+del.ID+"/run", `{}`), http.StatusAccepted)
	step(t, s)
	got := decodeAs[runJSON](t, f.call(t, "GET", "/api/v1/task-runs/"+res["run"].ID, ""), http.StatusOK)
	if got.State != store.RunSucceeded || !strings.Contains(got.Output, "laptop-7") || got.Computer != nil {
		t.Fatalf("server run %+v", got)
	}
	c := decodeAs[computerDetail](t, f.call(t, "GET", "/api/v1/computers/c-lap7", ""), http.StatusOK)
	if !c.Revoked {
		t.Fatalf("laptop-7 (15 days silent) not removed: %+v", c)
	}
	es, _, _ := f.db.ListAudit(t.Context(), store.AuditFilter{Limit: 50})
	found := false
	for _, e := range es {
		if e.Domain == "computers" && e.Action == "revoke" && e.ObjectID == "c-lap7" && e.Via == "system" {
			found = true
		}
	}
	if !found {
		t.Fatal("no audit record for the removal")
	}
}

func TestTasks_TargetsNeedUseOnTheirComputers(t *testing.T) {
	w := newWorld(t)
	c := w.cookies["laptops-admin"]
	rec := w.serve(t, request{method: "POST", path: "/api/v1/tasks", body: `{"name":"mine","type":"engine_update"}`, cookie: c})
	task := decodeAs[taskJSON](t, rec, http.StatusCreated)
	if task.Group.ID != w.laptops {
		t.Fatalf("task lives in %+v, want the creator's home", task.Group)
	}
	// Servers' computer and group are invisible to them: not found, not forbidden.
	for _, target := range []string{`{"type":"computer","id":"c-srv"}`, `{"type":"static_group","path":"Servers"}`,
		`{"type":"static_group","id":"` + w.servers + `"}`, `{"type":"dynamic_group","id":"` + w.dyn + `"}`} {
		rec = w.serve(t, request{method: "POST", path: "/api/v1/tasks/" + task.ID + "/run", body: `{"targets":[` + target + `]}`, cookie: c})
		wantError(t, rec, http.StatusNotFound, errcode.NotFound)
	}
	rec = w.serve(t, request{method: "POST", path: "/api/v1/tasks/" + task.ID + "/run", body: `{"targets":[{"type":"static_group","path":"Laptops"}]}`, cookie: c})
	decodeAs[map[string]triggerJSON](t, rec, http.StatusAccepted)
	// A server task removing computers in Servers needs write on them.
	rec = w.serve(t, request{method: "POST", path: "/api/v1/tasks", body: `{"name":"x","type":"delete_not_connecting","params":{"days":1,"group":"All"}}`, cookie: c})
	wantError(t, rec, http.StatusForbidden, errcode.Forbidden)
	// Runs of others' tasks stay hidden from them.
	rec = w.serve(t, request{method: "GET", path: "/api/v1/task-runs/" + w.run, cookie: c})
	wantError(t, rec, http.StatusNotFound, errcode.NotFound)
}

func TestTasks_AttachmentStaysInItsDirectory(t *testing.T) {
	w := newWorld(t)
	rec := w.call(t, "GET", "/api/v1/task-runs/"+w.run+"/attachment", "")
	if rec.Code != http.StatusOK || rec.Body.String() != "bundle" || !strings.Contains(rec.Header().Get("Content-Disposition"), w.run) {
		t.Fatalf("attachment %d %q %v", rec.Code, rec.Body, rec.Header())
	}
	outside := filepath.Join(filepath.Dir(w.api.cfg.AttachmentDir), "secret.txt")
	if err := os.WriteFile(outside, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := w.db.SetRunAttachment(t.Context(), w.run, "../secret.txt"); err != nil {
		t.Fatal(err)
	}
	rec = w.call(t, "GET", "/api/v1/task-runs/"+w.run+"/attachment", "")
	if rec.Code != http.StatusNotFound || strings.Contains(rec.Body.String(), "secret") {
		t.Fatalf("escaped the directory: %d %s", rec.Code, rec.Body)
	}
}

func TestTasks_RunningAServerTaskNeedsWriteOnItsComputers(t *testing.T) {
	w := newWorld(t)
	// The administrator makes a server task acting on Servers and gives a
	// Laptops admin use on tasks everywhere: they still cannot run it.
	task := decodeAs[taskJSON](t, w.call(t, "POST", "/api/v1/tasks", `{"name":"purge","type":"delete_not_connecting","group":"All","params":{"days":1,"group":"Servers"}}`), http.StatusCreated)
	ps := &store.PermissionSet{ID: "use-tasks", Name: "use tasks", GroupID: store.GroupAll, Groups: []string{store.GroupAll}, Grants: map[string]int{"tasks": 2}}
	if err := w.db.CreatePermissionSet(t.Context(), ps); err != nil {
		t.Fatal(err)
	}
	cookie := w.asUser(t, "task-user", w.laptops, ps.ID)
	rec := w.serve(t, request{method: "POST", path: "/api/v1/tasks/" + task.ID + "/run", body: `{}`, cookie: cookie})
	wantContains(t, "run", wantError(t, rec, http.StatusForbidden, errcode.Forbidden), "write on computers in All/Servers")
	rec = w.serve(t, request{method: "POST", path: "/api/v1/tasks/" + task.ID + "/triggers", body: `{"trigger":{"kind":"asap"}}`, cookie: cookie})
	wantError(t, rec, http.StatusForbidden, errcode.Forbidden)
	if runs, _, _ := w.db.ListRuns(t.Context(), store.RunFilter{TaskID: task.ID}); len(runs) != 0 {
		t.Fatalf("%d runs planned", len(runs))
	}
}

func TestTasks_RunNowTriggersDoNotCountTowardsTheLimit(t *testing.T) {
	f := newFleet(t)
	s := f.scheduler(t)
	task := decodeAs[taskJSON](t, f.call(t, "POST", "/api/v1/tasks", `{"name":"u","type":"engine_update"}`), http.StatusCreated)
	for i := 0; i < maxTriggersPerTask+3; i++ {
		decodeAs[map[string]triggerJSON](t, f.call(t, "POST", "/api/v1/tasks/"+task.ID+"/run", `{"targets":[{"type":"computer","id":"c-db01"}]}`), http.StatusAccepted)
		step(t, s)
	}
}
