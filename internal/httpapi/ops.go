package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/errcode"
)

func (a *API) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.cfg.Store.Ping(ctx); err != nil {
		return errcode.New(errcode.Unavailable, "store not reachable")
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

// metrics serves Prometheus metrics to a user who may read the server's
// settings everywhere.
func (a *API) metrics(w http.ResponseWriter, r *http.Request) error {
	if err := a.allowGlobal(r, authz.ServerSettings, authz.Read); err != nil {
		return err
	}
	if a.cfg.Metrics == nil {
		return errcode.New(errcode.NotFound, "metrics are disabled")
	}
	w.Header().Del("Cache-Control")
	a.cfg.Metrics.ServeHTTP(w, r)
	return nil
}

func (a *API) getCA(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"fingerprint": a.cfg.CAFingerprint, "certificate_pem": string(a.cfg.CAPEM)})
	return nil
}
