package grpclite

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// conn is one HTTP/2 connection.
//
// Reading: exactly one goroutine reads frames at any time — the serve
// loop, or, while the connection's inline handler runs (see runInline), that
// handler's RecvMsg (same goroutine) — so the reader state below needs no
// lock. Shared state is under mu. Writes are composed under wmu and mu
// (in that order) and written under wmu, so frames of one stream keep
// their order.
type conn struct {
	srv  *Server
	nc   net.Conn
	opts *Options
	ctx  context.Context // carries the peer; parent of every stream's context

	// Reader state.
	hdr         [frameHeaderLen]byte
	hf          headerFields
	contStream  uint32 // stream whose header block awaits CONTINUATION; 0 if none
	contFlags   byte
	contBuf     []byte
	maxStream   uint32 // highest stream id the client opened
	recvWindow  int64  // connection receive window left
	recvUnacked int64  // connection bytes received, not yet returned by WINDOW_UPDATE
	readErr     error  // sticky
	pending     *stream
	lastRead    atomic.Int64 // UnixNano of the last frame read (keepalive)

	mu           sync.Mutex
	streams      []*stream // open streams (a handful at most)
	sendWindow   int64     // connection send window
	peerWindow   int64     // the client's initial stream window
	peerMaxFrame int
	inline       *stream // the stream whose handler runs on the reading goroutine
	goingAway    bool
	closeAfter   bool // close the connection once the frames being composed are written
	closed       bool

	wmu sync.Mutex

	ka     *time.Timer
	pingAt atomic.Int64 // UnixNano when the unanswered keepalive PING was sent; 0 if none
}

var errConnClosed = errors.New("grpclite: connection closed")

func newConn(s *Server, nc net.Conn, authInfo credentials.AuthInfo) *conn {
	c := &conn{srv: s, nc: nc, opts: &s.opts, recvWindow: int64(s.opts.InitialWindowSize),
		sendWindow: defaultWindow, peerWindow: defaultWindow, peerMaxFrame: defaultMaxFrameSize}
	c.ctx = peer.NewContext(context.Background(), &peer.Peer{Addr: nc.RemoteAddr(), LocalAddr: nc.LocalAddr(), AuthInfo: authInfo})
	return c
}

// serve reads frames until the connection fails or closes.
func (c *conn) serve() {
	err := c.readPreface()
	if err == nil {
		c.ka = time.AfterFunc(c.opts.KeepaliveTime, c.keepalive)
		for err == nil {
			err = c.readFrame()
			if st := c.pending; st != nil && err == nil {
				c.pending = nil
				c.runInline(st)
				err = c.readErr
			}
		}
	}
	c.fail(err)
}

func (c *conn) readPreface() error {
	c.nc.SetReadDeadline(time.Now().Add(c.opts.PrefaceTimeout))
	var p [len(clientPreface)]byte
	if _, err := io.ReadFull(c.nc, p[:]); err != nil {
		return err
	}
	if string(p[:]) != clientPreface {
		return protocolError("bad client preface")
	}
	err := c.writeFrames(func(b []byte) []byte {
		var s []byte
		// No HPACK dynamic table: the client sends literals (request
		// headers come once per call) and the server keeps no decoder
		// state between header blocks.
		s = binary.BigEndian.AppendUint16(s, settingHeaderTableSize)
		s = appendUint32(s, 0)
		s = binary.BigEndian.AppendUint16(s, settingMaxConcurrentStreams)
		s = appendUint32(s, c.opts.MaxConcurrentStreams)
		s = binary.BigEndian.AppendUint16(s, settingInitialWindowSize)
		s = appendUint32(s, c.opts.InitialWindowSize)
		s = binary.BigEndian.AppendUint16(s, settingMaxHeaderListSize)
		s = appendUint32(s, c.opts.MaxHeaderListSize)
		b = appendFrameHeader(b, len(s), frameSettings, 0, 0)
		b = append(b, s...)
		if d := int64(c.opts.InitialWindowSize) - defaultWindow; d > 0 {
			b = appendFrameHeader(b, 4, frameWindowUpdate, 0, 0)
			b = appendUint32(b, uint32(d))
		}
		return b
	})
	if err != nil {
		return err
	}
	// The client's first frame is its SETTINGS.
	if _, err := io.ReadFull(c.nc, c.hdr[:]); err != nil {
		return err
	}
	if c.hdr[3] != frameSettings || c.hdr[4]&flagAck != 0 {
		return protocolError("first frame is not SETTINGS")
	}
	if err := c.handleFrame(); err != nil {
		return err
	}
	c.nc.SetReadDeadline(time.Time{})
	return nil
}

// readFrame reads and handles one frame; errors are sticky.
func (c *conn) readFrame() error {
	if c.readErr != nil {
		return c.readErr
	}
	if _, err := io.ReadFull(c.nc, c.hdr[:]); err != nil {
		c.readErr = err
		return err
	}
	if err := c.handleFrame(); err != nil {
		c.readErr = err
		return err
	}
	return nil
}

var framePool = sync.Pool{New: func() any { b := make([]byte, defaultMaxFrameSize); return &b }}

// handleFrame reads the payload of the frame whose header is in c.hdr and
// handles it.
func (c *conn) handleFrame() error {
	c.lastRead.Store(time.Now().UnixNano())
	length := int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
	typ, flags := c.hdr[3], c.hdr[4]
	sid := binary.BigEndian.Uint32(c.hdr[5:]) & 0x7fffffff
	if length > defaultMaxFrameSize { // we never raise SETTINGS_MAX_FRAME_SIZE
		return connError{errCodeFrameSize, "frame larger than the maximum frame size"}
	}
	if c.contStream != 0 && typ != frameContinuation {
		return protocolError("frame of type %d inside a header block", typ)
	}
	bp := framePool.Get().(*[]byte)
	defer framePool.Put(bp)
	p := (*bp)[:length]
	if _, err := io.ReadFull(c.nc, p); err != nil {
		return err
	}
	switch typ {
	case frameData:
		return c.onData(sid, flags, p)
	case frameHeaders:
		return c.onHeaders(sid, flags, p)
	case frameContinuation:
		return c.onContinuation(sid, flags, p)
	case framePriority:
		if sid == 0 {
			return protocolError("PRIORITY on stream 0")
		}
		if length != 5 {
			return connError{errCodeFrameSize, "PRIORITY frame size"}
		}
		return nil
	case frameRSTStream:
		if sid == 0 {
			return protocolError("RST_STREAM on stream 0")
		}
		if length != 4 {
			return connError{errCodeFrameSize, "RST_STREAM frame size"}
		}
		if sid > c.maxStream {
			return protocolError("RST_STREAM on an idle stream")
		}
		c.onReset(sid)
		return nil
	case frameSettings:
		return c.onSettings(sid, flags, p)
	case framePushPromise:
		return protocolError("PUSH_PROMISE from a client")
	case framePing:
		if sid != 0 {
			return protocolError("PING on a stream")
		}
		if length != 8 {
			return connError{errCodeFrameSize, "PING frame size"}
		}
		if flags&flagAck != 0 {
			c.pingAt.Store(0)
			return nil
		}
		var data [8]byte
		copy(data[:], p)
		c.writeFrames(func(b []byte) []byte {
			b = appendFrameHeader(b, 8, framePing, flagAck, 0)
			return append(b, data[:]...)
		})
		return nil
	case frameGoAway:
		if sid != 0 {
			return protocolError("GOAWAY on a stream")
		}
		if length < 8 {
			return connError{errCodeFrameSize, "GOAWAY frame size"}
		}
		return nil // the client will close the connection
	case frameWindowUpdate:
		if length != 4 {
			return connError{errCodeFrameSize, "WINDOW_UPDATE frame size"}
		}
		return c.onWindowUpdate(sid, binary.BigEndian.Uint32(p)&0x7fffffff)
	}
	return nil // unknown frame types are ignored
}

func (c *conn) onSettings(sid uint32, flags byte, p []byte) error {
	if sid != 0 {
		return protocolError("SETTINGS on a stream")
	}
	if flags&flagAck != 0 {
		if len(p) != 0 {
			return connError{errCodeFrameSize, "SETTINGS ACK with a payload"}
		}
		return nil
	}
	if len(p)%6 != 0 {
		return connError{errCodeFrameSize, "SETTINGS frame size"}
	}
	var err error
	c.writeFrames(func(b []byte) []byte {
		for ; len(p) > 0 && err == nil; p = p[6:] {
			id, v := binary.BigEndian.Uint16(p), binary.BigEndian.Uint32(p[2:])
			switch id {
			case settingEnablePush:
				if v > 1 {
					err = protocolError("ENABLE_PUSH %d", v)
				}
			case settingInitialWindowSize:
				if v > maxWindow {
					err = connError{errCodeFlowControl, "INITIAL_WINDOW_SIZE too large"}
					break
				}
				delta := int64(v) - c.peerWindow
				c.peerWindow = int64(v)
				for _, st := range c.streams {
					st.sendWindow += delta
					if st.sendWindow > maxWindow {
						err = connError{errCodeFlowControl, "stream window overflow"}
					}
				}
			case settingMaxFrameSize:
				if v < defaultMaxFrameSize || v > maxFrameSizeLimit {
					err = protocolError("MAX_FRAME_SIZE %d", v)
				}
				c.peerMaxFrame = int(v)
			}
		}
		if err != nil {
			return b
		}
		b = appendFrameHeader(b, 0, frameSettings, flagAck, 0)
		return c.flushAllLocked(b)
	})
	return err
}

func (c *conn) onWindowUpdate(sid, inc uint32) error {
	if inc == 0 {
		if sid == 0 {
			return protocolError("WINDOW_UPDATE of 0")
		}
		c.resetStream(sid, errCodeProtocol)
		return nil
	}
	var err error
	c.writeFrames(func(b []byte) []byte {
		if sid == 0 {
			c.sendWindow += int64(inc)
			if c.sendWindow > maxWindow {
				err = connError{errCodeFlowControl, "connection window overflow"}
				return b
			}
			return c.flushAllLocked(b)
		}
		st := c.streamLocked(sid)
		if st == nil {
			if sid > c.maxStream {
				err = protocolError("WINDOW_UPDATE on an idle stream")
			}
			return b
		}
		st.sendWindow += int64(inc)
		if st.sendWindow > maxWindow {
			st.sendWindow = maxWindow
			return c.rstLocked(b, st, errCodeFlowControl)
		}
		return c.flushLocked(b, st)
	})
	return err
}

func (c *conn) onData(sid uint32, flags byte, p []byte) error {
	if sid == 0 {
		return protocolError("DATA on stream 0")
	}
	n := int64(len(p))
	if flags&flagPadded != 0 {
		if len(p) == 0 || int(p[0]) >= len(p) {
			return protocolError("bad padding")
		}
		p = p[1 : len(p)-int(p[0])]
	}
	// Connection flow control: every DATA byte counts, padding included,
	// and is returned at once (the bytes are copied out, and each stream's
	// own window bounds what it may buffer).
	c.recvWindow -= n
	if c.recvWindow < 0 {
		return connError{errCodeFlowControl, "connection receive window exceeded"}
	}
	c.recvUnacked += n
	var connCredit int64
	if c.recvUnacked >= int64(c.opts.InitialWindowSize)/windowUpdateThresholdFrac {
		connCredit, c.recvUnacked = c.recvUnacked, 0
		c.recvWindow += connCredit
	}
	var streamCredit int64
	var rst uint32
	c.mu.Lock()
	st := c.streamLocked(sid)
	switch {
	case st == nil:
		c.mu.Unlock()
		if sid > c.maxStream {
			return protocolError("DATA on an idle stream")
		}
		// A stream closed (or reset) meanwhile: drop the data.
	case st.remoteClosed:
		c.mu.Unlock()
		c.resetStream(sid, errCodeStreamClosed)
	default:
		st.recvWindow -= n
		if st.recvWindow < 0 {
			c.mu.Unlock()
			rst = errCodeFlowControl
			break
		}
		st.recvUnacked += n
		if serr := st.assemble(p); serr != nil && st.recvErr == nil {
			st.recvErr = serr
			st.discard = true
		}
		if flags&flagEndStream != 0 {
			st.remoteClosed = true
			if (st.inMsg || st.hdrN > 0) && st.recvErr == nil {
				st.recvErr = status.Error(codes.Internal, "grpc: client half-closed the stream in the middle of a message")
			}
		}
		streamCredit = st.creditLocked()
		st.signal()
		failed := st.recvErr != nil && !st.finished && st.discard
		c.mu.Unlock()
		if failed {
			c.finishStream(st, st.recvErr)
		}
	}
	if rst != 0 {
		c.resetStream(sid, rst)
	}
	if connCredit > 0 || streamCredit > 0 {
		c.writeFrames(func(b []byte) []byte {
			if connCredit > 0 {
				b = appendFrameHeader(b, 4, frameWindowUpdate, 0, 0)
				b = appendUint32(b, uint32(connCredit))
			}
			if streamCredit > 0 {
				b = appendFrameHeader(b, 4, frameWindowUpdate, 0, sid)
				b = appendUint32(b, uint32(streamCredit))
			}
			return b
		})
	}
	return nil
}

func (c *conn) onHeaders(sid uint32, flags byte, p []byte) error {
	if sid == 0 || sid%2 == 0 {
		return protocolError("HEADERS on stream %d", sid)
	}
	if flags&flagPadded != 0 {
		if len(p) == 0 || int(p[0]) >= len(p) {
			return protocolError("bad padding")
		}
		p = p[1 : len(p)-int(p[0])]
	}
	if flags&flagPriority != 0 {
		if len(p) < 5 {
			return connError{errCodeFrameSize, "HEADERS priority"}
		}
		if binary.BigEndian.Uint32(p)&0x7fffffff == sid {
			return protocolError("stream depends on itself")
		}
		p = p[5:]
	}
	if flags&flagEndHeaders == 0 {
		c.contStream, c.contFlags = sid, flags
		c.contBuf = append([]byte(nil), p...)
		return nil
	}
	return c.onHeaderBlock(sid, flags, p)
}

func (c *conn) onContinuation(sid uint32, flags byte, p []byte) error {
	if c.contStream == 0 || sid != c.contStream {
		return protocolError("unexpected CONTINUATION")
	}
	c.contBuf = append(c.contBuf, p...)
	if len(c.contBuf) > 4*int(c.opts.MaxHeaderListSize) {
		return connError{errCodeEnhanceYourCalm, "header block too large"}
	}
	if flags&flagEndHeaders == 0 {
		return nil
	}
	block, f := c.contBuf, c.contFlags
	c.contBuf, c.contStream = nil, 0
	return c.onHeaderBlock(sid, f, block)
}

// headerFields are the request headers the server looks at.
type headerFields struct {
	method, path, contentType, timeout, encoding string
	size                                         uint32
	regular                                      bool // a regular field was seen (pseudo ones must come first)
	bad                                          string
}

func (c *conn) emit(f hpack.HeaderField) {
	h := &c.hf
	h.size += uint32(len(f.Name) + len(f.Value) + 32)
	if strings.HasPrefix(f.Name, ":") {
		if h.regular {
			h.bad = "pseudo-header after regular header"
		}
		switch f.Name {
		case ":method":
			h.method = f.Value
		case ":path":
			h.path = f.Value
		case ":scheme", ":authority":
		default:
			h.bad = "unknown pseudo-header " + f.Name
		}
		return
	}
	h.regular = true
	switch f.Name {
	case "content-type":
		h.contentType = f.Value
	case "grpc-timeout":
		h.timeout = f.Value
	case "grpc-encoding":
		h.encoding = f.Value
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		h.bad = "connection-specific header " + f.Name
	}
}

func (c *conn) onHeaderBlock(sid uint32, flags byte, block []byte) error {
	// The advertised table size is 0, so the dynamic table is always
	// empty and a decoder per header block is the same as one per
	// connection (grpc-go clients apply the setting before their first
	// request: they wait for the server's SETTINGS).
	dec := hpack.NewDecoder(0, c.emit)
	dec.SetMaxStringLength(int(c.opts.MaxHeaderListSize))
	c.hf = headerFields{}
	if _, err := dec.Write(block); err != nil {
		return connError{errCodeCompression, err.Error()}
	}
	if err := dec.Close(); err != nil {
		return connError{errCodeCompression, err.Error()}
	}
	h := c.hf
	c.hf = headerFields{}
	c.mu.Lock()
	if st := c.streamLocked(sid); st != nil {
		// Trailers from the client: they must end the stream.
		if flags&flagEndStream == 0 {
			c.mu.Unlock()
			return protocolError("HEADERS without END_STREAM on an open stream")
		}
		st.remoteClosed = true
		st.signal()
		c.mu.Unlock()
		return nil
	}
	if sid <= c.maxStream {
		c.mu.Unlock()
		return connError{errCodeStreamClosed, "HEADERS on a closed stream"}
	}
	c.maxStream = sid
	refuse := c.goingAway || c.closed || len(c.streams) >= int(c.opts.MaxConcurrentStreams)
	c.mu.Unlock()
	if refuse {
		c.resetStream(sid, errCodeRefusedStream)
		return nil
	}
	// A request that is not gRPC gets an HTTP answer; a gRPC request the
	// server cannot serve gets a gRPC status.
	switch {
	case h.bad != "" || h.method == "" || h.path == "":
		c.resetStream(sid, errCodeProtocol)
		return nil
	case h.method != "POST":
		c.respondHTTP(sid, "405")
		return nil
	case h.contentType != "application/grpc" && !strings.HasPrefix(h.contentType, "application/grpc+") && !strings.HasPrefix(h.contentType, "application/grpc;"):
		c.respondHTTP(sid, "415")
		return nil
	case h.size > c.opts.MaxHeaderListSize:
		c.trailersOnly(sid, codes.ResourceExhausted, "header list too large")
		return nil
	}
	m := c.srv.methods[h.path]
	if m == nil {
		svc, _, _ := strings.Cut(strings.TrimPrefix(h.path, "/"), "/")
		c.trailersOnly(sid, codes.Unimplemented, "unknown method "+h.path+" for service "+svc)
		return nil
	}
	st := &stream{c: c, id: sid, m: m, recvWindow: int64(c.opts.InitialWindowSize), wake: make(chan struct{}, 1)}
	if h.encoding != "" && h.encoding != "identity" {
		st.encoding = h.encoding
	}
	if h.timeout != "" {
		d, ok := parseTimeout(h.timeout)
		if !ok {
			c.trailersOnly(sid, codes.Internal, "malformed grpc-timeout "+h.timeout)
			return nil
		}
		st.ctx, st.cancel = context.WithTimeout(c.ctx, d)
		context.AfterFunc(st.ctx, func() {
			if errors.Is(st.ctx.Err(), context.DeadlineExceeded) {
				c.finishStream(st, status.Error(codes.DeadlineExceeded, "context deadline exceeded"))
			}
		})
	} else {
		st.ctx, st.cancel = context.WithCancel(c.ctx)
	}
	st.remoteClosed = flags&flagEndStream != 0
	c.mu.Lock()
	st.sendWindow = c.peerWindow
	c.streams = append(c.streams, st)
	// The first streaming call runs on the reading goroutine (it spends its
	// idle time reading); unary calls, and calls beside it, get their own
	// goroutine so that the connection keeps being read meanwhile.
	own := c.inline != nil || m.unary != nil
	c.mu.Unlock()
	if own {
		go c.runHandler(st)
	} else {
		c.pending = st // the serve loop runs it inline
	}
	return nil
}

// runInline runs st's handler on the reading goroutine: its RecvMsg reads
// the connection itself.
func (c *conn) runInline(st *stream) {
	c.mu.Lock()
	c.inline = st
	c.mu.Unlock()
	c.runHandler(st)
	c.mu.Lock()
	c.inline = nil
	c.mu.Unlock()
}

func (c *conn) runHandler(st *stream) {
	var err error
	if st.m.unary != nil {
		var resp any
		resp, err = st.m.unary(st.m.impl, st.ctx, st.decodeRequest, nil)
		if err == nil {
			err = st.SendMsg(resp)
		}
	} else {
		err = st.m.stream(st.m.impl, st)
	}
	c.finishStream(st, err)
}

// finishStream ends st with the status of err (nil is OK): trailers after
// any data still waiting for window, and RST_STREAM(NO_ERROR) when the
// client has not finished sending. A stream already finished or reset is
// left alone.
func (c *conn) finishStream(st *stream, err error) {
	code, msg := codes.OK, ""
	if err != nil {
		s, ok := status.FromError(err)
		if !ok {
			s = status.FromContextError(err)
		}
		code, msg = s.Code(), s.Message()
		if len(msg) > 4096 {
			msg = msg[:4096]
		}
	}
	c.writeFrames(func(b []byte) []byte {
		if st.finished || st.reset {
			return b
		}
		st.finished = true
		var blk []byte
		if !st.headersSent { // Trailers-Only
			blk = appendResponseHeaders(blk)
			blk = appendMD(blk, st.header)
			st.trailersOnly = true
		}
		blk = appendTrailers(blk, uint32(code), msg)
		st.trailer = appendMD(blk, st.trailerMD)
		return c.flushLocked(b, st)
	})
	st.cancel()
}

// flushLocked appends DATA frames for st's pending bytes as far as the
// windows allow, then its trailers once nothing is pending.
func (c *conn) flushLocked(b []byte, st *stream) []byte {
	for len(st.out) > 0 {
		n := min(int64(len(st.out)), st.sendWindow, c.sendWindow, int64(c.peerMaxFrame))
		if n <= 0 {
			return b
		}
		b = appendFrameHeader(b, int(n), frameData, 0, st.id)
		b = append(b, st.out[:n]...)
		st.out = st.out[n:]
		st.sendWindow -= n
		c.sendWindow -= n
	}
	st.out = nil
	st.signal() // a sender waiting for room
	if st.trailer != nil {
		b = appendFrameHeader(b, len(st.trailer), frameHeaders, flagEndHeaders|flagEndStream, st.id)
		b = append(b, st.trailer...)
		st.trailer = nil
		if !st.remoteClosed {
			b = appendFrameHeader(b, 4, frameRSTStream, 0, st.id)
			b = appendUint32(b, errCodeNo)
		}
		b = c.removeLocked(b, st)
	}
	return b
}

// flushAllLocked flushes every stream (after the windows grew).
func (c *conn) flushAllLocked(b []byte) []byte {
	for _, st := range append([]*stream(nil), c.streams...) {
		if len(st.out) > 0 || st.trailer != nil {
			b = c.flushLocked(b, st)
		}
	}
	return b
}

// removeLocked forgets st; after GOAWAY the last stream closes the
// connection.
func (c *conn) removeLocked(b []byte, st *stream) []byte {
	for i, s := range c.streams {
		if s == st {
			c.streams = append(c.streams[:i], c.streams[i+1:]...)
			break
		}
	}
	if len(c.streams) == 0 {
		c.streams = nil
		if c.goingAway {
			c.closeAfter = true
		}
	}
	return b
}

// rstLocked resets st with code.
func (c *conn) rstLocked(b []byte, st *stream, code uint32) []byte {
	b = appendFrameHeader(b, 4, frameRSTStream, 0, st.id)
	b = appendUint32(b, code)
	c.markResetLocked(st, status.Error(codes.Internal, "stream reset"))
	return c.removeLocked(b, st)
}

func (c *conn) markResetLocked(st *stream, err error) {
	st.reset = true
	st.out, st.trailer = nil, nil
	if st.recvErr == nil {
		st.recvErr = err
	}
	st.signal()
	st.cancel()
}

// resetStream sends RST_STREAM for sid (and forgets the stream if open).
func (c *conn) resetStream(sid, code uint32) {
	c.writeFrames(func(b []byte) []byte {
		if st := c.streamLocked(sid); st != nil {
			return c.rstLocked(b, st, code)
		}
		b = appendFrameHeader(b, 4, frameRSTStream, 0, sid)
		return appendUint32(b, code)
	})
}

// onReset handles the client's RST_STREAM.
func (c *conn) onReset(sid uint32) {
	c.mu.Lock()
	if st := c.streamLocked(sid); st != nil {
		c.markResetLocked(st, status.Error(codes.Canceled, "the client canceled the call"))
		c.removeLocked(nil, st)
	}
	c.mu.Unlock()
}

func (c *conn) respondHTTP(sid uint32, code string) {
	c.writeFrames(func(b []byte) []byte {
		var blk []byte
		blk = appendHeaderField(blk, ":status", code)
		b = appendFrameHeader(b, len(blk), frameHeaders, flagEndHeaders|flagEndStream, sid)
		return append(b, blk...)
	})
}

func (c *conn) trailersOnly(sid uint32, code codes.Code, msg string) {
	c.writeFrames(func(b []byte) []byte {
		var blk []byte
		blk = appendResponseHeaders(blk)
		blk = appendTrailers(blk, uint32(code), msg)
		b = appendFrameHeader(b, len(blk), frameHeaders, flagEndHeaders|flagEndStream, sid)
		return append(b, blk...)
	})
}

func (c *conn) streamLocked(sid uint32) *stream {
	for _, st := range c.streams {
		if st.id == sid {
			return st
		}
	}
	return nil
}

var wbufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// writeFrames composes frames with compose (called with mu held) and
// writes them. A failed write closes the connection.
func (c *conn) writeFrames(compose func([]byte) []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	bp := wbufPool.Get().(*[]byte)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		wbufPool.Put(bp)
		return errConnClosed
	}
	b := compose((*bp)[:0])
	closeAfter := c.closeAfter
	c.mu.Unlock()
	var err error
	if len(b) > 0 {
		c.nc.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
		_, err = c.nc.Write(b)
	}
	if closeAfter {
		c.nc.Close()
	}
	if cap(b) <= 64<<10 {
		*bp = b[:0]
		wbufPool.Put(bp)
	}
	if err != nil {
		c.nc.Close()
	}
	return err
}

// goAway tells the client to open no more streams; the connection closes
// when its last stream has finished.
func (c *conn) goAway(code uint32, debug string) {
	c.writeFrames(func(b []byte) []byte {
		c.goingAway = true
		b = appendFrameHeader(b, 8+len(debug), frameGoAway, 0, 0)
		b = appendUint32(b, c.maxStream)
		b = appendUint32(b, code)
		b = append(b, debug...)
		if len(c.streams) == 0 {
			c.closeAfter = true
		}
		return b
	})
}

// fail closes the connection after err (a protocol error is reported to
// the client with GOAWAY first) and ends every stream.
func (c *conn) fail(err error) {
	var ce connError
	if errors.As(err, &ce) {
		c.srv.opts.Log.Debug("agent connection: protocol error", "remote", c.nc.RemoteAddr().String(), "err", err)
		c.writeFrames(func(b []byte) []byte {
			b = appendFrameHeader(b, 8+len(ce.msg), frameGoAway, 0, 0)
			b = appendUint32(b, c.maxStream)
			b = appendUint32(b, ce.code)
			return append(b, ce.msg...)
		})
	}
	c.nc.Close()
	if c.ka != nil {
		c.ka.Stop()
	}
	c.mu.Lock()
	c.closed = true
	streams := c.streams
	c.streams = nil
	for _, st := range streams {
		c.markResetLocked(st, status.Error(codes.Canceled, "connection closed"))
	}
	c.mu.Unlock()
}

// keepalive runs on a timer: after KeepaliveTime without a frame from the
// client it sends a PING and closes the connection if nothing arrives
// within KeepaliveTimeout.
func (c *conn) keepalive() {
	now := time.Now().UnixNano()
	if sent := c.pingAt.Load(); sent != 0 {
		if c.lastRead.Load() > sent {
			c.pingAt.Store(0) // something arrived: alive
		} else if wait := time.Duration(sent + int64(c.opts.KeepaliveTimeout) - now); wait > 0 {
			c.ka.Reset(wait)
			return
		} else {
			c.srv.opts.Log.Debug("agent connection: keepalive timeout", "remote", c.nc.RemoteAddr().String())
			c.nc.Close()
			return
		}
	}
	if idle := time.Duration(now - c.lastRead.Load()); idle < c.opts.KeepaliveTime {
		c.ka.Reset(c.opts.KeepaliveTime - idle)
		return
	}
	c.pingAt.Store(now)
	err := c.writeFrames(func(b []byte) []byte {
		b = appendFrameHeader(b, 8, framePing, 0, 0)
		return binary.BigEndian.AppendUint64(b, uint64(now))
	})
	if err == nil {
		c.ka.Reset(c.opts.KeepaliveTimeout)
	}
}
