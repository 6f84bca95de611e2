package auth_test

import (
	"strings"
	"testing"

	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/errcode"
)

func TestPolicyDefaults_FillOnlyZeroFields(t *testing.T) {
	t.Parallel()
	got := auth.Policy{}.Defaults()
	want := auth.Policy{MinPasswordLength: 12, LockoutFailures: 5, LockoutMinutes: 15, SessionIdleMinutes: 30, SessionMaxHours: 12}
	if got != want {
		t.Fatalf("Policy{}.Defaults() = %+v, want %+v", got, want)
	}
	set := auth.Policy{MinPasswordLength: 20, PasswordMaxAgeDays: 90, RequireTOTP: true, LockoutFailures: 3, LockoutMinutes: 60,
		SessionIdleMinutes: 10, SessionMaxHours: 2, AuditRetentionDays: 365}
	if got := set.Defaults(); got != set {
		t.Fatalf("Defaults changed set fields: %+v, want %+v", got, set)
	}
}

func TestPolicyValidate_EveryBound(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		p     auth.Policy
		valid bool
	}{
		{"zero takes the defaults", auth.Policy{}, true},
		{"min length 8", auth.Policy{MinPasswordLength: 8}, true},
		{"min length 7", auth.Policy{MinPasswordLength: 7}, false},
		{"min length 128", auth.Policy{MinPasswordLength: 128}, true},
		{"min length 129", auth.Policy{MinPasswordLength: 129}, false},
		{"min length negative", auth.Policy{MinPasswordLength: -1}, false},
		{"max age 0 (never)", auth.Policy{PasswordMaxAgeDays: 0}, true},
		{"max age 3650", auth.Policy{PasswordMaxAgeDays: 3650}, true},
		{"max age 3651", auth.Policy{PasswordMaxAgeDays: 3651}, false},
		{"max age negative", auth.Policy{PasswordMaxAgeDays: -1}, false},
		{"lockout failures 1", auth.Policy{LockoutFailures: 1}, true},
		{"lockout failures 100", auth.Policy{LockoutFailures: 100}, true},
		{"lockout failures 101", auth.Policy{LockoutFailures: 101}, false},
		{"lockout failures negative", auth.Policy{LockoutFailures: -1}, false},
		{"lockout minutes 1", auth.Policy{LockoutMinutes: 1}, true},
		{"lockout minutes 1440", auth.Policy{LockoutMinutes: 1440}, true},
		{"lockout minutes 1441", auth.Policy{LockoutMinutes: 1441}, false},
		{"lockout minutes negative", auth.Policy{LockoutMinutes: -1}, false},
		{"idle minutes 1", auth.Policy{SessionIdleMinutes: 1}, true},
		{"idle minutes 1440", auth.Policy{SessionIdleMinutes: 1440}, true},
		{"idle minutes 1441", auth.Policy{SessionIdleMinutes: 1441}, false},
		{"idle minutes negative", auth.Policy{SessionIdleMinutes: -1}, false},
		{"max hours 1", auth.Policy{SessionMaxHours: 1}, true},
		{"max hours 720", auth.Policy{SessionMaxHours: 720}, true},
		{"max hours 721", auth.Policy{SessionMaxHours: 721}, false},
		{"max hours negative", auth.Policy{SessionMaxHours: -1}, false},
		{"retention 0 (forever)", auth.Policy{AuditRetentionDays: 0}, true},
		{"retention 29", auth.Policy{AuditRetentionDays: 29}, false},
		{"retention 30", auth.Policy{AuditRetentionDays: 30}, true},
		{"retention 1", auth.Policy{AuditRetentionDays: 1}, false},
		{"retention negative", auth.Policy{AuditRetentionDays: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.p.Validate()
			if tc.valid && err != nil {
				t.Fatalf("Validate(%+v) = %v, want valid", tc.p, err)
			}
			if !tc.valid && errcode.Of(err) != errcode.Invalid {
				t.Fatalf("Validate(%+v) = %v, want invalid", tc.p, err)
			}
		})
	}
}

func TestLoadSavePolicy_RoundTripAndConflict(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	p, v, err := auth.LoadPolicy(ctx, f.db)
	if err != nil || v != 0 || p != (auth.Policy{}).Defaults() {
		t.Fatalf("LoadPolicy on a new store = %+v, version %d, %v; want the defaults at version 0", p, v, err)
	}

	want := auth.Policy{MinPasswordLength: 16, PasswordMaxAgeDays: 90, RequireTOTP: true, LockoutFailures: 3, LockoutMinutes: 30,
		SessionIdleMinutes: 20, SessionMaxHours: 8, AuditRetentionDays: 400}
	v1, err := auth.SavePolicy(ctx, f.db, want, 0)
	if err != nil || v1 != 1 {
		t.Fatalf("first SavePolicy = %d, %v; want version 1", v1, err)
	}
	got, v, err := auth.LoadPolicy(ctx, f.db)
	if err != nil || v != 1 || got != want {
		t.Fatalf("LoadPolicy = %+v, version %d, %v; want %+v at 1", got, v, err, want)
	}

	// A partial policy loads with the defaults filled in.
	v2, err := auth.SavePolicy(ctx, f.db, auth.Policy{LockoutFailures: 7}, v1)
	if err != nil || v2 != 2 {
		t.Fatalf("second SavePolicy = %d, %v", v2, err)
	}
	if got, _, _ := auth.LoadPolicy(ctx, f.db); got != (auth.Policy{LockoutFailures: 7}).Defaults() {
		t.Fatalf("LoadPolicy after a partial save = %+v", got)
	}

	for _, stale := range []int64{0, v1} {
		_, err := auth.SavePolicy(ctx, f.db, auth.Policy{LockoutFailures: 9}, stale)
		wantCode(t, err, errcode.Conflict)
	}
	_, err = auth.SavePolicy(ctx, f.db, auth.Policy{MinPasswordLength: 4}, v2)
	wantCode(t, err, errcode.Invalid)
	if got, v, _ := auth.LoadPolicy(ctx, f.db); v != 2 || got.LockoutFailures != 7 || got.MinPasswordLength != 12 {
		t.Fatalf("refused saves changed the policy: %+v at version %d", got, v)
	}
}

func TestCheckPassword_Rules(t *testing.T) {
	t.Parallel()
	def := auth.Policy{}
	for _, tc := range []struct {
		name, pw, user string
		p              auth.Policy
		ok             bool
	}{
		{"long enough", "correct horse", "alice", def, true},
		{"exactly the minimum", "abcdefghijk1", "alice", def, true},
		{"one short", "abcdefghij1", "alice", def, false},
		{"length counts runes: 11 runes, 22 bytes", "ééééééééééa", "alice", def, false},
		{"length counts runes: 12 runes", "ééééééééééab", "alice", def, true},
		{"policy minimum 8", "abcdefg1", "alice", auth.Policy{MinPasswordLength: 8}, true},
		{"policy minimum 20", "abcdefghijklmnopqrs", "alice", auth.Policy{MinPasswordLength: 20}, false},
		{"contains the user name", "my-alice-password", "alice", def, false},
		{"contains the user name in another case", "my-ALICE-password", "alice", def, false},
		{"no user name given", "my-alice-password", "", def, true},
		{"common", "password1234", "alice", def, false},
		{"common in another case", "Password1234", "alice", def, false},
		{"common administrator", "administrator", "alice", def, false},
		{"single repeated character", "aaaaaaaaaaaaaaaa", "bob", def, false},
		{"single repeated multibyte character", "éééééééééééééééé", "bob", def, false},
		{"two characters repeated", "abababababababab", "bob", def, true},
		{"1024 bytes", strings.Repeat("abcd", 256), "bob", def, true},
		{"1025 bytes", strings.Repeat("abcd", 256) + "e", "bob", def, false},
		{"invalid UTF-8", "good password \xff\xfe", "bob", def, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := auth.CheckPassword(tc.pw, tc.user, tc.p)
			if tc.ok && err != nil {
				t.Fatalf("CheckPassword(%q) = %v, want accepted", tc.pw, err)
			}
			if !tc.ok && errcode.Of(err) != errcode.Invalid {
				t.Fatalf("CheckPassword(%q) = %v, want invalid", tc.pw, err)
			}
		})
	}
}
