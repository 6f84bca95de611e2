package source

import (
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

// Defaults of the HTTP source.
const (
	DefaultMaxRetryWait = 10 * time.Minute // longest Retry-After honoured in place
	DefaultBusyRetries  = 60               // 429/503 answers accepted per file
	DefaultRetries      = 4                // transient failures (network, 5xx, cut transfers) per file
	DefaultStallTimeout = 60 * time.Second // no byte received for this long: the transfer is cut
	UserAgent           = "mamori-updater/1"
)

// Options configure sources.
type Options struct {
	// Client is the HTTP client; nil builds one from Proxy.
	Client *http.Client
	// Proxy: "" uses the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY);
	// "none" or "direct" uses no proxy; otherwise a proxy URL.
	Proxy string
	// UserAgent sent with requests; default "mamori-updater/1".
	UserAgent string
	// Stats receives counts; nil allocates one.
	Stats *Stats
	// MaxRetryWait is the longest Retry-After waited for in place (default
	// 10 min); a longer one fails the fetch with errcode unavailable so the
	// caller tries another source or reschedules.
	MaxRetryWait time.Duration
	// BusyRetries is how many 429/503 answers one fetch accepts (default 60).
	BusyRetries int
	// Retries is how many transient failures one fetch accepts (default 4).
	Retries int
	// StallTimeout cuts a transfer that received nothing for this long
	// (default 60 s).
	StallTimeout time.Duration
	// Sleep waits (tests replace it); default: a timer honouring ctx.
	Sleep func(ctx context.Context, d time.Duration) error
	// Logger for retries; default slog.Default().
	Logger *slog.Logger
}

func (o *Options) stats() *Stats {
	if o.Stats == nil {
		o.Stats = new(Stats)
	}
	return o.Stats
}

// NewHTTPClient returns the HTTP client sources use: proxy as in
// Options.Proxy, 30 s to connect, 60 s to the first response byte, no
// transparent compression (the source asks for gzip itself so it can count
// wire bytes and bound the decompressed size).
func NewHTTPClient(proxy string) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	switch proxy {
	case "":
		t.Proxy = http.ProxyFromEnvironment
	case "none", "direct":
		t.Proxy = nil
	default:
		u, err := url.Parse(proxy)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, errcode.New(errcode.Invalid, "proxy %q: want http://host:port", proxy)
		}
		t.Proxy = http.ProxyURL(u)
	}
	t.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 30 * time.Second
	t.ResponseHeaderTimeout = 60 * time.Second
	t.MaxIdleConnsPerHost = 4
	t.IdleConnTimeout = 60 * time.Second
	t.DisableCompression = true
	return &http.Client{Transport: t}, nil
}

// HTTP reads a repository over HTTP(S).
type HTTP struct {
	base    string // ends with "/"
	o       Options
	offline bool // opened with the offline: prefix
}

// NewHTTP returns the source for a base URL.
func NewHTTP(base string, o Options) (*HTTP, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, errcode.New(errcode.Invalid, "update source %q: want http(s)://host[:port][/path]", base)
	}
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	o.stats()
	if o.Client == nil {
		c, err := NewHTTPClient(o.Proxy)
		if err != nil {
			return nil, err
		}
		o.Client = c
	}
	if o.UserAgent == "" {
		o.UserAgent = UserAgent
	}
	if o.MaxRetryWait <= 0 {
		o.MaxRetryWait = DefaultMaxRetryWait
	}
	if o.BusyRetries <= 0 {
		o.BusyRetries = DefaultBusyRetries
	}
	if o.Retries <= 0 {
		o.Retries = DefaultRetries
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &HTTP{base: base, o: o}, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (h *HTTP) String() string { return strings.TrimSuffix(h.base, "/") }

// Offline is false for HTTP sources, unless opened as "offline:URL".
func (h *HTTP) Offline() bool { return h.offline }

// Close closes idle connections.
func (h *HTTP) Close() error {
	h.o.Client.CloseIdleConnections()
	return nil
}

// Stats returns the source's counters.
func (h *HTTP) Stats() *Stats { return h.o.Stats }

func (h *HTTP) url(name string) (string, error) {
	if err := checkURLName(name); err != nil {
		return "", err
	}
	return h.base + name, nil
}

func checkURLName(name string) error {
	if name == "" || len(name) > 1024 || strings.HasPrefix(name, "/") {
		return errcode.New(errcode.Invalid, "bad file name %q", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._/", c) >= 0) {
			return errcode.New(errcode.Invalid, "bad character in file name %q", name)
		}
	}
	for _, p := range strings.Split(name, "/") {
		if p == "" || p == "." || p == ".." {
			return errcode.New(errcode.Invalid, "bad file name %q", name)
		}
	}
	return nil
}

// busyError is a 429/503 answer.
type busyError struct {
	status int
	after  time.Duration // from Retry-After; -1 when absent or unusable
}

func (e *busyError) Error() string {
	return fmt.Sprintf("source busy (HTTP %d)", e.status)
}

// transientError is worth retrying on the same source.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// retryLoop runs one request attempt until it succeeds, fails for good, or
// the retry budgets are spent. The attempt gets a context that a stall
// watchdog cancels.
func (h *HTTP) retryLoop(ctx context.Context, name string, attempt func(ctx context.Context) error) error {
	busy, transient := 0, 0
	for {
		err := attempt(ctx)
		if err == nil {
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			return errcode.New(errcode.Unavailable, "fetching %s from %s: %v", name, h, cerr)
		}
		var be *busyError
		var te *transientError
		switch {
		case errors.As(err, &be):
			busy++
			wait := be.after
			if wait < 0 {
				wait = backoff(busy)
			}
			if busy > h.o.BusyRetries || wait > h.o.MaxRetryWait {
				code := errcode.Unavailable
				if be.status == http.StatusTooManyRequests {
					code = errcode.TooManyRequests
				}
				return errcode.New(code, "%s is busy (HTTP %d, retry after %s)", h, be.status, wait.Round(time.Second))
			}
			wait += jitter(wait)
			h.o.Logger.Debug("update source busy, waiting", "source", h.String(), "file", name, "status", be.status, "wait", wait)
			if err := h.o.Sleep(ctx, wait); err != nil {
				return errcode.New(errcode.Unavailable, "fetching %s from %s: %v", name, h, err)
			}
		case errors.As(err, &te):
			transient++
			if transient > h.o.Retries {
				return errcode.New(errcode.Unavailable, "fetching %s from %s: %v", name, h, te.err)
			}
			wait := backoff(transient)
			h.o.Logger.Debug("update source failed, retrying", "source", h.String(), "file", name, "err", te.err, "wait", wait)
			if err := h.o.Sleep(ctx, wait+jitter(wait)); err != nil {
				return errcode.New(errcode.Unavailable, "fetching %s from %s: %v", name, h, err)
			}
		default:
			return err
		}
	}
}

// backoff is 1 s, 2 s, 4 s … capped at 60 s.
func backoff(n int) time.Duration {
	if n > 6 {
		n = 7
	}
	return min(time.Second<<(n-1), time.Minute)
}

// jitter is a random extra wait of up to a tenth of d, at least 500 ms and
// at most 10 s of range, so clients told the same Retry-After do not return
// together (a mirror already spreads its Retry-After values over the time it
// needs, so a wide jitter would only leave it idle).
func jitter(d time.Duration) time.Duration {
	r := min(max(d/10, 500*time.Millisecond), 10*time.Second)
	return time.Duration(rand.Int64N(int64(r)))
}

// ParseRetryAfter parses a Retry-After value (delta-seconds or an HTTP date)
// relative to now. It returns -1 when the value is absent or unusable; a
// date in the past is 0.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 64 {
		return -1
	}
	if v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return -1
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return -1
	}
	if d := t.Sub(now); d > 0 {
		return d.Round(time.Second)
	}
	return 0
}

// stallReader cancels the request when no bytes arrive for the timeout.
type stallReader struct {
	r     io.Reader
	timer *time.Timer
	d     time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.timer.Reset(s.d)
	}
	return n, err
}

// do sends one request with a stall watchdog covering the headers and body.
// The caller must call the returned cleanup after reading the body.
func (h *HTTP) do(ctx context.Context, req *http.Request) (*http.Response, io.Reader, func(), error) {
	rctx, cancel := context.WithCancel(ctx)
	var stalled atomic.Bool
	timer := time.AfterFunc(h.o.StallTimeout, func() { stalled.Store(true); cancel() })
	req = req.WithContext(rctx)
	req.Header.Set("User-Agent", h.o.UserAgent)
	h.o.Stats.Requests.Add(1)
	resp, err := h.o.Client.Do(req)
	cleanup := func() { timer.Stop(); cancel() }
	if err != nil {
		cleanup()
		if ctx.Err() != nil {
			return nil, nil, nil, ctx.Err()
		}
		if stalled.Load() {
			err = fmt.Errorf("no answer for %s", h.o.StallTimeout)
		}
		var certErr *tls.CertificateVerificationError
		if errors.As(err, &certErr) {
			return nil, nil, nil, err // not trusted now, not trusted in a second
		}
		return nil, nil, nil, &transientError{err}
	}
	timer.Reset(h.o.StallTimeout)
	body := &stallReader{r: &countReader{resp.Body, h.o.Stats}, timer: timer, d: h.o.StallTimeout}
	return resp, body, func() { resp.Body.Close(); cleanup() }, nil
}

type countReader struct {
	r io.Reader
	s *Stats
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.s.Bytes.Add(int64(n))
	return n, err
}

// statusError turns a non-success status into an error.
func (h *HTTP) statusError(resp *http.Response, name string) error {
	switch resp.StatusCode {
	case http.StatusNotFound, http.StatusGone:
		return errcode.New(errcode.NotFound, "%s: not found on %s", name, h)
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return &busyError{status: resp.StatusCode, after: ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	case http.StatusRequestTimeout, http.StatusBadGateway, http.StatusGatewayTimeout, http.StatusInternalServerError:
		return &transientError{fmt.Errorf("%s: HTTP %d from %s", name, resp.StatusCode, h)}
	}
	return errcode.New(errcode.Unavailable, "%s: unexpected HTTP %d from %s", name, resp.StatusCode, h)
}

// ReadFile fetches a whole (small) file, asking for gzip.
func (h *HTTP) ReadFile(ctx context.Context, name string, max int64) ([]byte, error) {
	u, err := h.url(name)
	if err != nil {
		return nil, err
	}
	var out []byte
	err = h.retryLoop(ctx, name, func(ctx context.Context) error {
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept-Encoding", "gzip")
		resp, body, done, err := h.do(ctx, req)
		if err != nil {
			return err
		}
		defer done()
		if resp.StatusCode != http.StatusOK {
			io.Copy(io.Discard, io.LimitReader(body, 4096))
			return h.statusError(resp, name)
		}
		if resp.ContentLength > max && resp.Header.Get("Content-Encoding") == "" {
			return errcode.New(errcode.TooLarge, "%s is larger than %d bytes", name, max)
		}
		var r io.Reader = body
		switch strings.ToLower(resp.Header.Get("Content-Encoding")) {
		case "", "identity":
		case "gzip":
			zr, err := gzip.NewReader(body)
			if err != nil {
				return &transientError{fmt.Errorf("%s: bad gzip encoding: %v", name, err)}
			}
			r = zr
		default:
			return errcode.New(errcode.Unavailable, "%s: unsupported content encoding %q", name, resp.Header.Get("Content-Encoding"))
		}
		b, err := io.ReadAll(io.LimitReader(r, max+1))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &transientError{fmt.Errorf("%s: %v", name, err)}
		}
		if int64(len(b)) > max {
			return errcode.New(errcode.TooLarge, "%s is larger than %d bytes", name, max)
		}
		out = b
		return nil
	})
	return out, err
}

// partMeta remembers the validator of a partial download so it is resumed
// only against the same representation.
type partMeta struct {
	URL  string `json:"url"`
	ETag string `json:"etag"`
}

func readPartMeta(part string) partMeta {
	var m partMeta
	if b, err := os.ReadFile(part + ".meta"); err == nil {
		json.Unmarshal(b, &m)
	}
	return m
}

func writePartMeta(part string, m partMeta) {
	b, _ := json.Marshal(m)
	os.WriteFile(part+".meta", b, 0o600)
}

// ParseContentRange parses "bytes first-last/total" (total may be "*", then
// -1). It refuses anything else, including last < first.
func ParseContentRange(v string) (first, last, total int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found || len(v) > 128 {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	num := func(s string) (int64, bool) {
		if s == "" || len(s) > 18 || strings.TrimLeft(s, "0123456789") != "" {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	first, ok1 := num(a)
	last, ok2 := num(b)
	if !ok1 || !ok2 || last < first {
		return 0, 0, 0, false
	}
	if tot == "*" {
		return first, last, -1, true
	}
	total, ok3 := num(tot)
	if !ok3 || last >= total {
		return 0, 0, 0, false
	}
	return first, last, total, true
}

// Download fetches name into part, resuming an earlier partial transfer with
// Range (and If-Range with the ETag seen before, when from the same URL).
func (h *HTTP) Download(ctx context.Context, name, part string, size int64) error {
	u, err := h.url(name)
	if err != nil {
		return err
	}
	return h.retryLoop(ctx, name, func(ctx context.Context) error {
		return h.downloadOnce(ctx, u, name, part, size)
	})
}

func (h *HTTP) downloadOnce(ctx context.Context, u, name, part string, size int64) error {
	f, err := os.OpenFile(part, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	off, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if off > size {
		if err := f.Truncate(0); err != nil {
			return err
		}
		off = 0
	}
	if off == size && size > 0 {
		return nil
	}
	meta := readPartMeta(part)
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
		if meta.URL == u && strings.HasPrefix(meta.ETag, `"`) {
			req.Header.Set("If-Range", meta.ETag)
		}
	}
	resp, body, done, err := h.do(ctx, req)
	if err != nil {
		return err
	}
	defer done()
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength > size {
			return errcode.New(errcode.TooLarge, "%s: %d bytes offered, its metadata says %d", name, resp.ContentLength, size)
		}
		if off > 0 { // the range was not honoured: start over
			if err := f.Truncate(0); err != nil {
				return err
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
			off = 0
		}
	case http.StatusPartialContent:
		first, _, total, ok := ParseContentRange(resp.Header.Get("Content-Range"))
		if !ok || first != off || (total >= 0 && total != size) {
			f.Truncate(0)
			os.Remove(part + ".meta")
			return &transientError{fmt.Errorf("%s: bad Content-Range %q for a resume at %d", name, resp.Header.Get("Content-Range"), off)}
		}
	case http.StatusRequestedRangeNotSatisfiable:
		f.Truncate(0)
		os.Remove(part + ".meta")
		return &transientError{fmt.Errorf("%s: range not satisfiable, starting over", name)}
	default:
		io.Copy(io.Discard, io.LimitReader(body, 4096))
		return h.statusError(resp, name)
	}
	if et := resp.Header.Get("ETag"); strings.HasPrefix(et, `"`) {
		writePartMeta(part, partMeta{URL: u, ETag: et})
	}
	n, err := io.Copy(f, io.LimitReader(body, size-off+1))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// keep what arrived: the next attempt resumes from there
		return &transientError{fmt.Errorf("%s: transfer cut after %d bytes: %v", name, off+n, err)}
	}
	switch {
	case off+n > size:
		f.Truncate(0)
		return errcode.New(errcode.TooLarge, "%s is larger than the %d bytes its metadata says", name, size)
	case off+n < size:
		return &transientError{fmt.Errorf("%s: transfer ended after %d of %d bytes", name, off+n, size)}
	}
	return nil
}
