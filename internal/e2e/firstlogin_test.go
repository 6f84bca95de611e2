package e2e

import (
	"testing"
)

// The password a first start generates sits in a file until someone reads
// it: it opens only the password change, and stops working once changed.
func TestFirstStart_GeneratedAdminPasswordOpensOnlyThePasswordChange(t *testing.T) {
	t.Parallel()
	s := startServer(t) // the harness logs in with the generated password and changes it
	if s.firstLogin.restriction != "password_change" || s.firstLogin.computersCode != 403 {
		t.Fatalf("first login with the generated password: restriction %q, GET /api/v1/computers %d; want password_change and 403",
			s.firstLogin.restriction, s.firstLogin.computersCode)
	}
	c := s.client()
	if code := c.do(t, "POST", "/api/v1/session", map[string]string{"username": "admin", "password": s.initialPassword()}, nil); code != 401 {
		t.Fatalf("the generated password after its change: login %d, want 401", code)
	}
	c.login(t, "admin", s.password()) // the new one opens everything
	if code := c.do(t, "GET", "/api/v1/computers", nil, nil); code != 200 {
		t.Fatalf("GET /api/v1/computers with the changed password: %d", code)
	}
	// A restart keeps it changed: nothing is generated again.
	s.restart()
	if code := s.client().do(t, "POST", "/api/v1/session", map[string]string{"username": "admin", "password": s.initialPassword()}, nil); code != 401 {
		t.Fatalf("the generated password after a restart: login %d, want 401", code)
	}
}
