package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"image/png"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

// TOTP parameters (RFC 6238 defaults, what authenticator apps expect).
const (
	totpPeriod = 30
	totpDigits = otp.DigitsSix
	issuer     = "Mamori"
)

var totpOpts = totp.ValidateOpts{Period: totpPeriod, Digits: totpDigits, Algorithm: otp.AlgorithmSHA1}

// matchTOTP checks code against the steps around now (±1 for clock drift)
// and returns the matching step.
func matchTOTP(secret, code string, now time.Time) (int64, bool) {
	code = strings.TrimSpace(code)
	if len(code) != 6 {
		return 0, false
	}
	for _, d := range []int64{0, -1, 1} {
		step := now.Unix()/totpPeriod + d
		want, err := totp.GenerateCodeCustom(secret, time.Unix(step*totpPeriod, 0), totpOpts)
		if err == nil && subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			return step, true
		}
	}
	return 0, false
}

// TOTPEnrollment is what a user needs to add Mamori to an authenticator app.
type TOTPEnrollment struct {
	Secret     string // base32
	OTPAuthURI string // otpauth://totp/Mamori:alice?secret=...
	QRPNG      []byte // the URI as a QR code
}

// EnrollTOTP starts (or restarts) second-factor enrollment for p: a new
// secret is kept pending until ConfirmTOTP proves the app has it.
func (s *Service) EnrollTOTP(ctx context.Context, p *Principal) (*TOTPEnrollment, error) {
	if s.Sealer == nil {
		return nil, errcode.New(errcode.Unavailable, "second factors are not available on this server")
	}
	u, err := s.Store.UserByID(ctx, p.UserID)
	if err != nil {
		return nil, err
	}
	if u.TOTPEnabled {
		return nil, errcode.New(errcode.Conflict, "a second factor is already set up; an administrator must remove it first")
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: issuer, AccountName: u.Username, Period: totpPeriod, Digits: totpDigits, Rand: rand.Reader})
	if err != nil {
		return nil, err
	}
	u.TOTPPending = s.Sealer.Seal(key.Secret())
	if err := s.Store.UpdateUser(ctx, u); err != nil {
		return nil, err
	}
	img, err := key.Image(256, 256)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return &TOTPEnrollment{Secret: key.Secret(), OTPAuthURI: key.URL(), QRPNG: buf.Bytes()}, nil
}

// ConfirmTOTP finishes enrollment with a code from the app, turns the second
// factor on and returns fresh recovery codes (shown once).
func (s *Service) ConfirmTOTP(ctx context.Context, p *Principal, code string) ([]string, error) {
	u, err := s.Store.UserByID(ctx, p.UserID)
	if err != nil {
		return nil, err
	}
	if u.TOTPPending == "" {
		return nil, errcode.New(errcode.Conflict, "no second-factor enrollment is in progress; start one first")
	}
	secret, err := s.Sealer.Open(u.TOTPPending)
	if err != nil {
		return nil, err
	}
	step, ok := matchTOTP(secret, code, s.now())
	if !ok {
		return nil, errcode.New(errcode.Invalid, "the code does not match; check the app's clock and try the next code")
	}
	u.TOTPSecret, u.TOTPPending, u.TOTPEnabled, u.TOTPLastStep = u.TOTPPending, "", true, step
	if err := s.Store.UpdateUser(ctx, u); err != nil {
		return nil, err
	}
	return s.NewRecoveryCodes(ctx, u.ID)
}

// NewRecoveryCodes replaces a user's recovery codes and returns them.
func (s *Service) NewRecoveryCodes(ctx context.Context, userID string) ([]string, error) {
	codes := make([]string, recoveryCodes)
	hashes := make([]string, recoveryCodes)
	for i := range codes {
		b := make([]byte, 10)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		c := strings.ToLower(base32NoPad(b))
		codes[i] = c[:5] + "-" + c[5:10] + "-" + c[10:16]
		hashes[i] = hashRecovery(codes[i])
	}
	if err := s.Store.SetRecoveryCodes(ctx, userID, hashes); err != nil {
		return nil, err
	}
	return codes, nil
}

// DisableTOTP removes a user's second factor (an administrator's action, or
// a user who lost the device); all their sessions end.
func (s *Service) DisableTOTP(ctx context.Context, u *store.User) error {
	u.TOTPSecret, u.TOTPPending, u.TOTPEnabled, u.TOTPLastStep = "", "", false, 0
	if err := s.Store.UpdateUser(ctx, u); err != nil {
		return err
	}
	if err := s.Store.SetRecoveryCodes(ctx, u.ID, nil); err != nil {
		return err
	}
	return s.Store.DeleteUserSessions(ctx, u.ID)
}

func hashRecovery(code string) string {
	return HashToken("recovery:" + strings.ToLower(strings.ReplaceAll(strings.TrimSpace(code), "-", "")))
}

func base32NoPad(b []byte) string {
	const alphabet = "abcdefghijkmnpqrstuvwxyz23456789" // no look-alikes (l, o, 0, 1)
	var sb strings.Builder
	var acc, bits uint
	for _, x := range b {
		acc = acc<<8 | uint(x)
		bits += 8
		for bits >= 5 {
			bits -= 5
			sb.WriteByte(alphabet[(acc>>bits)&31])
		}
	}
	return sb.String()
}

// QRDataURI is the PNG as a data: URI for a browser.
func QRDataURI(png []byte) string {
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(png)
}
