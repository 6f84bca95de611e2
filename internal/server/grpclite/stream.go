package grpclite

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// stream is one call. It implements grpc.ServerStream for the handlers of
// a grpc.ServiceDesc.
type stream struct {
	c      *conn
	id     uint32
	m      *method
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{} // signalled (coalescing) when RecvMsg may proceed

	encoding string // grpc-encoding of the request, when not identity

	// Under c.mu.
	recvWindow   int64
	recvUnacked  int64
	sendWindow   int64
	msgs         [][]byte // complete messages not yet received by the handler
	queued       int      // bytes in msgs
	remoteClosed bool     // the client sent END_STREAM
	recvErr      error    // what RecvMsg returns once msgs is empty
	discard      bool     // the stream failed: ignore further data
	headersSent  bool
	header       metadata.MD
	trailerMD    metadata.MD
	trailersOnly bool
	sendWake     chan struct{} // made by a SendMsg that waits for room; signalled when there is
	out          []byte        // DATA bytes waiting for flow-control window
	trailer      []byte        // header block to send once out is empty
	finished     bool          // trailers are queued or sent
	reset        bool          // RST_STREAM sent or received

	// Message assembly; reader only.
	hdrBuf [grpcMessagePrefixLen]byte
	hdrN   int
	inMsg  bool
	msg    []byte
	msgN   int
}

// Bytes of received messages a stream may hold before its flow-control
// window is no longer returned (the client then waits for the handler).
const maxQueued = 1 << 20

// Bytes of sent messages a stream may hold beyond the client's window
// before SendMsg waits.
const maxOut = 1 << 20

// signal wakes a RecvMsg and a SendMsg waiting on st. Caller holds c.mu.
func (st *stream) signal() {
	select {
	case st.wake <- struct{}{}:
	default:
	}
	if st.sendWake != nil {
		select {
		case st.sendWake <- struct{}{}:
		default:
		}
	}
}

// assemble adds DATA payload to the message being received; complete
// messages are queued. Caller holds c.mu.
func (st *stream) assemble(p []byte) error {
	if st.discard {
		return nil
	}
	for len(p) > 0 {
		if !st.inMsg {
			n := copy(st.hdrBuf[st.hdrN:], p)
			st.hdrN += n
			p = p[n:]
			if st.hdrN < grpcMessagePrefixLen {
				return nil
			}
			st.hdrN = 0
			if st.hdrBuf[0] != 0 {
				if st.encoding == "" {
					return status.Error(codes.Internal, "grpc: compressed flag set with identity or empty encoding")
				}
				return status.Errorf(codes.Unimplemented, "grpc: Decompressor is not installed for grpc-encoding %q", st.encoding)
			}
			size := binary.BigEndian.Uint32(st.hdrBuf[1:])
			if int64(size) > int64(st.c.opts.MaxRecvMsgSize) {
				return status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", size, st.c.opts.MaxRecvMsgSize)
			}
			st.inMsg, st.msg, st.msgN = true, make([]byte, size), 0
		}
		n := copy(st.msg[st.msgN:], p)
		st.msgN += n
		p = p[n:]
		if st.msgN == len(st.msg) {
			st.msgs = append(st.msgs, st.msg)
			st.queued += len(st.msg)
			st.inMsg, st.msg = false, nil
		}
	}
	return nil
}

// creditLocked returns the stream window to give back now: once a quarter
// of the window was received, unless too much is waiting for the handler.
func (st *stream) creditLocked() int64 {
	if st.remoteClosed || st.recvUnacked < int64(st.c.opts.InitialWindowSize)/windowUpdateThresholdFrac || st.queued > maxQueued {
		return 0
	}
	n := st.recvUnacked
	st.recvUnacked = 0
	st.recvWindow += n
	return n
}

// Context is the call's context: it carries the peer and ends with the
// call.
func (st *stream) Context() context.Context { return st.ctx }

// RecvMsg receives the next message into m. It returns io.EOF once the
// client has finished sending.
func (st *stream) RecvMsg(m any) error {
	c := st.c
	for {
		c.mu.Lock()
		if len(st.msgs) > 0 {
			b := st.msgs[0]
			st.msgs[0] = nil
			st.msgs = st.msgs[1:]
			if len(st.msgs) == 0 {
				st.msgs = nil
			}
			st.queued -= len(b)
			credit := st.creditLocked()
			c.mu.Unlock()
			if credit > 0 {
				c.writeFrames(func(buf []byte) []byte {
					buf = appendFrameHeader(buf, 4, frameWindowUpdate, 0, st.id)
					return appendUint32(buf, uint32(credit))
				})
			}
			pm, ok := m.(proto.Message)
			if !ok {
				return status.Errorf(codes.Internal, "grpc: %T is not a protocol buffer message", m)
			}
			if err := proto.Unmarshal(b, pm); err != nil {
				return status.Errorf(codes.Internal, "grpc: failed to unmarshal the received message: %v", err)
			}
			return nil
		}
		if st.recvErr != nil {
			err := st.recvErr
			c.mu.Unlock()
			return err
		}
		if st.remoteClosed {
			c.mu.Unlock()
			return io.EOF
		}
		readsItself := c.inline == st
		c.mu.Unlock()
		if readsItself {
			if err := c.readFrame(); err != nil {
				c.fail(err)
			}
			continue
		}
		select {
		case <-st.wake:
		case <-st.ctx.Done():
			c.mu.Lock()
			if st.recvErr == nil && len(st.msgs) == 0 {
				st.recvErr = status.FromContextError(st.ctx.Err()).Err()
			}
			c.mu.Unlock()
		}
	}
}

// decodeRequest is the dec function of unary handlers.
func (st *stream) decodeRequest(m any) error {
	err := st.RecvMsg(m)
	if err == io.EOF {
		return status.Error(codes.Internal, "grpc: the client sent no request message")
	}
	return err
}

// SendMsg sends m. It does not wait for the client's flow-control window
// unless more than maxOut bytes are already waiting.
func (st *stream) SendMsg(m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "grpc: %T is not a protocol buffer message", m)
	}
	size := proto.Size(pm)
	data := make([]byte, grpcMessagePrefixLen, grpcMessagePrefixLen+size)
	binary.BigEndian.PutUint32(data[1:], uint32(size))
	data, err := proto.MarshalOptions{}.MarshalAppend(data, pm)
	if err != nil {
		return status.Errorf(codes.Internal, "grpc: error while marshaling: %v", err)
	}
	if err := st.waitRoom(); err != nil {
		return err
	}
	var done bool
	err = st.c.writeFrames(func(b []byte) []byte {
		if st.finished || st.reset {
			done = true
			return b
		}
		b = st.appendHeadersLocked(b)
		if len(st.out) == 0 {
			st.out = data // sent from here as far as the windows allow
		} else {
			st.out = append(st.out, data...)
		}
		return st.c.flushLocked(b, st)
	})
	if done || err != nil {
		return io.EOF
	}
	return nil
}

// waitRoom waits while too much is waiting for the client's window.
func (st *stream) waitRoom() error {
	c := st.c
	for {
		c.mu.Lock()
		if st.finished || st.reset || c.closed {
			c.mu.Unlock()
			return io.EOF
		}
		if len(st.out) <= maxOut {
			c.mu.Unlock()
			return nil
		}
		readsItself := c.inline == st
		if st.sendWake == nil {
			st.sendWake = make(chan struct{}, 1)
		}
		wake := st.sendWake
		c.mu.Unlock()
		if readsItself {
			if err := c.readFrame(); err != nil {
				c.fail(err)
			}
			continue
		}
		select {
		case <-wake:
		case <-st.ctx.Done():
			return io.EOF
		}
	}
}

// appendHeadersLocked appends the response HEADERS frame if not sent yet.
func (st *stream) appendHeadersLocked(b []byte) []byte {
	if st.headersSent {
		return b
	}
	st.headersSent = true
	var blk []byte
	blk = appendResponseHeaders(blk)
	blk = appendMD(blk, st.header)
	st.header = nil
	b = appendFrameHeader(b, len(blk), frameHeaders, flagEndHeaders, st.id)
	return append(b, blk...)
}

// SetHeader adds response header metadata (sent with the first message or
// SendHeader).
func (st *stream) SetHeader(md metadata.MD) error {
	st.c.mu.Lock()
	defer st.c.mu.Unlock()
	if st.headersSent {
		return status.Error(codes.Internal, "grpc: headers already sent")
	}
	st.header = metadata.Join(st.header, md)
	return nil
}

// SendHeader sends the response headers now.
func (st *stream) SendHeader(md metadata.MD) error {
	if err := st.SetHeader(md); err != nil {
		return err
	}
	return st.c.writeFrames(func(b []byte) []byte { return st.appendHeadersLocked(b) })
}

// SetTrailer adds trailer metadata.
func (st *stream) SetTrailer(md metadata.MD) {
	st.c.mu.Lock()
	st.trailerMD = metadata.Join(st.trailerMD, md)
	st.c.mu.Unlock()
}

// appendMD appends metadata fields: lower-case keys, "-bin" values in
// base64, reserved names skipped.
func appendMD(b []byte, md metadata.MD) []byte {
	for k, vs := range md {
		k = strings.ToLower(k)
		if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") || k == "content-type" || k == "te" {
			continue
		}
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.RawStdEncoding.EncodeToString([]byte(v))
			}
			b = appendHeaderField(b, k, v)
		}
	}
	return b
}

func (st *stream) String() string { return fmt.Sprintf("stream %d", st.id) }
