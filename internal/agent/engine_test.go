package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/agent/agentcfg"
	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/engine/builtin"
)

func TestServerMirrorURL_TakesTheDialledHostWhenTheServerLeavesItOut(t *testing.T) {
	for _, c := range []struct{ raw, server, want string }{
		{"https://:8443/updates", "10.0.0.5:2222", "https://10.0.0.5:8443/updates"},
		{"https://:8443/updates", "[fd00::1]:2222", "https://[fd00::1]:8443/updates"},
		{"https://:8443/updates", "mgmt.example.org:2222", "https://mgmt.example.org:8443/updates"},
		{"https://cdn.example.org/mamori", "10.0.0.5:2222", "https://cdn.example.org/mamori"},
		{"", "10.0.0.5:2222", ""},
		{"https://:8443/updates", "no-port", "https://:8443/updates"},
	} {
		if got := serverMirrorURL(c.raw, c.server); got != c.want {
			t.Errorf("serverMirrorURL(%q, %q) = %q, want %q", c.raw, c.server, got, c.want)
		}
	}
}

func newTestEngineUpdates(t *testing.T) *engineUpdates {
	return &engineUpdates{dir: t.TempDir(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func TestEngineUpdates_ConfiguredSourcesBeatTheServersMirror(t *testing.T) {
	e := newTestEngineUpdates(t)
	e.mu.Lock()
	_, _, ok := e.configLocked()
	e.mu.Unlock()
	if ok {
		t.Fatal("an updater was configured with no source at all")
	}
	e.serverURL, e.rootPin = "https://10.0.0.5:8443/updates", strings.Repeat("a", 64)
	e.settings = &agentcfg.Settings{UpdateInterval: 2 * time.Hour, RollbackDepth: 5}
	e.mu.Lock()
	cfg, key1, ok := e.configLocked()
	e.mu.Unlock()
	if !ok || len(cfg.Sources) != 1 || cfg.Sources[0] != e.serverURL || cfg.RootSHA256 != e.rootPin || cfg.Interval != 2*time.Hour || cfg.KeepVersions != 6 {
		t.Fatalf("server mirror config: ok=%v %+v", ok, cfg)
	}
	e.settings = &agentcfg.Settings{UpdateSources: []string{"/media/usb", "https://mirror.branch:8080"}}
	e.mu.Lock()
	cfg, key2, _ := e.configLocked()
	e.mu.Unlock()
	if len(cfg.Sources) != 2 || cfg.Sources[0] != "/media/usb" || key1 == key2 {
		t.Fatalf("configured sources: %+v (keys %q %q)", cfg.Sources, key1, key2)
	}
}

func TestEngineUpdates_RestartsOnlyWhenTheConfigurationChanges(t *testing.T) {
	e := newTestEngineUpdates(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.start(ctx)
	if e.current() != nil {
		t.Fatal("an updater runs without a source")
	}
	// An hour between attempts: the updater waits, nothing is fetched.
	e.setSettings(&agentcfg.Settings{UpdateSources: []string{t.TempDir()}, UpdateInterval: time.Hour, UpdateSplay: time.Hour})
	first := e.current()
	if first == nil {
		t.Fatal("no updater with a source")
	}
	e.setServer("https://:8443/updates", "") // the configured source still wins
	e.setSettings(&agentcfg.Settings{UpdateSources: e.settings.UpdateSources, UpdateInterval: time.Hour, UpdateSplay: time.Hour})
	if e.current() != first {
		t.Fatal("the updater restarted although nothing it uses changed")
	}
	e.setSettings(&agentcfg.Settings{UpdateSources: e.settings.UpdateSources, UpdateInterval: 2 * time.Hour, UpdateSplay: time.Hour})
	if e.current() == first || e.current() == nil {
		t.Fatal("a new interval did not restart the updater")
	}
	e.setSettings(&agentcfg.Settings{})
	if got := e.current(); got == nil {
		t.Fatal("with the server's mirror left as source there must still be an updater")
	}
	e.setServer("", "")
	if e.current() != nil {
		t.Fatal("an updater still runs with no source left")
	}
	var ai agentproto.AgentInfo
	e.fill(&ai)
	if ai.EngineVersion != builtin.Version || !ai.EngineBuiltin || ai.EngineUpdateState != "no_source" {
		t.Fatalf("inventory without a source: %+v", &ai)
	}
	cancel()
}

func TestEngineUpdates_UpdateWithoutASourceFailsAtOnce(t *testing.T) {
	e := newTestEngineUpdates(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.start(ctx)
	if _, err := e.Update(ctx); err == nil || !strings.Contains(err.Error(), "no engine update source") {
		t.Fatalf("update without a source: %v", err)
	}
	if _, err := e.Rollback(ctx); err == nil || !strings.Contains(err.Error(), "built-in engine is current") {
		t.Fatalf("rollback with nothing installed: %v", err)
	}
}

// forwardProxy is an HTTP forward proxy (absolute-form requests) that
// counts what it carries.
func forwardProxy(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		out := r.Clone(r.Context())
		out.RequestURI = ""
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), &n
}

// Engine downloads take updates.proxy when the configuration sets it, else
// the configuration's agent.proxy, else the agent's own way; a failing
// agent.proxy sends the download the agent's own way at once and for a
// while, as the connection does, and is logged without its password.
func TestEngineUpdates_DownloadsTakeTheConfigurationsProxy(t *testing.T) {
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "metadata")
	}))
	defer mirror.Close()
	get := func(t *testing.T, e *engineUpdates, s *agentcfg.Settings) {
		t.Helper()
		e.settings = s
		e.mu.Lock()
		cfg, _, ok := e.configLocked()
		e.mu.Unlock()
		if !ok {
			t.Fatal("no updater configuration")
		}
		resp, err := cfg.HTTPClient.Get(mirror.URL + "/metadata/timestamp.json")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "metadata" {
			t.Fatalf("download: %s %q", resp.Status, b)
		}
	}
	fromPolicy := func(agentProxy, updatesProxy string) *agentcfg.Settings {
		src := map[string]string{"agent.proxy": agentcfg.SourceDefault, "updates.proxy": agentcfg.SourceDefault}
		if agentProxy != "" {
			src["agent.proxy"] = agentcfg.SourcePolicy
		}
		if updatesProxy != "" {
			src["updates.proxy"] = agentcfg.SourcePolicy
		}
		return &agentcfg.Settings{UpdateSources: []string{mirror.URL}, Proxy: agentProxy, UpdateProxy: updatesProxy, Sources: src}
	}

	t.Run("agent.proxy", func(t *testing.T) {
		e := newTestEngineUpdates(t)
		p, carried := forwardProxy(t)
		get(t, e, fromPolicy("http://"+p, ""))
		if carried.Load() != 1 {
			t.Fatalf("the configuration's proxy carried %d requests, want 1", carried.Load())
		}
	})
	t.Run("updates.proxy wins", func(t *testing.T) {
		e := newTestEngineUpdates(t)
		p1, viaAgent := forwardProxy(t)
		p2, viaUpdates := forwardProxy(t)
		get(t, e, fromPolicy("http://"+p1, "http://"+p2))
		if viaAgent.Load() != 0 || viaUpdates.Load() != 1 {
			t.Fatalf("agent.proxy carried %d, updates.proxy %d; want 0 and 1", viaAgent.Load(), viaUpdates.Load())
		}
	})
	t.Run("the agent's own proxy without a configured one", func(t *testing.T) {
		e := newTestEngineUpdates(t)
		own, viaOwn := forwardProxy(t)
		e.agentProxy = "http://" + own
		get(t, e, fromPolicy("", ""))
		if viaOwn.Load() != 1 {
			t.Fatalf("the agent's own proxy carried %d requests, want 1", viaOwn.Load())
		}
	})
	t.Run("a failing agent.proxy", func(t *testing.T) {
		var log strings.Builder
		e := &engineUpdates{dir: t.TempDir(), log: slog.New(slog.NewTextHandler(&log, nil))}
		own, viaOwn := forwardProxy(t)
		e.agentProxy = "http://" + own
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		accepts := countAccepts(l) // accepts and hangs up: a broken proxy
		e.settings = fromPolicy("http://user:s3cret@"+l.Addr().String(), "")
		e.mu.Lock()
		cfg, _, _ := e.configLocked()
		e.mu.Unlock()
		for i := range 3 {
			resp, err := cfg.HTTPClient.Get(mirror.URL + "/metadata/timestamp.json")
			if err != nil {
				t.Fatalf("download %d with a broken configured proxy: %v", i, err)
			}
			resp.Body.Close()
		}
		if accepts.Load() != 1 || viaOwn.Load() != 3 {
			t.Fatalf("broken proxy tried %d times, own way carried %d; want 1 and 3", accepts.Load(), viaOwn.Load())
		}
		if out := log.String(); strings.Count(out, "proxy failed for engine updates") != 1 || strings.Contains(out, "s3cret") || !strings.Contains(out, "user:xxxxx@") {
			t.Fatalf("log of the failure:\n%s", out)
		}
	})
}
