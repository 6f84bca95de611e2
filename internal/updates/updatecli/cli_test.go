package updatecli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/updates/clikit"
	"github.com/mamori/mamori/internal/updates/updatestest"
)

type run struct {
	code           int
	stdout, stderr string
}

func call(f func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) int, args ...string) run {
	var o, e bytes.Buffer
	c := f(context.Background(), args, &o, &e)
	return run{c, o.String(), e.String()}
}

func repoCmd(args ...string) run {
	return call(func(ctx context.Context, a []string, o, e *bytes.Buffer) int { return Repo(ctx, a, o, e) }, args...)
}
func mirrorCmd(args ...string) run {
	return call(func(ctx context.Context, a []string, o, e *bytes.Buffer) int { return Mirror(ctx, a, o, e) }, args...)
}
func agentCmd(args ...string) run {
	return call(func(ctx context.Context, a []string, o, e *bytes.Buffer) int { return AgentEngine(ctx, a, o, e) }, args...)
}

func jsonOf(t *testing.T, r run) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &m); err != nil {
		t.Fatalf("stdout is not one JSON object: %q (stderr %q)", r.stdout, r.stderr)
	}
	return m
}

func must(t *testing.T, r run, code int) run {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	return r
}

func writeSigs(t *testing.T, dir string, evo *updatestest.Evolver) {
	t.Helper()
	os.RemoveAll(dir)
	os.MkdirAll(dir, 0o755)
	var hdb, hsb, ndb strings.Builder
	for _, r := range evo.Records() {
		switch r.Type.Ext() {
		case "hdb":
			hdb.WriteString(r.Line() + "\n")
		case "hsb":
			hsb.WriteString(r.Line() + "\n")
		case "ndb":
			ndb.WriteString(r.Line() + "\n")
		}
	}
	os.WriteFile(filepath.Join(dir, "a.hdb"), []byte(hdb.String()), 0o644)
	os.WriteFile(filepath.Join(dir, "a.hsb"), []byte(hsb.String()), 0o644)
	os.WriteFile(filepath.Join(dir, "a.ndb"), []byte(ndb.String()), 0o644)
}

// TestFirstEngineEndToEnd is the walk-through of docs/updates.md: init,
// publish from signature sources, mirror sync, agent update, export, update
// from the bundle.
func TestFirstEngineEndToEnd(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	init := jsonOf(t, must(t, repoCmd("init", "--repo", repoDir, "--window", "20", "--checkpoint", "4", "--json"), 0))
	pin, _ := init["root_sha256"].(string)
	if len(pin) != 64 {
		t.Fatalf("init: %v", init)
	}
	evo := updatestest.NewEvolver(7, 300)
	sigs := filepath.Join(dir, "sigs")
	writeSigs(t, sigs, evo)
	pub := jsonOf(t, must(t, repoCmd("publish", "--repo", repoDir, "--from", sigs, "--json"), 0))
	if pub["version"].(float64) != 2 || pub["records"].(float64) != float64(evo.Len()) {
		t.Fatalf("publish: %v", pub)
	}
	// the mirror pins the root; the agent gets the root file
	mdir := filepath.Join(dir, "mirror")
	sync := jsonOf(t, must(t, mirrorCmd("sync", "--upstream", repoDir, "--dir", mdir, "--root-sha256", pin, "--json"), 0))
	if sync["engine_version"].(float64) != 2 {
		t.Fatalf("sync: %v", sync)
	}
	root := filepath.Join(repoDir, "public", "metadata", "1.root.json")
	state := filepath.Join(dir, "agent")
	up := jsonOf(t, must(t, agentCmd("update", "--source", mdir, "--state", state, "--root", root, "--json"), 0))
	for _, k := range []string{"from", "to", "bytes_downloaded", "requests", "seconds"} {
		if _, ok := up[k]; !ok {
			t.Fatalf("update output lacks %q: %v", k, up)
		}
	}
	if up["from"].(float64) != 1 || up["to"].(float64) != 2 || up["bytes_downloaded"].(float64) <= 0 || up["requests"].(float64) < 5 {
		t.Fatalf("update: %v", up)
	}
	// a second release from an engine file
	evo.Step(20, 3)
	db, _ := enginedb.Build(evo.Records(), 9)
	ef := filepath.Join(dir, "e.mdb")
	os.WriteFile(ef, db, 0o644)
	must(t, repoCmd("publish", "--repo", repoDir, "--engine", ef), 0)
	must(t, mirrorCmd("sync", "--upstream", repoDir, "--dir", mdir), 0)
	text := must(t, agentCmd("update", "--source", mdir, "--state", state), 0)
	if !strings.Contains(text.stdout, "from=2 to=9 ") || !strings.Contains(text.stdout, "1 delta(s)") {
		t.Fatalf("text output: %q", text.stdout)
	}
	st := jsonOf(t, must(t, agentCmd("status", "--state", state, "--json"), 0))
	if st["engine_version"].(float64) != 9 || st["state"] != "idle" {
		t.Fatalf("status: %v", st)
	}
	// export and an isolated agent
	bundle := filepath.Join(dir, "b.tar")
	must(t, mirrorCmd("export", "--dir", mdir, "--to", bundle), 0)
	iso := filepath.Join(dir, "iso")
	must(t, agentCmd("update", "--source", bundle, "--state", iso, "--root-sha256", pin), 0)
	// rollback
	rb := jsonOf(t, must(t, agentCmd("rollback", "--state", state, "--json"), 0))
	if rb["from"].(float64) != 9 || rb["to"].(float64) != 2 {
		t.Fatalf("rollback: %v", rb)
	}
	must(t, agentCmd("status", "--state", state), 0)
	// repo status, refresh, prune
	rs := jsonOf(t, must(t, repoCmd("status", "--repo", repoDir, "--json"), 0))
	if rs["engine_version"].(float64) != 9 || rs["root_sha256"] != pin {
		t.Fatalf("repo status: %v", rs)
	}
	must(t, repoCmd("refresh", "--repo", repoDir), 0)
	must(t, repoCmd("prune", "--repo", repoDir), 0)
	must(t, repoCmd("rotate-root", "--repo", repoDir, "--new-root-key", filepath.Join(dir, "root2.pem")), 0)
	must(t, mirrorCmd("sync", "--upstream", repoDir, "--dir", mdir), 0)
	must(t, agentCmd("update", "--source", mdir, "--state", state), 0)
}

func TestAgentUpdate_VerificationFailureExitsOneAndKeepsTheEngine(t *testing.T) {
	r := updatestest.NewRepo(t, 10, 2, 100)
	r.PublishNext(t, 5, 0)
	root := filepath.Join(t.TempDir(), "root.json")
	os.WriteFile(root, r.Root, 0o644)
	state := t.TempDir()
	must(t, agentCmd("update", "--source", r.Dir, "--state", state, "--root", root), 0)
	r.PublishNext(t, 5, 0)
	// damage every delta and full engine in a copy of the repository
	bad := t.TempDir()
	filepath.WalkDir(r.Public(), func(p string, d os.DirEntry, err error) error {
		rel, _ := filepath.Rel(r.Public(), p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(bad, rel), 0o755)
		}
		b, _ := os.ReadFile(p)
		if strings.HasPrefix(rel, "targets") {
			b[len(b)/2] ^= 1
		}
		return os.WriteFile(filepath.Join(bad, rel), b, 0o644)
	})
	res := must(t, agentCmd("update", "--source", bad, "--state", state, "--json"), 1)
	obj := jsonOf(t, res)
	if obj["kind"] != "hash" || obj["code"] != "invalid" || obj["from"].(float64) != 2 || obj["to"].(float64) != 2 {
		t.Fatalf("failure object: %v", obj)
	}
	if lines := strings.Count(strings.TrimSpace(res.stderr), "\n"); !strings.Contains(res.stderr, "verification failed") || lines != 0 {
		t.Fatalf("stderr should be one clear line: %q", res.stderr)
	}
	st := jsonOf(t, must(t, agentCmd("status", "--state", state, "--json"), 0))
	if st["engine_version"].(float64) != 2 || st["last_error_kind"] != "hash" {
		t.Fatalf("status after the failure: %v", st)
	}
}

func TestCommands_RefuseBadArgumentsWithExitTwo(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		r    run
	}{
		{"no repo command", repoCmd()},
		{"unknown repo command", repoCmd("explode")},
		{"init without repo", repoCmd("init")},
		{"init bad window", repoCmd("init", "--repo", dir, "--window", "3", "--checkpoint", "16")},
		{"init bad expiry", repoCmd("init", "--repo", dir, "--timestamp-expiry", "-1h")},
		{"publish both", repoCmd("publish", "--repo", dir, "--engine", "x", "--from", "y")},
		{"publish neither", repoCmd("publish", "--repo", dir)},
		{"publish bad version", repoCmd("publish", "--repo", dir, "--from", "y", "--version", "-3")},
		{"positional", repoCmd("status", "--repo", dir, "extra")},
		{"unknown flag", repoCmd("status", "--nope")},
		{"prune negative", repoCmd("prune", "--repo", dir, "--grace", "-1s")},
		{"no mirror command", mirrorCmd()},
		{"serve without upstream", mirrorCmd("serve", "--dir", dir)},
		{"serve bad rate", mirrorCmd("serve", "--dir", dir, "--upstream", dir, "--rate", "lots")},
		{"serve bad client rate", mirrorCmd("serve", "--dir", dir, "--upstream", dir, "--client-rate", "-5M")},
		{"serve zero conns", mirrorCmd("serve", "--dir", dir, "--upstream", dir, "--max-conns", "0")},
		{"serve half tls", mirrorCmd("serve", "--dir", dir, "--upstream", dir, "--tls-cert", "c")},
		{"sync without dir", mirrorCmd("sync", "--upstream", dir)},
		{"export without to", mirrorCmd("export", "--dir", dir)},
		{"no engine command", agentCmd()},
		{"update without source", agentCmd("update", "--state", dir)},
		{"update without state", agentCmd("update", "--source", dir)},
		{"rollback without state", agentCmd("rollback")},
		{"status without state", agentCmd("status")},
		{"update bad keep", agentCmd("update", "--state", dir, "--source", dir, "--keep", "0")},
		{"update negative offline", agentCmd("update", "--state", dir, "--source", dir, "--offline-max-age", "-1h")},
		{"update missing root file", agentCmd("update", "--state", dir, "--source", dir, "--root", filepath.Join(dir, "none"))},
		{"rollback zero hold", agentCmd("rollback", "--state", dir, "--hold", "0s")},
	} {
		if tc.r.code != 2 {
			t.Errorf("%s: exit %d (stderr %q)", tc.name, tc.r.code, tc.r.stderr)
			continue
		}
		if tc.r.stderr != "" && strings.Count(tc.r.stderr, "\n") != 1 {
			t.Errorf("%s: stderr is not one line: %q", tc.name, tc.r.stderr)
		}
	}
	t.Setenv("MAMORI_MIRROR_RATE", "fast")
	if r := mirrorCmd("serve", "--dir", dir, "--upstream", dir); r.code != 2 || !strings.Contains(r.stderr, "MAMORI_MIRROR_RATE") {
		t.Errorf("bad env value: %d %q", r.code, r.stderr)
	}
	for _, h := range [][]string{{"init", "-h"}, {"publish", "-h"}} {
		if r := repoCmd(h...); r.code != 0 || !strings.Contains(r.stdout, "usage: mamori repo") || !strings.Contains(r.stdout, "MAMORI_REPO") {
			t.Errorf("%v: %d %q", h, r.code, r.stdout)
		}
	}
	if r := agentCmd("update", "-h"); r.code != 0 || !strings.Contains(r.stdout, "MAMORI_UPDATE_SOURCES") {
		t.Errorf("update -h: %q", r.stdout)
	}
}

func TestMirrorServe_EndToEnd(t *testing.T) {
	r := updatestest.NewRepo(t, 10, 2, 100)
	v := r.PublishNext(t, 5, 0)
	root := filepath.Join(t.TempDir(), "root.json")
	os.WriteFile(root, r.Root, 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	var o, e syncBuf
	done := make(chan int)
	go func() {
		done <- Mirror(ctx, []string{"serve", "--upstream", r.Dir, "--dir", t.TempDir(), "--root", root, "--listen", "127.0.0.1:0", "--rate", "10M/s"}, &o, &e)
	}()
	var addr string
	re := regexp.MustCompile(`on (127\.0\.0\.1:\d+)`)
	deadline := time.Now().Add(10 * time.Second)
	for addr == "" && time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(e.String()); m != nil {
			addr = m[1]
		}
		time.Sleep(10 * time.Millisecond)
	}
	if addr == "" {
		t.Fatalf("no address: %q", e.String())
	}
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/-/healthz")
		if err == nil && resp.StatusCode == 200 {
			resp.Body.Close()
			break
		}
		if resp != nil {
			resp.Body.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	up := jsonOf(t, must(t, agentCmd("update", "--source", "http://"+addr, "--state", t.TempDir(), "--root", root, "--json"), 0))
	if up["to"].(float64) != float64(v) {
		t.Fatalf("%v", up)
	}
	resp, err := http.Get("http://" + addr + "/-/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var mb bytes.Buffer
	mb.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(mb.String(), "mamori_mirror_bytes_served_total") {
		t.Fatal("no mirror metrics")
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("serve exit %d: %s", code, e.String())
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1234": 1234, "50M": 50 << 20, "50MiB": 50 << 20, "50MB": 50 << 20, "1.5G": 3 << 29,
		"64k": 64 << 10, "2T": 2 << 40, "50M/s": 50 << 20, " 7 ": 7} {
		if got, err := clikit.ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d %v, want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "M", "-1", "1..2M", "1e9", "abc", "9999999999T", "5X", "/s", strings.Repeat("9", 40)} {
		if _, err := clikit.ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"50M", "1.5G", "0", "12KiB/s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := clikit.ParseSize(s)
		if err == nil && (n < 0 || n > 1<<62) {
			t.Fatalf("%q parsed to %d", s, n)
		}
	})
}

// syncBuf is a goroutine-safe buffer.
type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}
