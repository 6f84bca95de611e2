package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/store/storetest"
)

// Two servers share one PostgreSQL store. An agent connected to B is
// managed through A's API: A shows it online (B's row), A's wake-up reaches
// it, a policy assigned on A is pushed by B, a revocation on A makes B drop
// it.
func TestCluster_AgentOnOneServerIsManagedThroughTheOther(t *testing.T) {
	t.Parallel()
	a := startServerOn(t, storetest.PostgresSchema(t, storetest.PostgresURL(t)))
	b := a.peer(t)
	if b.initialPassword() != a.initialPassword() || b.fingerprint() != a.fingerprint() {
		t.Fatal("the peer does not share the first server's data")
	}
	args := []string{"--server", b.agentAddr, "--token", a.token(), "--ca-fingerprint", a.fingerprint(), "--instance", "far", "--interval", "1h"}
	b.agent(t, filepath.Join(t.TempDir(), "agent"), nil, args...)
	c, _ := a.api.waitStatus(t, "far", "online", 20*time.Second)
	if on, _ := b.api.waitStatus(t, "far", "online", 5*time.Second); on.ID != c.ID {
		t.Fatalf("servers disagree on the computer: %s and %s", c.ID, on.ID)
	}

	// Wake-up through A, check-in on B.
	waitFor(t, 10*time.Second, "first check-in on B", func() (bool, string) {
		return b.api.metric(t, "mamori_agent_check_ins_total") >= 1, "none"
	})
	before := b.api.metric(t, "mamori_agent_check_ins_total")
	if code := a.api.do(t, "POST", "/api/v1/computers/"+c.ID+"/wakeup", nil, nil); code != 202 {
		t.Fatalf("wake-up through A: %d, want 202", code)
	}
	var many struct{ Requested, Connected int }
	if code := a.api.do(t, "POST", "/api/v1/computers/wakeup", map[string]string{"group": "All"}, &many); code != 202 || many.Connected != 1 {
		t.Fatalf("group wake-up through A: %d %+v, want 1 connected", code, many)
	}
	waitFor(t, 10*time.Second, "check-in on B after A's wake-up", func() (bool, string) {
		return b.api.metric(t, "mamori_agent_check_ins_total") > before, "no new check-in"
	})

	// A policy assigned through A, applied by the agent on B.
	a.api.policyOnAll(t, "Agents", "agent", "log_level", "force", "warn")
	waitConfig(t, a, c.ID, 15*time.Second, "configuration pushed by B", func(e effectiveConfig) bool { return e.Version != "" && e.AppliedVersion == e.Version })

	// Revoked through A: B drops the connection and refuses the agent.
	if code := a.api.do(t, "POST", "/api/v1/computers/"+c.ID+"/revoke", nil, nil); code != 204 {
		t.Fatalf("revoke through A: %d", code)
	}
	waitFor(t, 10*time.Second, "B dropped the revoked agent", func() (bool, string) {
		n := b.api.metric(t, "mamori_agents_connected")
		return n == 0, fmt.Sprintf("%v connected", n)
	})
	if got := a.api.computer(t, c.ID); got.Status != "offline" {
		t.Errorf("revoked computer shown %q through A", got.Status)
	}
}

// With --reuse-port both servers listen on the same addresses; agents
// connecting there all come online, whichever server the kernel picks
// (which one is the kernel's hash: not asserted).
func TestCluster_ServersShareAddressesWithReusePort(t *testing.T) {
	t.Parallel()
	a := startServerOn(t, storetest.PostgresSchema(t, storetest.PostgresURL(t)), "--reuse-port")
	b := &server{t: t, data: a.data, agentAddr: a.agentAddr, apiAddr: a.apiAddr, database: a.database, extra: []string{"--reuse-port"}, adminPW: a.adminPW}
	b.launch()
	token := a.token()
	const agents = 6
	for i := range agents {
		name := "shared-" + string(rune('a'+i))
		a.agent(t, filepath.Join(t.TempDir(), name), nil, append(a.enrollArgs(token), "--instance", name)...)
	}
	waitFor(t, 30*time.Second, "every agent online", func() (bool, string) {
		cs, _ := a.api.computers(t, "")
		on := 0
		for _, c := range cs {
			if c.Status == "online" {
				on++
			}
		}
		return on == agents, fmt.Sprintf("%d online", on)
	})
}
