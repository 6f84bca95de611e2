package server

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
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
// A connection takes a slot only once its ClientHello has arrived (a client
// that connects and sends nothing holds no slot), waits at most until its
// handshake deadline, and is refused at once (closed, counted as "shed")
// when maxWaiting connections are already waiting: the client's backoff then
// spreads the storm. After the handshake, serve is called on a fresh
// goroutine.
//
// Lifecycle: newTLSAcceptor → run (accepts until the listener is closed) →
// close (stops accepting, closes the listener; connections already handed to
// serve are the caller's).
type tlsAcceptor struct {
	ln         net.Listener
	cfg        *tls.Config
	timeout    time.Duration // from accept to the end of the handshake
	maxWaiting int64
	slots      chan struct{}
	serve      func(*tls.Conn)
	metrics    *metrics
	log        *slog.Logger

	waiting atomic.Int64
	closed  chan struct{}
	once    sync.Once
}

func newTLSAcceptor(ln net.Listener, cfg *tls.Config, workers, maxWaiting int, timeout time.Duration, m *metrics, log *slog.Logger, serve func(*tls.Conn)) *tlsAcceptor {
	return &tlsAcceptor{ln: ln, cfg: cfg, timeout: timeout, maxWaiting: int64(maxWaiting),
		slots: make(chan struct{}, workers), serve: serve, metrics: m, log: log, closed: make(chan struct{})}
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
	deadline := time.Now().Add(a.timeout)
	c.SetDeadline(deadline)
	if !waitReadable(c) {
		a.metrics.handshakes.WithLabelValues("failed").Inc()
		c.Close()
		return
	}
	if a.waiting.Add(1) > a.maxWaiting {
		a.waiting.Add(-1)
		a.metrics.handshakes.WithLabelValues("shed").Inc()
		c.Close()
		return
	}
	a.metrics.handshakesWaiting.Inc()
	t := time.NewTimer(time.Until(deadline))
	var got bool
	select {
	case a.slots <- struct{}{}:
		got = true
	case <-t.C:
	case <-a.closed:
	}
	t.Stop()
	a.waiting.Add(-1)
	a.metrics.handshakesWaiting.Dec()
	if !got {
		a.metrics.handshakes.WithLabelValues("expired").Inc()
		c.Close()
		return
	}
	start := time.Now()
	tc := tls.Server(c, a.cfg)
	err := tc.Handshake()
	<-a.slots
	if err != nil {
		a.metrics.handshakes.WithLabelValues("failed").Inc()
		a.log.Debug("agent TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	kind := "full"
	if tc.ConnectionState().DidResume {
		kind = "resumed"
	}
	a.metrics.handshakes.WithLabelValues(kind).Inc()
	a.metrics.handshakeSeconds.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	c.SetDeadline(time.Time{})
	go a.serve(tc) // a fresh goroutine: the handshake's deep stack stays behind
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
