package e2e

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runJSON runs a mamori command and decodes its JSON output.
func runJSON(t *testing.T, args ...string) map[string]any {
	t.Helper()
	out, err := exec.Command(bin("mamori"), args...).Output()
	if err != nil {
		t.Fatalf("mamori %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("mamori %s output %q: %v", strings.Join(args, " "), out, err)
	}
	return m
}

// hdbFor is a ClamAV-format hash signature for content.
func hdbFor(content, name string) string {
	sum := md5.Sum([]byte(content))
	return fmt.Sprintf("%s:%d:%s\n", hex.EncodeToString(sum[:]), len(content), name)
}

// agentEngine reads the engine fields of a computer's agent inventory.
type agentEngine struct {
	Version     string `json:"engine_version"` // uint64 in protojson: a string
	Builtin     bool   `json:"engine_builtin"`
	State       string `json:"engine_update_state"`
	LastSuccess string `json:"engine_last_success_unix"`
	LastError   string `json:"engine_last_error"`
	Published   string `json:"engine_published_unix"`
}

// engineFlag is the computer's engine as the API lists it.
type engineFlag struct {
	Version     uint64 `json:"version"`
	UpdateState string `json:"update_state"`
	Latest      uint64 `json:"latest"`
	Outdated    bool   `json:"outdated"`
}

func (c *apiClient) engineFlagOf(t *testing.T, id string) *engineFlag {
	t.Helper()
	var r struct{ Engine *engineFlag }
	if code := c.do(t, "GET", "/api/v1/computers/"+id, nil, &r); code != 200 {
		t.Fatalf("computer %s: %d", id, code)
	}
	return r.Engine
}

// outdated lists the ids of ?engine=outdated.
func (c *apiClient) outdated(t *testing.T) []string {
	t.Helper()
	var r struct{ Items []struct{ ID string } }
	if code := c.do(t, "GET", "/api/v1/computers?engine=outdated", nil, &r); code != 200 {
		t.Fatalf("outdated computers: %d", code)
	}
	var ids []string
	for _, it := range r.Items {
		ids = append(ids, it.ID)
	}
	return ids
}

func (c *apiClient) engineOf(t *testing.T, id string) agentEngine {
	t.Helper()
	var e agentEngine
	if raw := c.computer(t, id).Inventory["agent"]; raw != nil {
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("agent section %s: %v", raw, err)
		}
	}
	return e
}

// newRepo makes a publisher's repository (`mamori repo init`) and publishes
// a first release of the hash signatures hdb from its signature folder.
func newRepo(t *testing.T, hdb string) (repoDir, pin, sigs string, version float64) {
	t.Helper()
	dir := t.TempDir()
	repoDir, sigs = filepath.Join(dir, "repo"), filepath.Join(dir, "sigs")
	pin, _ = runJSON(t, "repo", "init", "--repo", repoDir, "--json")["root_sha256"].(string)
	if len(pin) != 64 {
		t.Fatalf("repo init gave no root pin")
	}
	os.MkdirAll(sigs, 0o755)
	if err := os.WriteFile(filepath.Join(sigs, "test.hdb"), []byte(hdb), 0o644); err != nil {
		t.Fatal(err)
	}
	version = runJSON(t, "repo", "publish", "--repo", repoDir, "--from", sigs, "--json")["version"].(float64)
	return repoDir, pin, sigs, version
}

// A publisher's repository feeds the server's built-in mirror; an agent
// with no update source configured takes the mirror from its server, pins
// the root the server announced, updates on its schedule, takes a delta by
// an engine_update task, scans with the new signatures, and goes back by
// an engine_rollback task — all reported in its inventory.
func TestUpdates_AgentUpdatesFromTheServersMirrorByScheduleAndTaskAndRollsBack(t *testing.T) {
	t.Parallel()
	first, second := "mamori e2e update marker one\n", "mamori e2e update marker two\n"
	repoDir, pin, sigs, v1 := newRepo(t, hdbFor(first, "Mamori.Test.One"))

	s := startServer(t, "--updates-upstream", repoDir, "--updates-root-sha256", pin, "--updates-sync-interval", "1s")
	// No random delay before the first automatic attempt.
	s.api.policyOnAll(t, "Updates now", "updates", "random_splay", "apply", "0s")
	state := filepath.Join(t.TempDir(), "agent")
	s.agent(t, state, nil, append(s.enrollArgs(s.token()), "--instance", "updated")...)
	c, _ := s.api.waitStatus(t, "updated", "online", 20*time.Second)

	// The scheduled update from the server's mirror.
	want := fmt.Sprint(v1)
	waitFor(t, 30*time.Second, "engine from the built-in mirror in the inventory", func() (bool, string) {
		e := s.api.engineOf(t, c.ID)
		return e.Version == want && !e.Builtin && e.State == "idle" && e.LastSuccess != "0", fmt.Sprintf("%+v", e)
	})
	if p, err := strconv.ParseInt(s.api.engineOf(t, c.ID).Published, 10, 64); err != nil || time.Since(time.Unix(p, 0)) > 10*time.Minute {
		t.Fatalf("engine publication time %d (%v): the release was published moments ago", p, err)
	}
	files := t.TempDir()
	os.WriteFile(filepath.Join(files, "one.bin"), []byte(first), 0o644)
	os.WriteFile(filepath.Join(files, "two.bin"), []byte(second), 0o644)
	scan := func() string {
		out, _ := exec.Command(bin("mamori-agent"), "scan", "--state", state, "--json", files).Output()
		return string(out)
	}
	if out := scan(); !strings.Contains(out, "Mamori.Test.One") || strings.Contains(out, "Mamori.Test.Two") {
		t.Fatalf("scan with engine %s:\n%s", want, out)
	}

	// A second release, taken at once by a task (a delta).
	timestamp := func() int {
		resp, err := s.api.http.Get(s.api.base + "/updates/metadata/timestamp.json")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ts struct {
			Signed struct{ Version int } `json:"signed"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&ts); err != nil || resp.StatusCode != 200 {
			t.Fatalf("timestamp.json from the built-in mirror: %s %v", resp.Status, err)
		}
		return ts.Signed.Version
	}
	before := timestamp()
	os.WriteFile(filepath.Join(sigs, "test.hdb"), []byte(hdbFor(first, "Mamori.Test.One")+hdbFor(second, "Mamori.Test.Two")), 0o644)
	v2 := runJSON(t, "repo", "publish", "--repo", repoDir, "--from", sigs, "--json")["version"].(float64)
	waitFor(t, 20*time.Second, "mirror synced the new release", func() (bool, string) {
		v := timestamp()
		return v > before, fmt.Sprint("timestamp version ", v)
	})
	upd := s.api.createTask(t, `{"name":"Update engines","type":"engine_update"}`)
	s.api.runNow(t, upd, `{"targets":[{"type":"computer","id":"`+c.ID+`"}]}`)
	runs := s.api.finished(t, upd, 1, 60*time.Second)
	t.Logf("engine_update: %s", runs[0].Output)
	wantLine := fmt.Sprintf("engine updated from %v to %v by delta", v1, v2)
	if r := runs[0]; r.State != "succeeded" || !strings.Contains(r.Output, wantLine) {
		t.Fatalf("engine_update run %+v, want output with %q", r, wantLine)
	}
	if out := scan(); !strings.Contains(out, "Mamori.Test.Two") {
		t.Fatalf("scan after the update does not use the new engine:\n%s", out)
	}
	waitFor(t, 20*time.Second, "new engine in the inventory", func() (bool, string) {
		e := s.api.engineOf(t, c.ID)
		return e.Version == fmt.Sprint(v2), fmt.Sprintf("%+v", e)
	})
	if f := s.api.engineFlagOf(t, c.ID); f == nil || f.Version != uint64(v2) || f.Latest != uint64(v2) || f.Outdated || f.UpdateState != "idle" {
		t.Fatalf("engine on the computer after the update: %+v", f)
	}
	if ids := s.api.outdated(t); len(ids) != 0 {
		t.Fatalf("outdated computers while all are current: %v", ids)
	}

	// Back to the previous engine; automatic updates are held.
	rb := s.api.createTask(t, `{"name":"Roll back","type":"engine_rollback"}`)
	s.api.runNow(t, rb, `{"targets":[{"type":"computer","id":"`+c.ID+`"}]}`)
	runs = s.api.finished(t, rb, 1, 60*time.Second)
	t.Logf("engine_rollback: %s", runs[0].Output)
	if r := runs[0]; r.State != "succeeded" || !strings.Contains(r.Output, fmt.Sprintf("rolled back from %v to %v", v2, v1)) {
		t.Fatalf("engine_rollback run %+v", r)
	}
	waitFor(t, 20*time.Second, "rolled-back engine in the inventory", func() (bool, string) {
		e := s.api.engineOf(t, c.ID)
		return e.Version == want && e.State == "held", fmt.Sprintf("%+v", e)
	})
	if out := scan(); strings.Contains(out, "Mamori.Test.Two") || !strings.Contains(out, "Mamori.Test.One") {
		t.Fatalf("scan after the rollback:\n%s", out)
	}
	waitFor(t, 20*time.Second, "computer flagged outdated", func() (bool, string) {
		f := s.api.engineFlagOf(t, c.ID)
		return f != nil && f.Outdated && f.Version == uint64(v1) && f.Latest == uint64(v2) && f.UpdateState == "held", fmt.Sprintf("%+v", f)
	})
	if ids := s.api.outdated(t); len(ids) != 1 || ids[0] != c.ID {
		t.Fatalf("?engine=outdated lists %v, want [%s]", ids, c.ID)
	}
	var bad map[string]any
	if code := s.api.do(t, "GET", "/api/v1/computers?engine=old", nil, &bad); code != 400 {
		t.Fatalf("unknown engine filter: %d %v", code, bad)
	}
}

// Without an update mirror on the server and no source in its
// configuration, the agent says so in its inventory, and an engine_update
// task fails with that reason instead of hanging.
func TestUpdates_NoSourceIsReportedAndTheTaskFailsClearly(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	s.agent(t, filepath.Join(t.TempDir(), "agent"), nil, append(s.enrollArgs(s.token()), "--instance", "nosource")...)
	c, _ := s.api.waitStatus(t, "nosource", "online", 20*time.Second)
	waitFor(t, 20*time.Second, "engine state in the inventory", func() (bool, string) {
		e := s.api.engineOf(t, c.ID)
		return e.State == "no_source" && e.Builtin, fmt.Sprintf("%+v", e)
	})
	if f := s.api.engineFlagOf(t, c.ID); f == nil || f.Outdated || f.Latest != 0 || f.UpdateState != "no_source" {
		t.Fatalf("engine on the computer without a mirror: %+v", f)
	}
	if ids := s.api.outdated(t); len(ids) != 0 {
		t.Fatalf("outdated computers without a mirror: %v", ids)
	}
	upd := s.api.createTask(t, `{"name":"Update engines","type":"engine_update"}`)
	s.api.runNow(t, upd, `{"targets":[{"type":"computer","id":"`+c.ID+`"}]}`)
	runs := s.api.finished(t, upd, 1, 60*time.Second)
	if r := runs[0]; r.State != "failed" || !strings.Contains(r.Error, "no engine update source") {
		t.Fatalf("engine_update run %+v", r)
	}
}

// A server started with an upstream but without the root pin refuses to
// start with a clear message (it could not verify anything).
func TestUpdates_ServerRefusesAMirrorWithoutARootOfTrustAndBadLimits(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--updates-upstream", t.TempDir()}, "--updates-root-sha256"},
		{[]string{"--updates-rate", "5X"}, "--updates-rate"},
		{[]string{"--updates-client-rate", "-1"}, "--updates-client-rate"},
		{[]string{"--updates-sync-interval", "10ms"}, "--updates-sync-interval"},
		{[]string{"--updates-upstream", t.TempDir(), "--updates-root", "/nonexistent/root.json"}, "update root"},
		{[]string{"--task-delivery-rate", "0"}, "--task-delivery-rate"},
	} {
		data := filepath.Join(t.TempDir(), "d")
		args := append([]string{"server", "--data", data, "--agent-listen", freeAddr(t), "--api-listen", freeAddr(t)}, c.args...)
		out, err := exec.Command(bin("mamori"), args...).CombinedOutput()
		if code := exitCode(err); code != 2 || !strings.Contains(string(out), c.want) {
			t.Errorf("%v: exit %d, output:\n%s", c.args, code, out)
		}
		// Refused before anything was made: no CA, no admin, no store.
		if entries, _ := os.ReadDir(data); len(entries) > 0 {
			t.Errorf("%v: the refused start left %d files in the data directory", c.args, len(entries))
		}
	}
}

// The proxy the configuration sets (agent.proxy) carries the engine
// downloads from the server's mirror as well as the agent's session.
func TestUpdates_TheConfigurationsProxyCarriesEngineDownloads(t *testing.T) {
	t.Parallel()
	repoDir, pin, _, v1 := newRepo(t, hdbFor("mamori e2e proxied update\n", "Mamori.Test.Proxied"))
	s := startServer(t, "--updates-upstream", repoDir, "--updates-root-sha256", pin, "--updates-sync-interval", "1s")
	proxyAddr, proxyLog := startTinyproxy(t, s.agentAddr, s.apiAddr)
	state := filepath.Join(t.TempDir(), "agent")
	for _, kv := range [][2]string{{"agent.proxy", "http://" + proxyAddr}, {"updates.random_splay", "0s"}} {
		if b, err := exec.Command(bin("mamori-agent"), "config", "set", "--state", state, kv[0], kv[1]).CombinedOutput(); err != nil {
			t.Fatalf("config set %s: %v\n%s", kv[0], err, b)
		}
	}
	s.agent(t, state, nil, append(s.enrollArgs(s.token()), "--instance", "proxied-updates")...)
	c, _ := s.api.waitStatus(t, "proxied-updates", "online", 30*time.Second)
	waitFor(t, 30*time.Second, "engine from the built-in mirror in the inventory", func() (bool, string) {
		e := s.api.engineOf(t, c.ID)
		return e.Version == fmt.Sprint(v1) && e.State == "idle", fmt.Sprintf("%+v", e)
	})
	proxyLog.carried(t)
	_, apiPort, _ := strings.Cut(s.apiAddr, ":")
	proxyLog.carriedTo(t, apiPort)
}
