package httpapi

import (
	"net/http"

	"github.com/mamori/mamori/internal/enrollment"
	"github.com/mamori/mamori/internal/store"
)

type tokenJSON struct {
	ID          string   `json:"id"`
	Token       string   `json:"token,omitempty"` // only in the creation response
	Group       groupRef `json:"group"`
	Description string   `json:"description"`
	ExpiresAt   *string  `json:"expires_at"`
	UsesAllowed int      `json:"uses_allowed"` // 0: unlimited
	Uses        int      `json:"uses"`
	CreatedBy   string   `json:"created_by"`
	CreatedAt   *string  `json:"created_at"`
	RevokedAt   *string  `json:"revoked_at"`
}

func tokenView(t *store.EnrollmentToken, groups *store.GroupTree) tokenJSON {
	g := groupRef{ID: t.GroupID}
	if gr, ok := groups.Get(t.GroupID); ok {
		g.Path = gr.Path
	}
	return tokenJSON{ID: t.ID, Group: g, Description: t.Description, ExpiresAt: timeJSON(t.ExpiresAt), UsesAllowed: t.UsesAllowed,
		Uses: t.Uses, CreatedBy: t.CreatedBy, CreatedAt: timeJSON(t.CreatedAt), RevokedAt: timeJSON(t.RevokedAt)}
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request) error {
	ts, err := a.cfg.Store.ListEnrollmentTokens(r.Context())
	if err != nil {
		return err
	}
	groups, err := a.cfg.Store.Groups(r.Context())
	if err != nil {
		return err
	}
	items := make([]tokenJSON, 0, len(ts))
	for _, t := range ts {
		items = append(items, tokenView(t, groups))
	}
	writeJSON(w, http.StatusOK, list(items, len(items)))
	return nil
}

type createTokenRequest struct {
	Group       string `json:"group"` // static group path; default Lost & Found
	TTL         string `json:"ttl"`   // Go duration, default 24h
	Uses        int    `json:"uses"`  // 0: unlimited
	Description string `json:"description"`
}

func (a *API) createToken(w http.ResponseWriter, r *http.Request) error {
	var req createTokenRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	ttl, err := durationParam(req.TTL)
	if err != nil {
		return err
	}
	nt, err := a.cfg.Enrollment.CreateToken(r.Context(), enrollment.TokenParams{
		GroupPath: req.Group, TTL: ttl, Uses: req.Uses, Description: req.Description, CreatedBy: principal(r).Username,
	})
	if err != nil {
		return err
	}
	groups, err := a.cfg.Store.Groups(r.Context())
	if err != nil {
		return err
	}
	v := tokenView(nt.Token, groups)
	v.Token = nt.Secret
	a.cfg.Log.Info("enrollment token created", "token", nt.Token.ID, "group", nt.GroupPath, "by", principal(r).Username)
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func (a *API) revokeToken(w http.ResponseWriter, r *http.Request) error {
	if err := a.cfg.Store.RevokeEnrollmentToken(r.Context(), r.PathValue("id"), a.cfg.Now()); err != nil {
		return err
	}
	a.cfg.Log.Info("enrollment token revoked", "token", r.PathValue("id"), "by", principal(r).Username)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
