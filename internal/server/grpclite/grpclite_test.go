package grpclite

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/pki"
)

// The tests drive the server with the real grpc-go client (what agents
// use) and, for what a well-behaved client never does, with raw frames.

// testSvc implements the agent service for the tests.
type testSvc struct {
	agentproto.UnimplementedAgentServer
	sessions chan agentproto.Agent_SessionServer // each new Session stream, for pushing
	ended    chan error                          // each Session's end (its Recv error)
	deadline chan time.Time
	started  chan struct{}
}

func newTestSvc() *testSvc {
	return &testSvc{sessions: make(chan agentproto.Agent_SessionServer, 100), ended: make(chan error, 100),
		deadline: make(chan time.Time, 10), started: make(chan struct{}, 100)}
}

func (s *testSvc) Enroll(ctx context.Context, req *agentproto.EnrollRequest) (*agentproto.EnrollResponse, error) {
	s.started <- struct{}{}
	switch req.Token {
	case "echo":
		return &agentproto.EnrollResponse{ComputerId: req.Hostname, CertificateDer: req.CsrDer}, nil
	case "fail":
		return nil, status.Error(codes.PermissionDenied, req.Hostname)
	case "plain-error":
		return nil, errors.New("not a status")
	case "slow":
		d, _ := ctx.Deadline()
		s.deadline <- d
		<-ctx.Done()
		return nil, ctx.Err()
	case "peer":
		p, ok := peer.FromContext(ctx)
		if !ok {
			return nil, status.Error(codes.Internal, "no peer")
		}
		info := ""
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			info = fmt.Sprintf("tls %x %s", ti.State.Version, ti.State.NegotiatedProtocol)
		}
		return &agentproto.EnrollResponse{ComputerId: p.Addr.Network() + " " + info}, nil
	case "big":
		return &agentproto.EnrollResponse{CertificateDer: bytes.Repeat([]byte{7}, int(req.AgentVersion[0])<<20)}, nil
	}
	return nil, status.Error(codes.InvalidArgument, "unknown test token")
}

func (s *testSvc) Session(st agentproto.Agent_SessionServer) error {
	s.sessions <- st
	for {
		m, err := st.Recv()
		if err != nil {
			s.ended <- err
			if err == io.EOF {
				return status.Error(codes.Aborted, "bye")
			}
			return nil
		}
		switch {
		case m.GetHello() != nil:
			err = st.Send(&agentproto.ServerMessage{Msg: &agentproto.ServerMessage_Welcome{Welcome: &agentproto.Welcome{ComputerId: m.GetHello().Hostname}}})
		case m.GetCheckIn() != nil:
			ci := m.GetCheckIn()
			if ci.WakeId == "return" {
				return status.Error(codes.FailedPrecondition, "asked to return")
			}
			err = st.Send(&agentproto.ServerMessage{Msg: &agentproto.ServerMessage_Ack{Ack: &agentproto.Ack{Seq: ci.Seq,
				Rejected: []*agentproto.RejectedEvent{{Id: string(ci.SectionsGzip)}}}}})
		}
		if err != nil {
			return err
		}
	}
}

type fixture struct {
	srv  *Server
	svc  *testSvc
	addr string
	ln   net.Listener
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newFixture serves plaintext HTTP/2 (the client uses prior knowledge),
// or TLS with tlsCfg.
func newFixture(t *testing.T, o Options, tlsCfg *tls.Config) *fixture {
	t.Helper()
	if o.Log == nil {
		o.Log = quietLog()
	}
	f := &fixture{srv: NewServer(o), svc: newTestSvc()}
	agentproto.RegisterAgentServer(f.srv, f.svc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.ln, f.addr = ln, ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				var info credentials.AuthInfo
				if tlsCfg != nil {
					tc := tls.Server(c, tlsCfg)
					if tc.Handshake() != nil {
						c.Close()
						return
					}
					info = credentials.TLSInfo{State: tc.ConnectionState()}
					c = tc
				}
				f.srv.ServeConn(c, info)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.srv.Close()
	})
	return f
}

func (f *fixture) client(t *testing.T, opts ...grpc.DialOption) (agentproto.AgentClient, *grpc.ClientConn) {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20))}, opts...)
	cc, err := grpc.NewClient("passthrough:///"+f.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return agentproto.NewAgentClient(cc), cc
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestUnary_RequestAndResponseRoundTrip(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	c, _ := f.client(t)
	for i := range 3 { // several calls on one connection
		resp, err := c.Enroll(ctxT(t), &agentproto.EnrollRequest{Token: "echo", Hostname: fmt.Sprint("h", i), CsrDer: []byte{1, 2, 3}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.ComputerId != fmt.Sprint("h", i) || !bytes.Equal(resp.CertificateDer, []byte{1, 2, 3}) {
			t.Fatalf("response %v", resp)
		}
	}
	// An empty request message (zero bytes on the wire) works too.
	if _, err := c.Enroll(ctxT(t), &agentproto.EnrollRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty request: %v", err)
	}
}

func TestUnary_StatusCodesAndMessagesReachTheClient(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	c, _ := f.client(t)
	for _, msg := range []string{"plain", "ünïcødé and 100% / ✓", "line\nbreak", strings.Repeat("x", 3000)} {
		_, err := c.Enroll(ctxT(t), &agentproto.EnrollRequest{Token: "fail", Hostname: msg})
		if s := status.Convert(err); s.Code() != codes.PermissionDenied || s.Message() != msg {
			t.Errorf("got %v %q, want PermissionDenied %q", s.Code(), s.Message(), msg)
		}
	}
	_, err := c.Enroll(ctxT(t), &agentproto.EnrollRequest{Token: "plain-error"})
	if s := status.Convert(err); s.Code() != codes.Unknown || s.Message() != "not a status" {
		t.Errorf("a plain error: %v", err)
	}
}

func TestUnary_UnknownMethodIsUnimplemented(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	_, cc := f.client(t)
	err := cc.Invoke(ctxT(t), "/mamori.agent.v1.Agent/Nope", &agentproto.EnrollRequest{}, &agentproto.EnrollResponse{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("unknown method: %v", err)
	}
	err = cc.Invoke(ctxT(t), "/other.Service/Enroll", &agentproto.EnrollRequest{}, &agentproto.EnrollResponse{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("unknown service: %v", err)
	}
}

func TestUnary_DeadlineReachesTheHandlerAndEndsTheCall(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	c, _ := f.client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Enroll(ctx, &agentproto.EnrollRequest{Token: "slow"})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	d := <-f.svc.deadline
	if left := d.Sub(start); left <= 0 || left > 400*time.Millisecond {
		t.Errorf("handler deadline %s after the call began, want about 300ms", left)
	}
	// The connection is still good.
	if _, err := c.Enroll(ctxT(t), &agentproto.EnrollRequest{Token: "echo"}); err != nil {
		t.Fatal(err)
	}
}

func TestUnary_LargeMessagesBothWaysAndTheSizeLimit(t *testing.T) {
	f := newFixture(t, Options{MaxRecvMsgSize: 12 << 20}, nil)
	c, _ := f.client(t)
	for _, size := range []int{70 << 10, 1 << 20, 10 << 20} { // beyond every window
		big := bytes.Repeat([]byte("abcdefgh"), size/8)
		resp, err := c.Enroll(ctxT(t), &agentproto.EnrollRequest{Token: "echo", CsrDer: big})
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if !bytes.Equal(resp.CertificateDer, big) {
			t.Fatalf("%d bytes: echoed %d bytes", size, len(resp.CertificateDer))
		}
	}
	resp, err := c.Enroll(ctxT(t), &agentproto.EnrollRequest{Token: "big", AgentVersion: "\x05"})
	if err != nil || len(resp.CertificateDer) != 5<<20 {
		t.Fatalf("5 MiB response: %v", err)
	}
	_, err = c.Enroll(ctxT(t), &agentproto.EnrollRequest{Token: "echo", CsrDer: make([]byte, 13<<20)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("13 MiB with a 12 MiB limit: %v", err)
	}
	if _, err := c.Enroll(ctxT(t), &agentproto.EnrollRequest{Token: "echo"}); err != nil {
		t.Fatalf("after a refused message: %v", err)
	}
}

func TestUnary_TLSStateIsThePeersAuthInfo(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Options{}, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13})
	c, _ := f.client(t, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})))
	resp, err := c.Enroll(ctxT(t), &agentproto.EnrollRequest{Token: "peer"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ComputerId != "tcp tls 304 h2" {
		t.Errorf("handler saw peer %q", resp.ComputerId)
	}
}

func openSession(t *testing.T, c agentproto.AgentClient, ctx context.Context) agentproto.Agent_SessionClient {
	t.Helper()
	s, err := c.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Hello{Hello: &agentproto.Hello{Hostname: "x"}}}); err != nil {
		t.Fatal(err)
	}
	m, err := s.Recv()
	if err != nil || m.GetWelcome().GetComputerId() != "x" {
		t.Fatalf("welcome: %v %v", m, err)
	}
	return s
}

func checkIn(t *testing.T, s agentproto.Agent_SessionClient, seq uint64, tag string) {
	t.Helper()
	if err := s.Send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_CheckIn{CheckIn: &agentproto.CheckIn{Seq: seq, SectionsGzip: []byte(tag)}}}); err != nil {
		t.Fatal(err)
	}
	m, err := s.Recv()
	if err != nil || m.GetAck().GetSeq() != seq || m.GetAck().Rejected[0].Id != tag {
		t.Fatalf("ack %d: %v %v", seq, m, err)
	}
}

func TestSession_StreamsInOrderAndHalfCloseEndsIt(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	c, _ := f.client(t)
	s := openSession(t, c, ctxT(t))
	for i := range uint64(500) {
		checkIn(t, s, i+1, fmt.Sprint("tag", i))
	}
	// Pipelined: many in flight.
	for i := range uint64(200) {
		s.Send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_CheckIn{CheckIn: &agentproto.CheckIn{Seq: 1000 + i, SectionsGzip: []byte("p")}}})
	}
	for i := range uint64(200) {
		m, err := s.Recv()
		if err != nil || m.GetAck().GetSeq() != 1000+i {
			t.Fatalf("pipelined ack %d: %v %v", i, m, err)
		}
	}
	s.CloseSend()
	if _, err := s.Recv(); status.Code(err) != codes.Aborted || status.Convert(err).Message() != "bye" {
		t.Fatalf("after half-close: %v, want the handler's Aborted \"bye\"", err)
	}
	if err := <-f.svc.ended; err != io.EOF {
		t.Fatalf("handler's Recv after half-close: %v, want io.EOF", err)
	}
}

func TestSession_ServerPushesWhileTheHandlerWaitsInRecv(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	c, _ := f.client(t)
	s := openSession(t, c, ctxT(t))
	srv := <-f.svc.sessions
	var wg sync.WaitGroup
	for g := range 4 { // concurrent pushers, serialised as the hub does
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				pushMu.Lock()
				srv.Send(&agentproto.ServerMessage{Msg: &agentproto.ServerMessage_WakeUp{WakeUp: &agentproto.WakeUp{Id: fmt.Sprint(g, "-", i)}}})
				pushMu.Unlock()
			}
		}()
	}
	got := map[string]bool{}
	for len(got) < 200 {
		m, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got[m.GetWakeUp().GetId()] = true
	}
	wg.Wait()
	checkIn(t, s, 1, "after pushes")
}

var pushMu sync.Mutex

func TestSession_HandlerReturningEndsTheStreamWithItsStatus(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	c, _ := f.client(t)
	s := openSession(t, c, ctxT(t))
	s.Send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_CheckIn{CheckIn: &agentproto.CheckIn{WakeId: "return"}}})
	if _, err := s.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("got %v", err)
	}
	// The connection serves the next session (on the reading goroutine again).
	s2 := openSession(t, c, ctxT(t))
	checkIn(t, s2, 7, "second")
}

func TestSession_ClientCancelEndsTheHandlersRecv(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	c, _ := f.client(t)
	ctx, cancel := context.WithCancel(t.Context())
	s := openSession(t, c, ctx)
	checkIn(t, s, 1, "a")
	srv := <-f.svc.sessions
	cancel()
	select {
	case err := <-f.svc.ended:
		if status.Code(err) != codes.Canceled {
			t.Errorf("handler's Recv: %v, want Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not see the cancellation")
	}
	select {
	case <-srv.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's context was not canceled")
	}
	s2 := openSession(t, c, ctxT(t))
	checkIn(t, s2, 2, "b")
}

// Calls beside the one on the reading goroutine run on goroutines of their
// own and are fed by whoever reads.
func TestConcurrentCallsOnOneConnection(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	c, _ := f.client(t)
	sessions := make([]agentproto.Agent_SessionClient, 5)
	for i := range sessions {
		sessions[i] = openSession(t, c, ctxT(t))
	}
	var wg sync.WaitGroup
	var fails atomic.Int32
	for i, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range uint64(100) {
				tag := fmt.Sprint(i, "/", j)
				if s.Send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_CheckIn{CheckIn: &agentproto.CheckIn{Seq: j, SectionsGzip: []byte(tag)}}}) != nil {
					fails.Add(1)
					return
				}
				m, err := s.Recv()
				if err != nil || m.GetAck().GetSeq() != j || m.GetAck().Rejected[0].Id != tag {
					fails.Add(1)
					return
				}
			}
		}()
		for range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.Enroll(ctxT(t), &agentproto.EnrollRequest{Token: "echo", CsrDer: make([]byte, 100<<10)}); err != nil {
					fails.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	if fails.Load() > 0 {
		t.Fatalf("%d concurrent calls failed", fails.Load())
	}
	if n := f.srv.Connections(); n != 1 {
		t.Errorf("%d connections, want all calls on one", n)
	}
}

func TestMaxConcurrentStreamsRefusesTheExcess(t *testing.T) {
	f := newFixture(t, Options{MaxConcurrentStreams: 2}, nil)
	raw := dialRaw(t, f.addr)
	for id := uint32(1); id <= 5; id += 2 {
		raw.headers(id, false, raw.grpcHeaders("/mamori.agent.v1.Agent/Session"))
	}
	if code := raw.waitRST(t, 5); code != errCodeRefusedStream {
		t.Fatalf("third stream: RST code %d, want REFUSED_STREAM", code)
	}
}

func TestKeepalive_PingsAnIdleClientAndDropsOneThatNeverAnswers(t *testing.T) {
	f := newFixture(t, Options{KeepaliveTime: 100 * time.Millisecond, KeepaliveTimeout: 200 * time.Millisecond}, nil)
	// A grpc-go client answers pings: the connection stays.
	c, _ := f.client(t)
	s := openSession(t, c, ctxT(t))
	time.Sleep(700 * time.Millisecond)
	checkIn(t, s, 1, "still here")
	// A client that never answers is dropped.
	raw := dialRaw(t, f.addr)
	start := time.Now()
	pinged := false
	for {
		fr, err := raw.fr.ReadFrame()
		if err != nil {
			break
		}
		if p, ok := fr.(*http2.PingFrame); ok && !p.IsAck() {
			pinged = true
		}
	}
	if !pinged {
		t.Error("the server sent no PING")
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("dropped after %s, want about KeepaliveTime+KeepaliveTimeout = 300ms", d)
	}
}

func TestShutdown_GoAwayLetsRunningCallsFinish(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	c, _ := f.client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.Enroll(ctx, &agentproto.EnrollRequest{Token: "slow"})
		done <- err
	}()
	<-f.svc.started
	sctx, scancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer scancel()
	start := time.Now()
	f.srv.Shutdown(sctx)
	if err := <-done; status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("the running call ended with %v, want its own deadline", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %s", d)
	}
	if n := f.srv.Connections(); n != 0 {
		t.Errorf("%d connections left", n)
	}
}

func TestClientKeepaliveOnIdleConnectionIsAnswered(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	c, cc := f.client(t, grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: time.Second, PermitWithoutStream: true}))
	if _, err := c.Enroll(ctxT(t), &agentproto.EnrollRequest{Token: "echo"}); err != nil {
		t.Fatal(err)
	}
	raw := dialRaw(t, f.addr)
	raw.ping([8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	for {
		fr, err := raw.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := fr.(*http2.PingFrame); ok && p.IsAck() {
			if p.Data != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} {
				t.Errorf("PING ACK carries %v", p.Data)
			}
			break
		}
	}
	_ = cc
}
