package admincli_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/mamori/mamori/internal/admincli"
	"github.com/mamori/mamori/internal/apiclient"
	"github.com/mamori/mamori/internal/pki"
	mserver "github.com/mamori/mamori/internal/server"
)

const adminPassword = "correct horse battery staple"

// harness is a real server running in this process and a CLI environment
// whose config file and variables belong to the test.
type harness struct {
	t        *testing.T
	url, pin string
	data     string
	agent    string // agent listener address
	cfgPath  string
	env      map[string]string
	terminal bool // stdin counts as a terminal (prompts shown)
}

func start(t *testing.T) *harness {
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
	h := newHarness(t)
	h.url, h.pin, h.data, h.agent = "https://"+srv.APIAddr(), srv.CAFingerprint(), data, srv.AgentAddr()
	return h
}

// newHarness is a CLI environment without a server.
func newHarness(t *testing.T) *harness {
	cfg := filepath.Join(t.TempDir(), "config", "cli.json")
	return &harness{t: t, cfgPath: cfg, env: map[string]string{admincli.EnvConfig: cfg}}
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs one command with stdin (not a terminal).
func (h *harness) run(stdin string, args ...string) result {
	h.t.Helper()
	var out, errOut bytes.Buffer
	c := &admincli.CLI{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut,
		Getenv: func(k string) string { return h.env[k] }, Terminal: func() bool { return h.terminal }}
	code := c.Run(h.t.Context(), args)
	return result{code, out.String(), errOut.String()}
}

// ok runs a command that must succeed and returns its stdout.
func (h *harness) ok(stdin string, args ...string) string {
	h.t.Helper()
	r := h.run(stdin, args...)
	if r.code != 0 {
		h.t.Fatalf("mamori %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// fails runs a command that must end with code and print the one line
// "mamori: ..." containing msg.
func (h *harness) fails(code int, msg string, stdin string, args ...string) result {
	h.t.Helper()
	r := h.run(stdin, args...)
	if r.code != code {
		h.t.Fatalf("mamori %s: exit %d (stderr %q), want %d", strings.Join(args, " "), r.code, r.stderr, code)
	}
	if !strings.Contains(r.stderr, "mamori: ") || !strings.Contains(r.stderr, msg) {
		h.t.Fatalf("mamori %s: stderr %q, want a line containing %q", strings.Join(args, " "), r.stderr, msg)
	}
	return r
}

// jsonOut runs a command with --output json and decodes its stdout.
func (h *harness) jsonOut(out any, stdin string, args ...string) {
	h.t.Helper()
	s := h.ok(stdin, append(args, "--output", "json")...)
	if err := json.Unmarshal([]byte(s), out); err != nil {
		h.t.Fatalf("mamori %s: output %q is not JSON: %v", strings.Join(args, " "), s, err)
	}
}

// login logs in as admin, storing the token in the harness's config file.
func (h *harness) login() {
	h.t.Helper()
	h.ok(adminPassword+"\n", "login", "--server", h.url, "--ca-fingerprint", h.pin, "--user", "admin")
}

func (h *harness) config() admincli.Config {
	h.t.Helper()
	b, err := os.ReadFile(h.cfgPath)
	if err != nil {
		h.t.Fatal(err)
	}
	var c admincli.Config
	if err := json.Unmarshal(b, &c); err != nil {
		h.t.Fatal(err)
	}
	return c
}

type user struct {
	ID                 string   `json:"id"`
	Username           string   `json:"username"`
	Disabled           bool     `json:"disabled"`
	MustChangePassword bool     `json:"must_change_password"`
	TOTPRequired       bool     `json:"totp_required"`
	Description        string   `json:"description"`
	PermissionSets     []string `json:"permission_sets"`
	HomeGroup          struct {
		Path string `json:"path"`
	} `json:"home_group"`
}

type group struct {
	ID   string `json:"id"`
	Path string `json:"path"`
}

type list[T any] struct {
	Items []T `json:"items"`
	Total int `json:"total"`
}

func TestLogin_StoresATokenThatWorks_LogoutRevokesIt(t *testing.T) {
	t.Parallel()
	h := start(t)
	out := h.ok(adminPassword+"\n", "login", "--server", strings.TrimPrefix(h.url, "https://"), "--ca-fingerprint", "sha256:"+strings.ToUpper(h.pin[7:]),
		"--user", "admin", "--token-name", "laptop", "--ttl", "2h")
	if !strings.Contains(out, "Logged in to "+h.url+" as admin") {
		t.Errorf("login said %q", out)
	}
	st, err := os.Stat(h.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("config file mode %v, want 0600", st.Mode().Perm())
	}
	cfg := h.config()
	if cfg.Server != h.url || cfg.CAFingerprint != h.pin || cfg.Username != "admin" || !strings.HasPrefix(cfg.Token, "mmt_") ||
		cfg.TokenID == "" || cfg.TokenName != "laptop" {
		t.Fatalf("config = %+v", cfg)
	}
	exp, err := time.Parse(time.RFC3339, cfg.TokenExpiresAt)
	if err != nil || exp.Sub(time.Now()) > 2*time.Hour || exp.Sub(time.Now()) < 110*time.Minute {
		t.Errorf("token expires at %q, want in 2h", cfg.TokenExpiresAt)
	}
	// The stored token works, with nothing but the config file.
	var who struct {
		User struct{ Username string } `json:"user"`
		Via  string                    `json:"via"`
	}
	h.jsonOut(&who, "", "whoami")
	if who.User.Username != "admin" || who.Via != "api_token" {
		t.Fatalf("whoami = %+v, want admin via api_token", who)
	}
	// The login's session was ended; only the token remains.
	var toks list[struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}]
	h.jsonOut(&toks, "", "tokens", "list")
	if len(toks.Items) != 1 || toks.Items[0].ID != cfg.TokenID {
		t.Fatalf("tokens = %+v, want only %s", toks, cfg.TokenID)
	}

	// Logging in again replaces the token and revokes the old one.
	h.env[admincli.EnvPassword] = adminPassword
	h.ok("", "login") // server, pin and user from the config file; password from the environment
	cfg2 := h.config()
	if cfg2.TokenID == cfg.TokenID || cfg2.Server != h.url || cfg2.CAFingerprint != h.pin {
		t.Fatalf("second login config = %+v", cfg2)
	}
	h.fails(1, "API token revoked", "", "users", "list", "--token", cfg.Token)

	out = h.ok("", "logout")
	if !strings.Contains(out, "token is revoked") {
		t.Errorf("logout said %q", out)
	}
	cfg3 := h.config()
	if cfg3.Token != "" || cfg3.TokenID != "" || cfg3.Server != h.url || cfg3.CAFingerprint != h.pin {
		t.Fatalf("config after logout = %+v, want the server and pin without a token", cfg3)
	}
	h.fails(1, "API token revoked", "", "whoami", "--token", cfg2.Token)
	h.fails(2, "not logged in to "+h.url, "", "users", "list")
	h.fails(1, "holds no token", "", "logout")
}

func TestLogin_WrongPinSendsNothing(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	defer ts.Close()
	h := newHarness(t)
	wrong := pki.Fingerprint([]byte("not the server's CA"))
	h.fails(1, "does not match the CA fingerprint "+wrong, adminPassword+"\n", "login", "--server", ts.URL, "--ca-fingerprint", wrong, "--user", "admin")
	if n := requests.Load(); n != 0 {
		t.Fatalf("%d requests reached the server", n)
	}
	if _, err := os.Stat(h.cfgPath); !os.IsNotExist(err) {
		t.Fatalf("a failed login wrote the config file (%v)", err)
	}
}

func TestLogin_RealServerWrongPinOrNoTrust(t *testing.T) {
	t.Parallel()
	h := start(t)
	other := pki.Fingerprint([]byte("not the server's CA"))
	h.fails(1, "does not match", adminPassword+"\n", "login", "--server", h.url, "--ca-fingerprint", other, "--user", "admin")
	h.fails(1, "not trusted", adminPassword+"\n", "login", "--server", h.url, "--user", "admin")
	// The CA file works as well as the pin, and is stored as an absolute path.
	h.ok(adminPassword+"\n", "login", "--server", h.url, "--ca-file", filepath.Join(h.data, "ca.crt"), "--user", "admin")
	if cfg := h.config(); cfg.CAFile != filepath.Join(h.data, "ca.crt") || cfg.CAFingerprint != "" {
		t.Fatalf("config = %+v", cfg)
	}
	h.ok("", "users", "list")
	// A wrong password is the server's refusal.
	h.fails(1, "invalid user name or password", "not the password\n", "login", "--user", "admin")
}

func TestUnreachableServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h := newHarness(t)
	r := h.fails(1, "cannot reach https://"+addr, "", "users", "list", "--server", addr, "--token", "mmt_x")
	if strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("stderr %q is not one line", r.stderr)
	}
	// Flags may follow arguments, and "--" ends the flags.
	h.fails(1, "cannot reach", "", "users", "show", "alice", "--server", addr, "--token", "mmt_x")
	h.fails(1, "cannot reach", "", "users", "show", "--server", addr, "--token", "mmt_x", "--", "-alice")
	// Logging out needs the server: the token stays stored until it is revoked.
	cfg := admincli.Config{Server: "https://" + addr, Token: "mmt_x", TokenID: "id"}
	b, _ := json.Marshal(cfg)
	if err := os.MkdirAll(filepath.Dir(h.cfgPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	h.fails(1, "the token stays in "+h.cfgPath, "", "logout")
	if h.config().Token != "mmt_x" {
		t.Fatal("logout removed a token it could not revoke")
	}
}

func TestPrompts_AtATerminal(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.terminal = true
	h.env[admincli.EnvServer] = "https://127.0.0.1:1"
	h.env[admincli.EnvToken] = "mmt_x"
	// A new password is asked twice; the prompt says the typing is visible.
	r := h.run("first password\nsecond password\n", "users", "create", "dave")
	if r.code != 2 || !strings.Contains(r.stderr, "New password for dave (typing is visible") || !strings.Contains(r.stderr, "Repeat the password") ||
		!strings.Contains(r.stderr, "mamori: the two passwords differ") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	// Without a terminal there is no prompt.
	h.terminal = false
	r = h.run("", "users", "create", "dave", "--password-stdin")
	if strings.Contains(r.stderr, "password for") {
		t.Fatalf("prompted without a terminal: %q", r.stderr)
	}
}

func TestUsers_CreateListDisableEnableDelete(t *testing.T) {
	t.Parallel()
	h := start(t)
	h.login()

	var u user
	h.jsonOut(&u, "wonderland rabbit hole\n", "users", "create", "alice", "--password-stdin", "--permission-set", "Reviewer",
		"--description", "on call", "--totp-required")
	if u.Username != "alice" || !u.MustChangePassword || !u.TOTPRequired || u.Description != "on call" ||
		!slices.Equal(u.PermissionSets, []string{"reviewer"}) || u.HomeGroup.Path != "All" || u.Disabled {
		t.Fatalf("created %+v", u)
	}
	var l list[user]
	h.jsonOut(&l, "", "users", "list")
	var names []string
	for _, x := range l.Items {
		names = append(names, x.Username)
	}
	if !slices.Equal(names, []string{"admin", "alice"}) || l.Total != 2 {
		t.Fatalf("users = %v (total %d), want admin and alice", names, l.Total)
	}
	if out := h.ok("", "users", "list"); !strings.Contains(out, "USERNAME") || !strings.Contains(out, "alice") {
		t.Errorf("text list = %q", out)
	}

	var d user
	h.jsonOut(&d, "", "users", "disable", "alice")
	if !d.Disabled {
		t.Fatal("disable did not disable")
	}
	h.jsonOut(&d, "", "users", "show", u.ID) // by id
	if !d.Disabled || d.Username != "alice" {
		t.Fatalf("show by id = %+v", d)
	}
	h.jsonOut(&d, "", "users", "enable", "alice")
	if d.Disabled {
		t.Fatal("enable did not enable")
	}
	h.jsonOut(&d, "", "users", "set-permission-sets", "alice", "administrator", "reviewer")
	if !slices.Equal(slices.Sorted(slices.Values(d.PermissionSets)), []string{"administrator", "reviewer"}) {
		t.Fatalf("permission sets = %v", d.PermissionSets)
	}
	h.jsonOut(&d, "", "users", "set-permission-sets", "alice", "--none")
	if len(d.PermissionSets) != 0 {
		t.Fatalf("permission sets after --none = %v", d.PermissionSets)
	}
	h.ok("another long password\n", "users", "reset-password", "alice", "--password-stdin")
	h.jsonOut(&d, "", "users", "unlock", "alice")
	if d.Username != "alice" {
		t.Fatalf("unlock printed %+v", d)
	}
	// The server's refusals: exit 1 with its message.
	h.fails(1, "you cannot disable yourself", "", "users", "disable", "admin")
	h.fails(1, "the user has no second factor", "", "users", "remove-totp", "alice")
	h.fails(1, "username must be", "wonderland rabbit hole\n", "users", "create", "no spaces allowed", "--password-stdin")
	h.fails(1, "permission set \"nope\" not found", "wonderland rabbit hole\n", "users", "create", "bob", "--password-stdin", "--permission-set", "nope")

	if out := h.ok("", "users", "delete", "alice"); !strings.Contains(out, "User alice deleted") {
		t.Errorf("delete said %q", out)
	}
	h.fails(1, `user "alice" not found`, "", "users", "show", "alice")
}

func TestGroups_CreateRenameMoveDelete(t *testing.T) {
	t.Parallel()
	h := start(t)
	h.login()
	var g group
	h.jsonOut(&g, "", "groups", "create", "Servers")
	if g.Path != "All/Servers" {
		t.Fatalf("created %+v", g)
	}
	h.jsonOut(&g, "", "groups", "create", "All/Servers/Web")
	if g.Path != "All/Servers/Web" {
		t.Fatalf("created %+v", g)
	}
	web := g.ID
	h.jsonOut(&g, "", "groups", "rename", "Servers/Web", "Www")
	if g.Path != "All/Servers/Www" || g.ID != web {
		t.Fatalf("renamed %+v", g)
	}
	// Into its own subtree: the server's message, exit 1.
	r := h.fails(1, "a group cannot be moved into itself or one of its subgroups", "", "groups", "move", "Servers", "Servers/Www")
	if r.stderr != "mamori: a group cannot be moved into itself or one of its subgroups\n" {
		t.Errorf("stderr = %q, want exactly the server's message", r.stderr)
	}
	h.ok("", "groups", "create", "Laptops")
	h.jsonOut(&g, "", "groups", "move", "/Servers/Www", "Laptops")
	if g.Path != "All/Laptops/Www" || g.ID != web {
		t.Fatalf("moved %+v", g)
	}
	var l list[group]
	h.jsonOut(&l, "", "groups", "list")
	var paths []string
	for _, x := range l.Items {
		paths = append(paths, x.Path)
	}
	for _, p := range []string{"All", "All/Laptops", "All/Laptops/Www", "All/Servers"} {
		if !slices.Contains(paths, p) {
			t.Errorf("groups list %v lacks %s", paths, p)
		}
	}
	var detail struct {
		Members struct {
			Subgroups int `json:"subgroups"`
		} `json:"members"`
	}
	h.jsonOut(&detail, "", "groups", "show", "Laptops")
	if detail.Members.Subgroups != 1 {
		t.Errorf("Laptops has %d subgroups, want 1", detail.Members.Subgroups)
	}
	h.fails(1, "", "", "groups", "delete", "Laptops") // not empty
	h.ok("", "groups", "delete", "Laptops/Www")
	h.ok("", "groups", "delete", "Laptops")
	h.fails(1, `static group "Laptops" not found`, "", "groups", "show", "Laptops")
	h.fails(2, "All group always exists", "", "groups", "create", "All")
}

func TestTokens_CreateUseRevoke(t *testing.T) {
	t.Parallel()
	h := start(t)
	h.login()
	var tok struct {
		ID    string `json:"id"`
		Name  string `json:"name"`
		Token string `json:"token"`
	}
	// Creating a token needs the password (a token cannot mint tokens).
	h.jsonOut(&tok, adminPassword+"\n", "tokens", "create", "ci", "--ttl", "1h")
	if tok.Name != "ci" || !strings.HasPrefix(tok.Token, "mmt_") {
		t.Fatalf("created %+v", tok)
	}
	h.ok("", "users", "list", "--token", tok.Token)
	var l list[struct {
		ID        string  `json:"id"`
		RevokedAt *string `json:"revoked_at"`
	}]
	h.jsonOut(&l, "", "tokens", "list")
	if len(l.Items) != 2 || !slices.ContainsFunc(l.Items, func(x struct {
		ID        string  `json:"id"`
		RevokedAt *string `json:"revoked_at"`
	}) bool {
		return x.ID == tok.ID && x.RevokedAt == nil
	}) {
		t.Fatalf("tokens = %+v, want the login's and %s", l.Items, tok.ID)
	}
	h.ok("", "tokens", "revoke", tok.ID)
	h.fails(1, "revoked", "", "users", "list", "--token", tok.Token)
	if out := h.ok("", "tokens", "list"); !strings.Contains(out, "revoked") {
		t.Errorf("tokens list = %q, want the revoked one marked", out)
	}
	// The token from the environment wins over the config file's.
	h.env[admincli.EnvToken] = tok.Token
	h.fails(1, "revoked", "", "users", "list")
	delete(h.env, admincli.EnvToken)
	h.fails(1, "not found", "", "tokens", "revoke", "no-such-token")
	// Revoking the stored token also forgets it.
	h.ok("", "tokens", "revoke", h.config().TokenID)
	if h.config().Token != "" {
		t.Fatal("the revoked stored token is still in the config file")
	}
}

func TestLogin_WithSecondFactor(t *testing.T) {
	t.Parallel()
	h := start(t)
	h.login()
	const bobPassword = "secret garden path 9"
	h.ok(bobPassword+"\n", "users", "create", "bob", "--password-stdin", "--must-change-password=false", "--permission-set", "reviewer")
	// Bob sets up a second factor through the API.
	c, err := apiclient.New(h.url, "", apiclient.Trust{CAFingerprint: h.pin})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Login(t.Context(), apiclient.LoginRequest{Username: "bob", Password: bobPassword}); err != nil {
		t.Fatal(err)
	}
	e, err := c.EnrollTOTP(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	code, _ := totp.GenerateCode(e.Secret, time.Now())
	if _, err := c.ConfirmTOTP(t.Context(), code); err != nil {
		t.Fatal(err)
	}
	bob := newHarness(t)
	// A wrong code is refused with the server's message.
	bob.fails(1, "invalid TOTP code", bobPassword+"\n000000\n", "login", "--server", h.url, "--ca-fingerprint", h.pin, "--user", "bob")
	// The next step's code is fresh (the current one was used to confirm)
	// and within the accepted window.
	next, _ := totp.GenerateCode(e.Secret, time.Now().Add(30*time.Second))
	bob.ok(bobPassword+"\n"+next+"\n", "login", "--server", h.url, "--ca-fingerprint", h.pin, "--user", "bob")
	var who struct {
		User struct{ Username string } `json:"user"`
	}
	bob.jsonOut(&who, "", "whoami")
	if who.User.Username != "bob" {
		t.Fatalf("whoami = %+v", who)
	}
	// The administrator removes the second factor.
	h.ok("", "users", "remove-totp", "bob")
	var u user
	h.jsonOut(&u, "", "users", "show", "bob")
	if u.Username != "bob" {
		t.Fatal(u)
	}
}

func TestLogin_PasswordChangeRequired(t *testing.T) {
	t.Parallel()
	h := start(t)
	h.login()
	h.ok("first long password\n", "users", "create", "carol", "--password-stdin") // must change at first login
	carol := newHarness(t)
	r := carol.run("first long password\nsecond long password\n", "login", "--server", h.url, "--ca-fingerprint", h.pin, "--user", "carol")
	if r.code != 0 || !strings.Contains(r.stderr, "Password changed") {
		t.Fatalf("login: exit %d, stderr %q", r.code, r.stderr)
	}
	carol.ok("", "whoami")
	c, _ := apiclient.New(h.url, "", apiclient.Trust{CAFingerprint: h.pin})
	s, err := c.Login(t.Context(), apiclient.LoginRequest{Username: "carol", Password: "second long password"})
	if err != nil || s.Restriction != "" {
		t.Fatalf("login with the new password: %+v, %v", s, err)
	}
}

func TestPermissionSetsAndAudit(t *testing.T) {
	t.Parallel()
	h := start(t)
	h.login()
	var l list[struct {
		ID      string `json:"id"`
		Builtin bool   `json:"builtin"`
	}]
	h.jsonOut(&l, "", "permission-sets", "list")
	if len(l.Items) < 2 || !slices.ContainsFunc(l.Items, func(x struct {
		ID      string `json:"id"`
		Builtin bool   `json:"builtin"`
	}) bool {
		return x.ID == "administrator" && x.Builtin
	}) {
		t.Fatalf("permission sets = %+v", l.Items)
	}
	var ps struct {
		Name   string            `json:"name"`
		Grants map[string]string `json:"grants"`
	}
	h.jsonOut(&ps, "", "permission-sets", "show", "reviewer")
	if ps.Grants["computers"] != "read" {
		t.Fatalf("reviewer = %+v", ps)
	}
	h.fails(1, "not found", "", "permission-sets", "show", "nope")

	h.ok("", "groups", "create", "Audited")
	h.fails(1, "", "", "groups", "create", "Audited") // a failure is audited too
	var al list[struct {
		Domain, Action, Result, Username string
	}]
	h.jsonOut(&al, "", "audit", "list", "--user", "admin", "--domain", "groups", "--since", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))
	var got []string
	for _, e := range al.Items {
		got = append(got, e.Domain+"."+e.Action+":"+e.Result)
	}
	if !slices.Equal(got, []string{"groups.create:failure", "groups.create:success"}) {
		t.Fatalf("audit = %v", got)
	}
	h.jsonOut(&al, "", "audit", "list", "--domain", "groups", "--limit", "1")
	if len(al.Items) != 1 || al.Total != 2 {
		t.Fatalf("limit 1: %d items of %d", len(al.Items), al.Total)
	}
	out := h.ok("", "audit", "export", "--domain", "groups")
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(rows) != 3 || rows[0][0] != "seq" || rows[1][6] != "groups" {
		t.Fatalf("export = %q, %v", out, err)
	}
	h.fails(2, "--since must be an RFC 3339 time", "", "audit", "list", "--since", "yesterday")
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.env[admincli.EnvServer] = "https://127.0.0.1:1"
	h.env[admincli.EnvToken] = "mmt_x" // nothing below reaches the server
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"users"}, "usage: mamori users"},
		{[]string{"users", "frobnicate"}, `unknown subcommand "frobnicate"`},
		{[]string{"users", "list", "--no-such-flag"}, "flag provided but not defined"},
		{[]string{"users", "show"}, "missing arguments"},
		{[]string{"users", "show", "a", "b"}, "unexpected arguments"},
		{[]string{"users", "list", "--output", "yaml"}, "--output must be text or json"},
		{[]string{"users", "create", "dave"}, "--password-stdin"},
		{[]string{"users", "create", "dave", "--password-stdin"}, "no password on stdin"},
		{[]string{"users", "set-permission-sets", "dave"}, "--none"},
		{[]string{"users", "list", "--ca-fingerprint", "sha256:00", "--ca-file", "x"}, "not both"},
		{[]string{"users", "list", "--ca-fingerprint", "md5:00"}, "must start with"},
		{[]string{"users", "list", "--server", "http://127.0.0.1:1"}, "https"},
		{[]string{"groups", "move", "A"}, "missing arguments"},
		{[]string{"computers", "list", "--limit", "ten"}, "invalid value"},
		{[]string{"login", "--ttl", "-1h", "--user", "x"}, "--ttl must be positive"},
		{[]string{"enrollment-tokens", "create", "--ttl", "0s"}, "--ttl must be positive"},
		{[]string{"login", "--password", "secret"}, "flag provided but not defined: -password"},
		{[]string{"tokens", "create"}, "missing arguments"},
		{[]string{"frobnicate"}, "usage: mamori <command>"},
	} {
		r := h.run("", tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("mamori %s: exit %d, stderr %q; want 2 and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.msg)
		}
	}
	// No server anywhere, and no token for it.
	empty := newHarness(t)
	if r := empty.run("", "users", "list"); r.code != 2 || !strings.Contains(r.stderr, "no server") {
		t.Errorf("no server: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := empty.run("", "groups", "list", "--server", "127.0.0.1:1"); r.code != 2 || !strings.Contains(r.stderr, "not logged in") {
		t.Errorf("no token: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := empty.run("", "users", "list", "-h"); r.code != 0 || !strings.Contains(r.stderr, "usage: mamori users list") {
		t.Errorf("-h: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := h.run("", "users", "list", "--timeout", "0s"); r.code != 2 || r.stderr != "mamori: --timeout must be positive\n" {
		t.Errorf("--timeout 0s: exit %d, stderr %q; want exactly one line", r.code, r.stderr)
	}
	if !admincli.IsCommand("users") || admincli.IsCommand("token") || admincli.IsCommand("server") {
		t.Error("IsCommand must claim the API commands only (\"token create\" and \"server\" are cmd/mamori's)")
	}
}

func TestConfigOfAnotherServerIsNotUsed(t *testing.T) {
	t.Parallel()
	h := start(t)
	h.login()
	// --server naming another server: the stored token must not be sent there.
	var requests atomic.Int32
	var gotAuth atomic.Value
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		gotAuth.Store(r.Header.Get("Authorization"))
	}))
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	defer ts.Close()
	h.fails(2, "not logged in to "+ts.URL, "", "users", "list", "--server", ts.URL)
	if requests.Load() != 0 {
		t.Fatalf("a request was sent (Authorization %q)", gotAuth.Load())
	}
	// Nor is the stored CA pin: the other server is judged by the system
	// roots (which do not know its test CA), not by the pin.
	h.fails(1, "not trusted", "", "users", "list", "--server", ts.URL, "--token", "mmt_x")
}

func TestSettings_Retention(t *testing.T) {
	t.Parallel()
	h := start(t)
	h.login()
	var r struct {
		EventsDays     int `json:"events_days"`
		DetectionsDays int `json:"detections_days"`
		TaskRunsDays   int `json:"task_runs_days"`
	}
	h.jsonOut(&r, "", "settings", "retention")
	if r.EventsDays != 30 || r.DetectionsDays != 90 || r.TaskRunsDays != 90 {
		t.Fatalf("defaults %+v", r)
	}
	h.jsonOut(&r, "", "settings", "retention", "--events-days", "7")
	if r.EventsDays != 7 || r.DetectionsDays != 90 {
		t.Fatalf("after --events-days 7: %+v", r)
	}
	if out := h.ok("", "settings", "retention", "--task-runs-days", "30"); !strings.Contains(out, "events:") || !strings.Contains(out, "7 days") || !strings.Contains(out, "30 days") {
		t.Fatalf("table %q", out)
	}
	h.fails(2, "--detections-days must be 1 or more days", "", "settings", "retention", "--detections-days", "0")
	h.fails(1, "detections_days must be between 1 and 3650", "", "settings", "retention", "--detections-days", "4000")
}
