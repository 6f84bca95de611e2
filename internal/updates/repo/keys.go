package repo

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/mamori/mamori/internal/errcode"
)

// Key files are PEM "PRIVATE KEY" blocks (PKCS #8) holding an Ed25519 key,
// mode 0600 — the format openssl reads and writes
// (openssl genpkey -algorithm ed25519).

// GenerateKey makes an Ed25519 key and writes it to path (mode 0600); it
// refuses to overwrite an existing file.
func GenerateKey(path string) (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return priv, f.Close()
}

// LoadKey reads an Ed25519 private key file.
func LoadKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errcode.New(errcode.NotFound, "key file %s does not exist", path)
		}
		return nil, err
	}
	if len(b) > 64<<10 {
		return nil, errcode.New(errcode.Invalid, "key file %s is too large", path)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errcode.New(errcode.Invalid, "key file %s: want a PEM PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, errcode.New(errcode.Invalid, "key file %s: %v", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errcode.New(errcode.Invalid, "key file %s: want an Ed25519 key, got %T", path, k)
	}
	return priv, nil
}

// tufKey returns the TUF public key of priv.
func tufKey(priv ed25519.PrivateKey) (*metadata.Key, error) {
	return metadata.KeyFromPublicKey(priv.Public())
}

func keyID(priv ed25519.PrivateKey) (string, error) {
	k, err := tufKey(priv)
	if err != nil {
		return "", err
	}
	return k.ID()
}

func signer(priv ed25519.PrivateKey) (signature.Signer, error) {
	s, err := signature.LoadSigner(priv, crypto.Hash(0))
	if err != nil {
		return nil, fmt.Errorf("loading signer: %w", err)
	}
	return s, nil
}
