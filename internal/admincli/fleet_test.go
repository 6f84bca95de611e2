package admincli_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/apiclient"
	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/configs"
	"github.com/mamori/mamori/internal/dyngroup"
	"github.com/mamori/mamori/internal/enrollment"
	"github.com/mamori/mamori/internal/httpapi"
	"github.com/mamori/mamori/internal/password"
	"github.com/mamori/mamori/internal/pki"
	"github.com/mamori/mamori/internal/scheduler"
	"github.com/mamori/mamori/internal/store"
)

// fleet stands in for agents: computers are enrolled straight into the
// store, and the runs the real scheduler delivers are "executed" here and
// reported through check-ins, as an agent's events would be:
//
//   - run_command: "sleep" starts and never finishes; on a computer whose
//     name starts with "bad-" it fails with exit code 3; otherwise it
//     succeeds with the output "NAME: COMMAND";
//   - diagnostics: uploads a bundle ("bundle of NAME") and succeeds;
//   - anything else succeeds.
type fleet struct {
	t      *testing.T
	db     *store.DB
	attach string
	ctx    context.Context

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// startFull runs the real API and store in this process over TLS with what
// a complete server has around them: dynamic group evaluation, effective
// configurations, the task scheduler (delivering to the fleet) and
// attachments. The harness is logged in as admin.
func startFull(t *testing.T) (*harness, *fleet) {
	t.Helper()
	dir := t.TempDir()
	db, err := store.OpenSQLite(t.Context(), dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	hash, err := password.Hash(adminPassword)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CreateUser(t.Context(), &store.User{ID: "u-admin", Username: "admin", PasswordHash: hash, HomeGroupID: store.GroupAll,
		PermissionSetIDs: []string{store.PermSetAdministrator}}); err != nil {
		t.Fatal(err)
	}
	ca, _, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate(dir, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	quiet := slog.New(slog.DiscardHandler)
	f := &fleet{t: t, db: db, attach: filepath.Join(dir, "attachments"), ctx: ctx}
	if err := os.Mkdir(f.attach, 0o700); err != nil {
		t.Fatal(err)
	}
	eval := &dyngroup.Evaluator{Store: db, Log: quiet}
	sched := &scheduler.Scheduler{Store: db, Deliver: f, Server: &scheduler.ServerTasks{Store: db}, Log: quiet, Tick: 50 * time.Millisecond}
	api := httpapi.New(httpapi.Config{
		Store: db, Auth: &auth.Service{Store: db}, Enrollment: &enrollment.Service{Store: db, CA: ca},
		DynamicGroups: eval, Configurations: &configs.Service{Store: db}, Scheduler: sched, AttachmentDir: f.attach,
		CAFingerprint: ca.Fingerprint(), CAPEM: pki.EncodeCert(ca.Cert.Raw), Log: quiet,
	})
	srv := httptest.NewUnstartedServer(api)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { defer bg.Done(); eval.Run(ctx) }()
	go func() {
		defer bg.Done()
		if err := sched.Run(ctx); err != nil {
			t.Errorf("scheduler: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		bg.Wait()
		f.mu.Lock()
		f.closed = true
		f.mu.Unlock()
		f.wg.Wait()
		srv.Close()
	})
	h := newHarness(t)
	h.url, h.pin, h.data = srv.URL, ca.Fingerprint(), dir
	h.login()
	return h, f
}

// add enrolls a computer into the static group at path; an online one
// gets its runs delivered. It returns the computer's id.
func (f *fleet) add(name, group string, online bool) string {
	f.t.Helper()
	ctx := f.t.Context()
	groups, err := f.db.Groups(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	g, err := groups.Resolve(apiclient.NormalizeGroupPath(group))
	if err != nil {
		f.t.Fatalf("group %s: %v", group, err)
	}
	id := "c-" + name
	secret := "seed-secret-" + id
	now := time.Now().UTC().Truncate(time.Millisecond)
	if err := f.db.CreateEnrollmentToken(ctx, &store.EnrollmentToken{ID: "tok-" + id, SecretHash: enrollment.HashSecret(secret), GroupID: g.ID,
		ExpiresAt: now.Add(time.Hour), CreatedBy: "test", CreatedAt: now.Add(-time.Minute)}); err != nil {
		f.t.Fatal(err)
	}
	c := &store.Computer{ID: id, Name: name, Hostname: name + ".example.net", HardwareFingerprint: fmt.Sprintf("%x", sha256.Sum256([]byte(id)))[:32],
		Platform: "linux"}
	cert := &store.AgentCertificate{Serial: "serial-" + id, ComputerID: id, IssuedAt: now, NotAfter: now.Add(24 * time.Hour)}
	if err := f.db.EnrollComputer(ctx, enrollment.HashSecret(secret), now, c, cert); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.db.ApplyCheckIn(ctx, &store.CheckIn{ComputerID: id, Now: now,
		Summary: store.ComputerSummary{OSName: "Debian GNU/Linux", OSVersion: "12", AgentVersion: "1.0.0"}}); err != nil {
		f.t.Fatal(err)
	}
	if online {
		if err := f.db.ApplyPresence(ctx, []store.PresenceUpdate{{ComputerID: id, Status: store.StatusOnline, LastSeen: now, ConnectedSince: now}}); err != nil {
			f.t.Fatal(err)
		}
	}
	return id
}

// Deliver implements scheduler.Deliverer: the runs execute in the
// background.
func (f *fleet) Deliver(computerID string, runs []*store.TaskRun) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for _, r := range runs {
			f.execute(computerID, r)
		}
	}()
	return true
}

func (f *fleet) report(computerID, eventID, typ string, data any) {
	b, _ := json.Marshal(data)
	now := time.Now().UTC().Truncate(time.Millisecond)
	_, err := f.db.ApplyCheckIn(f.ctx, &store.CheckIn{ComputerID: computerID, Now: now,
		Events: []store.Event{{ID: eventID, Type: typ, OccurredAt: now, Data: string(b)}}})
	if err != nil && f.ctx.Err() == nil {
		f.t.Errorf("reporting %s of %s: %v", typ, computerID, err)
	}
}

func (f *fleet) execute(computerID string, r *store.TaskRun) {
	name := strings.TrimPrefix(computerID, "c-")
	f.report(computerID, r.ID+"-started", store.EventTaskStarted, map[string]string{"run_id": r.ID})
	var p map[string]any
	_ = json.Unmarshal([]byte(r.Params), &p)
	result := map[string]any{"run_id": r.ID, "state": store.RunSucceeded}
	switch r.Type {
	case "run_command":
		cmd, _ := p["command"].(string)
		switch {
		case cmd == "sleep":
			return // runs until cancelled
		case strings.HasPrefix(name, "bad-"):
			result["state"], result["exit_code"], result["output"], result["error"] = store.RunFailed, 3, name+": no such command\n", "exit status 3"
		default:
			result["exit_code"], result["output"] = 0, name+": "+cmd+"\n"
		}
	case "diagnostics":
		file := r.ID + ".tar.gz"
		if err := os.WriteFile(filepath.Join(f.attach, file), []byte("bundle of "+name), 0o600); err != nil {
			f.t.Error(err)
			return
		}
		if err := f.db.SetRunAttachment(f.ctx, r.ID, file); err != nil && f.ctx.Err() == nil {
			f.t.Error(err)
		}
	}
	f.report(computerID, r.ID+"-finished", store.EventTaskFinished, result)
}

// eventually polls cond until it holds (20 s at most).
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writeFile writes a file in the test's directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
