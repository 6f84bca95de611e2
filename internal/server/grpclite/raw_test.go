package grpclite

import (
	"bytes"
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/mamori/mamori/internal/agentproto"
	"google.golang.org/protobuf/proto"
)

// rawClient speaks HTTP/2 frame by frame (x/net/http2's Framer), for what
// the grpc-go client never does.
type rawClient struct {
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := &rawClient{c: c, fr: http2.NewFramer(c, c)}
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.enc = hpack.NewEncoder(&r.buf)
	r.enc.SetMaxDynamicTableSizeLimit(0) // the server's SETTINGS_HEADER_TABLE_SIZE
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	r.fr.WriteSettings()
	return r
}

func (r *rawClient) grpcHeaders(path string) []byte {
	r.buf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", path}, {":authority", "x"},
		{"content-type", "application/grpc"}, {"te", "trailers"}} {
		r.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return append([]byte(nil), r.buf.Bytes()...)
}

func (r *rawClient) fields(fs ...[2]string) []byte {
	r.buf.Reset()
	for _, f := range fs {
		r.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return append([]byte(nil), r.buf.Bytes()...)
}

func (r *rawClient) headers(id uint32, end bool, block []byte) {
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true, EndStream: end})
}

func (r *rawClient) ping(data [8]byte) { r.fr.WritePing(false, data) }

// grpcMessage is a length-prefixed message.
func grpcMessage(m proto.Message) []byte {
	b, _ := proto.Marshal(m)
	out := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	return append(out, b...)
}

// next returns the next frame, skipping SETTINGS, WINDOW_UPDATE and PING.
func (r *rawClient) next(t *testing.T) http2.Frame {
	t.Helper()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading a frame: %v", err)
		}
		switch f.(type) {
		case *http2.SettingsFrame, *http2.WindowUpdateFrame, *http2.PingFrame:
			continue
		}
		return f
	}
}

func (r *rawClient) waitRST(t *testing.T, id uint32) http2.ErrCode {
	t.Helper()
	for {
		f := r.next(t)
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == id {
			return rst.ErrCode
		}
	}
}

// goAway reads until a GOAWAY (or the end of the connection).
func (r *rawClient) goAway(t *testing.T) (http2.ErrCode, bool) {
	t.Helper()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return 0, false
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			return g.ErrCode, true
		}
	}
}

// response reads the frames of one stream until END_STREAM and returns its
// header fields (headers and trailers) and DATA.
func (r *rawClient) response(t *testing.T, id uint32) (map[string]string, []byte) {
	t.Helper()
	fields := map[string]string{}
	var data []byte
	for {
		f := r.next(t)
		if f.Header().StreamID != id {
			continue
		}
		switch x := f.(type) {
		case *http2.MetaHeadersFrame:
			for _, hf := range x.Fields {
				fields[hf.Name] = hf.Value
			}
			if x.StreamEnded() {
				return fields, data
			}
		case *http2.DataFrame:
			data = append(data, x.Data()...)
			if x.StreamEnded() {
				return fields, data
			}
		case *http2.RSTStreamFrame:
			fields["rst"] = x.ErrCode.String()
			return fields, data
		}
	}
}

func TestRaw_ServerSettingsAdvertiseNoDynamicTable(t *testing.T) {
	f := newFixture(t, Options{MaxConcurrentStreams: 7}, nil)
	r := dialRaw(t, f.addr)
	for {
		fr, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if sf, ok := fr.(*http2.SettingsFrame); ok && !sf.IsAck() {
			if v, ok := sf.Value(http2.SettingHeaderTableSize); !ok || v != 0 {
				t.Errorf("HEADER_TABLE_SIZE %d (%v), want 0", v, ok)
			}
			if v, _ := sf.Value(http2.SettingMaxConcurrentStreams); v != 7 {
				t.Errorf("MAX_CONCURRENT_STREAMS %d, want 7", v)
			}
			return
		}
	}
}

func TestRaw_BadPrefaceClosesTheConnection(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	for {
		if _, err := c.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("an HTTP/1 request was not refused")
			}
			return
		}
	}
}

func TestRaw_PaddingPriorityAndContinuationAreUnderstood(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	r := dialRaw(t, f.addr)
	block := r.grpcHeaders("/mamori.agent.v1.Agent/Enroll")
	// HEADERS with padding and priority, split over two CONTINUATIONs.
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:3], PadLength: 7,
		Priority: http2.PriorityParam{StreamDep: 0, Weight: 10}})
	r.fr.WriteContinuation(1, false, block[3:6])
	r.fr.WriteContinuation(1, true, block[6:])
	r.fr.WritePriority(1, http2.PriorityParam{Weight: 3})
	r.fr.WriteRawFrame(0x42, 0, 1, []byte("unknown frame types are ignored"))
	msg := grpcMessage(&agentproto.EnrollRequest{Token: "echo", Hostname: "padded"})
	r.fr.WriteDataPadded(1, false, msg[:4], []byte{0, 0, 0})
	r.fr.WriteDataPadded(1, true, msg[4:], nil)
	fields, data := r.response(t, 1)
	if fields[":status"] != "200" || fields["grpc-status"] != "0" || fields["content-type"] != "application/grpc" {
		t.Fatalf("response fields %v", fields)
	}
	var resp agentproto.EnrollResponse
	if len(data) < 5 || proto.Unmarshal(data[5:], &resp) != nil || resp.ComputerId != "padded" {
		t.Fatalf("response data %q", data)
	}
}

func TestRaw_NotGRPCGetsAnHTTPStatus(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	r := dialRaw(t, f.addr)
	r.headers(1, true, r.fields([2]string{":method", "GET"}, [2]string{":scheme", "http"}, [2]string{":path", "/"}, [2]string{":authority", "x"}))
	if fields, _ := r.response(t, 1); fields[":status"] != "405" {
		t.Errorf("GET: %v", fields)
	}
	r.headers(3, true, r.fields([2]string{":method", "POST"}, [2]string{":scheme", "http"}, [2]string{":path", "/x"}, [2]string{"content-type", "text/plain"}))
	if fields, _ := r.response(t, 3); fields[":status"] != "415" {
		t.Errorf("text/plain: %v", fields)
	}
	r.headers(5, true, r.fields([2]string{":method", "POST"}, [2]string{":path", "/x"}, [2]string{"content-type", "application/grpc"}, [2]string{":bogus", "1"}))
	if code := r.waitRST(t, 5); code != http2.ErrCodeProtocol {
		t.Errorf("unknown pseudo-header: RST %v", code)
	}
}

func TestRaw_CompressedMessageIsRefused(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	r := dialRaw(t, f.addr)
	r.headers(1, false, r.fields([2]string{":method", "POST"}, [2]string{":scheme", "http"}, [2]string{":path", "/mamori.agent.v1.Agent/Enroll"},
		[2]string{"content-type", "application/grpc"}, [2]string{"grpc-encoding", "gzip"}))
	msg := grpcMessage(&agentproto.EnrollRequest{Token: "echo"})
	msg[0] = 1
	r.fr.WriteData(1, true, msg)
	if fields, _ := r.response(t, 1); fields["grpc-status"] != "12" || !strings.Contains(fields["grpc-message"], "gzip") {
		t.Errorf("compressed message: %v", fields)
	}
}

func TestRaw_ProtocolErrorsEndTheConnectionWithGoAway(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	cases := map[string]struct {
		send func(r *rawClient)
		want http2.ErrCode
	}{
		"DATA on stream 0":             {func(r *rawClient) { r.fr.WriteRawFrame(http2.FrameData, 0, 0, []byte("x")) }, http2.ErrCodeProtocol},
		"DATA on an idle stream":       {func(r *rawClient) { r.fr.WriteData(9, false, []byte("x")) }, http2.ErrCodeProtocol},
		"HEADERS on an even stream":    {func(r *rawClient) { r.headers(2, true, r.grpcHeaders("/x/y")) }, http2.ErrCodeProtocol},
		"frame beyond the max size":    {func(r *rawClient) { r.fr.WriteRawFrame(0x42, 0, 0, make([]byte, 20000)) }, http2.ErrCodeFrameSize},
		"PING of the wrong size":       {func(r *rawClient) { r.fr.WriteRawFrame(http2.FramePing, 0, 0, []byte{1}) }, http2.ErrCodeFrameSize},
		"window overflow":              {func(r *rawClient) { r.fr.WriteWindowUpdate(0, 1<<31-1) }, http2.ErrCodeFlowControl},
		"CONTINUATION without HEADERS": {func(r *rawClient) { r.fr.WriteContinuation(1, true, []byte{0x82}) }, http2.ErrCodeProtocol},
		"bad HPACK":                    {func(r *rawClient) { r.headers(1, true, []byte{0xff, 0xff, 0xff, 0xff}) }, http2.ErrCodeCompression},
		// A size update to 4096, beyond the advertised 0.
		"HPACK dynamic table in use": {func(r *rawClient) { r.headers(1, true, []byte{0x3f, 0xe1, 0x1f}) }, http2.ErrCodeCompression},
		"PUSH_PROMISE": {func(r *rawClient) {
			r.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true})
		}, http2.ErrCodeProtocol},
		"interleaved header block": {func(r *rawClient) {
			r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.grpcHeaders("/x/y")[:2]})
			r.ping([8]byte{})
		}, http2.ErrCodeProtocol},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := dialRaw(t, f.addr)
			tc.send(r)
			code, ok := r.goAway(t)
			if !ok || code != tc.want {
				t.Errorf("GOAWAY %v (%v), want %v", code, ok, tc.want)
			}
		})
	}
}

// A handler that does not read makes the server stop returning the
// stream's window; a client that sends beyond it gets its stream reset.
func TestRaw_StreamWindowStopsAtAHandlerThatDoesNotRead(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	r := dialRaw(t, f.addr)
	r.headers(1, false, r.fields([2]string{":method", "POST"}, [2]string{":scheme", "http"}, [2]string{":path", "/mamori.agent.v1.Agent/Enroll"},
		[2]string{"content-type", "application/grpc"}, [2]string{"grpc-timeout", "20S"}))
	r.fr.WriteData(1, false, grpcMessage(&agentproto.EnrollRequest{Token: "slow"})) // read once, then the handler waits
	<-f.svc.started
	frame := make([]byte, 16000)
	binary.BigEndian.PutUint32(frame[1:], 16000-5) // one whole message per frame
	// 1 MiB queues up; the window left then is at most 64 KiB.
	for range (maxQueued+2*65536)/16000 + 1 {
		r.fr.WriteData(1, false, frame)
	}
	if code := r.waitRST(t, 1); code != http2.ErrCodeFlowControl {
		t.Fatalf("RST %v, want FLOW_CONTROL_ERROR", code)
	}
}

// Whatever arrives, the server neither panics nor hangs: ServeConn returns
// once the input is exhausted (the connection then reads EOF), and every
// handler it started has returned.
func FuzzFrames(f *testing.F) {
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 5, 1, 5, 0, 0, 0, 1, 0x83, 0x86, 0x84, 0x41, 0x80})
	f.Add([]byte{0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add([]byte{0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0x10, 0})
	f.Add([]byte{0, 0, 1, 0, 1, 0, 0, 0, 1, 0})
	f.Add([]byte{0, 0, 3, 9, 4, 0, 0, 0, 3, 0x82, 0x84, 0x86})
	// A whole Session call: headers, a Hello, END_STREAM.
	var call bytes.Buffer
	fr := http2.NewFramer(&call, nil)
	r := &rawClient{}
	r.enc = hpack.NewEncoder(&r.buf)
	r.enc.SetMaxDynamicTableSizeLimit(0)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.grpcHeaders("/mamori.agent.v1.Agent/Session"), EndHeaders: true})
	fr.WriteData(1, false, grpcMessage(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Hello{Hello: &agentproto.Hello{Hostname: "f"}}}))
	fr.WriteData(1, true, grpcMessage(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_CheckIn{CheckIn: &agentproto.CheckIn{Seq: 1}}}))
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: r.grpcHeaders("/mamori.agent.v1.Agent/Enroll"), EndHeaders: true})
	fr.WriteData(3, true, grpcMessage(&agentproto.EnrollRequest{Token: "echo"}))
	f.Add(call.Bytes())
	srv := NewServer(Options{Log: quietLog(), KeepaliveTime: time.Hour})
	svc := newTestSvc()
	agentproto.RegisterAgentServer(srv, svc)
	f.Fuzz(func(t *testing.T, frames []byte) {
		var in bytes.Buffer
		in.WriteString(http2.ClientPreface)
		http2.NewFramer(&in, nil).WriteSettings()
		in.Write(frames)
		c := &scriptConn{r: bytes.NewReader(in.Bytes())}
		done := make(chan struct{})
		go func() {
			srv.ServeConn(c, nil)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("ServeConn did not return at the end of its input")
		}
		for len(svc.sessions) > 0 { // drain what the test service records
			<-svc.sessions
		}
		for len(svc.ended) > 0 {
			<-svc.ended
		}
		for len(svc.started) > 0 {
			<-svc.started
		}
		for len(svc.deadline) > 0 {
			<-svc.deadline
		}
	})
}

// scriptConn reads a fixed input, then EOF; writes are discarded.
type scriptConn struct {
	r      *bytes.Reader
	mu     sync.Mutex
	closed bool
}

func (c *scriptConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.r.Read(p)
}
func (c *scriptConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return len(p), nil
}
func (c *scriptConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}
func (c *scriptConn) LocalAddr() net.Addr                { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr               { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(t time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(t time.Time) error { return nil }
