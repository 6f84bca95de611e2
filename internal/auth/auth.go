// Package auth authenticates console and API users: password login with
// argon2id, a TOTP second factor with recovery codes, server-side sessions
// and personal API tokens (only hashes of their secrets are stored), account
// lockout after repeated failures, and the password policy.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/password"
	"github.com/mamori/mamori/internal/store"
)

// Store is what auth needs from the store.
type Store interface {
	PolicyStore
	UserByName(ctx context.Context, username string) (*store.User, error)
	UserByID(ctx context.Context, id string) (*store.User, error)
	UpdateUser(ctx context.Context, u *store.User) error
	RecordLoginFailure(ctx context.Context, id string, fromLastAddr bool, maxFailures int, lockUntil time.Time) (time.Time, error)
	RecordLoginSuccess(ctx context.Context, id string, at time.Time, addr string) error
	UseTOTPStep(ctx context.Context, id string, step int64) (bool, error)
	SetRecoveryCodes(ctx context.Context, userID string, hashes []string) error
	UseRecoveryCode(ctx context.Context, userID, hash string, at time.Time) (bool, error)
	CreateSession(ctx context.Context, s *store.Session) error
	SessionByTokenHash(ctx context.Context, hash string, now time.Time) (*store.Session, *store.User, error)
	CompleteSecondFactor(ctx context.Context, hash string) error
	ExtendSession(ctx context.Context, hash string, now, expires time.Time) error
	DeleteSession(ctx context.Context, hash string) error
	DeleteUserSessions(ctx context.Context, userID string) error
	CreateAPIToken(ctx context.Context, t *store.APIToken) error
	APITokenByHash(ctx context.Context, hash string) (*store.APIToken, error)
	TouchAPIToken(ctx context.Context, id string, at time.Time) error
	UserPermissionSets(ctx context.Context, userID string) ([]*store.PermissionSet, error)
}

// How a principal authenticated.
const (
	ViaSession  = "session"
	ViaAPIToken = "api_token"
)

// Restrictions of a principal that must do something before anything else.
const (
	RestrictSecondFactor   = "second_factor"   // password given; a TOTP or recovery code is due
	RestrictPasswordChange = "password_change" // the password must be changed
	RestrictTOTPEnrollment = "totp_enrollment" // a second factor must be set up
)

// Principal is an authenticated caller.
type Principal struct {
	UserID      string
	Username    string
	HomeGroupID string
	Via         string
	SessionHash string // for sessions
	TokenID     string // for API tokens
	Permissions *authz.Permissions
	// Restriction, when set, limits the principal to the routes that lift
	// it (second factor, password change, TOTP enrollment).
	Restriction string
}

// Limits.
const (
	// A remote address with this many failed logins in IPWindow is refused
	// for IPWindow (a password spray across user names).
	IPMaxFailures = 30
	IPWindow      = 15 * time.Minute
	// API tokens live at most this long; default DefaultTokenTTL.
	MaxTokenTTL     = 366 * 24 * time.Hour
	DefaultTokenTTL = 90 * 24 * time.Hour
	tokenPrefix     = "mmt_"
	recoveryCodes   = 10
)

// Service logs users in and checks sessions and tokens.
type Service struct {
	Store  Store
	Sealer *Sealer // opens TOTP secrets; required for TOTP
	Now    func() time.Time

	mu       sync.Mutex
	ipFails  map[string]*ipFailure
	dummy    string
	dummyOne sync.Once
}

type ipFailure struct {
	count int
	first time.Time
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// LoginRequest is what a user gives to log in.
type LoginRequest struct {
	Username, Password string
	TOTPCode           string // optional: completes the login in one step
	RecoveryCode       string // optional, instead of TOTPCode
	Remote             string
}

// LoginResult is a successful password check.
type LoginResult struct {
	Token       string
	User        *store.User
	ExpiresAt   time.Time
	Restriction string
}

var errBadLogin = errcode.New(errcode.Unauthorized, "invalid user name or password")

// Login checks credentials and opens a session. Wrong passwords, unknown and
// disabled users get the same unauthorized error; a locked account or a
// spraying address gets too_many_requests. A user with TOTP who gives no
// code gets a session restricted to completing the second factor.
func (s *Service) Login(ctx context.Context, req LoginRequest) (*LoginResult, error) {
	now := s.now()
	if s.ipLocked(req.Remote, now) {
		return nil, errcode.New(errcode.TooManyRequests, "too many failed logins from this address; try again later")
	}
	pol, _, err := LoadPolicy(ctx, s.Store)
	if err != nil {
		return nil, err
	}
	u, err := s.Store.UserByName(ctx, req.Username)
	if err != nil && !errcode.Is(err, errcode.NotFound) {
		return nil, err
	}
	if u == nil {
		s.dummyOne.Do(func() { s.dummy, _ = password.Hash("not a password") })
		_ = password.Verify(req.Password, s.dummy) // same time as a real check
		s.ipFail(req.Remote, now)
		return nil, errBadLogin
	}
	if err := locked(u, req.Remote, now); err != nil {
		return nil, err
	}
	if verr := password.Verify(req.Password, u.PasswordHash); verr != nil {
		if !errors.Is(verr, password.ErrMismatch) {
			return nil, verr
		}
		return nil, s.fail(ctx, u, req.Remote, pol, now, errBadLogin)
	}
	if u.Disabled {
		s.ipFail(req.Remote, now)
		return nil, errBadLogin
	}
	secondFactor := true
	restriction := ""
	if u.TOTPEnabled {
		switch {
		case req.TOTPCode != "" || req.RecoveryCode != "":
			if err := s.checkSecondFactor(ctx, u, req.TOTPCode, req.RecoveryCode, now); err != nil {
				return nil, s.fail(ctx, u, req.Remote, pol, now, err)
			}
		default:
			secondFactor, restriction = false, RestrictSecondFactor
		}
	}
	if restriction == "" {
		restriction = s.pendingRestriction(u, pol, now)
	}
	// A password without its second factor is not a login yet: clearing the
	// failures here would let whoever has the password guess codes forever.
	if secondFactor {
		if err := s.Store.RecordLoginSuccess(ctx, u.ID, now, req.Remote); err != nil {
			return nil, err
		}
	}
	token := newSecret("")
	expires := now.Add(time.Duration(pol.SessionIdleMinutes) * time.Minute)
	if err := s.Store.CreateSession(ctx, &store.Session{TokenHash: HashToken(token), UserID: u.ID, CreatedAt: now, ExpiresAt: expires,
		LastUsedAt: now, RemoteAddr: req.Remote, SecondFactor: secondFactor}); err != nil {
		return nil, err
	}
	return &LoginResult{Token: token, User: u, ExpiresAt: expires, Restriction: restriction}, nil
}

// fromLastAddr tells whether remote is the address of u's last full
// login. Failed logins from there count and lock apart from the others, so
// guesses from elsewhere cannot lock the owner out of their usual address,
// and guesses from that address lock it as fast as any other.
func fromLastAddr(u *store.User, remote string) bool {
	return remote != "" && remote == u.LastLoginAddr
}

// locked refuses a login while the lock that applies to remote holds.
func locked(u *store.User, remote string, now time.Time) error {
	until := u.LockedUntil
	if fromLastAddr(u, remote) {
		until = u.AddrLockedUntil
	}
	if !now.Before(until) {
		return nil
	}
	return errcode.New(errcode.TooManyRequests, "account locked after repeated failures until %s", until.UTC().Format(time.RFC3339))
}

// pendingRestriction is what a fully logged-in user must do first.
func (s *Service) pendingRestriction(u *store.User, pol Policy, now time.Time) string {
	expired := pol.PasswordMaxAgeDays > 0 && now.Sub(u.PasswordChangedAt) > time.Duration(pol.PasswordMaxAgeDays)*24*time.Hour
	switch {
	case u.MustChangePassword || expired:
		return RestrictPasswordChange
	case !u.TOTPEnabled && (u.TOTPRequired || pol.RequireTOTP):
		return RestrictTOTPEnrollment
	}
	return ""
}

func (s *Service) fail(ctx context.Context, u *store.User, remote string, pol Policy, now time.Time, err error) error {
	s.ipFail(remote, now)
	locked, lerr := s.Store.RecordLoginFailure(ctx, u.ID, fromLastAddr(u, remote), pol.LockoutFailures, now.Add(time.Duration(pol.LockoutMinutes)*time.Minute))
	if lerr != nil {
		return lerr
	}
	if !locked.IsZero() {
		return errcode.New(errcode.TooManyRequests, "account locked after repeated failures until %s", locked.UTC().Format(time.RFC3339))
	}
	return err
}

// CompleteSecondFactor lifts the second-factor restriction of a session
// with a TOTP or recovery code.
func (s *Service) CompleteSecondFactor(ctx context.Context, p *Principal, code, recovery, remote string) error {
	if p.Restriction != RestrictSecondFactor {
		return errcode.New(errcode.Conflict, "this session does not wait for a second factor")
	}
	u, err := s.Store.UserByID(ctx, p.UserID)
	if err != nil {
		return err
	}
	pol, _, err := LoadPolicy(ctx, s.Store)
	if err != nil {
		return err
	}
	now := s.now()
	if s.ipLocked(remote, now) {
		return errcode.New(errcode.TooManyRequests, "too many failed logins from this address; try again later")
	}
	if err := locked(u, remote, now); err != nil {
		return err
	}
	if err := s.checkSecondFactor(ctx, u, code, recovery, now); err != nil {
		if ferr := s.fail(ctx, u, remote, pol, now, err); errcode.Is(ferr, errcode.TooManyRequests) {
			s.Store.DeleteSession(ctx, p.SessionHash)
			return ferr
		}
		return err
	}
	if err := s.Store.RecordLoginSuccess(ctx, u.ID, now, remote); err != nil {
		return err
	}
	return s.Store.CompleteSecondFactor(ctx, p.SessionHash)
}

func (s *Service) checkSecondFactor(ctx context.Context, u *store.User, code, recovery string, now time.Time) error {
	if recovery != "" {
		ok, err := s.Store.UseRecoveryCode(ctx, u.ID, hashRecovery(recovery), now)
		if err != nil {
			return err
		}
		if !ok {
			return errcode.New(errcode.Unauthorized, "invalid or already used recovery code")
		}
		return nil
	}
	if s.Sealer == nil {
		return errcode.New(errcode.Unavailable, "second factors are not available on this server")
	}
	secret, err := s.Sealer.Open(u.TOTPSecret)
	if err != nil {
		return err
	}
	step, ok := matchTOTP(secret, code, now)
	if !ok {
		return errcode.New(errcode.Unauthorized, "invalid TOTP code")
	}
	fresh, err := s.Store.UseTOTPStep(ctx, u.ID, step)
	if err != nil {
		return err
	}
	if !fresh {
		return errcode.New(errcode.Unauthorized, "this TOTP code was already used; wait for the next one")
	}
	return nil
}

// Authenticate returns the principal behind a session token and slides the
// session's idle expiry (never past the policy's maximum age).
func (s *Service) Authenticate(ctx context.Context, token string) (*Principal, error) {
	if token == "" || len(token) > 128 {
		return nil, errcode.New(errcode.Unauthorized, "authentication required")
	}
	hash := HashToken(token)
	now := s.now()
	sess, u, err := s.Store.SessionByTokenHash(ctx, hash, now)
	if errcode.Is(err, errcode.NotFound) {
		return nil, errcode.New(errcode.Unauthorized, "session expired or unknown; log in again")
	}
	if err != nil {
		return nil, err
	}
	if u.Disabled {
		return nil, errcode.New(errcode.Unauthorized, "user is disabled")
	}
	pol, _, err := LoadPolicy(ctx, s.Store)
	if err != nil {
		return nil, err
	}
	limit := sess.CreatedAt.Add(time.Duration(pol.SessionMaxHours) * time.Hour)
	if !now.Before(limit) {
		s.Store.DeleteSession(ctx, hash)
		return nil, errcode.New(errcode.Unauthorized, "session expired; log in again")
	}
	if now.Sub(sess.LastUsedAt) > time.Minute { // at most one write a minute per session
		exp := now.Add(time.Duration(pol.SessionIdleMinutes) * time.Minute)
		if exp.After(limit) {
			exp = limit
		}
		if err := s.Store.ExtendSession(ctx, hash, now, exp); err != nil {
			return nil, err
		}
	}
	p, err := s.principal(ctx, u, ViaSession)
	if err != nil {
		return nil, err
	}
	p.SessionHash = hash
	if !sess.SecondFactor {
		p.Restriction = RestrictSecondFactor
	} else {
		p.Restriction = s.pendingRestriction(u, pol, now)
	}
	return p, nil
}

// AuthenticateBearer returns the principal behind an API token: exactly its
// owner's permissions, never more. Tokens of disabled users, revoked and
// expired tokens are refused.
func (s *Service) AuthenticateBearer(ctx context.Context, secret string) (*Principal, error) {
	if !strings.HasPrefix(secret, tokenPrefix) || len(secret) > 128 {
		return nil, errcode.New(errcode.Unauthorized, "invalid API token")
	}
	now := s.now()
	t, err := s.Store.APITokenByHash(ctx, HashToken(secret))
	if errcode.Is(err, errcode.NotFound) {
		return nil, errcode.New(errcode.Unauthorized, "invalid API token")
	}
	if err != nil {
		return nil, err
	}
	switch {
	case !t.RevokedAt.IsZero():
		return nil, errcode.New(errcode.Unauthorized, "API token revoked")
	case !now.Before(t.ExpiresAt):
		return nil, errcode.New(errcode.Unauthorized, "API token expired at %s", t.ExpiresAt.UTC().Format(time.RFC3339))
	}
	u, err := s.Store.UserByID(ctx, t.UserID)
	if err != nil {
		return nil, errcode.New(errcode.Unauthorized, "invalid API token")
	}
	if u.Disabled {
		return nil, errcode.New(errcode.Unauthorized, "user is disabled")
	}
	if now.Sub(t.LastUsedAt) > time.Minute {
		if err := s.Store.TouchAPIToken(ctx, t.ID, now); err != nil {
			return nil, err
		}
	}
	p, err := s.principal(ctx, u, ViaAPIToken)
	if err != nil {
		return nil, err
	}
	p.TokenID = t.ID
	return p, nil
}

func (s *Service) principal(ctx context.Context, u *store.User, via string) (*Principal, error) {
	sets, err := s.Store.UserPermissionSets(ctx, u.ID)
	if err != nil {
		return nil, err
	}
	return &Principal{UserID: u.ID, Username: u.Username, HomeGroupID: u.HomeGroupID, Via: via, Permissions: authz.FromSets(sets)}, nil
}

// Logout ends a session.
func (s *Service) Logout(ctx context.Context, p *Principal) error {
	if p.SessionHash == "" {
		return errcode.New(errcode.Invalid, "API tokens are not sessions; revoke the token instead")
	}
	return s.Store.DeleteSession(ctx, p.SessionHash)
}

// NewAPIToken is a created token with its secret, shown once.
type NewAPIToken struct {
	Token  *store.APIToken
	Secret string
}

// CreateAPIToken makes a personal API token for p (from a session: a token
// cannot mint tokens that outlive it). ttl 0 takes DefaultTokenTTL.
func (s *Service) CreateAPIToken(ctx context.Context, p *Principal, name string, ttl time.Duration) (*NewAPIToken, error) {
	if p.Via != ViaSession {
		return nil, errcode.New(errcode.Forbidden, "API tokens can only be created from a logged-in session")
	}
	if name == "" || len(name) > 128 {
		return nil, errcode.New(errcode.Invalid, "a token name of 1-128 characters is required")
	}
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < time.Minute || ttl > MaxTokenTTL {
		return nil, errcode.New(errcode.Invalid, "ttl must be between 1m and %s", MaxTokenTTL)
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	secret := newSecret(tokenPrefix)
	t := &store.APIToken{ID: uuid.NewString(), UserID: p.UserID, Name: name, TokenHash: HashToken(secret), CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := s.Store.CreateAPIToken(ctx, t); err != nil {
		return nil, err
	}
	return &NewAPIToken{Token: t, Secret: secret}, nil
}

// ChangePassword changes p's own password after checking the current one;
// it ends all the user's sessions, p's included.
func (s *Service) ChangePassword(ctx context.Context, p *Principal, current, next string) error {
	u, err := s.Store.UserByID(ctx, p.UserID)
	if err != nil {
		return err
	}
	if err := password.Verify(current, u.PasswordHash); err != nil {
		return errcode.New(errcode.Forbidden, "the current password is wrong")
	}
	if current == next {
		return errcode.New(errcode.Invalid, "the new password must differ from the current one")
	}
	if err := s.SetPassword(ctx, u, next, false); err != nil {
		return err
	}
	return nil
}

// SetPassword sets u's password (policy-checked); mustChange forces a change
// at next login (an administrator's reset). All of u's sessions end.
func (s *Service) SetPassword(ctx context.Context, u *store.User, pw string, mustChange bool) error {
	pol, _, err := LoadPolicy(ctx, s.Store)
	if err != nil {
		return err
	}
	if err := CheckPassword(pw, u.Username, pol); err != nil {
		return err
	}
	hash, err := password.Hash(pw)
	if err != nil {
		return err
	}
	u.PasswordHash, u.MustChangePassword, u.PasswordChangedAt = hash, mustChange, s.now().UTC().Truncate(time.Millisecond)
	if err := s.Store.UpdateUser(ctx, u); err != nil {
		return err
	}
	return s.Store.DeleteUserSessions(ctx, u.ID)
}

func newSecret(prefix string) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// HashToken is how session and API token secrets are kept in the store.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func (s *Service) ipLocked(remote string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.ipFails[remote]
	return f != nil && now.Sub(f.first) < IPWindow && f.count >= IPMaxFailures
}

func (s *Service) ipFail(remote string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ipFails == nil {
		s.ipFails = map[string]*ipFailure{}
	}
	if len(s.ipFails) > 100_000 {
		for k, f := range s.ipFails {
			if now.Sub(f.first) > IPWindow {
				delete(s.ipFails, k)
			}
		}
	}
	f := s.ipFails[remote]
	if f == nil || now.Sub(f.first) > IPWindow {
		f = &ipFailure{first: now}
		s.ipFails[remote] = f
	}
	f.count++
}
