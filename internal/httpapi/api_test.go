package httpapi

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/configs"
	"github.com/mamori/mamori/internal/dyngroup"
	"github.com/mamori/mamori/internal/enrollment"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/password"
	"github.com/mamori/mamori/internal/store"
)

// ---- fixture ---------------------------------------------------------------

const (
	testUserID      = "u-alice"
	testUser        = "alice"
	testPassword    = "correct horse battery staple"
	testFingerprint = "SHA256:5E:7A:1C:00:42"
	testCAPEM       = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	defaultRemote   = "192.0.2.10:40000"
)

// fakePresence is an in-memory Presence that records what the API asks of it.
type fakePresence struct {
	mu          sync.Mutex
	live        map[string]time.Time
	wakeErr     error
	wakes       []wakeCall
	disconnects []string
}

type wakeCall struct{ ComputerID, Reason string }

func newFakePresence() *fakePresence { return &fakePresence{live: map[string]time.Time{}} }

func (p *fakePresence) Live(id string) (bool, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen, ok := p.live[id]
	return ok, seen
}

func (p *fakePresence) Wake(id, reason string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.wakes = append(p.wakes, wakeCall{id, reason})
	if p.wakeErr != nil {
		return "", p.wakeErr
	}
	return "wake-" + strconv.Itoa(len(p.wakes)), nil
}

func (p *fakePresence) WakeMany(ids []string, reason string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, id := range ids {
		p.wakes = append(p.wakes, wakeCall{id, reason})
		if _, ok := p.live[id]; ok {
			n++
		}
	}
	return n
}

func (p *fakePresence) Disconnect(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.disconnects = append(p.disconnects, id)
}

func (p *fakePresence) setLive(id string, seen time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live[id] = seen
}

func (p *fakePresence) setWakeErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.wakeErr = err
}

func (p *fakePresence) calls() ([]wakeCall, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.wakes), slices.Clone(p.disconnects)
}

type fixture struct {
	db       *store.DB
	api      *API
	presence *fakePresence
	now      time.Time // the API's and enrollment's clock
	cookie   string    // session token of testUser once logged in
}

// newFixture builds the real API over a fresh SQLite store with one user.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	db, err := store.OpenSQLite(t.Context(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	hash, err := password.Hash(testPassword)
	if err != nil {
		t.Fatalf("password.Hash: %v", err)
	}
	if err := db.CreateUser(t.Context(), &store.User{ID: testUserID, Username: testUser, PasswordHash: hash,
		PermissionSetIDs: []string{store.PermSetAdministrator}}); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	f := &fixture{db: db, presence: newFakePresence(), now: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	clock := func() time.Time { return f.now }
	f.api = New(Config{
		Store:          db,
		Auth:           &auth.Service{Store: db, Now: clock},
		DynamicGroups:  &dyngroup.Evaluator{Store: db, Now: clock},
		Configurations: &configs.Service{Store: db},
		Enrollment:     &enrollment.Service{Store: db, Now: clock},
		Presence:       f.presence,
		AttachmentDir:  t.TempDir(),
		CAFingerprint:  testFingerprint,
		CAPEM:          []byte(testCAPEM),
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "mamori_up 1\n")
		}),
		Log: slog.New(slog.DiscardHandler),
		Now: clock,
	})
	return f
}

// newLoggedIn is newFixture with testUser logged in.
func newLoggedIn(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t)
	rec := f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody(testUser, testPassword)})
	if rec.Code != http.StatusOK {
		t.Fatalf("login: status %d, body %s", rec.Code, rec.Body)
	}
	for _, c := range rec.Result().Cookies() {
		if c.Name == SessionCookie {
			f.cookie = c.Value
		}
	}
	if f.cookie == "" {
		t.Fatal("login set no session cookie")
	}
	return f
}

type request struct {
	method, path string
	body         string
	contentType  string // default application/json when body is set
	cookie       string // session token; "" sends no cookie
	remote       string // default defaultRemote
}

func (f *fixture) serve(t *testing.T, r request) *httptest.ResponseRecorder {
	t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req := httptest.NewRequest(r.method, r.path, body)
	switch {
	case r.contentType != "":
		req.Header.Set("Content-Type", r.contentType)
	case r.body != "":
		req.Header.Set("Content-Type", "application/json")
	}
	if r.cookie != "" {
		req.AddCookie(&http.Cookie{Name: SessionCookie, Value: r.cookie})
	}
	req.RemoteAddr = defaultRemote
	if r.remote != "" {
		req.RemoteAddr = r.remote
	}
	rec := httptest.NewRecorder()
	f.api.ServeHTTP(rec, req)
	return rec
}

// call sends an authenticated request as testUser.
func (f *fixture) call(t *testing.T, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	return f.serve(t, request{method: method, path: path, body: body, cookie: f.cookie})
}

func loginBody(user, pw string) string {
	b, _ := json.Marshal(loginRequest{Username: user, Password: pw})
	return string(b)
}

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// decodeAs decodes a JSON response body after checking status and type.
func decodeAs[T any](t *testing.T, rec *httptest.ResponseRecorder, status int) T {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decoding %s: %v", rec.Body, err)
	}
	return v
}

// wantError checks the one error shape and returns the message.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int, code errcode.Code) string {
	t.Helper()
	body := decodeAs[map[string]map[string]any](t, rec, status)
	if len(body) != 1 || body["error"] == nil {
		t.Fatalf("error body %s: want exactly one key \"error\"", rec.Body)
	}
	e := body["error"]
	if len(e) != 2 {
		t.Fatalf("error body %s: want exactly code and message", rec.Body)
	}
	if got, _ := e["code"].(string); got != string(code) {
		t.Fatalf("error code %q, want %q; body %s", got, code, rec.Body)
	}
	msg, _ := e["message"].(string)
	if msg == "" {
		t.Fatalf("error body %s: empty message", rec.Body)
	}
	return msg
}

func wantContains(t *testing.T, what, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Errorf("%s %q does not mention %q", what, s, sub)
	}
}

func ts(t time.Time) string { return *timeJSON(t) }

// ---- session ---------------------------------------------------------------

func TestLogin_RightCredentialsSetStrictSessionCookie(t *testing.T) {
	f := newFixture(t)
	rec := f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody(testUser, testPassword)})
	got := decodeAs[struct {
		User      userRef `json:"user"`
		ExpiresAt string  `json:"expires_at"`
	}](t, rec, http.StatusOK)
	if got.User != (userRef{ID: testUserID, Username: testUser, HomeGroupID: store.GroupAll}) {
		t.Errorf("user = %+v", got.User)
	}
	exp, err := time.Parse(time.RFC3339, got.ExpiresAt)
	if err != nil || !exp.After(f.now) {
		t.Errorf("expires_at %q not a future RFC 3339 time (%v)", got.ExpiresAt, err)
	}
	var cookie *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == SessionCookie {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatalf("no %s cookie in %q", SessionCookie, rec.Header().Values("Set-Cookie"))
	}
	if !cookie.HttpOnly || !cookie.Secure || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" {
		t.Errorf("cookie %q: want HttpOnly, Secure, SameSite=Strict, Path=/", cookie.String())
	}
	if len(cookie.Value) < 32 {
		t.Errorf("session token %q is suspiciously short", cookie.Value)
	}
	// The cookie is a working session.
	who := f.serve(t, request{method: "GET", path: "/api/v1/session", cookie: cookie.Value})
	if who.Code != http.StatusOK {
		t.Errorf("GET /api/v1/session with the new cookie: %d %s", who.Code, who.Body)
	}
}

func TestLogin_WrongPasswordAndUnknownUserLookAlike(t *testing.T) {
	f := newFixture(t)
	wrong := f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody(testUser, "not it")})
	unknown := f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody("mallory", "not it")})
	wantError(t, wrong, http.StatusUnauthorized, errcode.Unauthorized)
	wantError(t, unknown, http.StatusUnauthorized, errcode.Unauthorized)
	if wrong.Body.String() != unknown.Body.String() {
		t.Errorf("bodies differ, leaking which users exist:\nwrong password: %s\nunknown user:   %s", wrong.Body, unknown.Body)
	}
	for _, rec := range []*httptest.ResponseRecorder{wrong, unknown} {
		if sc := rec.Header().Values("Set-Cookie"); len(sc) != 0 {
			t.Errorf("failed login set cookies %q", sc)
		}
	}
}

func TestLogin_RepeatedFailuresLockTheAccountUntilTheLockoutExpires(t *testing.T) {
	f := newFixture(t)
	const attacker = "203.0.113.5:5555"
	pol := auth.Policy{}.Defaults()
	for i := range pol.LockoutFailures - 1 {
		rec := f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody(testUser, "guess"+strconv.Itoa(i)), remote: attacker})
		wantError(t, rec, http.StatusUnauthorized, errcode.Unauthorized)
	}
	// The last allowed failure locks the account.
	rec := f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody(testUser, "last guess"), remote: attacker})
	wantError(t, rec, http.StatusTooManyRequests, errcode.TooManyRequests)
	// Locked now, even with the right password and from another address.
	rec = f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody(testUser, testPassword), remote: "198.51.100.7:1000"})
	msg := wantError(t, rec, http.StatusTooManyRequests, errcode.TooManyRequests)
	wantContains(t, "message", msg, "locked")
	if n, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || n <= 0 {
		t.Errorf("Retry-After = %q, want a positive number of seconds", rec.Header().Get("Retry-After"))
	}
	if sc := rec.Header().Values("Set-Cookie"); len(sc) != 0 {
		t.Errorf("locked login set cookies %q", sc)
	}
	// The lockout expires.
	f.now = f.now.Add(time.Duration(pol.LockoutMinutes)*time.Minute - time.Second)
	rec = f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody(testUser, testPassword), remote: attacker})
	wantError(t, rec, http.StatusTooManyRequests, errcode.TooManyRequests)
	f.now = f.now.Add(2 * time.Second)
	rec = f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody(testUser, testPassword), remote: attacker})
	if rec.Code != http.StatusOK {
		t.Errorf("login after the lockout expired: %d %s", rec.Code, rec.Body)
	}
}

func TestLogin_AnAddressSprayingManyUsersIsThrottled(t *testing.T) {
	f := newFixture(t)
	const sprayer = "203.0.113.9:4444"
	for i := range auth.IPMaxFailures {
		rec := f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody("user"+strconv.Itoa(i), "x"), remote: sprayer})
		wantError(t, rec, http.StatusUnauthorized, errcode.Unauthorized)
	}
	rec := f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody(testUser, testPassword), remote: sprayer})
	wantError(t, rec, http.StatusTooManyRequests, errcode.TooManyRequests)
	rec = f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody(testUser, testPassword), remote: "198.51.100.7:1000"})
	if rec.Code != http.StatusOK {
		t.Errorf("the user was locked by someone else's spray: %d %s", rec.Code, rec.Body)
	}
}

func TestLogin_RejectsMalformedBodies(t *testing.T) {
	valid := loginBody(testUser, testPassword)
	tests := []struct {
		name        string
		body        string
		contentType string
		status      int
		code        errcode.Code
		mention     string
	}{
		{"wrong content type", valid, "text/plain", 400, errcode.Invalid, "Content-Type"},
		{"form content type", "username=alice", "application/x-www-form-urlencoded", 400, errcode.Invalid, "Content-Type"},
		{"json look-alike type", valid, "application/jsonx", 400, errcode.Invalid, "Content-Type"},
		{"empty body", "", "application/json", 400, errcode.Invalid, "empty"},
		{"malformed JSON", `{"username":`, "", 400, errcode.Invalid, "JSON"},
		{"not JSON at all", `username=alice`, "", 400, errcode.Invalid, "malformed JSON"},
		{"unknown field", `{"username":"alice","password":"x","admin":true}`, "", 400, errcode.Invalid, `"admin"`},
		{"wrong field type", `{"username":7,"password":"x"}`, "", 400, errcode.Invalid, "username"},
		{"two JSON values", valid + valid, "", 400, errcode.Invalid, "one JSON value"},
		{"two JSON values with space", valid + " " + valid, "", 400, errcode.Invalid, "one JSON value"},
		{"trailing closing brace", valid + "}", "", 400, errcode.Invalid, "one JSON value"},
		{"trailing closing bracket", valid + "]", "", 400, errcode.Invalid, "one JSON value"},
		{"trailing scalar", valid + " 1", "", 400, errcode.Invalid, "one JSON value"},
		{"missing password", `{"username":"alice"}`, "", 400, errcode.Invalid, "required"},
		{"empty object", `{}`, "", 400, errcode.Invalid, "required"},
		{"oversized value", `{"username":"` + strings.Repeat("a", MaxBodyBytes+1) + `","password":"x"}`, "", 413, errcode.TooLarge, strconv.Itoa(MaxBodyBytes)},
		{"oversized trailing space", valid + strings.Repeat(" ", MaxBodyBytes), "", 413, errcode.TooLarge, strconv.Itoa(MaxBodyBytes)},
	}
	f := newFixture(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A distinct address per case keeps the login limiter out of it.
			rec := f.serve(t, request{method: "POST", path: "/api/v1/session", body: tt.body, contentType: tt.contentType,
				remote: fmt.Sprintf("192.0.2.%d:1", 100+i)})
			msg := wantError(t, rec, tt.status, tt.code)
			wantContains(t, "message", msg, tt.mention)
			if sc := rec.Header().Values("Set-Cookie"); len(sc) != 0 {
				t.Errorf("rejected body set cookies %q", sc)
			}
		})
	}
	// The same valid body logs in: the cases above fail for their defect.
	rec := f.serve(t, request{method: "POST", path: "/api/v1/session", body: valid, contentType: "application/json; charset=utf-8"})
	if rec.Code != http.StatusOK {
		t.Errorf("valid body with charset parameter: %d %s", rec.Code, rec.Body)
	}
}

func TestSession_WhoamiThenLogoutEndsTheSession(t *testing.T) {
	f := newLoggedIn(t)
	who := decodeAs[sessionResponse](t, f.call(t, "GET", "/api/v1/session", ""), http.StatusOK)
	if who.User != (userRef{ID: testUserID, Username: testUser, HomeGroupID: store.GroupAll}) || who.Via != "session" || len(who.Permissions) == 0 {
		t.Errorf("whoami user = %+v", who.User)
	}

	rec := f.call(t, "DELETE", "/api/v1/session", "")
	if rec.Code != http.StatusNoContent {
		t.Fatalf("logout: %d %s", rec.Code, rec.Body)
	}
	var cleared bool
	for _, c := range rec.Result().Cookies() {
		if c.Name == SessionCookie && c.Value == "" && c.MaxAge < 0 {
			cleared = true
		}
	}
	if !cleared {
		t.Errorf("logout did not clear the cookie: %q", rec.Header().Values("Set-Cookie"))
	}
	wantError(t, f.call(t, "GET", "/api/v1/session", ""), http.StatusUnauthorized, errcode.Unauthorized)
	wantError(t, f.call(t, "DELETE", "/api/v1/session", ""), http.StatusUnauthorized, errcode.Unauthorized)
	wantError(t, f.call(t, "GET", "/api/v1/computers", ""), http.StatusUnauthorized, errcode.Unauthorized)
}

// ---- route table and audiences -----------------------------------------------

// publicRoutes is every route that needs no credentials. A route added to the
// table is a user route unless it is listed here, deliberately.
var publicRoutes = []string{
	"GET /healthz",
	"GET /readyz",
	"GET /api/v1/ca",
	"GET /api/v1/openapi.json",
	"POST /api/v1/session",
}

var wildcard = regexp.MustCompile(`\{[^}]*\}`)

// concrete turns a route pattern into a path it matches.
func concrete(pattern string) string {
	return wildcard.ReplaceAllString(strings.TrimSuffix(pattern, "{$}"), "some-id")
}

func TestRoutes_EveryUserRouteRequiresAValidSession(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	now := f.now
	// Sessions are written straight to the store: an expired one, and per
	// route a valid one made the same way (so the expired one fails for its
	// expiry alone; logout ends the valid one, hence one per route).
	newSession := func(token string, expires time.Time) {
		t.Helper()
		s := store.Session{TokenHash: auth.HashToken(token), UserID: testUserID, CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: expires,
			LastUsedAt: now.Add(-time.Hour), SecondFactor: true}
		if err := f.db.CreateSession(ctx, &s); err != nil {
			t.Fatal(err)
		}
	}
	newSession("expired-session-token", now.Add(-time.Minute))
	badCookies := map[string]string{
		"expired":  "expired-session-token",
		"garbage":  "garbage",
		"too long": strings.Repeat("x", 200),
	}
	routes := f.api.routes()
	if len(routes) < 10 {
		t.Fatalf("route table has only %d routes", len(routes))
	}
	var gotPublic []string
	for _, rt := range routes {
		key := rt.Method + " " + rt.Pattern
		path := concrete(rt.Pattern)
		if rt.Audience == public {
			gotPublic = append(gotPublic, key)
			rec := f.serve(t, request{method: rt.Method, path: path})
			if rec.Code == http.StatusUnauthorized {
				t.Errorf("%s is public but answered 401 without a cookie", key)
			}
			continue
		}
		if rt.Audience != user && rt.Audience != login {
			t.Errorf("%s: unknown audience %d", key, rt.Audience)
			continue
		}
		t.Run(key, func(t *testing.T) {
			body := ""
			if rt.Method == "POST" || rt.Method == "PATCH" || rt.Method == "PUT" {
				body = "{}"
			}
			msg := wantError(t, f.serve(t, request{method: rt.Method, path: path, body: body}), http.StatusUnauthorized, errcode.Unauthorized)
			wantContains(t, "message", msg, "authentication required")
			for name, c := range badCookies {
				rec := f.serve(t, request{method: rt.Method, path: path, body: body, cookie: c})
				if rec.Code != http.StatusUnauthorized {
					t.Errorf("%s cookie: status %d, want 401; body %s", name, rec.Code, rec.Body)
					continue
				}
				wantError(t, rec, http.StatusUnauthorized, errcode.Unauthorized)
			}
			// With a valid session the route is reached (its own answer
			// may be 404 for "some-id" or 400 for "{}", never 401).
			valid := "valid-session-token " + key
			newSession(valid, now.Add(time.Hour))
			if rec := f.serve(t, request{method: rt.Method, path: path, body: body, cookie: valid}); rec.Code == http.StatusUnauthorized {
				t.Errorf("valid session: 401 %s", rec.Body)
			}
		})
	}
	slices.Sort(gotPublic)
	want := slices.Sorted(slices.Values(publicRoutes))
	if !slices.Equal(gotPublic, want) {
		t.Errorf("public routes = %q, want %q (a new public route must be added here on purpose)", gotPublic, want)
	}
}

func TestRouting_UnknownPathIsJSON404(t *testing.T) {
	f := newLoggedIn(t)
	for _, path := range []string{"/", "/api/v1/nope", "/api/v2/computers", "/api/v1/computers/a/b/c"} {
		t.Run(path, func(t *testing.T) {
			for _, cookie := range []string{"", f.cookie} {
				msg := wantError(t, f.serve(t, request{method: "GET", path: path, cookie: cookie}), http.StatusNotFound, errcode.NotFound)
				wantContains(t, "message", msg, path)
			}
		})
	}
}

func TestRouting_WrongMethodIsJSON405WithAllow(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		method, path string
		allow        []string
	}{
		{"PUT", "/api/v1/groups", []string{"GET", "POST"}},
		{"PATCH", "/api/v1/session", []string{"DELETE", "GET", "POST"}},
		{"POST", "/healthz", []string{"GET"}},
		{"DELETE", "/api/v1/computers/some-id", []string{"GET"}},
		{"GET", "/api/v1/computers/some-id/wakeup", []string{"POST"}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rec := f.serve(t, request{method: tt.method, path: tt.path})
			msg := wantError(t, rec, http.StatusMethodNotAllowed, errcode.Invalid)
			wantContains(t, "message", msg, tt.method)
			allow := rec.Header().Get("Allow")
			for _, m := range tt.allow {
				wantContains(t, "Allow", allow, m)
			}
			if strings.Contains(allow, tt.method) {
				t.Errorf("Allow %q lists the refused method %s", allow, tt.method)
			}
		})
	}
}

// ---- operational endpoints ---------------------------------------------------

func TestOps_ProbesAndCA(t *testing.T) {
	f := newFixture(t)
	if got := decodeAs[map[string]string](t, f.serve(t, request{method: "GET", path: "/healthz"}), http.StatusOK); got["status"] != "ok" {
		t.Errorf("/healthz = %v", got)
	}
	if got := decodeAs[map[string]string](t, f.serve(t, request{method: "GET", path: "/readyz"}), http.StatusOK); got["status"] != "ready" {
		t.Errorf("/readyz = %v", got)
	}
	ca := decodeAs[map[string]string](t, f.serve(t, request{method: "GET", path: "/api/v1/ca"}), http.StatusOK)
	if ca["fingerprint"] != testFingerprint || ca["certificate_pem"] != testCAPEM {
		t.Errorf("/api/v1/ca = %v, want fingerprint %q and the PEM", ca, testFingerprint)
	}
}

// Metrics tell the fleet's size and the server's state: only a user who may
// read the server settings everywhere gets them, with a session or, as
// Prometheus scrapes, an API token.
func TestOps_MetricsNeedServerSettingsReadOnAll(t *testing.T) {
	w := newWorld(t)
	wantError(t, w.serve(t, request{method: "GET", path: "/metrics"}), http.StatusUnauthorized, errcode.Unauthorized)
	wantError(t, w.serveBearer(t, request{method: "GET", path: "/metrics"}, "mmt_not-a-token"), http.StatusUnauthorized, errcode.Unauthorized)
	for _, who := range []string{"nobody", "laptops-admin"} { // laptops-admin holds server_settings, but not on All
		wantError(t, w.serve(t, request{method: "GET", path: "/metrics", cookie: w.cookies[who]}), http.StatusForbidden, errcode.Forbidden)
	}
	if m := w.call(t, "GET", "/metrics", ""); m.Code != http.StatusOK || m.Body.String() != "mamori_up 1\n" {
		t.Errorf("administrator: /metrics = %d %q", m.Code, m.Body)
	}
	tok := decodeAs[apiTokenJSON](t, w.serve(t, request{method: "POST", path: "/api/v1/tokens", body: `{"name":"prometheus"}`,
		cookie: w.cookies["reviewer"]}), http.StatusCreated)
	if m := w.serveBearer(t, request{method: "GET", path: "/metrics"}, tok.Token); m.Code != http.StatusOK || m.Body.String() != "mamori_up 1\n" {
		t.Errorf("reviewer's API token: /metrics = %d %q", m.Code, m.Body)
	}
}

func TestOps_MetricsDisabledIs404(t *testing.T) {
	f := newLoggedIn(t)
	f.api = New(Config{Store: f.db, Auth: &auth.Service{Store: f.db}, Log: slog.New(slog.DiscardHandler)})
	wantError(t, f.call(t, "GET", "/metrics", ""), http.StatusNotFound, errcode.NotFound)
}

func TestOps_ReadyzIs503AfterTheStoreCloses(t *testing.T) {
	f := newFixture(t)
	if rec := f.serve(t, request{method: "GET", path: "/readyz"}); rec.Code != http.StatusOK {
		t.Fatalf("/readyz before close: %d %s", rec.Code, rec.Body)
	}
	if err := f.db.Close(); err != nil {
		t.Fatal(err)
	}
	wantError(t, f.serve(t, request{method: "GET", path: "/readyz"}), http.StatusServiceUnavailable, errcode.Unavailable)
	// Liveness does not depend on the store.
	if rec := f.serve(t, request{method: "GET", path: "/healthz"}); rec.Code != http.StatusOK {
		t.Errorf("/healthz after close: %d", rec.Code)
	}
}

// ---- groups --------------------------------------------------------------------

type groupList = listResponse[groupJSON]

func (f *fixture) createGroup(t *testing.T, parent, name string) groupJSON {
	t.Helper()
	return decodeAs[groupJSON](t, f.call(t, "POST", "/api/v1/groups", jsonString(createGroupRequest{Parent: parent, Name: name})), http.StatusCreated)
}

func TestGroups_ListHasTheBuiltInGroups(t *testing.T) {
	f := newLoggedIn(t)
	got := decodeAs[groupList](t, f.call(t, "GET", "/api/v1/groups", ""), http.StatusOK)
	if got.Total != 2 || len(got.Items) != 2 {
		t.Fatalf("groups = %+v, want All and All/Lost & Found", got)
	}
	all, lf := got.Items[0], got.Items[1]
	if all.ID != store.GroupAll || all.Path != "All" || all.Name != "All" || all.ParentID != nil {
		t.Errorf("first group = %+v, want All without parent", all)
	}
	if lf.ID != store.GroupLostFound || lf.Path != "All/Lost & Found" || lf.ParentID == nil || *lf.ParentID != store.GroupAll {
		t.Errorf("second group = %+v, want All/Lost & Found under all", lf)
	}
}

func TestGroups_CreateUnderAllAndNested(t *testing.T) {
	f := newLoggedIn(t)
	servers := f.createGroup(t, "", "Servers")
	if servers.Path != "All/Servers" || servers.Name != "Servers" || servers.ParentID == nil || *servers.ParentID != store.GroupAll || servers.ID == "" {
		t.Errorf("Servers = %+v", servers)
	}
	if servers.CreatedAt == nil {
		t.Error("created_at is null")
	}
	web := f.createGroup(t, "All/Servers", "Web")
	if web.Path != "All/Servers/Web" || web.ParentID == nil || *web.ParentID != servers.ID {
		t.Errorf("Web = %+v, want under %s", web, servers.ID)
	}
	// Relative and leading-slash parent paths name the same group.
	db := f.createGroup(t, "Servers", "DB")
	cache := f.createGroup(t, "/Servers/Web/", "Cache")
	if db.Path != "All/Servers/DB" || cache.Path != "All/Servers/Web/Cache" {
		t.Errorf("DB = %q, Cache = %q", db.Path, cache.Path)
	}
	laptops := f.createGroup(t, "All", "Laptops & Tablets")
	if laptops.Path != "All/Laptops & Tablets" {
		t.Errorf("Laptops = %q", laptops.Path)
	}

	got := decodeAs[groupList](t, f.call(t, "GET", "/api/v1/groups", ""), http.StatusOK)
	var paths []string
	for _, g := range got.Items {
		paths = append(paths, g.Path)
	}
	want := []string{"All", "All/Laptops & Tablets", "All/Lost & Found", "All/Servers", "All/Servers/DB", "All/Servers/Web", "All/Servers/Web/Cache"}
	if !slices.Equal(paths, want) || got.Total != len(want) {
		t.Errorf("paths = %q (total %d), want %q", paths, got.Total, want)
	}
}

func TestGroups_CreateErrors(t *testing.T) {
	f := newLoggedIn(t)
	f.createGroup(t, "", "Servers")
	tests := []struct {
		name    string
		body    string
		status  int
		code    errcode.Code
		mention string
	}{
		{"duplicate", `{"name":"Servers"}`, 409, errcode.Conflict, "Servers"},
		{"duplicate via full parent path", `{"parent":"All","name":"Servers"}`, 409, errcode.Conflict, "Servers"},
		{"empty name", `{"name":""}`, 400, errcode.Invalid, "empty"},
		{"blank name", `{"name":"   "}`, 400, errcode.Invalid, "empty"},
		{"leading space", `{"name":" Web"}`, 400, errcode.Invalid, "spaces"},
		{"slash", `{"name":"a/b"}`, 400, errcode.Invalid, "/"},
		{"control character", `{"name":"a\u0001b"}`, 400, errcode.Invalid, "control"},
		{"too long", jsonString(createGroupRequest{Name: strings.Repeat("n", 129)}), 400, errcode.Invalid, "128"},
		{"unknown parent", `{"parent":"All/Nowhere","name":"Web"}`, 404, errcode.NotFound, "Nowhere"},
		{"unknown field", `{"parent_id":"all","name":"Web"}`, 400, errcode.Invalid, "parent_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := wantError(t, f.call(t, "POST", "/api/v1/groups", tt.body), tt.status, tt.code)
			wantContains(t, "message", msg, tt.mention)
		})
	}
	// Nothing was created by the failures; a sibling name elsewhere is fine.
	f.createGroup(t, "Servers", "Servers")
	got := decodeAs[groupList](t, f.call(t, "GET", "/api/v1/groups", ""), http.StatusOK)
	if got.Total != 4 {
		t.Errorf("total groups = %d, want 4 (All, Lost & Found, Servers, Servers/Servers)", got.Total)
	}
	// 128 bytes is still a valid name.
	f.createGroup(t, "", strings.Repeat("n", 128))
}

// ---- enrollment tokens -----------------------------------------------------------

type tokenList = listResponse[tokenJSON]

func TestTokens_CreateWithDefaults(t *testing.T) {
	f := newLoggedIn(t)
	got := decodeAs[tokenJSON](t, f.call(t, "POST", "/api/v1/enrollment-tokens", `{}`), http.StatusCreated)
	if !strings.HasPrefix(got.Token, "mmr_") || len(got.Token) < 40 {
		t.Errorf("token secret %q, want mmr_ and 43 characters", got.Token)
	}
	if got.Group != (groupRef{ID: store.GroupLostFound, Path: "All/Lost & Found"}) {
		t.Errorf("group = %+v, want Lost & Found", got.Group)
	}
	if got.CreatedAt == nil || *got.CreatedAt != ts(f.now) {
		t.Errorf("created_at = %v, want %s", got.CreatedAt, ts(f.now))
	}
	if got.ExpiresAt == nil || *got.ExpiresAt != ts(f.now.Add(enrollment.DefaultTTL)) {
		t.Errorf("expires_at = %v, want created + 24h", got.ExpiresAt)
	}
	if got.UsesAllowed != 0 || got.Uses != 0 || got.CreatedBy != testUser || got.RevokedAt != nil || got.ID == "" {
		t.Errorf("token = %+v", got)
	}
	// The secret is real: the store accepts its hash.
	if _, err := f.db.CheckEnrollmentToken(t.Context(), enrollment.HashSecret(got.Token), f.now); err != nil {
		t.Errorf("CheckEnrollmentToken with the returned secret: %v", err)
	}
}

func TestTokens_CreateWithGroupTTLAndUses_SecretOnlyInCreateResponse(t *testing.T) {
	f := newLoggedIn(t)
	servers := f.createGroup(t, "", "Servers")
	body := jsonString(createTokenRequest{Group: "Servers", TTL: "90m", Uses: 3, Description: "rack 4"})
	created := decodeAs[tokenJSON](t, f.call(t, "POST", "/api/v1/enrollment-tokens", body), http.StatusCreated)
	if created.Group != (groupRef{ID: servers.ID, Path: "All/Servers"}) || created.UsesAllowed != 3 || created.Description != "rack 4" {
		t.Errorf("created = %+v", created)
	}
	if created.ExpiresAt == nil || *created.ExpiresAt != ts(f.now.Add(90*time.Minute)) {
		t.Errorf("expires_at = %v, want now + 90m", created.ExpiresAt)
	}
	if created.Token == "" {
		t.Fatal("no secret in the creation response")
	}

	rec := f.call(t, "GET", "/api/v1/enrollment-tokens", "")
	if strings.Contains(rec.Body.String(), created.Token) {
		t.Errorf("list response contains the secret: %s", rec.Body)
	}
	raw := decodeAs[listResponse[map[string]json.RawMessage]](t, rec, http.StatusOK)
	if raw.Total != 1 || len(raw.Items) != 1 {
		t.Fatalf("list = %s, want one token", rec.Body)
	}
	if _, ok := raw.Items[0]["token"]; ok {
		t.Errorf("list item has a token field: %s", rec.Body)
	}
	listed := decodeAs[tokenList](t, rec, http.StatusOK).Items[0]
	created.Token = ""
	if jsonString(listed) != jsonString(created) {
		t.Errorf("listed %+v\nwant     %+v", listed, created)
	}
}

func TestTokens_CreateRejectsBadParameters(t *testing.T) {
	f := newLoggedIn(t)
	tests := []struct {
		name    string
		body    string
		status  int
		mention string
	}{
		{"ttl not a duration", `{"ttl":"soon"}`, 400, `"soon"`},
		{"ttl without unit", `{"ttl":"24"}`, 400, "ttl"},
		{"ttl not a string", `{"ttl":3600}`, 400, "ttl"},
		{"ttl below minimum", `{"ttl":"30s"}`, 400, "ttl"},
		{"ttl negative", `{"ttl":"-1h"}`, 400, "ttl"},
		{"ttl above maximum", `{"ttl":"8761h"}`, 400, "ttl"},
		{"negative uses", `{"uses":-1}`, 400, "uses"},
		{"too many uses", `{"uses":1000001}`, 400, "uses"},
		{"uses not an integer", `{"uses":1.5}`, 400, "uses"},
		{"unknown group", `{"group":"All/Nowhere"}`, 404, "Nowhere"},
		{"description with control character", `{"description":"bell\u0007"}`, 400, "description"},
		{"unknown field", `{"group_id":"all"}`, 400, "group_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code := errcode.Invalid
			if tt.status == 404 {
				code = errcode.NotFound
			}
			msg := wantError(t, f.call(t, "POST", "/api/v1/enrollment-tokens", tt.body), tt.status, code)
			wantContains(t, "message", msg, tt.mention)
		})
	}
	if got := decodeAs[tokenList](t, f.call(t, "GET", "/api/v1/enrollment-tokens", ""), http.StatusOK); got.Total != 0 || got.Items == nil {
		t.Errorf("after only failures, list = %+v, want empty items", got)
	}
	// The boundaries themselves are accepted.
	for _, body := range []string{`{"ttl":"1m"}`, `{"ttl":"8760h","uses":1000000}`} {
		if rec := f.call(t, "POST", "/api/v1/enrollment-tokens", body); rec.Code != http.StatusCreated {
			t.Errorf("%s: %d %s", body, rec.Code, rec.Body)
		}
	}
}

func TestTokens_Revoke(t *testing.T) {
	f := newLoggedIn(t)
	created := decodeAs[tokenJSON](t, f.call(t, "POST", "/api/v1/enrollment-tokens", `{}`), http.StatusCreated)
	f.now = f.now.Add(time.Minute)
	if rec := f.call(t, "DELETE", "/api/v1/enrollment-tokens/"+created.ID, ""); rec.Code != http.StatusNoContent || rec.Body.Len() != 0 {
		t.Fatalf("revoke: %d %q", rec.Code, rec.Body)
	}
	got := decodeAs[tokenList](t, f.call(t, "GET", "/api/v1/enrollment-tokens", ""), http.StatusOK)
	if len(got.Items) != 1 || got.Items[0].RevokedAt == nil || *got.Items[0].RevokedAt != ts(f.now) {
		t.Errorf("after revoke, list = %+v, want revoked_at %s", got.Items, ts(f.now))
	}
	if _, err := f.db.CheckEnrollmentToken(t.Context(), enrollment.HashSecret(created.Token), f.now); !errcode.Is(err, errcode.Unauthorized) {
		t.Errorf("revoked token still usable: %v", err)
	}
	msg := wantError(t, f.call(t, "DELETE", "/api/v1/enrollment-tokens/no-such-token", ""), http.StatusNotFound, errcode.NotFound)
	wantContains(t, "message", msg, "token")
}

// ---- computers ---------------------------------------------------------------------

type computerSeed struct {
	id, name    string
	group       string // path; "" = Lost & Found
	fingerprint string // default derived from id
	enrolled    time.Duration
	lastSeen    time.Duration // before f.now; 0 = never
	online      bool          // row status online (connected since lastSeen)
	osName      string
	osVersion   string
	agent       string
}

// seed enrolls computers straight into the store, each with its own token
// and a made-up certificate serial.
func (f *fixture) seed(t *testing.T, seeds ...computerSeed) {
	t.Helper()
	ctx := t.Context()
	groups, err := f.db.Groups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range seeds {
		g, err := groups.Resolve(cmpOr(s.group, "All/Lost & Found"))
		if err != nil {
			t.Fatalf("seed %s: %v", s.name, err)
		}
		secret := "seed-secret-" + s.id
		enrolled := f.now.Add(-cmpOr(s.enrolled, 30*24*time.Hour))
		if err := f.db.CreateEnrollmentToken(ctx, &store.EnrollmentToken{
			ID: "tok-" + s.id, SecretHash: enrollment.HashSecret(secret), GroupID: g.ID,
			ExpiresAt: f.now.Add(24 * time.Hour), CreatedBy: "test", CreatedAt: enrolled.Add(-time.Minute),
		}); err != nil {
			t.Fatal(err)
		}
		fp := cmpOr(s.fingerprint, fmt.Sprintf("%x", sha256.Sum256([]byte(s.id)))[:32])
		c := &store.Computer{ID: s.id, Name: s.name, Hostname: s.name + ".example.net", HardwareFingerprint: fp, Platform: "linux"}
		cert := &store.AgentCertificate{Serial: "serial-" + s.id, ComputerID: s.id, IssuedAt: enrolled, NotAfter: enrolled.Add(365 * 24 * time.Hour)}
		if err := f.db.EnrollComputer(ctx, enrollment.HashSecret(secret), enrolled, c, cert); err != nil {
			t.Fatalf("EnrollComputer %s: %v", s.name, err)
		}
		if s.osName != "" || s.agent != "" {
			f.checkIn(t, &store.CheckIn{ComputerID: s.id, Now: enrolled,
				Summary: store.ComputerSummary{OSName: s.osName, OSVersion: s.osVersion, AgentVersion: s.agent}})
		}
		if s.lastSeen != 0 {
			up := store.PresenceUpdate{ComputerID: s.id, LastSeen: f.now.Add(-s.lastSeen)}
			if s.online {
				up.Status, up.ConnectedSince = store.StatusOnline, up.LastSeen
			}
			if err := f.db.ApplyPresence(ctx, []store.PresenceUpdate{up}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func (f *fixture) checkIn(t *testing.T, c *store.CheckIn) {
	t.Helper()
	if _, err := f.db.ApplyCheckIn(t.Context(), c); err != nil {
		t.Fatalf("ApplyCheckIn: %v", err)
	}
}

type computerList = listResponse[computerJSON]

func names(cs []computerJSON) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// fleet is a consistent set of computers (row status agrees with presence).
func newFleet(t *testing.T) *fixture {
	t.Helper()
	f := newLoggedIn(t)
	f.createGroup(t, "", "Servers")
	f.createGroup(t, "Servers", "Web")
	f.createGroup(t, "", "Laptops")
	f.seed(t,
		computerSeed{id: "c-db01", name: "db-01", group: "Servers", lastSeen: 50 * time.Hour, osName: "Rocky Linux", osVersion: "9.4", agent: "0.9.0"},
		computerSeed{id: "c-fresh", name: "fresh_box", enrolled: time.Hour},
		computerSeed{id: "c-lap7", name: "laptop-7", group: "Laptops", lastSeen: 15 * 24 * time.Hour},
		computerSeed{id: "c-web01", name: "web-01", group: "Servers/Web", fingerprint: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", lastSeen: time.Minute, online: true,
			osName: "Debian GNU/Linux", osVersion: "12", agent: "1.0.0"},
		computerSeed{id: "c-web02", name: "web-02", group: "Servers/Web", fingerprint: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", lastSeen: time.Hour},
	)
	f.presence.setLive("c-web01", f.now.Add(-time.Minute))
	return f
}

func TestComputerList_ItemShape(t *testing.T) {
	f := newFleet(t)
	rec := f.call(t, "GET", "/api/v1/computers", "")
	raw := decodeAs[listResponse[map[string]json.RawMessage]](t, rec, http.StatusOK)
	for _, item := range raw.Items {
		for _, k := range []string{"id", "name", "status", "last_seen", "os", "agent_version", "clone_suspected", "group", "connection_warning"} {
			if _, ok := item[k]; !ok {
				t.Errorf("item %s lacks %q", item["name"], k)
			}
		}
	}
	got := decodeAs[computerList](t, rec, http.StatusOK)
	if got.Total != 5 || !slices.Equal(names(got.Items), []string{"db-01", "fresh_box", "laptop-7", "web-01", "web-02"}) {
		t.Fatalf("list = %q total %d", names(got.Items), got.Total)
	}
	byName := map[string]computerJSON{}
	for _, c := range got.Items {
		byName[c.Name] = c
	}
	groups, err := f.db.Groups(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	webGroup, _ := groups.Resolve("Servers/Web")

	web := byName["web-01"]
	if web.ID != "c-web01" || web.Status != store.StatusOnline || web.OS != (osJSON{"Debian GNU/Linux", "12"}) || web.AgentVersion != "1.0.0" ||
		web.Group != (groupRef{ID: webGroup.ID, Path: "All/Servers/Web"}) || web.ConnectionWarning != "none" || !web.CloneSuspected {
		t.Errorf("web-01 = %+v", web)
	}
	if web.LastSeen == nil || *web.LastSeen != ts(f.now.Add(-time.Minute)) {
		t.Errorf("web-01 last_seen = %v, want %s", web.LastSeen, ts(f.now.Add(-time.Minute)))
	}
	if web.ConnectedSince == nil {
		t.Error("online web-01 has no connected_since")
	}
	if w2 := byName["web-02"]; !w2.CloneSuspected || w2.Status != store.StatusOffline || w2.ConnectedSince != nil {
		t.Errorf("web-02 (same hardware as web-01, offline) = %+v", w2)
	}
	if db := byName["db-01"]; db.CloneSuspected || db.OS != (osJSON{"Rocky Linux", "9.4"}) || db.AgentVersion != "0.9.0" || db.Group.Path != "All/Servers" {
		t.Errorf("db-01 = %+v", db)
	}
	fresh := byName["fresh_box"]
	if fresh.LastSeen != nil || fresh.Status != store.StatusOffline || fresh.Group != (groupRef{ID: store.GroupLostFound, Path: "All/Lost & Found"}) ||
		fresh.EnrolledAt == nil || *fresh.EnrolledAt != ts(f.now.Add(-time.Hour)) {
		t.Errorf("fresh_box = %+v", fresh)
	}
	if v := string(raw.Items[1]["last_seen"]); v != "null" {
		t.Errorf("never-seen last_seen = %s, want null", v)
	}
}

func TestComputerList_Filters(t *testing.T) {
	f := newFleet(t)
	all := []string{"db-01", "fresh_box", "laptop-7", "web-01", "web-02"}
	tests := []struct {
		query string
		want  []string
	}{
		{"", all},
		{"name=WEB", []string{"web-01", "web-02"}},
		{"name=web-0", []string{"web-01", "web-02"}},
		{"name=example.net", all}, // host names match too
		{"name=_", []string{"fresh_box"}},
		{"name=%25", []string{}},
		{"name=nothing", []string{}},
		{"status=online", []string{"web-01"}},
		{"status=offline", []string{"db-01", "fresh_box", "laptop-7", "web-02"}},
		{"group=All", all},
		{"group=All/Servers", []string{"db-01", "web-01", "web-02"}},
		{"group=Servers&recursive=true", []string{"db-01", "web-01", "web-02"}},
		{"group=/Servers&recursive=1", []string{"db-01", "web-01", "web-02"}},
		{"group=All/Servers&recursive=false", []string{"db-01"}},
		{"group=All/Servers/Web&recursive=0", []string{"web-01", "web-02"}},
		{"group=All&recursive=false", []string{}},
		{"group=Laptops", []string{"laptop-7"}},
		{"group=All/Lost+%26+Found", []string{"fresh_box"}},
		{"group=Servers&name=db", []string{"db-01"}},
		{"group=Servers&status=online", []string{"web-01"}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			got := decodeAs[computerList](t, f.call(t, "GET", "/api/v1/computers?"+tt.query, ""), http.StatusOK)
			if !slices.Equal(names(got.Items), tt.want) || got.Total != len(tt.want) {
				t.Errorf("got %q total %d, want %q", names(got.Items), got.Total, tt.want)
			}
		})
	}
}

func TestComputerList_Sort(t *testing.T) {
	f := newFleet(t)
	tests := []struct {
		sort string
		want []string
	}{
		{"name", []string{"db-01", "fresh_box", "laptop-7", "web-01", "web-02"}},
		{"-name", []string{"web-02", "web-01", "laptop-7", "fresh_box", "db-01"}},
		{"last_seen", []string{"fresh_box", "laptop-7", "db-01", "web-02", "web-01"}},
		{"-last_seen", []string{"web-01", "web-02", "db-01", "laptop-7", "fresh_box"}},
		{"enrolled_at", []string{"db-01", "laptop-7", "web-01", "web-02", "fresh_box"}}, // ties by id
		{"-os_name", []string{"db-01", "web-01", "fresh_box", "laptop-7", "web-02"}},
		{"status", []string{"db-01", "fresh_box", "laptop-7", "web-02", "web-01"}},
	}
	for _, tt := range tests {
		t.Run(tt.sort, func(t *testing.T) {
			got := decodeAs[computerList](t, f.call(t, "GET", "/api/v1/computers?sort="+tt.sort, ""), http.StatusOK)
			if !slices.Equal(names(got.Items), tt.want) {
				t.Errorf("got %q, want %q", names(got.Items), tt.want)
			}
		})
	}
}

func TestComputerList_Pagination(t *testing.T) {
	f := newFleet(t)
	tests := []struct {
		query string
		want  []string
	}{
		{"limit=2", []string{"db-01", "fresh_box"}},
		{"limit=2&offset=2", []string{"laptop-7", "web-01"}},
		{"limit=2&offset=4", []string{"web-02"}},
		{"offset=5", []string{}},
		{"offset=1000", []string{}},
		{"limit=1000", []string{"db-01", "fresh_box", "laptop-7", "web-01", "web-02"}},
		{"limit=1&sort=-name", []string{"web-02"}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			got := decodeAs[computerList](t, f.call(t, "GET", "/api/v1/computers?"+tt.query, ""), http.StatusOK)
			if !slices.Equal(names(got.Items), tt.want) || got.Total != 5 {
				t.Errorf("got %q total %d, want %q total 5", names(got.Items), got.Total, tt.want)
			}
			if got.Items == nil {
				t.Error("items is null, want []")
			}
		})
	}
}

func TestComputerList_RejectsBadQueries(t *testing.T) {
	f := newFleet(t)
	tests := []struct{ query, mention string }{
		{"limit=0", "limit"},
		{"limit=1001", "limit"},
		{"limit=-1", "limit"},
		{"limit=x", "limit"},
		{"limit=1.5", "limit"},
		{"offset=-1", "offset"},
		{"offset=y", "offset"},
		{"status=sleeping", "status"},
		{"sort=shoe_size", "shoe_size"},
		{"sort=-", "sort"},
		{"group=All/Nowhere", "Nowhere"},
		{"group=Servers&recursive=maybe", "recursive"},
		{"name=" + strings.Repeat("n", 257), "name"},
	}
	for _, tt := range tests {
		t.Run(tt.query[:min(len(tt.query), 40)], func(t *testing.T) {
			msg := wantError(t, f.call(t, "GET", "/api/v1/computers?"+tt.query, ""), http.StatusBadRequest, errcode.Invalid)
			wantContains(t, "message", msg, tt.mention)
		})
	}
}

func TestComputerList_ConnectionWarningThresholds(t *testing.T) {
	f := newLoggedIn(t)
	const day = 24 * time.Hour
	tests := []struct {
		seed computerSeed
		live bool
		want string
	}{
		{computerSeed{id: "c-1", name: "seen-1h", lastSeen: time.Hour}, false, "none"},
		{computerSeed{id: "c-2", name: "seen-just-under-48h", lastSeen: 48*time.Hour - time.Millisecond}, false, "none"},
		{computerSeed{id: "c-3", name: "seen-48h", lastSeen: 48 * time.Hour}, false, "warning"},
		{computerSeed{id: "c-4", name: "seen-just-under-14d", lastSeen: 14*day - time.Millisecond}, false, "warning"},
		{computerSeed{id: "c-5", name: "seen-14d", lastSeen: 14 * day}, false, "critical"},
		{computerSeed{id: "c-6", name: "seen-90d", lastSeen: 90 * day, enrolled: 100 * day}, false, "critical"},
		{computerSeed{id: "c-7", name: "never-seen-enrolled-1h", enrolled: time.Hour}, false, "none"},
		{computerSeed{id: "c-8", name: "never-seen-enrolled-3d", enrolled: 3 * day}, false, "warning"},
		{computerSeed{id: "c-9", name: "never-seen-enrolled-20d", enrolled: 20 * day}, false, "critical"},
		{computerSeed{id: "c-10", name: "row-old-but-live", lastSeen: 30 * day}, true, "none"},
	}
	for _, tt := range tests {
		f.seed(t, tt.seed)
		if tt.live {
			f.presence.setLive(tt.seed.id, f.now.Add(-time.Second))
		}
	}
	got := decodeAs[computerList](t, f.call(t, "GET", "/api/v1/computers", ""), http.StatusOK)
	byName := map[string]computerJSON{}
	for _, c := range got.Items {
		byName[c.Name] = c
	}
	for _, tt := range tests {
		c, ok := byName[tt.seed.name]
		if !ok {
			t.Errorf("%s missing from the list", tt.seed.name)
			continue
		}
		if c.ConnectionWarning != tt.want {
			t.Errorf("%s: connection_warning %q, want %q", tt.seed.name, c.ConnectionWarning, tt.want)
		}
	}

	// Thresholds are configurable.
	f.api = New(Config{Store: f.db, Auth: &auth.Service{Store: f.db}, Presence: f.presence, Log: slog.New(slog.DiscardHandler),
		Now: func() time.Time { return f.now }, OfflineWarning: 30 * time.Minute, OfflineCritical: 2 * time.Hour})
	c := decodeAs[computerJSON](t, f.call(t, "GET", "/api/v1/computers/c-1", ""), http.StatusOK)
	if c.ConnectionWarning != "warning" {
		t.Errorf("seen 1h ago with a 30m/2h policy: %q, want warning", c.ConnectionWarning)
	}
}

func TestComputerList_PresenceOverridesTheRow(t *testing.T) {
	f := newLoggedIn(t)
	f.seed(t,
		computerSeed{id: "c-kiosk", name: "kiosk", lastSeen: 20 * 24 * time.Hour},         // row: offline, long ago
		computerSeed{id: "c-ghost", name: "ghost", lastSeen: 3 * time.Hour, online: true}, // row: online, not live
	)
	seen := f.now.Add(-5 * time.Second)
	f.presence.setLive("c-kiosk", seen)

	got := decodeAs[computerList](t, f.call(t, "GET", "/api/v1/computers", ""), http.StatusOK)
	if len(got.Items) != 2 {
		t.Fatalf("list = %q", names(got.Items))
	}
	ghost, kiosk := got.Items[0], got.Items[1]
	if kiosk.Status != store.StatusOnline || kiosk.LastSeen == nil || *kiosk.LastSeen != ts(seen) || kiosk.ConnectionWarning != "none" ||
		kiosk.ConnectedSince == nil || *kiosk.ConnectedSince != ts(seen) {
		t.Errorf("live kiosk = %+v, want online, last_seen = connected_since = %s", kiosk, ts(seen))
	}
	if ghost.Status != store.StatusOffline || ghost.ConnectedSince != nil || ghost.LastSeen == nil || *ghost.LastSeen != ts(f.now.Add(-3*time.Hour)) {
		t.Errorf("ghost (row online, not live) = %+v, want offline with the row's last_seen", ghost)
	}
	detail := decodeAs[computerJSON](t, f.call(t, "GET", "/api/v1/computers/c-kiosk", ""), http.StatusOK)
	if detail.Status != store.StatusOnline {
		t.Errorf("detail of live kiosk: status %q", detail.Status)
	}
}

func TestComputerDetail_InventoryAndRecentEvents(t *testing.T) {
	f := newLoggedIn(t)
	f.seed(t, computerSeed{id: "c-1", name: "web-01", osName: "Debian GNU/Linux", osVersion: "12", agent: "1.0.0"})
	sysJSON := `{"hostname":"web-01","os_family":"linux","os_name":"Debian GNU/Linux","os_version":"12"}`
	swJSON := `{"source":"dpkg","packages":[{"name":"bash","version":"5.2.15-2","architecture":"amd64"}]}`
	checked := f.now.Add(-10 * time.Minute)
	var evs []store.Event
	for i := range 25 {
		evs = append(evs, store.Event{ID: fmt.Sprintf("e%03d", i), Type: "agent.tick", OccurredAt: f.now.Add(time.Duration(i-30) * time.Minute),
			Data: fmt.Sprintf(`{"n":%d}`, i)})
	}
	evs[24].Data = "" // no data is shown as {}
	f.checkIn(t, &store.CheckIn{ComputerID: "c-1", Now: checked, Events: evs, Sections: []store.InventorySection{
		{Section: "system", Hash: []byte{1}, Data: sysJSON},
		{Section: "software", Hash: []byte{2}, Data: swJSON},
	}})

	rec := f.call(t, "GET", "/api/v1/computers/c-1", "")
	got := decodeAs[computerDetail](t, rec, http.StatusOK)
	if got.ID != "c-1" || got.Name != "web-01" || got.OS != (osJSON{"Debian GNU/Linux", "12"}) || got.HardwareFingerprint == "" {
		t.Errorf("detail = %+v", got.computerJSON)
	}
	if len(got.Inventory) != 2 {
		t.Errorf("inventory sections = %v, want system and software", slices.Sorted(mapsKeys(got.Inventory)))
	}
	for sec, want := range map[string]string{"system": sysJSON, "software": swJSON} {
		if !jsonEqual(t, got.Inventory[sec], want) {
			t.Errorf("inventory.%s = %s, want %s", sec, got.Inventory[sec], want)
		}
		if u := got.InventoryUpdatedAt[sec]; u == nil || *u != ts(checked) {
			t.Errorf("inventory_updated_at.%s = %v, want %s", sec, u, ts(checked))
		}
	}
	if len(got.RecentEvents) != recentEvents {
		t.Fatalf("recent_events has %d, want the newest %d", len(got.RecentEvents), recentEvents)
	}
	for i, e := range got.RecentEvents {
		if want := fmt.Sprintf("e%03d", 24-i); e.ID != want {
			t.Errorf("recent_events[%d] = %s, want %s (newest first)", i, e.ID, want)
		}
	}
	if string(got.RecentEvents[0].Data) != "{}" || !jsonEqual(t, got.RecentEvents[1].Data, `{"n":23}`) {
		t.Errorf("event data = %s, %s", got.RecentEvents[0].Data, got.RecentEvents[1].Data)
	}
	if e := got.RecentEvents[1]; e.Type != "agent.tick" || e.OccurredAt == nil || *e.OccurredAt != ts(f.now.Add(-7*time.Minute)) ||
		e.ReceivedAt == nil || *e.ReceivedAt != ts(checked) {
		t.Errorf("event = %+v", e)
	}

	msg := wantError(t, f.call(t, "GET", "/api/v1/computers/no-such-computer", ""), http.StatusNotFound, errcode.NotFound)
	wantContains(t, "message", msg, "computer")
}

func TestComputerDetail_WithoutInventoryHasEmptyObjects(t *testing.T) {
	f := newLoggedIn(t)
	f.seed(t, computerSeed{id: "c-1", name: "bare"})
	raw := decodeAs[map[string]json.RawMessage](t, f.call(t, "GET", "/api/v1/computers/c-1", ""), http.StatusOK)
	for k, want := range map[string]string{"inventory": "{}", "inventory_updated_at": "{}", "recent_events": "[]"} {
		if string(raw[k]) != want {
			t.Errorf("%s = %s, want %s", k, raw[k], want)
		}
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func jsonEqual(t *testing.T, got json.RawMessage, want string) bool {
	t.Helper()
	var a, b any
	if err := json.Unmarshal(got, &a); err != nil {
		t.Errorf("invalid JSON %s: %v", got, err)
		return false
	}
	if err := json.Unmarshal([]byte(want), &b); err != nil {
		t.Fatal(err)
	}
	return jsonString(a) == jsonString(b)
}

func TestComputerEvents_TypeFilterAndPagination(t *testing.T) {
	f := newLoggedIn(t)
	f.seed(t, computerSeed{id: "c-1", name: "web-01"}, computerSeed{id: "c-2", name: "other"})
	types := []string{"agent.started", "agent.stopped", "user.login"}
	var evs []store.Event
	for i := range 25 {
		evs = append(evs, store.Event{ID: fmt.Sprintf("e%03d", i), Type: types[i%3], OccurredAt: f.now.Add(time.Duration(i-25) * time.Minute), Data: `{}`})
	}
	f.checkIn(t, &store.CheckIn{ComputerID: "c-1", Now: f.now, Events: evs})
	f.checkIn(t, &store.CheckIn{ComputerID: "c-2", Now: f.now, Events: []store.Event{{ID: "e000", Type: "user.login", OccurredAt: f.now, Data: `{}`}}})

	ids := func(l listResponse[eventJSON]) []string {
		out := []string{}
		for _, e := range l.Items {
			out = append(out, e.ID)
		}
		return out
	}
	rangeIDs := func(from, to, step int) []string {
		out := []string{}
		for i := from; (step > 0 && i <= to) || (step < 0 && i >= to); i += step {
			out = append(out, fmt.Sprintf("e%03d", i))
		}
		return out
	}
	tests := []struct {
		query string
		want  []string
		total int
	}{
		{"", rangeIDs(24, 0, -1), 25},
		{"type=user.login", rangeIDs(23, 2, -3), 8},
		{"type=agent.started", rangeIDs(24, 0, -3), 9},
		{"type=agent.", slices.DeleteFunc(rangeIDs(24, 0, -1), func(id string) bool { n, _ := strconv.Atoi(id[1:]); return n%3 == 2 }), 17},
		{"type=agent", []string{}, 0},
		{"type=agent.%25", []string{}, 0},
		{"limit=5", rangeIDs(24, 20, -1), 25},
		{"limit=5&offset=5", rangeIDs(19, 15, -1), 25},
		{"limit=10&offset=20", rangeIDs(4, 0, -1), 25},
		{"offset=25", []string{}, 25},
		{"type=user.login&limit=2&offset=1", []string{"e020", "e017"}, 8},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			got := decodeAs[listResponse[eventJSON]](t, f.call(t, "GET", "/api/v1/computers/c-1/events?"+tt.query, ""), http.StatusOK)
			if !slices.Equal(ids(got), tt.want) || got.Total != tt.total {
				t.Errorf("got %q total %d, want %q total %d", ids(got), got.Total, tt.want, tt.total)
			}
		})
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=-1", "limit=x", "offset=-1", "type=" + strings.Repeat("a", 65)} {
		wantError(t, f.call(t, "GET", "/api/v1/computers/c-1/events?"+q, ""), http.StatusBadRequest, errcode.Invalid)
	}
	wantError(t, f.call(t, "GET", "/api/v1/computers/nope/events", ""), http.StatusNotFound, errcode.NotFound)
}

func TestComputerWakeup(t *testing.T) {
	f := newLoggedIn(t)
	f.seed(t, computerSeed{id: "c-1", name: "web-01"})
	got := decodeAs[map[string]string](t, f.call(t, "POST", "/api/v1/computers/c-1/wakeup", ""), http.StatusAccepted)
	if got["wakeup_id"] != "wake-1" {
		t.Errorf("wakeup response = %v, want the presence's id wake-1", got)
	}
	wakes, _ := f.presence.calls()
	if len(wakes) != 1 || wakes[0].ComputerID != "c-1" || !strings.Contains(wakes[0].Reason, testUser) {
		t.Errorf("Wake calls = %+v, want one for c-1 naming %s", wakes, testUser)
	}

	f.presence.setWakeErr(errcode.New(errcode.Unavailable, "computer is not connected"))
	msg := wantError(t, f.call(t, "POST", "/api/v1/computers/c-1/wakeup", ""), http.StatusServiceUnavailable, errcode.Unavailable)
	wantContains(t, "message", msg, "not connected")

	wantError(t, f.call(t, "POST", "/api/v1/computers/nope/wakeup", ""), http.StatusNotFound, errcode.NotFound)
	if wakes, _ := f.presence.calls(); len(wakes) != 2 {
		t.Errorf("Wake called %d times, want 2 (never for an unknown computer)", len(wakes))
	}
}

func TestComputerWakeMany_ListOrGroup(t *testing.T) {
	f := newFleet(t)
	got := decodeAs[map[string]int](t, f.call(t, "POST", "/api/v1/computers/wakeup", `{"group":"Servers"}`), http.StatusAccepted)
	if got["requested"] != 3 || got["connected"] != 1 {
		t.Errorf("group Servers: %v, want 3 requested (db-01, web-01, web-02), 1 connected", got)
	}
	got = decodeAs[map[string]int](t, f.call(t, "POST", "/api/v1/computers/wakeup", `{"group":"Servers","recursive":false}`), http.StatusAccepted)
	if got["requested"] != 1 {
		t.Errorf("group Servers without subgroups: %v, want 1 requested", got)
	}
	got = decodeAs[map[string]int](t, f.call(t, "POST", "/api/v1/computers/wakeup", `{"computer_ids":["c-web01","c-lap7"]}`), http.StatusAccepted)
	if got["requested"] != 2 || got["connected"] != 1 {
		t.Errorf("ids: %v", got)
	}
	wakes, _ := f.presence.calls()
	if len(wakes) != 6 {
		t.Errorf("%d wake-ups recorded, want 6", len(wakes))
	}
	for _, body := range []string{`{}`, `{"group":"Servers","computer_ids":["c-db01"]}`, `{"computer_ids":` + jsonString(make([]string, 1001)) + `}`} {
		wantError(t, f.call(t, "POST", "/api/v1/computers/wakeup", body), http.StatusBadRequest, errcode.Invalid)
	}
	wantError(t, f.call(t, "POST", "/api/v1/computers/wakeup", `{"group":"Nope"}`), http.StatusNotFound, errcode.NotFound)
}

func TestComputerRevoke(t *testing.T) {
	f := newLoggedIn(t)
	f.seed(t, computerSeed{id: "c-1", name: "web-01", lastSeen: time.Second, online: true}, computerSeed{id: "c-2", name: "web-02"})
	f.presence.setLive("c-1", f.now) // still connected when revoked

	rec := f.call(t, "POST", "/api/v1/computers/c-1/revoke", "")
	if rec.Code != http.StatusNoContent || rec.Body.Len() != 0 {
		t.Fatalf("revoke: %d %q", rec.Code, rec.Body)
	}
	if _, disc := f.presence.calls(); !slices.Equal(disc, []string{"c-1"}) {
		t.Errorf("Disconnect calls = %q, want [c-1]", disc)
	}
	got := decodeAs[computerJSON](t, f.call(t, "GET", "/api/v1/computers/c-1", ""), http.StatusOK)
	if !got.Revoked || got.Status != store.StatusOffline || got.ConnectedSince != nil {
		t.Errorf("revoked computer = %+v, want revoked and offline", got)
	}
	cert, err := f.db.AgentCertificateBySerial(t.Context(), "serial-c-1")
	if err != nil || !cert.RevokedAt.Equal(f.now) {
		t.Errorf("certificate after revoke = %+v, %v; want revoked at %s", cert, err, f.now)
	}
	if l := decodeAs[computerList](t, f.call(t, "GET", "/api/v1/computers", ""), http.StatusOK); !slices.Equal(names(l.Items), []string{"web-02"}) || l.Total != 1 {
		t.Errorf("list after revoke = %q total %d, want only web-02", names(l.Items), l.Total)
	}

	wantError(t, f.call(t, "POST", "/api/v1/computers/nope/revoke", ""), http.StatusNotFound, errcode.NotFound)
	if _, disc := f.presence.calls(); len(disc) != 1 {
		t.Errorf("Disconnect calls = %q, want none for an unknown computer", disc)
	}
}

func TestResponses_CarryNoStoreAndNosniff(t *testing.T) {
	f := newLoggedIn(t)
	for _, path := range []string{"/api/v1/computers", "/api/v1/nope", "/healthz"} {
		rec := f.call(t, "GET", path, "")
		if rec.Header().Get("Cache-Control") != "no-store" || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s headers = %v", path, rec.Header())
		}
	}
	if rec := f.call(t, "GET", "/metrics", ""); rec.Header().Get("Cache-Control") != "" {
		t.Errorf("/metrics Cache-Control = %q, want none (scrapers cache-bust themselves)", rec.Header().Get("Cache-Control"))
	}
}

func TestErrors_InternalFailuresDoNotLeakDetails(t *testing.T) {
	f := newLoggedIn(t)
	if err := f.db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/api/v1/groups", "/api/v1/computers"} {
		rec := f.call(t, "GET", path, "")
		if msg := wantError(t, rec, http.StatusInternalServerError, errcode.Internal); msg != "internal error" {
			t.Errorf("%s: message %q, want the generic text", path, msg)
		}
		if strings.Contains(rec.Body.String(), "sql") {
			t.Errorf("%s: body leaks the store error: %s", path, rec.Body)
		}
	}
}

func TestDetections_ListFilterResolve(t *testing.T) {
	f := newFleet(t)
	f.checkIn(t, &store.CheckIn{ComputerID: "c-web01", Now: f.now, Events: []store.Event{{
		ID: "det-1", Type: store.DetectionEventType, OccurredAt: f.now.Add(-time.Hour),
		Data: `{"signature":"EICAR-Test-File","path":"/srv/eicar.com","kind":"body","action":"quarantined"}`,
	}}})
	got := decodeAs[listResponse[detectionJSON]](t, f.call(t, "GET", "/api/v1/detections?group=Servers&state=unresolved", ""), http.StatusOK)
	if got.Total != 1 || got.Items[0].Computer.Name != "web-01" || got.Items[0].Signature != "EICAR-Test-File" || got.Items[0].State != "unresolved" {
		t.Fatalf("list = %+v", got)
	}
	if d := got.Items[0]; d.Occurrences != 1 || d.LastSeenAt == nil || *d.LastSeenAt != *d.OccurredAt {
		t.Fatalf("a first find: occurrences %d, last seen %v", d.Occurrences, d.LastSeenAt)
	}
	if string(got.Items[0].Details) == "" || !strings.Contains(string(got.Items[0].Details), "quarantined") {
		t.Fatalf("details = %s", got.Items[0].Details)
	}
	// The computer filter takes an id or an exact name; one that matches no
	// computer is an error, not an empty list.
	for _, c := range []string{"c-web01", "web-01"} {
		if byComputer := decodeAs[listResponse[detectionJSON]](t, f.call(t, "GET", "/api/v1/detections?computer="+c, ""), http.StatusOK); byComputer.Total != 1 {
			t.Fatalf("computer=%s: %+v", c, byComputer)
		}
	}
	wantError(t, f.call(t, "GET", "/api/v1/detections?computer=web-1", ""), http.StatusNotFound, errcode.NotFound)
	none := decodeAs[listResponse[detectionJSON]](t, f.call(t, "GET", "/api/v1/detections?group=Laptops", ""), http.StatusOK)
	if none.Total != 0 || none.Items == nil {
		t.Fatalf("Laptops: %+v (items must be [] not null)", none)
	}
	list := decodeAs[computerList](t, f.call(t, "GET", "/api/v1/computers?name=web-01", ""), http.StatusOK)
	if list.Items[0].UnresolvedDetections != 1 {
		t.Fatalf("unresolved_detections = %d", list.Items[0].UnresolvedDetections)
	}
	res := decodeAs[detectionJSON](t, f.call(t, "POST", "/api/v1/detections/det-1/resolve", ""), http.StatusOK)
	if res.State != "resolved" || res.ResolvedBy != testUser || res.ResolvedAt == nil {
		t.Fatalf("resolved = %+v", res)
	}
	un := decodeAs[detectionJSON](t, f.call(t, "POST", "/api/v1/detections/det-1/unresolve", ""), http.StatusOK)
	if un.State != "unresolved" || un.ResolvedBy != "" {
		t.Fatalf("unresolved = %+v", un)
	}
	for _, q := range []string{"state=maybe", "since=yesterday", "until=2026-13-01T00:00:00Z", "limit=0", "group=Nope", "name=" + strings.Repeat("x", 257)} {
		wantError(t, f.call(t, "GET", "/api/v1/detections?"+q, ""), http.StatusBadRequest, errcode.Invalid)
	}
	wantError(t, f.call(t, "GET", "/api/v1/detections/nope", ""), http.StatusNotFound, errcode.NotFound)
	wantError(t, f.call(t, "POST", "/api/v1/detections/nope/resolve", ""), http.StatusNotFound, errcode.NotFound)
}

// Anyone can lock an account by guessing; an administrator unlocks it, and
// a password reset unlocks it too, so the new password works at once.
func TestLogin_AnAdministratorUnlocksALockedAccount(t *testing.T) {
	f := newLoggedIn(t)
	hash, _ := password.Hash("bob's long password 1")
	if err := f.db.CreateUser(t.Context(), &store.User{ID: "u-bob", Username: "bob", PasswordHash: hash, HomeGroupID: store.GroupAll}); err != nil {
		t.Fatal(err)
	}
	failures := auth.Policy{}.Defaults().LockoutFailures
	// lock makes guesses lock bob's account and checks that his password is
	// refused from elsewhere, an address he has not logged in from (his
	// last login's address would still let him in).
	lock := func(elsewhere string) {
		t.Helper()
		for i := range failures {
			f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody("bob", "guess"+strconv.Itoa(i)), remote: "203.0.113.5:5555"})
		}
		wantError(t, f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody("bob", "bob's long password 1"), remote: elsewhere}),
			http.StatusTooManyRequests, errcode.TooManyRequests)
	}
	lock("198.51.100.20:4444")
	u := decodeAs[userJSON](t, f.call(t, "GET", "/api/v1/users/u-bob", ""), http.StatusOK)
	if u.LockedUntil == nil {
		t.Fatalf("locked user shows no lock: %+v", u)
	}
	u = decodeAs[userJSON](t, f.call(t, "PATCH", "/api/v1/users/u-bob", fmt.Sprintf(`{"unlock":true,"version":%d}`, u.Version)), http.StatusOK)
	if u.LockedUntil != nil {
		t.Fatalf("unlocked user still shows a lock: %+v", u)
	}
	if rec := f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody("bob", "bob's long password 1"), remote: "198.51.100.20:4444"}); rec.Code != http.StatusOK {
		t.Fatalf("login after the unlock: %d %s", rec.Code, rec.Body)
	}
	if u := decodeAs[userJSON](t, f.call(t, "GET", "/api/v1/users/u-bob", ""), http.StatusOK); u.LastLoginAddr != "198.51.100.20" {
		t.Fatalf("last login address %q, want the login's 198.51.100.20 (port dropped)", u.LastLoginAddr)
	}
	lock("198.51.100.21:4444")
	if rec := f.call(t, "POST", "/api/v1/users/u-bob/password", `{"password":"a brand new secret 2","must_change":false}`); rec.Code != http.StatusNoContent {
		t.Fatalf("reset: %d %s", rec.Code, rec.Body)
	}
	if rec := f.serve(t, request{method: "POST", path: "/api/v1/session", body: loginBody("bob", "a brand new secret 2"), remote: "198.51.100.21:4444"}); rec.Code != http.StatusOK {
		t.Fatalf("login with the reset password: %d %s", rec.Code, rec.Body)
	}
	// A lock of the last login's address alone shows as the user's lock too,
	// and an unlock clears it.
	addrLock := f.now.Add(7 * time.Minute)
	if _, err := f.db.RecordLoginFailure(t.Context(), "u-bob", true, 1, addrLock); err != nil {
		t.Fatal(err)
	}
	u = decodeAs[userJSON](t, f.call(t, "GET", "/api/v1/users/u-bob", ""), http.StatusOK)
	if u.LockedUntil == nil || *u.LockedUntil != addrLock.UTC().Format("2006-01-02T15:04:05.000Z") {
		t.Fatalf("locked_until %v, want the address's lock %v", u.LockedUntil, addrLock)
	}
	u = decodeAs[userJSON](t, f.call(t, "PATCH", "/api/v1/users/u-bob", fmt.Sprintf(`{"unlock":true,"version":%d}`, u.Version)), http.StatusOK)
	if u.LockedUntil != nil {
		t.Fatalf("unlock left locked_until %v", *u.LockedUntil)
	}
}
