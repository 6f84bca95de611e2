package auth_test

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

	"github.com/mamori/mamori/internal/auth"
)

func newSealer(t *testing.T, fill byte) *auth.Sealer {
	t.Helper()
	s, err := auth.NewSealer(bytes.Repeat([]byte{fill}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealer_RoundTripWithFreshNonces(t *testing.T) {
	t.Parallel()
	s := newSealer(t, 1)
	for _, plain := range []string{"JBSWY3DPEHPK3PXP", "", "ünïcødé secret"} {
		a, b := s.Seal(plain), s.Seal(plain)
		if a == b {
			t.Fatalf("sealing %q twice gave the same text: nonces are reused", plain)
		}
		for _, sealed := range []string{a, b} {
			if got, err := s.Open(sealed); err != nil || got != plain {
				t.Fatalf("Open(Seal(%q)) = %q, %v", plain, got, err)
			}
		}
	}
	if sealed := s.Seal("JBSWY3DPEHPK3PXP"); bytes.Contains([]byte(sealed), []byte("JBSWY3DPEHPK3PXP")) {
		t.Fatal("the sealed text contains the secret")
	}
}

func TestSealer_RefusesTamperingAndOtherKeys(t *testing.T) {
	t.Parallel()
	s := newSealer(t, 1)
	sealed := s.Seal("JBSWY3DPEHPK3PXP")
	raw, err := base64.RawStdEncoding.DecodeString(sealed)
	if err != nil {
		t.Fatal(err)
	}
	for i := range raw { // every byte is covered: nonce, ciphertext and tag
		b := bytes.Clone(raw)
		b[i] ^= 0x01
		if got, err := s.Open(base64.RawStdEncoding.EncodeToString(b)); err == nil {
			t.Fatalf("a flipped bit at byte %d opened as %q", i, got)
		}
	}
	for name, bad := range map[string]string{
		"empty":      "",
		"not base64": "!!!",
		"truncated":  base64.RawStdEncoding.EncodeToString(raw[:len(raw)-1]),
		"too short":  base64.RawStdEncoding.EncodeToString(raw[:4]),
	} {
		if got, err := s.Open(bad); err == nil {
			t.Errorf("%s: opened as %q", name, got)
		}
	}
	if got, err := newSealer(t, 2).Open(sealed); err == nil {
		t.Fatalf("another key opened the secret as %q", got)
	}
}

func TestLoadOrCreateSealer_CreatesPrivateKeyFileAndReloadsIt(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "secret.key")
	s1, err := auth.LoadOrCreateSealer(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 32 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %d bytes, mode %v; want 32 bytes, 0600", fi.Size(), fi.Mode().Perm())
	}
	key, _ := os.ReadFile(path)
	sealed := s1.Seal("secret")

	s2, err := auth.LoadOrCreateSealer(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.Open(sealed); err != nil || got != "secret" {
		t.Fatalf("reloaded sealer: Open = %q, %v", got, err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, key) {
		t.Fatal("reloading rewrote the key")
	}

	other, err := auth.LoadOrCreateSealer(filepath.Join(t.TempDir(), "secret.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open(sealed); err == nil {
		t.Fatal("a second created key opened the first one's secret: keys are not random")
	}
}

func TestLoadOrCreateSealer_RefusesAKeyOfTheWrongSize(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 16, 31, 33} {
		path := filepath.Join(t.TempDir(), "secret.key")
		if err := os.WriteFile(path, bytes.Repeat([]byte{1}, n), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := auth.LoadOrCreateSealer(path); err == nil {
			t.Errorf("a %d-byte key file was accepted", n)
		}
		if b, _ := os.ReadFile(path); len(b) != n {
			t.Errorf("the %d-byte key file was replaced", n)
		}
	}
}
