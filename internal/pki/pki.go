// Package pki is Mamori's internal certificate authority: it creates and
// loads the CA and the server certificate in the server's data directory,
// signs agents' certificate signing requests at enrollment, and gives agents
// the pinned-CA verification they use instead of host names.
//
// Keys are ECDSA P-256. Files in the data directory:
//
//	ca.crt, ca.key          the CA (20 years); ca.key is 0600
//	server.crt, server.key  the server certificate (2 years, renewed at start
//	                        when it has less than 30 days left or its names
//	                        changed); signed by the CA
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/atomicfile"
	"github.com/mamori/mamori/internal/errcode"
)

// Validity periods.
const (
	CAValidity     = 20 * 365 * 24 * time.Hour
	ServerValidity = 2 * 365 * 24 * time.Hour
	// AgentValidity is long because agents on shelves and in drawers come
	// back after months; compromise is handled by revocation.
	AgentValidity = 10 * 365 * 24 * time.Hour
	renewBefore   = 30 * 24 * time.Hour
)

// CA is the internal certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Fingerprint returns the CA's pin, "sha256:<hex of the DER certificate>".
func (ca *CA) Fingerprint() string { return Fingerprint(ca.Cert.Raw) }

// Fingerprint returns "sha256:<hex>" of a DER certificate.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ParseFingerprint validates and normalises a pin given by a user: the
// "sha256:" prefix is required, hex may be upper case and colon-separated.
func ParseFingerprint(s string) (string, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), "sha256:")
	if !ok {
		return "", errcode.New(errcode.Invalid, "CA fingerprint must start with \"sha256:\"")
	}
	rest = strings.ToLower(strings.ReplaceAll(rest, ":", ""))
	if b, err := hex.DecodeString(rest); err != nil || len(b) != sha256.Size {
		return "", errcode.New(errcode.Invalid, "CA fingerprint must be sha256: followed by 64 hex digits")
	}
	return "sha256:" + rest, nil
}

// LoadOrCreateCA loads the CA from dir or creates it on first start. created
// tells whether it was made now.
func LoadOrCreateCA(dir string) (ca *CA, created bool, err error) {
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	ca, err = LoadCA(dir)
	if err == nil {
		return ca, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	if _, statErr := os.Stat(keyPath); statErr == nil {
		return nil, false, fmt.Errorf("%s exists without %s: refusing to replace the CA key", keyPath, certPath)
	}
	if _, statErr := os.Stat(certPath); statErr == nil {
		// Replacing the CA would cut off every agent that pins it.
		return nil, false, fmt.Errorf("%s exists without %s: restore the CA key from backup; refusing to create a new CA", certPath, keyPath)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "Mamori internal CA", Organization: []string{"Mamori"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, false, err
	}
	if err := writeKeyPair(certPath, keyPath, der, key); err != nil {
		return nil, false, err
	}
	ca, err = LoadCA(dir)
	return ca, err == nil, err
}

// LoadCA loads an existing CA from dir. A missing CA is os.ErrNotExist.
func LoadCA(dir string) (*CA, error) {
	cert, key, err := readKeyPair(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", filepath.Join(dir, "ca.crt"))
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCACert reads only the CA certificate (no key): enough for the
// fingerprint.
func LoadCACert(dir string) (*x509.Certificate, error) {
	b, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	return parseCertPEM(b)
}

// ServerCertificate loads server.crt/server.key from dir, or issues a new one
// when missing, expiring within 30 days, or not covering all of hosts. The
// returned chain includes the CA certificate so agents can find their pin.
func (ca *CA) ServerCertificate(dir string, hosts []string) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	cert, key, err := readKeyPair(certPath, keyPath)
	if err == nil && time.Until(cert.NotAfter) > renewBefore && covers(cert, hosts) &&
		cert.CheckSignatureFrom(ca.Cert) == nil {
		return tls.Certificate{Certificate: [][]byte{cert.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: cert}, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return tls.Certificate{}, err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "Mamori server", Organization: []string{"Mamori"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ServerValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &k.PublicKey, ca.Key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := writeKeyPair(certPath, keyPath, der, k); err != nil {
		return tls.Certificate{}, err
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: k, Leaf: leaf}, nil
}

func covers(cert *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
				return false
			}
		} else if !slices.Contains(cert.DNSNames, h) {
			return false
		}
	}
	return true
}

// AgentCertificate is a signed agent certificate.
type AgentCertificate struct {
	DER      []byte
	Serial   string // lower-case hex
	NotAfter time.Time
}

// SignAgentCSR checks a certificate signing request from an enrolling agent
// and signs a client certificate for computerID. The CSR's own subject is
// ignored: the certificate names the computer id the server chose.
// Returns invalid for a malformed CSR, a bad self-signature or a weak key.
func (ca *CA) SignAgentCSR(csrDER []byte, computerID string) (*AgentCertificate, error) {
	if len(csrDER) == 0 || len(csrDER) > 16<<10 {
		return nil, errcode.New(errcode.Invalid, "certificate request missing or too large")
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, errcode.New(errcode.Invalid, "malformed certificate request")
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, errcode.New(errcode.Invalid, "certificate request signature does not verify")
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, errcode.New(errcode.Invalid, "certificate request uses an unsupported curve")
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, errcode.New(errcode.Invalid, "RSA keys must have at least 2048 bits")
		}
	default:
		return nil, errcode.New(errcode.Invalid, "certificate request uses an unsupported key type")
	}
	now := time.Now()
	serial := randomSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: computerID, Organization: []string{"Mamori agent"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(AgentValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	return &AgentCertificate{DER: der, Serial: SerialString(serial), NotAfter: tmpl.NotAfter}, nil
}

// SerialString formats a certificate serial the way the store keeps it.
func SerialString(n *big.Int) string { return hex.EncodeToString(n.Bytes()) }

// VerifyAgent checks a client certificate chain presented on the agent
// listener against the CA and returns the leaf. The TLS layer already did
// this when configured with ClientCAs; this is the backstop for handlers.
func (ca *CA) VerifyAgent(leaf *x509.Certificate) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

// VerifyPinnedServer returns a tls.Config VerifyPeerCertificate function for
// agents. The server's chain must contain (or, with root non-nil, be signed
// by) the CA whose fingerprint is pin, and the leaf must be a server
// certificate signed by it. Host names are not checked: the pin is the trust
// anchor, so servers can be reached under any address.
func VerifyPinnedServer(pin string, root *x509.Certificate) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("server sent no certificate")
		}
		ca := root
		if ca == nil {
			for _, der := range raw[1:] {
				if Fingerprint(der) == pin {
					ca, _ = x509.ParseCertificate(der)
					break
				}
			}
		}
		if ca == nil || Fingerprint(ca.Raw) != pin {
			return &PinMismatchError{Pin: pin}
		}
		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return fmt.Errorf("server certificate: %w", err)
		}
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		inter := x509.NewCertPool()
		for _, der := range raw[1:] {
			if c, err := x509.ParseCertificate(der); err == nil && !bytes.Equal(der, ca.Raw) {
				inter.AddCert(c)
			}
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return fmt.Errorf("server certificate is not signed by the pinned CA: %w", err)
		}
		return nil
	}
}

// PinMismatchError says the server's CA is not the one the agent pins.
type PinMismatchError struct{ Pin string }

func (e *PinMismatchError) Error() string {
	return "server's CA does not match the CA fingerprint " + e.Pin
}

// ComputerID returns the computer id an agent certificate names.
func ComputerID(cert *x509.Certificate) string { return cert.Subject.CommonName }

// NewKey generates an agent key pair (ECDSA P-256).
func NewKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// NewCSR makes a certificate signing request for key.
func NewCSR(key crypto.Signer, commonName string) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: commonName}}, key)
}

// EncodeKey and EncodeCert produce PEM.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func EncodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// ParseKeyPEM parses a PKCS#8 PEM private key.
func ParseKeyPEM(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("no PRIVATE KEY PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("private key cannot sign")
	}
	return s, nil
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no CERTIFICATE PEM block")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// ParseCertPEM parses one PEM certificate.
func ParseCertPEM(b []byte) (*x509.Certificate, error) { return parseCertPEM(b) }

func readKeyPair(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	cert, err := parseCertPEM(cb)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certPath, err)
	}
	key, err := ParseKeyPEM(kb)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	return cert, key, nil
}

// writeKeyPair writes the key, then the certificate, each atomically; the
// certificate's presence marks a complete pair.
func writeKeyPair(certPath, keyPath string, der []byte, key crypto.Signer) error {
	kb, err := EncodeKey(key)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(keyPath, kb, 0o600); err != nil {
		return err
	}
	return atomicfile.Write(certPath, EncodeCert(der), 0o644)
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return n.Add(n, big.NewInt(1))
}
