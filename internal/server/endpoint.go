package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/server/grpclite"
)

// Agent transports: how the agent listener serves gRPC.
const (
	// TransportLean is grpclite: one goroutine per connection (default).
	TransportLean = "lean"
	// TransportGRPC is grpc-go, tuned for memory per connection.
	TransportGRPC = "grpc"
)

// endpointOptions configure the agent listener's protocol stack.
type endpointOptions struct {
	// Transport is TransportLean or TransportGRPC.
	Transport string
	TLS       *tls.Config
	// Listener yields raw TCP connections (the server's counting listener).
	Listener                        net.Listener
	HandshakeSlots, HandshakeQueue  int
	HandshakeTimeout                time.Duration
	KeepaliveTime, KeepaliveTimeout time.Duration
	Metrics                         *metrics
	Log                             *slog.Logger
}

// agentEndpoint is the agent listener's protocol stack, shared by the
// server and the echo baseline (echo.go) so that both measure the same
// thing: TLS handshakes on bounded slots (tlsAcceptor), then gRPC over
// HTTP/2, served by grpclite (one goroutine per connection) or by grpc-go
// (four), both tuned for memory per idle connection. The wire is the same.
//
// Lifecycle: newAgentEndpoint → serve (blocks until stopped) →
// stopAccepting → stop (graceful until ctx ends, then hard) or close.
type agentEndpoint struct {
	acceptor *tlsAcceptor
	// grpc-go
	handshaken *chanListener
	grpc       *grpc.Server
	// grpclite
	lean *grpclite.Server
}

func newAgentEndpoint(o endpointOptions, svc agentproto.AgentServer) *agentEndpoint {
	e := &agentEndpoint{}
	if o.Transport != TransportGRPC {
		e.lean = grpclite.NewServer(grpclite.Options{
			MaxRecvMsgSize:       16 << 20,
			MaxConcurrentStreams: 16,
			InitialWindowSize:    64 << 10,
			MaxHeaderListSize:    16 << 10,
			KeepaliveTime:        o.KeepaliveTime,
			KeepaliveTimeout:     o.KeepaliveTimeout,
			Log:                  o.Log,
		})
		agentproto.RegisterAgentServer(e.lean, svc)
		e.acceptor = newTLSAcceptor(o.Listener, o.TLS, o.HandshakeSlots, o.HandshakeQueue, o.HandshakeTimeout, o.Metrics, o.Log,
			func(c *tls.Conn) { e.lean.ServeConn(c, tlsAuthInfo(c)) })
		return e
	}
	e.handshaken = newChanListener(o.Listener.Addr())
	e.grpc = grpc.NewServer(
		// The tlsAcceptor has done the handshake (see accept.go).
		grpc.Creds(handshakenCreds{}),
		// Memory per idle connection is what limits agents per server; see
		// docs/architecture.md ("Agent wire").
		grpc.ReadBufferSize(0),
		grpc.WriteBufferSize(4<<10),
		grpc.SharedWriteBuffer(true),
		grpc.InitialWindowSize(64<<10),
		grpc.InitialConnWindowSize(64<<10),
		grpc.MaxRecvMsgSize(16<<20),
		grpc.MaxConcurrentStreams(16),
		grpc.MaxHeaderListSize(16<<10),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: o.KeepaliveTime, Timeout: o.KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	agentproto.RegisterAgentServer(e.grpc, svc)
	e.acceptor = newTLSAcceptor(o.Listener, o.TLS, o.HandshakeSlots, o.HandshakeQueue, o.HandshakeTimeout, o.Metrics, o.Log,
		func(c *tls.Conn) { e.handshaken.put(c) })
	return e
}

// serve runs until stopped; it returns nil then, or the listener's error.
func (e *agentEndpoint) serve() error {
	if e.lean != nil {
		if err := e.acceptor.run(); err != nil {
			e.close()
			return fmt.Errorf("agent listener: %w", err)
		}
		return nil
	}
	errc := make(chan error, 2)
	go func() { errc <- e.acceptor.run() }()
	go func() {
		err := e.grpc.Serve(e.handshaken)
		if errors.Is(err, grpc.ErrServerStopped) {
			err = nil
		}
		errc <- err
	}()
	err := <-errc
	if err != nil {
		e.close()
		return fmt.Errorf("agent listener: %w", err)
	}
	return <-errc
}

// stopAccepting stops taking new connections.
func (e *agentEndpoint) stopAccepting() { e.acceptor.close() }

// stop ends every connection: gracefully (GOAWAY, running calls finish)
// until ctx ends, then at once.
func (e *agentEndpoint) stop(ctx context.Context) {
	e.acceptor.close()
	if e.lean != nil {
		e.lean.Shutdown(ctx)
		return
	}
	stopped := make(chan struct{})
	go func() { e.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		e.grpc.Stop()
	}
}

// close ends everything at once.
func (e *agentEndpoint) close() {
	e.acceptor.close()
	if e.lean != nil {
		e.lean.Close()
		return
	}
	e.grpc.Stop()
	e.handshaken.Close()
}
