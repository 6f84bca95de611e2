package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/agent"
	"github.com/mamori/mamori/internal/agent/inventory"
	"github.com/mamori/mamori/internal/agentproto"
	mserver "github.com/mamori/mamori/internal/server"
)

// inproc is a server running in this process (the real server.New/Run).
type inproc struct {
	srv  *mserver.Server
	data string
	api  *apiClient
}

func startInproc(t *testing.T) *inproc {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	srv, err := mserver.New(t.Context(), mserver.Config{
		DataDir: data, AgentListen: "127.0.0.1:0", APIListen: "127.0.0.1:0",
		AdminPassword: "correct horse battery staple",
		Log:           slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server Run: %v", err)
		}
		srv.Close()
	})
	pem, _ := os.ReadFile(filepath.Join(data, "ca.crt"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	jar, _ := cookiejar.New(nil)
	api := &apiClient{base: "https://" + srv.APIAddr(), http: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}}}
	api.login(t, "admin", "correct horse battery staple")
	return &inproc{srv: srv, data: data, api: api}
}

func (p *inproc) token(t *testing.T) string {
	t.Helper()
	var r struct{ Token string }
	if code := p.api.do(t, "POST", "/api/v1/enrollment-tokens", map[string]any{"ttl": "1h"}, &r); code != 201 {
		t.Fatalf("create token: %d", code)
	}
	return r.Token
}

// runAgent runs the real agent.Run in this process until the test ends.
func (p *inproc) runAgent(t *testing.T, cfg agent.Config) *agent.Agent {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(t.TempDir(), "agent")
	}
	cfg.Servers = []string{p.srv.AgentAddr()}
	cfg.Token = p.token(t)
	cfg.CAFingerprint = p.srv.CAFingerprint()
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent Run: %v", err)
		}
		a.Close()
	})
	return a
}

// mutableCollector wraps the real collector and lets a test change the
// software list.
type mutableCollector struct {
	real  *inventory.Collector
	mu    sync.Mutex
	extra []*agentproto.Package
}

func (m *mutableCollector) Collect(ctx context.Context) (*inventory.Snapshot, error) {
	snap, err := m.real.Collect(ctx)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.extra) == 0 {
		return snap, nil
	}
	var bodies struct {
		sys *agentproto.SystemInfo
		hw  *agentproto.HardwareInfo
		net *agentproto.NetworkInfo
		sw  *agentproto.SoftwareInfo
		us  *agentproto.UsersInfo
		ag  *agentproto.AgentInfo
	}
	for _, s := range snap.Sections {
		switch {
		case s.GetSystem() != nil:
			bodies.sys = s.GetSystem()
		case s.GetHardware() != nil:
			bodies.hw = s.GetHardware()
		case s.GetNetwork() != nil:
			bodies.net = s.GetNetwork()
		case s.GetSoftware() != nil:
			sw := &agentproto.SoftwareInfo{Source: s.GetSoftware().Source}
			sw.Packages = append(append(sw.Packages, s.GetSoftware().Packages...), m.extra...)
			bodies.sw = sw
		case s.GetUsers() != nil:
			bodies.us = s.GetUsers()
		case s.GetAgent() != nil:
			bodies.ag = s.GetAgent()
		}
	}
	return inventory.NewSnapshot(bodies.sys, bodies.hw, bodies.net, bodies.sw, bodies.us, bodies.ag), nil
}

func TestInventoryDelta_OnlyChangedSectionsAreSent(t *testing.T) {
	t.Parallel()
	p := startInproc(t)
	real, err := inventory.NewCollector(inventory.Options{AgentVersion: "test"})
	if err != nil {
		t.Skip(err)
	}
	col := &mutableCollector{real: real}
	p.runAgent(t, agent.Config{Instance: "delta", Interval: time.Hour, Collector: col})
	c, _ := p.api.waitStatus(t, "delta", "online", 20*time.Second)
	waitFor(t, 10*time.Second, "first replication", func() (bool, string) {
		return p.api.metric(t, "mamori_inventory_sections_stored_total") == 6, "not yet"
	})
	wake := func() {
		t.Helper()
		before := p.api.metric(t, "mamori_agent_check_ins_total")
		if code := p.api.do(t, "POST", "/api/v1/computers/"+c.ID+"/wakeup", nil, nil); code != 202 {
			t.Fatalf("wakeup %d", code)
		}
		waitFor(t, 10*time.Second, "check-in", func() (bool, string) {
			return p.api.metric(t, "mamori_agent_check_ins_total") > before, "none"
		})
	}
	updated := p.api.computer(t, c.ID)
	// Nothing changed: nothing stored. The agent sends a check-in only after
	// the previous one was acknowledged, so once the second wake-up's
	// check-in arrives the first one is complete.
	wake()
	wake()
	if n := p.api.metric(t, "mamori_inventory_sections_stored_total"); n != 6 {
		t.Fatalf("no-change check-ins stored %v sections in total, want still 6", n)
	}
	col.mu.Lock()
	col.extra = []*agentproto.Package{{Name: "zz-mamori-test", Version: "1.2.3", Architecture: "all"}}
	col.mu.Unlock()
	wake()
	wake()
	// The check-in counter moves before the write commits; wait for it.
	waitFor(t, 10*time.Second, "the changed section stored", func() (bool, string) {
		n := p.api.metric(t, "mamori_inventory_sections_stored_total")
		return n == 7, fmt.Sprintf("%v sections stored in total, want 7", n)
	})
	after := p.api.computer(t, c.ID)
	if !strings.Contains(string(after.Inventory["software"]), "zz-mamori-test") {
		t.Fatal("the new package is not in the server's inventory")
	}
	if string(after.Inventory["system"]) != string(updated.Inventory["system"]) {
		t.Fatal("the unchanged system section was rewritten")
	}
}

// fakeClock lets a test move the wall clock without the monotonic one, as a
// suspend does.
type fakeClock struct {
	mu   sync.Mutex
	wall time.Time
	mono time.Duration
}

func (c *fakeClock) Now() (time.Time, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wall = c.wall.Add(10 * time.Millisecond)
	c.mono += 10 * time.Millisecond
	return c.wall, c.mono
}

func (c *fakeClock) sleep(d time.Duration) {
	c.mu.Lock()
	c.wall = c.wall.Add(d)
	c.mu.Unlock()
}

func TestResume_WallClockJumpReconnectsAndRecordsEvent(t *testing.T) {
	t.Parallel()
	p := startInproc(t)
	clk := &fakeClock{wall: time.Now()}
	p.runAgent(t, agent.Config{Instance: "laptop", Interval: time.Hour, Clock: clk, ResumeTick: 50 * time.Millisecond})
	c, _ := p.api.waitStatus(t, "laptop", "online", 20*time.Second)
	sessions := p.api.metric(t, `mamori_agent_sessions_total{result="accepted"}`)
	clk.sleep(2 * time.Hour)
	waitFor(t, 10*time.Second, "agent.resumed delivered", func() (bool, string) {
		return countTypes(p.api.events(t, c.ID))["agent.resumed"] == 1, fmtCounts(countTypes(p.api.events(t, c.ID)))
	})
	waitFor(t, 10*time.Second, "new session after resume", func() (bool, string) {
		return p.api.metric(t, `mamori_agent_sessions_total{result="accepted"}`) > sessions, "same session"
	})
	var ev event
	for _, e := range p.api.events(t, c.ID) {
		if e.Type == "agent.resumed" {
			ev = e
		}
	}
	var data struct {
		Slept int64 `json:"slept_seconds"`
	}
	json.Unmarshal(ev.Data, &data)
	if data.Slept < 7100 || data.Slept > 7300 {
		t.Fatalf("slept_seconds = %d, want about 7200", data.Slept)
	}
	p.api.waitStatus(t, "laptop", "online", 10*time.Second)
}

func TestWakeMany_EveryConnectedAgentOfAGroupReplicates(t *testing.T) {
	t.Parallel()
	p := startInproc(t)
	for _, n := range []string{"w1", "w2", "w3"} {
		p.runAgent(t, agent.Config{Instance: n, Interval: time.Hour})
	}
	for _, n := range []string{"w1", "w2", "w3"} {
		p.api.waitStatus(t, n, "online", 20*time.Second)
	}
	waitFor(t, 10*time.Second, "first check-ins", func() (bool, string) {
		return p.api.metric(t, "mamori_agent_check_ins_total") >= 3, "fewer than 3"
	})
	before := p.api.metric(t, "mamori_wakeup_latency_seconds_count")
	var r map[string]int
	if code := p.api.do(t, "POST", "/api/v1/computers/wakeup", map[string]any{"group": "All"}, &r); code != 202 {
		t.Fatalf("bulk wakeup: %d", code)
	}
	if r["requested"] != 3 || r["connected"] != 3 {
		t.Fatalf("bulk wakeup answered %v", r)
	}
	waitFor(t, 10*time.Second, "three answered wake-ups", func() (bool, string) {
		n := p.api.metric(t, "mamori_wakeup_latency_seconds_count") - before
		return n == 3, fmt.Sprint(n)
	})
}
