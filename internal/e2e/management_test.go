package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

type taskRun struct {
	ID       string
	State    string
	ExitCode *int   `json:"exit_code"`
	Output   string `json:"output"`
	Error    string `json:"error"`
	Computer *struct{ ID, Path string }
}

// runsOf lists a task's runs.
func (c *apiClient) runsOf(t *testing.T, taskID string) []taskRun {
	t.Helper()
	var r struct{ Items []taskRun }
	if code := c.do(t, "GET", "/api/v1/tasks/"+taskID+"/runs?limit=1000", nil, &r); code != 200 {
		t.Fatalf("runs of %s: %d", taskID, code)
	}
	return r.Items
}

// createTask makes a task and returns its id.
func (c *apiClient) createTask(t *testing.T, body string) string {
	t.Helper()
	var task struct{ ID string }
	var raw any
	_ = json.Unmarshal([]byte(body), &raw)
	if code := c.do(t, "POST", "/api/v1/tasks", raw, &task); code != 201 {
		t.Fatalf("create task %s: %d", body, code)
	}
	return task.ID
}

// runNow runs a task on targets.
func (c *apiClient) runNow(t *testing.T, taskID, body string) {
	t.Helper()
	var raw any
	_ = json.Unmarshal([]byte(body), &raw)
	if code := c.do(t, "POST", "/api/v1/tasks/"+taskID+"/run", raw, nil); code != 202 {
		t.Fatalf("run task %s: %d", taskID, code)
	}
}

// finished waits until every run of a task reached a final state.
func (c *apiClient) finished(t *testing.T, taskID string, want int, timeout time.Duration) []taskRun {
	t.Helper()
	var runs []taskRun
	waitFor(t, timeout, "runs of "+taskID+" finished", func() (bool, string) {
		runs = c.runsOf(t, taskID)
		done := 0
		for _, r := range runs {
			switch r.State {
			case "succeeded", "failed", "expired", "cancelled":
				done++
			}
		}
		return len(runs) == want && done == want, fmt.Sprintf("%d runs, %d finished", len(runs), done)
	})
	return runs
}

func TestTasks_ScanOnADynamicGroupFindsEICAROnTheOneComputerInIt(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	tok := s.token()
	for _, name := range []string{"infected", "clean"} {
		s.agent(t, filepath.Join(t.TempDir(), name), nil, append(s.enrollArgs(tok), "--instance", name)...)
	}
	infected, _ := s.api.waitStatus(t, "infected", "online", 20*time.Second)
	clean, _ := s.api.waitStatus(t, "clean", "online", 20*time.Second)

	// The dynamic group holds the computers tagged "suspicious".
	if code := s.api.do(t, "POST", "/api/v1/computers/"+infected.ID+"/tags", map[string]string{"tag": "suspicious"}, nil); code != 201 && code != 200 {
		t.Fatalf("tag: %d", code)
	}
	var dg struct{ ID string }
	if code := s.api.do(t, "POST", "/api/v1/dynamic-groups", map[string]any{"name": "Suspicious", "parent": "All",
		"template": map[string]any{"op": "and", "rules": []any{map[string]string{"field": "tag", "operator": "=", "value": "suspicious"}}}}, &dg); code != 201 {
		t.Fatalf("dynamic group: %d", code)
	}
	waitFor(t, 20*time.Second, "dynamic group membership", func() (bool, string) {
		var m struct{ Items []struct{ ID string } }
		s.api.do(t, "GET", "/api/v1/dynamic-groups/"+dg.ID+"/members", nil, &m)
		return len(m.Items) == 1 && m.Items[0].ID == infected.ID, fmt.Sprint(m.Items)
	})

	files := t.TempDir()
	if err := os.WriteFile(filepath.Join(files, "eicar.com"), []byte(eicar), 0o644); err != nil {
		t.Fatal(err)
	}
	// The task names no action: the computers' policy (report only) decides.
	s.api.policyOnAll(t, "Report only", "protection", "action_on_detection", "apply", "report")
	waitConfig(t, s, infected.ID, 20*time.Second, "the policy applied on the infected computer",
		func(e effectiveConfig) bool { return e.Version != "" && e.AppliedVersion == e.Version })
	task := s.api.createTask(t, fmt.Sprintf(`{"name":"Scan suspicious","type":"scan","params":{"paths":[%q]}}`, files))
	s.api.runNow(t, task, `{"targets":[{"type":"dynamic_group","id":"`+dg.ID+`"}]}`)
	runs := s.api.finished(t, task, 1, 60*time.Second)
	if r := runs[0]; r.State != "succeeded" || r.Computer == nil || r.Computer.ID != infected.ID || !strings.Contains(r.Output, "eicar.com") {
		t.Fatalf("scan run %+v", r)
	}
	var list struct {
		Items []detection
		Total int
	}
	waitFor(t, 20*time.Second, "detection reported", func() (bool, string) {
		s.api.do(t, "GET", "/api/v1/detections?computer="+infected.ID, nil, &list)
		return list.Total == 1, "none yet"
	})
	if d := list.Items[0]; d.Signature != "EICAR-Test-File" || !strings.HasSuffix(d.Path, "eicar.com") || d.Action != "reported" {
		t.Fatalf("detection %+v", d)
	}
	if _, err := os.Stat(filepath.Join(files, "eicar.com")); err != nil {
		t.Fatalf("the policy says report, yet the file is gone: %v", err)
	}
	if n := len(s.api.runsOf(t, task)); n != 1 {
		t.Fatalf("%d runs; the clean computer is not in the group", n)
	}
	if got := s.api.computer(t, clean.ID); got.UnresolvedDetections != 0 {
		t.Fatal("the clean computer has detections")
	}
}

func TestTasks_RunCommandOutputAndAnOfflineAgentGetsOnlyUnexpiredRuns(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	tok := s.token()
	stateA, stateB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	s.agent(t, stateA, nil, append(s.enrollArgs(tok), "--instance", "cmd-a")...)
	agentB := s.agent(t, stateB, nil, append(s.enrollArgs(tok), "--instance", "cmd-b")...)
	a, _ := s.api.waitStatus(t, "cmd-a", "online", 20*time.Second)
	b, _ := s.api.waitStatus(t, "cmd-b", "online", 20*time.Second)

	echo := s.api.createTask(t, `{"name":"echo","type":"run_command","params":{"command":"echo hello-$((40+2)); exit 3"}}`)
	s.api.runNow(t, echo, `{"targets":[{"type":"computer","id":"`+a.ID+`"}]}`)
	r := s.api.finished(t, echo, 1, 30*time.Second)[0]
	if r.State != "failed" || r.ExitCode == nil || *r.ExitCode != 3 || r.Output != "hello-42\n" || r.Error != "exit status 3" {
		t.Fatalf("run %+v", r)
	}

	// B goes offline; one run expires while it is away, one does not.
	agentB.stop()
	s.api.waitStatus(t, "cmd-b", "offline", 20*time.Second)
	marker := filepath.Join(t.TempDir(), "ran")
	short := s.api.createTask(t, fmt.Sprintf(`{"name":"short-lived","type":"run_command","params":{"command":"echo short >> %s"}}`, marker))
	long := s.api.createTask(t, fmt.Sprintf(`{"name":"long-lived","type":"run_command","params":{"command":"echo long >> %s"}}`, marker))
	s.api.runNow(t, short, `{"targets":[{"type":"computer","id":"`+b.ID+`"}],"expiry":"10s"}`)
	s.api.runNow(t, long, `{"targets":[{"type":"computer","id":"`+b.ID+`"}],"expiry":"1h"}`)
	if st := s.api.finished(t, short, 1, 30*time.Second)[0].State; st != "expired" {
		t.Fatalf("short-lived run %s, want expired", st)
	}
	if st := s.api.runsOf(t, long)[0].State; st != "planned" {
		t.Fatalf("long-lived run %s while the agent is away, want planned", st)
	}
	s.agent(t, stateB, nil)
	if st := s.api.finished(t, long, 1, 30*time.Second)[0].State; st != "succeeded" {
		t.Fatalf("long-lived run %s after reconnecting", st)
	}
	if b, _ := os.ReadFile(marker); string(b) != "long\n" {
		t.Fatalf("commands run on B: %q (the expired one must not run)", b)
	}
}

func TestPolicies_AChangeReachesConnectedAgentsWithinSecondsAndForcedValuesCannotBeOverridden(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	state := filepath.Join(t.TempDir(), "agent")
	s.agent(t, state, nil, append(s.enrollArgs(s.token()), "--instance", "configured")...)
	c, _ := s.api.waitStatus(t, "configured", "online", 20*time.Second)

	var pol struct {
		ID      string
		Version int64
	}
	if code := s.api.do(t, "POST", "/api/v1/policies", map[string]any{"name": "Agents", "product": "agent",
		"settings": map[string]any{"log_level": map[string]string{"flag": "force", "value": "warn"},
			"check_in_interval": map[string]string{"flag": "apply", "value": "45s"}}}, &pol); code != 201 {
		t.Fatalf("create policy: %d", code)
	}
	// A value outside the schema is refused with the field named.
	var bad map[string]any
	if code := s.api.do(t, "PATCH", "/api/v1/policies/"+pol.ID, map[string]any{"version": pol.Version,
		"settings": map[string]any{"check_in_interval": map[string]string{"flag": "apply", "value": "2s"}}}, &bad); code != 400 {
		t.Fatalf("out-of-schema value: %d", code)
	}
	start := time.Now()
	if code := s.api.do(t, "POST", "/api/v1/policies/"+pol.ID+"/assignments", map[string]any{"target_type": "static", "target": "All"}, nil); code != 201 {
		t.Fatalf("assign: %d", code)
	}
	eff, took := waitConfig(t, s, c.ID, 15*time.Second, "configuration applied", func(e effectiveConfig) bool { return e.Version != "" && e.AppliedVersion == e.Version })
	t.Logf("policy applied by the agent %s after assigning it (%s since the request)", took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if eff.AgentError != "" {
		t.Fatalf("agent error %q", eff.AgentError)
	}
	show := func() string {
		out, err := exec.Command(bin("mamori-agent"), "config", "show", "--state", state).CombinedOutput()
		if err != nil {
			t.Fatalf("config show: %v\n%s", err, out)
		}
		return string(out)
	}
	out := show()
	if !strings.Contains(out, eff.Version) || !regexpLine(out, `agent\.log_level\s+"warn"\s+forced`) || !regexpLine(out, `agent\.check_in_interval\s+"45s"\s+policy`) {
		t.Fatalf("config show:\n%s", out)
	}
	// Forced values cannot be set locally; applied ones can.
	cmd := exec.Command(bin("mamori-agent"), "config", "set", "--state", state, "agent.log_level", "debug")
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "forced") {
		t.Fatalf("setting a forced value: %v %s", err, b)
	}
	// Flags may come last too.
	if b, err := exec.Command(bin("mamori-agent"), "config", "set", "agent.check_in_interval", "20s", "--state", state).CombinedOutput(); err != nil {
		t.Fatalf("setting a local value: %v %s", err, b)
	}
	if out := show(); !regexpLine(out, `agent\.check_in_interval\s+"20s"\s+local`) {
		t.Fatalf("config show after a local change:\n%s", out)
	}
	// Removing the assignment reverts to the defaults, pushed again.
	var as struct {
		Items []struct {
			ID      string
			Version int64
		}
	}
	s.api.do(t, "GET", "/api/v1/policies/"+pol.ID+"/assignments", nil, &as)
	if code := s.api.do(t, "DELETE", fmt.Sprintf("/api/v1/policies/%s/assignments/%s?version=%d", pol.ID, as.Items[0].ID, as.Items[0].Version), nil, nil); code != 204 {
		t.Fatalf("unassign: %d", code)
	}
	first := eff.Version
	waitConfig(t, s, c.ID, 15*time.Second, "defaults applied", func(e effectiveConfig) bool { return e.Version != first && e.AppliedVersion == e.Version })
	if out := show(); !regexpLine(out, `agent\.log_level\s+"info"\s+default`) {
		t.Fatalf("config show after unassigning:\n%s", out)
	}
}

// effectiveConfig is what GET /api/v1/computers/{id}/effective-config says
// of the configuration versions.
type effectiveConfig struct {
	Version        string `json:"version"`
	AppliedVersion string `json:"applied_version"`
	AgentError     string `json:"agent_error"`
}

// policyOnAll creates a policy setting one key of product (flag apply or
// force) and assigns it to All; it returns the policy's id.
func (c *apiClient) policyOnAll(t *testing.T, name, product, key, flag, value string) string {
	t.Helper()
	var pol struct{ ID string }
	if code := c.do(t, "POST", "/api/v1/policies", map[string]any{"name": name, "product": product,
		"settings": map[string]any{key: map[string]string{"flag": flag, "value": value}}}, &pol); code != 201 {
		t.Fatalf("create policy %s: %d", name, code)
	}
	if code := c.do(t, "POST", "/api/v1/policies/"+pol.ID+"/assignments", map[string]any{"target_type": "static", "target": "All"}, nil); code != 201 {
		t.Fatalf("assign %s: %d", name, code)
	}
	return pol.ID
}

// waitConfig polls a computer's effective configuration until ok holds
// (within timeout) and returns it with the time it took.
func waitConfig(t *testing.T, s *server, id string, timeout time.Duration, what string, ok func(effectiveConfig) bool) (effectiveConfig, time.Duration) {
	t.Helper()
	var eff effectiveConfig
	took := waitFor(t, timeout, what, func() (bool, string) {
		s.api.do(t, "GET", "/api/v1/computers/"+id+"/effective-config", nil, &eff)
		return ok(eff), fmt.Sprintf("%+v", eff)
	})
	return eff, took
}

// regexpLine reports whether some line of s matches expr.
func regexpLine(s, expr string) bool {
	re := regexp.MustCompile(expr)
	for _, l := range strings.Split(s, "\n") {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}

func TestTasks_DiagnosticsRestartAndStopManagingOnARealAgent(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	state := filepath.Join(t.TempDir(), "agent")
	powerLog := filepath.Join(t.TempDir(), "power.log")
	power := filepath.Join(t.TempDir(), "power.sh")
	if err := os.WriteFile(power, []byte("#!/bin/sh\necho \"$@\" >> "+powerLog+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	agent := s.agent(t, state, []string{"MAMORI_POWER_COMMAND=" + power}, append(s.enrollArgs(s.token()), "--instance", "managed")...)
	c, _ := s.api.waitStatus(t, "managed", "online", 20*time.Second)
	target := `{"targets":[{"type":"computer","id":"` + c.ID + `"}]}`

	// Diagnostics: a bundle uploaded to the server, downloadable.
	diag := s.api.createTask(t, `{"name":"diag","type":"diagnostics"}`)
	s.api.runNow(t, diag, target)
	r := s.api.finished(t, diag, 1, 30*time.Second)[0]
	if r.State != "succeeded" {
		t.Fatalf("diagnostics run %+v", r)
	}
	resp, err := s.api.http.Get(s.api.base + "/api/v1/task-runs/" + r.ID + "/attachment")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(body) < 100 || body[0] != 0x1f || body[1] != 0x8b {
		t.Fatalf("attachment: %d, %d bytes", resp.StatusCode, len(body))
	}
	gz, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var names []string
	var agentLog string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
		b, _ := io.ReadAll(tr)
		if bytes.Contains(b, []byte("PRIVATE KEY")) {
			t.Fatalf("%s carries a private key", h.Name)
		}
		if h.Name == "agent-log.txt" {
			agentLog = string(b)
		}
	}
	if !slices.Contains(names, "status.json") || !slices.Contains(names, "identity-public.json") {
		t.Fatalf("bundle holds %v", names)
	}
	// The agent's recent log travels with it (the agent logs to a console
	// no one can fetch remotely).
	if !strings.Contains(agentLog, "level=INFO") || !strings.Contains(agentLog, "diagnostics") {
		t.Fatalf("agent-log.txt in the bundle:\n%s", agentLog)
	}

	// Restart through the power command.
	rs := s.api.createTask(t, `{"name":"reboot","type":"restart","params":{"delay":"2m","reason":"patching"}}`)
	s.api.runNow(t, rs, target)
	if r := s.api.finished(t, rs, 1, 30*time.Second)[0]; r.State != "succeeded" {
		t.Fatalf("restart run %+v", r)
	}
	if b, _ := os.ReadFile(powerLog); string(b) != "restart 120 patching\n" {
		t.Fatalf("power command got %q", b)
	}

	// Stop managing: the agent reports, removes its state and exits; the
	// computer is no longer managed.
	stop := s.api.createTask(t, `{"name":"bye","type":"stop_managing"}`)
	s.api.runNow(t, stop, target)
	if r := s.api.finished(t, stop, 1, 30*time.Second)[0]; r.State != "succeeded" {
		t.Fatalf("stop_managing run %+v", r)
	}
	if code := agent.wait(30 * time.Second); code != 0 {
		t.Fatalf("agent exit %d:\n%s", code, agent.output())
	}
	if entries, _ := os.ReadDir(state); len(entries) != 0 {
		t.Fatalf("state left behind: %v", entries)
	}
	if got := s.api.computer(t, c.ID); !got.Revoked {
		t.Fatal("the computer is still managed")
	}
}

// An agent that was away when its policy changed gets the new configuration
// as it reconnects; an agent that reconnects with the current one is not
// sent it again.
func TestPolicies_AnAgentAwayDuringAChangeGetsItOnReconnectAndNoMore(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	state := filepath.Join(t.TempDir(), "agent")
	a := s.agent(t, state, nil, append(s.enrollArgs(s.token()), "--instance", "away")...)
	c, _ := s.api.waitStatus(t, "away", "online", 20*time.Second)
	eff, _ := waitConfig(t, s, c.ID, 15*time.Second, "first configuration applied", func(e effectiveConfig) bool { return e.Version != "" && e.AppliedVersion == e.Version })
	a.stop()
	s.api.waitStatus(t, "away", "offline", 20*time.Second)

	s.api.policyOnAll(t, "While away", "agent", "check_in_interval", "apply", "50s")
	old := eff.Version
	waitConfig(t, s, c.ID, 15*time.Second, "new version computed", func(e effectiveConfig) bool { return e.Version != old })
	// (The version shown is computed when asked; the recorded one may
	// follow a moment later, and is then pushed as a change: the agent
	// may get the new configuration twice, which it applies once.)
	a = s.agent(t, state, nil)
	waitConfig(t, s, c.ID, 20*time.Second, "new configuration applied after reconnecting", func(e effectiveConfig) bool { return e.AppliedVersion == e.Version && e.Version != old })

	// Reconnecting with the current version: nothing is pushed.
	time.Sleep(time.Second) // a push of the change still on its way arrives
	a.stop()
	s.api.waitStatus(t, "away", "offline", 20*time.Second)
	pushed := s.api.metric(t, `mamori_pushes_total{kind="configuration"}`)
	s.agent(t, state, nil)
	s.api.waitStatus(t, "away", "online", 20*time.Second)
	time.Sleep(time.Second) // a push would follow the Welcome at once
	if got := s.api.metric(t, `mamori_pushes_total{kind="configuration"}`); got != pushed {
		t.Fatalf("configuration pushes %v → %v on reconnecting with the current version, want none", pushed, got)
	}
}
