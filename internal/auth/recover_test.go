package auth_test

import (
	"testing"

	"github.com/mamori/mamori/internal/auth"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

// Recover makes a locked, disabled account with a second factor usable
// again: a new password to change at once and, when asked, no second
// factor and no recovery codes; without removeTOTP the second factor stays.
func TestRecover_MakesTheAccountUsableAgain(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	u := f.addUser(t, "root", nil)
	u = f.update(t, u.ID, func(u *store.User) { u.Disabled, u.TOTPEnabled, u.TOTPSecret = true, true, "sealed" })
	if err := f.db.SetRecoveryCodes(ctx, u.ID, []string{"h1", "h2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.RecordLoginFailure(ctx, u.ID, false, 1, f.now.Add(1e12)); err != nil {
		t.Fatal(err)
	}
	pw, _, err := f.svc.Recover(ctx, f.db, "root", false)
	if err != nil {
		t.Fatal(err)
	}
	got := f.user(t, u.ID)
	if len(pw) < 20 || got.Disabled || !got.MustChangePassword || !got.LockedUntil.IsZero() || !got.TOTPEnabled {
		t.Fatalf("after Recover without removing the second factor: %+v (password %d chars)", got, len(pw))
	}
	if _, err := f.svc.Login(ctx, auth.LoginRequest{Username: "root", Password: pw}); err != nil {
		t.Fatalf("login with the recovered password: %v", err)
	}
	pw2, _, err := f.svc.Recover(ctx, f.db, "root", true)
	if err != nil {
		t.Fatal(err)
	}
	got = f.user(t, u.ID)
	if pw2 == pw || got.TOTPEnabled || got.TOTPSecret != "" {
		t.Fatalf("after Recover removing the second factor: %+v", got)
	}
	if n, err := f.db.RecoveryCodesLeft(ctx, u.ID); err != nil || n != 0 {
		t.Fatalf("%d recovery codes left (%v)", n, err)
	}
	if _, _, err := f.svc.Recover(ctx, f.db, "nobody", false); errcode.Of(err) != errcode.NotFound {
		t.Fatalf("an unknown user: %v", err)
	}
}
