//go:build !unix

package server

import "net"

// waitReadable is a no-op here: the handshake slot is taken at once.
func waitReadable(net.Conn) bool { return true }
