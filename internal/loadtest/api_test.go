package loadtest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// fakeAPI answers the login with restriction, and /metrics only to the
// last session it issued (storing another value in session forgets it).
type fakeAPI struct {
	restriction string
	session     atomic.Int64
	logins      atomic.Int64
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/api/v1/session":
		n := f.logins.Add(1)
		f.session.Store(n)
		http.SetCookie(w, &http.Cookie{Name: "mamori_session", Value: fmt.Sprint(n), Path: "/"})
		fmt.Fprintf(w, `{"restriction":%q}`, f.restriction)
	case "/metrics":
		c, err := r.Cookie("mamori_session")
		if err != nil || c.Value != fmt.Sprint(f.session.Load()) {
			http.Error(w, `{"error":{"code":"unauthorized"}}`, http.StatusUnauthorized)
			return
		}
		fmt.Fprintln(w, "process_resident_memory_bytes 1234")
	default:
		http.NotFound(w, r)
	}
}

func newFakeAPI(t *testing.T, restriction string) (*fakeAPI, *metricsSource) {
	f := &fakeAPI{restriction: restriction}
	srv := httptest.NewTLSServer(f)
	t.Cleanup(srv.Close)
	api := newAPI(srv.URL, srv.Certificate(), "the admin password")
	return f, &metricsSource{url: srv.URL + "/metrics", api: api}
}

func TestMetrics_LogInFirstAndAgainWhenTheSessionEnded(t *testing.T) {
	f, m := newFakeAPI(t, "")
	got, err := m.read(false)
	if err != nil || got["process_resident_memory_bytes"] != 1234 {
		t.Fatalf("first read: %v, %v", got, err)
	}
	if _, err := m.read(false); err != nil || f.logins.Load() != 1 {
		t.Fatalf("second read: %v after %d logins, want 1 login", err, f.logins.Load())
	}
	f.session.Store(-1) // the server forgot the session (idle timeout)
	got, err = m.read(false)
	if err != nil || got["process_resident_memory_bytes"] != 1234 || f.logins.Load() != 2 {
		t.Fatalf("read after the session ended: %v, %v after %d logins, want 2", got, err, f.logins.Load())
	}
}

func TestMetrics_ARestrictedLoginIsAClearError(t *testing.T) {
	f, m := newFakeAPI(t, "password_change")
	_, err := m.read(false)
	if err == nil || !strings.Contains(err.Error(), `"password_change"`) || !strings.Contains(err.Error(), "MAMORI_ADMIN_PASSWORD") {
		t.Fatalf("read with a login restricted to a password change: %v", err)
	}
	if _, err := m.read(false); err == nil || f.logins.Load() != 2 {
		t.Fatalf("the restricted login was kept as a login: %v after %d logins", err, f.logins.Load())
	}
}
