package source

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

// fakeSleep records waits instead of sleeping.
type fakeSleep struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (f *fakeSleep) sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	f.waits = append(f.waits, d)
	f.mu.Unlock()
	return ctx.Err()
}

func newHTTP(t *testing.T, base string, o Options) (*HTTP, *fakeSleep) {
	t.Helper()
	fs := &fakeSleep{}
	if o.Sleep == nil {
		o.Sleep = fs.sleep
	}
	h, err := NewHTTP(base, o)
	if err != nil {
		t.Fatal(err)
	}
	return h, fs
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestReadFile_DecodesGzipAndCountsWireBytes(t *testing.T) {
	body := bytes.Repeat([]byte(`{"signed":"aaaaaaaaaaaaaaaa"}`), 200)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(body)
	zw.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			t.Errorf("no gzip asked for")
		}
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(gz.Bytes())
	}))
	defer srv.Close()
	h, _ := newHTTP(t, srv.URL, Options{})
	got, err := h.ReadFile(context.Background(), "metadata/timestamp.json", int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Fatal("decoded body differs")
	}
	if n := h.Stats().Bytes.Load(); n != int64(gz.Len()) {
		t.Fatalf("counted %d bytes, %d were on the wire", n, gz.Len())
	}
	if n := h.Stats().Requests.Load(); n != 1 {
		t.Fatalf("counted %d requests", n)
	}
}

func TestReadFile_RefusesMoreThanMaxEvenWhenGzipInflatesIt(t *testing.T) {
	big := bytes.Repeat([]byte("a"), 10<<20)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(big)
	zw.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/gz":
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(gz.Bytes())
		case "/plain":
			w.Write(big[:5000])
		case "/chunked":
			w.(http.Flusher).Flush()
			w.Write(big[:5000])
		case "/weird":
			w.Header().Set("Content-Encoding", "br")
			w.Write([]byte("x"))
		}
	}))
	defer srv.Close()
	h, _ := newHTTP(t, srv.URL, Options{})
	for _, p := range []string{"gz", "plain", "chunked"} {
		_, err := h.ReadFile(context.Background(), p, 4096)
		if !errcode.Is(err, errcode.TooLarge) {
			t.Errorf("%s: err = %v, want too_large", p, err)
		}
	}
	if _, err := h.ReadFile(context.Background(), "weird", 4096); err == nil {
		t.Error("an unknown content encoding was accepted")
	}
}

func TestReadFile_NotFoundIsNotRetried(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		http.NotFound(w, r)
	}))
	defer srv.Close()
	h, _ := newHTTP(t, srv.URL, Options{})
	_, err := h.ReadFile(context.Background(), "metadata/2.root.json", 100)
	if !IsNotFound(err) || n.Load() != 1 {
		t.Fatalf("err=%v requests=%d, want not_found after 1 request", err, n.Load())
	}
}

func TestReadFile_HonoursRetryAfterWithJitter(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) {
		case 1:
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusServiceUnavailable)
		case 2:
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			w.Write([]byte("ok"))
		}
	}))
	defer srv.Close()
	h, fs := newHTTP(t, srv.URL, Options{})
	got, err := h.ReadFile(context.Background(), "x", 10)
	if err != nil || string(got) != "ok" {
		t.Fatalf("got %q %v", got, err)
	}
	if len(fs.waits) != 2 {
		t.Fatalf("waits = %v", fs.waits)
	}
	for i, base := range []time.Duration{7 * time.Second, 3 * time.Second} {
		w := fs.waits[i]
		if w < base || w >= base+700*time.Millisecond {
			t.Errorf("wait %d = %v, want in [%v, %v)", i, w, base, base+700*time.Millisecond)
		}
	}
}

func TestReadFile_RetryAfterBeyondTheLimitFailsForFailover(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	h, fs := newHTTP(t, srv.URL, Options{MaxRetryWait: time.Minute})
	_, err := h.ReadFile(context.Background(), "x", 10)
	if !errcode.Is(err, errcode.Unavailable) || len(fs.waits) != 0 {
		t.Fatalf("err=%v waits=%v, want unavailable without waiting", err, fs.waits)
	}
}

func TestReadFile_GivesUpAfterTheBusyBudget(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusTooManyRequests) // no Retry-After: exponential backoff
	}))
	defer srv.Close()
	h, fs := newHTTP(t, srv.URL, Options{BusyRetries: 5})
	_, err := h.ReadFile(context.Background(), "x", 10)
	if !errcode.Is(err, errcode.TooManyRequests) || n.Load() != 6 {
		t.Fatalf("err=%v requests=%d", err, n.Load())
	}
	for i := 1; i < len(fs.waits); i++ {
		if fs.waits[i] < time.Second<<(i)-time.Millisecond && fs.waits[i] < time.Minute {
			t.Errorf("backoff %d = %v did not grow: %v", i, fs.waits[i], fs.waits)
		}
	}
}

func TestReadFile_RetriesTransientFailures(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) < 3 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.Write([]byte("fine"))
	}))
	defer srv.Close()
	h, _ := newHTTP(t, srv.URL, Options{})
	if got, err := h.ReadFile(context.Background(), "x", 10); err != nil || string(got) != "fine" {
		t.Fatalf("got %q %v", got, err)
	}
	h2, _ := newHTTP(t, srv.URL, Options{Retries: 1})
	n.Store(0)
	if _, err := h2.ReadFile(context.Background(), "x", 10); !errcode.Is(err, errcode.Unavailable) {
		t.Fatalf("with 1 retry: %v", err)
	}
}

func TestHTTP_RefusesUnsafeNamesAndBadBaseURLs(t *testing.T) {
	h, _ := newHTTP(t, "http://127.0.0.1:1/repo", Options{})
	for _, n := range []string{"../etc/passwd", "/abs", "a//b", "a/./b", "a?b", "a#b", "a%2fb", "a b", ""} {
		if _, err := h.ReadFile(context.Background(), n, 10); !errcode.Is(err, errcode.Invalid) {
			t.Errorf("name %q: %v", n, err)
		}
	}
	for _, b := range []string{"ftp://x/", "http://", "http://x/?q=1", "http://x/#f", "x"} {
		if _, err := NewHTTP(b, Options{}); err == nil {
			t.Errorf("base %q accepted", b)
		}
	}
}

// cutServer serves a file but cuts the first response after cut bytes; it
// records the Range and If-Range headers of each request.
type cutServer struct {
	data    []byte
	etag    string
	cut     int
	mu      sync.Mutex
	ranges  []string
	ifRange []string
	ignore  bool // answer 200 to ranges
	badCR   bool // answer 206 with a wrong Content-Range
}

func (c *cutServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.ranges = append(c.ranges, r.Header.Get("Range"))
	c.ifRange = append(c.ifRange, r.Header.Get("If-Range"))
	first := len(c.ranges) == 1
	c.mu.Unlock()
	w.Header().Set("ETag", c.etag)
	if first {
		w.Header().Set("Content-Length", strconv.Itoa(len(c.data)))
		w.WriteHeader(200)
		w.Write(c.data[:c.cut])
		w.(http.Flusher).Flush()
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
		return
	}
	if c.badCR && r.Header.Get("Range") != "" {
		c.badCR = false
		w.Header().Set("Content-Range", "bytes 0-9/"+strconv.Itoa(len(c.data)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(c.data[:10])
		return
	}
	if c.ignore {
		w.Write(c.data)
		return
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(c.data))
}

func TestDownload_ResumesAnInterruptedTransferWithRangeAndIfRange(t *testing.T) {
	data := randBytes(300 << 10)
	cs := &cutServer{data: data, etag: `"abc"`, cut: 100 << 10}
	srv := httptest.NewServer(cs)
	defer srv.Close()
	h, _ := newHTTP(t, srv.URL, Options{})
	part := filepath.Join(t.TempDir(), "x.part")
	if err := h.Download(context.Background(), "targets/x", part, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(part)
	if !bytes.Equal(got, data) {
		t.Fatal("resumed file differs")
	}
	if len(cs.ranges) != 2 || cs.ranges[1] != "bytes="+strconv.Itoa(cs.cut)+"-" || cs.ifRange[1] != `"abc"` {
		t.Fatalf("requests: ranges %q if-range %q", cs.ranges, cs.ifRange)
	}
	// what was received once is not received again
	if n := h.Stats().Bytes.Load(); n > int64(len(data))+1024 {
		t.Fatalf("received %d bytes for a %d-byte file", n, len(data))
	}
}

func TestDownload_ResumesAcrossProcessRestartsFromThePartFile(t *testing.T) {
	data := randBytes(64 << 10)
	part := filepath.Join(t.TempDir(), "x.part")
	os.WriteFile(part, data[:20000], 0o600)
	writePartMeta(part, partMeta{URL: "http://elsewhere/targets/x", ETag: `"zzz"`})
	var gotRange, gotIfRange string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotRange, gotIfRange = r.Header.Get("Range"), r.Header.Get("If-Range")
		w.Header().Set("ETag", `"e1"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	h, _ := newHTTP(t, srv.URL, Options{})
	if err := h.Download(context.Background(), "targets/x", part, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if gotRange != "bytes=20000-" || gotIfRange != "" {
		t.Fatalf("Range %q If-Range %q (an ETag from another URL must not be sent)", gotRange, gotIfRange)
	}
	if got, _ := os.ReadFile(part); !bytes.Equal(got, data) {
		t.Fatal("file differs")
	}
}

func TestDownload_StartsOverWhenTheServerIgnoresTheRange(t *testing.T) {
	data := randBytes(200 << 10)
	cs := &cutServer{data: data, etag: `"abc"`, cut: 50 << 10, ignore: true}
	srv := httptest.NewServer(cs)
	defer srv.Close()
	h, _ := newHTTP(t, srv.URL, Options{})
	part := filepath.Join(t.TempDir(), "x.part")
	if err := h.Download(context.Background(), "x", part, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(part); !bytes.Equal(got, data) {
		t.Fatal("file differs after a 200 to a range request")
	}
}

func TestDownload_RefusesAWrongContentRangeAndRecovers(t *testing.T) {
	data := randBytes(200 << 10)
	cs := &cutServer{data: data, etag: `"abc"`, cut: 50 << 10, badCR: true}
	srv := httptest.NewServer(cs)
	defer srv.Close()
	h, _ := newHTTP(t, srv.URL, Options{})
	part := filepath.Join(t.TempDir(), "x.part")
	if err := h.Download(context.Background(), "x", part, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(part); !bytes.Equal(got, data) {
		t.Fatal("file differs after a bad Content-Range")
	}
}

func TestDownload_RefusesMoreBytesThanTheMetadataSays(t *testing.T) {
	data := randBytes(10000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			w.(http.Flusher).Flush()
		}
		w.Write(data)
	}))
	defer srv.Close()
	h, _ := newHTTP(t, srv.URL, Options{})
	for _, p := range []string{"x", "chunked"} {
		part := filepath.Join(t.TempDir(), "p")
		if err := h.Download(context.Background(), p, part, 5000); !errcode.Is(err, errcode.TooLarge) {
			t.Errorf("%s: %v, want too_large", p, err)
		}
	}
}

func TestDownload_CutsAStalledTransferAndResumes(t *testing.T) {
	data := randBytes(100 << 10)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"s"`)
		if n.Add(1) == 1 {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.Write(data[:30000])
			w.(http.Flusher).Flush()
			<-r.Context().Done() // stall until the client gives up
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	h, _ := newHTTP(t, srv.URL, Options{StallTimeout: 300 * time.Millisecond})
	part := filepath.Join(t.TempDir(), "p")
	start := time.Now()
	if err := h.Download(context.Background(), "x", part, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("stall detection took %v", d)
	}
	if got, _ := os.ReadFile(part); !bytes.Equal(got, data) {
		t.Fatal("file differs")
	}
}

func TestHTTP_GoesThroughTheConfiguredProxy(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("from origin " + r.URL.Path))
	}))
	defer origin.Close()
	var seen atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		if !r.URL.IsAbs() {
			http.Error(w, "not a proxy request", 400)
			return
		}
		resp, err := http.Get(r.URL.String())
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		w.Write(b.Bytes())
	}))
	defer proxy.Close()
	// a host name the proxy resolves (the origin's port on localhost)
	u, _ := url.Parse(origin.URL)
	_, port, _ := net.SplitHostPort(u.Host)
	h, _ := newHTTP(t, "http://localhost:"+port+"/repo", Options{Proxy: proxy.URL})
	got, err := h.ReadFile(context.Background(), "metadata/timestamp.json", 100)
	if err != nil || string(got) != "from origin /repo/metadata/timestamp.json" || seen.Load() != 1 {
		t.Fatalf("got %q %v, proxy saw %d requests", got, err, seen.Load())
	}
	if _, err := NewHTTPClient("ftp://proxy"); err == nil {
		t.Fatal("a non-HTTP proxy URL was accepted")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"0", 0}, {"5", 5 * time.Second}, {" 12 ", 12 * time.Second}, {"", -1}, {"-3", -1}, {"1.5", -1},
		{"99999999999999999999", -1}, {"abc", -1}, {now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0}, {strings.Repeat("9", 100), -1},
	} {
		if got := ParseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in                 string
		first, last, total int64
		ok                 bool
	}{
		{"bytes 0-9/10", 0, 9, 10, true}, {"bytes 5-9/*", 5, 9, -1, true}, {"bytes 9-5/10", 0, 0, 0, false},
		{"bytes 0-10/10", 0, 0, 0, false}, {"bytes -1-5/10", 0, 0, 0, false}, {"items 0-9/10", 0, 0, 0, false},
		{"bytes 0-9", 0, 0, 0, false}, {"bytes */10", 0, 0, 0, false}, {"bytes +1-5/10", 0, 0, 0, false},
		{"bytes 0-99999999999999999999/1", 0, 0, 0, false},
	} {
		f, l, tot, ok := ParseContentRange(tc.in)
		if ok != tc.ok || (ok && (f != tc.first || l != tc.last || tot != tc.total)) {
			t.Errorf("ParseContentRange(%q) = %d %d %d %v", tc.in, f, l, tot, ok)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-9/10", "bytes 5-9/*", "bytes 1-0/2", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		first, last, total, ok := ParseContentRange(s)
		if !ok {
			return
		}
		if first < 0 || last < first || (total >= 0 && last >= total) || total < -1 {
			t.Fatalf("%q parsed to an impossible range %d-%d/%d", s, first, last, total)
		}
		tot := "*"
		if total >= 0 {
			tot = strconv.FormatInt(total, 10)
		}
		f2, l2, t2, ok2 := ParseContentRange(fmt.Sprintf("bytes %d-%d/%s", first, last, tot))
		if !ok2 || f2 != first || l2 != last || t2 != total {
			t.Fatalf("%q: canonical form does not parse back", s)
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"5", "Wed, 21 Oct 2015 07:28:00 GMT", "", "-1", "1e9"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, s string) {
		d := ParseRetryAfter(s, now)
		if d < -1 {
			t.Fatalf("%q gave %v", s, d)
		}
	})
}

func TestDir_ReadsRegularFilesOnlyAndChecksSizes(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "metadata", "sub"), 0o755)
	os.WriteFile(filepath.Join(root, "metadata", "timestamp.json"), []byte("0123456789"), 0o644)
	os.Symlink("/etc", filepath.Join(root, "metadata", "link"))
	d := NewDir(root, nil)
	ctx := context.Background()
	if b, err := d.ReadFile(ctx, "metadata/timestamp.json", 10); err != nil || string(b) != "0123456789" {
		t.Fatalf("%q %v", b, err)
	}
	if _, err := d.ReadFile(ctx, "metadata/timestamp.json", 9); !errcode.Is(err, errcode.TooLarge) {
		t.Errorf("too large: %v", err)
	}
	if _, err := d.ReadFile(ctx, "metadata/none", 9); !IsNotFound(err) {
		t.Errorf("missing: %v", err)
	}
	if _, err := d.ReadFile(ctx, "metadata/sub", 9); !errcode.Is(err, errcode.Invalid) {
		t.Errorf("directory: %v", err)
	}
	if _, err := d.ReadFile(ctx, "../x", 9); !errcode.Is(err, errcode.Invalid) {
		t.Errorf("traversal: %v", err)
	}
	part := filepath.Join(t.TempDir(), "p")
	if err := d.Download(ctx, "metadata/timestamp.json", part, 12); !errcode.Is(err, errcode.Invalid) {
		t.Errorf("short file: %v", err)
	}
	if err := d.Download(ctx, "metadata/timestamp.json", part, 8); !errcode.Is(err, errcode.TooLarge) {
		t.Errorf("long file: %v", err)
	}
	if err := d.Download(ctx, "metadata/timestamp.json", part, 10); err != nil {
		t.Errorf("exact: %v", err)
	}
}

func TestOpen_PicksTheRightKindOfSource(t *testing.T) {
	repoDir := t.TempDir()
	os.MkdirAll(filepath.Join(repoDir, "public", "metadata"), 0o755)
	s, err := Open(repoDir, Options{})
	if err != nil || s.String() != filepath.Join(repoDir, "public") || !s.Offline() {
		t.Fatalf("repository dir: %v %v", s, err)
	}
	if s, err := Open("https://mirror.example/updates", Options{}); err != nil || s.Offline() {
		t.Fatalf("URL: %v %v", s, err)
	}
	if s, err := Open("offline:http://mirror.lan:8080", Options{}); err != nil || !s.Offline() || s.String() != "http://mirror.lan:8080" {
		t.Fatalf("offline URL: %v %v", s, err)
	}
	if _, err := Open("offline:ftp://x", Options{}); err == nil {
		t.Fatal("offline:ftp accepted")
	}
	for _, bad := range []string{"ftp://x", filepath.Join(repoDir, "missing"), "file:///etc"} {
		if _, err := Open(bad, Options{}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	junk := filepath.Join(t.TempDir(), "junk.tar")
	os.WriteFile(junk, []byte("not a tar file at all, just text......"), 0o644)
	if _, err := Open(junk, Options{}); err == nil {
		t.Error("a junk tar was accepted")
	}
}
