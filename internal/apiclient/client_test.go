package apiclient_test

import (
	"context"
	"encoding/csv"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/apiclient"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/httpapi"
	"github.com/mamori/mamori/internal/pki"
	mserver "github.com/mamori/mamori/internal/server"
	"github.com/mamori/mamori/internal/store"
)

const adminPassword = "correct horse battery staple"

type testServer struct {
	url  string // https://127.0.0.1:PORT
	pin  string
	data string
}

// startServer runs the real server in this process (as the e2e tests do).
func startServer(t *testing.T) *testServer {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	srv, err := mserver.New(t.Context(), mserver.Config{
		DataDir: data, AgentListen: "127.0.0.1:0", APIListen: "127.0.0.1:0",
		AdminPassword: adminPassword,
		Log:           slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server Run: %v", err)
		}
		srv.Close()
	})
	return &testServer{url: "https://" + srv.APIAddr(), pin: srv.CAFingerprint(), data: data}
}

func newClient(t *testing.T, url, token string, trust apiclient.Trust) *apiclient.Client {
	t.Helper()
	c, err := apiclient.New(url, token, trust)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// adminToken logs in as admin and returns a client using a new API token.
func adminToken(t *testing.T, s *testServer) *apiclient.Client {
	t.Helper()
	c := newClient(t, s.url, "", apiclient.Trust{CAFingerprint: s.pin})
	if _, err := c.Login(t.Context(), apiclient.LoginRequest{Username: "admin", Password: adminPassword}); err != nil {
		t.Fatal(err)
	}
	tok, err := c.CreateAPIToken(t.Context(), "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.Token, "mmt_") {
		t.Fatalf("token secret %q lacks the mmt_ prefix", tok.Token)
	}
	return newClient(t, s.url, tok.Token, apiclient.Trust{CAFingerprint: s.pin})
}

func wantCode(t *testing.T, err error, code errcode.Code, msgPart string) {
	t.Helper()
	var e *errcode.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *errcode.Error", err, err)
	}
	if e.Code != code || !strings.Contains(e.Message, msgPart) {
		t.Fatalf("error = %q %q, want code %q and a message containing %q", e.Code, e.Message, code, msgPart)
	}
}

func TestClient_AgainstRealServer(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	ctx := t.Context()

	anon := newClient(t, s.url, "", apiclient.Trust{CAFingerprint: s.pin})
	ca, err := anon.CA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Fingerprint != s.pin || !strings.Contains(string(ca.JSON()), `"fingerprint"`) {
		t.Fatalf("CA() = %q (raw %s), want %q", ca.Fingerprint, ca.JSON(), s.pin)
	}
	_, err = anon.Whoami(ctx)
	wantCode(t, err, errcode.Unauthorized, "authentication required")

	_, err = anon.Login(ctx, apiclient.LoginRequest{Username: "admin", Password: "wrong password!"})
	wantCode(t, err, errcode.Unauthorized, "invalid user name or password")

	c := adminToken(t, s)
	who, err := c.Whoami(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if who.User.Username != "admin" || who.Via != "api_token" || who.Restriction != "" {
		t.Fatalf("whoami = %+v, want admin via api_token without restriction", who)
	}
	// A token cannot mint tokens: the server's refusal comes back with its code.
	_, err = c.CreateAPIToken(ctx, "again", time.Hour)
	wantCode(t, err, errcode.Forbidden, "logged-in session")

	mustChange := false
	u, err := c.CreateUser(ctx, apiclient.UserRequest{Username: "alice", Password: "wonderland rabbit hole", PermissionSets: []string{"reviewer"}, MustChangePassword: &mustChange})
	if err != nil {
		t.Fatal(err)
	}
	if u.Username != "alice" || u.MustChangePassword || len(u.PermissionSets) != 1 || u.HomeGroup.Path != "All" {
		t.Fatalf("created user = %+v", u)
	}
	got, err := c.UserByName(ctx, "ALICE") // case-insensitive when no exact match
	if err != nil || got.ID != u.ID {
		t.Fatalf("UserByName(ALICE) = %v, %v; want %s", got, err, u.ID)
	}
	_, err = c.UserByName(ctx, "alic")
	wantCode(t, err, errcode.NotFound, `user "alic" not found`)
	disabled := true
	u2, err := c.UpdateUser(ctx, u.ID, apiclient.UserUpdate{Disabled: &disabled, Version: u.Version})
	if err != nil || !u2.Disabled {
		t.Fatalf("disable: %+v, %v", u2, err)
	}
	// The version check: the old version is stale now.
	_, err = c.UpdateUser(ctx, u.ID, apiclient.UserUpdate{Disabled: &disabled, Version: u.Version})
	if errcode.Of(err) != errcode.Conflict {
		t.Fatalf("stale update: %v, want conflict", err)
	}
	_, err = c.GetUser(ctx, "no-such-id")
	wantCode(t, err, errcode.NotFound, "not found")

	servers, err := c.CreateGroup(ctx, "", "Servers")
	if err != nil {
		t.Fatal(err)
	}
	web, err := c.CreateGroup(ctx, "Servers", "Web")
	if err != nil || web.Path != "All/Servers/Web" {
		t.Fatalf("create Servers/Web: %+v, %v", web, err)
	}
	g, err := c.GroupByPath(ctx, "/Servers/Web")
	if err != nil || g.ID != web.ID {
		t.Fatalf("GroupByPath = %+v, %v", g, err)
	}
	_, err = c.MoveGroup(ctx, servers.ID, "Servers/Web", servers.Version)
	wantCode(t, err, errcode.Invalid, "into itself or one of its subgroups")

	et, err := c.CreateEnrollmentToken(ctx, apiclient.EnrollmentTokenRequest{Group: "Servers", TTL: "1h", Uses: 2})
	if err != nil || !strings.HasPrefix(et.Token, "mmr_") || et.Group.Path != "All/Servers" || et.UsesAllowed != 2 {
		t.Fatalf("enrollment token = %+v, %v", et, err)
	}
	if err := c.RevokeEnrollmentToken(ctx, et.ID); err != nil {
		t.Fatal(err)
	}

	var out strings.Builder
	if _, err := c.ExportAudit(ctx, apiclient.AuditQuery{Domain: "groups"}, &out); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(out.String())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, r := range rows[1:] {
		actions = append(actions, r[6]+"."+r[7]+":"+r[11])
	}
	slices.Sort(actions)
	want := []string{"groups.create:success", "groups.create:success", "groups.move:failure"}
	if rows[0][0] != "seq" || !slices.Equal(actions, want) {
		t.Fatalf("export header %q, entries %q; want %q", rows[0], actions, want)
	}
}

func TestClient_PinMismatchFailsTheHandshake(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	ts := newTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
	defer ts.Close()
	wrong := pki.Fingerprint([]byte("some other CA"))
	c := newClient(t, ts.URL, "mmt_secret", apiclient.Trust{CAFingerprint: wrong})
	_, err := c.Login(t.Context(), apiclient.LoginRequest{Username: "admin", Password: "secret"})
	var ce *apiclient.ConnError
	var pe *pki.PinMismatchError
	if !errors.As(err, &ce) || !errors.As(err, &pe) {
		t.Fatalf("err = %v (%T), want a ConnError with a PinMismatchError", err, err)
	}
	if !strings.Contains(err.Error(), "does not match the CA fingerprint "+wrong) {
		t.Errorf("message %q does not name the pin", err)
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("%d requests reached the server; the credentials must not be sent", n)
	}
}

func TestClient_TrustByPinOrCAFile(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, trust := range []apiclient.Trust{{CAFingerprint: s.pin}, {CAFingerprint: strings.ToUpper(s.pin[7:])}, {CAFile: filepath.Join(s.data, "ca.crt")}} {
		if trust.CAFingerprint != "" && !strings.HasPrefix(trust.CAFingerprint, "sha256:") {
			trust.CAFingerprint = "sha256:" + trust.CAFingerprint
		}
		if _, err := newClient(t, s.url, "", trust).CA(t.Context()); err != nil {
			t.Errorf("trust %+v: %v", trust, err)
		}
	}
	// Without a pin or CA file the internal CA is not trusted.
	_, err := newClient(t, s.url, "", apiclient.Trust{}).CA(t.Context())
	var ce *apiclient.ConnError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "--ca-fingerprint") {
		t.Fatalf("system roots: %v, want a ConnError suggesting --ca-fingerprint", err)
	}
	// The CA file does not vouch for another server's certificate.
	other := newTLSServer(http.NotFoundHandler())
	defer other.Close()
	_, err = newClient(t, other.URL, "", apiclient.Trust{CAFile: filepath.Join(s.data, "ca.crt")}).CA(t.Context())
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "not trusted") {
		t.Fatalf("other server with the CA file: %v, want a ConnError saying it is not trusted", err)
	}
	if _, err := apiclient.New(s.url, "", apiclient.Trust{CAFingerprint: s.pin, CAFile: "x"}); errcode.Of(err) != errcode.Invalid {
		t.Fatalf("both pin and file: %v, want invalid", err)
	}
	if _, err := apiclient.New(s.url, "", apiclient.Trust{CAFingerprint: "sha256:abcd"}); errcode.Of(err) != errcode.Invalid {
		t.Fatalf("short pin: %v, want invalid", err)
	}
}

func TestClient_UnreachableServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = newClient(t, addr, "mmt_x", apiclient.Trust{}).Whoami(t.Context())
	var ce *apiclient.ConnError
	if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), "cannot reach https://"+addr+": ") {
		t.Fatalf("err = %v, want ConnError \"cannot reach https://%s: ...\"", err, addr)
	}
}

func TestClient_Timeout(t *testing.T) {
	t.Parallel()
	ts := newTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer ts.Close()
	c := &apiclient.Client{BaseURL: ts.URL, HTTP: ts.Client(), Timeout: 100 * time.Millisecond}
	start := time.Now()
	_, err := c.Whoami(t.Context())
	var ce *apiclient.ConnError
	if !errors.As(err, &ce) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a ConnError for the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timed out after %v", d)
	}
}

func TestClient_ErrorsWithoutTheAPIShape(t *testing.T) {
	t.Parallel()
	ts := newTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/session":
			http.Error(w, "<html>maintenance</html>", http.StatusServiceUnavailable)
		case "/api/v1/ca":
			http.Redirect(w, r, "https://elsewhere.example/login", http.StatusFound)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"error":{"code":"conflict","message":"someone else changed it"}}`)
		}
	}))
	defer ts.Close()
	c := &apiclient.Client{BaseURL: ts.URL, HTTP: ts.Client()}
	c.HTTP.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	_, err := c.Whoami(t.Context())
	wantCode(t, err, errcode.Unavailable, "503 Service Unavailable")
	_, err = c.CA(t.Context())
	wantCode(t, err, errcode.Invalid, "elsewhere.example")
	_, err = c.GetUser(t.Context(), "x")
	wantCode(t, err, errcode.Conflict, "someone else changed it")
}

func TestClient_RequestSizeLimitBeforeSending(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	ts := newTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
	defer ts.Close()
	c := &apiclient.Client{BaseURL: ts.URL, HTTP: ts.Client()}
	_, err := c.CreateUser(t.Context(), apiclient.UserRequest{Username: "x", Description: strings.Repeat("a", apiclient.MaxRequestBytes)})
	wantCode(t, err, errcode.TooLarge, "larger than")
	if requests.Load() != 0 {
		t.Fatal("an oversized request was sent")
	}
	if apiclient.MaxRequestBytes != httpapi.MaxBodyBytes {
		t.Fatalf("MaxRequestBytes %d != the server's MaxBodyBytes %d", apiclient.MaxRequestBytes, httpapi.MaxBodyBytes)
	}
}

func TestNormalizeURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"mamori.example.net:8443", "https://mamori.example.net:8443"},
		{"https://mamori.example.net:8443/", "https://mamori.example.net:8443"},
		{" https://[::1]:8443 ", "https://[::1]:8443"},
		{"http://mamori.example.net:8443", ""},
		{"https://mamori.example.net:8443/api/v1", ""},
		{"https://user:pw@mamori.example.net", ""},
		{"", ""},
	} {
		got, err := apiclient.NormalizeURL(tc.in)
		if got != tc.want || (tc.want == "") != (err != nil) {
			t.Errorf("NormalizeURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestNormalizeGroupPath_MatchesTheServer(t *testing.T) {
	for _, p := range []string{"", "/", "All", "All/", "Servers", "/Servers/Web/", " All/Servers ", "Allotment", "All Servers"} {
		if got, want := apiclient.NormalizeGroupPath(p), store.NormalizeGroupPath(p); got != want {
			t.Errorf("NormalizeGroupPath(%q) = %q, the server says %q", p, got, want)
		}
	}
}

// newTLSServer is httptest.NewTLSServer without the handshake error logs
// the refused connections cause.
func newTLSServer(h http.Handler) *httptest.Server {
	ts := httptest.NewUnstartedServer(h)
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	return ts
}
