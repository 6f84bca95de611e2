package e2e

import (
	"os/exec"

	"regexp"
	"strings"
	"testing"

	"github.com/mamori/mamori/internal/store"
)

// Whoever runs the server gets back in when every administrator is locked
// out: `mamori recover` on the server's machine gives a new password (to
// change at once), unlocks the account and records it in the audit log.
func TestRecover_ALockedOutAdministratorGetsBackIn(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	for range 6 {
		c.do(t, "POST", "/api/v1/session", map[string]string{"username": "admin", "password": "a wrong guess 123"}, nil)
	}
	if code := c.do(t, "POST", "/api/v1/session", map[string]string{"username": "admin", "password": s.password()}, nil); code != 429 {
		t.Fatalf("admin not locked out: login %d", code)
	}

	out, err := exec.Command(bin("mamori"), "recover", "--data", s.data).CombinedOutput()
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`New password of admin \(change it at the next login\): (\S+)`).FindSubmatch(out)
	if m == nil || len(m[1]) < 20 {
		t.Fatalf("recover output:\n%s", out)
	}
	var sess struct {
		Restriction string `json:"restriction"`
	}
	if code := c.do(t, "POST", "/api/v1/session", map[string]string{"username": "admin", "password": string(m[1])}, &sess); code != 200 || sess.Restriction != "password_change" {
		t.Fatalf("login with the recovered password: %d %+v", code, sess)
	}
	// The administrator's earlier session is gone with the recovery; the
	// audit log is read from the store.
	db, err := store.OpenSQLite(t.Context(), s.data, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	es, _, err := db.ListAudit(t.Context(), store.AuditFilter{Domain: "users"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range es {
		found = found || (e.Action == "recover" && e.Via == "cli" && e.ObjectName == "admin")
	}
	if !found {
		t.Fatalf("no audit entry of the recovery: %+v", es)
	}
	if code := s.api.do(t, "GET", "/api/v1/computers", nil, nil); code != 401 {
		t.Fatalf("the session from before the recovery still works: %d", code)
	}
	if out, err := exec.Command(bin("mamori"), "recover", "--data", s.data, "--user", "nobody").CombinedOutput(); err == nil || !strings.Contains(string(out), "not found") {
		t.Fatalf("recovering an unknown user: %v\n%s", err, out)
	}
}
