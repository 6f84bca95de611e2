package agent

import (
	"context"
	"io"
	"log/slog"
	"strings"
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
