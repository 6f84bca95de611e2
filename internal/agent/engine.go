package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"time"

	"github.com/mamori/mamori/internal/agent/agentcfg"
	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/engine/builtin"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/pki"
	"github.com/mamori/mamori/internal/updates/client"
	"github.com/mamori/mamori/internal/updates/updater"
)

// EngineStateDir is where the agent keeps its detection engine and the
// engine update state (internal/updates/client's layout).
func EngineStateDir(state string) string { return filepath.Join(state, "engine") }

// engineUpdates keeps the engine updater running with the configuration in
// effect: the sources of updates.sources, else the server's built-in mirror
// (announced in the Welcome), with the update interval, splay, proxy and
// rollback depth of the configuration. A change restarts the updater.
//
// Downloads use updates.proxy when the configuration sets it; else
// agent.proxy when it sets that, falling back to the agent's own way as the
// connection does (configuredProxy); else the agent's own way (--proxy,
// enrollment, HTTPS_PROXY).
type engineUpdates struct {
	dir        string
	log        *slog.Logger
	ca         *x509.Certificate // the server's CA: trusted for its mirror
	agentProxy string            // the agent's own proxy (fallback)
	onStatus   func()            // an attempt ended (the inventory changed)

	mu        sync.Mutex
	ctx       context.Context // nil until start
	settings  *agentcfg.Settings
	serverURL string
	rootPin   string
	key       string
	u         *updater.Updater
	stop      context.CancelFunc
	done      chan struct{}
}

func (e *engineUpdates) start(ctx context.Context) {
	e.mu.Lock()
	e.ctx = ctx
	e.mu.Unlock()
	e.reconfigure()
	go func() {
		<-ctx.Done()
		e.mu.Lock()
		defer e.mu.Unlock()
		e.stopLocked()
	}()
}

func (e *engineUpdates) setSettings(s *agentcfg.Settings) {
	e.mu.Lock()
	e.settings = s
	e.mu.Unlock()
	e.reconfigure()
}

// setServer records the server's mirror and root pin (from its Welcome).
func (e *engineUpdates) setServer(rawURL, rootPin string) {
	if rawURL != "" {
		if u, err := url.Parse(rawURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			e.log.Warn("ignoring the server's update mirror address", "url", rawURL)
			rawURL = ""
		}
	}
	e.mu.Lock()
	changed := e.serverURL != rawURL || e.rootPin != rootPin
	e.serverURL, e.rootPin = rawURL, rootPin
	e.mu.Unlock()
	if changed {
		e.reconfigure()
	}
}

// serverMirrorURL completes the mirror address of a Welcome: without a
// host it is on the server the agent connected to (server is "host:port").
func serverMirrorURL(raw, server string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() != "" {
		return raw
	}
	host, _, err := net.SplitHostPort(server)
	if err != nil {
		return raw
	}
	u.Host = net.JoinHostPort(host, u.Port())
	return u.String()
}

// config builds the updater configuration; ok is false when there is no
// update source.
func (e *engineUpdates) configLocked() (updater.Config, string, bool) {
	s := e.settings
	if s == nil {
		s = &agentcfg.Settings{}
	}
	sources := s.UpdateSources
	if len(sources) == 0 && e.serverURL != "" {
		sources = []string{e.serverURL}
	}
	if len(sources) == 0 {
		return updater.Config{}, "", false
	}
	proxy, configured := s.UpdateProxy, ""
	if proxy == "" {
		proxy = e.agentProxy
		if s.Sources["agent.proxy"] != agentcfg.SourceDefault {
			configured = s.Proxy
		}
	}
	interval := s.UpdateInterval
	if interval <= 0 {
		interval = updater.DefaultInterval
	}
	keep := s.RollbackDepth + 1
	if s.RollbackDepth <= 0 {
		keep = client.DefaultKeepVersions
	}
	cfg := updater.Config{Interval: interval, Splay: max(s.UpdateSplay, time.Millisecond)}
	cfg.StateDir, cfg.Sources, cfg.RootSHA256, cfg.KeepVersions = e.dir, sources, e.rootPin, keep
	cfg.Logger = e.log.With("part", "engine-updates")
	cfg.UserAgent = "mamori-agent"
	cfg.HTTPClient = e.httpClient(proxy, configured)
	key := fmt.Sprint(sources, "|", e.rootPin, "|", interval, "|", s.UpdateSplay, "|", proxy, "|", configured, "|", keep)
	return cfg, key, true
}

// httpClient trusts the public roots (hostname checked) and, for the
// management server's mirror, the server's CA (as the agent connection
// does: the chain must lead to the pinned CA). Everything downloaded is
// verified through TUF besides. With a configured proxy, requests go
// through it first and the agent's own way (proxy) when it fails.
func (e *engineUpdates) httpClient(proxy, configured string) *http.Client {
	own := e.transport(proxy)
	if configured == "" {
		return &http.Client{Transport: own}
	}
	u, err := url.Parse(configured)
	if err != nil {
		return &http.Client{Transport: own}
	}
	via := own.Clone()
	via.Proxy = http.ProxyURL(u)
	fallback := &proxyFallback{via: via, own: own, proxy: &configuredProxy{url: configured, onFail: func(err error) {
		e.log.Warn("the configuration's proxy failed for engine updates; downloading the agent's own way for a while",
			"proxy", redactedProxy(configured), "retry_in", configuredProxyPause, "err", err)
	}}}
	return &http.Client{Transport: fallback}
}

// transport is the HTTP transport of update downloads through proxy ("":
// HTTPS_PROXY and the like; "none": direct).
func (e *engineUpdates) transport(proxy string) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = http.ProxyFromEnvironment
	if proxy != "" && proxy != "none" {
		if u, err := url.Parse(proxy); err == nil {
			t.Proxy = http.ProxyURL(u)
		}
	} else if proxy == "none" {
		t.Proxy = nil
	}
	var pinned func([][]byte, [][]*x509.Certificate) error
	if e.ca != nil {
		pinned = pki.VerifyPinnedServer(pki.Fingerprint(e.ca.Raw), e.ca)
	}
	t.TLSClientConfig = &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // checked below: public roots with the host name, or the server's CA
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			opts := x509.VerifyOptions{DNSName: cs.ServerName, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			if err == nil || pinned == nil {
				return err
			}
			raw := make([][]byte, len(cs.PeerCertificates))
			for i, c := range cs.PeerCertificates {
				raw[i] = c.Raw
			}
			return pinned(raw, nil)
		},
	}
	return t
}

func (e *engineUpdates) reconfigure() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx == nil || e.ctx.Err() != nil {
		return
	}
	cfg, key, ok := e.configLocked()
	if key == e.key && (e.u != nil) == ok {
		return
	}
	e.stopLocked()
	e.key = key
	if !ok {
		e.log.Debug("no engine update source configured")
		return
	}
	cfg.OnStatus = func(st client.Status) {
		if st.LastError != "" && st.ConsecutiveFailures > 0 {
			e.log.Warn("engine update failed", "err", st.LastError, "failures", st.ConsecutiveFailures, "next", st.NextAttempt)
		}
		if e.onStatus != nil {
			e.onStatus()
		}
	}
	cfg.OnInstall = func(version uint64, _ string) {
		e.log.Info("detection engine updated", "version", version)
	}
	u, err := updater.New(cfg)
	if err != nil {
		e.log.Error("engine updates cannot start", "err", err)
		return
	}
	ctx, stop := context.WithCancel(e.ctx)
	done := make(chan struct{})
	e.u, e.stop, e.done = u, stop, done
	e.log.Info("engine updates", "sources", cfg.Sources, "interval", cfg.Interval)
	go func() {
		defer close(done)
		u.Run(ctx)
	}()
}

func (e *engineUpdates) stopLocked() {
	if e.stop != nil {
		e.stop()
		<-e.done
	}
	e.u, e.stop, e.done = nil, nil, nil
}

func (e *engineUpdates) current() *updater.Updater {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.u
}

// Update updates the engine now (the engine_update task). An update the
// schedule started meanwhile is waited for.
func (e *engineUpdates) Update(ctx context.Context) (string, error) {
	u := e.current()
	if u == nil {
		return "", errcode.New(errcode.Unavailable, "no engine update source: set updates.sources in a policy or an update mirror on the server")
	}
	for {
		res, err := u.Direct().Update(ctx, client.UpdateOptions{Force: true})
		if errcode.Of(err) == errcode.Conflict { // the schedule's attempt holds the lock
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(500 * time.Millisecond):
				continue
			}
		}
		if e.onStatus != nil {
			e.onStatus()
		}
		if err != nil {
			return "", err
		}
		switch res.Method {
		case "none":
			out := fmt.Sprintf("engine %d is up to date (%s)", res.From, res.Source)
			if res.Note != "" {
				out = fmt.Sprintf("engine %d kept: %s", res.From, res.Note)
			}
			return out, nil
		default:
			return fmt.Sprintf("engine updated from %d to %d by %s from %s: %d bytes in %d requests, %.1f s",
				res.From, res.To, res.Method, res.Source, res.BytesDownloaded, res.Requests, res.Seconds), nil
		}
	}
}

// Rollback makes the previous kept engine current and holds automatic
// updates (the engine_rollback task).
func (e *engineUpdates) Rollback(ctx context.Context) (string, error) {
	var d *client.Direct
	if u := e.current(); u != nil {
		d = u.Direct()
	} else {
		var err error
		if d, err = client.New(client.Config{StateDir: e.dir, Logger: e.log}); err != nil {
			return "", err
		}
	}
	r, err := d.Rollback(0)
	if e.onStatus != nil {
		e.onStatus()
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("engine rolled back from %d to %d; automatic updates held until %s",
		r.From, r.To, r.HoldUntil.UTC().Format(time.RFC3339)), nil
}

// fill reports the engine and its updates in the inventory.
func (e *engineUpdates) fill(ai *agentproto.AgentInfo) {
	var st client.Status
	var err error
	if u := e.current(); u != nil {
		st = u.Status()
	} else if st, err = client.ReadStatus(e.dir, time.Now()); err != nil {
		st = client.Status{EngineVersion: builtin.Version, Builtin: true}
	}
	e.mu.Lock()
	configured := e.u != nil
	e.mu.Unlock()
	ai.EngineVersion = st.EngineVersion
	ai.EngineBuiltin = st.Builtin
	ai.EngineUpdateState = st.State
	if !configured && st.State != "held" {
		ai.EngineUpdateState = "no_source"
	}
	ai.EngineLastSuccessUnix = unixOrZero(st.LastSuccess)
	ai.EngineNextAttemptUnix = unixOrZero(st.NextAttempt)
	ai.EnginePublishedUnix = unixOrZero(st.EnginePublished)
	ai.EngineLastError = clip(st.LastError, 512)
	if st.ConsecutiveFailures == 0 {
		ai.EngineLastError = ""
	}
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	// Seconds: the section is re-sent only when something a person would
	// notice changed.
	return t.Unix()
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
