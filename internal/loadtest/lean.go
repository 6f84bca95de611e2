package loadtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/mamori/mamori/internal/agent"
	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/pki"
)

// Clients a simulated agent can open its sessions with (Config.Client).
const (
	// ClientGRPC is the real agent's client: agent.Direct over grpc-go.
	ClientGRPC = "grpc"
	// ClientLean speaks the same gRPC-over-HTTP/2 wire with one reader
	// goroutine per connection and frames written straight to TLS: 0.57×
	// grpc-go's memory per simulated agent (docs/benchmarks.md), so that
	// one machine can simulate more.
	ClientLean = "lean"
)

// sessionClient opens an agent's sessions; agent.Direct (through
// grpcClient) and leanClient implement it.
type sessionClient interface {
	OpenSession(ctx context.Context, server string, hello *agentproto.Hello) (agentSession, *agentproto.Welcome, error)
	Close()
}

// agentSession is one open Session stream, as agent.Session offers it.
type agentSession interface {
	Send(*agentproto.CheckIn) error
	Recv() (*agentproto.ServerMessage, error)
	Close()
	TLSState() (tls.ConnectionState, bool)
}

type grpcClient struct{ *agent.Direct }

func (g grpcClient) OpenSession(ctx context.Context, server string, hello *agentproto.Hello) (agentSession, *agentproto.Welcome, error) {
	s, w, err := g.Direct.OpenSession(ctx, server, hello)
	if err != nil {
		return nil, nil, err
	}
	return s, w, nil
}

// Limits of the lean client.
const (
	leanMaxMessage     = 16 << 20 // as the agent's MaxCallRecvMsgSize
	leanFrameSize      = 16 << 10 // SETTINGS_MAX_FRAME_SIZE we accept (the default)
	leanWindow         = 65535    // our receive windows (the defaults, never changed)
	leanWindowUpdateAt = leanWindow / 4
	leanWriteTimeout   = 10 * time.Second
	leanMaxHeaderList  = 16 << 10
)

// leanHandshake bounds the dial and TLS handshake, as grpc-go's connect
// timeout (a variable for the tests).
var leanHandshake = 20 * time.Second

// leanClient keeps one HTTP/2 connection to the server and opens one
// session stream at a time on it, as agent.Direct does with grpc-go: a
// session the server ended (RetryLater) leaves the connection open for
// the next attempt; a failed connection is dialled afresh by the next.
type leanClient struct {
	tlsConf *tls.Config
	dial    func(ctx context.Context, addr string) (net.Conn, error)

	mu   sync.Mutex
	conn *leanConn
}

func newLeanClient(pin string, ca *x509.Certificate, cert *tls.Certificate, dial func(ctx context.Context, addr string) (net.Conn, error)) *leanClient {
	verify := pki.VerifyPinnedServer(pin, ca)
	return &leanClient{dial: dial, tlsConf: &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // the pinned CA is the trust anchor, checked below
		VerifyPeerCertificate: func(raw [][]byte, chains [][]*x509.Certificate) error {
			return verify(raw, chains)
		},
		Certificates:       []tls.Certificate{*cert},
		NextProtos:         []string{"h2"},
		ClientSessionCache: agent.NewTicketCache(16),
	}}
}

func (l *leanClient) Close() {
	l.mu.Lock()
	c := l.conn
	l.conn = nil
	l.mu.Unlock()
	if c != nil {
		c.fail(errcode.New(errcode.Unavailable, "client closed"))
	}
}

// connection returns the open connection to server, dialling one when
// there is none or it failed or is going away.
func (l *leanClient) connection(ctx context.Context, server string) (*leanConn, error) {
	l.mu.Lock()
	c := l.conn
	l.mu.Unlock()
	if c != nil && c.usable() {
		return c, nil
	}
	if c != nil {
		c.fail(errcode.New(errcode.Unavailable, "server %s closed the session", server))
	}
	c, err := dialLean(ctx, server, l.tlsConf, l.dial)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.conn = c
	l.mu.Unlock()
	return c, nil
}

// OpenSession opens the session stream, sends hello and returns the
// server's Welcome, with agent.Direct's errors: *agent.RetryLaterError for
// back-pressure, *agent.RefusedError when nothing listens, error codes
// from the server's status otherwise.
func (l *leanClient) OpenSession(ctx context.Context, server string, hello *agentproto.Hello) (agentSession, *agentproto.Welcome, error) {
	body, err := grpcMessage(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Hello{Hello: hello}})
	if err != nil {
		return nil, nil, err
	}
	c, err := l.connection(ctx, server)
	if err != nil {
		return nil, nil, err
	}
	st, err := c.open(ctx)
	if err != nil {
		return nil, nil, err
	}
	// A server that answers at once (a refused certificate, RetryLater)
	// may have ended the stream before the hello is sent: its answer is
	// still there to read (as with agent.Direct). Hello is small: it fits
	// any window a server may announce but zero.
	sendErr := st.send(body)
	first, err := st.Recv()
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	welcome, err := agent.HelloAnswer(first, sendErr)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return st, welcome, nil
}

// leanConn is one HTTP/2 client connection.
type leanConn struct {
	server string
	nc     net.Conn // the TLS connection (a plain one in tests)

	wmu  sync.Mutex // serialises writes; guards fr's writing side, enc, wbuf, hbuf
	wbuf bytes.Buffer
	hbuf bytes.Buffer
	fr   *http2.Framer // reads from nc, writes into wbuf
	enc  *hpack.Encoder

	mu         sync.Mutex
	windowMove *sync.Cond // a send window grew, or a stream or the connection ended
	connWin    int64      // what we may still send on the connection
	peerWin    int64      // the server's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrame  int        // the server's SETTINGS_MAX_FRAME_SIZE
	nextID     uint32
	active     *leanStream
	goingAway  bool
	err        error // why the connection failed; nil while it works
	recvUnack  int   // received on the connection, not yet given back
}

func dialLean(ctx context.Context, server string, conf *tls.Config, dial func(ctx context.Context, addr string) (net.Conn, error)) (*leanConn, error) {
	ctx, cancel := context.WithTimeout(ctx, leanHandshake)
	defer cancel()
	raw, err := dial(ctx, server)
	if err != nil {
		e := errcode.New(errcode.Unavailable, "server %s unreachable: %v", server, err)
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, &agent.RefusedError{Err: e}
		}
		return nil, e
	}
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		var pm *pki.PinMismatchError
		if errors.As(err, &pm) {
			return nil, errcode.New(errcode.Forbidden, "server %s is not trusted: %v", server, err)
		}
		return nil, errcode.New(errcode.Unavailable, "server %s unreachable: tls handshake: %v", server, err)
	}
	return startLean(server, tc)
}

// startLean sends the client preface on nc and starts reading.
func startLean(server string, nc net.Conn) (*leanConn, error) {
	c := &leanConn{server: server, nc: nc, connWin: leanWindow, peerWin: leanWindow, peerFrame: leanFrameSize, nextID: 1}
	c.windowMove = sync.NewCond(&c.mu)
	c.fr = http2.NewFramer(&c.wbuf, nc)
	c.fr.SetMaxReadFrameSize(leanFrameSize)
	c.fr.MaxHeaderListSize = leanMaxHeaderList
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.hbuf)
	// No dynamic table: the server announces none (grpclite: a header
	// table size of 0), and a header block sent before its SETTINGS arrive
	// must not index what the server will not keep.
	c.enc.SetMaxDynamicTableSizeLimit(0)
	if err := c.write(func() error {
		c.wbuf.WriteString(http2.ClientPreface)
		return c.fr.WriteSettings()
	}); err != nil {
		nc.Close()
		return nil, err
	}
	go c.read()
	return c, nil
}

func (c *leanConn) usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err == nil && !c.goingAway && c.nextID < 1<<31-1
}

// write composes frames into wbuf and writes them in one TLS record.
func (c *leanConn) write(compose func() error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf.Reset()
	if err := compose(); err != nil {
		return err
	}
	c.nc.SetWriteDeadline(time.Now().Add(leanWriteTimeout))
	if _, err := c.nc.Write(c.wbuf.Bytes()); err != nil {
		err = c.lost(err)
		c.fail(err)
		return err
	}
	return nil
}

// lost is the error for a connection that broke (read or write).
func (c *leanConn) lost(err error) error {
	if errors.Is(err, io.EOF) {
		return errcode.New(errcode.Unavailable, "server %s closed the session", c.server)
	}
	return errcode.New(errcode.Unavailable, "server %s: connection lost: %v", c.server, err)
}

// fail closes the connection for good and ends its stream with err.
func (c *leanConn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	st := c.active
	c.active = nil
	c.windowMove.Broadcast()
	c.mu.Unlock()
	if st != nil {
		st.end(err)
	}
	c.nc.Close()
}

// open starts a Session stream (its HEADERS).
func (c *leanConn) open(ctx context.Context) (*leanStream, error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	st := &leanStream{c: c, id: c.nextID, ctx: ctx, sendWin: c.peerWin,
		msgs: make(chan *agentproto.ServerMessage, 4), done: make(chan struct{})}
	c.nextID += 2
	if old := c.active; old != nil {
		c.mu.Unlock()
		return nil, errcode.New(errcode.Conflict, "stream %d still open", old.id)
	}
	c.active = st
	c.mu.Unlock()
	err := c.write(func() error {
		c.hbuf.Reset()
		for _, f := range [...]hpack.HeaderField{
			{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"},
			{Name: ":path", Value: agentproto.Agent_Session_FullMethodName}, {Name: ":authority", Value: c.server},
			{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
			{Name: "user-agent", Value: "mamori-loadtest"},
		} {
			c.enc.WriteField(f)
		}
		return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true})
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// read is the connection's only reader: it answers pings and settings,
// keeps the send windows and hands the active stream its messages.
func (c *leanConn) read() {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) || errors.Is(err, http2.ErrFrameTooLarge) {
				c.write(func() error { return c.fr.WriteGoAway(0, http2.ErrCodeProtocol, nil) })
				c.fail(errcode.New(errcode.Unavailable, "server %s: protocol error: %v", c.server, err))
				return
			}
			c.fail(c.lost(err))
			return
		}
		if err := c.handle(f); err != nil {
			c.write(func() error { return c.fr.WriteGoAway(0, http2.ErrCodeProtocol, nil) })
			c.fail(err)
			return
		}
	}
}

func (c *leanConn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := f.ForeachSetting(c.applySetting); err != nil {
			return errcode.New(errcode.Unavailable, "server %s: protocol error: %v", c.server, err)
		}
		return c.write(func() error { return c.fr.WriteSettingsAck() })
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		return c.write(func() error { return c.fr.WritePing(true, f.Data) })
	case *http2.WindowUpdateFrame:
		c.mu.Lock()
		defer c.mu.Unlock()
		if f.StreamID == 0 {
			c.connWin += int64(f.Increment)
		} else if st := c.active; st != nil && st.id == f.StreamID {
			st.sendWin += int64(f.Increment)
		}
		c.windowMove.Broadcast()
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goingAway = true
		st := c.active
		c.mu.Unlock()
		if st != nil && st.id > f.LastStreamID {
			c.finish(st, errcode.New(errcode.Unavailable, "server %s closed the session", c.server))
		}
	case *http2.RSTStreamFrame:
		if st := c.stream(f.StreamID); st != nil {
			c.finish(st, errcode.New(errcode.Unavailable, "server %s: stream reset (%v): connection lost", c.server, f.ErrCode))
		}
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.DataFrame:
		return c.onData(f)
	}
	return nil // other frames (PRIORITY, unknown types) are ignored, as RFC 9113 asks
}

func (c *leanConn) applySetting(s http2.Setting) error {
	if err := s.Valid(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch s.ID {
	case http2.SettingInitialWindowSize:
		delta := int64(s.Val) - c.peerWin
		c.peerWin = int64(s.Val)
		if st := c.active; st != nil {
			st.sendWin += delta
		}
		c.windowMove.Broadcast()
	case http2.SettingMaxFrameSize:
		c.peerFrame = int(s.Val)
	}
	return nil
}

// stream is the active stream when it has id sid.
func (c *leanConn) stream(sid uint32) *leanStream {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.active; st != nil && st.id == sid {
		return st
	}
	return nil
}

// finish ends st (when still active) with err.
func (c *leanConn) finish(st *leanStream, err error) {
	c.mu.Lock()
	if c.active == st {
		c.active = nil
	}
	c.windowMove.Broadcast()
	c.mu.Unlock()
	st.end(err)
}

func (c *leanConn) onHeaders(f *http2.MetaHeadersFrame) error {
	st := c.stream(f.StreamID)
	if st == nil {
		return nil // a stream we gave up on
	}
	if !f.StreamEnded() {
		if s := f.PseudoValue("status"); s != "200" {
			c.finish(st, errcode.New(errcode.Unavailable, "server %s answered HTTP status %q", c.server, s))
			c.resetStream(st.id, http2.ErrCodeCancel)
			return nil
		}
		return nil
	}
	// Trailers, or a trailers-only answer: the call's status.
	var status, msg string
	for _, h := range f.RegularFields() {
		switch h.Name {
		case "grpc-status":
			status = h.Value
		case "grpc-message":
			msg = h.Value
		}
	}
	code, err := strconv.ParseUint(status, 10, 32)
	if err != nil {
		c.finish(st, errcode.New(errcode.Unavailable, "server %s ended the session without a status", c.server))
		return nil
	}
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	c.finish(st, agent.StatusError(c.server, codes.Code(code), msg))
	return nil
}

func (c *leanConn) onData(f *http2.DataFrame) error {
	n := int(f.Header().Length)
	c.mu.Lock()
	c.recvUnack += n
	giveConn := 0
	if c.recvUnack >= leanWindowUpdateAt {
		giveConn, c.recvUnack = c.recvUnack, 0
	}
	st := c.active
	if st != nil && st.id != f.StreamID {
		st = nil
	}
	c.mu.Unlock()
	if giveConn > 0 {
		if err := c.write(func() error { return c.fr.WriteWindowUpdate(0, uint32(giveConn)) }); err != nil {
			return err
		}
	}
	if st == nil {
		return nil
	}
	if err := st.received(f.Data(), n); err != nil {
		c.finish(st, err)
		c.resetStream(st.id, http2.ErrCodeProtocol)
		return nil
	}
	if f.StreamEnded() {
		c.finish(st, errcode.New(errcode.Unavailable, "server %s ended the session without a status", c.server))
	}
	return nil
}

func (c *leanConn) resetStream(sid uint32, code http2.ErrCode) {
	c.write(func() error { return c.fr.WriteRSTStream(sid, code) })
}

// leanStream is one Session call.
type leanStream struct {
	c   *leanConn
	id  uint32
	ctx context.Context

	sendWin int64 // guarded by c.mu

	// Touched by the connection's reader only.
	partial   []byte
	recvUnack int

	msgs chan *agentproto.ServerMessage
	done chan struct{} // closed by end
	once sync.Once
	err  error // why it ended; set before done is closed
}

func (st *leanStream) end(err error) {
	st.once.Do(func() {
		st.err = err
		close(st.done)
	})
}

// received takes a DATA frame's payload (n bytes of window): complete
// messages are handed to Recv, in order.
func (st *leanStream) received(p []byte, n int) error {
	st.recvUnack += n
	if st.recvUnack >= leanWindowUpdateAt {
		give := st.recvUnack
		st.recvUnack = 0
		st.c.write(func() error { return st.c.fr.WriteWindowUpdate(st.id, uint32(give)) })
	}
	st.partial = append(st.partial, p...)
	for len(st.partial) >= 5 {
		if st.partial[0] != 0 {
			return errcode.New(errcode.Invalid, "server %s sent a compressed message; none was negotiated", st.c.server)
		}
		size := binary.BigEndian.Uint32(st.partial[1:5])
		if size > leanMaxMessage {
			return errcode.New(errcode.Invalid, "server %s sent a message of %d bytes (at most %d)", st.c.server, size, leanMaxMessage)
		}
		if len(st.partial) < 5+int(size) {
			return nil
		}
		m := &agentproto.ServerMessage{}
		if err := proto.Unmarshal(st.partial[5:5+size], m); err != nil {
			return errcode.New(errcode.Invalid, "server %s sent a malformed message: %v", st.c.server, err)
		}
		st.partial = st.partial[5+size:]
		select {
		case st.msgs <- m:
		case <-st.done:
			return nil
		}
	}
	if len(st.partial) == 0 {
		st.partial = nil // do not keep a large message's buffer
	}
	return nil
}

// Recv returns the next server message, or why the stream ended (a
// RetryLater ends it too: agent.SessionEnd, as agent.Direct's).
func (st *leanStream) Recv() (*agentproto.ServerMessage, error) {
	var m *agentproto.ServerMessage
	select {
	case m = <-st.msgs:
	case <-st.done:
		select { // messages that came before the end go first
		case m = <-st.msgs:
		default:
			return nil, st.err
		}
	case <-st.ctx.Done():
		st.Close()
		return nil, st.ctx.Err()
	}
	if err := agent.SessionEnd(m); err != nil {
		return nil, err
	}
	return m, nil
}

// Send sends a check-in.
func (st *leanStream) Send(ci *agentproto.CheckIn) error {
	body, err := grpcMessage(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_CheckIn{CheckIn: ci}})
	if err != nil {
		return err
	}
	return st.send(body)
}

// send writes one framed message as DATA frames within the windows.
func (st *leanStream) send(body []byte) error {
	c := st.c
	for len(body) > 0 {
		c.mu.Lock()
		for c.err == nil && c.active == st && (st.sendWin <= 0 || c.connWin <= 0) {
			c.windowMove.Wait()
		}
		if c.err != nil || c.active != st {
			c.mu.Unlock()
			<-st.done
			return errcode.New(errcode.Unavailable, "server %s closed the session", c.server)
		}
		n := int(min(int64(len(body)), int64(c.peerFrame), st.sendWin, c.connWin))
		st.sendWin -= int64(n)
		c.connWin -= int64(n)
		c.mu.Unlock()
		chunk := body[:n]
		body = body[n:]
		if err := c.write(func() error { return c.fr.WriteData(st.id, false, chunk) }); err != nil {
			return err
		}
	}
	return nil
}

// Close ends the stream: a stream the server has not ended is reset.
func (st *leanStream) Close() {
	c := st.c
	c.mu.Lock()
	active := c.active == st
	if active {
		c.active = nil
		c.windowMove.Broadcast()
	}
	c.mu.Unlock()
	st.end(errcode.New(errcode.Unavailable, "session closed"))
	if active {
		c.resetStream(st.id, http2.ErrCodeCancel)
	}
}

func (st *leanStream) TLSState() (tls.ConnectionState, bool) {
	if tc, ok := st.c.nc.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}

// grpcMessage is m with gRPC's length prefix (uncompressed).
func grpcMessage(m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{}.MarshalAppend(make([]byte, 5, 5+proto.Size(m)), m)
	if err != nil {
		return nil, fmt.Errorf("encoding a message: %w", err)
	}
	if len(b)-5 > leanMaxMessage {
		return nil, errcode.New(errcode.Invalid, "message of %d bytes is over the %d the server accepts", len(b)-5, leanMaxMessage)
	}
	binary.BigEndian.PutUint32(b[1:5], uint32(len(b)-5))
	return b, nil
}
