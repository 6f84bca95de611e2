package auth

import (
	"context"
	"time"

	"github.com/mamori/mamori/internal/password"
	"github.com/mamori/mamori/internal/store"
)

// RecoverStore is what Recover changes besides the Store's users.
type RecoverStore interface {
	Store
	UnlockUser(ctx context.Context, id string) error
	RevokeUserAPITokens(ctx context.Context, userID string, now time.Time) error
}

// Recover gives username a new random password to change at the next
// login, and makes the account usable: enabled, unlocked, its sessions
// ended and API tokens revoked (whoever locked the administrator out may
// hold them); with removeTOTP, without its second factor (a lost device).
// It is the way back in for whoever runs the server and has lost every
// administrator's password (`mamori recover`), not an API.
func (s *Service) Recover(ctx context.Context, st RecoverStore, username string, removeTOTP bool) (string, *store.User, error) {
	u, err := st.UserByName(ctx, username)
	if err != nil {
		return "", nil, err
	}
	pw := password.Generate(24)
	hash, err := password.Hash(pw)
	if err != nil {
		return "", nil, err
	}
	u.PasswordHash, u.MustChangePassword, u.PasswordChangedAt, u.Disabled = hash, true, s.now().UTC().Truncate(time.Millisecond), false
	if removeTOTP {
		u.TOTPSecret, u.TOTPPending, u.TOTPEnabled, u.TOTPLastStep = "", "", false, 0
	}
	if err := st.UpdateUser(ctx, u); err != nil {
		return "", nil, err
	}
	if removeTOTP {
		if err := st.SetRecoveryCodes(ctx, u.ID, nil); err != nil {
			return "", nil, err
		}
	}
	for _, step := range []func() error{
		func() error { return st.UnlockUser(ctx, u.ID) },
		func() error { return st.DeleteUserSessions(ctx, u.ID) },
		func() error { return st.RevokeUserAPITokens(ctx, u.ID, s.now()) },
	} {
		if err := step(); err != nil {
			return "", nil, err
		}
	}
	return pw, u, nil
}
