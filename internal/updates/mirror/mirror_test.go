package mirror

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mamori/mamori/internal/updates/client"
	"github.com/mamori/mamori/internal/updates/repo"
	"github.com/mamori/mamori/internal/updates/scheme"
	"github.com/mamori/mamori/internal/updates/source"
	"github.com/mamori/mamori/internal/updates/trust"
	"github.com/mamori/mamori/internal/updates/updatestest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type menv struct {
	t        *testing.T
	r        *updatestest.Repo
	upstream *httptest.Server // the repository's public/ over HTTP
	mu       sync.Mutex
	tamper   func(w http.ResponseWriter, r *http.Request) bool
}

func newMenv(t *testing.T, n int) *menv {
	t.Helper()
	e := &menv{t: t, r: updatestest.NewRepo(t, 20, 4, n)}
	fs := http.FileServer(http.Dir(e.r.Public()))
	e.upstream = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		tm := e.tamper
		e.mu.Unlock()
		if tm != nil && tm(w, r) {
			return
		}
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(e.upstream.Close)
	return e
}

func (e *menv) setTamper(f func(w http.ResponseWriter, r *http.Request) bool) {
	e.mu.Lock()
	e.tamper = f
	e.mu.Unlock()
}

func (e *menv) mirror(cfg Config) (*Mirror, *httptest.Server) {
	e.t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(e.t.TempDir(), "mirror")
	}
	if cfg.Upstream == "" {
		cfg.Upstream = e.upstream.URL
	}
	if cfg.TrustedRoot == nil && cfg.RootSHA256 == "" {
		cfg.TrustedRoot = e.r.Root
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	m, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler())
	e.t.Cleanup(func() { srv.Close(); m.Close() })
	return m, srv
}

func mustSync(t *testing.T, m *Mirror) SyncResult {
	t.Helper()
	res, err := m.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func agentUpdate(t *testing.T, state string, root []byte, sources ...string) (client.Result, error) {
	t.Helper()
	d, err := client.New(client.Config{StateDir: state, Sources: sources, TrustedRoot: root, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return d.Update(context.Background(), client.UpdateOptions{})
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// targetNames returns served name → target path for the repository's
// current targets.
func targetNames(t *testing.T, r *updatestest.Repo) map[string]string {
	st, err := trust.Refresh(context.Background(), source.NewDir(r.Public(), nil), trust.Options{CacheDir: t.TempDir(), InitialRoot: r.Root})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for p, tf := range st.Targets() {
		n, _ := trust.RemotePath(tf)
		out[n] = p
	}
	return out
}

func TestMirror_SyncsAndServesExactlyTheRepository(t *testing.T) {
	e := newMenv(t, 200)
	e.r.PublishNext(t, 10, 1)
	v := e.r.PublishNext(t, 10, 1)
	m, srv := e.mirror(Config{})
	res := mustSync(t, m)
	if !res.Changed || res.EngineVersion != v || res.Fetched == 0 {
		t.Fatalf("%+v", res)
	}
	for name := range targetNames(t, e.r) {
		want, _ := os.ReadFile(filepath.Join(e.r.Public(), filepath.FromSlash(name)))
		resp, got := get(t, srv.URL+"/"+name, nil)
		if resp.StatusCode != 200 || !bytes.Equal(got, want) {
			t.Fatalf("%s: %d, %d bytes", name, resp.StatusCode, len(got))
		}
	}
	// the same file several times over real connections (sendfile, reused
	// descriptors), whole and in ranges
	for name := range targetNames(t, e.r) {
		want, _ := os.ReadFile(filepath.Join(e.r.Public(), filepath.FromSlash(name)))
		for i := 0; i < 3; i++ {
			resp, got := get(t, srv.URL+"/"+name, nil)
			if resp.StatusCode != 200 || !bytes.Equal(got, want) {
				t.Fatalf("%s, request %d: %d, %d of %d bytes", name, i+2, resp.StatusCode, len(got), len(want))
			}
			resp, got = get(t, srv.URL+"/"+name, map[string]string{"Range": "bytes=3-"})
			if resp.StatusCode != 206 || !bytes.Equal(got, want[3:]) {
				t.Fatalf("%s, range request %d: %d", name, i+1, resp.StatusCode)
			}
		}
	}
	again := mustSync(t, m)
	if again.Changed || again.Fetched != 0 {
		t.Fatalf("second sync of an unchanged upstream: %+v", again)
	}
	r, err := agentUpdate(t, t.TempDir(), e.r.Root, srv.URL)
	if err != nil || r.To != v {
		t.Fatalf("%+v %v", r, err)
	}
}

func TestMirror_HeadersForCachesAndClients(t *testing.T) {
	e := newMenv(t, 300)
	v := e.r.PublishNext(t, 10, 1)
	m, srv := e.mirror(Config{TimestampMaxAge: 42 * time.Second})
	mustSync(t, m)
	var blob string
	for n, p := range targetNames(t, e.r) {
		if p == scheme.FullPath(v) {
			blob = n
		}
	}
	data, _ := os.ReadFile(filepath.Join(e.r.Public(), filepath.FromSlash(blob)))
	sha := strings.SplitN(filepath.Base(blob), ".", 2)[0]

	resp, body := get(t, srv.URL+"/"+blob, nil)
	if resp.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" || resp.Header.Get("ETag") != `"`+sha+`"` ||
		resp.Header.Get("Accept-Ranges") != "bytes" || !bytes.Equal(body, data) || resp.Header.Get("Content-Length") != strconv.Itoa(len(data)) {
		t.Fatalf("blob: %d %v", resp.StatusCode, resp.Header)
	}
	resp, _ = get(t, srv.URL+"/"+blob, map[string]string{"If-None-Match": `"` + sha + `"`})
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", resp.StatusCode)
	}
	resp, body = get(t, srv.URL+"/"+blob, map[string]string{"Range": "bytes=100-199"})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[100:200]) || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 100-199/%d", len(data)) {
		t.Fatalf("Range: %d %q", resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	resp, body = get(t, srv.URL+"/"+blob, map[string]string{"Range": "bytes=100-", "If-Range": `"` + sha + `"`})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[100:]) {
		t.Fatalf("If-Range match: %d", resp.StatusCode)
	}
	for _, ir := range []string{`"other"`, `W/"` + sha + `"`, "Wed, 21 Oct 2015 07:28:00 GMT"} {
		resp, body = get(t, srv.URL+"/"+blob, map[string]string{"Range": "bytes=100-", "If-Range": ir})
		if resp.StatusCode != 200 || !bytes.Equal(body, data) {
			t.Fatalf("If-Range %s: %d, want the whole file", ir, resp.StatusCode)
		}
	}
	resp, _ = get(t, srv.URL+"/"+blob, map[string]string{"Range": fmt.Sprintf("bytes=%d-", len(data)+10)})
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past the end: %d", resp.StatusCode)
	}
	// timestamp: short max-age, gzip when accepted, Vary
	ts, _ := os.ReadFile(filepath.Join(e.r.Public(), "metadata", "timestamp.json"))
	resp, body = get(t, srv.URL+"/metadata/timestamp.json", nil)
	if resp.Header.Get("Cache-Control") != "public, max-age=42" || !bytes.Equal(body, ts) || resp.Header.Get("Vary") != "Accept-Encoding" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("timestamp: %v", resp.Header)
	}
	tv := strconv.FormatInt(mustState(t, m).TargetsVersion, 10)
	targetsJSON, _ := os.ReadFile(filepath.Join(e.r.Public(), "metadata", tv+".targets.json"))
	resp, body = get(t, srv.URL+"/metadata/"+tv+".targets.json", map[string]string{"Accept-Encoding": "gzip"})
	if resp.Header.Get("Content-Encoding") != "gzip" || !strings.HasSuffix(resp.Header.Get("ETag"), `-gz"`) {
		t.Fatalf("targets with gzip: %v", resp.Header)
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if !bytes.Equal(plain, targetsJSON) || len(body) >= len(targetsJSON) {
		t.Fatalf("gzip body: %d bytes for %d", len(body), len(targetsJSON))
	}
	resp, _ = get(t, srv.URL+"/metadata/"+tv+".targets.json", map[string]string{"Accept-Encoding": "gzip;q=0"})
	if resp.Header.Get("Content-Encoding") != "" {
		t.Fatal("gzip sent although q=0")
	}
	// what is not part of the repository is never served
	for _, p := range []string{"/.mirror/state.json", "/metadata/../.mirror/state.json", "/.mirror/tuf/root.json", "/targets/engine/", "//metadata/timestamp.json",
		"/metadata/2.root.json", "/targets/" + strings.Repeat("a", 5000), "/metadata/timestamp.json/", "/metadata/%2e%2e/.mirror/state.json"} {
		resp, _ := get(t, srv.URL+p, nil)
		if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Cache-Control"), "public, max-age=") {
			t.Errorf("%s: %d %q", p, resp.StatusCode, resp.Header.Get("Cache-Control"))
		}
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/metadata/timestamp.json", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST: %v %v", resp, err)
	}
	if resp, err := http.Head(srv.URL + "/" + blob); err != nil || resp.StatusCode != 200 || resp.ContentLength != int64(len(data)) {
		t.Fatalf("HEAD: %v %v", resp, err)
	}
}

type stateInfo struct{ TargetsVersion int64 }

func mustState(t *testing.T, m *Mirror) stateInfo {
	for _, f := range m.state.States[len(m.state.States)-1].Files {
		if v, ok := strings.CutSuffix(strings.TrimPrefix(f.Name, "metadata/"), ".targets.json"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return stateInfo{TargetsVersion: n}
		}
	}
	t.Fatal("no targets in the state")
	return stateInfo{}
}

func TestMirror_NeverServesWhatItCouldNotVerify(t *testing.T) {
	e := newMenv(t, 200)
	v1 := e.r.PublishNext(t, 10, 1)
	m, srv := e.mirror(Config{})
	mustSync(t, m)
	v2 := e.r.PublishNext(t, 10, 1)
	var tampered string
	for n, p := range targetNames(t, e.r) {
		if p == scheme.DeltaPath(v1, v2) {
			tampered = n
		}
	}
	e.setTamper(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/"+tampered {
			b, _ := os.ReadFile(filepath.Join(e.r.Public(), filepath.FromSlash(tampered)))
			b[0] ^= 1
			w.Write(b)
			return true
		}
		return false
	})
	if _, err := m.Sync(context.Background()); trust.KindOf(err) != trust.KindHash {
		t.Fatalf("sync from a tampering upstream: %v", err)
	}
	if st := m.Status(); st.EngineVersion != v1 || st.LastSyncError == "" {
		t.Fatalf("status after a failed sync: %+v", st)
	}
	if resp, _ := get(t, srv.URL+"/"+tampered, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the unverified blob is served: %d", resp.StatusCode)
	}
	if _, err := os.Stat(filepath.Join(m.Dir(), filepath.FromSlash(tampered))); !os.IsNotExist(err) {
		t.Fatal("the unverified blob is in the served tree")
	}
	// agents still get the last verified state
	if r, err := agentUpdate(t, t.TempDir(), e.r.Root, srv.URL); err != nil || r.To != v1 {
		t.Fatalf("%+v %v", r, err)
	}
	// metadata signed by a stranger is refused as well
	e.setTamper(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/metadata/timestamp.json" {
			w.Write([]byte(`{"signed":{"_type":"timestamp","spec_version":"1.0","version":99,"expires":"2099-01-01T00:00:00Z","meta":{"snapshot.json":{"version":1}}},"signatures":[]}`))
			return true
		}
		return false
	})
	if _, err := m.Sync(context.Background()); trust.KindOf(err) != trust.KindSignature {
		t.Fatalf("unsigned timestamp: %v", err)
	}
	e.setTamper(nil)
	if res := mustSync(t, m); res.EngineVersion != v2 {
		t.Fatalf("%+v", res)
	}
}

func TestMirror_OverItsConnectionLimitAnswers503AtOnce(t *testing.T) {
	e := newMenv(t, 3000)
	v := e.r.PublishNext(t, 10, 1)
	reg := prometheus.NewRegistry()
	m, srv := e.mirror(Config{MaxConns: 2, ClientRate: 64 << 10, Registerer: reg})
	mustSync(t, m)
	var blob string
	for n, p := range targetNames(t, e.r) {
		if p == scheme.FullPath(v) {
			blob = n
		}
	}
	// two slow downloads hold both slots
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{}, 2)
	for i := 0; i < 2; i++ {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/"+blob, nil)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				started <- struct{}{}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	<-started
	<-started
	// metadata is still answered (small, from memory, its own limit)
	if resp, _ := get(t, srv.URL+"/metadata/timestamp.json", nil); resp.StatusCode != 200 {
		t.Fatalf("timestamp while the transfer slots are full: %d", resp.StatusCode)
	}
	start := time.Now()
	resp, _ := get(t, srv.URL+"/"+blob, nil)
	took := time.Since(start)
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusServiceUnavailable || ra < 1 || ra > 300 || !resp.Close || took > time.Second {
		t.Fatalf("over the limit: %d Retry-After %q close=%v after %v", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Close, took)
	}
	if got := counter(t, reg, "mamori_mirror_rejected_total"); got != 1 {
		t.Fatalf("rejected counter %v", got)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for m.lim.active.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if resp, _ := get(t, srv.URL+"/"+blob, nil); resp.StatusCode != 200 {
		t.Fatalf("after the slots freed: %d", resp.StatusCode)
	}
	// the metadata limit is eight times the transfer limit
	l := newLimits(Config{MaxConns: 2, MaxRetryAfter: time.Minute})
	for i := 0; i < 16; i++ {
		if !l.acquireMeta() {
			t.Fatalf("metadata slot %d refused", i+1)
		}
	}
	if l.acquireMeta() {
		t.Fatal("a 17th metadata answer was allowed with MaxConns 2")
	}
	l.releaseMeta()
	if !l.acquireMeta() {
		t.Fatal("a released metadata slot was not reusable")
	}
}

func TestLimits_RetryAfterSpreadsAHerdOverTheTimeNeeded(t *testing.T) {
	// capped at 1 MB/s, one slot taken: 100 refused requests for 100 kB
	// each need 10 s of sending; their Retry-After must grow from 1 s to
	// about 10 s, in order
	l := newLimits(Config{MaxConns: 1, Rate: 1_000_000, MaxRetryAfter: 300 * time.Second})
	now := time.Now()
	if ok, _ := l.acquire(now, 100_000); !ok {
		t.Fatal("first slot refused")
	}
	var ras []int
	for i := 0; i < 100; i++ {
		_, ra := l.acquire(now, 100_000)
		ras = append(ras, ra)
	}
	if ras[0] != 1 || ras[99] != 10 {
		t.Fatalf("Retry-After values %v", ras)
	}
	for i := 1; i < len(ras); i++ {
		if ras[i] < ras[i-1] {
			t.Fatalf("Retry-After went down: %v", ras)
		}
	}
	// never beyond the bound
	l2 := newLimits(Config{MaxConns: 1, Rate: 1000, MaxRetryAfter: 30 * time.Second})
	l2.acquire(now, 1)
	for i := 0; i < 5; i++ {
		if _, ra := l2.acquire(now, 1<<30); ra != 30 {
			t.Fatalf("Retry-After %d beyond the 30 s bound", ra)
		}
	}
}

func counter(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += metricValue(m)
		}
	}
	return sum
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// dialFrom returns an HTTP client whose connections come from a given
// loopback address (so the mirror sees different clients).
func dialFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableCompression: true}}
}

func TestMirror_BandwidthCapsHoldWithinFivePercent(t *testing.T) {
	e := newMenv(t, 12000)
	v := e.r.PublishNext(t, 10, 1)
	var blob string
	for n, p := range targetNames(t, e.r) {
		if p == scheme.FullPath(v) {
			blob = n
		}
	}
	data, _ := os.ReadFile(filepath.Join(e.r.Public(), filepath.FromSlash(blob)))
	size := int64(len(data))
	// throughput in the steady state: bytes received in the middle 60 % of
	// the transfer (start-up and tail effects excluded), all clients
	// together and each alone
	type ev struct {
		at time.Time
		n  int
	}
	steady := func(evs []ev) float64 {
		sort.Slice(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })
		d := evs[len(evs)-1].at.Sub(evs[0].at)
		lo, hi := evs[0].at.Add(d/5), evs[len(evs)-1].at.Add(-d/5)
		var sum int
		for _, e := range evs {
			if e.at.After(lo) && !e.at.After(hi) {
				sum += e.n
			}
		}
		return float64(sum) / hi.Sub(lo).Seconds()
	}
	measure := func(srv *httptest.Server, clients []*http.Client) (float64, []float64) {
		var wg sync.WaitGroup
		per := make([][]ev, len(clients))
		for i, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := c.Get(srv.URL + "/" + blob)
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				buf := make([]byte, 4096)
				for {
					n, err := resp.Body.Read(buf)
					if n > 0 {
						per[i] = append(per[i], ev{time.Now(), n})
					}
					if err != nil {
						return
					}
				}
			}()
		}
		wg.Wait()
		var all []ev
		each := make([]float64, len(clients))
		for i, p := range per {
			all = append(all, p...)
			each[i] = steady(p)
		}
		return steady(all), each
	}
	within := func(name string, got, want float64) {
		t.Helper()
		if got < 0.95*want || got > 1.05*want {
			t.Errorf("%s: %.0f B/s, cap %.0f B/s (%.1f%%)", name, got, want, 100*(got/want-1))
		} else {
			t.Logf("%s: %.0f B/s for a cap of %.0f B/s (%+.1f%%)", name, got, want, 100*(got/want-1))
		}
	}
	// global cap: four clients together get the cap (≈ 1.25 s of transfer)
	rate := size * 4 * 4 / 5
	m, srv := e.mirror(Config{Rate: rate})
	mustSync(t, m)
	got, _ := measure(srv, []*http.Client{dialFrom("127.0.0.1"), dialFrom("127.0.0.2"), dialFrom("127.0.0.3"), dialFrom("127.0.0.4")})
	within("global cap, 4 clients", got, float64(rate))
	// per-client cap: two addresses get it each; two connections from one
	// address share it
	crate := size * 4 / 5
	m2, srv2 := e.mirror(Config{ClientRate: crate})
	mustSync(t, m2)
	_, each := measure(srv2, []*http.Client{dialFrom("127.0.0.5"), dialFrom("127.0.0.6")})
	within("per-client cap, address 1 of 2", each[0], float64(crate))
	within("per-client cap, address 2 of 2", each[1], float64(crate))
	got, _ = measure(srv2, []*http.Client{dialFrom("127.0.0.7"), dialFrom("127.0.0.7")})
	within("per-client cap, 2 connections from one address", got, float64(crate))
}

func TestMirror_ChainOfTwoMirrors(t *testing.T) {
	e := newMenv(t, 300)
	v1 := e.r.PublishNext(t, 10, 1)
	head, headSrv := e.mirror(Config{})
	mustSync(t, head)
	// the branch mirror trusts the repository by its root's pin
	branch, branchSrv := e.mirror(Config{Upstream: headSrv.URL, RootSHA256: trust.SHA256Hex(e.r.Root)})
	mustSync(t, branch)
	state := t.TempDir()
	if r, err := agentUpdate(t, state, e.r.Root, branchSrv.URL); err != nil || r.To != v1 {
		t.Fatalf("%+v %v", r, err)
	}
	v2 := e.r.PublishNext(t, 10, 1)
	if res := mustSync(t, head); res.EngineVersion != v2 {
		t.Fatalf("head: %+v", res)
	}
	if res := mustSync(t, branch); res.EngineVersion != v2 || res.Fetched == 0 {
		t.Fatalf("branch: %+v", res)
	}
	r, err := agentUpdate(t, state, e.r.Root, branchSrv.URL)
	if err != nil || r.To != v2 || r.Method != "delta" {
		t.Fatalf("%+v %v", r, err)
	}
	// a root rotation travels down the chain
	if _, err := e.r.RotateRoot(rotateOpts(t)); err != nil {
		t.Fatal(err)
	}
	v3 := e.r.PublishNext(t, 10, 1)
	mustSync(t, head)
	mustSync(t, branch)
	if resp, _ := get(t, branchSrv.URL+"/metadata/2.root.json", nil); resp.StatusCode != 200 {
		t.Fatalf("2.root.json on the branch: %d", resp.StatusCode)
	}
	if r, err := agentUpdate(t, state, e.r.Root, branchSrv.URL); err != nil || r.To != v3 {
		t.Fatalf("%+v %v", r, err)
	}
	// a fresh mirror started from the rotated root still serves root 1
	fresh, freshSrv := e.mirror(Config{Upstream: branchSrv.URL, TrustedRoot: mustRead(t, filepath.Join(e.r.Public(), "metadata", "2.root.json"))})
	mustSync(t, fresh)
	if resp, body := get(t, freshSrv.URL+"/metadata/1.root.json", nil); resp.StatusCode != 200 || !bytes.Equal(body, e.r.Root) {
		t.Fatalf("1.root.json on a mirror that started at root 2: %d", resp.StatusCode)
	}
	if r, err := agentUpdate(t, t.TempDir(), e.r.Root, freshSrv.URL); err != nil || r.To != v3 {
		t.Fatalf("%+v %v", r, err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMirror_ExportedBundleUpdatesAnIsolatedAgentAndSeedsAMirror(t *testing.T) {
	e := newMenv(t, 300)
	e.r.PublishNext(t, 10, 1)
	m0, _ := e.mirror(Config{})
	mustSync(t, m0)
	oldBundle := filepath.Join(t.TempDir(), "old.tar")
	if _, err := Export(context.Background(), ExportConfig{Dir: m0.Dir(), To: oldBundle}); err != nil {
		t.Fatal(err)
	}
	v2 := e.r.PublishNext(t, 10, 1)
	m, _ := e.mirror(Config{})
	mustSync(t, m)
	for _, to := range []string{filepath.Join(t.TempDir(), "bundle.tar"), filepath.Join(t.TempDir(), "usb", "mamori")} {
		res, err := Export(context.Background(), ExportConfig{Dir: m.Dir(), To: to})
		if err != nil || res.EngineVersion != v2 || res.Expired {
			t.Fatalf("export %s: %+v %v", to, res, err)
		}
		// an isolated agent at the previous version updates from the bundle by delta
		state := t.TempDir()
		if r, err := agentUpdate(t, state, e.r.Root, oldBundle); err != nil || r.To != v2-1 {
			t.Fatalf("agent from the old bundle: %+v %v", r, err)
		}
		r, err := agentUpdate(t, state, e.r.Root, to)
		if err != nil || r.To != v2 || r.Method != "delta" {
			t.Fatalf("agent from %s: %+v %v", to, r, err)
		}
		// a mirror in the air-gapped site imports it
		imp, impSrv := e.mirror(Config{Upstream: to})
		if res := mustSync(t, imp); res.EngineVersion != v2 {
			t.Fatalf("import: %+v", res)
		}
		if r, err := agentUpdate(t, t.TempDir(), e.r.Root, impSrv.URL); err != nil || r.To != v2 {
			t.Fatalf("agent from the importing mirror: %+v %v", r, err)
		}
	}
	// full-only bundles carry no deltas
	to := filepath.Join(t.TempDir(), "full.tar")
	if _, err := Export(context.Background(), ExportConfig{Dir: m.Dir(), To: to, FullOnly: true}); err != nil {
		t.Fatal(err)
	}
	tb, err := source.Open(to, source.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	for n, p := range targetNames(t, e.r) {
		_, err := tb.ReadFile(context.Background(), n, 1<<30)
		if k, _, _ := scheme.ParsePath(p); (k == scheme.KindDelta) != source.IsNotFound(err) {
			t.Errorf("%s in the full-only bundle: %v", p, err)
		}
	}
	// exporting over an existing bundle is refused
	if _, err := Export(context.Background(), ExportConfig{Dir: m.Dir(), To: to}); err == nil {
		t.Fatal("export overwrote an existing bundle")
	}
}

func TestMirror_RestartServesTheStoredStateAndDetectsDamage(t *testing.T) {
	e := newMenv(t, 300)
	v := e.r.PublishNext(t, 10, 1)
	dir := filepath.Join(t.TempDir(), "m")
	m, err := New(Config{Dir: dir, Upstream: e.upstream.URL, TrustedRoot: e.r.Root, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	mustSync(t, m)
	if _, err := New(Config{Dir: dir, Logger: quiet}); err == nil {
		t.Fatal("a second mirror opened a directory in use")
	}
	m.Close()
	// restarted without an upstream (and with the upstream gone)
	e.upstream.Close()
	m2, err := New(Config{Dir: dir, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m2.Handler())
	defer srv.Close()
	if r, err := agentUpdate(t, t.TempDir(), e.r.Root, srv.URL); err != nil || r.To != v {
		t.Fatalf("%+v %v", r, err)
	}
	m2.Close()
	// a served file damaged on disk: the stored state is dropped, not served
	for n := range targetNames(t, e.r) {
		p := filepath.Join(dir, filepath.FromSlash(n))
		b, _ := os.ReadFile(p)
		b[len(b)-1] ^= 1
		os.WriteFile(p, b, 0o644)
		break
	}
	m3, err := New(Config{Dir: dir, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer m3.Close()
	srv3 := httptest.NewServer(m3.Handler())
	defer srv3.Close()
	if resp, _ := get(t, srv3.URL+"/metadata/timestamp.json", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a damaged mirror still serves: %d", resp.StatusCode)
	}
}

func TestMirror_KeepsSupersededFilesForTheRetainPeriod(t *testing.T) {
	e := newMenv(t, 200)
	e.r.PublishNext(t, 10, 1)
	clock := &updatestest.FixedClock{T: time.Now()}
	m, srv := e.mirror(Config{Retain: time.Hour, Now: clock.Now})
	mustSync(t, m)
	oldT := "/metadata/" + strconv.FormatInt(mustState(t, m).TargetsVersion, 10) + ".targets.json"
	e.r.PublishNext(t, 10, 1)
	mustSync(t, m)
	if resp, _ := get(t, srv.URL+oldT, nil); resp.StatusCode != 200 {
		t.Fatalf("superseded targets gone at once: %d", resp.StatusCode)
	}
	clock.Advance(2 * time.Hour)
	e.r.PublishNext(t, 10, 1)
	res := mustSync(t, m)
	if resp, _ := get(t, srv.URL+oldT, nil); resp.StatusCode != http.StatusNotFound || res.Removed == 0 {
		t.Fatalf("superseded targets still served after the retain period: %d, removed %d", resp.StatusCode, res.Removed)
	}
}

func TestMirror_MetricsCountBytesClientsAndSyncs(t *testing.T) {
	e := newMenv(t, 200)
	e.r.PublishNext(t, 10, 1)
	reg := prometheus.NewRegistry()
	m, srv := e.mirror(Config{Registerer: reg})
	mustSync(t, m)
	_, b1 := get(t, srv.URL+"/metadata/timestamp.json", nil)
	resp, _ := dialFrom("127.0.0.9").Get(srv.URL + "/metadata/1.root.json")
	b2, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := counter(t, reg, "mamori_mirror_bytes_served_total"); got != float64(len(b1)+len(b2)) {
		t.Fatalf("bytes served %v, bodies %d", got, len(b1)+len(b2))
	}
	if got := counter(t, reg, "mamori_mirror_clients"); got != 2 {
		t.Fatalf("clients %v", got)
	}
	if got := counter(t, reg, "mamori_mirror_syncs_total"); got != 1 {
		t.Fatalf("syncs %v", got)
	}
	if got := counter(t, reg, "mamori_mirror_engine_version"); got == 0 {
		t.Fatal("engine version gauge not set")
	}
	if _, err := New(Config{Dir: t.TempDir(), Registerer: reg, Logger: quiet}); err == nil {
		t.Fatal("registering the metrics twice on one registry succeeded")
	}
}

func TestMirror_RunSyncsPeriodicallyAndOnDemand(t *testing.T) {
	e := newMenv(t, 200)
	v1 := e.r.PublishNext(t, 10, 1)
	m, _ := e.mirror(Config{SyncInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	waitFor(t, func() bool { return m.Status().EngineVersion == v1 })
	v2 := e.r.PublishNext(t, 10, 1)
	m.SyncNow()
	waitFor(t, func() bool { return m.Status().EngineVersion == v2 })
	cancel()
	<-done
}

func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func rotateOpts(t *testing.T) repo.RotateOptions {
	return repo.RotateOptions{NewRootKey: filepath.Join(t.TempDir(), "root2.pem"), RotateOnline: true}
}
