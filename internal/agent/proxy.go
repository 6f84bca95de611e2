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
	"sync"
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

// configuredProxyPause is how long the agent goes its own way after the
// configuration's proxy failed, before trying it again.
const configuredProxyPause = 5 * time.Minute

// configuredProxy is the proxy the configuration sets (agent.proxy). It is
// tried before the agent's own way (command line, enrollment, HTTPS_PROXY);
// when it fails, the agent's own way is used at once and for
// configuredProxyPause, so a wrong proxy in a policy cannot cut agents off
// from the server that would correct it.
type configuredProxy struct {
	mu     sync.Mutex
	url    string // "" none
	failed time.Time
	onFail func(error)
}

// set replaces the proxy ("" none) and what hears of its failures, and
// reports whether the proxy changed.
func (c *configuredProxy) set(u string, onFail func(error)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := u != c.url
	if changed {
		c.url, c.failed = u, time.Time{}
	}
	c.onFail = onFail
	return changed
}

// redactedProxy is a proxy URL fit for logs: its password hidden.
func redactedProxy(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(not a URL)"
	}
	return u.Redacted()
}

// current returns the proxy to try first: "" when there is none, or while
// the agent goes its own way after it failed.
func (c *configuredProxy) current() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.failed.IsZero() && time.Since(c.failed) < configuredProxyPause {
		return ""
	}
	return c.url
}

// fail records that the proxy u failed, unless it has been replaced since,
// and tells who listens.
func (c *configuredProxy) fail(u string, err error) {
	c.mu.Lock()
	var onFail func(error)
	if c.url == u {
		c.failed, onFail = time.Now(), c.onFail
	}
	c.mu.Unlock()
	if onFail != nil {
		onFail(err)
	}
}

// wrap returns a dial function trying the configured proxy, then own.
func (c *configuredProxy) wrap(own func(ctx context.Context, addr string) (net.Conn, error)) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		u := c.current()
		if u == "" {
			return own(ctx, addr)
		}
		// At most half the time left: the agent's own way gets the rest.
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok {
			pctx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(dl)/2))
		}
		conn, err := dialer(u)(pctx, addr)
		cancel()
		if err == nil {
			return conn, nil
		}
		c.fail(u, err)
		return own(ctx, addr)
	}
}

// proxyFallback is the HTTP side of configuredProxy (engine update
// downloads): requests go through the configuration's proxy (via) while it
// works; a request it fails is sent again the agent's own way (own), which
// is used alone for configuredProxyPause.
type proxyFallback struct {
	proxy    *configuredProxy
	via, own http.RoundTripper
}

func (f *proxyFallback) RoundTrip(req *http.Request) (*http.Response, error) {
	u := f.proxy.current()
	if u == "" {
		return f.own.RoundTrip(req)
	}
	resp, err := f.via.RoundTrip(req)
	if err == nil || req.Context().Err() != nil {
		return resp, err
	}
	f.proxy.fail(u, err)
	if req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return nil, err // the body is spent: the caller retries
		}
		body, gerr := req.GetBody()
		if gerr != nil {
			return nil, err
		}
		req = req.Clone(req.Context())
		req.Body = body
	}
	return f.own.RoundTrip(req)
}
