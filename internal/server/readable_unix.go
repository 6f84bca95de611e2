//go:build unix

package server

import (
	"errors"
	"net"
	"syscall"
)

// waitReadable waits, without consuming anything, until c has data to read
// (or its deadline passes, or it fails).
func waitReadable(c net.Conn) bool {
	if cc, ok := c.(*countingConn); ok {
		c = cc.Conn
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	var buf [1]byte
	ready := false
	err = rc.Read(func(fd uintptr) bool {
		// The poller only wakes a reader that has seen EAGAIN, so look
		// (MSG_PEEK leaves the byte in place).
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
			return false
		}
		ready = err == nil && n > 0
		return true
	})
	return err == nil && ready
}
