package admincli_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/agent"
)

type computer struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	Status string   `json:"status"`
	Tags   []string `json:"tags"`
	Group  struct {
		Path string `json:"path"`
	} `json:"group"`
	Inventory map[string]any `json:"inventory"`
}

type enrollmentToken struct {
	ID        string  `json:"id"`
	Token     string  `json:"token"`
	Uses      int     `json:"uses"`
	RevokedAt *string `json:"revoked_at"`
	Group     struct {
		Path string `json:"path"`
	} `json:"group"`
}

// runAgent runs the real agent in this process until the test ends.
func (h *harness) runAgent(instance, token string) {
	h.t.Helper()
	a, err := agent.New(agent.Config{StateDir: filepath.Join(h.t.TempDir(), "agent"), Servers: []string{h.agent}, Token: token,
		CAFingerprint: h.pin, Instance: instance, Interval: time.Hour, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("agent Run: %v", err)
		}
		a.Close()
	})
}

func TestComputersAndEnrollmentTokens(t *testing.T) {
	t.Parallel()
	h := start(t)
	h.login()
	h.ok("", "groups", "create", "Servers")
	var tok enrollmentToken
	h.jsonOut(&tok, "", "enrollment-tokens", "create", "--group", "Servers", "--uses", "1", "--ttl", "1h", "--description", "lab")
	if !strings.HasPrefix(tok.Token, "mmr_") || tok.Group.Path != "All/Servers" {
		t.Fatalf("enrollment token %+v", tok)
	}
	h.runAgent("cli-test", tok.Token)

	var l list[computer]
	deadline := time.Now().Add(20 * time.Second)
	for {
		h.jsonOut(&l, "", "computers", "list", "--status", "online")
		if len(l.Items) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not come online: %+v", l)
		}
		time.Sleep(100 * time.Millisecond)
	}
	id := l.Items[0].ID
	var c computer
	h.jsonOut(&c, "", "computers", "show", "cli-test") // by name
	if c.ID != id || c.Name != "cli-test" || c.Group.Path != "All/Servers" {
		t.Fatalf("show = %+v", c)
	}
	var tags struct {
		Tags []string `json:"tags"`
	}
	h.jsonOut(&tags, "", "computers", "tag", id, "web")
	if !slices.Equal(tags.Tags, []string{"web"}) {
		t.Fatalf("tags = %v", tags.Tags)
	}
	h.jsonOut(&l, "", "computers", "list", "--tag", "web")
	if len(l.Items) != 1 || l.Items[0].ID != id {
		t.Fatalf("--tag web: %+v", l.Items)
	}
	h.ok("", "computers", "untag", "cli-test", "web")
	h.jsonOut(&l, "", "computers", "list", "--tag", "web")
	if len(l.Items) != 0 {
		t.Fatalf("after untag, --tag web lists %+v", l.Items)
	}
	h.jsonOut(&c, "", "computers", "move", id, "Lost & Found")
	if c.Group.Path != "All/Lost & Found" {
		t.Fatalf("moved to %q", c.Group.Path)
	}
	h.jsonOut(&l, "", "computers", "list", "--group", "Servers")
	if len(l.Items) != 0 {
		t.Fatalf("Servers still lists %+v", l.Items)
	}
	if out := h.ok("", "computers", "list"); !strings.Contains(out, "cli-test") || !strings.Contains(out, "All/Lost & Found") {
		t.Errorf("text list = %q", out)
	}
	h.fails(1, `computer "nope" not found`, "", "computers", "show", "nope")
	h.fails(1, "not found", "", "computers", "move", id, "Nowhere")

	var tl list[enrollmentToken]
	h.jsonOut(&tl, "", "enrollment-tokens", "list")
	if len(tl.Items) != 1 || tl.Items[0].ID != tok.ID || tl.Items[0].Uses != 1 || tl.Items[0].Token != "" {
		t.Fatalf("enrollment tokens = %+v", tl.Items)
	}
	if out := h.ok("", "enrollment-tokens", "list"); !strings.Contains(out, "used up") {
		t.Errorf("text list = %q, want the token marked used up", out)
	}
	h.ok("", "enrollment-tokens", "revoke", tok.ID)
	h.jsonOut(&tl, "", "enrollment-tokens", "list")
	if tl.Items[0].RevokedAt == nil {
		t.Fatal("the revoked token has no revoked_at")
	}
	// A revoked computer leaves the list but not the truth: it is found by
	// its status and its name.
	if out := h.ok("", "computers", "revoke", "cli-test"); !strings.Contains(out, "Computer cli-test revoked") {
		t.Errorf("revoke said %q", out)
	}
	h.jsonOut(&l, "", "computers", "list")
	if len(l.Items) != 0 {
		t.Fatalf("the revoked computer is still in the list: %+v", l.Items)
	}
	h.jsonOut(&l, "", "computers", "list", "--status", "revoked")
	if len(l.Items) != 1 || l.Items[0].ID != id {
		t.Fatalf("--status revoked lists %+v", l.Items)
	}
	h.jsonOut(&c, "", "computers", "show", "cli-test")
	if c.ID != id {
		t.Fatalf("show of the revoked computer by name = %+v", c)
	}
	h.fails(1, "status must be online, offline or revoked", "", "computers", "list", "--status", "gone")
}
