package httpapi

import (
	"context"
	"net/http"
	"regexp"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/password"
	"github.com/mamori/mamori/internal/store"
)

type userStore interface {
	CreateUser(ctx context.Context, u *store.User) error
	UserByID(ctx context.Context, id string) (*store.User, error)
	ListUsers(ctx context.Context, f store.UserFilter) ([]*store.User, int, error)
	UpdateUser(ctx context.Context, u *store.User) error
	DeleteUser(ctx context.Context, id string) error
	DeleteUserSessions(ctx context.Context, userID string) error
	UnlockUser(ctx context.Context, id string) error
	RevokeUserAPITokens(ctx context.Context, userID string, now time.Time) error
	APITokens(ctx context.Context, userID string) ([]*store.APIToken, error)
	RevokeAPIToken(ctx context.Context, userID, id string, now time.Time) error
	RecoveryCodesLeft(ctx context.Context, userID string) (int, error)
}

var usernameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

type userJSON struct {
	ID                 string   `json:"id"`
	Username           string   `json:"username"`
	Description        string   `json:"description"`
	HomeGroup          groupRef `json:"home_group"`
	Disabled           bool     `json:"disabled"`
	MustChangePassword bool     `json:"must_change_password"`
	TOTPEnabled        bool     `json:"totp_enabled"`
	TOTPRequired       bool     `json:"totp_required"`
	PermissionSets     []string `json:"permission_sets"`
	CreatedAt          *string  `json:"created_at"`
	LastLoginAt        *string  `json:"last_login_at"`
	LastLoginAddr      string   `json:"last_login_addr"`
	LockedUntil        *string  `json:"locked_until"`
	Version            int64    `json:"version"`
}

func (a *API) userView(u *store.User, tree *store.GroupTree) userJSON {
	g := groupRef{ID: u.HomeGroupID}
	if gr, ok := tree.Get(u.HomeGroupID); ok {
		g.Path = gr.Path
	}
	sets := u.PermissionSetIDs
	if sets == nil {
		sets = []string{}
	}
	// Either lock refuses some logins: failed logins from the address of
	// the last login lock it apart from everywhere else.
	locked := time.Time{}
	for _, l := range []time.Time{u.LockedUntil, u.AddrLockedUntil} {
		if a.cfg.Now().Before(l) && l.After(locked) {
			locked = l
		}
	}
	return userJSON{ID: u.ID, Username: u.Username, Description: u.Description, HomeGroup: g, Disabled: u.Disabled,
		MustChangePassword: u.MustChangePassword, TOTPEnabled: u.TOTPEnabled, TOTPRequired: u.TOTPRequired, PermissionSets: sets,
		CreatedAt: timeJSON(u.CreatedAt), LastLoginAt: timeJSON(u.LastLoginAt), LastLoginAddr: u.LastLoginAddr, LockedUntil: timeJSON(locked), Version: u.Version}
}

// userFor loads a user and checks level on users in their home group.
func (a *API) userFor(r *http.Request, id string, l authz.Level) (*store.User, error) {
	u, err := a.cfg.Store.UserByID(r.Context(), id)
	if err != nil {
		state(r).checked = true
		return nil, err
	}
	if err := a.allowObject(r, authz.Users, l, u.HomeGroupID, "user"); err != nil {
		return nil, err
	}
	return u, nil
}

// checkAssignable verifies that the caller may hand out each permission
// set: use on users where the set lives, and the set grants nothing the
// caller does not hold.
func (a *API) checkAssignable(r *http.Request, ids []string) error {
	return a.checkSets(r, ids, "you cannot assign it")
}

// checkOutranked refuses to act on u's account (reset its password, remove
// its second factor, disable or delete it) unless the caller holds every
// right u's permission sets grant: users:write alone must not be a way
// into a more powerful account. act says what was refused.
func (a *API) checkOutranked(r *http.Request, u *store.User, act string) error {
	return a.checkSets(r, u.PermissionSetIDs, "you cannot "+act+" a user who holds it")
}

func (a *API) checkSets(r *http.Request, ids []string, refusal string) error {
	tree, err := a.groups(r)
	if err != nil {
		return err
	}
	for _, id := range ids {
		ps, err := a.cfg.Store.PermissionSetByID(r.Context(), id)
		if err != nil {
			return err
		}
		if err := a.allowObject(r, authz.Users, authz.Use, ps.GroupID, "permission set"); err != nil {
			return err
		}
		if !principal(r).Permissions.Covers(ps, tree) {
			return errcode.New(errcode.Forbidden, "permission set %q grants more than you hold; %s", ps.Name, refusal)
		}
	}
	return nil
}

func (a *API) listUsers(w http.ResponseWriter, r *http.Request) error {
	visible, err := a.scope(r, authz.Users, authz.Read)
	if err != nil {
		return err
	}
	limit, offset, err := page(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if len(q.Get("name")) > 64 {
		return errcode.New(errcode.Invalid, "name filter too long")
	}
	us, total, err := a.cfg.Store.ListUsers(r.Context(), store.UserFilter{GroupIDs: visible, Name: q.Get("name"), Sort: q.Get("sort"), Limit: limit, Offset: offset})
	if err != nil {
		return err
	}
	tree, _ := a.groups(r)
	items := make([]userJSON, 0, len(us))
	for _, u := range us {
		items = append(items, a.userView(u, tree))
	}
	writeJSON(w, http.StatusOK, list(items, total))
	return nil
}

func (a *API) getUser(w http.ResponseWriter, r *http.Request) error {
	u, err := a.userFor(r, r.PathValue("id"), authz.Read)
	if err != nil {
		return err
	}
	tree, _ := a.groups(r)
	writeETag(w, u.Version)
	writeJSON(w, http.StatusOK, a.userView(u, tree))
	return nil
}

type createUserRequest struct {
	Username           string   `json:"username"`
	Password           string   `json:"password"`
	Description        string   `json:"description"`
	HomeGroup          string   `json:"home_group"` // path; default the creator's home group
	PermissionSets     []string `json:"permission_sets"`
	TOTPRequired       bool     `json:"totp_required"`
	MustChangePassword *bool    `json:"must_change_password"` // default true
}

// createUser: POST /api/v1/users — write on users in the new user's home
// group; permission sets only the caller covers.
func (a *API) createUser(w http.ResponseWriter, r *http.Request) error {
	var req createUserRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	auditObject(r, "", req.Username)
	if !usernameRE.MatchString(req.Username) {
		return errcode.New(errcode.Invalid, "username must be 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
	}
	if len(req.Description) > 512 {
		return errcode.New(errcode.Invalid, "description longer than 512 bytes")
	}
	tree, err := a.groups(r)
	if err != nil {
		return err
	}
	home, ok := tree.Get(principal(r).HomeGroupID)
	if !ok {
		home, _ = tree.Get(store.GroupAll)
	}
	if req.HomeGroup != "" {
		if home, err = a.resolveGroup(r, req.HomeGroup); err != nil {
			return err
		}
	}
	if err := a.allow(r, authz.Users, authz.Write, home.ID); err != nil {
		return err
	}
	if err := a.checkAssignable(r, req.PermissionSets); err != nil {
		return err
	}
	pol, _, err := auth.LoadPolicy(r.Context(), a.cfg.Store)
	if err != nil {
		return err
	}
	if err := auth.CheckPassword(req.Password, req.Username, pol); err != nil {
		return err
	}
	hash, err := password.Hash(req.Password)
	if err != nil {
		return err
	}
	must := req.MustChangePassword == nil || *req.MustChangePassword
	u := &store.User{ID: uuid.NewString(), Username: req.Username, PasswordHash: hash, Description: req.Description, HomeGroupID: home.ID,
		TOTPRequired: req.TOTPRequired, MustChangePassword: must, PermissionSetIDs: req.PermissionSets}
	if err := a.cfg.Store.CreateUser(r.Context(), u); err != nil {
		return err
	}
	view := a.userView(u, tree)
	auditObject(r, u.ID, u.Username)
	auditDiff(r, nil, view)
	writeETag(w, u.Version)
	writeJSON(w, http.StatusCreated, view)
	return nil
}

type updateUserRequest struct {
	Description    *string   `json:"description"`
	HomeGroup      *string   `json:"home_group"`
	Disabled       *bool     `json:"disabled"`
	Unlock         bool      `json:"unlock"` // clears failed logins and a lockout
	TOTPRequired   *bool     `json:"totp_required"`
	PermissionSets *[]string `json:"permission_sets"`
	Version        *int64    `json:"version"`
}

// updateUser: PATCH /api/v1/users/{id} — write on users where the user is
// (and where they move). Nobody changes their own permissions or disables
// themselves.
func (a *API) updateUser(w http.ResponseWriter, r *http.Request) error {
	var req updateUserRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	u, err := a.userFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, u.ID, u.Username)
	version, err := versionOf(r, req.Version)
	if err != nil {
		return err
	}
	tree, _ := a.groups(r)
	before := a.userView(u, tree)
	me := u.ID == principal(r).UserID
	if req.Description != nil {
		if len(*req.Description) > 512 {
			return errcode.New(errcode.Invalid, "description longer than 512 bytes")
		}
		u.Description = *req.Description
	}
	if req.HomeGroup != nil {
		g, err := a.resolveGroup(r, *req.HomeGroup)
		if err != nil {
			return err
		}
		if err := a.allow(r, authz.Users, authz.Write, g.ID); err != nil {
			return err
		}
		u.HomeGroupID = g.ID
	}
	if req.Disabled != nil && *req.Disabled != u.Disabled {
		if me {
			return errcode.New(errcode.Forbidden, "you cannot disable yourself")
		}
		act := "enable"
		if *req.Disabled {
			act = "disable"
		}
		if err := a.checkOutranked(r, u, act); err != nil {
			return err
		}
		u.Disabled = *req.Disabled
	}
	if req.TOTPRequired != nil && *req.TOTPRequired != u.TOTPRequired {
		if !*req.TOTPRequired { // dropping a stronger account's second factor requirement
			if err := a.checkOutranked(r, u, "drop the second factor requirement of"); err != nil {
				return err
			}
		}
		u.TOTPRequired = *req.TOTPRequired
	}
	if req.Unlock && !me {
		// An attacker's guesses locked it; only who holds as much may lift that.
		if err := a.checkOutranked(r, u, "unlock"); err != nil {
			return err
		}
	}
	if req.PermissionSets != nil && !slices.Equal(sortedCopy(*req.PermissionSets), sortedCopy(u.PermissionSetIDs)) {
		if me {
			return errcode.New(errcode.Forbidden, "you cannot change your own permission sets")
		}
		// Removing sets needs the same right as adding them.
		if err := a.checkAssignable(r, append(slices.Clone(*req.PermissionSets), u.PermissionSetIDs...)); err != nil {
			return err
		}
		u.PermissionSetIDs = *req.PermissionSets
	}
	u.Version = version
	if err := a.cfg.Store.UpdateUser(r.Context(), u); err != nil {
		return err
	}
	if u.Disabled {
		if err := a.cfg.Store.DeleteUserSessions(r.Context(), u.ID); err != nil {
			return err
		}
	}
	if req.Unlock {
		if err := a.cfg.Store.UnlockUser(r.Context(), u.ID); err != nil {
			return err
		}
		u.LockedUntil, u.AddrLockedUntil = time.Time{}, time.Time{}
	}
	after := a.userView(u, tree)
	auditDiff(r, before, after)
	writeETag(w, u.Version)
	writeJSON(w, http.StatusOK, after)
	return nil
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return slices.Compact(c)
}

func (a *API) deleteUser(w http.ResponseWriter, r *http.Request) error {
	u, err := a.userFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, u.ID, u.Username)
	if u.ID == principal(r).UserID {
		return errcode.New(errcode.Forbidden, "you cannot delete yourself")
	}
	if err := a.checkOutranked(r, u, "delete"); err != nil {
		return err
	}
	tree, _ := a.groups(r)
	before := a.userView(u, tree)
	if err := a.cfg.Store.DeleteUser(r.Context(), u.ID); err != nil {
		return err
	}
	auditDiff(r, before, nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type resetPasswordRequest struct {
	Password   string `json:"password"`
	MustChange *bool  `json:"must_change"` // default true
}

// resetPassword: POST /api/v1/users/{id}/password — an administrator sets a
// password (the user must change it at next login by default); the user's
// sessions end and their API tokens are revoked (a reset is what follows a
// stolen account; a token minted with it must not outlive it).
func (a *API) resetPassword(w http.ResponseWriter, r *http.Request) error {
	var req resetPasswordRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	u, err := a.userFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, u.ID, u.Username)
	if u.ID == principal(r).UserID {
		return errcode.New(errcode.Forbidden, "change your own password with POST /api/v1/session/password (it asks for the current one)")
	}
	if err := a.checkOutranked(r, u, "reset the password of"); err != nil {
		return err
	}
	must := req.MustChange == nil || *req.MustChange
	if err := a.cfg.Auth.SetPassword(r.Context(), u, req.Password, must); err != nil {
		return err
	}
	if err := a.cfg.Store.RevokeUserAPITokens(r.Context(), u.ID, a.cfg.Now()); err != nil {
		return err
	}
	if err := a.cfg.Store.UnlockUser(r.Context(), u.ID); err != nil { // the new password works at once
		return err
	}
	auditDiff(r, map[string]any{"password": "(old)"}, map[string]any{"password": "(reset)", "must_change_password": must, "api_tokens": "revoked"})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// removeTOTP: DELETE /api/v1/users/{id}/totp — a lost device; write on the
// user (enabling a second factor for someone else is their own business).
func (a *API) removeTOTP(w http.ResponseWriter, r *http.Request) error {
	u, err := a.userFor(r, r.PathValue("id"), authz.Write)
	if err != nil {
		return err
	}
	auditObject(r, u.ID, u.Username)
	if u.ID == principal(r).UserID {
		return errcode.New(errcode.Forbidden, "another administrator must remove your second factor")
	}
	if err := a.checkOutranked(r, u, "remove the second factor of"); err != nil {
		return err
	}
	if !u.TOTPEnabled && u.TOTPPending == "" {
		return errcode.New(errcode.Conflict, "the user has no second factor")
	}
	if err := a.cfg.Auth.DisableTOTP(r.Context(), u); err != nil {
		return err
	}
	auditDiff(r, map[string]bool{"totp_enabled": true}, map[string]bool{"totp_enabled": false})
	w.WriteHeader(http.StatusNoContent)
	return nil
}
