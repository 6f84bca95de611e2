package store

import (
	"context"
	"database/sql"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

// User is a native console/API user.
type User struct {
	ID                 string
	Username           string
	PasswordHash       string // PHC-formatted argon2id
	Disabled           bool
	HomeGroupID        string // where what the user creates is stored; default All
	Description        string
	MustChangePassword bool
	PasswordChangedAt  time.Time
	TOTPSecret         string // sealed by the caller; "" when not enrolled
	TOTPPending        string // sealed; a secret being enrolled
	TOTPEnabled        bool
	TOTPRequired       bool  // the user must use a second factor
	TOTPLastStep       int64 // the last accepted TOTP time step (codes cannot be reused)
	FailedLogins       int
	LockedUntil        time.Time
	LastLoginAt        time.Time
	LastLoginAddr      string // the remote address of the last full login
	// AddrFailedLogins and AddrLockedUntil count and lock failed logins
	// from LastLoginAddr apart from the others (FailedLogins, LockedUntil).
	AddrFailedLogins int
	AddrLockedUntil  time.Time
	CreatedAt        time.Time
	UpdatedAt        time.Time
	Version          int64
	// PermissionSetIDs is filled by UserByID/UserByName/ListUsers.
	PermissionSetIDs []string
}

const userColumns = `u.id, u.username, u.password_hash, u.disabled, u.home_group_id, u.description, u.must_change_password,
	u.password_changed_at, u.totp_secret, u.totp_pending, u.totp_enabled, u.totp_required, u.totp_last_step, u.failed_logins,
	u.locked_until, u.last_login_at, u.last_login_addr, u.addr_failed_logins, u.addr_locked_until, u.created_at, u.updated_at, u.version`

func scanUserRow(row interface{ Scan(...any) error }) (*User, error) {
	u := &User{}
	var pwChanged, locked, lastLogin, addrLocked, created, updated int64
	err := row.Scan(&u.ID, &u.Username, &u.PasswordHash, &u.Disabled, &u.HomeGroupID, &u.Description, &u.MustChangePassword,
		&pwChanged, &u.TOTPSecret, &u.TOTPPending, &u.TOTPEnabled, &u.TOTPRequired, &u.TOTPLastStep, &u.FailedLogins,
		&locked, &lastLogin, &u.LastLoginAddr, &u.AddrFailedLogins, &addrLocked, &created, &updated, &u.Version)
	if err != nil {
		return nil, err
	}
	u.PasswordChangedAt, u.LockedUntil, u.LastLoginAt, u.AddrLockedUntil = fromMS(pwChanged), fromMS(locked), fromMS(lastLogin), fromMS(addrLocked)
	u.CreatedAt, u.UpdatedAt = fromMS(created), fromMS(updated)
	return u, nil
}

// CreateUser inserts u with its permission sets. Returns conflict if the
// user name is taken, not_found for an unknown group or permission set.
func (db *DB) CreateUser(ctx context.Context, u *User) (err error) {
	defer db.track("create_user", time.Now(), &err)
	now := time.Now().UTC().Truncate(time.Millisecond)
	if u.HomeGroupID == "" {
		u.HomeGroupID = GroupAll
	}
	if u.PasswordChangedAt.IsZero() {
		u.PasswordChangedAt = now
	}
	u.CreatedAt, u.UpdatedAt, u.Version = now, now, 1
	return db.tx(ctx, func(tx *sql.Tx) error {
		if err := groupExists(ctx, tx, u.HomeGroupID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO users (id, username, password_hash, disabled, home_group_id, description,
			must_change_password, password_changed_at, totp_required, created_at, updated_at, version)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`,
			u.ID, u.Username, u.PasswordHash, u.Disabled, u.HomeGroupID, u.Description, u.MustChangePassword,
			ms(u.PasswordChangedAt), u.TOTPRequired, ms(now), ms(now))
		if isUniqueViolation(err) {
			return errcode.New(errcode.Conflict, "user %q already exists", u.Username)
		}
		if err != nil {
			return err
		}
		return setUserSets(ctx, tx, u.ID, u.PermissionSetIDs)
	})
}

func groupExists(ctx context.Context, tx *sql.Tx, id string) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM static_groups WHERE id = ?`, id).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return errcode.New(errcode.NotFound, "static group not found")
	}
	return nil
}

func setUserSets(ctx context.Context, tx *sql.Tx, userID string, sets []string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM user_permission_sets WHERE user_id = ?`, userID); err != nil {
		return err
	}
	for _, s := range sets {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM permission_sets WHERE id = ?`, s).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errcode.New(errcode.NotFound, "permission set %q not found", s)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO user_permission_sets (user_id, set_id) VALUES (?, ?) ON CONFLICT DO NOTHING`, userID, s); err != nil {
			return err
		}
	}
	return nil
}

// UserByName returns not_found if there is no such user.
func (db *DB) UserByName(ctx context.Context, username string) (_ *User, err error) {
	defer db.track("user_by_name", time.Now(), &err)
	return db.oneUser(ctx, `WHERE u.username = ?`, username)
}

// UserByID returns not_found if there is no such user.
func (db *DB) UserByID(ctx context.Context, id string) (_ *User, err error) {
	defer db.track("user_by_id", time.Now(), &err)
	return db.oneUser(ctx, `WHERE u.id = ?`, id)
}

func (db *DB) oneUser(ctx context.Context, where string, arg any) (*User, error) {
	u, err := scanUserRow(db.ro.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users u `+where, arg))
	if err != nil {
		return nil, notFound(err, "user not found")
	}
	if u.PermissionSetIDs, err = db.userSets(ctx, u.ID); err != nil {
		return nil, err
	}
	return u, nil
}

func (db *DB) userSets(ctx context.Context, userID string) ([]string, error) {
	rows, err := db.ro.QueryContext(ctx, `SELECT set_id FROM user_permission_sets WHERE user_id = ? ORDER BY set_id`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// UserFilter selects users; zero values select all.
type UserFilter struct {
	GroupIDs []string // home group in any of these (nil: all)
	Name     string   // case-insensitive substring of the user name
	Sort     string   // username (default), created_at, last_login_at; "-" for descending
	Limit    int
	Offset   int
}

var userSorts = map[string]string{"username": "u.username", "created_at": "u.created_at", "last_login_at": "u.last_login_at"}

// ListUsers returns a page of users and the total matching.
func (db *DB) ListUsers(ctx context.Context, f UserFilter) (_ []*User, total int, err error) {
	defer db.track("list_users", time.Now(), &err)
	var where []string
	var args []any
	if f.GroupIDs != nil {
		if len(f.GroupIDs) == 0 {
			return nil, 0, nil
		}
		where = append(where, "u.home_group_id IN ("+placeholders(len(f.GroupIDs))+")")
		for _, g := range f.GroupIDs {
			args = append(args, g)
		}
	}
	if f.Name != "" {
		where = append(where, `LOWER(u.username) LIKE LOWER(?) ESCAPE '\'`)
		args = append(args, "%"+escapeLike(f.Name)+"%")
	}
	order, err := orderBy(f.Sort, userSorts, "username")
	if err != nil {
		return nil, 0, err
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	if err := db.ro.QueryRowContext(ctx, `SELECT COUNT(*) FROM users u`+cond, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	limit, offset := pageBounds(f.Limit, f.Offset)
	rows, err := db.ro.QueryContext(ctx, `SELECT `+userColumns+` FROM users u`+cond+` ORDER BY `+order+`, u.id LIMIT ? OFFSET ?`, append(args, limit, offset)...)
	if err != nil {
		return nil, 0, err
	}
	var out []*User
	for rows.Next() {
		u, err := scanUserRow(rows)
		if err != nil {
			rows.Close()
			return nil, 0, err
		}
		out = append(out, u)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	for _, u := range out {
		if u.PermissionSetIDs, err = db.userSets(ctx, u.ID); err != nil {
			return nil, 0, err
		}
	}
	return out, total, nil
}

// UpdateUser writes u's editable fields (description, home group,
// disabled, must-change-password, TOTP flags and secrets, password hash and
// its change time, permission sets) if its version is still u.Version, and
// bumps the version. Returns conflict when someone else changed the user
// meanwhile, not_found when it is gone.
func (db *DB) UpdateUser(ctx context.Context, u *User) (err error) {
	defer db.track("update_user", time.Now(), &err)
	now := time.Now().UTC().Truncate(time.Millisecond)
	if err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := groupExists(ctx, tx, u.HomeGroupID); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = ?, disabled = ?, home_group_id = ?, description = ?,
			must_change_password = ?, password_changed_at = ?, totp_secret = ?, totp_pending = ?, totp_enabled = ?, totp_required = ?,
			totp_last_step = ?, updated_at = ?, version = version + 1 WHERE id = ? AND version = ?`,
			u.PasswordHash, u.Disabled, u.HomeGroupID, u.Description, u.MustChangePassword, ms(u.PasswordChangedAt),
			u.TOTPSecret, u.TOTPPending, u.TOTPEnabled, u.TOTPRequired, u.TOTPLastStep, ms(now), u.ID, u.Version)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return versionConflict(ctx, tx, "users", u.ID, "user")
		}
		if err := setUserSets(ctx, tx, u.ID, u.PermissionSetIDs); err != nil {
			return err
		}
		return nil
	}); err != nil {
		return err
	}
	// After the commit, not in fn, which may run twice (see runTx).
	u.Version++
	u.UpdatedAt = now
	return nil
}

// versionConflict tells a missing row (not_found) from a changed one
// (conflict) after a versioned UPDATE matched nothing.
// deleteVersioned deletes the row id of table if it is still at version:
// not_found when there is no such row, conflict when it has changed.
func (db *DB) deleteVersioned(ctx context.Context, table, what, id string, version int64) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE id = ? AND version = ?`, id, version)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return versionConflict(ctx, tx, table, id, what)
		}
		return nil
	})
}

func versionConflict(ctx context.Context, tx *sql.Tx, table, id, what string) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table+` WHERE id = ?`, id).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return errcode.New(errcode.NotFound, "%s not found", what)
	}
	return errcode.New(errcode.Conflict, "the %s was changed by someone else; reload it and try again", what)
}

// DeleteUser removes a user, their sessions, tokens and recovery codes.
func (db *DB) DeleteUser(ctx context.Context, id string) (err error) {
	defer db.track("delete_user", time.Now(), &err)
	res, err := db.rw.ExecContext(ctx, `DELETE FROM users WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errcode.New(errcode.NotFound, "user not found")
	}
	return nil
}

// RecordLoginFailure counts a failed login and locks the user until
// lockUntil once failures reach maxFailures (then the count restarts).
// fromLastAddr counts it apart, as one from the address of the user's last
// full login (AddrFailedLogins, AddrLockedUntil). It returns the new lock
// time (zero if not locked).
func (db *DB) RecordLoginFailure(ctx context.Context, id string, fromLastAddr bool, maxFailures int, lockUntil time.Time) (locked time.Time, err error) {
	defer db.track("login_failure", time.Now(), &err)
	count, lock := "failed_logins", "locked_until"
	if fromLastAddr {
		count, lock = "addr_failed_logins", "addr_locked_until"
	}
	err = db.tx(ctx, func(tx *sql.Tx) error {
		locked = time.Time{} // fn may run twice (see runTx)
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT `+count+` FROM users WHERE id = ?`, id).Scan(&n); err != nil {
			return notFound(err, "user not found")
		}
		n++
		if n >= maxFailures {
			locked = lockUntil
			_, err := tx.ExecContext(ctx, `UPDATE users SET `+count+` = 0, `+lock+` = ? WHERE id = ?`, ms(lockUntil), id)
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE users SET `+count+` = ? WHERE id = ?`, n, id)
		return err
	})
	return locked, err
}

// UnlockUser clears a user's failed logins and locks (an administrator's
// unlock or password reset).
func (db *DB) UnlockUser(ctx context.Context, id string) (err error) {
	defer db.track("unlock_user", time.Now(), &err)
	res, err := db.rw.ExecContext(ctx, `UPDATE users SET failed_logins = 0, locked_until = 0, addr_failed_logins = 0, addr_locked_until = 0 WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errcode.New(errcode.NotFound, "user not found")
	}
	return nil
}

// RecordLoginSuccess clears the failure counts and locks, and notes the
// login's time and remote address.
func (db *DB) RecordLoginSuccess(ctx context.Context, id string, at time.Time, addr string) (err error) {
	defer db.track("login_success", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `UPDATE users SET failed_logins = 0, locked_until = 0, addr_failed_logins = 0, addr_locked_until = 0,
		last_login_at = ?, last_login_addr = ? WHERE id = ?`, ms(at), addr, id)
	return err
}

// UseTOTPStep records step as the last accepted TOTP step if it is newer
// than the one recorded; it returns false for a reused (or older) step.
func (db *DB) UseTOTPStep(ctx context.Context, id string, step int64) (ok bool, err error) {
	defer db.track("use_totp_step", time.Now(), &err)
	res, err := db.rw.ExecContext(ctx, `UPDATE users SET totp_last_step = ? WHERE id = ? AND totp_last_step < ?`, step, id, step)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// SetRecoveryCodes replaces a user's recovery codes (hashes).
func (db *DB) SetRecoveryCodes(ctx context.Context, userID string, hashes []string) (err error) {
	defer db.track("set_recovery_codes", time.Now(), &err)
	return db.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM recovery_codes WHERE user_id = ?`, userID); err != nil {
			return err
		}
		for _, h := range hashes {
			if _, err := tx.ExecContext(ctx, `INSERT INTO recovery_codes (user_id, code_hash) VALUES (?, ?)`, userID, h); err != nil {
				return err
			}
		}
		return nil
	})
}

// UseRecoveryCode marks an unused recovery code used; false if there is no
// such unused code.
func (db *DB) UseRecoveryCode(ctx context.Context, userID, hash string, at time.Time) (ok bool, err error) {
	defer db.track("use_recovery_code", time.Now(), &err)
	res, err := db.rw.ExecContext(ctx, `UPDATE recovery_codes SET used_at = ? WHERE user_id = ? AND code_hash = ? AND used_at IS NULL`, ms(at), userID, hash)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// RecoveryCodesLeft counts a user's unused recovery codes.
func (db *DB) RecoveryCodesLeft(ctx context.Context, userID string) (n int, err error) {
	defer db.track("recovery_codes_left", time.Now(), &err)
	err = db.ro.QueryRowContext(ctx, `SELECT COUNT(*) FROM recovery_codes WHERE user_id = ? AND used_at IS NULL`, userID).Scan(&n)
	return n, err
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
	// SecondFactor is false while a user with TOTP has given only the
	// password: such a session can do nothing but complete the login.
	SecondFactor bool
}

// CreateSession stores s.
func (db *DB) CreateSession(ctx context.Context, s *Session) (err error) {
	defer db.track("create_session", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `INSERT INTO sessions (token_hash, user_id, created_at, expires_at, last_used_at, remote_addr, second_factor) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		s.TokenHash, s.UserID, ms(s.CreatedAt), ms(s.ExpiresAt), ms(s.LastUsedAt), s.RemoteAddr, s.SecondFactor)
	return err
}

// SessionByTokenHash returns the session and its user; not_found when the
// session does not exist or has expired at now.
func (db *DB) SessionByTokenHash(ctx context.Context, hash string, now time.Time) (_ *Session, _ *User, err error) {
	defer db.track("session_by_token", time.Now(), &err)
	s := &Session{}
	var created, expires, used int64
	var userID string
	err = db.ro.QueryRowContext(ctx, `SELECT token_hash, user_id, created_at, expires_at, last_used_at, remote_addr, second_factor
		FROM sessions WHERE token_hash = ? AND expires_at > ?`, hash, ms(now)).
		Scan(&s.TokenHash, &userID, &created, &expires, &used, &s.RemoteAddr, &s.SecondFactor)
	if err != nil {
		return nil, nil, notFound(err, "session not found or expired")
	}
	s.UserID = userID
	s.CreatedAt, s.ExpiresAt, s.LastUsedAt = fromMS(created), fromMS(expires), fromMS(used)
	u, err := db.oneUser(ctx, `WHERE u.id = ?`, userID)
	if err != nil {
		return nil, nil, notFound(err, "session not found or expired")
	}
	return s, u, nil
}

// CompleteSecondFactor marks a session's second factor as given.
func (db *DB) CompleteSecondFactor(ctx context.Context, hash string) (err error) {
	defer db.track("complete_second_factor", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `UPDATE sessions SET second_factor = 1 WHERE token_hash = ?`, hash)
	return err
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

// DeleteUserSessions ends every session of a user (password change,
// disabling, removal of a second factor).
func (db *DB) DeleteUserSessions(ctx context.Context, userID string) (err error) {
	defer db.track("delete_user_sessions", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = ?`, userID)
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
