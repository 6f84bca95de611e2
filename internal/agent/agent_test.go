package agent

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/agent/agentcfg"
	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/errcode"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// stepClock is moved by the test; every reading is announced on read so
// the test can wait for the watcher before moving it again.
type stepClock struct {
	mu   sync.Mutex
	wall time.Time
	mono time.Duration
	read chan struct{}
}

func (c *stepClock) Now() (time.Time, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.read <- struct{}{}
	return c.wall, c.mono
}

func TestWatchResume_ReportsOnlyForwardJumpsAboveThreshold(t *testing.T) {
	clk := &stepClock{wall: time.Unix(1_700_000_000, 0), read: make(chan struct{}, 1)}
	tick := make(chan time.Time)
	got := make(chan time.Duration, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { watchResume(ctx, clk, tick, 10*time.Second, func(g time.Duration) { got <- g }); close(done) }()
	<-clk.read // the watcher's first reading
	step := func(wall, mono time.Duration) {
		clk.mu.Lock()
		clk.wall = clk.wall.Add(wall)
		clk.mono += mono
		clk.mu.Unlock()
		tick <- time.Time{}
		<-clk.read
	}
	step(2*time.Second, 2*time.Second) // normal tick
	step(7*time.Second, 2*time.Second) // 5s gap: below threshold
	step(-time.Hour, 2*time.Second)    // clock set back: not a resume
	step(3*time.Hour, 2*time.Second)   // suspended ~3h
	step(2*time.Second, 2*time.Second) // normal again
	cancel()
	<-done
	close(got)
	var gaps []time.Duration
	for g := range got {
		gaps = append(gaps, g)
	}
	if len(gaps) != 1 || gaps[0] != 3*time.Hour-2*time.Second {
		t.Fatalf("reported %v, want exactly one gap of 2h59m58s", gaps)
	}
}

func TestBackoff_GrowsWithJitterAndCaps(t *testing.T) {
	for range 200 {
		if d := backoff(0); d < 0 || d >= backoffBase {
			t.Fatalf("first retry %s, want in [0,1s)", d)
		}
		if d := backoff(3); d < 4*time.Second || d > 8*time.Second {
			t.Fatalf("attempt 3: %s, want in [4s,8s]", d)
		}
		if d := backoff(50); d < backoffMax/2 || d > backoffMax {
			t.Fatalf("attempt 50: %s, want in [30s,60s]", d)
		}
	}
}

func TestValidServer(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:2222", "mamori.example.net:2222", "[::1]:2222"} {
		if err := validServer(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "host", ":2222", "host:", "https://host:2222", "host name:1"} {
		if err := validServer(bad); errcode.Of(err) != errcode.Invalid {
			t.Errorf("%q accepted (err %v)", bad, err)
		}
	}
}

func TestNew_ConfigurationErrors(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]Config{
		"no state":        {},
		"not enrolled":    {StateDir: dir},
		"bad fingerprint": {StateDir: dir, Servers: []string{"h:1"}, Token: "t", CAFingerprint: "md5:abc"},
		"bad instance":    {StateDir: dir, Instance: "no spaces allowed"},
		"bad server":      {StateDir: dir, Servers: []string{"nope"}},
		"bad proxy":       {StateDir: dir, Proxy: "socks5://p:1"},
		"https proxy": {StateDir: dir, Servers: []string{"h:1"}, Token: "t", CAFingerprint: "sha256:" + strings.Repeat("ab", 32),
			Proxy: "https://p:3128"},
		"interval too low": {StateDir: dir, Interval: time.Millisecond},
		"jitter too high":  {StateDir: dir, Jitter: 0.9},
	}
	for name, cfg := range cases {
		if _, err := New(cfg); errcode.Of(err) != errcode.Invalid {
			t.Errorf("%s: New = %v, want an invalid error", name, err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("New wrote to the state directory: %v", entries)
	}
}

func TestLoadIdentity_MissingAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadIdentity(dir); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("empty dir: %v", err)
	}
	os.WriteFile(filepath.Join(dir, IdentityFile), []byte("{not json"), 0o600)
	if _, err := LoadIdentity(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt identity: %v", err)
	}
	os.WriteFile(filepath.Join(dir, IdentityFile), []byte(`{"computer_id":"x","cert_pem":"junk","key_pem":"junk"}`), 0o600)
	if _, err := LoadIdentity(dir); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("identity with a bad certificate: %v", err)
	}
}

// fakeProxy answers every CONNECT request with status and records them.
func fakeProxy(t *testing.T, status int) (addr string, reqs chan *http.Request) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	reqs = make(chan *http.Request, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				reqs <- req
				c.Write([]byte(fmt.Sprintf("HTTP/1.1 %d %s\r\n\r\n", status, http.StatusText(status))))
				if status == 200 {
					c.Write([]byte("tunnel-ok"))
					time.Sleep(100 * time.Millisecond)
				}
			}()
		}
	}()
	return l.Addr().String(), reqs
}

func TestDialConnect_TunnelsWithProxyAuth(t *testing.T) {
	addr, reqs := fakeProxy(t, 200)
	conn, err := dialer("http://user:s3cret@"+addr)(t.Context(), "mamori.example.net:2222")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := <-reqs
	if req.Method != http.MethodConnect || req.Host != "mamori.example.net:2222" {
		t.Fatalf("proxy saw %s %s", req.Method, req.Host)
	}
	if got := req.Header.Get("Proxy-Authorization"); got != "Basic "+base64.StdEncoding.EncodeToString([]byte("user:s3cret")) {
		t.Fatalf("Proxy-Authorization %q", got)
	}
	buf := make([]byte, 9)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Read(buf); err != nil || string(buf) != "tunnel-ok" {
		t.Fatalf("tunnel read %q %v", buf, err)
	}
}

func TestDialConnect_RefusalIsAClearError(t *testing.T) {
	addr, _ := fakeProxy(t, http.StatusForbidden)
	_, err := dialer("http://"+addr)(t.Context(), "mamori.example.net:2222")
	if err == nil || !strings.Contains(err.Error(), "refused the tunnel") || !strings.Contains(err.Error(), "Forbidden") {
		t.Fatalf("got %v", err)
	}
}

func TestProxyFor_EnvironmentAndExplicit(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://envproxy:3128")
	t.Setenv("NO_PROXY", "internal.example")
	if u, _ := proxyFor("", "mamori.example.net:2222"); u == nil || u.Host != "envproxy:3128" {
		t.Fatalf("env proxy not used: %v", u)
	}
	if u, _ := proxyFor("", "srv.internal.example:2222"); u != nil {
		t.Fatalf("NO_PROXY ignored: %v", u)
	}
	if u, _ := proxyFor("http://explicit:8080", "srv.internal.example:2222"); u == nil || u.Host != "explicit:8080" {
		t.Fatalf("explicit proxy not used: %v", u)
	}
	if _, err := proxyFor("ftp://x", "a:1"); err == nil {
		t.Fatal("ftp proxy accepted")
	}
}

func TestHardwareFingerprint_InstanceAndMachineIDMatter(t *testing.T) {
	t.Setenv(MachineIDEnv, "machine-1")
	a, b := HardwareFingerprint(""), HardwareFingerprint("i2")
	t.Setenv(MachineIDEnv, "machine-2")
	c := HardwareFingerprint("")
	if a == b || a == c || len(a) != 64 {
		t.Fatalf("fingerprints %s %s %s", a, b, c)
	}
	t.Setenv(MachineIDEnv, "machine-1")
	if HardwareFingerprint("") != a {
		t.Fatal("fingerprint not stable")
	}
}

// A RetryLater ends a session whenever it comes (a server stopping on
// purpose sends it during the session); other messages do not. Whatever
// time the server gives, the agent waits within reason.
func TestSessionEnd_RetryLaterEndsTheSessionWithTheServersTime(t *testing.T) {
	for _, m := range []*agentproto.ServerMessage{
		{Msg: &agentproto.ServerMessage_WakeUp{WakeUp: &agentproto.WakeUp{Id: "w"}}},
		{Msg: &agentproto.ServerMessage_Ack{Ack: &agentproto.Ack{Seq: 1}}},
		{},
	} {
		if err := SessionEnd(m); err != nil {
			t.Errorf("SessionEnd(%v) = %v, want nil", m, err)
		}
	}
	for _, tc := range []struct {
		ms       uint32
		min, max time.Duration
	}{
		{3000, 3 * time.Second, 3600 * time.Millisecond},
		{0, time.Second, 1200 * time.Millisecond},                 // no time given: at least 1 s
		{^uint32(0), time.Hour, time.Hour + retryJitterMax},       // 49 days asked: 1 h at most
		{120000, 2 * time.Minute, 2*time.Minute + retryJitterMax}, // jitter capped
	} {
		err := SessionEnd(&agentproto.ServerMessage{Msg: &agentproto.ServerMessage_RetryLater{RetryLater: &agentproto.RetryLater{
			RetryAfterMs: tc.ms, Reason: "server restarting"}}})
		var rl *RetryLaterError
		if !errors.As(err, &rl) || rl.After != time.Duration(tc.ms)*time.Millisecond || rl.Reason != "server restarting" {
			t.Fatalf("SessionEnd(RetryLater %d ms) = %v", tc.ms, err)
		}
		for range 50 {
			d, retry := ReconnectDelay(err, 3)
			if !retry || d < tc.min || d > tc.max {
				t.Fatalf("ReconnectDelay after a %d ms RetryLater = %s, %v; want %s–%s", tc.ms, d, retry, tc.min, tc.max)
			}
		}
	}
}

func TestReconnectDelay_HonoursRetryLaterWithJitterAndStopsWhenRefused(t *testing.T) {
	rl := &RetryLaterError{After: 10 * time.Second, Reason: "busy"}
	seen := map[time.Duration]bool{}
	for range 200 {
		d, retry := ReconnectDelay(rl, 7)
		if !retry || d < 10*time.Second || d > 12*time.Second {
			t.Fatalf("retry later 10s at attempt 7: %s (retry %v), want within [10s,12s]", d, retry)
		}
		seen[d] = true
	}
	if len(seen) < 50 {
		t.Errorf("only %d distinct delays in 200 draws: no jitter", len(seen))
	}
	if d, _ := ReconnectDelay(&RetryLaterError{After: 5 * time.Minute}, 0); d < 5*time.Minute || d > 5*time.Minute+retryJitterMax {
		t.Errorf("a 5-minute hint gave %s, want at most %s of jitter", d, retryJitterMax)
	}
	if d, _ := ReconnectDelay(&RetryLaterError{}, 0); d < time.Second || d > 1200*time.Millisecond {
		t.Errorf("a zero hint gave %s, want the 1s floor plus jitter", d)
	}
	for _, code := range []errcode.Code{errcode.Forbidden, errcode.Unauthorized} {
		if _, retry := ReconnectDelay(errcode.New(code, "no"), 0); retry {
			t.Errorf("%s: retried", code)
		}
	}
	if d, retry := ReconnectDelay(errcode.New(errcode.Unavailable, "down"), 3); !retry || d < 4*time.Second || d > 8*time.Second {
		t.Errorf("unavailable at attempt 3: %s (retry %v), want the backoff [4s,8s]", d, retry)
	}
	if d, retry := ReconnectDelay(errcode.New(errcode.Unavailable, "down"), 8); !retry || d < 30*time.Second || d > 60*time.Second {
		t.Errorf("unavailable at attempt 8: %s (retry %v), want the backoff [30s,60s]", d, retry)
	}
	// Refused connections (nothing listens: a restart) back off to 15 s at most.
	refused := &RefusedError{Err: errcode.New(errcode.Unavailable, "connection refused")}
	for range 50 {
		if d, retry := ReconnectDelay(refused, 8); !retry || d < refusedBackoffMax/2 || d > refusedBackoffMax {
			t.Fatalf("refused at attempt 8: %s (retry %v), want within [%s,%s]", d, retry, refusedBackoffMax/2, refusedBackoffMax)
		}
	}
	if d, _ := ReconnectDelay(refused, 2); d < 2*time.Second || d > 4*time.Second {
		t.Errorf("refused at attempt 2: %s, want the usual [2s,4s]", d)
	}
}

// The outbox's bound is the configuration's when a policy or the local
// file sets it, else the command line's (0: the outbox's default).
func TestOutboxLimit_ConfigurationOverCommandLine(t *testing.T) {
	for _, tc := range []struct {
		source      string
		commandLine int
		want        int
	}{
		{agentcfg.SourceDefault, 0, 0},
		{agentcfg.SourceDefault, 2000, 2000},
		{agentcfg.SourcePolicy, 2000, 5000},
		{agentcfg.SourceLocal, 0, 5000},
		{agentcfg.SourceForced, 2000, 5000},
	} {
		s := &agentcfg.Settings{OutboxMaxEvents: 5000, Sources: map[string]string{"agent.outbox_max_events": tc.source}}
		if got := outboxLimit(s, tc.commandLine); got != tc.want {
			t.Errorf("source %s, command line %d: %d, want %d", tc.source, tc.commandLine, got, tc.want)
		}
	}
}

// echoServer accepts connections and counts them.
func echoServer(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String(), countAccepts(l)
}

// countAccepts accepts and closes connections on l until it is closed,
// counting them.
func countAccepts(l net.Listener) *atomic.Int64 {
	var n atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return &n
}

// The configuration's proxy is tried first; when it fails the agent goes
// its own way at once, and keeps to it for a while without trying the
// failed proxy again; a new proxy is tried at once. Failures are reported
// with the password hidden.
func TestConfiguredProxy_TriedFirstAndFallsBackWhenItFails(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "")
	server, direct := echoServer(t)
	d := NewDirect(DirectOptions{Pin: "sha256:00"})
	defer d.Close()
	var failures []string
	onFail := func(err error) { failures = append(failures, err.Error()) }

	good, goodReqs := fakeProxy(t, 200)
	if !d.SetConfiguredProxy("http://"+good, onFail) {
		t.Fatal("setting a proxy reported no change")
	}
	c, err := d.dial(t.Context(), server)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if req := <-goodReqs; req.Host != server || direct.Load() != 0 {
		t.Fatalf("went to %s through the proxy, %d direct connections; want the proxy only", req.Host, direct.Load())
	}

	bad, badReqs := fakeProxy(t, http.StatusForbidden)
	d.SetConfiguredProxy("http://user:s3cret@"+bad, onFail)
	for i := range 2 {
		c, err := d.dial(t.Context(), server)
		if err != nil {
			t.Fatalf("dial %d with a refusing proxy: %v", i, err)
		}
		c.Close()
	}
	waitFor(t, func() bool { return direct.Load() == 2 })
	if len(badReqs) != 1 || len(failures) != 1 || strings.Contains(failures[0], "s3cret") {
		t.Fatalf("refusing proxy asked %d times, failures %q; want once, reported without the password", len(badReqs), failures)
	}
	if d.SetConfiguredProxy("http://user:s3cret@"+bad, onFail) {
		t.Fatal("the same proxy again reported a change")
	}
	if !d.SetConfiguredProxy("", onFail) {
		t.Fatal("clearing the proxy reported no change")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
	}
}

// A web server's answer (the API port given for the agent port) is a
// configuration error; a gateway's 5xx or 429 stays retryable.
func TestWebServerAnswer_OnlyForAnswersNotWorthRetrying(t *testing.T) {
	for _, tc := range []struct {
		code    codes.Code
		msg     string
		invalid bool
	}{
		{codes.Unimplemented, "unexpected HTTP status code received from server: 404 (Not Found); transport: received unexpected content-type \"application/json\"\ndata: \"{...}\"", true},
		{codes.Unavailable, "unexpected HTTP status code received from server: 503 (Service Unavailable)", false},
		{codes.Unavailable, "unexpected HTTP status code received from server: 502 (Bad Gateway)", false},
		{codes.Unimplemented, "unknown service mamori.agent.v1.Agent", false},
	} {
		err := webServerAnswer("mamori:8443", status.New(tc.code, tc.msg))
		if got := err != nil; got != tc.invalid {
			t.Errorf("%v %q: %v", tc.code, tc.msg, err)
			continue
		}
		if err != nil && (errcode.Of(err) != errcode.Invalid || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "is it the API port")) {
			t.Errorf("%v: %q", tc.code, err)
		}
	}
}
