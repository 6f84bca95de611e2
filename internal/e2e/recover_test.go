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
	// Guesses from another address than admin's last login lock admin out
	// of everywhere but that address.
	c := s.clientFrom("127.0.0.2")
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

// Guessing admin's password from another address locks the account there
// and everywhere else, but admin still logs in from where they last did.
func TestLogin_GuessesFromElsewhereDoNotLockTheOwnerOut(t *testing.T) {
	t.Parallel()
	s := startServer(t) // the harness logged in as admin from 127.0.0.1
	guesser := s.clientFrom("127.0.0.3")
	for range 6 {
		guesser.do(t, "POST", "/api/v1/session", map[string]string{"username": "admin", "password": "a wrong guess 123"}, nil)
	}
	for _, c := range []*apiClient{guesser, s.clientFrom("127.0.0.4")} {
		if code := c.do(t, "POST", "/api/v1/session", map[string]string{"username": "admin", "password": s.password()}, nil); code != 429 {
			t.Fatalf("the right password from another address while locked: %d, want 429", code)
		}
	}
	owner := s.clientFrom("127.0.0.1")
	owner.login(t, "admin", s.password())
	if code := owner.do(t, "GET", "/api/v1/computers", nil, nil); code != 200 {
		t.Fatalf("admin from their usual address: GET /api/v1/computers %d", code)
	}
}
