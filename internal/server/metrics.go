package server

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mamori/mamori/internal/errcode"
)

// metrics are the server's Prometheus metrics, on a registry of its own so
// that several servers can live in one test process.
type metrics struct {
	reg            *prometheus.Registry
	retained       *prometheus.CounterVec // deleted by retention, by kind
	connected      prometheus.Gauge
	checkIns       prometheus.Counter
	events         *prometheus.CounterVec
	sectionsStored prometheus.Counter
	bytesIn        prometheus.CounterFunc
	bytesOut       prometheus.CounterFunc
	wakeupsSent    prometheus.Counter
	pushes         *prometheus.CounterVec
	wakeupLatency  prometheus.Histogram
	presenceWrites prometheus.Counter
	storeLatency   *prometheus.HistogramVec
	enrollments    *prometheus.CounterVec
	sessions       *prometheus.CounterVec

	// Queues and back-pressure (issue 4): each bounded queue has a gauge.
	handshakes        *prometheus.CounterVec
	handshakeSeconds  *prometheus.HistogramVec
	handshakesWaiting prometheus.Gauge
	sessionSetups     prometheus.Gauge
	retryAfter        prometheus.Histogram
	workWaiting       prometheus.Gauge
	writeQueue        prometheus.Gauge
	writeBatch        prometheus.Histogram
	wakeupsPending    prometheus.Gauge

	in, out atomic.Uint64
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := promFactory{m.reg}
	m.connected = f.gauge("mamori_agents_connected", "Computers with an open agent connection on this server.")
	m.retained = f.counterVec("mamori_retention_deleted_total", "Records (and uploaded files) deleted because they outlived the retention settings, by kind.", "kind")
	m.checkIns = f.counter("mamori_agent_check_ins_total", "Check-ins received from agents.")
	m.events = f.counterVec("mamori_agent_events_total", "Agent events by outcome (stored, duplicate, rejected).", "outcome")
	m.sectionsStored = f.counter("mamori_inventory_sections_stored_total", "Changed inventory sections written.")
	m.bytesIn = prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mamori_agent_bytes_received_total",
		Help: "Bytes read from agent connections (TLS records included)."}, func() float64 { return float64(m.in.Load()) })
	m.bytesOut = prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mamori_agent_bytes_sent_total",
		Help: "Bytes written to agent connections (TLS records included)."}, func() float64 { return float64(m.out.Load()) })
	m.reg.MustRegister(m.bytesIn, m.bytesOut)
	m.wakeupsSent = f.counter("mamori_wakeups_sent_total", "Wake-ups pushed to agents.")
	m.pushes = f.counterVec("mamori_pushes_total", "Messages pushed to agents by kind (configuration, task_runs, cancel).", "kind")
	m.wakeupLatency = f.histogram("mamori_wakeup_latency_seconds", "Time from pushing a wake-up to the check-in that answers it.",
		[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5})
	m.presenceWrites = f.counter("mamori_presence_updates_written_total", "Presence rows written in batches.")
	m.storeLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mamori_store_operation_seconds",
		Help: "Store operation latency by operation and outcome.", Buckets: []float64{.0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}},
		[]string{"op", "code"})
	m.reg.MustRegister(m.storeLatency)
	m.enrollments = f.counterVec("mamori_enrollments_total", "Enrollment attempts by result code.", "code")
	m.sessions = f.counterVec("mamori_agent_sessions_total", "Agent sessions by how they began (accepted, refused, retry_later).", "result")
	m.handshakes = f.counterVec("mamori_agent_tls_handshakes_total",
		"Agent TLS handshakes by result: full, resumed (session ticket), failed, shed (too many waiting), expired (deadline passed while waiting).", "result")
	m.handshakeSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mamori_agent_tls_handshake_seconds",
		Help: "Duration of successful agent TLS handshakes from their first slot (the agent's answers included), by kind.", Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5}},
		[]string{"kind"})
	m.reg.MustRegister(m.handshakeSeconds)
	m.handshakesWaiting = f.gauge("mamori_agent_tls_handshakes_waiting", "Agent connections in their TLS handshake (waiting for a slot or for the agent).")
	m.sessionSetups = f.gauge("mamori_agent_session_setups", "Agent sessions being set up (authentication, section hashes, Welcome); bounded, beyond it agents are told to retry later.")
	m.retryAfter = f.histogram("mamori_agent_retry_after_seconds", "Retry-after hints sent to agents with RetryLater.",
		[]float64{1, 2, 5, 10, 20, 30, 60, 120})
	m.workWaiting = f.gauge("mamori_store_work_waiting", "Session store operations waiting for a worker.")
	m.writeQueue = f.gauge("mamori_check_in_writes_queued", "Check-in writes waiting for the group commit.")
	m.writeBatch = f.histogram("mamori_check_in_write_batch_size", "Check-ins written per group commit.",
		[]float64{1, 2, 4, 8, 16, 32, 64, 128, 256})
	m.wakeupsPending = f.gauge("mamori_wakeups_pending", "Wake-ups of bulk requests not yet pushed (paced by --wakeup-rate).")
	return m
}

func (m *metrics) observeStore(op string, d time.Duration, err error) {
	code := "ok"
	if err != nil {
		code = string(errcode.Of(err))
	}
	m.storeLatency.WithLabelValues(op, code).Observe(d.Seconds())
}

type promFactory struct{ reg *prometheus.Registry }

func (f promFactory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f promFactory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f promFactory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f promFactory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

// countingListener counts bytes on accepted connections and remembers
// them by remote address, so that the hub can drop one (a grpc-go handler
// blocked in Recv cannot otherwise be interrupted).
type countingListener struct {
	net.Listener
	in, out *atomic.Uint64
	conns   *sync.Map // remote address -> *countingConn
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &countingConn{Conn: c, in: l.in, out: l.out, conns: l.conns, key: c.RemoteAddr().String()}
	l.conns.Store(cc.key, cc)
	return cc, nil
}

type countingConn struct {
	net.Conn
	in, out *atomic.Uint64
	conns   *sync.Map
	key     string
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(uint64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(uint64(n))
	return n, err
}

func (c *countingConn) Close() error {
	c.conns.CompareAndDelete(c.key, c)
	return c.Conn.Close()
}

// closeConn drops the accepted connection from remote, if still open.
func closeConn(conns *sync.Map, remote string) {
	if c, ok := conns.Load(remote); ok {
		c.(*countingConn).Close()
	}
}
