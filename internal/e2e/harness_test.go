package e2e

import (
	"bufio"
	"bytes"

	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/store/storetest"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mamori-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, b := range []string{"mamori", "mamori-agent"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b), "github.com/mamori/mamori/cmd/"+b)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", b, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func bin(name string) string { return filepath.Join(binDir, name) }

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a child process with captured output.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

type lockedWriter struct{ p *proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin(args[0]), args[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = lockedWriter{p}
	p.cmd.Stderr = lockedWriter{p}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", name, p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(sig syscall.Signal) {
	if !p.exited() {
		p.cmd.Process.Signal(sig)
	}
}

func (p *proc) kill() {
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Fatalf("%s did not stop within 15s after SIGTERM", p.name)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s still running after %s", p.name, timeout)
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if p.err != nil {
		p.t.Fatalf("%s: %v", p.name, p.err)
	}
	return 0
}

// lastLine returns the last non-empty output line.
func (p *proc) lastLine() string {
	lines := strings.Split(strings.TrimSpace(p.output()), "\n")
	return lines[len(lines)-1]
}

// waitFor polls cond until it holds or timeout passes; cond returns a
// description of the state for the failure message.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for {
		ok, state := cond()
		if ok {
			return time.Since(start)
		}
		last = state
		if time.Since(start) > timeout {
			t.Fatalf("%s: not reached within %s (last: %s)", what, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// server is a running `mamori server` process.
type server struct {
	*proc
	t         *testing.T
	data      string
	agentAddr string
	apiAddr   string
	database  string // --database: a PostgreSQL URL, or "" for SQLite
	extra     []string
	api       *apiClient
	// adminPW is admin's password after the harness's first login changed
	// the generated one; firstLogin is what that login was allowed.
	adminPW    string
	firstLogin firstLogin
}

// firstLogin records the harness's first login as admin with the generated
// password: its restriction, and what GET /api/v1/computers answered then.
type firstLogin struct {
	restriction   string
	computersCode int
}

func startServer(t *testing.T, extra ...string) *server {
	t.Helper()
	return startServerOn(t, "", extra...)
}

// startServerOn starts a server whose store is database (a PostgreSQL URL,
// or "" for the SQLite default).
func startServerOn(t *testing.T, database string, extra ...string) *server {
	t.Helper()
	s := &server{t: t, data: filepath.Join(t.TempDir(), "data"), agentAddr: freeAddr(t), apiAddr: freeAddr(t), database: database, extra: extra}
	s.launch()
	return s
}

// peer starts a second server sharing s's data directory and PostgreSQL
// store (servers sharing a store share the CA and keys), on addresses of
// its own unless extra says otherwise.
func (s *server) peer(t *testing.T, extra ...string) *server {
	t.Helper()
	p := &server{t: t, data: s.data, agentAddr: freeAddr(t), apiAddr: freeAddr(t), database: s.database, extra: extra, adminPW: s.adminPW}
	p.launch()
	return p
}

// eachStore runs test as parallel subtests, once on SQLite and once on a
// fresh PostgreSQL schema (see storetest.PostgresURL for where it comes
// from); test's database goes to startServerOn.
func eachStore(t *testing.T, test func(t *testing.T, database string)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		test(t, "")
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		test(t, storetest.PostgresSchema(t, storetest.PostgresURL(t)))
	})
}

// dbArgs are the flags naming s's store for the CLI.
func (s *server) dbArgs() []string {
	if s.database == "" {
		return nil
	}
	return []string{"--database", s.database}
}

func (s *server) launch() {
	s.t.Helper()
	args := append([]string{"mamori", "server", "--data", s.data, "--agent-listen", s.agentAddr, "--api-listen", s.apiAddr,
		"--log-level", "info"}, append(s.dbArgs(), s.extra...)...)
	s.proc = start(s.t, "server", nil, args...)
	waitFor(s.t, 20*time.Second, "server ready", func() (bool, string) {
		if s.exited() {
			s.t.Fatalf("server exited: %s", s.output())
		}
		if _, err := os.Stat(filepath.Join(s.data, "ca.crt")); err != nil {
			return false, "no CA yet"
		}
		c := s.client()
		resp, err := c.http.Get(c.base + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	if s.api == nil {
		s.api = s.client()
		if s.adminPW == "" {
			s.adminPW, s.firstLogin = s.api.firstAdminLogin(s.t, s.initialPassword())
		} else {
			s.api.login(s.t, "admin", s.adminPW)
		}
	}
}

// restart stops the server (SIGTERM) and starts it again on the same
// addresses and data.
func (s *server) restart() {
	s.t.Helper()
	s.stop()
	s.launch()
}

// password is admin's password now.
func (s *server) password() string {
	if s.adminPW != "" {
		return s.adminPW
	}
	return s.initialPassword()
}

// initialPassword is the password the first start generated.
func (s *server) initialPassword() string {
	b, err := os.ReadFile(filepath.Join(s.data, "initial-admin-password"))
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func (s *server) fingerprint() string {
	out, err := exec.Command(bin("mamori"), "ca", "fingerprint", "--data", s.data).Output()
	if err != nil {
		s.t.Fatalf("mamori ca fingerprint: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// token creates an enrollment token with the CLI while the server runs.
func (s *server) token(args ...string) string {
	s.t.Helper()
	args = append(append([]string{"token", "create", "--data", s.data, "--output", "json"}, s.dbArgs()...), args...)
	out, err := exec.Command(bin("mamori"), args...).Output()
	if err != nil {
		s.t.Fatalf("mamori token create: %v", err)
	}
	var r struct{ Token string }
	if err := json.Unmarshal(out, &r); err != nil || r.Token == "" {
		s.t.Fatalf("token create output %q: %v", out, err)
	}
	return r.Token
}

func (s *server) client() *apiClient { return s.clientFrom("") }

// clientFrom is client connecting from the loopback address source (e.g.
// 127.0.0.2: another machine as far as the server can tell); "" lets the
// kernel choose.
func (s *server) clientFrom(source string) *apiClient {
	pem, err := os.ReadFile(filepath.Join(s.data, "ca.crt"))
	if err != nil {
		s.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}
	if source != "" {
		tr.DialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}).DialContext
	}
	return &apiClient{base: "https://" + s.apiAddr, http: &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: tr}}
}

// agent starts `mamori-agent run` with a state directory.
func (s *server) agent(t *testing.T, state string, env []string, args ...string) *proc {
	t.Helper()
	a := append([]string{"mamori-agent", "run", "--state", state, "--log-level", "debug"}, args...)
	return start(t, "agent "+filepath.Base(state), env, a...)
}

// enrollArgs are the first-run flags.
func (s *server) enrollArgs(token string) []string {
	return []string{"--server", s.agentAddr, "--token", token, "--ca-fingerprint", s.fingerprint()}
}

// apiClient talks to the REST API with a session cookie.
type apiClient struct {
	base string
	http *http.Client
}

func (c *apiClient) do(t *testing.T, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decoding %q: %v", method, path, b, err)
		}
	}
	if out == nil && resp.StatusCode >= 400 {
		t.Logf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode
}

func (c *apiClient) login(t *testing.T, user, pw string) {
	t.Helper()
	var sess struct {
		Restriction string `json:"restriction"`
	}
	if code := c.do(t, "POST", "/api/v1/session", map[string]string{"username": user, "password": pw}, &sess); code != 200 || sess.Restriction != "" {
		t.Fatalf("login: %d, restriction %q", code, sess.Restriction)
	}
}

// firstAdminLogin logs in as admin with the generated password, which
// must be changed first: it changes it, logs in again and returns the new
// password with what the first login allowed.
func (c *apiClient) firstAdminLogin(t *testing.T, generated string) (string, firstLogin) {
	t.Helper()
	var first firstLogin
	var sess struct {
		Restriction string `json:"restriction"`
	}
	if code := c.do(t, "POST", "/api/v1/session", map[string]string{"username": "admin", "password": generated}, &sess); code != 200 {
		t.Fatalf("first login: %d", code)
	}
	first.restriction = sess.Restriction
	first.computersCode = c.do(t, "GET", "/api/v1/computers", nil, nil)
	pw := generated
	if sess.Restriction == "password_change" {
		pw = "changed at first login " + generated[:8]
		body := map[string]string{"current_password": generated, "new_password": pw}
		if code := c.do(t, "POST", "/api/v1/session/password", body, nil); code != 204 {
			t.Fatalf("changing the generated password: %d", code)
		}
	}
	c.login(t, "admin", pw)
	return pw, first
}

type computer struct {
	ID                   string `json:"id"`
	Name                 string `json:"name"`
	Status               string `json:"status"`
	LastSeen             string `json:"last_seen"`
	ConnectedSince       string `json:"connected_since"`
	AgentVersion         string `json:"agent_version"`
	CloneSuspected       bool   `json:"clone_suspected"`
	CloneReason          string `json:"clone_reason"`
	ConnectionWarning    string `json:"connection_warning"`
	OS                   struct{ Name, Version string }
	Group                struct{ ID, Path string }
	Revoked              bool                       `json:"revoked"`
	UnresolvedDetections int                        `json:"unresolved_detections"`
	Inventory            map[string]json.RawMessage `json:"inventory"`
	RecentEvents         []event                    `json:"recent_events"`
}

type event struct {
	ID   string          `json:"id"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

func (c *apiClient) computers(t *testing.T, query string) ([]computer, int) {
	t.Helper()
	var r struct {
		Items []computer
		Total int
	}
	if code := c.do(t, "GET", "/api/v1/computers?"+query, nil, &r); code != 200 {
		t.Fatalf("list computers: %d", code)
	}
	return r.Items, r.Total
}

func (c *apiClient) computerByName(t *testing.T, name string) (computer, bool) {
	t.Helper()
	items, _ := c.computers(t, "limit=1000")
	for _, it := range items {
		if it.Name == name {
			return it, true
		}
	}
	return computer{}, false
}

func (c *apiClient) computer(t *testing.T, id string) computer {
	t.Helper()
	var r computer
	if code := c.do(t, "GET", "/api/v1/computers/"+url.PathEscape(id), nil, &r); code != 200 {
		t.Fatalf("get computer %s: %d", id, code)
	}
	return r
}

func (c *apiClient) events(t *testing.T, id string) []event {
	t.Helper()
	var r struct{ Items []event }
	if code := c.do(t, "GET", "/api/v1/computers/"+id+"/events?limit=1000", nil, &r); code != 200 {
		t.Fatalf("events %s: %d", id, code)
	}
	return r.Items
}

// waitStatus waits until the computer named name has status and returns it.
func (c *apiClient) waitStatus(t *testing.T, name, status string, timeout time.Duration) (computer, time.Duration) {
	t.Helper()
	var got computer
	d := waitFor(t, timeout, name+" "+status, func() (bool, string) {
		var ok bool
		got, ok = c.computerByName(t, name)
		if !ok {
			return false, "not enrolled"
		}
		return got.Status == status, got.Status
	})
	return got, d
}

// metric reads one Prometheus sample value (name with labels as printed).
func (c *apiClient) metric(t *testing.T, sample string) float64 {
	t.Helper()
	resp, err := c.http.Get(c.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %q", sample, line)
			}
			return v
		}
	}
	return 0
}

func countTypes(evs []event) map[string]int {
	m := map[string]int{}
	for _, e := range evs {
		m[e.Type]++
	}
	return m
}

func assertUniqueIDs(t *testing.T, evs []event) {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[e.ID] {
			t.Fatalf("event %s (%s) stored twice", e.ID, e.Type)
		}
		seen[e.ID] = true
	}
}

func identityExists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "identity.json"))
	return err == nil
}
