package httpapi

import (
	"net/http"

	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/retention"
)

type securityJSON struct {
	auth.Policy
	Version int64 `json:"version"`
}

// getSecurity: GET /api/v1/settings/security.
func (a *API) getSecurity(w http.ResponseWriter, r *http.Request) error {
	if err := a.allowGlobal(r, authz.ServerSettings, authz.Read); err != nil {
		return err
	}
	p, v, err := auth.LoadPolicy(r.Context(), a.cfg.Store)
	if err != nil {
		return err
	}
	writeETag(w, v)
	writeJSON(w, http.StatusOK, securityJSON{p, v})
	return nil
}

type putSecurityRequest struct {
	auth.Policy
	Version *int64 `json:"version"`
}

// putSecurity: PUT /api/v1/settings/security — the whole policy (the audit
// retention among it: changing it is audited like everything else).
func (a *API) putSecurity(w http.ResponseWriter, r *http.Request) error {
	var req putSecurityRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	auditObject(r, auth.PolicyKey, "security policy")
	if err := a.allowGlobal(r, authz.ServerSettings, authz.Write); err != nil {
		return err
	}
	version, err := versionOf(r, req.Version)
	if err != nil {
		return err
	}
	before, _, err := auth.LoadPolicy(r.Context(), a.cfg.Store)
	if err != nil {
		return err
	}
	v, err := auth.SavePolicy(r.Context(), a.cfg.Store, req.Policy, version)
	if err != nil {
		return err
	}
	after := req.Policy.Defaults()
	auditDiff(r, before, after)
	writeETag(w, v)
	writeJSON(w, http.StatusOK, securityJSON{after, v})
	return nil
}

type retentionJSON struct {
	retention.Settings
	Version int64 `json:"version"`
}

// getRetention: GET /api/v1/settings/retention — how long events,
// resolved detections and finished task runs are kept.
func (a *API) getRetention(w http.ResponseWriter, r *http.Request) error {
	if err := a.allowGlobal(r, authz.ServerSettings, authz.Read); err != nil {
		return err
	}
	s, v, err := retention.Load(r.Context(), a.cfg.Store)
	if err != nil {
		return err
	}
	writeETag(w, v)
	writeJSON(w, http.StatusOK, retentionJSON{s, v})
	return nil
}

type putRetentionRequest struct {
	retention.Settings
	Version *int64 `json:"version"`
}

// putRetention: PUT /api/v1/settings/retention — all the periods (a zero
// or missing one takes its default); the next hourly pass applies them.
func (a *API) putRetention(w http.ResponseWriter, r *http.Request) error {
	var req putRetentionRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	auditObject(r, retention.SettingsKey, "retention")
	if err := a.allowGlobal(r, authz.ServerSettings, authz.Write); err != nil {
		return err
	}
	version, err := versionOf(r, req.Version)
	if err != nil {
		return err
	}
	before, _, err := retention.Load(r.Context(), a.cfg.Store)
	if err != nil {
		return err
	}
	v, err := retention.Save(r.Context(), a.cfg.Store, req.Settings, version)
	if err != nil {
		return err
	}
	after := req.Settings.Defaults()
	auditDiff(r, before, after)
	writeETag(w, v)
	writeJSON(w, http.StatusOK, retentionJSON{after, v})
	return nil
}
