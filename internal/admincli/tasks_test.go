package admincli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type task struct {
	ID      string                     `json:"id"`
	Name    string                     `json:"name"`
	Type    string                     `json:"type"`
	Server  bool                       `json:"server"`
	Params  map[string]json.RawMessage `json:"params"`
	Version int64                      `json:"version"`
	Runs    map[string]int             `json:"runs"`
}

type trigger struct {
	ID      string         `json:"id"`
	Trigger map[string]any `json:"trigger"`
	Targets []struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	} `json:"targets"`
	Enabled bool  `json:"enabled"`
	Version int64 `json:"version"`
}

type taskRun struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Attempt  int    `json:"attempt"`
	ExitCode *int   `json:"exit_code"`
	Output   string `json:"output"`
	Computer *struct {
		ID   string `json:"id"`
		Path string `json:"path"`
	} `json:"computer"`
	Attachment bool `json:"attachment"`
}

type waitResult struct {
	Complete bool      `json:"complete"`
	Runs     []taskRun `json:"runs"`
}

func TestTasks_DefinitionsAndTriggers(t *testing.T) {
	t.Parallel()
	h, f := startFull(t)
	h.ok("", "groups", "create", "Servers")
	webID := f.add("web-01", "Servers", true)

	out := h.ok("", "tasks", "types")
	if r := row(t, out, "run_command"); r[1] != "computers" || !strings.HasPrefix(r[2], "command*") {
		t.Errorf("types row %q", r)
	}
	if r := row(t, out, "delete_not_connecting"); r[1] != "server" {
		t.Errorf("types row %q", r)
	}
	if r := row(t, h.ok("", "tasks", "types", "run_command"), "timeout"); r[1] != "duration" || r[2] != "no" || r[3] != "60s" {
		t.Errorf("run_command timeout %q", r)
	}
	h.fails(2, `unknown task type "format_disk"`, "", "tasks", "types", "format_disk")

	// Parameters are typed by the task type.
	var cmd task
	h.jsonOut(&cmd, "", "tasks", "create", "uptime", "--type", "run_command", "--param", "command=uptime", "--param", "timeout=10s",
		"--description", "how long up")
	if cmd.Type != "run_command" || string(cmd.Params["command"]) != `"uptime"` || string(cmd.Params["timeout"]) != `"10s"` || cmd.Version != 1 {
		t.Fatalf("created %+v", cmd)
	}
	var scan task
	h.jsonOut(&scan, "", "tasks", "create", "scan", "--type", "scan", "--param", "paths=/srv", "--param", "paths=/home", "--param", "action=report")
	if compact(scan.Params["paths"]) != `["/srv","/home"]` || string(scan.Params["action"]) != `"report"` {
		t.Fatalf("scan params %s %s", scan.Params["paths"], scan.Params["action"])
	}
	var diag task
	h.jsonOut(&diag, "", "tasks", "create", "diag", "--type", "diagnostics", "--param", "max_bytes=1M")
	if string(diag.Params["max_bytes"]) != "1048576" {
		t.Fatalf("diag params %s", diag.Params["max_bytes"])
	}
	paramsFile := writeFile(t, "p.json", `{"days": 30}`)
	var forget task
	h.jsonOut(&forget, "", "tasks", "create", "forget", "--type", "delete_not_connecting", "--params", "@"+paramsFile)
	if !forget.Server || string(forget.Params["days"]) != "30" {
		t.Fatalf("server task %+v", forget)
	}
	h.fails(1, `unknown task type "format_disk"`, "", "tasks", "create", "x", "--type", "format_disk")
	h.fails(1, `unknown task type "format_disk"`, "", "tasks", "create", "x", "--type", "format_disk", "--param", "a=b")
	h.fails(1, "scan.paths: required", "", "tasks", "create", "x", "--type", "scan")
	h.fails(1, `run_command has no parameter "shell"`, "", "tasks", "create", "x", "--type", "run_command", "--param", "command=ls", "--param", "shell=bash")
	h.fails(1, "run_command.timeout", "", "tasks", "create", "x", "--type", "run_command", "--param", "command=ls", "--param", "timeout=2h")
	h.fails(2, "--param max_bytes must be a size", "", "tasks", "create", "x", "--type", "diagnostics", "--param", "max_bytes=lots")
	h.fails(2, "--param days must be a whole number", "", "tasks", "create", "x", "--type", "delete_not_connecting", "--param", "days=many")
	h.fails(2, "--type is required", "", "tasks", "create", "x")
	h.fails(2, "NAME=VALUE", "", "tasks", "create", "x", "--type", "scan", "--param", "paths")

	if out := h.ok("", "tasks", "list"); !strings.Contains(out, "uptime") || !strings.Contains(out, "delete_not_connecting") {
		t.Errorf("list:\n%s", out)
	}
	var tl list[task]
	h.jsonOut(&tl, "", "tasks", "list", "--type", "scan")
	if tl.Total != 1 || tl.Items[0].ID != scan.ID {
		t.Fatalf("--type scan %+v", tl)
	}

	// Update keeps what is not named; --unset-param brings a default back.
	h.jsonOut(&cmd, "", "tasks", "update", "uptime", "--param", "command=uptime -p")
	if cmd.Version != 2 || string(cmd.Params["command"]) != `"uptime -p"` || string(cmd.Params["timeout"]) != `"10s"` {
		t.Fatalf("updated %+v", cmd)
	}
	h.jsonOut(&cmd, "", "tasks", "update", cmd.ID, "--unset-param", "timeout", "--name", "up")
	if cmd.Name != "up" || string(cmd.Params["timeout"]) != `"60s"` {
		t.Fatalf("updated %+v", cmd)
	}
	h.fails(2, "nothing to change", "", "tasks", "update", "up")

	// Triggers.
	var tr trigger
	h.jsonOut(&tr, "", "tasks", "trigger", "add", "up", "--cron", "0 3 * * *", "--group", "Servers", "--random-delay", "10m")
	if tr.Trigger["kind"] != "cron" || tr.Trigger["cron"] != "0 3 * * *" || tr.Trigger["random_delay"] != "10m" || len(tr.Targets) != 1 ||
		tr.Targets[0].Type != "static_group" || !tr.Enabled {
		t.Fatalf("cron trigger %+v", tr)
	}
	var weekly trigger
	h.jsonOut(&weekly, "", "tasks", "trigger", "add", "up", "--kind", "weekly", "--weekdays", "mon,FRI", "--at", "03:30", "--time-zone", "Europe/Berlin",
		"--computer", "web-01", "--window", "22:00-06:00", "--disabled")
	if weekly.Trigger["kind"] != "weekly" || weekly.Enabled || weekly.Targets[0].ID != webID ||
		weekly.Trigger["throttle"].(map[string]any)["window"].(map[string]any)["from"] != "22:00" {
		t.Fatalf("weekly trigger %+v", weekly)
	}
	out = h.ok("", "tasks", "trigger", "list", "up")
	if r := row(t, out, tr.ID); r[1] != "cron 0 3 * * *, random delay 10m" || r[2] != "group All/Servers" || r[3] != "yes" {
		t.Errorf("trigger row %q", r)
	}
	if r := row(t, out, weekly.ID); !strings.HasPrefix(r[1], "weekly on mon,fri at 03:30 Europe/Berlin, throttled") || r[2] != "computer web-01" || r[3] != "no" {
		t.Errorf("trigger row %q", r)
	}
	if out := h.ok("", "tasks", "show", "up"); !strings.Contains(out, "command") || !strings.Contains(out, tr.ID) || !strings.Contains(out, "uptime -p") {
		t.Errorf("show:\n%s", out)
	}
	cronID := tr.ID
	tr = trigger{} // decoding into a map merges: start afresh
	h.jsonOut(&tr, "", "tasks", "trigger", "update", "up", cronID, "--cron", "30 4 * * *", "--disable")
	if tr.Trigger["cron"] != "30 4 * * *" || tr.Enabled || tr.Version != 2 || tr.Trigger["random_delay"] != "10m" {
		t.Fatalf("updated trigger %+v", tr)
	}
	tr = trigger{}
	h.jsonOut(&tr, "", "tasks", "trigger", "update", "up", cronID, "--kind", "monthly", "--nth-weekday", "last:fri", "--at", "05:00", "--enable",
		"--random-delay", "", "--computer", "web-01")
	if tr.Trigger["kind"] != "monthly" || tr.Trigger["cron"] != nil || tr.Trigger["random_delay"] != nil || !tr.Enabled ||
		tr.Trigger["nth_weekday"].(map[string]any)["n"] != float64(-1) || tr.Targets[0].Type != "computer" {
		t.Fatalf("changed kind %+v", tr)
	}
	h.fails(1, "trigger: cron", "", "tasks", "trigger", "add", "up", "--cron", "61 * * * *", "--group", "Servers")
	h.fails(1, "kind must be one of", "", "tasks", "trigger", "add", "up", "--kind", "hourly", "--group", "Servers")
	h.fails(1, "at must be a time of day", "", "tasks", "trigger", "add", "up", "--kind", "daily", "--at", "25:00", "--group", "Servers")
	h.fails(1, "time_zone", "", "tasks", "trigger", "add", "up", "--kind", "daily", "--at", "03:00", "--time-zone", "Mars/Olympus", "--group", "Servers")
	h.fails(1, "targets are required", "", "tasks", "trigger", "add", "up", "--kind", "daily", "--at", "03:00")
	h.fails(1, "a server task has no targets", "", "tasks", "trigger", "add", "forget", "--kind", "daily", "--at", "03:00", "--group", "Servers")
	h.fails(1, `dynamic group "nope" not found`, "", "tasks", "trigger", "add", "up", "--joined-group", "nope")
	h.fails(2, "say when the task runs", "", "tasks", "trigger", "add", "up", "--group", "Servers")
	h.fails(2, "--nth-weekday must be N:DAY", "", "tasks", "trigger", "update", "up", tr.ID, "--nth-weekday", "2")
	h.fails(2, "different kinds", "", "tasks", "trigger", "add", "up", "--cron", "0 3 * * *", "--event", "agent_connected")
	h.fails(1, "trigger not found", "", "tasks", "trigger", "update", "up", "nope", "--enable")
	h.fails(1, `task "nope" not found`, "", "tasks", "trigger", "list", "nope")
	if out := h.ok("", "tasks", "trigger", "delete", "up", weekly.ID); !strings.Contains(out, "Trigger "+weekly.ID+" of task up deleted.") {
		t.Errorf("delete said %q", out)
	}
	var trl list[trigger]
	h.jsonOut(&trl, "", "tasks", "trigger", "list", "up")
	if trl.Total != 1 {
		t.Fatalf("triggers %+v", trl)
	}

	// Names: ambiguous names are refused, ids always work; delete.
	var dup task
	h.jsonOut(&dup, "", "tasks", "create", "scan", "--type", "engine_update")
	h.fails(1, `2 tasks are named "scan"; give the id`, "", "tasks", "show", "scan")
	h.ok("", "tasks", "delete", dup.ID)
	if out := h.ok("", "tasks", "delete", "up"); !strings.Contains(out, "Task up deleted.") {
		t.Errorf("delete said %q", out)
	}
	h.fails(1, `task "up" not found`, "", "tasks", "show", "up")
}

func TestTasks_RunWaitAndRuns(t *testing.T) {
	t.Parallel()
	h, f := startFull(t)
	h.ok("", "groups", "create", "Servers")
	webID := f.add("web-01", "Servers", true)
	f.add("bad-01", "Servers", true)
	f.add("off-01", "Lost & Found", false)
	h.ok("", "tasks", "create", "uptime", "--type", "run_command", "--param", "command=uptime")

	// One of two fails: every result is shown, the exit status is 1.
	r := h.fails(1, "1 of 2 runs did not succeed", "", "tasks", "run", "uptime", "--group", "Servers", "--wait")
	if got := row(t, r.stdout, "bad-01"); got[1] != "failed" || got[2] != "3" {
		t.Errorf("bad-01 row %q", got)
	}
	if got := row(t, r.stdout, "web-01"); got[1] != "succeeded" || got[2] != "0" {
		t.Errorf("web-01 row %q", got)
	}
	for _, want := range []string{"== web-01: succeeded, exit code 0\nweb-01: uptime\n", "== bad-01: failed, exit code 3\nbad-01: no such command\nerror: exit status 3\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}

	// All succeed: exit 0; --json gives the runs' JSON.
	var w waitResult
	h.jsonOut(&w, "", "tasks", "run", "uptime", "--computer", "web-01", "--wait")
	if !w.Complete || len(w.Runs) != 1 || w.Runs[0].State != "succeeded" || w.Runs[0].Output != "web-01: uptime\n" || w.Runs[0].Computer.ID != webID {
		t.Fatalf("waited %+v", w)
	}

	// A dynamic group target, by name.
	h.ok("", "dynamic-groups", "create", "Web", "--template", webTemplate)
	h.eventually("the members of Web", func() bool {
		var g dynGroup
		h.jsonOut(&g, "", "dynamic-groups", "show", "Web")
		return g.Members == 1
	})
	h.jsonOut(&w, "", "tasks", "run", "uptime", "--dynamic-group", "Web", "--wait", "--json")
	if len(w.Runs) != 1 || w.Runs[0].Computer.Path != "web-01" {
		t.Fatalf("dynamic group run %+v", w)
	}

	// Without --wait: the run-now is acknowledged.
	if out := h.ok("", "tasks", "run", "uptime", "--computer", "web-01"); !strings.Contains(out, "Task uptime will run on computer web-01 (trigger ") {
		t.Errorf("run said %q", out)
	}

	// An offline computer: the wait times out with the run still planned.
	r = h.fails(1, "timed out after 2s: 1 of 1 runs not finished", "", "tasks", "run", "uptime", "--computer", "off-01", "--wait", "--timeout", "2s")
	if got := row(t, r.stdout, "off-01"); got[1] != "planned" || got[2] != "-" {
		t.Errorf("off-01 row %q", got)
	}
	if !strings.Contains(r.stderr, "waiting for 1 of 1 runs: 1 planned (planned: not handed to their computer yet") {
		t.Errorf("the wait does not say what it waits for: %q", r.stderr)
	}

	// Runs list, with filters.
	var runs list[taskRun]
	h.jsonOut(&runs, "", "tasks", "runs", "uptime", "--state", "failed")
	if runs.Total != 1 || runs.Items[0].Computer.Path != "bad-01" {
		t.Fatalf("failed runs %+v", runs)
	}
	failed := runs.Items[0]
	h.eventually("4 runs on web-01", func() bool {
		h.jsonOut(&runs, "", "tasks", "runs", "uptime", "--computer", "web-01")
		return runs.Total == 4
	})
	if out := h.ok("", "tasks", "runs", "uptime"); !strings.Contains(out, "off-01") || !strings.Contains(out, "planned") {
		t.Errorf("runs:\n%s", out)
	}
	h.fails(1, "state must be", "", "tasks", "runs", "uptime", "--state", "odd")

	// task-runs: show, retry, cancel.
	out := h.ok("", "task-runs", "show", failed.ID)
	for _, want := range []string{"task:", "uptime (", "state:", "failed", "exit code:", "output:\nbad-01: no such command\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	var retry taskRun
	h.jsonOut(&retry, "", "task-runs", "retry", failed.ID)
	if retry.Attempt != 2 || retry.ID == failed.ID {
		t.Fatalf("retry %+v", retry)
	}
	h.fails(1, "only failed, expired or cancelled runs are retried", "", "task-runs", "retry", w.Runs[0].ID)
	h.ok("", "tasks", "create", "sleeper", "--type", "run_command", "--param", "command=sleep")
	r = h.fails(1, "timed out", "", "tasks", "run", "sleeper", "--computer", "web-01", "--wait", "--timeout", "1s")
	running := row(t, r.stdout, "web-01")
	if running[1] != "running" {
		t.Fatalf("sleeper row %q", running)
	}
	if out := h.ok("", "task-runs", "cancel", running[3]); !strings.Contains(out, "Run "+running[3]+" on web-01 cancelled.") {
		t.Errorf("cancel said %q", out)
	}
	h.fails(1, "already cancelled", "", "task-runs", "cancel", running[3])
	h.fails(1, "not found", "", "task-runs", "show", "nope")

	// A server task runs once on the server.
	h.ok("", "tasks", "create", "forget", "--type", "delete_not_connecting", "--param", "days=30")
	if out := h.ok("", "tasks", "run", "forget", "--wait"); row(t, out, "(server)")[1] != "succeeded" {
		t.Errorf("server run:\n%s", out)
	}
	h.fails(1, "no targets", "", "tasks", "run", "forget", "--computer", "web-01")
	h.fails(1, `computer "nope" not found`, "", "tasks", "run", "uptime", "--computer", "nope")
	h.fails(1, `task "nope" not found`, "", "tasks", "run", "nope", "--computer", "web-01")
}

func TestTaskRuns_Download(t *testing.T) {
	t.Parallel()
	h, f := startFull(t)
	f.add("web-01", "Lost & Found", true)
	h.ok("", "tasks", "create", "diag", "--type", "diagnostics")
	var w waitResult
	h.jsonOut(&w, "", "tasks", "run", "diag", "--computer", "web-01", "--wait")
	if len(w.Runs) != 1 || !w.Runs[0].Attachment {
		t.Fatalf("diagnostics run %+v", w)
	}
	id := w.Runs[0].ID
	dir := t.TempDir()
	file := filepath.Join(dir, "bundle.tar.gz")
	if out := h.ok("", "task-runs", "download", id, "--file", file); out != "Saved 16 bytes to "+file+".\n" {
		t.Errorf("download said %q", out)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "bundle of web-01" {
		t.Fatalf("downloaded %q, %v", b, err)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	// An existing file is kept unless --force.
	if err := os.WriteFile(file, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.fails(1, file+" exists; give --force to overwrite it", "", "task-runs", "download", id, "--file", file)
	if b, _ := os.ReadFile(file); string(b) != "mine" {
		t.Fatalf("overwritten without --force: %q", b)
	}
	h.ok("", "task-runs", "download", id, "--file", file, "--force")
	if b, _ := os.ReadFile(file); string(b) != "bundle of web-01" {
		t.Fatalf("after --force: %q", b)
	}
	if out := h.ok("", "task-runs", "download", id, "--file", "-"); out != "bundle of web-01" {
		t.Errorf("to stdout: %q", out)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left behind %v", entries)
	}
	// A run without an attachment.
	h.ok("", "tasks", "create", "uptime", "--type", "run_command", "--param", "command=uptime")
	h.jsonOut(&w, "", "tasks", "run", "uptime", "--computer", "web-01", "--wait")
	h.fails(1, "this run has no attachment", "", "task-runs", "download", w.Runs[0].ID, "--file", filepath.Join(dir, "x"))
	if _, err := os.Stat(filepath.Join(dir, "x")); !os.IsNotExist(err) {
		t.Errorf("a failed download left a file (%v)", err)
	}
	h.fails(2, "missing arguments", "", "task-runs", "download")
}

func TestManagementUsageErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.env["MAMORI_SERVER_URL"] = "https://127.0.0.1:1"
	h.env["MAMORI_TOKEN"] = "mmt_x" // nothing below reaches the server
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"dynamic-groups"}, "usage: mamori dynamic-groups list|show|create|update|delete|members|preview"},
		{[]string{"dynamic-groups", "frobnicate"}, `unknown subcommand "frobnicate"`},
		{[]string{"dynamic-groups", "show"}, "missing arguments"},
		{[]string{"dynamic-groups", "create", "x"}, "--template is required"},
		{[]string{"dynamic-groups", "preview", "--template", "[1,"}, "not valid JSON"},
		{[]string{"dynamic-groups", "list", "--nope"}, "flag provided but not defined: -nope"},
		{[]string{"policies"}, "usage: mamori policies list|show|create|update|delete|schema|assign|unassign|rank"},
		{[]string{"policies", "create"}, "missing arguments"},
		{[]string{"policies", "create", "x"}, "give --product"},
		{[]string{"policies", "create", "x", "--set", "noequals"}, "must be KEY=VALUE"},
		{[]string{"policies", "create", "x", "--set", "a.b.c=1"}, "KEY must be PRODUCT.SETTING"},
		{[]string{"policies", "create", "x", "--product", "agent", "--set", "protection.max_file_size=1"}, "--product is agent but the settings name protection"},
		{[]string{"policies", "assign", "p", "--group", "A", "--computer", "c"}, "give one of"},
		{[]string{"policies", "unassign", "p"}, "give the assignment id"},
		{[]string{"policies", "rank", "p", "a", "--group", "A"}, "give the assignment id, or one of"},
		{[]string{"policies", "update", "p"}, "nothing to change"},
		{[]string{"computers", "effective-config"}, "missing arguments"},
		{[]string{"tasks"}, "usage: mamori tasks types|list|show|create|update|delete|run|runs|trigger"},
		{[]string{"tasks", "trigger"}, "usage: mamori tasks trigger add|list|update|delete"},
		{[]string{"tasks", "trigger", "remove"}, `unknown subcommand "remove" of tasks trigger`},
		{[]string{"tasks", "trigger", "add", "t"}, "say when the task runs"},
		{[]string{"tasks", "trigger", "update", "t"}, "missing arguments"},
		{[]string{"tasks", "trigger", "update", "t", "id"}, "nothing to change"},
		{[]string{"tasks", "trigger", "update", "t", "id", "--enable", "--disable"}, "not both"},
		{[]string{"tasks", "create", "x"}, "--type is required"},
		{[]string{"tasks", "run"}, "missing arguments"},
		{[]string{"tasks", "run", "t", "--wait", "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"tasks", "runs", "t", "--limit", "x"}, "invalid value"},
		{[]string{"tasks", "list", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"task-runs"}, "usage: mamori task-runs show|cancel|retry|download"},
		{[]string{"task-runs", "show"}, "missing arguments"},
		{[]string{"task-runs", "cancel", "a", "b"}, "unexpected arguments"},
		{[]string{"tasks", "list", "--json", "--output", "yaml"}, "--output must be text or json"},
		{[]string{"policies", "schema", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"task-runs", "show", "r1", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"computers", "effective-config", "c", "--bogus"}, "flag provided but not defined: -bogus"},
	} {
		r := h.run("", tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("mamori %s: exit %d, stderr %q; want 2 and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.msg)
		}
	}
	// An existing file is refused before anything is downloaded.
	file := writeFile(t, "bundle", "mine")
	h.fails(1, "exists; give --force", "", "task-runs", "download", "r1", "--file", file)
}
