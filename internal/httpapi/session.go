package httpapi

import (
	"net/http"

	"github.com/mamori/mamori/internal/errcode"
)

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type sessionResponse struct {
	User      userJSON `json:"user"`
	ExpiresAt *string  `json:"expires_at,omitempty"`
}

type userJSON struct {
	ID       string `json:"id"`
	Username string `json:"username"`
}

func (a *API) login(w http.ResponseWriter, r *http.Request) error {
	var req loginRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Username == "" || req.Password == "" {
		return errcode.New(errcode.Invalid, "username and password are required")
	}
	token, u, expires, err := a.cfg.Auth.Login(r.Context(), req.Username, req.Password, remoteAddr(r))
	if err != nil {
		a.cfg.Log.Warn("login failed", "username", req.Username, "remote", remoteAddr(r), "reason", errcode.Message(err))
		return err
	}
	a.cfg.Log.Info("login", "username", u.Username, "remote", remoteAddr(r))
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: token, Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	writeJSON(w, http.StatusOK, sessionResponse{User: userJSON{ID: u.ID, Username: u.Username}, ExpiresAt: timeJSON(expires)})
	return nil
}

func (a *API) whoami(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	writeJSON(w, http.StatusOK, sessionResponse{User: userJSON{ID: p.UserID, Username: p.Username}})
	return nil
}

func (a *API) logout(w http.ResponseWriter, r *http.Request) error {
	if err := a.cfg.Auth.Logout(r.Context(), principal(r)); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
	return nil
}
