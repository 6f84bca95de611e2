package loadtest

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// bindNoPort lets connect, not bind, choose the source port of a
// connection from a given source address (IP_BIND_ADDRESS_NO_PORT).
//
// Bound first, every connection from 127.0.0.K takes a port that no other
// socket of that address holds, whatever its destination, and the kernel
// finds one by walking the address's bound sockets: with 16,000 agents per
// source address the walks took most of the machine's CPU (perf:
// inet_bind2_bucket_match_addr_any) and the runs collapsed near 80,000
// connections. Deferred to connect, the port only has to be unique for
// the connection's four-tuple.
func bindNoPort(network, address string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	}); cerr != nil {
		return cerr
	}
	return err
}
