package httpapi

import (
	"net/http"
	"time"

	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/errcode"
)

type loginRequest struct {
	Username     string `json:"username"`
	Password     string `json:"password"`
	TOTPCode     string `json:"totp_code"`     // optional: logs in in one step
	RecoveryCode string `json:"recovery_code"` // optional, instead of totp_code
}

type sessionResponse struct {
	User        userRef     `json:"user"`
	Via         string      `json:"via,omitempty"`
	ExpiresAt   *string     `json:"expires_at,omitempty"`
	Restriction string      `json:"restriction,omitempty"`
	Permissions []grantJSON `json:"permissions"`
}

type userRef struct {
	ID          string `json:"id"`
	Username    string `json:"username"`
	HomeGroupID string `json:"home_group_id,omitempty"`
}

type grantJSON struct {
	Functionality string   `json:"functionality"`
	Level         string   `json:"level"`
	GroupIDs      []string `json:"group_ids"`
}

func setSessionCookie(w http.ResponseWriter, token string) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: token, Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

// login: POST /api/v1/session. A user with a second factor gets a session
// restricted to POST /api/v1/session/totp unless totp_code or
// recovery_code is given here.
func (a *API) login(w http.ResponseWriter, r *http.Request) error {
	var req loginRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	auditUsername(r, req.Username)
	if req.Username == "" || req.Password == "" {
		return errcode.New(errcode.Invalid, "username and password are required")
	}
	if req.TOTPCode != "" && req.RecoveryCode != "" {
		return errcode.New(errcode.Invalid, "give totp_code or recovery_code, not both")
	}
	res, err := a.cfg.Auth.Login(r.Context(), auth.LoginRequest{Username: req.Username, Password: req.Password,
		TOTPCode: req.TOTPCode, RecoveryCode: req.RecoveryCode, Remote: remoteAddr(r)})
	if err != nil {
		a.cfg.Log.Warn("login failed", "username", req.Username, "remote", remoteAddr(r), "reason", errcode.Message(err))
		return err
	}
	if ar := state(r).audit; ar != nil {
		ar.e.UserID, ar.e.Via = res.User.ID, auth.ViaSession
		ar.e.ObjectID, ar.e.ObjectName = res.User.ID, res.User.Username
		if res.Restriction != "" {
			ar.detail = "restricted: " + res.Restriction
		}
	}
	a.cfg.Log.Info("login", "username", res.User.Username, "remote", remoteAddr(r), "restriction", res.Restriction)
	setSessionCookie(w, res.Token)
	out := sessionResponse{User: userRef{ID: res.User.ID, Username: res.User.Username, HomeGroupID: res.User.HomeGroupID},
		Via: auth.ViaSession, ExpiresAt: timeJSON(res.ExpiresAt), Restriction: res.Restriction, Permissions: []grantJSON{}}
	if p, err := a.cfg.Auth.Authenticate(r.Context(), res.Token); err == nil && p.Restriction == "" {
		out.Permissions = grants(p)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// whoami: GET /api/v1/session — who is calling, how, and what they may do.
func (a *API) whoami(w http.ResponseWriter, r *http.Request) error {
	self(r)
	p := principal(r)
	out := sessionResponse{User: userRef{ID: p.UserID, Username: p.Username, HomeGroupID: p.HomeGroupID}, Via: p.Via,
		Restriction: p.Restriction, Permissions: []grantJSON{}}
	out.Permissions = grants(p)
	writeJSON(w, http.StatusOK, out)
	return nil
}

func grants(p *auth.Principal) []grantJSON {
	out := []grantJSON{}
	for _, g := range p.Permissions.Summary() {
		out = append(out, grantJSON{Functionality: string(g.Functionality), Level: g.Level.String(), GroupIDs: g.Groups})
	}
	return out
}

// logout: DELETE /api/v1/session.
func (a *API) logout(w http.ResponseWriter, r *http.Request) error {
	self(r)
	if err := a.cfg.Auth.Logout(r.Context(), principal(r)); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type secondFactorRequest struct {
	Code         string `json:"code"`
	RecoveryCode string `json:"recovery_code"`
}

// secondFactor: POST /api/v1/session/totp — completes a login.
func (a *API) secondFactor(w http.ResponseWriter, r *http.Request) error {
	self(r)
	var req secondFactorRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if (req.Code == "") == (req.RecoveryCode == "") {
		return errcode.New(errcode.Invalid, "give either code or recovery_code")
	}
	p := principal(r)
	if err := a.cfg.Auth.CompleteSecondFactor(r.Context(), p, req.Code, req.RecoveryCode, remoteAddr(r)); err != nil {
		return err
	}
	if req.RecoveryCode != "" {
		state(r).audit.detail = "recovery code used"
	}
	fresh, err := a.authenticate(r) // other restrictions may remain (password change, 2FA setup)
	if err != nil {
		return err
	}
	state(r).principal = fresh
	return a.whoami(w, r)
}

type totpEnrollResponse struct {
	Secret     string `json:"secret"`
	OTPAuthURI string `json:"otpauth_uri"`
	QRCodePNG  string `json:"qr_code_png"` // data: URI
}

// totpEnroll: POST /api/v1/session/totp/enroll — starts setting up a
// second factor for the caller (from a session only).
func (a *API) totpEnroll(w http.ResponseWriter, r *http.Request) error {
	self(r)
	p := principal(r)
	auditObject(r, p.UserID, p.Username)
	if p.Via != auth.ViaSession {
		return errcode.New(errcode.Forbidden, "a second factor can only be set up from a logged-in session")
	}
	e, err := a.cfg.Auth.EnrollTOTP(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, totpEnrollResponse{Secret: e.Secret, OTPAuthURI: e.OTPAuthURI, QRCodePNG: auth.QRDataURI(e.QRPNG)})
	return nil
}

type totpConfirmRequest struct {
	Code string `json:"code"`
}

// totpConfirm: POST /api/v1/session/totp/confirm — turns the second factor
// on and returns recovery codes (shown once).
func (a *API) totpConfirm(w http.ResponseWriter, r *http.Request) error {
	self(r)
	p := principal(r)
	auditObject(r, p.UserID, p.Username)
	var req totpConfirmRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if p.Via != auth.ViaSession {
		return errcode.New(errcode.Forbidden, "a second factor can only be set up from a logged-in session")
	}
	codes, err := a.cfg.Auth.ConfirmTOTP(r.Context(), p, req.Code)
	if err != nil {
		return err
	}
	auditDiff(r, map[string]bool{"totp_enabled": false}, map[string]bool{"totp_enabled": true})
	writeJSON(w, http.StatusOK, map[string][]string{"recovery_codes": codes})
	return nil
}

type changePasswordRequest struct {
	CurrentPassword string `json:"current_password"`
	NewPassword     string `json:"new_password"`
}

// changePassword: POST /api/v1/session/password — the caller's own password;
// all their sessions end, this one included (log in again).
func (a *API) changePassword(w http.ResponseWriter, r *http.Request) error {
	self(r)
	p := principal(r)
	auditObject(r, p.UserID, p.Username)
	var req changePasswordRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if p.Via != auth.ViaSession {
		return errcode.New(errcode.Forbidden, "passwords can only be changed from a logged-in session")
	}
	if err := a.cfg.Auth.ChangePassword(r.Context(), p, req.CurrentPassword, req.NewPassword); err != nil {
		return err
	}
	auditDiff(r, map[string]string{"password": "(old)"}, map[string]string{"password": "(changed)"})
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type apiTokenJSON struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	Token      string  `json:"token,omitempty"` // only when created
	CreatedAt  *string `json:"created_at"`
	ExpiresAt  *string `json:"expires_at"`
	LastUsedAt *string `json:"last_used_at"`
	RevokedAt  *string `json:"revoked_at"`
}

func (a *API) listAPITokens(w http.ResponseWriter, r *http.Request) error {
	self(r)
	ts, err := a.cfg.Store.APITokens(r.Context(), principal(r).UserID)
	if err != nil {
		return err
	}
	items := make([]apiTokenJSON, 0, len(ts))
	for _, t := range ts {
		items = append(items, apiTokenJSON{ID: t.ID, Name: t.Name, CreatedAt: timeJSON(t.CreatedAt), ExpiresAt: timeJSON(t.ExpiresAt),
			LastUsedAt: timeJSON(t.LastUsedAt), RevokedAt: timeJSON(t.RevokedAt)})
	}
	writeJSON(w, http.StatusOK, list(items, len(items)))
	return nil
}

type createAPITokenRequest struct {
	Name string `json:"name"`
	TTL  string `json:"ttl"` // Go duration; default 90 days (2160h), at most 366 days
}

// createAPIToken: POST /api/v1/tokens — a personal token acting exactly as
// its owner (never more); the secret is shown once.
func (a *API) createAPIToken(w http.ResponseWriter, r *http.Request) error {
	self(r)
	var req createAPITokenRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	ttl, err := durationParam(req.TTL)
	if err != nil {
		return err
	}
	nt, err := a.cfg.Auth.CreateAPIToken(r.Context(), principal(r), req.Name, ttl)
	if err != nil {
		return err
	}
	auditObject(r, nt.Token.ID, nt.Token.Name)
	auditDiff(r, nil, map[string]any{"name": nt.Token.Name, "expires_at": nt.Token.ExpiresAt.Format(time.RFC3339)})
	writeJSON(w, http.StatusCreated, apiTokenJSON{ID: nt.Token.ID, Name: nt.Token.Name, Token: nt.Secret,
		CreatedAt: timeJSON(nt.Token.CreatedAt), ExpiresAt: timeJSON(nt.Token.ExpiresAt), LastUsedAt: nil, RevokedAt: nil})
	return nil
}

func (a *API) revokeAPIToken(w http.ResponseWriter, r *http.Request) error {
	self(r)
	id := r.PathValue("id")
	auditObject(r, id, "")
	if err := a.cfg.Store.RevokeAPIToken(r.Context(), principal(r).UserID, id, a.cfg.Now()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
