package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/store"
)

func TestEnrollment_AgentAppearsInTokenGroupWithInventoryAndEvents(t *testing.T) {
	t.Parallel()
	eachStore(t, testEnrollment)
}

func testEnrollment(t *testing.T, database string) {
	s := startServerOn(t, database)
	if code := s.api.do(t, "POST", "/api/v1/groups", map[string]string{"parent": "All", "name": "Servers"}, nil); code != 201 {
		t.Fatalf("create group: %d", code)
	}
	var ca struct{ Fingerprint string }
	s.api.do(t, "GET", "/api/v1/ca", nil, &ca)
	if ca.Fingerprint != s.fingerprint() || !strings.HasPrefix(ca.Fingerprint, "sha256:") {
		t.Fatalf("API fingerprint %q, CLI %q", ca.Fingerprint, s.fingerprint())
	}
	state := filepath.Join(t.TempDir(), "agent")
	a := s.agent(t, state, nil, append(s.enrollArgs(s.token("--group", "Servers")), "--instance", "web-1")...)
	c, _ := s.api.waitStatus(t, "web-1", "online", 20*time.Second)
	if c.Group.Path != "All/Servers" {
		t.Errorf("group %q, want All/Servers", c.Group.Path)
	}
	d := s.api.computer(t, c.ID)
	for _, sec := range []string{"system", "hardware", "network", "software", "users", "agent"} {
		if len(d.Inventory[sec]) == 0 {
			t.Errorf("inventory section %s missing", sec)
		}
	}
	if d.OS.Name == "" || d.AgentVersion == "" || d.LastSeen == "" {
		t.Errorf("summary fields missing: %+v", d)
	}
	if !strings.Contains(string(d.Inventory["system"]), `"os_family":"linux"`) {
		t.Errorf("system section: %s", d.Inventory["system"])
	}
	if countTypes(s.api.events(t, c.ID))["agent.started"] != 1 {
		t.Errorf("events: %+v", s.api.events(t, c.ID))
	}
	info, err := os.Stat(filepath.Join(state, "identity.json"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("identity.json: %v %v", info, err)
	}
	a.stop()
	waitFor(t, 10*time.Second, "agent.stopped recorded", func() (bool, string) {
		n := countTypes(s.api.events(t, c.ID))
		return n["agent.stopped"] == 1, "no agent.stopped"
	})
	s.api.waitStatus(t, "web-1", "offline", 5*time.Second)
}

func TestEnrollment_RefusalsLeaveNothingBehindAndCanBeRetried(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	good := s.token()
	used := s.token("--uses", "1")

	// An expired token, written straight into the store while the server
	// runs (tokens cannot be created already expired through the CLI).
	db, err := store.OpenSQLite(t.Context(), s.data, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	expired := "mmr_expiredtokenexpiredtokenexpiredtokenexpired"
	err = db.CreateEnrollmentToken(t.Context(), &store.EnrollmentToken{ID: "expired", SecretHash: hashSecret(expired),
		GroupID: store.GroupLostFound, ExpiresAt: time.Now().Add(-time.Hour), CreatedBy: "test", CreatedAt: time.Now().Add(-2 * time.Hour)})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	// Use up the single-use token.
	first := s.agent(t, filepath.Join(t.TempDir(), "first"), nil, append(s.enrollArgs(used), "--instance", "first")...)
	s.api.waitStatus(t, "first", "online", 20*time.Second)
	first.stop()

	wrongPin := "sha256:" + strings.Repeat("ab", 32)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown token", s.enrollArgs("mmr_nosuchtoken"), "unknown enrollment token"},
		{"expired token", s.enrollArgs(expired), "enrollment token expired"},
		{"used-up token", s.enrollArgs(used), "enrollment token is used up"},
		{"wrong CA fingerprint", []string{"--server", s.agentAddr, "--token", good, "--ca-fingerprint", wrongPin}, "is not trusted"},
		{"malformed fingerprint", []string{"--server", s.agentAddr, "--token", good, "--ca-fingerprint", "abc"}, "CA fingerprint must start with"},
		{"missing token", []string{"--server", s.agentAddr, "--ca-fingerprint", s.fingerprint()}, "the first run needs --server, --token and --ca-fingerprint"},
		{"the API port", []string{"--server", s.apiAddr, "--token", good, "--ca-fingerprint", s.fingerprint()}, "is it the API port?"},
	}
	for _, tc := range cases {
		state := filepath.Join(t.TempDir(), "state")
		p := s.agent(t, state, nil, tc.args...)
		code := p.wait(30 * time.Second)
		if code == 0 {
			t.Errorf("%s: exit code 0", tc.name)
		}
		if line := p.lastLine(); !strings.Contains(line, tc.want) || !strings.HasPrefix(line, "mamori-agent: ") {
			t.Errorf("%s: last line %q, want one line containing %q", tc.name, line, tc.want)
		}
		if identityExists(state) {
			t.Errorf("%s: identity written despite the refusal", tc.name)
		}
		if entries, _ := os.ReadDir(state); len(entries) > 0 {
			t.Errorf("%s: state directory not empty: %v", tc.name, entries)
		}
	}
	// The same state directory enrolls fine once given a good token.
	state := filepath.Join(t.TempDir(), "retry")
	p := s.agent(t, state, nil, s.enrollArgs("mmr_nosuchtoken")...)
	p.wait(30 * time.Second)
	s.agent(t, state, nil, append(s.enrollArgs(good), "--instance", "retry")...)
	s.api.waitStatus(t, "retry", "online", 20*time.Second)
	if _, total := s.api.computers(t, ""); total != 2 {
		t.Errorf("%d computers enrolled, want 2 (first, retry)", total)
	}
}

func TestEnrollment_RevokedCertificateIsRefused(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	state := filepath.Join(t.TempDir(), "agent")
	a := s.agent(t, state, nil, append(s.enrollArgs(s.token()), "--instance", "victim")...)
	c, _ := s.api.waitStatus(t, "victim", "online", 20*time.Second)
	if code := s.api.do(t, "POST", "/api/v1/computers/"+c.ID+"/revoke", nil, nil); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	// The running agent is disconnected and refused on reconnect.
	if code := a.wait(30 * time.Second); code == 0 {
		t.Fatal("agent exited 0 after its certificate was revoked")
	}
	if line := a.lastLine(); !strings.Contains(line, "certificate revoked") {
		t.Fatalf("last line %q", line)
	}
	// A later start (only --state) is refused too, with the same clear line.
	b := s.agent(t, state, nil)
	if code := b.wait(30 * time.Second); code == 0 || !strings.Contains(b.lastLine(), "certificate revoked") {
		t.Fatalf("restart after revoke: exit %d, %q", code, b.lastLine())
	}
	if got := s.api.computer(t, c.ID); !got.Revoked || got.Status != "offline" {
		t.Fatalf("revoked computer shows %+v", got)
	}
}

func TestPresence_KilledAgentGoesOfflineWithin5sAndComesBack(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	state := filepath.Join(t.TempDir(), "agent")
	a := s.agent(t, state, nil, append(s.enrollArgs(s.token()), "--instance", "k")...)
	c, _ := s.api.waitStatus(t, "k", "online", 20*time.Second)
	a.signal(syscall.SIGKILL)
	_, took := s.api.waitStatus(t, "k", "offline", 5*time.Second)
	t.Logf("offline %s after SIGKILL", took)
	s.agent(t, state, nil) // later runs need only --state
	again, _ := s.api.waitStatus(t, "k", "online", 10*time.Second)
	if again.ID != c.ID {
		t.Fatalf("computer id changed from %s to %s: re-enrolled", c.ID, again.ID)
	}
	if _, total := s.api.computers(t, ""); total != 1 {
		t.Fatalf("%d computers, want 1", total)
	}
}

func TestPresence_SilentNetworkDeathDetectedByTheKeepalive(t *testing.T) {
	t.Parallel()
	// Default keepalive settings, the real configuration: a ping after 30 s
	// without a frame, 20 s to answer it, then one presence flush (51 s).
	s := startServer(t)
	a := s.agent(t, filepath.Join(t.TempDir(), "agent"), nil, append(s.enrollArgs(s.token()), "--instance", "frozen")...)
	s.api.waitStatus(t, "frozen", "online", 20*time.Second)
	a.signal(syscall.SIGSTOP) // the kernel keeps the socket alive; the agent stops answering
	// 51 s at worst, and room for a loaded CI.
	_, took := s.api.waitStatus(t, "frozen", "offline", 65*time.Second)
	t.Logf("offline %s after SIGSTOP", took)
	a.signal(syscall.SIGCONT)
	_, back := s.api.waitStatus(t, "frozen", "online", 5*time.Second)
	t.Logf("online %s after SIGCONT", back)
}

func TestServerRestart_AgentsReconnectAndQueuedEventsArriveExactlyOnce(t *testing.T) {
	t.Parallel()
	eachStore(t, testServerRestart)
}

func testServerRestart(t *testing.T, database string) {
	s := startServerOn(t, database)
	token := s.token()
	stateA, stateB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	s.agent(t, stateA, nil, append(s.enrollArgs(token), "--instance", "steady")...)
	b := s.agent(t, stateB, nil, append(s.enrollArgs(token), "--instance", "bouncer")...)
	ca, _ := s.api.waitStatus(t, "steady", "online", 20*time.Second)
	cb, _ := s.api.waitStatus(t, "bouncer", "online", 20*time.Second)
	idA, _ := os.ReadFile(filepath.Join(stateA, "identity.json"))

	s.stop()
	// While the server is down the agent restarts: agent.stopped and a
	// second agent.started wait in its outbox.
	b.stop()
	s.agent(t, stateB, nil)
	time.Sleep(500 * time.Millisecond)
	s.launch()

	s.api.waitStatus(t, "steady", "online", 30*time.Second)
	s.api.waitStatus(t, "bouncer", "online", 30*time.Second)
	if _, total := s.api.computers(t, ""); total != 2 {
		t.Fatalf("%d computers after restart, want 2", total)
	}
	if idA2, _ := os.ReadFile(filepath.Join(stateA, "identity.json")); string(idA2) != string(idA) {
		t.Fatal("agent identity changed across a server restart: it re-enrolled")
	}
	waitFor(t, 10*time.Second, "queued events delivered", func() (bool, string) {
		n := countTypes(s.api.events(t, cb.ID))
		return n["agent.started"] == 2 && n["agent.stopped"] == 1, fmtCounts(n)
	})
	// Nothing more arrives later (no duplicates from retries).
	time.Sleep(2 * time.Second)
	evB := s.api.events(t, cb.ID)
	assertUniqueIDs(t, evB)
	if n := countTypes(evB); n["agent.started"] != 2 || n["agent.stopped"] != 1 || len(evB) != 3 {
		t.Fatalf("bouncer events %v", fmtCounts(n))
	}
	if n := countTypes(s.api.events(t, ca.ID)); n["agent.started"] != 1 || n["agent.stopped"] != 0 {
		t.Fatalf("steady events %v", fmtCounts(n))
	}
}

func fmtCounts(m map[string]int) string { return fmt.Sprint(m) }

func TestServerRestart_BadReturnScheduleIsRefused(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--return-rate", "0"}, "--return-rate must be positive"},
		{[]string{"--return-rate", "-5"}, "--return-rate must be positive"},
		{[]string{"--return-rate", "many"}, "return-rate"},
		{[]string{"--return-after", "-1s"}, "--return-after between 0 and 1h"},
		{[]string{"--return-after", "2h"}, "--return-after between 0 and 1h"},
		{[]string{"--return-after", "5"}, "return-after"},
	} {
		args := append([]string{"server", "--data", filepath.Join(t.TempDir(), "d"), "--agent-listen", freeAddr(t), "--api-listen", freeAddr(t)}, c.args...)
		out, err := exec.Command(bin("mamori"), args...).CombinedOutput()
		if code := exitCode(err); code != 2 || !strings.Contains(string(out), c.want) {
			t.Errorf("%v: exit %d, want 2 and %q; output:\n%s", c.args, code, c.want, out)
		}
	}
}

// A server stopped on purpose tells each agent when to come back, spread
// over them (--return-after, then --return-rate per second), and the
// agents come back then, not as soon as the server listens again.
func TestServerRestart_AgentsComeBackWhenTheStoppingServerSaid(t *testing.T) {
	t.Parallel()
	const after = 4 * time.Second
	s := startServer(t, "--return-after", after.String(), "--return-rate", "1")
	token := s.token()
	agents := map[string]*proc{}
	for _, name := range []string{"first", "second"} {
		agents[name] = s.agent(t, filepath.Join(t.TempDir(), name), nil, append(s.enrollArgs(token), "--instance", name)...)
	}
	for name := range agents {
		s.api.waitStatus(t, name, "online", 20*time.Second)
	}

	stopped := time.Now()
	s.stop()
	if out := s.output(); !strings.Contains(out, "agents told when to come back") || !strings.Contains(out, "agents=2") {
		t.Fatalf("the server did not say it told both agents when to come back:\n%s", out)
	}
	s.launch()
	if time.Since(stopped) < after-500*time.Millisecond {
		// Listening again well before the hints: nobody is back yet.
		for name := range agents {
			if c, _ := s.api.computerByName(t, name); c.Status != "offline" {
				t.Errorf("%s is %s %s after the stop, before its return time", name, c.Status, time.Since(stopped).Round(time.Millisecond))
			}
		}
	}
	// The hints were 4 s and 5 s (one agent per second), in either order.
	var since []time.Duration
	for name, p := range agents {
		c, _ := s.api.waitStatus(t, name, "online", 30*time.Second)
		at, err := time.Parse(time.RFC3339Nano, c.ConnectedSince)
		if err != nil {
			t.Fatalf("%s connected_since %q: %v", name, c.ConnectedSince, err)
		}
		since = append(since, at.Sub(stopped))
		out := p.output()
		if !strings.Contains(out, "server asked to retry later") || !strings.Contains(out, "server restarting") {
			t.Errorf("agent %s did not log the server's return time:\n%s", name, out)
		}
	}
	slices.Sort(since)
	if since[0] < after || since[1] < after+time.Second {
		t.Errorf("agents back %v after the stop, want no earlier than %s and %s", since, after, after+time.Second)
	}
}

func TestWakeUp_TriggersAnImmediateCheckIn(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	s.agent(t, filepath.Join(t.TempDir(), "agent"), nil, append(s.enrollArgs(s.token()), "--instance", "sleepy", "--interval", "1h")...)
	c, _ := s.api.waitStatus(t, "sleepy", "online", 20*time.Second)
	waitFor(t, 10*time.Second, "first check-in", func() (bool, string) {
		return s.api.metric(t, "mamori_agent_check_ins_total") >= 1, "none"
	})
	before := s.api.metric(t, "mamori_agent_check_ins_total")
	if code := s.api.do(t, "POST", "/api/v1/computers/"+c.ID+"/wakeup", nil, nil); code != 202 {
		t.Fatalf("wakeup: %d", code)
	}
	took := waitFor(t, 10*time.Second, "check-in after wake-up", func() (bool, string) {
		return s.api.metric(t, "mamori_agent_check_ins_total") > before, "no new check-in"
	})
	t.Logf("check-in observed %s after the wake-up request", took)
	if s.api.metric(t, "mamori_wakeup_latency_seconds_count") != 1 {
		t.Fatal("wake-up latency not recorded")
	}
	// A wake-up for a computer that is not connected is a clear 503.
	other := s.agent(t, filepath.Join(t.TempDir(), "other"), nil, append(s.enrollArgs(s.token()), "--instance", "gone")...)
	s.api.waitStatus(t, "gone", "online", 20*time.Second)
	other.stop()
	g, _ := s.api.waitStatus(t, "gone", "offline", 10*time.Second)
	if code := s.api.do(t, "POST", "/api/v1/computers/"+g.ID+"/wakeup", nil, nil); code != 503 {
		t.Fatalf("wakeup of offline computer: %d, want 503", code)
	}
}

func TestClone_CopiedStateDirectoryOnAnotherMachine(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	stateA := filepath.Join(t.TempDir(), "a")
	s.agent(t, stateA, []string{"MAMORI_AGENT_MACHINE_ID=machine-a"}, append(s.enrollArgs(s.token()), "--instance", "orig")...)
	c, _ := s.api.waitStatus(t, "orig", "online", 20*time.Second)
	if c.CloneSuspected {
		t.Fatal("clone suspected before any copy")
	}
	stateB := filepath.Join(t.TempDir(), "b")
	os.MkdirAll(stateB, 0o700)
	id, _ := os.ReadFile(filepath.Join(stateA, "identity.json"))
	os.WriteFile(filepath.Join(stateB, "identity.json"), id, 0o600)
	s.agent(t, stateB, []string{"MAMORI_AGENT_MACHINE_ID=machine-b"})
	waitFor(t, 20*time.Second, "clone flagged", func() (bool, string) {
		got := s.api.computer(t, c.ID)
		return got.CloneSuspected, got.CloneReason
	})
	if got := s.api.computer(t, c.ID); !strings.Contains(got.CloneReason, "two machines") && !strings.Contains(got.CloneReason, "different hardware") {
		t.Fatalf("clone reason %q", got.CloneReason)
	}
	if _, total := s.api.computers(t, ""); total != 1 {
		t.Fatalf("the copy created a computer: total %d", total)
	}
}

func TestClone_SameHardwareFingerprintTwiceButInstancesAreDistinct(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	token := s.token()
	env := []string{"MAMORI_AGENT_MACHINE_ID=golden-image"}
	// Two machines from one image: same machine id, no instance name.
	s.agent(t, filepath.Join(t.TempDir(), "vm1"), env, s.enrollArgs(token)...)
	waitFor(t, 20*time.Second, "first enrolled", func() (bool, string) { _, n := s.api.computers(t, ""); return n == 1, "" })
	s.agent(t, filepath.Join(t.TempDir(), "vm2"), env, s.enrollArgs(token)...)
	waitFor(t, 20*time.Second, "both flagged", func() (bool, string) {
		items, _ := s.api.computers(t, "")
		flagged := 0
		for _, c := range items {
			if c.CloneSuspected {
				flagged++
			}
		}
		return len(items) == 2 && flagged == 2, fmtCounts(map[string]int{"computers": len(items), "flagged": flagged})
	})
	// Several agents on one host with --instance are distinct computers.
	s.agent(t, filepath.Join(t.TempDir(), "i1"), env, append(s.enrollArgs(token), "--instance", "i1")...)
	s.agent(t, filepath.Join(t.TempDir(), "i2"), env, append(s.enrollArgs(token), "--instance", "i2")...)
	for _, n := range []string{"i1", "i2"} {
		c, _ := s.api.waitStatus(t, n, "online", 20*time.Second)
		if c.CloneSuspected {
			t.Errorf("%s flagged as clone: %s", n, c.CloneReason)
		}
	}
}

func TestFailover_SecondServerInTheListIsUsed(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	dead := freeAddr(t) // nothing listens here
	s.agent(t, filepath.Join(t.TempDir(), "agent"), nil, "--server", dead+","+s.agentAddr, "--token", s.token(),
		"--ca-fingerprint", s.fingerprint(), "--instance", "fo")
	s.api.waitStatus(t, "fo", "online", 30*time.Second)
}

func TestProxy_AgentConnectsThroughTinyproxy(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	proxyAddr, proxyLog := startTinyproxy(t, s.agentAddr)
	s.agent(t, filepath.Join(t.TempDir(), "agent"), nil, append(s.enrollArgs(s.token()), "--instance", "proxied",
		"--proxy", "http://"+proxyAddr)...)
	s.api.waitStatus(t, "proxied", "online", 30*time.Second)
	proxyLog.carried(t)
}

// A proxy set by the configuration (here a local value; a policy's works
// the same) carries the agent's sessions, though the agent was started
// without one.
func TestProxy_TheConfigurationsProxyCarriesTheSession(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	proxyAddr, proxyLog := startTinyproxy(t, s.agentAddr)
	state := filepath.Join(t.TempDir(), "agent")
	if b, err := exec.Command(bin("mamori-agent"), "config", "set", "--state", state, "agent.proxy", "http://"+proxyAddr).CombinedOutput(); err != nil {
		t.Fatalf("config set: %v\n%s", err, b)
	}
	s.agent(t, state, nil, append(s.enrollArgs(s.token()), "--instance", "configured")...)
	s.api.waitStatus(t, "configured", "online", 30*time.Second)
	proxyLog.carried(t)
}

// tinyproxyLog is the log of a tinyproxy started for a test.
type tinyproxyLog struct{ file, agentPort string }

// carried fails the test unless the proxy tunnelled to the agent port.
func (l tinyproxyLog) carried(t *testing.T) {
	t.Helper()
	l.carriedTo(t, l.agentPort)
}

// carriedTo fails the test unless the proxy tunnelled to port.
func (l tinyproxyLog) carriedTo(t *testing.T, port string) {
	t.Helper()
	log, _ := os.ReadFile(l.file)
	if !strings.Contains(string(log), "CONNECT") || !strings.Contains(string(log), ":"+port) {
		t.Fatalf("tinyproxy did not carry a connection to port %s; its log:\n%s", port, log)
	}
}

// startTinyproxy runs Debian's tinyproxy on a free port, allowing CONNECT
// to the agent address's port (and the ports of more addresses), until the
// test ends.
func startTinyproxy(t *testing.T, agentAddr string, more ...string) (string, tinyproxyLog) {
	t.Helper()
	tp, err := exec.LookPath("tinyproxy")
	if err != nil {
		if os.Getenv("MAMORI_REQUIRE_TOOLS") != "" {
			t.Fatal("tinyproxy not installed (.ci/run installs it)")
		}
		t.Skip("tinyproxy not installed; `apt-get install tinyproxy` or run .ci/run")
	}
	dir := t.TempDir()
	proxyAddr := freeAddr(t)
	_, proxyPort, _ := strings.Cut(proxyAddr, ":")
	_, agentPort, _ := strings.Cut(agentAddr, ":")
	logFile := filepath.Join(dir, "tinyproxy.log")
	conf := "Port " + proxyPort + "\nListen 127.0.0.1\nTimeout 600\nAllow 127.0.0.1\nConnectPort " + agentPort +
		"\nLogFile \"" + logFile + "\"\nLogLevel Connect\nMaxClients 20\n"
	for _, a := range more {
		_, port, _ := strings.Cut(a, ":")
		conf += "ConnectPort " + port + "\n"
	}
	if os.Geteuid() == 0 {
		conf += "User root\nGroup root\n"
	}
	os.WriteFile(filepath.Join(dir, "tinyproxy.conf"), []byte(conf), 0o644)
	cmd := exec.Command(tp, "-d", "-c", filepath.Join(dir, "tinyproxy.conf"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, 10*time.Second, "tinyproxy listening", func() (bool, string) {
		c, err := netDial(proxyAddr)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	return proxyAddr, tinyproxyLog{file: logFile, agentPort: agentPort}
}

// A second server started on the data directory of a running one (on the
// embedded store) is refused at once and changes nothing: the first one's
// agents stay online, in the list and by the status filter.
func TestServer_ASecondServerOnTheSameDataIsRefused(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	s.agent(t, filepath.Join(t.TempDir(), "agent"), nil, append(s.enrollArgs(s.token()), "--instance", "first")...)
	s.api.waitStatus(t, "first", "online", 20*time.Second)
	onlineByFilter := func() int {
		var online struct{ Total int }
		if code := s.api.do(t, "GET", "/api/v1/computers?status=online", nil, &online); code != 200 {
			t.Fatalf("computers?status=online: HTTP %d", code)
		}
		return online.Total
	}
	waitFor(t, 20*time.Second, "presence written to the store", func() (bool, string) {
		n := onlineByFilter()
		return n == 1, fmt.Sprint(n, " online by the filter")
	})

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second) // a second server that runs is killed, and fails the test
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("mamori"), "server", "--data", s.data, "--agent-listen", freeAddr(t), "--api-listen", freeAddr(t))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another mamori server is running on") {
		t.Fatalf("second server on the same data: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "offline") {
		t.Fatalf("the refused server touched the computers:\n%s", out)
	}
	if n := onlineByFilter(); n != 1 {
		t.Fatalf("%d computers online by the filter after the refused start, want 1", n)
	}
	if c, _ := s.api.computerByName(t, "first"); c.Status != "online" {
		t.Fatalf("first is %s after the refused start", c.Status)
	}
}
