package server

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// tlsAcceptor performs the TLS handshakes of the agent listener on a
// bounded number of slots before connections reach the RPC layer.
//
// Why: a reconnect storm is, first of all, tens of thousands of handshakes
// at once. Unbounded, every one of them would be in progress together, each
// holding its buffers and goroutine stack, all finishing late; bounded, they
// finish in order at the rate the CPU allows and the rest wait cheaply.
//
// A connection takes a slot only once its ClientHello has arrived (a client
// that connects and sends nothing holds no slot, and is closed after
// helloTimeout), gives it back whenever the server has written and waits
// for the client, and takes one again when the client answers (a client
// slow to answer holds no slot either; flightConn). Slots come from one of
// two pools:
// a client that offers to resume a session (a ticket from an earlier
// connection, pre_shared_key in its ClientHello) costs a key exchange, a
// third of a full handshake with its certificate signatures, so it does not
// queue behind full handshakes; everybody else takes a full-handshake slot.
// A connection waits at most until its handshake deadline ("expired") and
// is refused at once ("shed": closed before its handshake) when maxWaiting
// connections are already in their handshake (waiting for a slot or for
// the client: slow clients hold no slot, but they are bounded too). Agents keep their session ticket across
// such refusals (internal/agent's ticketCache), so their next attempt still
// resumes; after the handshake, the session gate answers with an explicit
// RetryLater when sessions pile up (gate.go). serve is called on a fresh
// goroutine.
//
// Lifecycle: newTLSAcceptor → run (accepts until the listener is closed) →
// close (stops accepting, closes the listener; connections already handed to
// serve are the caller's).
type tlsAcceptor struct {
	ln net.Listener
	// base is the caller's configuration (the server rotates its ticket
	// keys); cfg is a copy whose GetConfigForClient, admit, returns base.
	base, cfg  *tls.Config
	timeout    time.Duration // from accept to the end of the handshake
	maxWaiting int64
	// slots and resumeSlots are the two pools: full handshakes, and
	// handshakes offering to resume.
	slots, resumeSlots chan struct{}
	serve              func(*tls.Conn)
	metrics            *metrics
	log                *slog.Logger

	waiting atomic.Int64
	closed  chan struct{}
	once    sync.Once
}

// admission is one connection's way through the acceptor. It is used by
// the handshake's goroutine only.
type admission struct {
	deadline time.Time
	waiting  bool          // counted in waiting (until the handshake ends)
	pool     chan struct{} // the pool chosen from the ClientHello (admit)
	slot     chan struct{} // pool while a slot of it is held, else nil
	closed   <-chan struct{}
	admitted time.Time
	expired  bool
}

// errBusy fails a handshake that found no slot before its deadline.
var errBusy = errors.New("no handshake slot before the deadline")

// helloTimeout bounds the wait for a new connection's first bytes. Not
// too short: in a reconnect storm on a busy client machine, a ClientHello
// (a post-quantum key share to compute) was seen to come more than 10 s
// after the TCP connection.
const helloTimeout = 20 * time.Second

// extensionPreSharedKey is TLS's pre_shared_key extension (RFC 8446): the
// client offers to resume a session.
const extensionPreSharedKey = 41

func newTLSAcceptor(ln net.Listener, cfg *tls.Config, workers, maxWaiting int, timeout time.Duration, m *metrics, log *slog.Logger, serve func(*tls.Conn)) *tlsAcceptor {
	a := &tlsAcceptor{ln: ln, timeout: timeout, maxWaiting: int64(maxWaiting),
		slots: make(chan struct{}, workers), resumeSlots: make(chan struct{}, workers),
		serve: serve, metrics: m, log: log, closed: make(chan struct{})}
	a.base, a.cfg = cfg, cfg.Clone()
	a.cfg.GetConfigForClient = a.admit
	return a
}

// run accepts connections until the listener is closed.
func (a *tlsAcceptor) run() error {
	var delay time.Duration
	for {
		c, err := a.ln.Accept()
		if err != nil {
			select {
			case <-a.closed:
				return nil
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of file descriptors: wait for some to be released
				// rather than spinning (net/http does the same).
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				a.log.Warn("accepting agent connection", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		go a.handshake(c)
	}
}

func (a *tlsAcceptor) close() {
	a.once.Do(func() {
		close(a.closed)
		a.ln.Close()
	})
}

func (a *tlsAcceptor) handshake(c net.Conn) {
	now := time.Now()
	ad := &admission{deadline: now.Add(a.timeout), closed: a.closed}
	// A client says something at once (its ClientHello) or not at all:
	// a silent connection is not kept for the whole handshake deadline.
	c.SetDeadline(now.Add(min(a.timeout, helloTimeout)))
	if !waitReadable(c) {
		a.metrics.handshakes.WithLabelValues("failed").Inc()
		c.Close()
		return
	}
	c.SetDeadline(ad.deadline)
	if a.waiting.Add(1) > a.maxWaiting {
		a.waiting.Add(-1)
		a.metrics.handshakes.WithLabelValues("shed").Inc()
		c.Close()
		return
	}
	ad.waiting = true
	a.metrics.handshakesWaiting.Inc()
	fc := &flightConn{Conn: c, ad: ad}
	tc := tls.Server(fc, a.cfg)
	err := tc.Handshake()
	a.stopWaiting(ad)
	ad.release()
	fc.ad = nil // before serve's goroutine starts: no race
	if err != nil {
		result := "failed"
		if ad.expired {
			result = "expired"
		}
		a.metrics.handshakes.WithLabelValues(result).Inc()
		a.log.Debug("agent TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	kind := "full"
	if tc.ConnectionState().DidResume {
		kind = "resumed"
	}
	a.metrics.handshakes.WithLabelValues(kind).Inc()
	if !ad.admitted.IsZero() {
		a.metrics.handshakeSeconds.WithLabelValues(kind).Observe(time.Since(ad.admitted).Seconds())
	}
	c.SetDeadline(time.Time{})
	go a.serve(tc) // a fresh goroutine: the handshake's deep stack stays behind
}

// acquire takes a slot of the admission's pool, waiting until its
// deadline; it reports false when the deadline passed first (expired) or
// the acceptor closed.
func (ad *admission) acquire() bool {
	t := time.NewTimer(time.Until(ad.deadline))
	defer t.Stop()
	select {
	case ad.pool <- struct{}{}:
		ad.slot = ad.pool
		return true
	case <-t.C:
		ad.expired = true
	case <-ad.closed:
	}
	return false
}

// release gives the slot back, once.
func (ad *admission) release() {
	if ad.slot != nil {
		<-ad.slot
		ad.slot = nil
	}
}

// flightConn holds the handshake slot only while the server works: it
// gives the slot back as soon as the server writes (its flight, a
// HelloRetryRequest, an alert) and takes one again when the client's next
// flight arrives (a second ClientHello; its certificate, which the server
// then verifies; its Finished). The slots bound the server's CPU work, not
// the time clients take to answer: a slow client (one starved of CPU, or
// far away) would otherwise hold a slot idle until its deadline.
type flightConn struct {
	net.Conn
	ad *admission // nil once the handshake is over
}

func (c *flightConn) Write(p []byte) (int, error) {
	if c.ad != nil {
		c.ad.release()
	}
	return c.Conn.Write(p)
}

func (c *flightConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.ad != nil && c.ad.pool != nil && c.ad.slot == nil && !c.ad.acquire() {
		return 0, errBusy
	}
	return n, err
}

func (a *tlsAcceptor) stopWaiting(ad *admission) {
	if ad.waiting {
		ad.waiting = false
		a.waiting.Add(-1)
		a.metrics.handshakesWaiting.Dec()
	}
}

// admit runs once the ClientHello has been read (tls.Config's
// GetConfigForClient): it waits for a slot of the connection's pool, or
// fails the handshake when the deadline passes first. The handshake then
// goes on with the caller's configuration (its current ticket keys).
func (a *tlsAcceptor) admit(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	fc, ok := hello.Conn.(*flightConn) // the connection handshake gave tls.Server
	if !ok || fc.ad == nil {
		return a.base, nil // not one of ours: no bound
	}
	ad := fc.ad
	pool := a.slots
	if slices.Contains(hello.Extensions, extensionPreSharedKey) {
		pool = a.resumeSlots
	}
	ad.pool = pool
	if !ad.acquire() {
		return nil, errBusy
	}
	ad.admitted = time.Now()
	return a.base, nil
}

// chanListener hands connections that are already past their TLS handshake
// to grpc.Server.Serve.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// put hands c to Accept, or closes it when the listener is closed.
func (l *chanListener) put(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		c.Close()
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
