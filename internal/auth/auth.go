// Package auth authenticates console and API users: password login with
// argon2id, server-side sessions (only a hash of the session token is
// stored), and a failed-login limiter.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/password"
	"github.com/mamori/mamori/internal/store"
)

// Store is what auth needs from the store.
type Store interface {
	UserByName(ctx context.Context, username string) (*store.User, error)
	CreateSession(ctx context.Context, s *store.Session) error
	SessionByTokenHash(ctx context.Context, hash string, now time.Time) (*store.Session, *store.User, error)
	ExtendSession(ctx context.Context, hash string, now, expires time.Time) error
	DeleteSession(ctx context.Context, hash string) error
}

// Defaults for sessions and the login limiter.
const (
	DefaultIdleTimeout = 30 * time.Minute
	DefaultMaxAge      = 12 * time.Hour
	// A user name + address pair that fails MaxFailures times within
	// FailureWindow is refused for LockoutFor.
	MaxFailures   = 5
	FailureWindow = 15 * time.Minute
	LockoutFor    = 5 * time.Minute
)

// Principal is an authenticated caller.
type Principal struct {
	UserID      string
	Username    string
	SessionHash string
}

// Service logs users in and checks sessions.
type Service struct {
	Store       Store
	IdleTimeout time.Duration // default 30m; a session unused this long ends
	MaxAge      time.Duration // default 12h; absolute session lifetime
	Now         func() time.Time

	mu       sync.Mutex
	failures map[string]*failure
	dummy    string
	once     sync.Once
}

type failure struct {
	count       int
	first       time.Time
	lockedUntil time.Time
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) idle() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return DefaultIdleTimeout
}

func (s *Service) maxAge() time.Duration {
	if s.MaxAge > 0 {
		return s.MaxAge
	}
	return DefaultMaxAge
}

// Login checks a user name and password and opens a session. It returns the
// session token (to be sent to the client once) and its expiry. Wrong
// credentials, unknown and disabled users all get the same unauthorized
// error; too many failures get too_many_requests.
func (s *Service) Login(ctx context.Context, username, pw, remote string) (token string, user *store.User, expires time.Time, err error) {
	key := username + "\x00" + remote
	now := s.now()
	if until := s.lockedUntil(key, now); !until.IsZero() {
		return "", nil, time.Time{}, errcode.New(errcode.TooManyRequests, "too many failed logins; try again after %s", until.UTC().Format(time.RFC3339))
	}
	u, err := s.Store.UserByName(ctx, username)
	if err != nil && !errcode.Is(err, errcode.NotFound) {
		return "", nil, time.Time{}, err
	}
	if u == nil {
		// Spend the same time as a real check so user names cannot be probed.
		s.once.Do(func() { s.dummy, _ = password.Hash("not a password") })
		_ = password.Verify(pw, s.dummy)
	} else if verr := password.Verify(pw, u.PasswordHash); verr != nil {
		if !errors.Is(verr, password.ErrMismatch) {
			return "", nil, time.Time{}, verr
		}
		u = nil
	}
	if u == nil || u.Disabled {
		s.fail(key, now)
		return "", nil, time.Time{}, errcode.New(errcode.Unauthorized, "invalid user name or password")
	}
	s.succeed(key)
	token = newToken()
	expires = now.Add(s.idle())
	err = s.Store.CreateSession(ctx, &store.Session{
		TokenHash: HashToken(token), UserID: u.ID, CreatedAt: now, ExpiresAt: expires, LastUsedAt: now, RemoteAddr: remote,
	})
	if err != nil {
		return "", nil, time.Time{}, err
	}
	return token, u, expires, nil
}

// Authenticate returns the principal behind a session token and slides the
// session's idle expiry (never past MaxAge). Returns unauthorized for an
// unknown, expired or disabled session.
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
	// Extend at most once a minute to keep reads from becoming writes.
	if now.Sub(sess.LastUsedAt) > time.Minute {
		exp := now.Add(s.idle())
		if limit := sess.CreatedAt.Add(s.maxAge()); exp.After(limit) {
			exp = limit
		}
		if err := s.Store.ExtendSession(ctx, hash, now, exp); err != nil {
			return nil, err
		}
	}
	return &Principal{UserID: u.ID, Username: u.Username, SessionHash: hash}, nil
}

// Logout ends a session.
func (s *Service) Logout(ctx context.Context, p *Principal) error {
	return s.Store.DeleteSession(ctx, p.SessionHash)
}

func (s *Service) lockedUntil(key string, now time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.failures[key]; f != nil && now.Before(f.lockedUntil) {
		return f.lockedUntil
	}
	return time.Time{}
}

func (s *Service) fail(key string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failures == nil {
		s.failures = map[string]*failure{}
	}
	if len(s.failures) > 100_000 { // bound memory under a spray of names
		for k, f := range s.failures {
			if now.Sub(f.first) > FailureWindow {
				delete(s.failures, k)
			}
		}
	}
	f := s.failures[key]
	if f == nil || now.Sub(f.first) > FailureWindow {
		f = &failure{first: now}
		s.failures[key] = f
	}
	f.count++
	if f.count >= MaxFailures {
		f.lockedUntil = now.Add(LockoutFor)
		f.count = 0
		f.first = now
	}
}

func (s *Service) succeed(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.failures, key)
}

func newToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// HashToken is how session tokens are kept in the store.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
