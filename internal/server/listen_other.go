//go:build !unix

package server

import (
	"net"

	"github.com/mamori/mamori/internal/errcode"
)

func listen(addr string, reusePort bool) (net.Listener, error) {
	if reusePort {
		return nil, errcode.New(errcode.Invalid, "--reuse-port is not supported on this platform")
	}
	return net.Listen("tcp", addr)
}
