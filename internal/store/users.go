package store

import (
	"context"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

// User is a native console/API user.
type User struct {
	ID           string
	Username     string
	PasswordHash string // PHC-formatted argon2id
	Disabled     bool
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// CreateUser inserts u. Returns conflict if the user name is taken.
func (db *DB) CreateUser(ctx context.Context, u *User) (err error) {
	defer db.track("create_user", time.Now(), &err)
	now := time.Now()
	_, err = db.rw.ExecContext(ctx, `INSERT INTO users (id, username, password_hash, disabled, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)`,
		u.ID, u.Username, u.PasswordHash, u.Disabled, ms(now), ms(now))
	if isUniqueViolation(err) {
		return errcode.New(errcode.Conflict, "user %q already exists", u.Username)
	}
	return err
}

// UserByName returns not_found if there is no such user.
func (db *DB) UserByName(ctx context.Context, username string) (_ *User, err error) {
	defer db.track("user_by_name", time.Now(), &err)
	return db.scanUser(ctx, `WHERE username = ?`, username)
}

// UserByID returns not_found if there is no such user.
func (db *DB) UserByID(ctx context.Context, id string) (_ *User, err error) {
	defer db.track("user_by_id", time.Now(), &err)
	return db.scanUser(ctx, `WHERE id = ?`, id)
}

func (db *DB) scanUser(ctx context.Context, where string, arg any) (*User, error) {
	u := &User{}
	var created, updated int64
	err := db.ro.QueryRowContext(ctx, `SELECT id, username, password_hash, disabled, created_at, updated_at FROM users `+where, arg).
		Scan(&u.ID, &u.Username, &u.PasswordHash, &u.Disabled, &created, &updated)
	if err != nil {
		return nil, notFound(err, "user not found")
	}
	u.CreatedAt, u.UpdatedAt = fromMS(created), fromMS(updated)
	return u, nil
}

// CountUsers returns how many users exist.
func (db *DB) CountUsers(ctx context.Context) (n int, err error) {
	defer db.track("count_users", time.Now(), &err)
	err = db.ro.QueryRowContext(ctx, `SELECT COUNT(*) FROM users`).Scan(&n)
	return n, err
}

// Session is a logged-in console session. Only a hash of its token is kept.
type Session struct {
	TokenHash  string
	UserID     string
	CreatedAt  time.Time
	ExpiresAt  time.Time
	LastUsedAt time.Time
	RemoteAddr string
}

// CreateSession stores s.
func (db *DB) CreateSession(ctx context.Context, s *Session) (err error) {
	defer db.track("create_session", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `INSERT INTO sessions (token_hash, user_id, created_at, expires_at, last_used_at, remote_addr) VALUES (?, ?, ?, ?, ?, ?)`,
		s.TokenHash, s.UserID, ms(s.CreatedAt), ms(s.ExpiresAt), ms(s.LastUsedAt), s.RemoteAddr)
	return err
}

// SessionByTokenHash returns the session and its user; not_found when the
// session does not exist or has expired at now.
func (db *DB) SessionByTokenHash(ctx context.Context, hash string, now time.Time) (_ *Session, _ *User, err error) {
	defer db.track("session_by_token", time.Now(), &err)
	s, u := &Session{}, &User{}
	var created, expires, used, uc, uu int64
	err = db.ro.QueryRowContext(ctx, `SELECT s.token_hash, s.user_id, s.created_at, s.expires_at, s.last_used_at, s.remote_addr,
		u.id, u.username, u.password_hash, u.disabled, u.created_at, u.updated_at
		FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ? AND s.expires_at > ?`, hash, ms(now)).
		Scan(&s.TokenHash, &s.UserID, &created, &expires, &used, &s.RemoteAddr,
			&u.ID, &u.Username, &u.PasswordHash, &u.Disabled, &uc, &uu)
	if err != nil {
		return nil, nil, notFound(err, "session not found or expired")
	}
	s.CreatedAt, s.ExpiresAt, s.LastUsedAt = fromMS(created), fromMS(expires), fromMS(used)
	u.CreatedAt, u.UpdatedAt = fromMS(uc), fromMS(uu)
	return s, u, nil
}

// ExtendSession moves a session's expiry (sliding idle timeout).
func (db *DB) ExtendSession(ctx context.Context, hash string, now, expires time.Time) (err error) {
	defer db.track("extend_session", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `UPDATE sessions SET last_used_at = ?, expires_at = ? WHERE token_hash = ?`, ms(now), ms(expires), hash)
	return err
}

// DeleteSession removes a session (logout).
func (db *DB) DeleteSession(ctx context.Context, hash string) (err error) {
	defer db.track("delete_session", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `DELETE FROM sessions WHERE token_hash = ?`, hash)
	return err
}

// DeleteExpiredSessions removes sessions that expired before now.
func (db *DB) DeleteExpiredSessions(ctx context.Context, now time.Time) (n int64, err error) {
	defer db.track("delete_expired_sessions", time.Now(), &err)
	res, err := db.rw.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at <= ?`, ms(now))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
