package taskrun

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/agent/agentcfg"
	"github.com/mamori/mamori/internal/agentproto"
)

var eicar = []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$` + `EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`)

// recorder is an in-memory outbox: the runner's contract is only Append.
type recorder struct {
	mu     sync.Mutex
	events []recorded
	added  chan struct{}
}

type recorded struct {
	typ  string
	data map[string]any
}

func newRecorder() *recorder { return &recorder{added: make(chan struct{}, 1000)} }

func (o *recorder) Append(typ string, data any) (string, error) {
	b, _ := json.Marshal(data)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	o.mu.Lock()
	o.events = append(o.events, recorded{typ, m})
	o.mu.Unlock()
	o.added <- struct{}{}
	return "", nil
}

func (o *recorder) of(typ, run string) []map[string]any {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []map[string]any
	for _, e := range o.events {
		if e.typ == typ && (run == "" || e.data["run_id"] == run) {
			out = append(out, e.data)
		}
	}
	return out
}

// finished waits for the result of run.
func (o *recorder) finished(t *testing.T, run string) map[string]any {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		if f := o.of(EventFinished, run); len(f) > 0 {
			return f[0]
		}
		select {
		case <-o.added:
		case <-deadline:
			t.Fatalf("run %s never finished; events %+v", run, o.events)
		}
	}
}

func newRunner(t *testing.T, dir string, out Outbox) (*Runner, context.CancelFunc) {
	t.Helper()
	cfg, err := agentcfg.Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r := &Runner{StateDir: dir, Outbox: out, Config: cfg, Log: slog.New(slog.DiscardHandler),
		Notify: FileNotifier{StateDir: dir}}
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); r.Wait() })
	return r, cancel
}

func push(r *Runner, runs ...*agentproto.TaskRun) {
	r.Handle(&agentproto.TaskRuns{Runs: runs})
}

func run(id, typ, params string) *agentproto.TaskRun {
	return &agentproto.TaskRun{Id: id, Type: typ, ParamsJson: []byte(params), Attempt: 1,
		ExpiresUnixMs: time.Now().Add(time.Hour).UnixMilli()}
}

func skipOnWindows(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("uses /bin/sh")
	}
}

func TestRunCommand_OutputExitCodeTimeoutAndCap(t *testing.T) {
	skipOnWindows(t)
	out := newRecorder()
	r, _ := newRunner(t, t.TempDir(), out)
	work := t.TempDir()
	push(r,
		run("ok", "run_command", `{"command":"echo hello; echo err >&2; pwd","working_directory":"`+work+`"}`),
		run("exit3", "run_command", `{"command":"echo partial; exit 3"}`),
		run("slow", "run_command", `{"command":"sleep 30 & sleep 30; echo never","timeout":"1s"}`),
		run("big", "run_command", `{"command":"head -c 100000 /dev/zero | tr '\\0' x","max_output":1000}`),
		run("nodir", "run_command", `{"command":"true","working_directory":"/no/such/dir"}`),
	)
	ok := out.finished(t, "ok")
	if ok["state"] != "succeeded" || ok["exit_code"] != 0.0 || ok["output"] != "hello\nerr\n"+work+"\n" {
		t.Fatalf("ok %+v", ok)
	}
	e3 := out.finished(t, "exit3")
	if e3["state"] != "failed" || e3["exit_code"] != 3.0 || e3["output"] != "partial\n" || e3["error"] != "exit status 3" {
		t.Fatalf("exit3 %+v", e3)
	}
	start := time.Now()
	slow := out.finished(t, "slow")
	if slow["state"] != "failed" || !strings.Contains(slow["error"].(string), "timeout of 1s") || strings.Contains(slow["output"].(string), "never") {
		t.Fatalf("slow %+v", slow)
	}
	if time.Since(start) > 20*time.Second {
		t.Fatal("the background child kept the run alive")
	}
	big := out.finished(t, "big")
	if o := big["output"].(string); !strings.HasPrefix(o, strings.Repeat("x", 1000)+"\n[99000 more bytes") {
		t.Fatalf("big output %.80q (%d bytes)", o, len(o))
	}
	if nd := out.finished(t, "nodir"); nd["state"] != "failed" || !strings.Contains(nd["error"].(string), "/no/such/dir") {
		t.Fatalf("nodir %+v", nd)
	}
	if n := len(out.of(EventStarted, "")); n != 5 {
		t.Fatalf("%d started events", n)
	}
}

func TestRunner_RunsOnceAcrossRedeliveryAndRestart(t *testing.T) {
	skipOnWindows(t)
	dir := t.TempDir()
	marker := filepath.Join(t.TempDir(), "count")
	out := newRecorder()
	r, stop := newRunner(t, dir, out)
	cmd := run("once", "run_command", `{"command":"echo x >> `+marker+`"}`)
	push(r, cmd)
	push(r, cmd) // redelivered after a reconnect
	out.finished(t, "once")
	stop()
	r.Wait()
	// A new agent process gets it again: still once.
	out2 := newRecorder()
	r2, _ := newRunner(t, dir, out2)
	push(r2, cmd)
	push(r2, run("after", "run_command", `{"command":"true"}`))
	out2.finished(t, "after")
	b, _ := os.ReadFile(marker)
	if string(b) != "x\n" {
		t.Fatalf("ran %q", b)
	}
	if len(out2.of(EventFinished, "once")) != 0 {
		t.Fatal("reported again")
	}
}

func TestRunner_CancelExpiryAndInterruptedRuns(t *testing.T) {
	skipOnWindows(t)
	dir := t.TempDir()
	out := newRecorder()
	r, stop := newRunner(t, dir, out)
	push(r, run("long", "run_command", `{"command":"sleep 30","timeout":"1h"}`))
	expired := run("late", "run_command", `{"command":"true"}`)
	expired.ExpiresUnixMs = time.Now().Add(-time.Minute).UnixMilli()
	push(r, expired)
	if late := out.finished(t, "late"); late["state"] != "failed" || !strings.Contains(late["error"].(string), "expired") {
		t.Fatalf("late %+v", late)
	}
	for len(out.of(EventStarted, "long")) == 0 {
		<-out.added
	}
	r.Handle(&agentproto.TaskRuns{Cancelled: []string{"long"}})
	if c := out.finished(t, "long"); c["state"] != "failed" || !strings.Contains(c["error"].(string), "cancelled") {
		t.Fatalf("cancelled %+v", c)
	}
	// A run in progress when the agent stops is reported at the next start;
	// a restart run in progress means the computer restarted.
	push(r, run("inflight", "run_command", `{"command":"sleep 30","timeout":"1h"}`))
	for len(out.of(EventStarted, "inflight")) == 0 {
		<-out.added
	}
	stop()
	r.Wait()
	if len(out.of(EventFinished, "inflight")) != 0 {
		t.Fatal("an interrupted run was reported as finished by the stopping agent")
	}
	var ledger map[string]*entry
	b, _ := os.ReadFile(filepath.Join(dir, ledgerFile))
	_ = json.Unmarshal(b, &ledger)
	ledger["reboot"] = &entry{Type: "restart", State: "running", Received: time.Now()}
	b, _ = json.Marshal(ledger)
	_ = os.WriteFile(filepath.Join(dir, ledgerFile), b, 0o600)
	out2 := newRecorder()
	newRunner(t, dir, out2)
	if f := out2.finished(t, "inflight"); f["state"] != "failed" || !strings.Contains(f["error"].(string), "stopped") {
		t.Fatalf("inflight %+v", f)
	}
	if f := out2.finished(t, "reboot"); f["state"] != "succeeded" {
		t.Fatalf("reboot %+v", f)
	}
}

func TestRunner_RefusesHostileRuns(t *testing.T) {
	out := newRecorder()
	r, _ := newRunner(t, t.TempDir(), out)
	push(r,
		run("", "run_command", `{"command":"true"}`),
		run(strings.Repeat("x", 65), "run_command", `{"command":"true"}`),
		run("bad-json", "run_command", `{"command":`),
		run("wrong-type", "run_command", `{"command":42}`),
		run("unknown", "format_disk", `{}`),
		run("server", "delete_not_connecting", `{"days":1}`),
		run("huge", "run_command", `{"command":"`+strings.Repeat("a", MaxParamsBytes)+`"}`),
		run("no-engine", "engine_update", `{}`),
	)
	for id, want := range map[string]string{"bad-json": "JSON object", "wrong-type": "run_command.command", "unknown": "unknown task type",
		"server": "server task", "huge": "larger than", "no-engine": "not set up"} {
		f := out.finished(t, id)
		if f["state"] != "failed" || !strings.Contains(f["error"].(string), want) {
			t.Errorf("%s: %+v, want error with %q", id, f, want)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(out.of(EventStarted, "")); n != 6 {
		t.Fatalf("%d runs started; runs without a usable id must be ignored", n)
	}
}

func TestScanTask_FindsEICARAndReportsTheDetection(t *testing.T) {
	dir := t.TempDir()
	out := newRecorder()
	r, _ := newRunner(t, dir, out)
	files := t.TempDir()
	if err := os.WriteFile(filepath.Join(files, "eicar.com"), eicar, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(files, "clean.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(files, "skip"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(files, "skip", "eicar2.com"), eicar, 0o644); err != nil {
		t.Fatal(err)
	}
	push(r, run("scan1", "scan", fmt.Sprintf(`{"paths":[%q],"exclusions":["skip"],"action":"report"}`, files)))
	f := out.finished(t, "scan1")
	if f["state"] != "succeeded" || f["exit_code"] != 1.0 || !strings.Contains(f["output"].(string), "eicar.com") {
		t.Fatalf("scan %+v", f)
	}
	dets := out.of("detection.found", "")
	if len(dets) != 1 || !strings.HasSuffix(dets[0]["path"].(string), "eicar.com") || dets[0]["action"] != "reported" ||
		dets[0]["source"] != "scan task scan1" {
		t.Fatalf("detections %+v", dets)
	}
	if _, err := os.Stat(filepath.Join(files, "eicar.com")); err != nil {
		t.Fatal("report action moved the file")
	}
	// Quarantine (the policy default) moves it into the agent's quarantine.
	push(r, run("scan2", "scan", fmt.Sprintf(`{"paths":[%q],"exclusions":["skip"]}`, files)))
	if f := out.finished(t, "scan2"); f["state"] != "succeeded" {
		t.Fatalf("scan2 %+v", f)
	}
	if _, err := os.Stat(filepath.Join(files, "eicar.com")); !os.IsNotExist(err) {
		t.Fatal("not quarantined")
	}
	if d := out.of("detection.found", ""); len(d) != 2 || d[1]["action"] != "quarantined" {
		t.Fatalf("detections %+v", d)
	}
	push(r, run("scan3", "scan", `{"paths":["/no/such/place"]}`))
	if f := out.finished(t, "scan3"); f["state"] != "failed" {
		t.Fatalf("scan of a missing path %+v", f)
	}
}

type fakeUpload struct {
	mu   sync.Mutex
	name string
	data []byte
	err  error
}

func (u *fakeUpload) Upload(ctx context.Context, runID, name string, r io.Reader, size int64) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if int64(len(b)) != size {
		return fmt.Errorf("size %d, read %d", size, len(b))
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.name, u.data = name, b
	return u.err
}

func TestDiagnostics_BundleLeavesTheKeyOut(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "identity.json"), []byte(`{"key_pem":"PRIVATE"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "scan.json"), []byte(`{"action":"report"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "local-config.json"), []byte(`{"agent.proxy":"http://agent:S3cretPw@proxy:3128"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := newRecorder()
	r, _ := newRunner(t, dir, out)
	up := &fakeUpload{}
	r.Upload = up
	r.Diagnostics = func() map[string][]byte {
		return map[string][]byte{"agent-log.txt": []byte("line 1\nline 2\n"), "identity-public.json": []byte(`{"proxy":"http://u:Pw0rd@p:8080"}`)}
	}
	push(r, run("diag", "diagnostics", `{}`))
	f := out.finished(t, "diag")
	if f["state"] != "succeeded" || !strings.HasPrefix(up.name, "diagnostics-") {
		t.Fatalf("diag %+v name %q", f, up.name)
	}
	gz, err := gzip.NewReader(bytes.NewReader(up.data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = string(b)
	}
	if files["agent-log.txt"] != "line 1\nline 2\n" || files["state/scan.json"] == "" || files["summary.txt"] == "" {
		t.Fatalf("bundle files %v", keys(files))
	}
	for name, content := range files {
		if strings.Contains(content, "PRIVATE") || name == "state/identity.json" {
			t.Fatalf("the private key leaked into %s", name)
		}
		if strings.Contains(content, "S3cretPw") || strings.Contains(content, "Pw0rd") {
			t.Fatalf("a proxy password leaked into %s: %s", name, content)
		}
	}
	if !strings.Contains(files["state/local-config.json"], "http://agent:xxxxx@proxy:3128") {
		t.Fatalf("the proxy is not kept, hidden: %q", files["state/local-config.json"])
	}
	up.err = fmt.Errorf("server refused")
	push(r, run("diag2", "diagnostics", `{}`))
	if f := out.finished(t, "diag2"); f["state"] != "failed" || !strings.Contains(f["error"].(string), "server refused") {
		t.Fatalf("diag2 %+v", f)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestPowerMessageAndExport(t *testing.T) {
	skipOnWindows(t)
	dir := t.TempDir()
	out := newRecorder()
	r, _ := newRunner(t, dir, out)
	log := filepath.Join(t.TempDir(), "power.log")
	script := filepath.Join(t.TempDir(), "power.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$@\" >> "+log+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.Power = SystemPower{Command: script}
	push(r, run("reboot", "restart", `{"delay":"90s","reason":"kernel update"}`), run("msg", "display_message", `{"title":"Hi","message":"Save your work","level":"warning"}`),
		run("cfg", "export_config", `{}`))
	if f := out.finished(t, "reboot"); f["state"] != "succeeded" {
		t.Fatalf("restart %+v", f)
	}
	if b, _ := os.ReadFile(log); string(b) != "restart 90 kernel update\n" {
		t.Fatalf("power command got %q", b)
	}
	if f := out.finished(t, "msg"); f["state"] != "succeeded" {
		t.Fatalf("message %+v", f)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "messages.jsonl")); !strings.Contains(string(b), "Save your work") {
		t.Fatalf("messages %q", b)
	}
	cfg := out.finished(t, "cfg")
	if cfg["state"] != "succeeded" || !strings.Contains(cfg["output"].(string), `"agent.check_in_interval"`) {
		t.Fatalf("export %+v", cfg)
	}
}
