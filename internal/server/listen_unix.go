//go:build unix

package server

import (
	"context"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// listen binds addr; with reusePort several servers (processes sharing a
// PostgreSQL store) bind the same address and the kernel spreads new
// connections over them (SO_REUSEPORT).
func listen(addr string, reusePort bool) (net.Listener, error) {
	lc := net.ListenConfig{}
	if reusePort {
		lc.Control = func(network, address string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	return lc.Listen(context.Background(), "tcp", addr)
}
