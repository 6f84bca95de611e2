package agent

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// proxyFor returns the proxy URL to reach addr: the explicit one if set,
// else HTTPS_PROXY/NO_PROXY from the environment (as curl and Go read them;
// loopback addresses are never proxied that way). nil means direct.
func proxyFor(explicit, addr string) (*url.URL, error) {
	if explicit != "" {
		u, err := url.Parse(explicit)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("proxy %q must be an http:// or https:// URL", explicit)
		}
		return u, nil
	}
	return httpproxy.FromEnvironment().ProxyFunc()(&url.URL{Scheme: "https", Host: addr})
}

// dialer returns a dial function that goes through an HTTP CONNECT proxy
// when one applies to the address.
func dialer(explicitProxy string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		d.KeepAlive = 30 * time.Second
		p, err := proxyFor(explicitProxy, addr)
		if err != nil {
			return nil, err
		}
		if p == nil {
			return d.DialContext(ctx, "tcp", addr)
		}
		return dialConnect(ctx, &d, p, addr)
	}
}

// dialConnect opens a tunnel to addr through the HTTP proxy p.
func dialConnect(ctx context.Context, d *net.Dialer, p *url.URL, addr string) (net.Conn, error) {
	host := p.Host
	if p.Port() == "" {
		host = net.JoinHostPort(p.Hostname(), map[string]string{"http": "80", "https": "443"}[p.Scheme])
	}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", p.Redacted(), err)
	}
	if p.Scheme == "https" {
		return nil, fmt.Errorf("proxy %s: https:// proxies are not supported yet; use http://", p.Redacted())
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: mamori-agent\r\n"
	if p.User != nil {
		pw, _ := p.User.Password()
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(p.User.Username()+":"+pw)) + "\r\n"
	}
	if _, err := conn.Write([]byte(req + "\r\n")); err != nil {
		conn.Close()
		return nil, fmt.Errorf("proxy %s: %w", p.Redacted(), err)
	}
	br := bufio.NewReaderSize(conn, 1024)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("proxy %s: reading CONNECT response: %w", p.Redacted(), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		conn.Close()
		return nil, fmt.Errorf("proxy %s refused the tunnel to %s: %s", p.Redacted(), addr, strings.TrimSpace(resp.Status))
	}
	conn.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		// Bytes from the far end that came with the proxy's answer.
		return &bufferedConn{Conn: conn, r: br}, nil
	}
	return conn, nil
}

// bufferedConn reads what the proxy handshake buffered before the socket.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
