package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

// APIToken is a personal access token; only a hash of its secret is kept.
type APIToken struct {
	ID         string
	UserID     string
	Name       string
	TokenHash  string
	CreatedAt  time.Time
	ExpiresAt  time.Time
	LastUsedAt time.Time
	RevokedAt  time.Time
}

const apiTokenColumns = `id, user_id, name, token_hash, created_at, expires_at, last_used_at, revoked_at`

func scanAPIToken(row interface{ Scan(...any) error }) (*APIToken, error) {
	t := &APIToken{}
	var c, e, l int64
	var r sql.NullInt64
	if err := row.Scan(&t.ID, &t.UserID, &t.Name, &t.TokenHash, &c, &e, &l, &r); err != nil {
		return nil, err
	}
	t.CreatedAt, t.ExpiresAt, t.LastUsedAt, t.RevokedAt = fromMS(c), fromMS(e), fromMS(l), fromNullMS(r)
	return t, nil
}

// CreateAPIToken stores t.
func (db *DB) CreateAPIToken(ctx context.Context, t *APIToken) (err error) {
	defer db.track("create_api_token", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`,
		t.ID, t.UserID, t.Name, t.TokenHash, ms(t.CreatedAt), ms(t.ExpiresAt))
	return err
}

// APITokenByHash returns not_found for an unknown token.
func (db *DB) APITokenByHash(ctx context.Context, hash string) (_ *APIToken, err error) {
	defer db.track("api_token_by_hash", time.Now(), &err)
	t, err := scanAPIToken(db.ro.QueryRowContext(ctx, `SELECT `+apiTokenColumns+` FROM api_tokens WHERE token_hash = ?`, hash))
	return t, notFound(err, "API token not found")
}

// APITokens lists a user's tokens, newest first.
func (db *DB) APITokens(ctx context.Context, userID string) (_ []*APIToken, err error) {
	defer db.track("api_tokens", time.Now(), &err)
	rows, err := db.ro.QueryContext(ctx, `SELECT `+apiTokenColumns+` FROM api_tokens WHERE user_id = ? ORDER BY created_at DESC, id`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*APIToken
	for rows.Next() {
		t, err := scanAPIToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeAPIToken revokes a token of userID. Returns not_found otherwise.
func (db *DB) RevokeAPIToken(ctx context.Context, userID, id string, now time.Time) (err error) {
	defer db.track("revoke_api_token", time.Now(), &err)
	res, err := db.rw.ExecContext(ctx, `UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND user_id = ?`, ms(now), id, userID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errcode.New(errcode.NotFound, "API token not found")
	}
	return nil
}

// RevokeUserAPITokens revokes every token of a user.
func (db *DB) RevokeUserAPITokens(ctx context.Context, userID string, now time.Time) (err error) {
	defer db.track("revoke_user_api_tokens", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `UPDATE api_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL`, ms(now), userID)
	return err
}

// TouchAPIToken records a token's use (at most the caller's chosen rate).
func (db *DB) TouchAPIToken(ctx context.Context, id string, at time.Time) (err error) {
	defer db.track("touch_api_token", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `UPDATE api_tokens SET last_used_at = ? WHERE id = ?`, ms(at), id)
	return err
}
