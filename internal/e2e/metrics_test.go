package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// A Prometheus server scrapes the API's /metrics with an API token, or the
// --metrics-listen address without one; nobody else gets the metrics.
func TestMetrics_APINeedsATokenMetricsListenDoesNot(t *testing.T) {
	t.Parallel()
	metricsAddr := freeAddr(t)
	s := startServer(t, "--metrics-listen", metricsAddr)

	get := func(c *http.Client, url, bearer string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	anonymous := s.client() // trusts the CA, holds no session
	if code, body := get(anonymous.http, anonymous.base+"/metrics", ""); code != http.StatusUnauthorized || strings.Contains(body, "mamori_") {
		t.Fatalf("API /metrics without credentials: %d %.200s", code, body)
	}
	var tok struct{ Token string }
	if code := s.api.do(t, "POST", "/api/v1/tokens", map[string]string{"name": "prometheus", "ttl": "1h"}, &tok); code != http.StatusCreated || tok.Token == "" {
		t.Fatalf("creating an API token: %d %+v", code, tok)
	}
	if code, body := get(anonymous.http, anonymous.base+"/metrics", tok.Token); code != http.StatusOK || !strings.Contains(body, "mamori_agents_connected") {
		t.Fatalf("API /metrics with a token: %d %.200s", code, body)
	}
	// The private listener: plain HTTP, no credentials, only /metrics.
	if code, body := get(http.DefaultClient, "http://"+metricsAddr+"/metrics", ""); code != http.StatusOK || !strings.Contains(body, "mamori_agents_connected") {
		t.Fatalf("--metrics-listen /metrics: %d %.200s", code, body)
	}
	for _, path := range []string{"/api/v1/computers", "/debug/pprof/", "/"} {
		if code, _ := get(http.DefaultClient, "http://"+metricsAddr+path, ""); code != http.StatusNotFound {
			t.Errorf("--metrics-listen %s: %d, want 404", path, code)
		}
	}
}
