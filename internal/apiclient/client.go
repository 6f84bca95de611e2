// Package apiclient is a small typed client of Mamori's REST API (/api/v1),
// used by the administration commands of cmd/mamori.
//
// Trust: the server's API certificate is normally signed by its internal CA,
// which the client pins by fingerprint (Trust.CAFingerprint, the value of
// GET /api/v1/ca and of "mamori ca fingerprint"); the pin is checked during
// the TLS handshake, so nothing (no password, no token) is sent to a server
// that fails it. Trust.CAFile trusts a CA certificate file instead (with the
// usual host name check), and without either the system roots apply.
//
// Errors: a refusal by the server is returned as an *errcode.Error carrying
// the server's code and message (errcode.FromHTTP when the body has none);
// failing to talk to the server at all (network, TLS trust, timeout) is a
// *ConnError.
//
// The client imports nothing server-side (store, httpapi, auth): the JSON
// shapes are restated in types.go.
package apiclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/pki"
)

// Limits.
const (
	// MaxRequestBytes is the largest JSON body sent; the server refuses
	// larger ones (httpapi.MaxBodyBytes).
	MaxRequestBytes = 64 << 10
	// MaxResponseBytes is the largest JSON response read (a computer with
	// a large software inventory is the biggest).
	MaxResponseBytes = 32 << 20
	// MaxErrorBytes is the most read of an error response.
	MaxErrorBytes = 64 << 10
	// MaxExportBytes bounds a streamed audit export.
	MaxExportBytes = 4 << 30
	// DefaultTimeout is the default time for one request, from sending to
	// the end of the response body.
	DefaultTimeout = 30 * time.Second
	// ExportTimeout is the time allowed for an audit export.
	ExportTimeout = 10 * time.Minute
	// SessionCookie is the cookie of a logged-in session.
	SessionCookie = "mamori_session"
)

// Trust says which server certificates the client accepts. At most one
// field may be set; none means the system's roots.
type Trust struct {
	// CAFingerprint pins the server's CA: "sha256:<hex>" of its DER
	// certificate. The server's chain must contain that CA and the leaf
	// must be signed by it; host names are not checked (the pin is the
	// anchor, so the server can be reached under any address).
	CAFingerprint string
	// CAFile is a PEM file of CA certificates to trust (host names are
	// checked as usual).
	CAFile string
}

// TLSConfig returns the client TLS configuration for t.
func (t Trust) TLSConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case t.CAFingerprint != "" && t.CAFile != "":
		return nil, errcode.New(errcode.Invalid, "give a CA fingerprint or a CA file, not both")
	case t.CAFingerprint != "":
		pin, err := pki.ParseFingerprint(t.CAFingerprint)
		if err != nil {
			return nil, err
		}
		verify := pki.VerifyPinnedServer(pin, nil)
		// Normal verification is replaced by the pin. VerifyConnection
		// (unlike VerifyPeerCertificate) also runs on resumed sessions.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			raw := make([][]byte, len(cs.PeerCertificates))
			for i, c := range cs.PeerCertificates {
				raw[i] = c.Raw
			}
			return verify(raw, nil)
		}
	case t.CAFile != "":
		b, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, errcode.New(errcode.Invalid, "reading the CA file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, errcode.New(errcode.Invalid, "%s holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// NewHTTPClient returns an HTTP client trusting servers as t says. It does
// not follow redirects (credentials must not travel elsewhere) and honours
// HTTPS_PROXY.
func NewHTTPClient(t Trust) (*http.Client, error) {
	tc, err := t.TLSConfig()
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       tc,
			TLSHandshakeTimeout:   10 * time.Second,
			MaxIdleConnsPerHost:   2,
			IdleConnTimeout:       30 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// NormalizeURL checks a server address given by a user and returns its
// canonical form "https://host:port" (no path). "host:8443" gets https://;
// plain http is refused: tokens and passwords must not cross a network in
// clear text.
func NormalizeURL(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errcode.New(errcode.Invalid, "the server URL is empty")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return "", errcode.New(errcode.Invalid, "%q is not a server URL like https://mamori.example.net:8443", s)
	}
	if u.Scheme != "https" {
		return "", errcode.New(errcode.Invalid, "the server URL must use https (the API is served over TLS only)")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.Trim(u.Path, "/") != "" {
		return "", errcode.New(errcode.Invalid, "the server URL must be only https://HOST[:PORT]")
	}
	return "https://" + u.Host, nil
}

// Client performs single requests against one server. The zero Timeout
// takes DefaultTimeout; a nil HTTP takes http.DefaultClient (system roots).
type Client struct {
	// BaseURL is "https://host:port" (see NormalizeURL).
	BaseURL string
	// Token is a personal API token (mmt_...), sent as a Bearer token.
	// When empty, the session opened by Login is used.
	Token string
	// HTTP is the client doing the requests; see NewHTTPClient.
	HTTP *http.Client
	// Timeout bounds each request; default DefaultTimeout.
	Timeout time.Duration

	session string // session cookie value from Login
}

// New returns a client of the server at baseURL (normalised), trusting its
// certificate as t says.
func New(baseURL, token string, t Trust) (*Client, error) {
	u, err := NormalizeURL(baseURL)
	if err != nil {
		return nil, err
	}
	hc, err := NewHTTPClient(t)
	if err != nil {
		return nil, err
	}
	return &Client{BaseURL: u, Token: token, HTTP: hc}, nil
}

// ConnError is a failure to exchange with the server at all: it could not
// be reached, its certificate was not trusted, or the exchange timed out.
// Nothing the server decided; credentials may not have been sent.
type ConnError struct {
	URL string
	Err error
}

func (e *ConnError) Error() string {
	var pin *pki.PinMismatchError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	switch {
	case errors.As(e.Err, &pin):
		return fmt.Sprintf("%s: the server's CA does not match the CA fingerprint %s; nothing was sent (compare with `mamori ca fingerprint --data DIR` on the server)", e.URL, pin.Pin)
	case errors.As(e.Err, &unknown):
		return fmt.Sprintf("%s: the server's certificate is not trusted (%v); pin its CA with --ca-fingerprint sha256:... (printed by `mamori ca fingerprint --data DIR`) or give --ca-file", e.URL, e.Err)
	case errors.As(e.Err, &host):
		return fmt.Sprintf("%s: %v; use an address the certificate names, or pin the CA with --ca-fingerprint", e.URL, e.Err)
	case errors.Is(e.Err, context.DeadlineExceeded):
		return fmt.Sprintf("%s: no answer in time (%v)", e.URL, e.Err)
	}
	return fmt.Sprintf("cannot reach %s: %v", e.URL, e.Err)
}

func (e *ConnError) Unwrap() error { return e.Err }

// request is one API call.
type request struct {
	method string
	path   string // starting with /api/v1/
	query  url.Values
	body   any // marshalled to JSON when non-nil
	header http.Header
}

// send performs r and returns the successful response with its body still
// open; the caller closes it. Error statuses become *errcode.Error.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return nil, err
		}
		if len(b) > MaxRequestBytes {
			return nil, errcode.New(errcode.TooLarge, "request body larger than %d bytes", MaxRequestBytes)
		}
		body = bytes.NewReader(b)
	}
	u := c.BaseURL + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, errcode.New(errcode.Invalid, "bad request URL %q", u)
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}
	req.Header.Set("User-Agent", "mamori-cli")
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case c.Token != "":
		req.Header.Set("Authorization", "Bearer "+c.Token)
	case c.session != "":
		req.AddCookie(&http.Cookie{Name: SessionCookie, Value: c.session})
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, &ConnError{URL: c.BaseURL, Err: err}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, c.errorFrom(resp)
}

// errorFrom turns an error response into an *errcode.Error: the server's
// code and message when the body has the API's error shape, else the code
// errcode.FromHTTP gives the status.
func (c *Client) errorFrom(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxErrorBytes))
	var eb struct {
		Error struct {
			Code    errcode.Code `json:"code"`
			Message string       `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &eb) == nil && eb.Error.Code != "" {
		msg := eb.Error.Message
		if msg == "" {
			msg = string(eb.Error.Code)
		}
		return &errcode.Error{Code: eb.Error.Code, Message: msg}
	}
	msg := fmt.Sprintf("the server answered %s", resp.Status)
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		msg += " to " + resp.Header.Get("Location") + " (not followed; is the URL that of the Mamori API?)"
	}
	return &errcode.Error{Code: errcode.FromHTTP(resp.StatusCode), Message: msg}
}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

// call performs r and returns the response body (nil for 204).
func (c *Client) call(ctx context.Context, r request) ([]byte, *http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	resp, err := c.send(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, nil, &ConnError{URL: c.BaseURL, Err: err}
	}
	if len(b) > MaxResponseBytes {
		return nil, nil, errcode.New(errcode.TooLarge, "response larger than %d bytes", MaxResponseBytes)
	}
	return b, resp, nil
}

// rawSetter is implemented by result types embedding RawJSON.
type rawSetter interface{ setRaw([]byte) }

// callJSON performs r and decodes the JSON answer into out (if non-nil);
// out's RawJSON, if it has one, keeps the body.
func (c *Client) callJSON(ctx context.Context, r request, out any) error {
	b, resp, err := c.call(ctx, r)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		return errcode.New(errcode.Internal, "the server answered %s with %q instead of JSON", r.path, resp.Header.Get("Content-Type"))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decoding the answer to %s %s: %w", r.method, r.path, err)
	}
	if rs, ok := out.(rawSetter); ok {
		rs.setRaw(b)
	}
	return nil
}

// RawJSON keeps the response body a result was decoded from, for callers
// that show the API's own JSON. It is set on the object a method returns
// (not on the items inside a list).
type RawJSON struct{ raw json.RawMessage }

func (r *RawJSON) setRaw(b []byte) { r.raw = b }

// JSON returns the response body the object was decoded from.
func (r *RawJSON) JSON() json.RawMessage { return r.raw }

// Session returns the session cookie value of a logged-in client ("" for
// none).
func (c *Client) Session() string { return c.session }
