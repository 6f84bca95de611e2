package auth_test

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/authz"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/password"
	"github.com/mamori/mamori/internal/store"
)

// T0 is the fixture clock's start; it falls on a TOTP step boundary.
var T0 = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

const (
	goodPassword = "correct horse battery"
	remote       = "192.0.2.10"
)

// fixture is a Service over a real SQLite store with a clock the test moves.
type fixture struct {
	db     *store.DB
	svc    *auth.Service
	sealer *auth.Sealer
	now    time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	db, err := store.OpenSQLite(t.Context(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{db: db, sealer: newSealer(t, 7), now: T0}
	f.svc = &auth.Service{Store: db, Sealer: f.sealer, Now: func() time.Time { return f.now }}
	return f
}

func (f *fixture) advance(d time.Duration) { f.now = f.now.Add(d) }

func (f *fixture) setPolicy(t *testing.T, p auth.Policy) {
	t.Helper()
	_, v, err := auth.LoadPolicy(t.Context(), f.db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auth.SavePolicy(t.Context(), f.db, p, v); err != nil {
		t.Fatal(err)
	}
}

// hashOf is a real argon2id PHC string of pw at the lowest cost
// password.Verify accepts, so that logins in tests do not each spend 46 MiB;
// what the server writes (SetPassword) still uses the default cost.
func hashOf(pw string) string {
	salt := []byte("mamori test salt")
	key := argon2.IDKey([]byte(pw), salt, 1, 64, 1, 32)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=64,t=1,p=1$%s$%s", argon2.Version, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// addUser creates a user with goodPassword, changed now, after edit.
func (f *fixture) addUser(t *testing.T, name string, edit func(*store.User)) *store.User {
	t.Helper()
	u := &store.User{ID: "id-" + name, Username: name, PasswordHash: hashOf(goodPassword), PasswordChangedAt: f.now}
	if edit != nil {
		edit(u)
	}
	if err := f.db.CreateUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	return f.user(t, u.ID)
}

func (f *fixture) user(t *testing.T, id string) *store.User {
	t.Helper()
	u, err := f.db.UserByID(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func (f *fixture) update(t *testing.T, id string, edit func(*store.User)) *store.User {
	t.Helper()
	u := f.user(t, id)
	edit(u)
	if err := f.db.UpdateUser(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	return u
}

func (f *fixture) login(t *testing.T, name string) *auth.LoginResult {
	t.Helper()
	res, err := f.svc.Login(t.Context(), auth.LoginRequest{Username: name, Password: goodPassword, Remote: remote})
	if err != nil {
		t.Fatalf("Login(%s): %v", name, err)
	}
	return res
}

func (f *fixture) authenticate(t *testing.T, token string) *auth.Principal {
	t.Helper()
	p, err := f.svc.Authenticate(t.Context(), token)
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	return p
}

// session reads the stored session behind token at the fixture's time.
func (f *fixture) session(t *testing.T, token string) *store.Session {
	t.Helper()
	s, _, err := f.db.SessionByTokenHash(t.Context(), auth.HashToken(token), f.now)
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	return s
}

func wantCode(t *testing.T, err error, code errcode.Code) {
	t.Helper()
	if got := errcode.Of(err); got != code {
		t.Fatalf("error = %v (code %q), want code %q", err, got, code)
	}
}

// ---- login -------------------------------------------------------------------

func TestLogin_OpensASessionAndRecordsTheLogin(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	u := f.addUser(t, "alice", func(u *store.User) { u.PermissionSetIDs = []string{store.PermSetReviewer} })
	if _, err := f.db.RecordLoginFailure(t.Context(), u.ID, false, 5, T0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	res := f.login(t, "alice")
	if res.Token == "" || res.User.ID != u.ID || res.Restriction != "" || !res.ExpiresAt.Equal(T0.Add(30*time.Minute)) {
		t.Fatalf("LoginResult = %+v", res)
	}
	if got := f.user(t, u.ID); got.FailedLogins != 0 || !got.LastLoginAt.Equal(T0) {
		t.Fatalf("after login: failures %d, last login %v", got.FailedLogins, got.LastLoginAt)
	}
	s := f.session(t, res.Token)
	if s.UserID != u.ID || !s.SecondFactor || s.RemoteAddr != remote || !s.CreatedAt.Equal(T0) || !s.ExpiresAt.Equal(res.ExpiresAt) {
		t.Fatalf("stored session = %+v", s)
	}
	p := f.authenticate(t, res.Token)
	if p.UserID != u.ID || p.Username != "alice" || p.HomeGroupID != store.GroupAll || p.Via != auth.ViaSession ||
		p.SessionHash != auth.HashToken(res.Token) || p.Restriction != "" {
		t.Fatalf("principal = %+v", p)
	}
	if !p.Permissions.Any(authz.Computers, authz.Read) || p.Permissions.Any(authz.Computers, authz.Write) {
		t.Fatal("a reviewer's session does not carry the reviewer's permissions")
	}

	if err := f.svc.Logout(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	_, err := f.svc.Authenticate(t.Context(), res.Token)
	wantCode(t, err, errcode.Unauthorized)
}

func TestLogin_WrongPasswordUnknownAndDisabledUsersLookAlike(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addUser(t, "alice", nil)
	f.addUser(t, "dora", func(u *store.User) { u.Disabled = true })
	var msgs []string
	for _, req := range []auth.LoginRequest{
		{Username: "alice", Password: "wrong password here"},
		{Username: "nobody", Password: goodPassword},
		{Username: "dora", Password: goodPassword},
		{Username: "dora", Password: "wrong password here"},
		{Username: "alice", Password: strings.Repeat("x", password.MaxLen+1)},
	} {
		req.Remote = remote
		res, err := f.svc.Login(t.Context(), req)
		if res != nil {
			t.Fatalf("Login(%s, %q) gave a session", req.Username, req.Password)
		}
		wantCode(t, err, errcode.Unauthorized)
		msgs = append(msgs, errcode.Message(err))
	}
	for _, m := range msgs[1:] {
		if m != msgs[0] {
			t.Fatalf("login errors differ: %q", msgs)
		}
	}
}

func TestLogin_LockoutAfterFailuresUntilItExpires(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.setPolicy(t, auth.Policy{LockoutFailures: 3, LockoutMinutes: 10})
	f.addUser(t, "alice", nil)
	f.addUser(t, "bob", nil)
	bad := auth.LoginRequest{Username: "alice", Password: "wrong password here", Remote: remote}
	for i := 1; i < 3; i++ {
		_, err := f.svc.Login(t.Context(), bad)
		wantCode(t, err, errcode.Unauthorized)
	}
	_, err := f.svc.Login(t.Context(), bad) // the third failure locks
	wantCode(t, err, errcode.TooManyRequests)
	if u := f.user(t, "id-alice"); !u.LockedUntil.Equal(T0.Add(10 * time.Minute)) {
		t.Fatalf("LockedUntil = %v, want %v", u.LockedUntil, T0.Add(10*time.Minute))
	}

	f.advance(10*time.Minute - time.Millisecond)
	_, err = f.svc.Login(t.Context(), auth.LoginRequest{Username: "alice", Password: goodPassword, Remote: remote})
	wantCode(t, err, errcode.TooManyRequests) // even the right password
	f.login(t, "bob")                         // other users are not locked

	f.advance(time.Millisecond)
	f.login(t, "alice")
	if u := f.user(t, "id-alice"); !u.LockedUntil.IsZero() || u.FailedLogins != 0 {
		t.Fatalf("after the lock expired and a login: locked until %v, failures %d", u.LockedUntil, u.FailedLogins)
	}
}

// Guessing from elsewhere locks the account, but not its owner out of the
// address of their last full login.
func TestLogin_ALockedAccountStillOpensFromItsLastLoginAddress(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.setPolicy(t, auth.Policy{LockoutFailures: 3, LockoutMinutes: 10})
	f.addUser(t, "alice", nil)
	f.login(t, "alice") // from remote, her usual address
	if u := f.user(t, "id-alice"); u.LastLoginAddr != remote {
		t.Fatalf("last login address %q, want %q", u.LastLoginAddr, remote)
	}
	const guesser, stranger = "203.0.113.5", "198.51.100.20"
	for i := 1; i <= 3; i++ {
		_, err := f.svc.Login(t.Context(), auth.LoginRequest{Username: "alice", Password: fmt.Sprintf("guess number %d", i), Remote: guesser})
		if i < 3 {
			wantCode(t, err, errcode.Unauthorized)
		} else {
			wantCode(t, err, errcode.TooManyRequests)
		}
	}
	for _, addr := range []string{guesser, stranger, ""} { // the lock holds everywhere else, even with the right password
		_, err := f.svc.Login(t.Context(), auth.LoginRequest{Username: "alice", Password: goodPassword, Remote: addr})
		wantCode(t, err, errcode.TooManyRequests)
	}
	// From her address a wrong password is still a failure, not a way in.
	_, err := f.svc.Login(t.Context(), auth.LoginRequest{Username: "alice", Password: "not her password", Remote: remote})
	if c := errcode.Of(err); c != errcode.Unauthorized && c != errcode.TooManyRequests {
		t.Fatalf("wrong password from the last login address while locked: %v", err)
	}
	f.login(t, "alice") // the right one opens
	if u := f.user(t, "id-alice"); !u.LockedUntil.IsZero() || u.FailedLogins != 0 || u.AddrFailedLogins != 0 {
		t.Fatalf("after her login: locked until %v, failures %d and %d", u.LockedUntil, u.FailedLogins, u.AddrFailedLogins)
	}
	// Guesses from her address (a shared NAT) lock it as fast as anywhere:
	// the exception is for the owner, not for unlimited guessing.
	for i := 1; i <= 3; i++ {
		_, err := f.svc.Login(t.Context(), auth.LoginRequest{Username: "alice", Password: fmt.Sprintf("neighbour guess %d", i), Remote: remote})
		if i < 3 {
			wantCode(t, err, errcode.Unauthorized)
		} else {
			wantCode(t, err, errcode.TooManyRequests)
		}
	}
	_, err = f.svc.Login(t.Context(), auth.LoginRequest{Username: "alice", Password: goodPassword, Remote: remote})
	wantCode(t, err, errcode.TooManyRequests)
	if _, err := f.svc.Login(t.Context(), auth.LoginRequest{Username: "alice", Password: goodPassword, Remote: stranger}); err != nil {
		t.Fatalf("her address's lock locked everywhere: %v", err)
	}
}

func TestLogin_AddressSprayingIsThrottledAloneUntilTheWindowEnds(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addUser(t, "alice", nil)
	const sprayer = "198.51.100.7"
	for i := range auth.IPMaxFailures {
		_, err := f.svc.Login(t.Context(), auth.LoginRequest{Username: "user" + string(rune('a'+i%26)) + "x", Password: "guess", Remote: sprayer})
		if errcode.Of(err) != errcode.Unauthorized {
			t.Fatalf("failure %d: %v, want unauthorized (not throttled yet)", i+1, err)
		}
	}
	good := auth.LoginRequest{Username: "alice", Password: goodPassword, Remote: sprayer}
	_, err := f.svc.Login(t.Context(), good)
	wantCode(t, err, errcode.TooManyRequests)

	// Another address is not throttled, and the spray locked no account.
	f.login(t, "alice")
	if u := f.user(t, "id-alice"); u.FailedLogins != 0 || !u.LockedUntil.IsZero() {
		t.Fatalf("alice after the spray: failures %d, locked until %v", u.FailedLogins, u.LockedUntil)
	}

	f.advance(auth.IPWindow - time.Millisecond)
	_, err = f.svc.Login(t.Context(), good)
	wantCode(t, err, errcode.TooManyRequests)
	f.advance(time.Millisecond)
	if _, err := f.svc.Login(t.Context(), good); err != nil {
		t.Fatalf("after IPWindow the address is still throttled: %v", err)
	}
}

func TestLogin_Restrictions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		policy auth.Policy
		edit   func(*store.User)
		wait   time.Duration // between the user's creation and the login
		want   string
	}{
		{"none", auth.Policy{}, nil, 0, ""},
		{"must change the password", auth.Policy{}, func(u *store.User) { u.MustChangePassword = true }, 0, auth.RestrictPasswordChange},
		{"password exactly at its maximum age", auth.Policy{PasswordMaxAgeDays: 30}, nil, 30 * 24 * time.Hour, ""},
		{"password past its maximum age", auth.Policy{PasswordMaxAgeDays: 30}, nil, 30*24*time.Hour + time.Millisecond, auth.RestrictPasswordChange},
		{"old password without a maximum age", auth.Policy{}, nil, 3650 * 24 * time.Hour, ""},
		{"user must use TOTP", auth.Policy{}, func(u *store.User) { u.TOTPRequired = true }, 0, auth.RestrictTOTPEnrollment},
		{"policy requires TOTP", auth.Policy{RequireTOTP: true}, nil, 0, auth.RestrictTOTPEnrollment},
		{"password change comes first", auth.Policy{RequireTOTP: true}, func(u *store.User) { u.MustChangePassword = true }, 0, auth.RestrictPasswordChange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			f.setPolicy(t, tc.policy)
			f.addUser(t, "alice", tc.edit)
			f.advance(tc.wait)
			res := f.login(t, "alice")
			if res.Restriction != tc.want {
				t.Fatalf("Login restriction = %q, want %q", res.Restriction, tc.want)
			}
			if p := f.authenticate(t, res.Token); p.Restriction != tc.want {
				t.Fatalf("Authenticate restriction = %q, want %q", p.Restriction, tc.want)
			}
		})
	}
}

// ---- sessions ----------------------------------------------------------------

func TestAuthenticate_RefusesMalformedAndUnknownTokens(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, tok := range []string{"", strings.Repeat("a", 129), "unknown-token"} {
		_, err := f.svc.Authenticate(t.Context(), tok)
		wantCode(t, err, errcode.Unauthorized)
	}
}

func TestAuthenticate_IdleExpirySlidesAtMostOnceAMinute(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addUser(t, "alice", nil)
	res := f.login(t, "alice") // idle timeout 30 minutes
	first := T0.Add(30 * time.Minute)

	for _, d := range []time.Duration{30 * time.Second, 60 * time.Second} {
		f.now = T0.Add(d)
		f.authenticate(t, res.Token)
		if s := f.session(t, res.Token); !s.ExpiresAt.Equal(first) || !s.LastUsedAt.Equal(T0) {
			t.Fatalf("use at +%v wrote the session (expires %v, last used %v); at most one write a minute", d, s.ExpiresAt, s.LastUsedAt)
		}
	}
	used := T0.Add(61 * time.Second)
	f.now = used
	f.authenticate(t, res.Token)
	if s := f.session(t, res.Token); !s.ExpiresAt.Equal(used.Add(30*time.Minute)) || !s.LastUsedAt.Equal(used) {
		t.Fatalf("use at +61s: expires %v, last used %v; want %v, %v", s.ExpiresAt, s.LastUsedAt, used.Add(30*time.Minute), used)
	}

	f.now = first.Add(time.Second) // past the first expiry, within the slid one
	f.authenticate(t, res.Token)
	f.now = f.now.Add(30 * time.Minute) // idle for the whole timeout
	_, err := f.svc.Authenticate(t.Context(), res.Token)
	wantCode(t, err, errcode.Unauthorized)
}

func TestAuthenticate_SessionEndsAtItsMaximumAge(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// The idle timeout is longer than the maximum age: only the maximum
	// age can end these sessions within a day.
	f.setPolicy(t, auth.Policy{SessionMaxHours: 1, SessionIdleMinutes: 24 * 60})
	f.addUser(t, "alice", nil)
	idle := f.login(t, "alice")
	used := f.login(t, "alice")
	if s := f.session(t, idle.Token); !s.ExpiresAt.Equal(T0.Add(24 * time.Hour)) {
		t.Fatalf("stored expiry %v, want the idle timeout %v", s.ExpiresAt, T0.Add(24*time.Hour))
	}

	f.now = T0.Add(20 * time.Minute)
	f.authenticate(t, used.Token)
	if s := f.session(t, used.Token); !s.ExpiresAt.Equal(T0.Add(time.Hour)) {
		t.Fatalf("slid expiry = %v, want capped at the maximum age %v", s.ExpiresAt, T0.Add(time.Hour))
	}
	f.now = T0.Add(time.Hour - time.Millisecond)
	f.authenticate(t, used.Token)

	f.now = T0.Add(time.Hour)
	for _, tok := range []string{used.Token, idle.Token} {
		_, err := f.svc.Authenticate(t.Context(), tok)
		wantCode(t, err, errcode.Unauthorized)
	}
	// idle was never slid, so its stored expiry is a day away: only the
	// maximum age refused it, and that also removed it.
	if _, _, err := f.db.SessionByTokenHash(t.Context(), auth.HashToken(idle.Token), T0); errcode.Of(err) != errcode.NotFound {
		t.Fatalf("session past its maximum age still stored: %v", err)
	}
}

func TestAuthenticate_DisabledUserIsRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addUser(t, "alice", nil)
	res := f.login(t, "alice")
	f.update(t, "id-alice", func(u *store.User) { u.Disabled = true })
	_, err := f.svc.Authenticate(t.Context(), res.Token)
	wantCode(t, err, errcode.Unauthorized)
}

// ---- API tokens --------------------------------------------------------------

func TestCreateAPIToken_OnlyFromSessionsWithinTTLBounds(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addUser(t, "alice", nil)
	p := f.authenticate(t, f.login(t, "alice").Token)
	ctx := t.Context()

	nt, err := f.svc.CreateAPIToken(ctx, p, "ci", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(nt.Secret, "mmt_") || nt.Token.UserID != "id-alice" || nt.Token.Name != "ci" ||
		!nt.Token.CreatedAt.Equal(T0) || !nt.Token.ExpiresAt.Equal(T0.Add(auth.DefaultTokenTTL)) || nt.Token.TokenHash != auth.HashToken(nt.Secret) {
		t.Fatalf("created token = %+v, secret %q", nt.Token, nt.Secret)
	}
	stored, err := f.db.APITokenByHash(ctx, auth.HashToken(nt.Secret))
	if err != nil || stored.ID != nt.Token.ID {
		t.Fatalf("stored token = %+v, %v", stored, err)
	}

	for _, tc := range []struct {
		ttl time.Duration
		ok  bool
	}{
		{time.Minute, true},
		{auth.MaxTokenTTL, true},
		{time.Minute - time.Millisecond, false},
		{auth.MaxTokenTTL + time.Millisecond, false},
		{-time.Hour, false},
	} {
		nt, err := f.svc.CreateAPIToken(ctx, p, "ttl", tc.ttl)
		if tc.ok && (err != nil || !nt.Token.ExpiresAt.Equal(T0.Add(tc.ttl))) {
			t.Errorf("ttl %v: %v", tc.ttl, err)
		}
		if !tc.ok && errcode.Of(err) != errcode.Invalid {
			t.Errorf("ttl %v: %v, want invalid", tc.ttl, err)
		}
	}
	for _, name := range []string{"", strings.Repeat("n", 129)} {
		_, err := f.svc.CreateAPIToken(ctx, p, name, 0)
		wantCode(t, err, errcode.Invalid)
	}

	bearer, err := f.svc.AuthenticateBearer(ctx, nt.Secret)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.svc.CreateAPIToken(ctx, bearer, "from a token", 0)
	wantCode(t, err, errcode.Forbidden)
	wantCode(t, f.svc.Logout(ctx, bearer), errcode.Invalid)
}

func TestAuthenticateBearer_CarriesExactlyTheOwnersPermissions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	g, err := f.db.CreateGroup(ctx, store.GroupAll, "Servers")
	if err != nil {
		t.Fatal(err)
	}
	ops := &store.PermissionSet{ID: "ops", Name: "Ops", GroupID: store.GroupAll, Groups: []string{g.ID}, Grants: map[string]int{"computers": 3}}
	if err := f.db.CreatePermissionSet(ctx, ops); err != nil {
		t.Fatal(err)
	}
	f.addUser(t, "alice", func(u *store.User) { u.PermissionSetIDs = []string{store.PermSetReviewer, "ops"} })
	p := f.authenticate(t, f.login(t, "alice").Token)
	nt, err := f.svc.CreateAPIToken(ctx, p, "ci", time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	b, err := f.svc.AuthenticateBearer(ctx, nt.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if b.UserID != "id-alice" || b.Username != "alice" || b.Via != auth.ViaAPIToken || b.TokenID != nt.Token.ID || b.SessionHash != "" {
		t.Fatalf("bearer principal = %+v", b)
	}
	sets, err := f.db.UserPermissionSets(ctx, "id-alice")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.Permissions.Summary(), authz.FromSets(sets).Summary(); !equalGrants(got, want) {
		t.Fatalf("token permissions %v, want the owner's %v", got, want)
	}
	tree, err := f.db.Groups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Permissions.Allows(authz.Computers, authz.Write, g.ID, tree) || b.Permissions.Allows(authz.Computers, authz.Write, store.GroupLostFound, tree) ||
		!b.Permissions.Allows(authz.Computers, authz.Read, store.GroupLostFound, tree) || b.Permissions.Any(authz.Users, authz.Write) {
		t.Fatal("token permissions are not write on Servers and read elsewhere")
	}

	// The owner's sets change: the token follows them.
	f.update(t, "id-alice", func(u *store.User) { u.PermissionSetIDs = nil })
	b, err = f.svc.AuthenticateBearer(ctx, nt.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if s := b.Permissions.Summary(); len(s) != 0 {
		t.Fatalf("token of a user without sets grants %v", s)
	}
}

func equalGrants(a, b []authz.Grant) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Functionality != b[i].Functionality || a[i].Level != b[i].Level || strings.Join(a[i].Groups, ",") != strings.Join(b[i].Groups, ",") {
			return false
		}
	}
	return true
}

func TestAuthenticateBearer_Refusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.addUser(t, "alice", nil)
	p := f.authenticate(t, f.login(t, "alice").Token)
	mint := func(ttl time.Duration) *auth.NewAPIToken {
		t.Helper()
		nt, err := f.svc.CreateAPIToken(ctx, p, "t", ttl)
		if err != nil {
			t.Fatal(err)
		}
		return nt
	}
	good := mint(time.Hour)
	for name, secret := range map[string]string{
		"no prefix":    strings.TrimPrefix(good.Secret, "mmt_"),
		"other prefix": "xyz_" + strings.TrimPrefix(good.Secret, "mmt_"),
		"unknown":      "mmt_unknown",
		"too long":     good.Secret + strings.Repeat("a", 129),
		"empty":        "",
	} {
		if _, err := f.svc.AuthenticateBearer(ctx, secret); errcode.Of(err) != errcode.Unauthorized {
			t.Errorf("%s: %v, want unauthorized", name, err)
		}
	}

	revoked := mint(time.Hour)
	if err := f.db.RevokeAPIToken(ctx, "id-alice", revoked.Token.ID, T0); err != nil {
		t.Fatal(err)
	}
	_, err := f.svc.AuthenticateBearer(ctx, revoked.Secret)
	wantCode(t, err, errcode.Unauthorized)

	short := mint(time.Minute)
	f.advance(time.Minute - time.Millisecond)
	if _, err := f.svc.AuthenticateBearer(ctx, short.Secret); err != nil {
		t.Fatalf("token 1ms before expiry: %v", err)
	}
	f.advance(time.Millisecond)
	_, err = f.svc.AuthenticateBearer(ctx, short.Secret)
	wantCode(t, err, errcode.Unauthorized)

	if _, err := f.svc.AuthenticateBearer(ctx, good.Secret); err != nil {
		t.Fatalf("good token: %v", err)
	}
	f.update(t, "id-alice", func(u *store.User) { u.Disabled = true })
	_, err = f.svc.AuthenticateBearer(ctx, good.Secret)
	wantCode(t, err, errcode.Unauthorized)
}

func TestAuthenticateBearer_TouchesTheTokenAtMostOnceAMinute(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.addUser(t, "alice", nil)
	nt, err := f.svc.CreateAPIToken(ctx, f.authenticate(t, f.login(t, "alice").Token), "ci", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lastUsed := func() time.Time {
		t.Helper()
		tok, err := f.db.APITokenByHash(ctx, nt.Token.TokenHash)
		if err != nil {
			t.Fatal(err)
		}
		return tok.LastUsedAt
	}
	f.advance(time.Second)
	if _, err := f.svc.AuthenticateBearer(ctx, nt.Secret); err != nil {
		t.Fatal(err)
	}
	if got := lastUsed(); !got.Equal(T0.Add(time.Second)) {
		t.Fatalf("first use: LastUsedAt = %v", got)
	}
	f.advance(time.Minute)
	f.svc.AuthenticateBearer(ctx, nt.Secret)
	if got := lastUsed(); !got.Equal(T0.Add(time.Second)) {
		t.Fatalf("use a minute later wrote LastUsedAt = %v", got)
	}
	f.advance(time.Millisecond)
	f.svc.AuthenticateBearer(ctx, nt.Secret)
	if got := lastUsed(); !got.Equal(f.now) {
		t.Fatalf("use over a minute later: LastUsedAt = %v, want %v", got, f.now)
	}
}

// ---- passwords ---------------------------------------------------------------

func TestChangePassword_ChecksTheCurrentOneAndEndsEverySession(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.addUser(t, "alice", func(u *store.User) { u.MustChangePassword = true })
	res := f.login(t, "alice")
	other := f.login(t, "alice")
	p := f.authenticate(t, res.Token)
	if p.Restriction != auth.RestrictPasswordChange {
		t.Fatalf("restriction %q", p.Restriction)
	}

	wantCode(t, f.svc.ChangePassword(ctx, p, "wrong password here", "a brand new secret"), errcode.Forbidden)
	wantCode(t, f.svc.ChangePassword(ctx, p, goodPassword, goodPassword), errcode.Invalid)
	wantCode(t, f.svc.ChangePassword(ctx, p, goodPassword, "short"), errcode.Invalid)
	wantCode(t, f.svc.ChangePassword(ctx, p, goodPassword, "alice's new password"), errcode.Invalid)
	f.authenticate(t, other.Token) // refusals end nothing
	if u := f.user(t, "id-alice"); u.Version != 1 {
		t.Fatalf("refused changes wrote the user (version %d)", u.Version)
	}

	f.advance(time.Minute)
	if err := f.svc.ChangePassword(ctx, p, goodPassword, "a brand new secret"); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{res.Token, other.Token} {
		_, err := f.svc.Authenticate(ctx, tok)
		wantCode(t, err, errcode.Unauthorized)
	}
	u := f.user(t, "id-alice")
	if u.MustChangePassword || !u.PasswordChangedAt.Equal(T0.Add(time.Minute)) {
		t.Fatalf("after the change: must change %v, changed at %v", u.MustChangePassword, u.PasswordChangedAt)
	}
	_, err := f.svc.Login(ctx, auth.LoginRequest{Username: "alice", Password: goodPassword, Remote: remote})
	wantCode(t, err, errcode.Unauthorized)
	res, err = f.svc.Login(ctx, auth.LoginRequest{Username: "alice", Password: "a brand new secret", Remote: remote})
	if err != nil || res.Restriction != "" {
		t.Fatalf("login with the new password: %+v, %v", res, err)
	}
}

func TestSetPassword_AppliesThePolicyAndCanForceAChange(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.setPolicy(t, auth.Policy{MinPasswordLength: 16})
	f.addUser(t, "alice", nil)
	res := f.login(t, "alice")

	u := f.user(t, "id-alice")
	for _, pw := range []string{"fifteen chars!!", "alice1234567890123", "passwordpassword"} {
		wantCode(t, f.svc.SetPassword(ctx, u, pw, true), errcode.Invalid)
	}
	f.authenticate(t, res.Token)

	if err := f.svc.SetPassword(ctx, u, "sixteen chars ok", true); err != nil {
		t.Fatal(err)
	}
	_, err := f.svc.Authenticate(ctx, res.Token)
	wantCode(t, err, errcode.Unauthorized)
	if got := f.user(t, "id-alice"); !got.MustChangePassword || got.Version != u.Version {
		t.Fatalf("after the reset: must change %v, version %d (caller has %d)", got.MustChangePassword, got.Version, u.Version)
	}
	res, err = f.svc.Login(ctx, auth.LoginRequest{Username: "alice", Password: "sixteen chars ok", Remote: remote})
	if err != nil || res.Restriction != auth.RestrictPasswordChange {
		t.Fatalf("login after the reset: %+v, %v", res, err)
	}

	stale := *u
	stale.Version--
	wantCode(t, f.svc.SetPassword(ctx, &stale, "another sixteen!", false), errcode.Conflict)
}
