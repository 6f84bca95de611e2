package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/pki"
)

// Direct performs single exchanges with a server: one enrollment, one
// session. It holds one gRPC connection per server address and keeps no
// loops of its own; Auto builds the long-running behaviour on top.
type Direct struct {
	pin   string
	ca    *x509.Certificate // nil before enrollment: the pin is looked up in the server's chain
	cert  *tls.Certificate  // nil before enrollment
	proxy string
	dial  func(ctx context.Context, addr string) (net.Conn, error)
	// tickets outlives the connections: a reconnect resumes the TLS
	// session of the previous one.
	tickets      *ticketCache
	noReadBuffer bool
	configured   configuredProxy // the configuration's proxy, tried first

	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn
	pinFail map[string]string // server -> fingerprint it presented, when it failed the pin
	refused map[string]bool   // server -> its last dial was refused
}

// RefusedError is a connection the server's host refused: nothing listens
// there (the server is stopped or restarting). It wraps the coded error.
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

// DirectOptions configure a Direct client.
type DirectOptions struct {
	// Pin is the CA fingerprint ("sha256:<hex>").
	Pin string
	// CA, when known (after enrollment), is the only root accepted.
	CA *x509.Certificate
	// Cert is the agent's client certificate (after enrollment).
	Cert *tls.Certificate
	// Proxy is an explicit http:// CONNECT proxy; empty uses HTTPS_PROXY.
	Proxy string
	// Dial replaces the network dialer (the load harness counts bytes with
	// it); nil dials directly or through the proxy.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// NoReadBuffer reads frames straight from the connection instead of
	// through gRPC's 32 KiB read buffer: a few more system calls, a third
	// of the memory of an idle connection (the load harness, which holds
	// tens of thousands in one process, sets it).
	NoReadBuffer bool
}

// NewDirect returns a client; it dials lazily.
func NewDirect(o DirectOptions) *Direct {
	d := &Direct{pin: o.Pin, ca: o.CA, cert: o.Cert, proxy: o.Proxy, tickets: newTicketCache(16), noReadBuffer: o.NoReadBuffer,
		conns: map[string]*grpc.ClientConn{}, pinFail: map[string]string{}, refused: map[string]bool{}}
	dial := o.Dial
	if dial == nil {
		dial = d.configured.wrap(dialer(o.Proxy))
	}
	d.dial = func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := dial(ctx, addr)
		d.mu.Lock()
		if errors.Is(err, syscall.ECONNREFUSED) {
			d.refused[addr] = true
		} else {
			delete(d.refused, addr)
		}
		d.mu.Unlock()
		return c, err
	}
	return d
}

// SetConfiguredProxy sets the proxy the configuration gives ("" none),
// tried first from the next connection; onFail hears when it fails and the
// agent goes its own way for a while (see configuredProxy). It reports
// whether the proxy changed.
func (d *Direct) SetConfiguredProxy(u string, onFail func(error)) bool {
	return d.configured.set(u, onFail)
}

func (d *Direct) conn(server string) (*grpc.ClientConn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.conns[server]; ok {
		return c, nil
	}
	verify := pki.VerifyPinnedServer(d.pin, d.ca)
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Host names are not checked; the pinned CA is the trust anchor and
		// VerifyPeerCertificate checks the chain against it.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, chains [][]*x509.Certificate) error {
			err := verify(raw, chains)
			var pm *pki.PinMismatchError
			if errors.As(err, &pm) {
				presented := ""
				if len(raw) > 1 {
					presented = pki.Fingerprint(raw[len(raw)-1])
				}
				d.mu.Lock()
				d.pinFail[server] = presented
				d.mu.Unlock()
			}
			return err
		},
		ClientSessionCache: d.tickets,
	}
	if d.cert != nil {
		cert := *d.cert
		cfg.Certificates = []tls.Certificate{cert}
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithContextDialer(d.dial),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		// Fixed windows turn off BDP probing pings: fewer bytes per check-in.
		grpc.WithInitialWindowSize(64 << 10),
		grpc.WithInitialConnWindowSize(64 << 10),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16 << 20)),
		grpc.WithUserAgent("mamori-agent"),
		// Small writes make small TLS records; the server's TLS read buffer
		// grows to the largest record it receives and keeps that size for
		// the life of the connection.
		grpc.WithWriteBufferSize(2 << 10),
	}
	if d.noReadBuffer {
		opts = append(opts, grpc.WithReadBufferSize(0))
	}
	c, err := grpc.NewClient("passthrough:///"+server, opts...)
	if err != nil {
		return nil, err
	}
	d.conns[server] = c
	return c, nil
}

// Close closes every connection.
func (d *Direct) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, c := range d.conns {
		c.Close()
		delete(d.conns, k)
	}
}

// release forgets the connection to server when it is not usable (its
// dial or handshake failed, or it was lost): the next call dials afresh.
//
// Without this, gRPC would keep redialling a failed connection on its own
// exponential backoff (up to 2 minutes) and fail the agent's attempts in
// between at once with the previous error, so the agent's reconnection
// policy (ReconnectDelay: the server's RetryLater hints, the agent's own
// backoff) would not be the one that decides when it comes back.
func (d *Direct) release(server string, failed *grpc.ClientConn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.conns[server]
	if !ok || c != failed || c.GetState() == connectivity.Ready {
		return // another call replaced it meanwhile, or it works
	}
	c.Close()
	delete(d.conns, server)
}

// rpcError turns a failed call into an error with a code: the server's own
// code and message, or a pin mismatch, or unavailable. A call that failed
// for want of a connection releases it (c: the connection it used).
// webServerAnswer is the error for a web server that answered instead of
// the agent endpoint (most often the API port given for the agent port),
// or nil. 429, 502, 503 and 504 come as Unavailable (a gateway, or a server
// busy or restarting) and stay retryable.
func webServerAnswer(server string, st *status.Status) error {
	if st.Code() == codes.Unavailable || !strings.Contains(st.Message(), "unexpected HTTP status code") {
		return nil
	}
	return errcode.New(errcode.Invalid, "server %s answered as a web server, not as Mamori's agent endpoint: is it the API port? "+
		"Agents connect to the server's agent port (--agent-listen, default 2222) (%s)", server, firstClause(st.Message()))
}

// firstClause is msg up to its first ";" or line break (gRPC's messages
// about an HTTP answer go on with the answer's body).
func firstClause(msg string) string {
	if i := strings.IndexAny(msg, ";\n"); i >= 0 {
		return msg[:i]
	}
	return msg
}

func (d *Direct) rpcError(server string, c *grpc.ClientConn, err error) error {
	if status.Code(err) == codes.Unavailable {
		d.release(server, c)
	}
	d.mu.Lock()
	presented, pinFailed := d.pinFail[server]
	delete(d.pinFail, server)
	refused := d.refused[server]
	delete(d.refused, server)
	d.mu.Unlock()
	if pinFailed {
		msg := fmt.Sprintf("server %s is not trusted: its CA fingerprint", server)
		if presented != "" {
			msg += " is " + presented + ","
		}
		return errcode.New(errcode.Forbidden, "%s not the expected %s (check --ca-fingerprint)", msg, d.pin)
	}
	if errors.Is(err, io.EOF) {
		return StatusError(server, codes.OK, "")
	}
	st, ok := status.FromError(err)
	if !ok {
		return errcode.New(errcode.Unavailable, "server %s: %v", server, err)
	}
	if e := webServerAnswer(server, st); e != nil {
		return e
	}
	e := StatusError(server, st.Code(), st.Message())
	if refused && errcode.Of(e) == errcode.Unavailable {
		return &RefusedError{Err: e}
	}
	return e
}

// StatusError is the error of a session or call that server ended with a
// gRPC status: the server's own code and message, "unreachable" for
// unavailable, and "closed the session" for a stream that ended without
// an error.
func StatusError(server string, code codes.Code, msg string) error {
	if code == codes.OK {
		return errcode.New(errcode.Unavailable, "server %s closed the session", server)
	}
	if ec := errcode.FromGRPC(code); ec != errcode.Unavailable {
		return errcode.New(ec, "%s", msg)
	}
	return errcode.New(errcode.Unavailable, "server %s unreachable: %s", server, msg)
}

// Enroll asks server to enroll this agent.
func (d *Direct) Enroll(ctx context.Context, server string, req *agentproto.EnrollRequest) (*agentproto.EnrollResponse, error) {
	c, err := d.conn(server)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := agentproto.NewAgentClient(c).Enroll(ctx, req)
	if err != nil {
		return nil, d.rpcError(server, c, err)
	}
	return resp, nil
}

// Session is an open Session stream.
type Session struct {
	stream agentproto.Agent_SessionClient
	cancel context.CancelFunc
	d      *Direct
	server string
	conn   *grpc.ClientConn
}

// RetryLaterError is the server's back-pressure answer.
type RetryLaterError struct {
	After  time.Duration
	Reason string
}

func (e *RetryLaterError) Error() string {
	return fmt.Sprintf("server busy (%s); retry after %s", e.Reason, e.After)
}

// OpenSession opens the persistent stream, sends hello and returns the
// server's Welcome. A RetryLater answer is returned as *RetryLaterError.
func (d *Direct) OpenSession(ctx context.Context, server string, hello *agentproto.Hello) (*Session, *agentproto.Welcome, error) {
	c, err := d.conn(server)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Session{cancel: cancel, d: d, server: server, conn: c}
	s.stream, err = agentproto.NewAgentClient(c).Session(ctx)
	if err != nil {
		cancel()
		return nil, nil, d.rpcError(server, c, err)
	}
	// A server that answers at once (RetryLater) may have ended the stream
	// before the hello is sent: its answer is still there to read.
	sendErr := s.stream.Send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Hello{Hello: hello}})
	first, err := s.Recv()
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	welcome, err := HelloAnswer(first, sendErr)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return s, welcome, nil
}

// HelloAnswer reads the server's first message of a session, as Recv
// returned it (a RetryLater is already Recv's *RetryLaterError): its
// Welcome. sendErr is how sending the hello went: a Welcome to a hello that
// was not sent is no session.
func HelloAnswer(first *agentproto.ServerMessage, sendErr error) (*agentproto.Welcome, error) {
	if w := first.GetWelcome(); w != nil && sendErr == nil {
		return w, nil
	}
	return nil, errcode.New(errcode.Invalid, "server answered hello with an unexpected message")
}

// SessionEnd returns the server's RetryLater as the end of the session, a
// *RetryLaterError, and nil for any other message. Sent during a session
// (capability 3), it means the server is stopping on purpose and tells this
// agent when to come back, so that its agents do not all return at once.
func SessionEnd(m *agentproto.ServerMessage) error {
	rl := m.GetRetryLater()
	if rl == nil {
		return nil
	}
	return &RetryLaterError{After: time.Duration(rl.RetryAfterMs) * time.Millisecond, Reason: rl.Reason}
}

// TLSState is the TLS state of the session's connection (DidResume tells
// an abbreviated handshake); ok is false when it is not known.
func (s *Session) TLSState() (tls.ConnectionState, bool) {
	p, ok := peer.FromContext(s.stream.Context())
	if !ok {
		return tls.ConnectionState{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	return info.State, ok
}

// Send sends a check-in.
//
// When the stream has ended, Send fails with "closed the session"; the
// reason the server gave is what Recv returns (callers that read on
// another goroutine should prefer it: Recv must not be called from two
// goroutines at once, so Send does not call it).
func (s *Session) Send(ci *agentproto.CheckIn) error {
	if err := s.stream.Send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_CheckIn{CheckIn: ci}}); err != nil {
		return s.d.rpcError(s.server, s.conn, err)
	}
	return nil
}

// Recv receives the next server message. A RetryLater ends the session:
// it is returned as *RetryLaterError (SessionEnd).
func (s *Session) Recv() (*agentproto.ServerMessage, error) {
	m, err := s.stream.Recv()
	if err != nil {
		return nil, s.d.rpcError(s.server, s.conn, err)
	}
	if err := SessionEnd(m); err != nil {
		return nil, err
	}
	return m, nil
}

// Close ends the stream.
func (s *Session) Close() {
	s.stream.CloseSend()
	s.cancel()
}
