package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/enrollment"
	"github.com/mamori/mamori/internal/store"
)

type tokenStore interface {
	ListEnrollmentTokens(ctx context.Context) ([]*store.EnrollmentToken, error)
	EnrollmentTokenByID(ctx context.Context, id string) (*store.EnrollmentToken, error)
	RevokeEnrollmentToken(ctx context.Context, id string, now time.Time) error
}

type tokenJSON struct {
	ID          string   `json:"id"`
	Token       string   `json:"token,omitempty"` // only in the creation response
	Group       groupRef `json:"group"`           // where enrolled computers land
	AccessGroup groupRef `json:"access_group"`    // where the token itself lives
	Description string   `json:"description"`
	ExpiresAt   *string  `json:"expires_at"`
	UsesAllowed int      `json:"uses_allowed"` // 0: unlimited
	Uses        int      `json:"uses"`
	CreatedBy   string   `json:"created_by"`
	CreatedAt   *string  `json:"created_at"`
	RevokedAt   *string  `json:"revoked_at"`
}

func tokenView(t *store.EnrollmentToken, groups *store.GroupTree) tokenJSON {
	ref := func(id string) groupRef {
		g := groupRef{ID: id}
		if gr, ok := groups.Get(id); ok {
			g.Path = gr.Path
		}
		return g
	}
	return tokenJSON{ID: t.ID, Group: ref(t.GroupID), AccessGroup: ref(t.AccessGroupID), Description: t.Description, ExpiresAt: timeJSON(t.ExpiresAt), UsesAllowed: t.UsesAllowed,
		Uses: t.Uses, CreatedBy: t.CreatedBy, CreatedAt: timeJSON(t.CreatedAt), RevokedAt: timeJSON(t.RevokedAt)}
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request) error {
	visible, err := a.scope(r, authz.EnrollmentTokens, authz.Read)
	if err != nil {
		return err
	}
	in := map[string]bool{}
	for _, g := range visible {
		in[g] = true
	}
	ts, err := a.cfg.Store.ListEnrollmentTokens(r.Context())
	if err != nil {
		return err
	}
	groups, err := a.groups(r)
	if err != nil {
		return err
	}
	items := make([]tokenJSON, 0, len(ts))
	for _, t := range ts {
		if in[t.AccessGroupID] {
			items = append(items, tokenView(t, groups))
		}
	}
	writeJSON(w, http.StatusOK, list(items, len(items)))
	return nil
}

type createTokenRequest struct {
	Group       string `json:"group"`        // static group for enrolled computers; default Lost & Found
	AccessGroup string `json:"access_group"` // where the token lives; default the creator's home group
	TTL         string `json:"ttl"`          // Go duration, default 24h
	Uses        int    `json:"uses"`         // 0: unlimited
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
	groups, err := a.groups(r)
	if err != nil {
		return err
	}
	target, err := a.resolveGroup(r, orDefault(req.Group, "All/Lost & Found"))
	if err != nil {
		return err
	}
	access, ok := groups.Get(principal(r).HomeGroupID)
	if !ok {
		access, _ = groups.Get(store.GroupAll)
	}
	if req.AccessGroup != "" {
		if access, err = a.resolveGroup(r, req.AccessGroup); err != nil {
			return err
		}
	}
	// Write on tokens where the token lives, use on computers where the
	// computers it enrolls will land.
	if err := a.allow(r, authz.EnrollmentTokens, authz.Write, access.ID); err != nil {
		return err
	}
	if err := a.allow(r, authz.Computers, authz.Use, target.ID); err != nil {
		return err
	}
	nt, err := a.cfg.Enrollment.CreateToken(r.Context(), enrollment.TokenParams{
		GroupPath: target.Path, AccessGroupID: access.ID, TTL: ttl, Uses: req.Uses, Description: req.Description, CreatedBy: principal(r).Username,
	})
	if err != nil {
		return err
	}
	v := tokenView(nt.Token, groups)
	auditObject(r, nt.Token.ID, nt.Token.Description)
	auditDiff(r, nil, v) // without the secret
	v.Token = nt.Secret
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (a *API) revokeToken(w http.ResponseWriter, r *http.Request) error {
	t, err := a.cfg.Store.EnrollmentTokenByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	auditObject(r, t.ID, t.Description)
	if err := a.allowObject(r, authz.EnrollmentTokens, authz.Write, t.AccessGroupID, "enrollment token"); err != nil {
		return err
	}
	if err := a.cfg.Store.RevokeEnrollmentToken(r.Context(), t.ID, a.cfg.Now()); err != nil {
		return err
	}
	auditDiff(r, map[string]any{"revoked": false}, map[string]any{"revoked": true})
	w.WriteHeader(http.StatusNoContent)
	return nil
}
