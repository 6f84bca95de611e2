package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

// Setting is one server setting (a JSON value under a key).
type Setting struct {
	Key       string
	Value     string
	UpdatedAt time.Time
	Version   int64 // 0 when never set
}

// SettingByKey returns the setting, or a zero-version setting when unset.
func (db *DB) SettingByKey(ctx context.Context, key string) (_ *Setting, err error) {
	defer db.track("setting", time.Now(), &err)
	s := &Setting{Key: key}
	var u int64
	err = db.ro.QueryRowContext(ctx, `SELECT value, updated_at, version FROM settings WHERE key = ?`, key).Scan(&s.Value, &u, &s.Version)
	if errors.Is(err, sql.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	s.UpdatedAt = fromMS(u)
	return s, nil
}

// PutSetting writes a setting if its version is still s.Version (0: not set
// yet). Returns conflict when it changed meanwhile.
func (db *DB) PutSetting(ctx context.Context, s *Setting) (err error) {
	defer db.track("put_setting", time.Now(), &err)
	now := time.Now().UTC().Truncate(time.Millisecond)
	var res sql.Result
	if s.Version == 0 {
		res, err = db.rw.ExecContext(ctx, `INSERT INTO settings (key, value, updated_at, version) VALUES (?, ?, ?, 1) ON CONFLICT (key) DO NOTHING`,
			s.Key, s.Value, ms(now))
	} else {
		res, err = db.rw.ExecContext(ctx, `UPDATE settings SET value = ?, updated_at = ?, version = version + 1 WHERE key = ? AND version = ?`,
			s.Value, ms(now), s.Key, s.Version)
	}
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errcode.New(errcode.Conflict, "setting %q was changed by someone else; reload it and try again", s.Key)
	}
	s.Version++
	s.UpdatedAt = now
	return nil
}

// SettingReader reads settings (*DB).
type SettingReader interface {
	SettingByKey(ctx context.Context, key string) (*Setting, error)
}

// SettingWriter writes settings (*DB).
type SettingWriter interface {
	PutSetting(ctx context.Context, s *Setting) error
}

// LoadJSONSetting decodes the setting key into v, which is left as it is
// when the setting was never written, and returns its version (0 then).
func LoadJSONSetting(ctx context.Context, st SettingReader, key string, v any) (int64, error) {
	s, err := st.SettingByKey(ctx, key)
	if err != nil {
		return 0, err
	}
	if s.Value != "" {
		if err := json.Unmarshal([]byte(s.Value), v); err != nil {
			return 0, fmt.Errorf("setting %q: %w", key, err)
		}
	}
	return s.Version, nil
}

// SaveJSONSetting writes v as the setting key if its stored version is
// still version (conflict otherwise) and returns the new version.
func SaveJSONSetting(ctx context.Context, st SettingWriter, key string, v any, version int64) (int64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	s := &Setting{Key: key, Value: string(b), Version: version}
	if err := st.PutSetting(ctx, s); err != nil {
		return 0, err
	}
	return s.Version, nil
}
