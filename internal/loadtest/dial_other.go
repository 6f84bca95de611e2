//go:build !linux

package loadtest

import "syscall"

// bindNoPort is a Linux option (see dial_linux.go); elsewhere connections
// from a source address are bound as usual.
func bindNoPort(network, address string, c syscall.RawConn) error { return nil }
