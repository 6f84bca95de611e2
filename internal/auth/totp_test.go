package auth_test

import (
	"bytes"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

// fixedSecret makes the codes of a test reproducible.
const fixedSecret = "JBSWY3DPEHPK3PXP"

const step = 30 * time.Second

var recoveryFormat = regexp.MustCompile(`^[a-km-np-z2-9]{5}-[a-km-np-z2-9]{5}-[a-km-np-z2-9]{6}$`)

// code is what an authenticator app shows at at.
func code(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wrongCode is a code valid at none of the steps around at.
func wrongCode(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	valid := []string{code(t, secret, at.Add(-step)), code(t, secret, at), code(t, secret, at.Add(step))}
	for _, c := range []string{"000000", "111111", "222222", "333333"} {
		if !slices.Contains(valid, c) {
			return c
		}
	}
	t.Fatal("no wrong code")
	return ""
}

// withTOTP turns on a second factor with fixedSecret for the user.
func (f *fixture) withTOTP(t *testing.T, id string) {
	t.Helper()
	f.update(t, id, func(u *store.User) { u.TOTPSecret, u.TOTPEnabled = f.sealer.Seal(fixedSecret), true })
}

// newTOTPLockoutFixture has alice with a second factor and a lockout after
// 3 failures.
func newTOTPLockoutFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t)
	f.setPolicy(t, auth.Policy{LockoutFailures: 3})
	f.addUser(t, "alice", nil)
	f.withTOTP(t, "id-alice")
	return f
}

func (f *fixture) loginWith(t *testing.T, req auth.LoginRequest) (*auth.LoginResult, error) {
	t.Helper()
	req.Username, req.Password, req.Remote = "alice", goodPassword, remote
	return f.svc.Login(t.Context(), req)
}

func TestEnrollConfirmTOTP_TurnsTheSecondFactorOnWithRecoveryCodes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.addUser(t, "alice", nil)
	p := f.authenticate(t, f.login(t, "alice").Token)

	_, err := f.svc.ConfirmTOTP(ctx, p, "123456")
	wantCode(t, err, errcode.Conflict) // nothing to confirm yet

	e, err := f.svc.EnrollTOTP(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	key, err := otp.NewKeyFromURL(e.OTPAuthURI)
	if err != nil {
		t.Fatal(err)
	}
	if key.Issuer() != "Mamori" || key.AccountName() != "alice" || key.Secret() != e.Secret || key.Period() != 30 || key.Digits() != otp.DigitsSix {
		t.Fatalf("otpauth URI %q", e.OTPAuthURI)
	}
	if !bytes.HasPrefix(e.QRPNG, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatal("QRPNG is not a PNG")
	}
	u := f.user(t, "id-alice")
	if u.TOTPEnabled || u.TOTPPending == "" || u.TOTPPending == e.Secret || u.TOTPSecret != "" {
		t.Fatalf("pending enrollment stored as enabled %v, pending %q, secret %q", u.TOTPEnabled, u.TOTPPending, u.TOTPSecret)
	}
	if plain, err := f.sealer.Open(u.TOTPPending); err != nil || plain != e.Secret {
		t.Fatalf("pending secret opens as %q, %v", plain, err)
	}

	_, err = f.svc.ConfirmTOTP(ctx, p, wrongCode(t, e.Secret, f.now))
	wantCode(t, err, errcode.Invalid)
	if u := f.user(t, "id-alice"); u.TOTPEnabled {
		t.Fatal("a wrong code turned TOTP on")
	}

	codes, err := f.svc.ConfirmTOTP(ctx, p, code(t, e.Secret, f.now.Add(-step))) // the app's clock is a step behind
	if err != nil {
		t.Fatal(err)
	}
	if len(codes) != 10 || len(slices.Compact(slices.Sorted(slices.Values(codes)))) != 10 {
		t.Fatalf("recovery codes %q, want 10 distinct", codes)
	}
	for _, c := range codes {
		if !recoveryFormat.MatchString(c) {
			t.Fatalf("recovery code %q is not xxxxx-xxxxx-xxxxxx from the look-alike-free alphabet", c)
		}
	}
	u = f.user(t, "id-alice")
	if !u.TOTPEnabled || u.TOTPPending != "" || u.TOTPLastStep != T0.Add(-step).Unix()/30 {
		t.Fatalf("after confirming: enabled %v, pending %q, last step %d", u.TOTPEnabled, u.TOTPPending, u.TOTPLastStep)
	}
	if plain, err := f.sealer.Open(u.TOTPSecret); err != nil || plain != e.Secret {
		t.Fatalf("secret opens as %q, %v", plain, err)
	}
	if n, err := f.db.RecoveryCodesLeft(ctx, "id-alice"); err != nil || n != 10 {
		t.Fatalf("RecoveryCodesLeft = %d, %v", n, err)
	}

	_, err = f.svc.EnrollTOTP(ctx, p)
	wantCode(t, err, errcode.Conflict)
	_, err = f.svc.ConfirmTOTP(ctx, p, code(t, e.Secret, f.now))
	wantCode(t, err, errcode.Conflict)

	// The code used to confirm cannot log in again.
	_, err = f.loginWith(t, auth.LoginRequest{TOTPCode: code(t, e.Secret, f.now.Add(-step))})
	wantCode(t, err, errcode.Unauthorized)
	res, err := f.loginWith(t, auth.LoginRequest{TOTPCode: code(t, e.Secret, f.now)})
	if err != nil || res.Restriction != "" {
		t.Fatalf("login with the app's next code: %+v, %v", res, err)
	}
}

func TestEnrollTOTP_UnavailableWithoutASealer(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addUser(t, "alice", nil)
	p := f.authenticate(t, f.login(t, "alice").Token)
	f.svc.Sealer = nil
	_, err := f.svc.EnrollTOTP(t.Context(), p)
	wantCode(t, err, errcode.Unavailable)
}

func TestLogin_TOTPAcceptsOneStepOfDriftAndNoReuse(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addUser(t, "alice", nil)
	f.withTOTP(t, "id-alice")
	for _, tc := range []struct {
		name string
		at   time.Duration // of the code, from now
		ok   bool
	}{
		{"two steps behind", -2 * step, false},
		{"two steps ahead", 2 * step, false},
		{"one step behind", -step, true},
		{"one step ahead", step, true},
		{"the same code again", step, false},
		{"an older step than the last used", 0, false},
	} {
		res, err := f.loginWith(t, auth.LoginRequest{TOTPCode: code(t, fixedSecret, f.now.Add(tc.at))})
		if tc.ok && (err != nil || res.Restriction != "" || !f.session(t, res.Token).SecondFactor) {
			t.Fatalf("%s: %+v, %v; want a full login", tc.name, res, err)
		}
		if !tc.ok && (res != nil || errcode.Of(err) != errcode.Unauthorized) {
			t.Fatalf("%s: %+v, %v; want unauthorized", tc.name, res, err)
		}
	}
	f.advance(2 * step)
	if _, err := f.loginWith(t, auth.LoginRequest{TOTPCode: code(t, fixedSecret, f.now)}); err != nil {
		t.Fatalf("a fresh step: %v", err)
	}
}

func TestCompleteSecondFactor_LiftsTheRestriction(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.addUser(t, "alice", nil)
	f.withTOTP(t, "id-alice")
	res := f.login(t, "alice")
	if res.Restriction != auth.RestrictSecondFactor || f.session(t, res.Token).SecondFactor {
		t.Fatalf("password-only login: restriction %q", res.Restriction)
	}
	if u := f.user(t, "id-alice"); !u.LastLoginAt.IsZero() {
		t.Fatalf("a login waiting for its second factor was recorded at %v", u.LastLoginAt)
	}
	p := f.authenticate(t, res.Token)
	if p.Restriction != auth.RestrictSecondFactor {
		t.Fatalf("Authenticate restriction %q", p.Restriction)
	}
	f.advance(time.Second)
	if err := f.svc.CompleteSecondFactor(ctx, p, code(t, fixedSecret, f.now), "", remote); err != nil {
		t.Fatal(err)
	}
	p = f.authenticate(t, res.Token)
	if p.Restriction != "" || !f.session(t, res.Token).SecondFactor {
		t.Fatalf("after the second factor: restriction %q", p.Restriction)
	}
	if u := f.user(t, "id-alice"); !u.LastLoginAt.Equal(f.now) {
		t.Fatalf("completed login recorded at %v, want %v", u.LastLoginAt, f.now)
	}
	wantCode(t, f.svc.CompleteSecondFactor(ctx, p, code(t, fixedSecret, f.now.Add(step)), "", remote), errcode.Conflict)
}

func TestCompleteSecondFactor_LockoutEndsTheSession(t *testing.T) {
	t.Parallel()
	f := newTOTPLockoutFixture(t)
	ctx := t.Context()
	res := f.login(t, "alice")
	p := f.authenticate(t, res.Token)
	bad := wrongCode(t, fixedSecret, f.now)
	for range 2 {
		wantCode(t, f.svc.CompleteSecondFactor(ctx, p, bad, "", remote), errcode.Unauthorized)
	}
	f.authenticate(t, res.Token) // still waiting
	wantCode(t, f.svc.CompleteSecondFactor(ctx, p, bad, "", remote), errcode.TooManyRequests)
	_, err := f.svc.Authenticate(ctx, res.Token)
	wantCode(t, err, errcode.Unauthorized)
	_, err = f.loginWith(t, auth.LoginRequest{TOTPCode: code(t, fixedSecret, f.now)})
	wantCode(t, err, errcode.TooManyRequests)
}

// A password alone is half a login: it must not clear the failures of the
// second factor, or whoever holds the password could guess codes forever by
// logging in again before the lockout.
func TestCompleteSecondFactor_PasswordAloneDoesNotClearFailures(t *testing.T) {
	t.Parallel()
	f := newTOTPLockoutFixture(t)
	ctx := t.Context()
	bad := wrongCode(t, fixedSecret, f.now)
	p := f.authenticate(t, f.login(t, "alice").Token)
	for range 2 {
		wantCode(t, f.svc.CompleteSecondFactor(ctx, p, bad, "", remote), errcode.Unauthorized)
	}
	p = f.authenticate(t, f.login(t, "alice").Token)
	wantCode(t, f.svc.CompleteSecondFactor(ctx, p, bad, "", remote), errcode.TooManyRequests)
}

// The second factor follows the same rule as the password: at the address
// of the last full login it counts and locks apart from elsewhere.
func TestCompleteSecondFactor_TheLastLoginAddressCountsApart(t *testing.T) {
	t.Parallel()
	f := newTOTPLockoutFixture(t)
	ctx := t.Context()
	p := f.authenticate(t, f.login(t, "alice").Token)
	if err := f.svc.CompleteSecondFactor(ctx, p, code(t, fixedSecret, f.now), "", remote); err != nil {
		t.Fatal(err)
	}
	if u := f.user(t, "id-alice"); u.LastLoginAddr != remote {
		t.Fatalf("the completed login recorded address %q, want %q", u.LastLoginAddr, remote)
	}
	const guesser = "203.0.113.5"
	for range 3 {
		f.svc.Login(ctx, auth.LoginRequest{Username: "alice", Password: "a wrong guess", Remote: guesser})
	}
	if u := f.user(t, "id-alice"); !f.now.Before(u.LockedUntil) {
		t.Fatalf("guesses from elsewhere did not lock: %v", u.LockedUntil)
	}
	// From her address she gets in, second factor included.
	f.advance(step)
	p = f.authenticate(t, f.login(t, "alice").Token)
	if err := f.svc.CompleteSecondFactor(ctx, p, code(t, fixedSecret, f.now), "", remote); err != nil {
		t.Fatalf("second factor from her address while locked elsewhere: %v", err)
	}
	// Codes guessed from her address lock her address.
	f.advance(step)
	p = f.authenticate(t, f.login(t, "alice").Token)
	bad := wrongCode(t, fixedSecret, f.now)
	for range 2 {
		wantCode(t, f.svc.CompleteSecondFactor(ctx, p, bad, "", remote), errcode.Unauthorized)
	}
	wantCode(t, f.svc.CompleteSecondFactor(ctx, p, bad, "", remote), errcode.TooManyRequests)
	_, err := f.loginWith(t, auth.LoginRequest{TOTPCode: code(t, fixedSecret, f.now.Add(step))})
	wantCode(t, err, errcode.TooManyRequests)
}

func TestRecoveryCodes_SingleUseAndReplaced(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.addUser(t, "alice", nil)
	f.withTOTP(t, "id-alice")
	codes, err := f.svc.NewRecoveryCodes(ctx, "id-alice")
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.loginWith(t, auth.LoginRequest{RecoveryCode: codes[0]})
	if err != nil || res.Restriction != "" {
		t.Fatalf("login with a recovery code: %+v, %v", res, err)
	}
	_, err = f.loginWith(t, auth.LoginRequest{RecoveryCode: codes[0]})
	wantCode(t, err, errcode.Unauthorized)

	p := f.authenticate(t, f.login(t, "alice").Token)
	wantCode(t, f.svc.CompleteSecondFactor(ctx, p, "", codes[0], remote), errcode.Unauthorized)
	if err := f.svc.CompleteSecondFactor(ctx, p, "", codes[1], remote); err != nil {
		t.Fatalf("second factor with an unused recovery code: %v", err)
	}
	if n, _ := f.db.RecoveryCodesLeft(ctx, "id-alice"); n != 8 {
		t.Fatalf("RecoveryCodesLeft = %d, want 8", n)
	}

	fresh, err := f.svc.NewRecoveryCodes(ctx, "id-alice")
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.loginWith(t, auth.LoginRequest{RecoveryCode: codes[2]})
	wantCode(t, err, errcode.Unauthorized) // replaced
	if _, err := f.loginWith(t, auth.LoginRequest{RecoveryCode: fresh[2]}); err != nil {
		t.Fatalf("a new recovery code: %v", err)
	}
}

func TestDisableTOTP_EndsSessionsAndRemovesTheFactor(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.addUser(t, "alice", nil)
	f.withTOTP(t, "id-alice")
	if _, err := f.svc.NewRecoveryCodes(ctx, "id-alice"); err != nil {
		t.Fatal(err)
	}
	res, err := f.loginWith(t, auth.LoginRequest{TOTPCode: code(t, fixedSecret, f.now)})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.svc.DisableTOTP(ctx, f.user(t, "id-alice")); err != nil {
		t.Fatal(err)
	}
	_, err = f.svc.Authenticate(ctx, res.Token)
	wantCode(t, err, errcode.Unauthorized)
	u := f.user(t, "id-alice")
	if u.TOTPEnabled || u.TOTPSecret != "" || u.TOTPPending != "" || u.TOTPLastStep != 0 {
		t.Fatalf("after DisableTOTP: %+v", u)
	}
	if n, _ := f.db.RecoveryCodesLeft(ctx, "id-alice"); n != 0 {
		t.Fatalf("%d recovery codes left", n)
	}
	res = f.login(t, "alice")
	if res.Restriction != "" {
		t.Fatalf("login without a second factor: restriction %q", res.Restriction)
	}
	if _, err := f.svc.EnrollTOTP(ctx, f.authenticate(t, res.Token)); err != nil {
		t.Fatalf("enrolling again: %v", err)
	}
}
