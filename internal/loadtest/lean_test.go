package loadtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"

	"github.com/mamori/mamori/internal/agent"
	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/pki"
)

// The tests play the server with a scripted HTTP/2 peer (fakeServer) on
// one end of a net.Pipe, or of a TLS connection for the dialling tests.

const (
	testServer = "lean.test:443"
	testWait   = 5 * time.Second // the bound of every wait in these tests
)

// h2Frame is a frame the client sent, copied out of the framer's buffers.
type h2Frame struct {
	Type         http2.FrameType
	Flags        http2.Flags
	StreamID     uint32
	Data         []byte              // DATA payload, PING data, GOAWAY debug data
	Fields       []hpack.HeaderField // HEADERS, decoded
	ErrCode      http2.ErrCode       // RST_STREAM, GOAWAY
	LastStreamID uint32              // GOAWAY
	Incr         uint32              // WINDOW_UPDATE
	Settings     []http2.Setting
}

func (f h2Frame) String() string {
	s := fmt.Sprintf("%v frame on stream %d (flags %#x, %d bytes)", f.Type, f.StreamID, uint8(f.Flags), len(f.Data))
	switch f.Type {
	case http2.FrameRSTStream, http2.FrameGoAway:
		s += fmt.Sprintf(" code %v", f.ErrCode)
	case http2.FrameWindowUpdate:
		s += fmt.Sprintf(" +%d", f.Incr)
	}
	return s
}

func copyFrame(f http2.Frame) h2Frame {
	h := f.Header()
	out := h2Frame{Type: h.Type, Flags: h.Flags, StreamID: h.StreamID}
	switch f := f.(type) {
	case *http2.DataFrame:
		out.Data = bytes.Clone(f.Data())
	case *http2.MetaHeadersFrame:
		out.Fields = slices.Clone(f.Fields)
	case *http2.PingFrame:
		out.Data = bytes.Clone(f.Data[:])
	case *http2.RSTStreamFrame:
		out.ErrCode = f.ErrCode
	case *http2.GoAwayFrame:
		out.ErrCode, out.LastStreamID, out.Data = f.ErrCode, f.LastStreamID, bytes.Clone(f.DebugData())
	case *http2.WindowUpdateFrame:
		out.Incr = f.Increment
	case *http2.SettingsFrame:
		f.ForeachSetting(func(s http2.Setting) error { out.Settings = append(out.Settings, s); return nil })
	}
	return out
}

// fakeServer is the server's end of one connection. A goroutine reads the
// client's frames into in; the test goroutine writes crafted frames and
// takes the client's frames in order.
type fakeServer struct {
	t  *testing.T
	nc net.Conn
	fr *http2.Framer

	wmu  sync.Mutex
	enc  *hpack.Encoder
	hbuf bytes.Buffer

	in      chan h2Frame
	readErr error // why the reading ended; set before in is closed
	pending []h2Frame

	// What the server may still send (it honours the client's windows
	// in sendMessage), and the WINDOW_UPDATEs the client sent.
	connWin   int64
	streamWin map[uint32]int64
	updates   []h2Frame
}

func newFakeServer(t *testing.T, nc net.Conn) *fakeServer {
	s := &fakeServer{t: t, nc: nc, in: make(chan h2Frame, 4096), connWin: leanWindow, streamWin: map[uint32]int64{}}
	s.fr = http2.NewFramer(nc, nc)
	s.fr.SetMaxReadFrameSize(1<<24 - 1) // the tests check the sizes themselves
	s.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	s.enc = hpack.NewEncoder(&s.hbuf)
	t.Cleanup(func() { nc.Close() })
	go s.readLoop()
	return s
}

func (s *fakeServer) readLoop() {
	defer close(s.in)
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(s.nc, preface); err != nil {
		s.readErr = fmt.Errorf("reading the client preface: %w", err)
		return
	}
	if string(preface) != http2.ClientPreface {
		s.readErr = fmt.Errorf("client preface %q", preface)
		return
	}
	for {
		f, err := s.fr.ReadFrame()
		if err != nil {
			s.readErr = err
			return
		}
		s.in <- copyFrame(f)
	}
}

// pull returns the client's next frame; ok is false when the connection
// ended (readErr says how).
func (s *fakeServer) pull() (h2Frame, bool) {
	s.t.Helper()
	if len(s.pending) > 0 {
		f := s.pending[0]
		s.pending = s.pending[1:]
		return f, true
	}
	timer := time.NewTimer(testWait)
	defer timer.Stop()
	select {
	case f, ok := <-s.in:
		return f, ok
	case <-timer.C:
		s.t.Fatalf("timed out waiting for a frame from the client")
		return h2Frame{}, false
	}
}

func (s *fakeServer) credit(f h2Frame) {
	s.updates = append(s.updates, f)
	if f.StreamID == 0 {
		s.connWin += int64(f.Incr)
	} else {
		s.streamWin[f.StreamID] = s.streamWindow(f.StreamID) + int64(f.Incr)
	}
}

func (s *fakeServer) streamWindow(sid uint32) int64 {
	if w, ok := s.streamWin[sid]; ok {
		return w
	}
	return leanWindow
}

// next is the client's next frame but WINDOW_UPDATEs, which it credits.
func (s *fakeServer) next() h2Frame {
	s.t.Helper()
	for {
		f, ok := s.pull()
		if !ok {
			s.t.Fatalf("the client's connection ended: %v", s.readErr)
		}
		if f.Type == http2.FrameWindowUpdate {
			s.credit(f)
			continue
		}
		return f
	}
}

func (s *fakeServer) expect(typ http2.FrameType, sid uint32) h2Frame {
	s.t.Helper()
	f := s.next()
	if f.Type != typ || f.StreamID != sid {
		s.t.Fatalf("client sent a %v, want a %v frame on stream %d", f, typ, sid)
	}
	return f
}

func (s *fakeServer) expectRST(sid uint32, code http2.ErrCode) {
	s.t.Helper()
	if f := s.expect(http2.FrameRSTStream, sid); f.ErrCode != code {
		s.t.Fatalf("RST_STREAM %v, want %v", f.ErrCode, code)
	}
}

func (s *fakeServer) expectGoAway(code http2.ErrCode) {
	s.t.Helper()
	if f := s.expect(http2.FrameGoAway, 0); f.ErrCode != code {
		s.t.Fatalf("GOAWAY %v, want %v", f.ErrCode, code)
	}
}

// expectEnd waits for the client to close the connection, sending nothing
// more.
func (s *fakeServer) expectEnd() {
	s.t.Helper()
	for {
		f, ok := s.pull()
		if !ok {
			return
		}
		if f.Type != http2.FrameWindowUpdate {
			s.t.Fatalf("client sent a %v, want the connection closed", f)
		}
	}
}

// pingRoundTrip pings the client and wants the ACK as its next frame: the
// client sent nothing else before it.
func (s *fakeServer) pingRoundTrip() {
	s.t.Helper()
	var data [8]byte
	rand.Read(data[:])
	s.write(func() error { return s.fr.WritePing(false, data) })
	f := s.next()
	if f.Type != http2.FramePing || !f.Flags.Has(http2.FlagPingAck) || !bytes.Equal(f.Data, data[:]) {
		s.t.Fatalf("client sent a %v (data %x), want the PING ACK with %x", f, f.Data, data)
	}
}

func (s *fakeServer) tryWrite(compose func() error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.nc.SetWriteDeadline(time.Now().Add(testWait))
	return compose()
}

func (s *fakeServer) write(compose func() error) {
	s.t.Helper()
	if err := s.tryWrite(compose); err != nil {
		s.t.Fatalf("server write: %v", err)
	}
}

// handshake sends the server's SETTINGS, takes the client's and ACKs them,
// and waits for the client's ACK of its own (the client applies settings
// before it answers). Frames the client sent meanwhile (a session it is
// opening) are kept for next.
func (s *fakeServer) handshake(settings ...http2.Setting) {
	s.t.Helper()
	s.write(func() error { return s.fr.WriteSettings(settings...) })
	if f := s.expect(http2.FrameSettings, 0); f.Flags.Has(http2.FlagSettingsAck) || len(f.Settings) != 0 {
		s.t.Fatalf("client's first frame is %v with %v, want its (empty) SETTINGS", f, f.Settings)
	}
	s.write(func() error { return s.fr.WriteSettingsAck() })
	var meanwhile []h2Frame
	for {
		f := s.next()
		if f.Type == http2.FrameSettings {
			if !f.Flags.Has(http2.FlagSettingsAck) {
				s.t.Fatalf("client sent SETTINGS again, want the ACK of the server's")
			}
			break
		}
		meanwhile = append(meanwhile, f)
	}
	s.pending = append(meanwhile, s.pending...)
}

func (s *fakeServer) writeHeaders(sid uint32, endStream bool, kv ...string) {
	s.t.Helper()
	s.write(func() error {
		s.hbuf.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			s.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: s.hbuf.Bytes(), EndStream: endStream, EndHeaders: true})
	})
}

// respond sends a gRPC response's headers.
func (s *fakeServer) respond(sid uint32) {
	s.t.Helper()
	s.writeHeaders(sid, false, ":status", "200", "content-type", "application/grpc")
}

// trailers ends the stream with the given fields (grpc-status, ...).
func (s *fakeServer) trailers(sid uint32, kv ...string) {
	s.t.Helper()
	s.writeHeaders(sid, true, kv...)
}

func (s *fakeServer) writeData(sid uint32, end bool, p []byte) {
	s.t.Helper()
	s.connWin -= int64(len(p))
	s.streamWin[sid] = s.streamWindow(sid) - int64(len(p))
	s.write(func() error { return s.fr.WriteData(sid, end, p) })
}

// writeMsg sends server messages in one DATA frame.
func (s *fakeServer) writeMsg(sid uint32, ms ...*agentproto.ServerMessage) {
	s.t.Helper()
	var p []byte
	for _, m := range ms {
		p = append(p, framed(s.t, m)...)
	}
	s.writeData(sid, false, p)
}

// sendMessage sends m in DATA frames of at most chunk bytes within the
// client's windows, waiting for its WINDOW_UPDATEs (other frames are kept
// for next).
func (s *fakeServer) sendMessage(sid uint32, m proto.Message, chunk int) {
	s.t.Helper()
	p := framed(s.t, m)
	for len(p) > 0 {
		for s.connWin <= 0 || s.streamWindow(sid) <= 0 {
			f, ok := s.pull()
			if !ok {
				s.t.Fatalf("connection ended while the server waited for window: %v", s.readErr)
			}
			if f.Type == http2.FrameWindowUpdate {
				s.credit(f)
			} else {
				s.pending = append(s.pending, f)
			}
		}
		n := int(min(int64(chunk), int64(len(p)), s.connWin, s.streamWindow(sid)))
		s.writeData(sid, false, p[:n])
		p = p[n:]
	}
}

func (s *fakeServer) writeWindowUpdate(sid, incr uint32) {
	s.t.Helper()
	s.write(func() error { return s.fr.WriteWindowUpdate(sid, incr) })
}

func (s *fakeServer) writeRaw(p []byte) {
	s.t.Helper()
	s.write(func() error { _, err := s.nc.Write(p); return err })
}

// readMessage reads one gRPC message from the client's DATA frames on sid
// into m; it returns the bytes of DATA it took.
func (s *fakeServer) readMessage(sid uint32, m proto.Message) int {
	s.t.Helper()
	var buf []byte
	for len(buf) < 5 || len(buf) < 5+int(binary.BigEndian.Uint32(buf[1:5])) {
		f := s.expect(http2.FrameData, sid)
		if f.Flags.Has(http2.FlagDataEndStream) {
			s.t.Fatalf("client half-closed stream %d", sid)
		}
		buf = append(buf, f.Data...)
	}
	size := int(binary.BigEndian.Uint32(buf[1:5]))
	if buf[0] != 0 {
		s.t.Fatalf("client sent a compressed message")
	}
	if len(buf) != 5+size {
		s.t.Fatalf("client's DATA carried %d bytes past the message", len(buf)-5-size)
	}
	if err := proto.Unmarshal(buf[5:], m); err != nil {
		s.t.Fatalf("client sent a malformed message: %v", err)
	}
	return len(buf)
}

// framed is m with gRPC's 5-byte prefix (written here, not with the
// client's grpcMessage).
func framed(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(b))), b...)
}

func welcomeMsg() *agentproto.ServerMessage {
	return &agentproto.ServerMessage{Msg: &agentproto.ServerMessage_Welcome{Welcome: &agentproto.Welcome{
		CapabilityVersion: agentproto.CapabilityVersion, ComputerId: "computer-1", CheckInIntervalSeconds: 60,
		ServerTimeUnixMs: 1_700_000_000_000,
		SectionHashes:    []*agentproto.SectionHash{{Section: agentproto.Section_SECTION_SYSTEM, Hash: []byte{1, 2, 3}}},
	}}}
}

func ackMsg(seq uint64) *agentproto.ServerMessage {
	return &agentproto.ServerMessage{Msg: &agentproto.ServerMessage_Ack{Ack: &agentproto.Ack{Seq: seq}}}
}

func testHello() *agentproto.Hello {
	return &agentproto.Hello{CapabilityVersion: agentproto.CapabilityVersion, AgentVersion: "loadtest", HardwareFingerprint: "hw-1",
		SessionId: "session-1", Instance: "agent-1", Hostname: "agent-1", ConfigVersion: "v7"}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

type openResult struct {
	sess    agentSession
	welcome *agentproto.Welcome
	err     error
}

type recvResult struct {
	m   *agentproto.ServerMessage
	err error
}

func openAsync(ctx context.Context, l *leanClient, server string) <-chan openResult {
	ch := make(chan openResult, 1)
	go func() {
		s, w, err := l.OpenSession(ctx, server, testHello())
		ch <- openResult{s, w, err}
	}()
	return ch
}

func recvAsync(s agentSession) <-chan recvResult {
	ch := make(chan recvResult, 1)
	go func() {
		m, err := s.Recv()
		ch <- recvResult{m, err}
	}()
	return ch
}

func await[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	timer := time.NewTimer(testWait)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("the client did not return within %s", testWait)
		panic("unreachable")
	}
}

// notYet fails when ch already holds a value.
func notYet[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s returned early: %+v", what, v)
	default:
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 6*testWait)
	t.Cleanup(cancel)
	return ctx
}

var errTestRedial = errors.New("test: no second dial")

// pipeClient is a lean client whose connection is one end of a net.Pipe;
// a redial fails with errTestRedial and counts in dials.
func pipeClient(t *testing.T) (*leanClient, *leanConn, *fakeServer, *atomic.Int32) {
	cc, sc := net.Pipe()
	s := newFakeServer(t, sc)
	c, err := startLean(testServer, cc)
	if err != nil {
		t.Fatal(err)
	}
	dials := &atomic.Int32{}
	l := &leanClient{conn: c, dial: func(context.Context, string) (net.Conn, error) {
		dials.Add(1)
		return nil, errTestRedial
	}}
	t.Cleanup(l.Close)
	return l, c, s, dials
}

// welcomed opens a session on stream sid that the server welcomes.
func welcomed(t *testing.T, ctx context.Context, l *leanClient, s *fakeServer, sid uint32) agentSession {
	t.Helper()
	opened := openAsync(ctx, l, testServer)
	s.expect(http2.FrameHeaders, sid)
	var hello agentproto.AgentMessage
	s.readMessage(sid, &hello)
	s.respond(sid)
	s.writeMsg(sid, welcomeMsg())
	r := await(t, opened)
	if r.err != nil {
		t.Fatalf("OpenSession: %v", r.err)
	}
	if !proto.Equal(r.welcome, welcomeMsg().GetWelcome()) {
		t.Fatalf("welcome %v, want %v", r.welcome, welcomeMsg().GetWelcome())
	}
	return r.sess
}

// wantErr checks an error's code and that its message holds each of
// contains.
func wantErr(t *testing.T, err error, code errcode.Code, contains ...string) {
	t.Helper()
	var ce *errcode.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) has no code, want %s", err, err, code)
	}
	if ce.Code != code {
		t.Fatalf("error %v: code %s, want %s", err, ce.Code, code)
	}
	for _, c := range contains {
		if !strings.Contains(ce.Message, c) {
			t.Fatalf("error message %q does not contain %q", ce.Message, c)
		}
	}
}

// --- TLS set-up.

type testPKI struct {
	ca     *pki.CA
	server tls.Certificate
	client tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca, _, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.ServerCertificate(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "agent")
	if err != nil {
		t.Fatal(err)
	}
	ac, err := ca.SignAgentCSR(csr, "computer-1")
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{ca: ca, server: srv, client: tls.Certificate{Certificate: [][]byte{ac.DER}, PrivateKey: key}}
}

// tlsListener accepts TLS connections as the agent listener does (h2,
// a client certificate required); conns receives them.
func tlsListener(t *testing.T, cert tls.Certificate) (string, <-chan net.Conn) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"},
		ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	return ln.Addr().String(), acceptAll(t, ln)
}

func acceptAll(t *testing.T, ln net.Listener) <-chan net.Conn {
	conns := make(chan net.Conn, 8)
	go func() {
		defer close(conns)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range conns {
			c.Close()
		}
	})
	return conns
}

func tcpDial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// --- 1. Happy path.

// TestLeanSessionOverTLS: the session's request headers and hello, the
// welcome, PING and SETTINGS answered, a check-in, server messages in
// order (two in one frame, one over many frames and windows), and the
// server's MAX_FRAME_SIZE honoured.
func TestLeanSessionOverTLS(t *testing.T) {
	p := newTestPKI(t)
	addr, conns := tlsListener(t, p.server)
	l := newLeanClient(pki.Fingerprint(p.ca.Cert.Raw), p.ca.Cert, &p.client, tcpDial)
	t.Cleanup(l.Close)
	ctx := testCtx(t)

	opened := openAsync(ctx, l, addr)
	s := newFakeServer(t, await(t, conns))
	s.handshake()

	h := s.expect(http2.FrameHeaders, 1)
	if !h.Flags.Has(http2.FlagHeadersEndHeaders) || h.Flags.Has(http2.FlagHeadersEndStream) {
		t.Fatalf("request HEADERS flags %#x, want END_HEADERS without END_STREAM", uint8(h.Flags))
	}
	got := map[string]string{}
	for _, f := range h.Fields {
		if _, dup := got[f.Name]; dup {
			t.Fatalf("header %q sent twice", f.Name)
		}
		got[f.Name] = f.Value
	}
	for name, want := range map[string]string{
		":method": "POST", ":scheme": "https", ":path": "/mamori.agent.v1.Agent/Session", ":authority": addr,
		"content-type": "application/grpc", "te": "trailers", "user-agent": "mamori-loadtest",
	} {
		if got[name] != want {
			t.Errorf("header %s = %q, want %q", name, got[name], want)
		}
	}
	if len(got) != 7 {
		t.Errorf("request headers %v, want exactly the 7 above", got)
	}
	var hello agentproto.AgentMessage
	s.readMessage(1, &hello)
	if !proto.Equal(hello.GetHello(), testHello()) {
		t.Fatalf("hello %v, want %v", &hello, testHello())
	}

	s.respond(1)
	s.writeMsg(1, welcomeMsg())
	r := await(t, opened)
	if r.err != nil {
		t.Fatalf("OpenSession: %v", r.err)
	}
	if !proto.Equal(r.welcome, welcomeMsg().GetWelcome()) {
		t.Fatalf("welcome %v, want %v", r.welcome, welcomeMsg().GetWelcome())
	}
	sess := r.sess
	st, ok := sess.TLSState()
	if !ok || !st.HandshakeComplete || st.NegotiatedProtocol != "h2" || st.Version != tls.VersionTLS13 {
		t.Fatalf("TLSState = %+v, %v; want a TLS 1.3 h2 connection", st, ok)
	}
	if peer := s.nc.(*tls.Conn).ConnectionState().PeerCertificates; len(peer) == 0 || pki.ComputerID(peer[0]) != "computer-1" {
		t.Fatalf("server saw client certificates %v, want computer-1's", peer)
	}

	// PING and SETTINGS are answered (the server now takes 32 KiB frames).
	s.pingRoundTrip()
	s.write(func() error { return s.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 32 << 10}) })
	if f := s.expect(http2.FrameSettings, 0); !f.Flags.Has(http2.FlagSettingsAck) {
		t.Fatalf("client answered SETTINGS with SETTINGS, want an ACK")
	}

	ci := &agentproto.CheckIn{Seq: 1, Reason: agentproto.CheckInReason_CHECK_IN_REASON_STARTUP, WakeId: "w0", SectionsGzip: randomBytes(40 << 10)}
	sent := make(chan error, 1)
	go func() { sent <- sess.Send(ci) }()
	var buf []byte
	var largest int
	for want := len(framed(t, &agentproto.AgentMessage{Msg: &agentproto.AgentMessage_CheckIn{CheckIn: ci}})); len(buf) < want; {
		f := s.expect(http2.FrameData, 1)
		largest = max(largest, len(f.Data))
		buf = append(buf, f.Data...)
	}
	if err := await(t, sent); err != nil {
		t.Fatalf("Send: %v", err)
	}
	var gotCI agentproto.AgentMessage
	if err := proto.Unmarshal(buf[5:], &gotCI); err != nil || !proto.Equal(gotCI.GetCheckIn(), ci) {
		t.Fatalf("the check-in arrived changed (%v)", err)
	}
	if largest != 32<<10 {
		t.Fatalf("largest DATA frame %d bytes, want the server's MAX_FRAME_SIZE %d", largest, 32<<10)
	}

	// Server messages in order: two in one DATA frame, then a 100 KB
	// configuration over frames of 7000 bytes and the client's windows.
	conf := &agentproto.ServerMessage{Msg: &agentproto.ServerMessage_Configuration{Configuration: &agentproto.Configuration{
		Version: "v8", DocumentJson: randomBytes(100 << 10)}}}
	wake := &agentproto.ServerMessage{Msg: &agentproto.ServerMessage_WakeUp{WakeUp: &agentproto.WakeUp{Id: "wake-1", Reason: "test"}}}
	msgs := make(chan recvResult, 3)
	go func() {
		for range 3 {
			m, err := sess.Recv()
			msgs <- recvResult{m, err}
		}
	}()
	s.writeMsg(1, ackMsg(1), wake)
	s.sendMessage(1, conf, 7000)
	for i, want := range []*agentproto.ServerMessage{ackMsg(1), wake, conf} {
		r := await(t, msgs)
		if r.err != nil {
			t.Fatalf("Recv %d: %v", i, r.err)
		}
		if !proto.Equal(r.m, want) {
			t.Fatalf("Recv %d returned a %T, want %T (in order, intact)", i, r.m.Msg, want.Msg)
		}
	}
}

// TestLeanReassemblesBytewiseMessages: a message split at every byte,
// its prefix included, and padded frames.
func TestLeanReassemblesBytewiseMessages(t *testing.T) {
	l, _, s, _ := pipeClient(t)
	s.handshake()
	sess := welcomed(t, testCtx(t), l, s, 1)
	got := recvAsync(sess)
	for _, b := range framed(t, ackMsg(42)) {
		s.writeData(1, false, []byte{b})
	}
	if r := await(t, got); r.err != nil || r.m.GetAck().GetSeq() != 42 {
		t.Fatalf("Recv = %v, %v; want Ack 42", r.m, r.err)
	}
	got = recvAsync(sess)
	p := framed(t, ackMsg(43))
	s.write(func() error { return s.fr.WriteDataPadded(1, false, p[:3], make([]byte, 100)) })
	s.write(func() error { return s.fr.WriteDataPadded(1, false, p[3:], make([]byte, 7)) })
	if r := await(t, got); r.err != nil || r.m.GetAck().GetSeq() != 43 {
		t.Fatalf("Recv = %v, %v; want Ack 43", r.m, r.err)
	}
}

// --- 2. RetryLater.

// TestLeanRetryLaterKeepsTheConnection: RetryLater then status 0 is a
// *agent.RetryLaterError; the next session is stream 3 on the same TCP
// connection.
func TestLeanRetryLaterKeepsTheConnection(t *testing.T) {
	p := newTestPKI(t)
	addr, conns := tlsListener(t, p.server)
	l := newLeanClient(pki.Fingerprint(p.ca.Cert.Raw), p.ca.Cert, &p.client, tcpDial)
	t.Cleanup(l.Close)
	ctx := testCtx(t)

	opened := openAsync(ctx, l, addr)
	s := newFakeServer(t, await(t, conns))
	s.handshake()
	s.expect(http2.FrameHeaders, 1)
	var hello agentproto.AgentMessage
	s.readMessage(1, &hello)
	s.respond(1)
	s.writeMsg(1, &agentproto.ServerMessage{Msg: &agentproto.ServerMessage_RetryLater{RetryLater: &agentproto.RetryLater{
		RetryAfterMs: 1500, Reason: "server busy: too many agents connecting at once"}}})
	s.trailers(1, "grpc-status", "0")

	r := await(t, opened)
	var rl *agent.RetryLaterError
	if !errors.As(r.err, &rl) {
		t.Fatalf("OpenSession error %v (%T), want *agent.RetryLaterError", r.err, r.err)
	}
	if rl.After != 1500*time.Millisecond || rl.Reason != "server busy: too many agents connecting at once" || r.sess != nil {
		t.Fatalf("RetryLaterError %+v (session %v), want 1.5s and the server's reason", rl, r.sess)
	}
	if k := errKind(r.err); k != "retry_later" {
		t.Fatalf("errKind = %q, want retry_later", k)
	}

	opened = openAsync(ctx, l, addr)
	f := s.next()
	if f.Type == http2.FrameRSTStream && f.StreamID == 1 && f.ErrCode == http2.ErrCodeCancel {
		f = s.next() // the client gave up stream 1 before it read the trailers
	}
	if f.Type != http2.FrameHeaders || f.StreamID != 3 {
		t.Fatalf("second session: client sent a %v, want HEADERS on stream 3 of the same connection", f)
	}
	s.readMessage(3, &hello)
	if !proto.Equal(hello.GetHello(), testHello()) {
		t.Fatalf("second hello %v", &hello)
	}
	s.respond(3)
	s.writeMsg(3, welcomeMsg())
	if r := await(t, opened); r.err != nil {
		t.Fatalf("second OpenSession: %v", r.err)
	}
	select {
	case c := <-conns:
		t.Fatalf("client dialled a second connection from %v", c.RemoteAddr())
	default:
	}
}

// A RetryLater during a session (a server stopping on purpose) ends it:
// Recv returns *agent.RetryLaterError with the server's time, after the
// messages that came before it.
func TestLeanRetryLaterDuringASessionEndsIt(t *testing.T) {
	l, _, s, _ := pipeClient(t)
	s.handshake()
	sess := welcomed(t, testCtx(t), l, s, 1)
	s.writeMsg(1, &agentproto.ServerMessage{Msg: &agentproto.ServerMessage_WakeUp{WakeUp: &agentproto.WakeUp{Id: "w1"}}})
	s.writeMsg(1, &agentproto.ServerMessage{Msg: &agentproto.ServerMessage_RetryLater{RetryLater: &agentproto.RetryLater{
		RetryAfterMs: 7250, Reason: "server restarting"}}})
	m, err := sess.Recv()
	if err != nil || m.GetWakeUp().GetId() != "w1" {
		t.Fatalf("first Recv = %v, %v; want the wake-up sent before the RetryLater", m, err)
	}
	m, err = sess.Recv()
	var rl *agent.RetryLaterError
	if !errors.As(err, &rl) || m != nil {
		t.Fatalf("second Recv = %v, %v (%T); want no message and *agent.RetryLaterError", m, err, err)
	}
	if rl.After != 7250*time.Millisecond || rl.Reason != "server restarting" {
		t.Fatalf("RetryLaterError %+v, want 7.25s and the server's reason", rl)
	}
}

// TestLeanAnswerBeforeHello: a server that answers the stream before the
// hello could be sent (here: it opens no window for it) is heard, as with
// agent.Direct: its RetryLater or its refusal, not "closed the session".
func TestLeanAnswerBeforeHello(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(s *fakeServer)
		check  func(t *testing.T, err error)
	}{
		{"retry later", func(s *fakeServer) {
			s.respond(1)
			s.writeMsg(1, &agentproto.ServerMessage{Msg: &agentproto.ServerMessage_RetryLater{RetryLater: &agentproto.RetryLater{RetryAfterMs: 2000, Reason: "busy"}}})
			s.trailers(1, "grpc-status", "0")
		}, func(t *testing.T, err error) {
			var rl *agent.RetryLaterError
			if !errors.As(err, &rl) || rl.After != 2*time.Second || rl.Reason != "busy" {
				t.Fatalf("OpenSession error %v, want RetryLater 2s busy", err)
			}
		}},
		{"refused certificate", func(s *fakeServer) {
			s.writeHeaders(1, true, ":status", "200", "content-type", "application/grpc", "grpc-status", "7", "grpc-message", "certificate revoked")
		}, func(t *testing.T, err error) {
			wantErr(t, err, errcode.Forbidden, "certificate revoked")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, _, s, _ := pipeClient(t)
			s.handshake(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
			opened := openAsync(testCtx(t), l, testServer)
			s.expect(http2.FrameHeaders, 1)
			tc.answer(s)
			r := await(t, opened)
			tc.check(t, r.err)
			s.pingRoundTrip() // no hello, no reset of the ended stream
		})
	}
}

// --- 3. Flow control.

// TestLeanSendFlowControl: with INITIAL_WINDOW_SIZE 1000 a 5000-byte
// check-in waits for the stream's WINDOW_UPDATEs; a 100 KB one then waits
// for the connection's. The server checks the windows on every frame and,
// each time one is used up, that the client sends nothing more (a PING
// round trip) before it opens it again.
func TestLeanSendFlowControl(t *testing.T) {
	l, _, s, _ := pipeClient(t)
	s.handshake(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
	ctx := testCtx(t)
	opened := openAsync(ctx, l, testServer)
	s.expect(http2.FrameHeaders, 1)
	var hello agentproto.AgentMessage
	used := int64(s.readMessage(1, &hello))
	s.respond(1)
	s.writeMsg(1, welcomeMsg())
	r := await(t, opened)
	if r.err != nil {
		t.Fatal(r.err)
	}
	streamGranted, connGranted := int64(1000), int64(leanWindow)
	streamUsed, connUsed := used, used

	// receive takes one check-in, checking the windows and refilling
	// whichever ran out by grant.
	receive := func(ci *agentproto.CheckIn, streamGrant, connGrant uint32) (streamStalls, connStalls int) {
		t.Helper()
		sent := make(chan error, 1)
		go func() { sent <- r.sess.Send(ci) }()
		var buf []byte
		want := len(framed(t, &agentproto.AgentMessage{Msg: &agentproto.AgentMessage_CheckIn{CheckIn: ci}}))
		for len(buf) < want {
			f := s.expect(http2.FrameData, 1)
			if len(f.Data) > leanFrameSize {
				t.Fatalf("DATA frame of %d bytes, over the default MAX_FRAME_SIZE", len(f.Data))
			}
			streamUsed += int64(len(f.Data))
			connUsed += int64(len(f.Data))
			if streamUsed > streamGranted || connUsed > connGranted {
				t.Fatalf("client sent %d bytes on the stream (window %d), %d on the connection (window %d)",
					streamUsed, streamGranted, connUsed, connGranted)
			}
			buf = append(buf, f.Data...)
			if len(buf) == want {
				break
			}
			if streamUsed == streamGranted || connUsed == connGranted {
				notYet(t, sent, "Send")
				s.pingRoundTrip() // it stopped
				notYet(t, sent, "Send")
				if (streamUsed == streamGranted && streamGrant == 0) || (connUsed == connGranted && connGrant == 0) {
					t.Fatalf("a window ran out that should not (stream %d/%d, connection %d/%d)", streamUsed, streamGranted, connUsed, connGranted)
				}
				if streamUsed == streamGranted {
					streamStalls++
					s.writeWindowUpdate(1, streamGrant)
					streamGranted += int64(streamGrant)
				}
				if connUsed == connGranted {
					connStalls++
					s.writeWindowUpdate(0, connGrant)
					connGranted += int64(connGrant)
				}
			}
		}
		if err := await(t, sent); err != nil {
			t.Fatalf("Send: %v", err)
		}
		var got agentproto.AgentMessage
		if err := proto.Unmarshal(buf[5:], &got); err != nil || !proto.Equal(got.GetCheckIn(), ci) {
			t.Fatalf("check-in arrived changed (%v)", err)
		}
		return streamStalls, connStalls
	}

	small := &agentproto.CheckIn{Seq: 1, SectionsGzip: randomBytes(5000)}
	if ss, cs := receive(small, 1500, 0); ss < 3 || cs != 0 {
		t.Fatalf("5000 bytes in a 1000-byte window: %d stream stalls, %d connection stalls; want at least 3 and 0", ss, cs)
	}

	s.writeWindowUpdate(1, 1<<20) // the stream is no limit any more
	streamGranted += 1 << 20
	large := &agentproto.CheckIn{Seq: 2, SectionsGzip: randomBytes(100 << 10)}
	if ss, cs := receive(large, 0, 30000); ss != 0 || cs < 2 {
		t.Fatalf("100 KB in the connection window: %d stream stalls, %d connection stalls; want 0 and at least 2", ss, cs)
	}
}

// TestLeanRecvWindowUpdates: the client gives back what it received in
// WINDOW_UPDATEs of at least a quarter window, on the stream and on the
// connection, so a server that honours its 65535-byte windows never
// stalls on a 300 KB message.
func TestLeanRecvWindowUpdates(t *testing.T) {
	l, _, s, _ := pipeClient(t)
	s.handshake()
	sess := welcomed(t, testCtx(t), l, s, 1)
	conf := &agentproto.ServerMessage{Msg: &agentproto.ServerMessage_Configuration{Configuration: &agentproto.Configuration{
		Version: "big", DocumentJson: randomBytes(300 << 10)}}}
	got := recvAsync(sess)
	before := len(framed(t, welcomeMsg()))
	s.sendMessage(1, conf, leanFrameSize)
	r := await(t, got)
	if r.err != nil || !proto.Equal(r.m, conf) {
		t.Fatalf("Recv: %v, want the configuration intact", r.err)
	}
	s.pingRoundTrip() // takes the WINDOW_UPDATEs the client sent before it
	total := int64(before + len(framed(t, conf)))
	var streamCredit, connCredit int64
	for _, u := range s.updates {
		if u.Incr < leanWindowUpdateAt {
			t.Fatalf("WINDOW_UPDATE of %d bytes on stream %d, want at least %d", u.Incr, u.StreamID, leanWindowUpdateAt)
		}
		switch u.StreamID {
		case 0:
			connCredit += int64(u.Incr)
		case 1:
			streamCredit += int64(u.Incr)
		default:
			t.Fatalf("WINDOW_UPDATE on stream %d", u.StreamID)
		}
	}
	for name, credit := range map[string]int64{"stream": streamCredit, "connection": connCredit} {
		if credit > total || credit <= total-leanWindowUpdateAt {
			t.Fatalf("%s credit %d for %d bytes received: want all but less than a quarter window given back, never more", name, credit, total)
		}
	}
}

// --- 4. Status mapping.

func TestLeanStatusMapping(t *testing.T) {
	for _, tc := range []struct {
		name     string
		trailers []string
		code     errcode.Code
		msg      string // exact message, or
		contains string // part of it
		kind     string // errKind
		retry    bool   // agent.ReconnectDelay retries
	}{
		{name: "unauthenticated", trailers: []string{"grpc-status", "16", "grpc-message", "certificate unknown"},
			code: errcode.Unauthorized, msg: "certificate unknown", kind: "unauthorized"},
		{name: "permission denied", trailers: []string{"grpc-status", "7", "grpc-message", "computer has been removed from management"},
			code: errcode.Forbidden, msg: "computer has been removed from management", kind: "forbidden"},
		{name: "unavailable, percent-encoded", trailers: []string{"grpc-status", "14", "grpc-message", "draining%3A server%20shutting down %E2%9C%93"},
			code: errcode.Unavailable, msg: "server " + testServer + " unreachable: draining: server shutting down ✓", kind: "unavailable", retry: true},
		{name: "bad percent-encoding kept", trailers: []string{"grpc-status", "14", "grpc-message", "100%"},
			code: errcode.Unavailable, contains: "unreachable: 100%", retry: true},
		{name: "resource exhausted", trailers: []string{"grpc-status", "8", "grpc-message", "too many"},
			code: errcode.TooManyRequests, msg: "too many", kind: "too_many_requests", retry: true},
		{name: "ok", trailers: []string{"grpc-status", "0"},
			code: errcode.Unavailable, msg: "server " + testServer + " closed the session", kind: "connection_lost", retry: true},
		{name: "no status", trailers: []string{"grpc-message", "bye"},
			code: errcode.Unavailable, contains: "without a status", retry: true},
		{name: "unparsable status", trailers: []string{"grpc-status", "x"},
			code: errcode.Unavailable, contains: "without a status", retry: true},
		{name: "unknown status", trailers: []string{"grpc-status", "99", "grpc-message", "what"},
			code: errcode.Internal, msg: "what", retry: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, _, s, _ := pipeClient(t)
			s.handshake()
			sess := welcomed(t, testCtx(t), l, s, 1)
			got := recvAsync(sess)
			s.trailers(1, tc.trailers...)
			r := await(t, got)
			if r.m != nil {
				t.Fatalf("Recv returned %v, want the stream's end", r.m)
			}
			wantErr(t, r.err, tc.code, tc.contains)
			if tc.msg != "" && errcode.Message(r.err) != tc.msg {
				t.Fatalf("message %q, want %q", errcode.Message(r.err), tc.msg)
			}
			if tc.kind != "" && errKind(r.err) != tc.kind {
				t.Fatalf("errKind = %q, want %q", errKind(r.err), tc.kind)
			}
			if _, retry := agent.ReconnectDelay(r.err, 0); retry != tc.retry {
				t.Fatalf("ReconnectDelay retries = %v, want %v", retry, tc.retry)
			}
			// The stream is over: Send says so, Recv repeats the reason.
			wantErr(t, sess.Send(&agentproto.CheckIn{Seq: 2}), errcode.Unavailable, "closed the session")
			if _, err := sess.Recv(); err != r.err {
				t.Fatalf("second Recv: %v, want %v again", err, r.err)
			}
		})
	}
}

// TestLeanTrailersOnlyRefusal: a trailers-only answer to the session is
// OpenSession's error.
func TestLeanTrailersOnlyRefusal(t *testing.T) {
	l, _, s, _ := pipeClient(t)
	s.handshake()
	opened := openAsync(testCtx(t), l, testServer)
	s.expect(http2.FrameHeaders, 1)
	var hello agentproto.AgentMessage
	s.readMessage(1, &hello)
	s.writeHeaders(1, true, ":status", "200", "content-type", "application/grpc", "grpc-status", "16", "grpc-message", "certificate%20unknown")
	r := await(t, opened)
	wantErr(t, r.err, errcode.Unauthorized)
	if errcode.Message(r.err) != "certificate unknown" || r.sess != nil {
		t.Fatalf("OpenSession = %v, %v; want unauthorized: certificate unknown", r.sess, r.err)
	}
	if _, retry := agent.ReconnectDelay(r.err, 3); retry {
		t.Fatal("ReconnectDelay retries an unauthorized agent")
	}
	s.pingRoundTrip() // nothing to reset: the server ended the stream
}

// --- 5. Hostile server input.

func TestLeanHostileServer(t *testing.T) {
	dataHeader := func(length int) []byte {
		return []byte{byte(length >> 16), byte(length >> 8), byte(length), byte(http2.FrameData), 0, 0, 0, 0, 1}
	}
	for _, tc := range []struct {
		name     string
		send     func(s *fakeServer)
		code     errcode.Code
		contains []string
		kind     string
		after    func(t *testing.T, s *fakeServer, c *leanConn)
	}{
		{name: "compressed flag", send: func(s *fakeServer) {
			s.writeData(1, false, []byte{1, 0, 0, 0, 2, 0x08, 0x01})
		}, code: errcode.Invalid, contains: []string{"compressed"}, after: streamResetConnLives},
		{name: "length over 16 MiB", send: func(s *fakeServer) {
			s.writeData(1, false, []byte{0, 0x01, 0, 0, 0x01})
		}, code: errcode.Invalid, contains: []string{"16777217 bytes"}, after: streamResetConnLives},
		{name: "malformed protobuf", send: func(s *fakeServer) {
			s.writeData(1, false, []byte{0, 0, 0, 0, 3, 0x0a, 0x05, 0x01})
		}, code: errcode.Invalid, contains: []string{"malformed"}, after: streamResetConnLives},
		{name: "frame over 16 KiB", send: func(s *fakeServer) {
			// Only the header of a 16 MiB frame: a client that read (or
			// allocated) the payload would wait for it.
			s.writeRaw(dataHeader(1<<24 - 1))
		}, code: errcode.Unavailable, contains: []string{"protocol error", "frame too large"}, after: goAwayAndClose},
		{name: "RST_STREAM", send: func(s *fakeServer) {
			s.write(func() error { return s.fr.WriteRSTStream(1, http2.ErrCodeRefusedStream) })
		}, code: errcode.Unavailable, contains: []string{"stream reset (REFUSED_STREAM)"}, after: func(t *testing.T, s *fakeServer, c *leanConn) {
			s.pingRoundTrip() // no reset back, and the connection serves on
			if !c.usable() {
				t.Fatal("connection unusable after a stream reset")
			}
		}},
		{name: "GOAWAY below the stream", send: func(s *fakeServer) {
			s.write(func() error { return s.fr.WriteGoAway(0, http2.ErrCodeNo, nil) })
		}, code: errcode.Unavailable, contains: []string{"closed the session"}, kind: "connection_lost"},
		{name: "closed mid-message", send: func(s *fakeServer) {
			s.writeData(1, false, framed(s.t, welcomeMsg())[:20])
			s.nc.Close()
		}, code: errcode.Unavailable, contains: []string{"closed the session"}, kind: "connection_lost"},
		{name: "closed mid-frame", send: func(s *fakeServer) {
			s.writeRaw(append(dataHeader(100), 0, 0, 0, 0, 90))
			s.nc.Close()
		}, code: errcode.Unavailable, contains: []string{"connection lost", "unexpected EOF"}, kind: "connection_lost"},
		{name: "DATA ends the stream", send: func(s *fakeServer) {
			s.writeData(1, true, nil)
		}, code: errcode.Unavailable, contains: []string{"without a status"}},
		{name: "SETTINGS window over 2^31-1", send: func(s *fakeServer) {
			s.write(func() error {
				return s.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
			})
		}, code: errcode.Unavailable, contains: []string{"protocol error"}, after: goAwayAndClose},
		{name: "SETTINGS max frame size below 16 KiB", send: func(s *fakeServer) {
			s.write(func() error { return s.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 100}) })
		}, code: errcode.Unavailable, contains: []string{"protocol error"}, after: goAwayAndClose},
		{name: "undecodable header block", send: func(s *fakeServer) {
			s.write(func() error {
				return s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff}, EndStream: true, EndHeaders: true})
			})
		}, code: errcode.Unavailable, contains: []string{"protocol error"}, after: goAwayAndClose},
		{name: "DATA on stream 0", send: func(s *fakeServer) {
			s.write(func() error { return s.fr.WriteRawFrame(http2.FrameData, 0, 0, []byte{1}) })
		}, code: errcode.Unavailable, contains: []string{"protocol error"}, after: goAwayAndClose},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, c, s, _ := pipeClient(t)
			s.handshake()
			sess := welcomed(t, testCtx(t), l, s, 1)
			got := recvAsync(sess)
			tc.send(s)
			r := await(t, got)
			if r.m != nil {
				t.Fatalf("Recv returned %v, want an error", r.m)
			}
			wantErr(t, r.err, tc.code, tc.contains...)
			if tc.kind != "" && errKind(r.err) != tc.kind {
				t.Fatalf("errKind = %q, want %q", errKind(r.err), tc.kind)
			}
			if tc.after != nil {
				tc.after(t, s, c)
			}
		})
	}
}

// streamResetConnLives: the client reset the stream for a protocol error
// and the connection still serves.
func streamResetConnLives(t *testing.T, s *fakeServer, c *leanConn) {
	s.expectRST(1, http2.ErrCodeProtocol)
	s.pingRoundTrip()
	if !c.usable() {
		t.Fatal("a stream error made the connection unusable")
	}
}

// goAwayAndClose: the client ended the connection with GOAWAY
// PROTOCOL_ERROR.
func goAwayAndClose(t *testing.T, s *fakeServer, c *leanConn) {
	s.expectGoAway(http2.ErrCodeProtocol)
	s.expectEnd()
	if c.usable() {
		t.Fatal("failed connection still usable")
	}
}

// TestLeanGoAway: a GOAWAY that covers the stream lets it finish; the
// next session dials afresh either way.
func TestLeanGoAway(t *testing.T) {
	for _, last := range []uint32{0, 1} {
		t.Run(fmt.Sprintf("last stream %d", last), func(t *testing.T) {
			l, c, s, dials := pipeClient(t)
			s.handshake()
			ctx := testCtx(t)
			sess := welcomed(t, ctx, l, s, 1)
			got := recvAsync(sess)
			s.write(func() error { return s.fr.WriteGoAway(last, http2.ErrCodeNo, []byte("restarting")) })
			if last == 1 {
				s.pingRoundTrip() // the GOAWAY was read
				notYet(t, got, "Recv on a stream the GOAWAY covers")
				s.writeMsg(1, ackMsg(5))
				if r := await(t, got); r.err != nil || r.m.GetAck().GetSeq() != 5 {
					t.Fatalf("Recv = %v, %v; want the covered stream's Ack", r.m, r.err)
				}
			} else {
				r := await(t, got)
				wantErr(t, r.err, errcode.Unavailable, "closed the session")
			}
			if c.usable() {
				t.Fatal("connection still usable after GOAWAY")
			}
			_, _, err := l.OpenSession(ctx, testServer, testHello())
			wantErr(t, err, errcode.Unavailable, errTestRedial.Error())
			if dials.Load() != 1 {
				t.Fatalf("%d dials after GOAWAY, want 1", dials.Load())
			}
		})
	}
}

// TestLeanHTTPStatusNot200: a non-gRPC answer fails OpenSession and
// resets the stream.
func TestLeanHTTPStatusNot200(t *testing.T) {
	l, c, s, _ := pipeClient(t)
	s.handshake()
	opened := openAsync(testCtx(t), l, testServer)
	s.expect(http2.FrameHeaders, 1)
	var hello agentproto.AgentMessage
	s.readMessage(1, &hello)
	s.writeHeaders(1, false, ":status", "500", "content-type", "text/html")
	r := await(t, opened)
	wantErr(t, r.err, errcode.Unavailable, `answered HTTP status "500"`)
	s.expectRST(1, http2.ErrCodeCancel)
	s.writeData(1, true, []byte("<html>oops</html>")) // late data of the reset stream is ignored
	s.pingRoundTrip()
	if !c.usable() {
		t.Fatal("connection unusable after a stream's HTTP error")
	}
}

// --- 6. Dial errors.

func TestLeanDialRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := newTestPKI(t)
	l := newLeanClient(pki.Fingerprint(p.ca.Cert.Raw), p.ca.Cert, &p.client, tcpDial)
	defer l.Close()
	_, _, err = l.OpenSession(testCtx(t), addr, testHello())
	var refused *agent.RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("error %v (%T), want *agent.RefusedError", err, err)
	}
	wantErr(t, err, errcode.Unavailable, addr, "connection refused")
	if k := errKind(err); k != "connection_refused" {
		t.Fatalf("errKind = %q, want connection_refused", k)
	}
	if _, retry := agent.ReconnectDelay(err, 0); !retry {
		t.Fatal("ReconnectDelay gives up on a refused connection")
	}
}

// TestLeanDialUntrustedServer: a server certificate from another CA.
// Pinning by fingerprint alone (as before enrollment) it is the pin's
// Forbidden; with the CA known (as the load harness dials) it is a failed
// handshake, as agent.Direct reports it (pki's VerifyPinnedServer returns
// a PinMismatchError only for the former).
func TestLeanDialUntrustedServer(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t)
	addr, conns := tlsListener(t, other.server)
	go func() { // complete the server's side of the handshakes
		for c := range conns {
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	pin := pki.Fingerprint(p.ca.Cert.Raw)

	l := newLeanClient(pin, nil, &p.client, tcpDial)
	defer l.Close()
	_, _, err := l.OpenSession(testCtx(t), addr, testHello())
	wantErr(t, err, errcode.Forbidden, "is not trusted", pin)
	if _, retry := agent.ReconnectDelay(err, 0); retry {
		t.Fatal("ReconnectDelay retries a server that fails the pin")
	}

	l2 := newLeanClient(pin, p.ca.Cert, &p.client, tcpDial)
	defer l2.Close()
	_, _, err = l2.OpenSession(testCtx(t), addr, testHello())
	wantErr(t, err, errcode.Unavailable, "tls handshake", "not signed by the pinned CA")
	if k := errKind(err); k != "tls_handshake" {
		t.Fatalf("errKind = %q, want tls_handshake", k)
	}
}

// TestLeanHandshakeTimeout: a server that accepts TCP but never answers
// the TLS handshake fails the dial within leanHandshake.
func TestLeanHandshakeTimeout(t *testing.T) {
	if leanHandshake != 20*time.Second {
		t.Fatalf("leanHandshake = %s, want grpc-go's 20s", leanHandshake)
	}
	defer func(d time.Duration) { leanHandshake = d }(leanHandshake)
	leanHandshake = 300 * time.Millisecond

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	acceptAll(t, ln) // accepted, never read
	p := newTestPKI(t)
	l := newLeanClient(pki.Fingerprint(p.ca.Cert.Raw), p.ca.Cert, &p.client, tcpDial)
	defer l.Close()
	ctx := testCtx(t)
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, _, err := l.OpenSession(ctx, ln.Addr().String(), testHello())
		done <- err
	}()
	err = await(t, done)
	if el := time.Since(start); el < leanHandshake {
		t.Fatalf("failed after %s, before the handshake bound", el)
	}
	wantErr(t, err, errcode.Unavailable, "tls handshake")
	if k := errKind(err); k != "tls_handshake" {
		t.Fatalf("errKind = %q, want tls_handshake", k)
	}
}

// --- 7. Context and Close.

func TestLeanContextCancel(t *testing.T) {
	t.Run("blocked Recv", func(t *testing.T) {
		l, c, s, _ := pipeClient(t)
		s.handshake()
		ctx, cancel := context.WithCancel(testCtx(t))
		sess := welcomed(t, ctx, l, s, 1)
		got := recvAsync(sess)
		s.pingRoundTrip()
		notYet(t, got, "Recv")
		cancel()
		if r := await(t, got); !errors.Is(r.err, context.Canceled) || r.m != nil {
			t.Fatalf("Recv = %v, %v; want context.Canceled", r.m, r.err)
		}
		s.expectRST(1, http2.ErrCodeCancel)
		if !c.usable() {
			t.Fatal("a cancelled stream made the connection unusable")
		}
		welcomed(t, testCtx(t), l, s, 3) // the connection serves on
	})
	t.Run("waiting for welcome", func(t *testing.T) {
		l, _, s, _ := pipeClient(t)
		s.handshake()
		ctx, cancel := context.WithCancel(testCtx(t))
		opened := openAsync(ctx, l, testServer)
		s.expect(http2.FrameHeaders, 1)
		var hello agentproto.AgentMessage
		s.readMessage(1, &hello)
		cancel()
		if r := await(t, opened); !errors.Is(r.err, context.Canceled) || r.sess != nil {
			t.Fatalf("OpenSession = %v, %v; want context.Canceled", r.sess, r.err)
		}
		s.expectRST(1, http2.ErrCodeCancel)
		s.pingRoundTrip()
	})
}

func TestLeanClose(t *testing.T) {
	t.Run("live stream", func(t *testing.T) {
		l, _, s, _ := pipeClient(t)
		s.handshake()
		sess := welcomed(t, testCtx(t), l, s, 1)
		sess.Close()
		s.expectRST(1, http2.ErrCodeCancel)
		_, err := sess.Recv()
		wantErr(t, err, errcode.Unavailable, "session closed")
		wantErr(t, sess.Send(&agentproto.CheckIn{Seq: 1}), errcode.Unavailable, "closed the session")
		sess.Close() // twice: nothing more
		s.pingRoundTrip()
	})
	t.Run("ended by the server", func(t *testing.T) {
		l, _, s, _ := pipeClient(t)
		s.handshake()
		sess := welcomed(t, testCtx(t), l, s, 1)
		got := recvAsync(sess)
		s.trailers(1, "grpc-status", "0")
		await(t, got)
		sess.Close()
		s.pingRoundTrip() // no RST_STREAM came before the ACK
	})
}

// --- 8. Concurrency.

// TestLeanConcurrentSendRecv: check-ins from one goroutine, acks read in
// another, while the server pings and hands back windows; then Close
// wakes a Send blocked on flow control and a blocked Recv.
func TestLeanConcurrentSendRecv(t *testing.T) {
	l, _, s, _ := pipeClient(t)
	s.handshake()
	sess := welcomed(t, testCtx(t), l, s, 1)
	const n = 100

	sendErr := make(chan error, 1)
	go func() {
		for i := uint64(1); i <= n; i++ {
			if err := sess.Send(&agentproto.CheckIn{Seq: i, WakeId: strings.Repeat("w", 1000)}); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	acks := make(chan recvResult, n)
	go func() {
		for range n {
			m, err := sess.Recv()
			acks <- recvResult{m, err}
			if err != nil {
				return
			}
		}
	}()

	pings := map[string]bool{}
	var buf []byte
	for seq := uint64(1); seq <= n || len(pings) > 0; {
		f := s.next()
		switch {
		case f.Type == http2.FramePing && f.Flags.Has(http2.FlagPingAck):
			if !pings[string(f.Data)] {
				t.Fatalf("PING ACK %x for no PING", f.Data)
			}
			delete(pings, string(f.Data))
		case f.Type == http2.FrameData && f.StreamID == 1 && seq <= n:
			buf = append(buf, f.Data...)
			for len(buf) >= 5 && len(buf) >= 5+int(binary.BigEndian.Uint32(buf[1:5])) {
				size := 5 + int(binary.BigEndian.Uint32(buf[1:5]))
				var m agentproto.AgentMessage
				if err := proto.Unmarshal(buf[5:size], &m); err != nil || m.GetCheckIn().GetSeq() != seq {
					t.Fatalf("check-in %d: got %v (%v)", seq, &m, err)
				}
				buf = buf[size:]
				s.writeMsg(1, ackMsg(seq))
				s.writeWindowUpdate(1, uint32(size))
				s.writeWindowUpdate(0, uint32(size))
				if seq%10 == 0 {
					data := [8]byte{byte(seq)}
					pings[string(data[:])] = true
					s.write(func() error { return s.fr.WritePing(false, data) })
				}
				seq++
			}
		default:
			t.Fatalf("client sent a %v", f)
		}
	}
	if err := await(t, sendErr); err != nil {
		t.Fatalf("Send: %v", err)
	}
	for i := uint64(1); i <= n; i++ {
		if r := await(t, acks); r.err != nil || r.m.GetAck().GetSeq() != i {
			t.Fatalf("ack %d: %v, %v", i, r.m, r.err)
		}
	}

	// Use up the windows (all was given back but the hello's bytes): the
	// next Send blocks, as does Recv.
	free := leanWindow - len(framed(t, &agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Hello{Hello: testHello()}}))
	blocked := make(chan error, 1)
	go func() {
		blocked <- sess.Send(&agentproto.CheckIn{Seq: n + 1, SectionsGzip: randomBytes(2 * leanWindow)})
	}()
	got := recvAsync(sess)
	for used := 0; used < free; {
		f := s.expect(http2.FrameData, 1)
		used += len(f.Data)
	}
	s.pingRoundTrip()
	notYet(t, blocked, "Send without window")
	notYet(t, got, "Recv")
	sess.Close()
	wantErr(t, await(t, blocked), errcode.Unavailable, "closed the session")
	wantErr(t, await(t, got).err, errcode.Unavailable, "session closed")
	s.expectRST(1, http2.ErrCodeCancel)
}

// TestLeanClientClose: closing the client ends its session.
func TestLeanClientClose(t *testing.T) {
	l, _, s, _ := pipeClient(t)
	s.handshake()
	sess := welcomed(t, testCtx(t), l, s, 1)
	got := recvAsync(sess)
	l.Close()
	wantErr(t, await(t, got).err, errcode.Unavailable, "client closed")
	s.expectEnd()
}

// --- 9. Fuzzing the server's bytes.

// fuzzSeed composes server frames for the seed corpus.
func fuzzSeed(compose func(fr *http2.Framer, hdrs func(kv ...string) []byte)) []byte {
	var out, hb bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	enc := hpack.NewEncoder(&hb)
	compose(fr, func(kv ...string) []byte {
		hb.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return bytes.Clone(hb.Bytes())
	})
	return out.Bytes()
}

func mustFrame(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(b))), b...)
}

func headersParam(sid uint32, block []byte, end bool) http2.HeadersFrameParam {
	return http2.HeadersFrameParam{StreamID: sid, BlockFragment: block, EndStream: end, EndHeaders: true}
}

// FuzzLeanServerBytes: after the preface exchange and the client's hello,
// the server writes arbitrary bytes and closes the connection; OpenSession
// and Recv end with a message or an error with a code, in bounded time.
func FuzzLeanServerBytes(f *testing.F) {
	resp := []string{":status", "200", "content-type", "application/grpc"}
	welcome := fuzzSeed(func(fr *http2.Framer, h func(...string) []byte) {
		fr.WriteHeaders(headersParam(1, h(resp...), false))
		fr.WriteData(1, false, mustFrame(welcomeMsg()))
		fr.WriteData(1, false, mustFrame(ackMsg(1)))
		fr.WriteHeaders(headersParam(1, h("grpc-status", "14", "grpc-message", "bye%20now"), true))
	})
	f.Add(welcome)
	f.Add(fuzzSeed(func(fr *http2.Framer, h func(...string) []byte) {
		fr.WriteHeaders(headersParam(1, h(resp...), false))
		fr.WriteData(1, false, mustFrame(&agentproto.ServerMessage{Msg: &agentproto.ServerMessage_RetryLater{RetryLater: &agentproto.RetryLater{RetryAfterMs: 1000, Reason: "busy"}}}))
		fr.WriteHeaders(headersParam(1, h("grpc-status", "0"), true))
	}))
	f.Add(fuzzSeed(func(fr *http2.Framer, h func(...string) []byte) {
		fr.WriteHeaders(headersParam(1, h(append(resp, "grpc-status", "16", "grpc-message", "certificate%20unknown")...), true))
	}))
	for _, cut := range []int{1, 9, 12, len(welcome) / 2, len(welcome) - 3} {
		f.Add(welcome[:cut])
	}
	f.Add(fuzzSeed(func(fr *http2.Framer, h func(...string) []byte) {
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 20000})
		fr.WritePing(false, [8]byte{1, 2, 3})
		fr.WriteWindowUpdate(0, 100)
		fr.WriteWindowUpdate(1, 100)
		fr.WritePriority(1, http2.PriorityParam{Weight: 5})
		block := h(resp...)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:2]})
		fr.WriteContinuation(1, true, block[2:])
		p := mustFrame(welcomeMsg())
		fr.WriteDataPadded(1, false, p[:4], []byte{0, 0})
		fr.WriteData(1, false, p[4:])
		fr.WriteRawFrame(0x42, 0, 1, []byte("unknown frame type"))
		fr.WriteGoAway(1, http2.ErrCodeNo, []byte("restart"))
		fr.WriteRSTStream(1, http2.ErrCodeInternal)
	}))
	f.Add(fuzzSeed(func(fr *http2.Framer, h func(...string) []byte) {
		fr.WriteHeaders(headersParam(1, h(resp...), false))
		fr.WriteData(1, false, []byte{1, 0, 0, 0, 1, 0})
		fr.WriteData(1, false, []byte{0, 0xff, 0xff, 0xff, 0xff})
	}))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, b []byte) {
		cc, sc := net.Pipe()
		defer cc.Close()
		srvDone := make(chan struct{})
		go func() {
			defer close(srvDone)
			defer sc.Close()
			sc.SetDeadline(time.Now().Add(testWait))
			if _, err := io.ReadFull(sc, make([]byte, len(http2.ClientPreface))); err != nil {
				return
			}
			fr := http2.NewFramer(sc, sc)
			fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			if _, err := fr.ReadFrame(); err != nil { // the client's SETTINGS
				return
			}
			if fr.WriteSettings() != nil {
				return
			}
			for { // until the hello
				f, err := fr.ReadFrame()
				if err != nil {
					return
				}
				if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
					break
				}
			}
			drained := make(chan struct{})
			go func() {
				defer close(drained)
				for {
					if _, err := fr.ReadFrame(); err != nil {
						return
					}
				}
			}()
			sc.Write(b)
			sc.Close()
			<-drained
		}()
		c, err := startLean("fuzz", cc)
		if err != nil {
			t.Fatalf("startLean: %v", err)
		}
		l := &leanClient{conn: c, dial: func(context.Context, string) (net.Conn, error) { return nil, errTestRedial }}
		defer func() {
			l.Close()
			<-srvDone
		}()
		res := make(chan error, 1)
		go func() {
			s, _, err := l.OpenSession(context.Background(), "fuzz", testHello())
			if err != nil {
				res <- err
				return
			}
			for {
				if _, err := s.Recv(); err != nil {
					res <- err
					return
				}
			}
		}()
		timer := time.NewTimer(testWait)
		defer timer.Stop()
		select {
		case err := <-res:
			var rl *agent.RetryLaterError
			var ce *errcode.Error
			if !errors.As(err, &rl) && !errors.As(err, &ce) {
				t.Fatalf("error without a code: %v (%T)", err, err)
			}
			if errors.Is(err, errTestRedial) {
				t.Fatalf("client redialled: %v", err)
			}
		case <-timer.C:
			t.Fatalf("the client neither failed nor returned within %s", testWait)
		}
	})
}
