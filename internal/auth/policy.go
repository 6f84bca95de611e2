package auth

import (
	"context"
	"strings"
	"unicode/utf8"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/password"
	"github.com/mamori/mamori/internal/store"
)

// PolicyKey is the settings key of the security policy.
const PolicyKey = "security"

// Policy is the server's security policy (GET/PUT /api/v1/settings/security).
// Zero fields take the defaults.
type Policy struct {
	// MinPasswordLength: 8-128, default 12.
	MinPasswordLength int `json:"min_password_length"`
	// PasswordMaxAgeDays forces a change after this many days; 0 never.
	PasswordMaxAgeDays int `json:"password_max_age_days"`
	// RequireTOTP makes every user set up a second factor at next login.
	RequireTOTP bool `json:"require_totp"`
	// LockoutFailures failed logins lock the account for LockoutMinutes;
	// defaults 5 and 15.
	LockoutFailures int `json:"lockout_failures"`
	LockoutMinutes  int `json:"lockout_minutes"`
	// SessionIdleMinutes ends a session unused this long (default 30);
	// SessionMaxHours ends any session (default 12).
	SessionIdleMinutes int `json:"session_idle_minutes"`
	SessionMaxHours    int `json:"session_max_hours"`
	// AuditRetentionDays deletes audit entries older than this; 0 keeps
	// them forever (the default).
	AuditRetentionDays int `json:"audit_retention_days"`
}

// Defaults fills zero fields with the defaults.
func (p Policy) Defaults() Policy {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&p.MinPasswordLength, 12)
	def(&p.LockoutFailures, 5)
	def(&p.LockoutMinutes, 15)
	def(&p.SessionIdleMinutes, 30)
	def(&p.SessionMaxHours, 12)
	return p
}

// Validate checks a policy given by an administrator.
func (p Policy) Validate() error {
	d := p.Defaults()
	switch {
	case d.MinPasswordLength < 8 || d.MinPasswordLength > 128:
		return errcode.New(errcode.Invalid, "min_password_length must be between 8 and 128")
	case p.PasswordMaxAgeDays < 0 || p.PasswordMaxAgeDays > 3650:
		return errcode.New(errcode.Invalid, "password_max_age_days must be between 0 (never) and 3650")
	case d.LockoutFailures < 1 || d.LockoutFailures > 100:
		return errcode.New(errcode.Invalid, "lockout_failures must be between 1 and 100")
	case d.LockoutMinutes < 1 || d.LockoutMinutes > 24*60:
		return errcode.New(errcode.Invalid, "lockout_minutes must be between 1 and 1440")
	case d.SessionIdleMinutes < 1 || d.SessionIdleMinutes > 24*60:
		return errcode.New(errcode.Invalid, "session_idle_minutes must be between 1 and 1440")
	case d.SessionMaxHours < 1 || d.SessionMaxHours > 24*30:
		return errcode.New(errcode.Invalid, "session_max_hours must be between 1 and 720")
	case p.AuditRetentionDays < 0 || (p.AuditRetentionDays > 0 && p.AuditRetentionDays < 30):
		return errcode.New(errcode.Invalid, "audit_retention_days must be 0 (keep forever) or at least 30")
	}
	return nil
}

// PolicyStore reads and writes the policy setting.
type PolicyStore interface {
	SettingByKey(ctx context.Context, key string) (*store.Setting, error)
	PutSetting(ctx context.Context, s *store.Setting) error
}

// LoadPolicy returns the stored policy with defaults, and its version (0
// when never set).
func LoadPolicy(ctx context.Context, st PolicyStore) (Policy, int64, error) {
	var p Policy
	v, err := store.LoadJSONSetting(ctx, st, PolicyKey, &p)
	if err != nil {
		return Policy{}, 0, err
	}
	return p.Defaults(), v, nil
}

// SavePolicy validates and writes p if the stored version is still version.
func SavePolicy(ctx context.Context, st PolicyStore, p Policy, version int64) (int64, error) {
	if err := p.Validate(); err != nil {
		return 0, err
	}
	return store.SaveJSONSetting(ctx, st, PolicyKey, p.Defaults(), version)
}

// common holds passwords refused whatever their length (the most used ones
// long enough to pass a length rule).
var common = map[string]bool{
	"password1234": true, "123456789012": true, "qwertyuiopas": true, "passwordpassword": true, "adminadminadmin": true,
	"iloveyou1234": true, "welcome12345": true, "changeme1234": true, "letmein12345": true, "administrator": true,
	"1234567890123": true, "qwerty123456": true, "password123!": true, "p@ssw0rd1234": true, "mamorimamori": true,
}

// CheckPassword returns invalid with the reason when pw is not acceptable for
// username under p.
func CheckPassword(pw, username string, p Policy) error {
	p = p.Defaults()
	n := utf8.RuneCountInString(pw)
	switch {
	case n < p.MinPasswordLength:
		return errcode.New(errcode.Invalid, "the password must have at least %d characters", p.MinPasswordLength)
	case len(pw) > password.MaxLen:
		return errcode.New(errcode.Invalid, "the password must have at most %d bytes", password.MaxLen)
	case !utf8.ValidString(pw):
		return errcode.New(errcode.Invalid, "the password must be valid UTF-8")
	case username != "" && strings.Contains(strings.ToLower(pw), strings.ToLower(username)):
		return errcode.New(errcode.Invalid, "the password must not contain the user name")
	case common[strings.ToLower(pw)]:
		return errcode.New(errcode.Invalid, "the password is too common")
	case strings.Count(pw, string([]rune(pw)[0])) == n: // runes, not bytes: "ééé…" repeats one character too
		return errcode.New(errcode.Invalid, "the password must not repeat a single character")
	}
	return nil
}
