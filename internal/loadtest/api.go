package loadtest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// apiClient talks to the server's REST API as the admin; it logs in on
// first use (a run against the echo endpoint with cached identities never
// does).
type apiClient struct {
	base     string
	password string
	c        *http.Client
	mu       sync.Mutex // guards loggedIn: the progress lines read metrics while a scenario calls the API
	loggedIn bool
}

func newAPI(base string, ca *x509.Certificate, password string) *apiClient {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	jar, _ := cookiejar.New(nil)
	return &apiClient{base: strings.TrimSuffix(base, "/"), password: password, c: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 4}}}
}

func (a *apiClient) login() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.loggedIn {
		return nil
	}
	if a.password == "" {
		return errors.New("the admin password is needed: MAMORI_ADMIN_PASSWORD, or DATA/initial-admin-password with --data")
	}
	var sess struct {
		Restriction string `json:"restriction"`
	}
	if err := a.post("/api/v1/session", map[string]string{"username": "admin", "password": a.password}, &sess); err != nil {
		return fmt.Errorf("logging in to %s: %w", a.base, err)
	}
	if sess.Restriction != "" {
		// The generated first password opens only its change.
		return fmt.Errorf("logging in to %s: the admin account must first complete %q (log in once with `mamori login`; then give the new password in MAMORI_ADMIN_PASSWORD), or start a new server with MAMORI_ADMIN_PASSWORD set", a.base, sess.Restriction)
	}
	a.loggedIn = true
	return nil
}

func (a *apiClient) post(path string, body, out any) error {
	return a.do(http.MethodPost, path, body, out)
}

func (a *apiClient) get(path string, out any) error {
	return a.do(http.MethodGet, path, nil, out)
}

// do sends a request with a JSON body (unless nil) and decodes a JSON
// answer into out (unless nil); an answer of 300 or more is an error.
func (a *apiClient) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return err
	}
	rb, err := drain(resp)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if out != nil {
		return json.Unmarshal(rb, out)
	}
	return nil
}

// drain reads and closes an answer; a status of 300 or more is an error.
func drain(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(rb))
	}
	return rb, nil
}

// deletePolicies deletes the policies whose name starts with prefix.
func (a *apiClient) deletePolicies(prefix string) error {
	var r struct {
		Items []struct {
			ID      string `json:"id"`
			Name    string `json:"name"`
			Version int64  `json:"version"`
		} `json:"items"`
	}
	if err := a.get("/api/v1/policies?limit=1000", &r); err != nil {
		return err
	}
	for _, p := range r.Items {
		if strings.HasPrefix(p.Name, prefix) {
			if err := a.do(http.MethodDelete, fmt.Sprintf("/api/v1/policies/%s?version=%d", url.PathEscape(p.ID), p.Version), nil, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *apiClient) token(uses int) (string, error) {
	if err := a.login(); err != nil {
		return "", err
	}
	var r struct{ Token string }
	err := a.post("/api/v1/enrollment-tokens", map[string]any{"ttl": "2h", "uses": uses, "description": "loadtest"}, &r)
	return r.Token, err
}

// wakeGroup wakes every connected computer of a group (paced by the
// server) and returns how many were connected.
func (a *apiClient) wakeGroup(group string) (int, error) {
	if err := a.login(); err != nil {
		return 0, err
	}
	var r struct {
		Connected int `json:"connected"`
	}
	err := a.post("/api/v1/computers/wakeup", map[string]any{"group": group}, &r)
	return r.Connected, err
}

// relogin opens a new session after the server answered 401 (the session
// idled out during a long run).
func (a *apiClient) relogin() error {
	a.mu.Lock()
	a.loggedIn = false
	a.mu.Unlock()
	return a.login()
}

// metricsSource reads a Prometheus text endpoint; gcURL, when set, is a
// pprof base URL used to make the process collect garbage first. With api
// set, the endpoint is the server's API, read with its logged-in client;
// else c reads it (an endpoint without credentials).
type metricsSource struct {
	url   string
	gcURL string
	c     *http.Client
	api   *apiClient
}

// read returns the unlabelled samples, and labelled ones under their full
// text (name{labels}). With gc, the process collects garbage twice first
// (the second cycle shrinks the stacks the first one found oversized), so
// memory figures are live memory, not garbage awaiting collection.
func (m *metricsSource) read(gc bool) (map[string]float64, error) {
	if m == nil || m.url == "" {
		return map[string]float64{}, nil
	}
	if gc && m.gcURL != "" {
		for range 2 {
			r, err := http.Get(m.gcURL + "/debug/pprof/heap?gc=1")
			if err != nil {
				return nil, err
			}
			io.Copy(io.Discard, r.Body)
			r.Body.Close()
		}
	}
	resp, err := m.get()
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", m.url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if f, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = f
		}
	}
	return out, sc.Err()
}

func (m *metricsSource) get() (*http.Response, error) {
	if m.api == nil {
		return m.c.Get(m.url)
	}
	if err := m.api.login(); err != nil {
		return nil, err
	}
	resp, err := m.api.c.Get(m.url)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	resp.Body.Close()
	if err := m.api.relogin(); err != nil {
		return nil, err
	}
	return m.api.c.Get(m.url)
}
