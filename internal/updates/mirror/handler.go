package mirror

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

type entry struct {
	name      string
	path      string // file on disk ("" when served from data)
	size      int64
	etag      string // strong: "<sha256>"
	immutable bool
	mod       time.Time
	data      []byte         // small metadata kept in memory
	gz        []byte         // its gzip form (nil when not smaller)
	fds       chan *fileBody // open descriptors to reuse (files never change)
}

// open returns a descriptor of the entry's file at offset 0, reusing one
// from an earlier request when it can (an lseek instead of open and close).
func (e *entry) open() (*fileBody, error) {
	select {
	case fb := <-e.fds:
		// always rewind: sendfile moves the kernel offset behind fileBody's back
		if _, err := fb.f.Seek(0, io.SeekStart); err != nil {
			fb.f.Close()
			return e.openNew()
		}
		fb.pos = 0
		return fb, nil
	default:
		return e.openNew()
	}
}

func (e *entry) openNew() (*fileBody, error) {
	f, err := os.Open(e.path)
	if err != nil {
		return nil, err
	}
	return &fileBody{f: f, size: e.size}, nil
}

// put keeps a descriptor for the next request, or closes it.
func (e *entry) put(fb *fileBody) {
	select {
	case e.fds <- fb:
	default:
		fb.f.Close()
	}
}

// closeIdle closes the kept descriptors (the entry left the index; requests
// still holding one close it in put once the channel is full or drained).
func (e *entry) closeIdle() {
	for {
		select {
		case fb := <-e.fds:
			fb.f.Close()
		default:
			return
		}
	}
}

type index struct {
	files map[string]*entry
	bytes int64
}

// limits enforces the connection limit and bandwidth caps, and tracks
// clients.
type limits struct {
	max        int64
	active     atomic.Int64 // target transfers
	activeMeta atomic.Int64 // metadata answers

	global     *rate.Limiter
	clientRate rate.Limit
	chunk      int

	clients sync.Map // address → *clientState
	nclient atomic.Int64

	// virtual queue: each refused request is given the next free slot
	sent         atomic.Int64 // body bytes written (the hot path only counts)
	capRate      int64        // the global cap, 0 when uncapped
	qmu          sync.Mutex
	nextSlot     time.Time
	measuredRate float64 // smoothed bytes/s when uncapped
	measured     bool
	lastAt       time.Time
	lastSent     int64
	maxRA        time.Duration
}

type clientState struct {
	lim      *rate.Limiter
	lastSeen atomic.Int64 // unix nanoseconds
}

func newLimits(cfg Config) *limits {
	l := &limits{max: int64(cfg.MaxConns), chunk: 32 << 10, maxRA: cfg.MaxRetryAfter, capRate: cfg.Rate}
	if cfg.Rate > 0 {
		l.chunk = clampChunk(cfg.Rate)
	}
	if cfg.ClientRate > 0 {
		l.clientRate = rate.Limit(cfg.ClientRate)
		l.chunk = min(l.chunk, clampChunk(cfg.ClientRate))
	}
	if cfg.Rate > 0 {
		l.global = newLimiter(cfg.Rate, l.chunk)
	}
	return l
}

// clampChunk picks a write size of about 1/64 s of the rate, between 1 KiB
// and 32 KiB, so a cap holds closely even over short intervals.
func clampChunk(r int64) int {
	return int(min(max(r/64, 1<<10), 32<<10))
}

// newLimiter returns a token bucket for r bytes/s that starts empty (no
// initial burst above the cap) and can hold 50 ms of tokens, so a writer
// that wakes up late catches up instead of losing its share.
func newLimiter(r int64, chunk int) *rate.Limiter {
	burst := max(chunk, int(r/20))
	l := rate.NewLimiter(rate.Limit(r), burst)
	l.AllowN(time.Now(), burst)
	return l
}

func (l *limits) throttled() bool { return l.global != nil || l.clientRate > 0 }

// acquireMeta takes one of the metadata slots (eight per transfer slot:
// metadata is small and served from memory, so it is not made to queue
// behind engine transfers).
func (l *limits) acquireMeta() bool {
	if l.max < 0 {
		l.activeMeta.Add(1)
		return true
	}
	if l.activeMeta.Add(1) > 8*l.max {
		l.activeMeta.Add(-1)
		return false
	}
	return true
}

func (l *limits) releaseMeta() { l.activeMeta.Add(-1) }

// acquire takes a transfer slot for size bytes, or returns the Retry-After
// to answer with.
func (l *limits) acquire(now time.Time, size int64) (ok bool, retryAfter int) {
	if l.max < 0 {
		l.active.Add(1)
		return true, 0
	}
	for {
		cur := l.active.Load()
		if cur >= l.max {
			return false, l.reserve(now, size)
		}
		if l.active.CompareAndSwap(cur, cur+1) {
			return true, 0
		}
	}
}

// reserve hands a refused request for size bytes the next free slot of a
// virtual queue: the queue advances by size ÷ the rate the mirror sends at
// (its cap, or the measured rate when uncapped), so a herd is told to come
// back spread over the time the mirror needs to serve what it asked for.
func (l *limits) reserve(now time.Time, size int64) int {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	rate := float64(l.capRate)
	if rate <= 0 {
		// measured over at least 200 ms; 10 MB/s until measured
		if l.lastAt.IsZero() {
			l.lastAt, l.lastSent = now, l.sent.Load()
		} else if el := now.Sub(l.lastAt); el >= 200*time.Millisecond {
			cur := l.sent.Load()
			r := float64(cur-l.lastSent) / el.Seconds()
			if l.measured {
				l.measuredRate = 0.7*l.measuredRate + 0.3*r
			} else if r > 0 {
				l.measuredRate, l.measured = r, true
			}
			l.lastAt, l.lastSent = now, cur
		}
		rate = max(l.measuredRate, 1e6)
		if !l.measured {
			rate = 10e6
		}
	}
	if l.nextSlot.Before(now) {
		l.nextSlot = now
	}
	l.nextSlot = l.nextSlot.Add(time.Duration(float64(size) / rate * float64(time.Second)))
	if max := now.Add(l.maxRA); l.nextSlot.After(max) {
		l.nextSlot = max
	}
	s := int(math.Ceil(l.nextSlot.Sub(now).Seconds()))
	return min(max(s, 1), int(l.maxRA/time.Second))
}

func (l *limits) release() { l.active.Add(-1) }

// clientFor returns the per-client state of an address.
func (l *limits) clientFor(addr string, now time.Time) *clientState {
	v, ok := l.clients.Load(addr)
	if !ok {
		c := &clientState{}
		if l.clientRate > 0 {
			c.lim = newLimiter(int64(l.clientRate), l.chunk)
		}
		var loaded bool
		if v, loaded = l.clients.LoadOrStore(addr, c); !loaded {
			if l.nclient.Add(1) > 100_000 {
				l.sweep(now)
			}
		}
	}
	c := v.(*clientState)
	if t := now.UnixNano(); t-c.lastSeen.Load() > int64(time.Second) {
		c.lastSeen.Store(t)
	}
	return c
}

// recentClients counts addresses seen in the last five minutes.
func (l *limits) recentClients(now time.Time) int {
	n := 0
	cut := now.Add(-5 * time.Minute).UnixNano()
	l.clients.Range(func(_, v any) bool {
		if v.(*clientState).lastSeen.Load() > cut {
			n++
		}
		return true
	})
	return n
}

// sweep forgets addresses idle for ten minutes.
func (l *limits) sweep(now time.Time) {
	cut := now.Add(-10 * time.Minute).UnixNano()
	l.clients.Range(func(k, v any) bool {
		if v.(*clientState).lastSeen.Load() < cut {
			l.clients.Delete(k)
			l.nclient.Add(-1)
		}
		return true
	})
}

type metrics struct {
	bytes         prometheus.Counter
	requests      *prometheus.CounterVec
	byCode        map[int]prometheus.Counter // common codes, resolved once
	rejected      prometheus.Counter
	active        prometheus.GaugeFunc
	clients       prometheus.GaugeFunc
	syncs         *prometheus.CounterVec
	lastSync      prometheus.Gauge
	engineVersion prometheus.Gauge
	expires       prometheus.Gauge
}

func newMetrics(m *Mirror) *metrics {
	mt := &metrics{
		bytes:    prometheus.NewCounter(prometheus.CounterOpts{Name: "mamori_mirror_bytes_served_total", Help: "Bytes of response bodies sent by the update mirror."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mamori_mirror_requests_total", Help: "Requests answered by the update mirror, by HTTP status."}, []string{"code"}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{Name: "mamori_mirror_rejected_total", Help: "Requests refused with 503 because the mirror was at its connection limit."}),
		active: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mamori_mirror_active_requests", Help: "Requests being served."},
			func() float64 { return float64(m.lim.active.Load() + m.lim.activeMeta.Load()) }),
		clients: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mamori_mirror_clients", Help: "Distinct client addresses seen in the last 5 minutes."},
			func() float64 { return float64(m.lim.recentClients(m.now())) }),
		syncs:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mamori_mirror_syncs_total", Help: "Mirror syncs by result (changed, unchanged, error)."}, []string{"result"}),
		lastSync:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "mamori_mirror_last_sync_success_timestamp_seconds", Help: "Unix time of the last successful sync."}),
		engineVersion: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mamori_mirror_engine_version", Help: "Engine version the mirror serves."}),
		expires:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "mamori_mirror_metadata_expires_timestamp_seconds", Help: "Unix time at which the served metadata expires (the mirror must sync before)."}),
		byCode:        map[int]prometheus.Counter{},
	}
	for _, c := range []int{200, 206, 304, 404, 503} {
		mt.byCode[c] = mt.requests.WithLabelValues(strconv.Itoa(c))
	}
	return mt
}

func (mt *metrics) request(code int) prometheus.Counter {
	if c, ok := mt.byCode[code]; ok {
		return c
	}
	return mt.requests.WithLabelValues(strconv.Itoa(code))
}

func (mt *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{mt.bytes, mt.requests, mt.rejected, mt.active, mt.clients, mt.syncs, mt.lastSync, mt.engineVersion, mt.expires} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Handler serves the mirrored repository: GET and HEAD of
// /metadata/... and /targets/... (mount it with http.StripPrefix under a
// prefix). Content-addressed and versioned files are sent with
// "Cache-Control: public, max-age=31536000, immutable", timestamp.json and
// 404s with a short max-age; strong ETags, Range, If-Range and conditional
// requests are honoured; metadata is gzip-encoded for clients that accept
// it. Over MaxConns the answer is 503 with Retry-After, at once.
func (m *Mirror) Handler() http.Handler { return http.HandlerFunc(m.serve) }

type statusWriter struct {
	http.ResponseWriter
	code  int
	bytes int64
	m     *Mirror
}

func (w *statusWriter) count(n int64) {
	if n > 0 {
		w.bytes += n
		w.m.met.bytes.Add(float64(n))
		w.m.lim.sent.Add(n)
	}
}

func (w *statusWriter) WriteHeader(c int) {
	if w.code == 0 {
		w.code = c
	}
	w.ResponseWriter.WriteHeader(c)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.count(int64(n))
	return n, err
}

// ReadFrom keeps sendfile for unthrottled file bodies.
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
	}
	w.count(n)
	return n, err
}

// throttledWriter sends the body in chunks, waiting on the global and
// per-client limiters before each. It must not implement io.ReaderFrom (that
// would let io.Copy bypass the limiters).
type throttledWriter struct {
	sw    *statusWriter
	ctx   context.Context
	lims  []*rate.Limiter
	chunk int
}

func (t *throttledWriter) Header() http.Header { return t.sw.Header() }
func (t *throttledWriter) WriteHeader(c int)   { t.sw.WriteHeader(c) }

func (t *throttledWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), t.chunk)
		for _, l := range t.lims {
			if err := l.WaitN(t.ctx, n); err != nil {
				return written, err
			}
		}
		k, err := t.sw.Write(p[:n])
		written += k
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (m *Mirror) serve(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w, m: m}
	defer func() {
		code := sw.code
		if code == 0 {
			code = http.StatusOK
		}
		m.met.request(code).Inc()
	}()
	h := sw.Header()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(sw, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, "/")
	ix := m.idx.Load()
	var e *entry
	if ix != nil && len(name) <= 1024 {
		e = ix.files[name]
	}
	if e == nil {
		h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(m.cfg.TimestampMaxAge/time.Second)))
		http.Error(sw, "not found", http.StatusNotFound)
		return
	}
	now := m.now()
	ok, ra := true, 1
	if e.data != nil {
		ok = m.lim.acquireMeta()
		if ok {
			defer m.lim.releaseMeta()
		}
	} else if ok, ra = m.lim.acquire(now, e.size); ok {
		defer m.lim.release()
	}
	if !ok {
		m.met.rejected.Inc()
		h.Set("Retry-After", strconv.Itoa(ra))
		h.Set("Cache-Control", "no-store")
		h.Set("Connection", "close")
		http.Error(sw, "busy, retry later", http.StatusServiceUnavailable)
		return
	}
	cl := m.lim.clientFor(clientAddr(r), now)

	if e.immutable {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(m.cfg.TimestampMaxAge/time.Second)))
	}
	h.Set("X-Content-Type-Options", "nosniff")
	body := io.ReadSeeker(nil)
	etag := e.etag
	if e.data != nil {
		h.Set("Content-Type", "application/json")
		h.Set("Vary", "Accept-Encoding")
		if e.gz != nil && r.Header.Get("Range") == "" && acceptsGzip(r.Header.Get("Accept-Encoding")) {
			h.Set("Content-Encoding", "gzip")
			etag = strings.TrimSuffix(e.etag, `"`) + `-gz"`
			body = bytes.NewReader(e.gz)
		} else {
			body = bytes.NewReader(e.data)
		}
	} else {
		fb, err := e.open()
		if err != nil {
			http.Error(sw, "file unavailable", http.StatusServiceUnavailable)
			return
		}
		defer e.put(fb)
		body = fb
		h.Set("Content-Type", "application/octet-stream")
	}
	h.Set("ETag", etag)
	var out http.ResponseWriter = sw
	if m.lim.throttled() {
		tw := &throttledWriter{sw: sw, ctx: r.Context(), chunk: m.lim.chunk}
		if m.lim.global != nil {
			tw.lims = append(tw.lims, m.lim.global)
		}
		if cl.lim != nil {
			tw.lims = append(tw.lims, cl.lim)
		}
		out = tw
	}
	http.ServeContent(out, r, "", e.mod, body)
}

// acceptsGzip reports whether an Accept-Encoding value allows gzip.
func acceptsGzip(v string) bool {
	for _, part := range strings.Split(v, ",") {
		enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(enc), "gzip") {
			continue
		}
		q := strings.TrimSpace(params)
		if qv, ok := strings.CutPrefix(q, "q="); ok {
			f, err := strconv.ParseFloat(qv, 64)
			return err == nil && f > 0
		}
		return true
	}
	return false
}

// fileBody lets http.ServeContent learn a file's size and rewind without
// system calls (the size is known from the index), and still hands the
// *os.File to sendfile (through syscall.Conn). Seeks that move the position
// are real, so ranges start where they should.
type fileBody struct {
	f    *os.File
	size int64
	pos  int64
}

func (b *fileBody) Read(p []byte) (int, error) {
	n, err := b.f.Read(p)
	b.pos += int64(n)
	return n, err
}

func (b *fileBody) Seek(off int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = off
	case io.SeekCurrent:
		abs = b.pos + off
	case io.SeekEnd:
		if off == 0 { // a size query (ServeContent): answered from the index
			return b.size, nil
		}
		abs = b.size + off
	default:
		return 0, errors.New("bad whence")
	}
	if abs < 0 {
		return 0, errors.New("negative position")
	}
	if abs == b.pos {
		return abs, nil
	}
	n, err := b.f.Seek(abs, io.SeekStart)
	b.pos = n
	return n, err
}

// SyscallConn exposes the file to sendfile.
func (b *fileBody) SyscallConn() (syscall.RawConn, error) { return b.f.SyscallConn() }
