package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"

	"google.golang.org/grpc/credentials"
)

// handshakenCreds are grpc-go transport credentials for connections whose
// TLS handshake the tlsAcceptor has already performed: they only report the
// connection's TLS state, so handlers see the same credentials.TLSInfo as
// with credentials.NewTLS.
type handshakenCreds struct{}

func (handshakenCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		c.Close()
		return nil, nil, errors.New("agent connection without TLS")
	}
	return c, tlsAuthInfo(tc), nil
}

func tlsAuthInfo(tc *tls.Conn) credentials.TLSInfo {
	return credentials.TLSInfo{State: tc.ConnectionState(),
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}
}

func (handshakenCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("server-side credentials only")
}

func (handshakenCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.3"}
}

func (c handshakenCreds) Clone() credentials.TransportCredentials { return c }

func (handshakenCreds) OverrideServerName(string) error { return nil }
