package apiclient_test

import (
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mamori/mamori/internal/apiclient"
	"github.com/mamori/mamori/internal/errcode"
)

// The management methods against the real server: shapes decode, versions
// are checked, refusals come back with their code.
func TestClient_ManagementAgainstRealServer(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	ctx := t.Context()
	c := adminToken(t, s)
	if _, err := c.CreateGroup(ctx, "", "Servers"); err != nil {
		t.Fatal(err)
	}

	// Dynamic groups.
	tpl := json.RawMessage(`{"op":"and","rules":[{"field":"hostname","operator":"prefix","value":"web"}]}`)
	dg, err := c.CreateDynamicGroup(ctx, apiclient.DynamicGroupRequest{Name: "Web", Parent: "Servers", Template: tpl})
	if err != nil {
		t.Fatal(err)
	}
	if dg.Name != "Web" || dg.Parent == nil || dg.Parent.Path != "All/Servers" || dg.ParentDynamic != nil || dg.AccessGroup.Path != "All/Servers" ||
		dg.Version != 1 || !strings.Contains(string(dg.JSON()), `"template"`) {
		t.Fatalf("created %+v", dg)
	}
	child, err := c.CreateDynamicGroup(ctx, apiclient.DynamicGroupRequest{Name: "Web 1", ParentDynamic: dg.ID, Template: tpl})
	if err != nil || child.ParentDynamic == nil || *child.ParentDynamic != dg.ID || child.Parent != nil {
		t.Fatalf("child %+v, %v", child, err)
	}
	name := "Web servers"
	up, err := c.UpdateDynamicGroup(ctx, dg.ID, apiclient.DynamicGroupUpdate{Name: &name, Version: dg.Version})
	if err != nil || up.Name != name || up.Version != 2 || string(up.Template) != string(dg.Template) {
		t.Fatalf("updated %+v, %v", up, err)
	}
	_, err = c.UpdateDynamicGroup(ctx, dg.ID, apiclient.DynamicGroupUpdate{Name: &name, Version: dg.Version})
	wantCode(t, err, errcode.Conflict, "")
	l, err := c.ListDynamicGroups(ctx)
	if err != nil || l.Total != 2 {
		t.Fatalf("list %+v, %v", l, err)
	}
	members, err := c.DynamicGroupMembers(ctx, dg.ID, apiclient.ComputerQuery{Status: "online"})
	if err != nil || members.Total != 0 {
		t.Fatalf("members %+v, %v", members, err)
	}
	_, err = c.CreateDynamicGroup(ctx, apiclient.DynamicGroupRequest{Name: "Bad", Template: json.RawMessage(`{"op":"xor","rules":[]}`)})
	wantCode(t, err, errcode.Invalid, "template op")
	if err := c.DeleteDynamicGroup(ctx, child.ID, child.Version); err != nil {
		t.Fatal(err)
	}

	// Policies.
	schema, err := c.PolicySchema(ctx)
	if err != nil || len(schema.Products) != 3 || len(schema.Settings) == 0 || schema.Settings[0].Type == "" {
		t.Fatalf("schema %+v, %v", schema, err)
	}
	p, err := c.CreatePolicy(ctx, apiclient.PolicyRequest{Name: "Base", Product: "agent", Settings: map[string]apiclient.PolicyValue{
		"log_level": {Flag: "force", Value: json.RawMessage(`"warn"`)},
		"servers":   {Flag: "apply", Value: json.RawMessage(`["a:1"]`), Merge: "append"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Product != "agent" || p.Settings["log_level"].Flag != "force" || string(p.Settings["servers"].Value) != `["a:1"]` || p.Settings["servers"].Merge != "append" {
		t.Fatalf("policy %+v", p)
	}
	settings := map[string]apiclient.PolicyValue{"log_level": {Flag: "apply", Value: json.RawMessage(`"debug"`)}}
	p2, err := c.UpdatePolicy(ctx, p.ID, apiclient.PolicyUpdate{Settings: &settings, Version: p.Version})
	if err != nil || len(p2.Settings) != 1 || p2.Version != 2 {
		t.Fatalf("update %+v, %v", p2, err)
	}
	a, err := c.AssignPolicy(ctx, p.ID, apiclient.AssignRequest{TargetType: apiclient.TargetStatic, Target: "Servers", Rank: 2})
	if err != nil || a.Target.Path != "All/Servers" || a.Rank != 2 || a.PolicyID != p.ID {
		t.Fatalf("assign %+v, %v", a, err)
	}
	a2, err := c.AssignPolicy(ctx, p.ID, apiclient.AssignRequest{TargetType: apiclient.TargetDynamic, Target: dg.ID})
	if err != nil || a2.Target.Path != name {
		t.Fatalf("assign to a dynamic group %+v, %v", a2, err)
	}
	if a.Version != 1 {
		t.Fatalf("a new assignment's version %d", a.Version)
	}
	if a, err = c.RankAssignment(ctx, p.ID, a.ID, -4, a.Version); err != nil || a.Rank != -4 || a.Version != 2 {
		t.Fatalf("rank %+v, %v", a, err)
	}
	// Someone else's rank change since: a conflict, nothing changes.
	_, err = c.RankAssignment(ctx, p.ID, a.ID, 9, 1)
	wantCode(t, err, errcode.Conflict, "changed by someone else")
	as, err := c.ListAssignments(ctx, p.ID)
	if err != nil || as.Total != 2 {
		t.Fatalf("assignments %+v, %v", as, err)
	}
	err = c.UnassignPolicy(ctx, p.ID, a2.ID, a2.Version+1)
	wantCode(t, err, errcode.Conflict, "changed by someone else")
	if err := c.UnassignPolicy(ctx, p.ID, a2.ID, a2.Version); err != nil {
		t.Fatal(err)
	}
	err = c.UnassignPolicy(ctx, p.ID, a2.ID, a2.Version)
	wantCode(t, err, errcode.NotFound, "assignment not found")
	err = c.DeletePolicy(ctx, p.ID, p.Version)
	wantCode(t, err, errcode.Conflict, "")
	if err := c.DeletePolicy(ctx, p.ID, p2.Version); err != nil {
		t.Fatal(err)
	}
	pl, err := c.ListPolicies(ctx, "agent")
	if err != nil || pl.Total != 0 {
		t.Fatalf("policies %+v, %v", pl, err)
	}

	// Tasks.
	tt, err := c.TaskTypes(ctx)
	if err != nil || len(tt.Types) == 0 || len(tt.TriggerKinds) == 0 || len(tt.RunStates) != 7 {
		t.Fatalf("types %+v, %v", tt, err)
	}
	task, err := c.CreateTask(ctx, apiclient.TaskRequest{Name: "up", Type: "run_command", Params: json.RawMessage(`{"command":"uptime"}`)})
	if err != nil || task.Server || !strings.Contains(string(task.Params), `"uptime"`) {
		t.Fatalf("task %+v, %v", task, err)
	}
	_, err = c.CreateTask(ctx, apiclient.TaskRequest{Name: "x", Type: "format_disk"})
	wantCode(t, err, errcode.Invalid, "unknown task type")
	tr, err := c.CreateTrigger(ctx, task.ID, apiclient.TriggerRequest{Trigger: json.RawMessage(`{"kind":"daily","at":"03:00"}`),
		Targets: []apiclient.Target{{Type: apiclient.TaskTargetStaticGroup, Path: "Servers"}}})
	if err != nil || tr.NextFireAt.IsZero() || !tr.LastFiredAt.IsZero() || len(tr.Targets) != 1 || tr.Targets[0].ID == "" || !tr.Enabled {
		t.Fatalf("trigger %+v, %v", tr, err)
	}
	off := false
	tr2, err := c.UpdateTrigger(ctx, task.ID, tr.ID, apiclient.TriggerUpdate{Enabled: &off, Version: tr.Version})
	if err != nil || tr2.Enabled || tr2.Version != 2 {
		t.Fatalf("trigger update %+v, %v", tr2, err)
	}
	_, err = c.CreateTrigger(ctx, task.ID, apiclient.TriggerRequest{Trigger: json.RawMessage(`{"kind":"cron","cron":"61 * * * *"}`),
		Targets: tr.Targets})
	wantCode(t, err, errcode.Invalid, "cron")
	started, err := c.RunTask(ctx, task.ID, apiclient.RunRequest{Targets: []apiclient.Target{{Type: apiclient.TaskTargetStaticGroup, Path: "Servers"}}})
	if err != nil || started.Trigger == nil || started.Run != nil || !strings.Contains(string(started.Trigger.Trigger), `"asap"`) {
		t.Fatalf("run %+v, %v", started, err)
	}
	got, err := c.GetTask(ctx, task.ID)
	if err != nil || len(got.Triggers) != 2 {
		t.Fatalf("task with triggers %+v, %v", got, err)
	}
	runs, err := c.ListTaskRuns(ctx, task.ID, apiclient.TaskRunQuery{State: apiclient.RunFailed})
	if err != nil || runs.Total != 0 {
		t.Fatalf("runs %+v, %v", runs, err)
	}
	_, err = c.GetTaskRun(ctx, "nope")
	wantCode(t, err, errcode.NotFound, "")
	// The trigger was edited since tr: its version is tr2's.
	wantCode(t, c.DeleteTrigger(ctx, task.ID, tr.ID, tr.Version), errcode.Conflict, "")
	if err := c.DeleteTrigger(ctx, task.ID, tr.ID, tr2.Version); err != nil {
		t.Fatal(err)
	}
	wantCode(t, c.DeleteTrigger(ctx, task.ID, tr.ID, tr2.Version), errcode.NotFound, "")
	trs, err := c.ListTriggers(ctx, task.ID)
	if err != nil || trs.Total != 1 {
		t.Fatalf("triggers %+v, %v", trs, err)
	}
	err = c.DeleteTask(ctx, task.ID, got.Version+1)
	wantCode(t, err, errcode.Conflict, "")
	if err := c.DeleteTask(ctx, task.ID, got.Version); err != nil {
		t.Fatal(err)
	}
}

func TestClient_OpenAttachment(t *testing.T) {
	t.Parallel()
	var accept string
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		accept = r.Header.Get("Accept")
		switch r.URL.Path {
		case "/api/v1/task-runs/r1/attachment":
			w.Header().Set("Content-Type", "application/gzip")
			w.Header().Set("Content-Disposition", `attachment; filename="../../etc/r1.tar.gz"`)
			io.WriteString(w, "bundle")
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":{"code":"not_found","message":"this run has no attachment"}}`)
		}
	}))
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	defer ts.Close()
	c := &apiclient.Client{BaseURL: ts.URL, Token: "mmt_x", HTTP: ts.Client()}
	a, err := c.OpenAttachment(t.Context(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(a)
	if err != nil || string(b) != "bundle" || a.Name != "r1.tar.gz" || a.Size != 6 {
		t.Fatalf("attachment %q (%v), name %q, size %d", b, err, a.Name, a.Size)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(accept, "application/json") && !strings.Contains(accept, "gzip") {
		t.Errorf("Accept %q", accept)
	}
	_, err = c.OpenAttachment(t.Context(), "r2")
	wantCode(t, err, errcode.NotFound, "this run has no attachment")
}
