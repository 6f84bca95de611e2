// Package password hashes and verifies passwords with argon2id (RFC 9106),
// stored in the PHC string format:
//
//	$argon2id$v=19$m=47104,t=1,p=1$<salt b64>$<hash b64>
//
// The default parameters follow OWASP's first recommendation (46 MiB, one
// pass, one lane). Verification is limited to a few at a time so a burst of
// logins cannot exhaust memory.
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id cost parameters.
type Params struct {
	MemoryKiB uint32
	Time      uint32
	Threads   uint8
}

// Default is used for new hashes.
var Default = Params{MemoryKiB: 47104, Time: 1, Threads: 1}

const (
	saltLen = 16
	keyLen  = 32
	// MaxLen bounds the input so hashing cost cannot be driven by the
	// caller.
	MaxLen = 1024
)

// slots bounds concurrent hashing (each costs MemoryKiB of RAM).
var slots = make(chan struct{}, 4)

// ErrMismatch is returned by Verify for a wrong password.
var ErrMismatch = errors.New("password does not match")

// Hash returns the PHC string of pw with fresh salt.
func Hash(pw string) (string, error) { return hashWith(pw, Default) }

func hashWith(pw string, p Params) (string, error) {
	if len(pw) > MaxLen {
		return "", fmt.Errorf("password longer than %d bytes", MaxLen)
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	slots <- struct{}{}
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.MemoryKiB, p.Threads, keyLen)
	<-slots
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Verify checks pw against a PHC string. It returns ErrMismatch for a wrong
// password and another error for a malformed hash.
func Verify(pw, phc string) error {
	if len(pw) > MaxLen {
		return ErrMismatch
	}
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return errors.New("not an argon2id hash")
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return errors.New("unsupported argon2 version")
	}
	var p Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Time, &p.Threads); err != nil {
		return errors.New("malformed argon2 parameters")
	}
	if p.MemoryKiB == 0 || p.MemoryKiB > 1<<20 || p.Time == 0 || p.Time > 16 || p.Threads == 0 {
		return errors.New("argon2 parameters out of range")
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return errors.New("malformed salt")
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) < 16 {
		return errors.New("malformed hash")
	}
	slots <- struct{}{}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(want)))
	<-slots
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrMismatch
	}
	return nil
}

// Generate returns a random password of n characters from an alphabet
// without look-alikes, for bootstrap accounts.
func Generate(n int) string {
	const alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
