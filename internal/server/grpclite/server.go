// Package grpclite is a small gRPC server (HTTP/2 framing, HPACK headers,
// flow control, keepalive) built for what limits the agent listener:
// memory per idle connection. It speaks the same wire protocol as grpc-go,
// so agents (grpc-go clients) and HTTP CONNECT proxies see no difference.
//
// Why not grpc-go: its server runs four goroutines per connection (reader,
// writer, keepalive, the handler) and keeps a framer, buffers and HPACK
// state for each; an idle agent costs ≈ 45 KiB of live memory, above the
// 40 KiB budget (docs/benchmarks.md). Here a connection is served by one
// goroutine: it reads frames, and a streaming call (the agent's Session)
// runs its handler on that same goroutine, whose Recv reads the connection
// itself until a message for it arrives. Unary calls, and streaming calls
// beside the one already running there, get goroutines of their own, fed
// by whichever goroutine is reading. (While that handler works outside
// Recv — its store work, say — the connection is not read; the agent
// protocol has one call in flight per connection, so nothing waits.) Writes happen under a lock on the
// caller's goroutine; keepalive is a timer, not a goroutine.
//
// Scope (what the agent protocol needs, and what HTTP/2 requires of any
// server): unary and streaming methods registered from a grpc.ServiceDesc
// (the generated RegisterXServer functions work), deadlines (grpc-timeout),
// status codes and messages in trailers, cancellation by RST_STREAM,
// stream and connection flow control in both directions, SETTINGS, PING,
// GOAWAY, CONTINUATION, padding, priority (ignored). Not supported:
// message compression (answered Unimplemented), incoming metadata,
// interceptors, stats handlers, server push, h2c.
//
// Connections are handed over after their TLS handshake (ServeConn); the
// caller supplies the credentials.AuthInfo that handlers find in their
// context with peer.FromContext, as with grpc-go.
//
// Lifecycle: NewServer → RegisterService → ServeConn (per connection, on a
// goroutine of the caller's) → Shutdown or Close.
package grpclite

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Options configure a Server. Zero values take the documented defaults.
type Options struct {
	// MaxRecvMsgSize bounds a received message; default 4 MiB.
	MaxRecvMsgSize int
	// MaxConcurrentStreams bounds the calls open at once on a
	// connection; default 100.
	MaxConcurrentStreams uint32
	// InitialWindowSize is the receive window of each stream and of the
	// connection; default 64 KiB.
	InitialWindowSize uint32
	// MaxHeaderListSize bounds a request's header block; default 16 KiB.
	MaxHeaderListSize uint32
	// KeepaliveTime is the idle time after which the server pings a
	// connection, KeepaliveTimeout how long it then waits for any frame
	// before closing it; defaults 2h and 20s (as grpc-go).
	KeepaliveTime, KeepaliveTimeout time.Duration
	// WriteTimeout bounds each write to a connection; a peer that stops
	// reading is dropped after it; default 10s.
	WriteTimeout time.Duration
	// PrefaceTimeout bounds the wait for the client's connection preface
	// and first SETTINGS; default 10s.
	PrefaceTimeout time.Duration
	// Log receives protocol errors at debug level; default slog.Default().
	Log *slog.Logger
}

// Server serves gRPC calls on connections handed to ServeConn.
type Server struct {
	opts    Options
	methods map[string]*method // by path: /package.Service/Method

	mu       sync.Mutex
	conns    map[*conn]struct{}
	shutdown bool
	drained  chan struct{} // closed when conns empties during Shutdown
}

type method struct {
	impl   any
	unary  grpc.MethodHandler
	stream grpc.StreamHandler
	desc   grpc.StreamDesc
}

// NewServer returns a server without services.
func NewServer(o Options) *Server {
	if o.MaxRecvMsgSize <= 0 {
		o.MaxRecvMsgSize = 4 << 20
	}
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = 100
	}
	if o.InitialWindowSize < defaultWindow {
		o.InitialWindowSize = 64 << 10
	}
	if o.InitialWindowSize > maxWindow {
		o.InitialWindowSize = maxWindow
	}
	if o.MaxHeaderListSize == 0 {
		o.MaxHeaderListSize = 16 << 10
	}
	if o.KeepaliveTime <= 0 {
		o.KeepaliveTime = 2 * time.Hour
	}
	if o.KeepaliveTimeout <= 0 {
		o.KeepaliveTimeout = 20 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.PrefaceTimeout <= 0 {
		o.PrefaceTimeout = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Server{opts: o, methods: map[string]*method{}, conns: map[*conn]struct{}{}}
}

// RegisterService registers a service's methods; it makes Server a
// grpc.ServiceRegistrar, so generated RegisterXServer functions work. It
// must be called before serving.
func (s *Server) RegisterService(sd *grpc.ServiceDesc, impl any) {
	prefix := "/" + sd.ServiceName + "/"
	for _, m := range sd.Methods {
		s.methods[prefix+m.MethodName] = &method{impl: impl, unary: m.Handler}
	}
	for _, st := range sd.Streams {
		s.methods[prefix+st.StreamName] = &method{impl: impl, stream: st.Handler, desc: st}
	}
}

// ServeConn serves an established (TLS) connection until it closes; it
// runs on the caller's goroutine. authInfo is what handlers see as
// peer.AuthInfo.
func (s *Server) ServeConn(nc net.Conn, authInfo credentials.AuthInfo) {
	c := newConn(s, nc, authInfo)
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		if s.drained != nil && len(s.conns) == 0 {
			close(s.drained)
			s.drained = nil
		}
		s.mu.Unlock()
	}()
	c.serve()
}

// Shutdown stops new calls (GOAWAY to every connection) and waits until the
// connections have closed or ctx ends; then it closes what remains.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.shutdown = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	var drained chan struct{}
	if len(s.conns) > 0 {
		drained = make(chan struct{})
		s.drained = drained
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.goAway(errCodeNo, "server shutting down")
	}
	if drained != nil {
		select {
		case <-drained:
		case <-ctx.Done():
		}
	}
	s.Close()
}

// Close closes every connection at once.
func (s *Server) Close() {
	s.mu.Lock()
	s.shutdown = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.nc.Close()
	}
}

// Connections is the number of connections being served.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// percentEncode encodes a grpc-message value: bytes outside printable
// ASCII, and '%', become %XX.
func percentEncode(msg string) string {
	ok := true
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < ' ' || c > '~' || c == '%' {
			ok = false
			break
		}
	}
	if ok {
		return msg
	}
	var b strings.Builder
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < ' ' || c > '~' || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
