package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/updates/mirror"
)

// MirrorDir is the built-in update mirror's directory under the data
// directory.
const MirrorDir = "mirror"

// UpdatesPath is where the API listener serves the built-in mirror.
const UpdatesPath = "/updates"

// updatesMirror is the management server's built-in update mirror: it
// verifies the upstream repository through TUF (internal/updates/mirror)
// and serves it to agents on the API listener under /updates/. Agents use
// it when their configuration names no update source; the Welcome tells
// them its address and the root they pin.
type updatesMirror struct {
	m       *mirror.Mirror
	url     string // announced to agents; host empty: the one the agent dialled
	pinFlag string

	mu  sync.Mutex
	pin string // sha256 of the mirror's verified 1.root.json, once known
}

// updatesRoot checks the built-in mirror's settings and returns the root
// file given (nil when none). New calls it before it creates anything, so
// that a first start with a missing root of trust leaves no CA behind.
func updatesRoot(cfg Config) ([]byte, error) {
	var root []byte
	if cfg.UpdatesRootFile != "" {
		b, err := os.ReadFile(cfg.UpdatesRootFile)
		if err != nil {
			return nil, errcode.New(errcode.Invalid, "update root: %v", err)
		}
		root = b
	}
	if cfg.UpdatesRootSHA256 == "" && root == nil {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, MirrorDir, "metadata", "1.root.json")); err != nil {
			return nil, errcode.New(errcode.Invalid, "--updates-upstream needs --updates-root-sha256 (the repository's 1.root.json) or --updates-root FILE on first use")
		}
	}
	if cfg.UpdatesURL == "" {
		if _, _, err := net.SplitHostPort(cfg.APIListen); err != nil {
			return nil, errcode.New(errcode.Invalid, "API listen address: %v", err)
		}
	}
	return root, nil
}

// newUpdatesMirror builds the built-in mirror; root is what updatesRoot
// returned for cfg (New checks it before creating anything).
func newUpdatesMirror(cfg Config, s *Server, root []byte) (*updatesMirror, error) {
	dir := filepath.Join(cfg.DataDir, MirrorDir)
	m, err := mirror.New(mirror.Config{
		Dir: dir, Upstream: cfg.UpdatesUpstream, TrustedRoot: root, RootSHA256: cfg.UpdatesRootSHA256,
		SyncInterval: cfg.UpdatesSyncInterval, Rate: cfg.UpdatesRate, ClientRate: cfg.UpdatesClientRate,
		Logger: s.log.With("part", "mirror"), Registerer: s.metrics.reg,
	})
	if err != nil {
		return nil, fmt.Errorf("update mirror: %w", err)
	}
	u := &updatesMirror{m: m, url: cfg.UpdatesURL, pinFlag: strings.TrimPrefix(strings.ToLower(cfg.UpdatesRootSHA256), "sha256:")}
	if u.url == "" {
		_, port, err := net.SplitHostPort(cfg.APIListen)
		if err != nil {
			return nil, errcode.New(errcode.Invalid, "API listen address: %v", err)
		}
		u.url = "https://" + net.JoinHostPort("", port) + UpdatesPath
	}
	return u, nil
}

// welcome returns what the Welcome announces: the mirror's address and the
// root pin.
func (u *updatesMirror) welcome() (string, string) {
	if u == nil {
		return "", ""
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pin == "" {
		// 1.root.json is immutable once the mirror verified it.
		if b, err := os.ReadFile(filepath.Join(u.m.Dir(), "metadata", "1.root.json")); err == nil {
			sum := sha256.Sum256(b)
			u.pin = hex.EncodeToString(sum[:])
		}
	}
	if u.pin != "" {
		return u.url, u.pin
	}
	return u.url, u.pinFlag
}

// run syncs the mirror until ctx ends (failures are logged; the mirror
// keeps serving what it verified last).
func (u *updatesMirror) run(ctx context.Context) { u.m.Run(ctx) }

// withUpdates serves the mirror under /updates/ and everything else with
// next.
func withUpdates(u *updatesMirror, next http.Handler) http.Handler {
	if u == nil {
		return next
	}
	files := http.StripPrefix(UpdatesPath, u.m.Handler())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, UpdatesPath+"/") {
			// An engine download at a capped rate outlasts the API's
			// write timeout; the mirror cuts stalled transfers itself.
			http.NewResponseController(w).SetWriteDeadline(time.Time{})
			files.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}
