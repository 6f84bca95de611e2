package grpclite

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"time"
)

// HTTP/2 (RFC 9113) frame types, flags, settings and error codes.
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	framePriority     = 0x2
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20

	settingHeaderTableSize      = 0x1
	settingEnablePush           = 0x2
	settingMaxConcurrentStreams = 0x3
	settingInitialWindowSize    = 0x4
	settingMaxFrameSize         = 0x5
	settingMaxHeaderListSize    = 0x6

	errCodeNo                 = 0x0
	errCodeProtocol           = 0x1
	errCodeInternal           = 0x2
	errCodeFlowControl        = 0x3
	errCodeStreamClosed       = 0x5
	errCodeFrameSize          = 0x6
	errCodeRefusedStream      = 0x7
	errCodeCancel             = 0x8
	errCodeCompression        = 0x9
	errCodeEnhanceYourCalm    = 0xb
	defaultWindow             = 65535
	maxWindow                 = 1<<31 - 1
	defaultMaxFrameSize       = 16384
	maxFrameSizeLimit         = 1<<24 - 1
	frameHeaderLen            = 9
	clientPreface             = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	grpcMessagePrefixLen      = 5
	windowUpdateThresholdFrac = 4 // send WINDOW_UPDATE once a quarter of a window is consumed
)

// connError is a connection error: GOAWAY with code, then close.
type connError struct {
	code uint32
	msg  string
}

func (e connError) Error() string {
	return fmt.Sprintf("http2: connection error %d: %s", e.code, e.msg)
}

func protocolError(format string, a ...any) error {
	return connError{code: errCodeProtocol, msg: fmt.Sprintf(format, a...)}
}

// appendFrameHeader appends a frame header.
func appendFrameHeader(b []byte, length int, typ, flags byte, stream uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), typ, flags,
		byte(stream>>24)&0x7f, byte(stream>>16), byte(stream>>8), byte(stream))
}

func appendUint32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

// HPACK encoding (RFC 7541) of response headers: literals without
// indexing and without Huffman coding, so the server keeps no encoder
// state; :status 200 uses the static table.

// appendHPACKInt appends an integer with an n-bit prefix whose high bits
// are first.
func appendHPACKInt(b []byte, first byte, n uint, v uint64) []byte {
	limit := uint64(1)<<n - 1
	if v < limit {
		return append(b, first|byte(v))
	}
	b = append(b, first|byte(limit))
	v -= limit
	for v >= 128 {
		b = append(b, byte(v&0x7f)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func appendHPACKString(b []byte, s string) []byte {
	b = appendHPACKInt(b, 0, 7, uint64(len(s)))
	return append(b, s...)
}

// appendHeaderField appends name: value as a literal without indexing
// with a new name.
func appendHeaderField(b []byte, name, value string) []byte {
	b = append(b, 0x00)
	b = appendHPACKString(b, name)
	return appendHPACKString(b, value)
}

const hpackStatus200 = 0x88 // indexed field 8 of the static table: ":status: 200"

// responseHeaders is the header block that opens every gRPC response.
func appendResponseHeaders(b []byte) []byte {
	b = append(b, hpackStatus200)
	return appendHeaderField(b, "content-type", "application/grpc")
}

// appendTrailers appends grpc-status and grpc-message.
func appendTrailers(b []byte, code uint32, msg string) []byte {
	b = appendHeaderField(b, "grpc-status", strconv.FormatUint(uint64(code), 10))
	if msg != "" {
		b = appendHeaderField(b, "grpc-message", percentEncode(msg))
	}
	return b
}

// parseTimeout reads a grpc-timeout value: at most 8 digits and a unit.
func parseTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	const maxHours = 1 << 20 // far beyond any call; avoids overflow
	if unit >= time.Hour && n > maxHours || unit < time.Hour && n > int64(maxHours*time.Hour/unit) {
		return maxHours * time.Hour, true
	}
	return time.Duration(n) * unit, true
}
