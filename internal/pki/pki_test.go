package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

func newCA(t *testing.T) (*CA, string) {
	t.Helper()
	dir := t.TempDir()
	ca, created, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatal("LoadOrCreateCA in an empty directory reported created=false")
	}
	return ca, dir
}

func serverCert(t *testing.T, ca *CA, dir string, hosts ...string) tls.Certificate {
	t.Helper()
	c, err := ca.ServerCertificate(dir, hosts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func agentCert(t *testing.T, ca *CA, id string) []byte {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key, "agent")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.SignAgentCSR(csr, id)
	if err != nil {
		t.Fatal(err)
	}
	return c.DER
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestLoadOrCreateCA_CreatesThenReloadsTheSameCA(t *testing.T) {
	ca, dir := newCA(t)
	if !ca.Cert.IsCA || !ca.Cert.BasicConstraintsValid || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatalf("not a CA certificate: IsCA %v, key usage %v", ca.Cert.IsCA, ca.Cert.KeyUsage)
	}
	if k, ok := ca.Key.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
		t.Fatalf("CA key is %T, want ECDSA P-256", ca.Key)
	}
	if d := time.Until(ca.Cert.NotAfter); d < CAValidity-2*time.Hour || d > CAValidity {
		t.Fatalf("CA valid for %v, want about %v", d, CAValidity)
	}
	if m := fileMode(t, filepath.Join(dir, "ca.key")); m != 0o600 {
		t.Fatalf("ca.key mode %o, want 600", m)
	}
	if m := fileMode(t, filepath.Join(dir, "ca.crt")); m&0o077 == 0 || m&0o022 != 0 {
		t.Fatalf("ca.crt mode %o, want world-readable and not group/world-writable", m)
	}

	again, created, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Fatal("second LoadOrCreateCA reported created=true")
	}
	if !bytes.Equal(again.Cert.Raw, ca.Cert.Raw) || again.Fingerprint() != ca.Fingerprint() {
		t.Fatal("reloaded CA certificate differs")
	}
	if !again.Key.(*ecdsa.PrivateKey).Equal(ca.Key) {
		t.Fatal("reloaded CA key differs")
	}
	cert, err := LoadCACert(dir)
	if err != nil || Fingerprint(cert.Raw) != ca.Fingerprint() {
		t.Fatalf("LoadCACert = %v, %v", cert, err)
	}
}

func TestLoadOrCreateCA_RefusesKeyWithoutCertificate(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "ca.key")
	orphan := []byte("an existing key that must not be replaced")
	if err := os.WriteFile(keyPath, orphan, 0o600); err != nil {
		t.Fatal(err)
	}
	ca, created, err := LoadOrCreateCA(dir)
	if err == nil || ca != nil || created {
		t.Fatalf("LoadOrCreateCA = %v, %v, %v; want a refusal", ca, created, err)
	}
	if !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("error %q does not say it refuses", err)
	}
	if b, _ := os.ReadFile(keyPath); !bytes.Equal(b, orphan) {
		t.Fatal("ca.key was overwritten")
	}
	if _, err := os.Stat(filepath.Join(dir, "ca.crt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ca.crt was written: %v", err)
	}
}

func TestLoadCA_MissingIsNotExist(t *testing.T) {
	if _, err := LoadCA(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadCA(empty dir) = %v, want os.ErrNotExist", err)
	}
}

func TestLoadCA_RefusesNonCACertificate(t *testing.T) {
	ca, dir := newCA(t)
	srv := serverCert(t, ca, dir, "a.example")
	other := t.TempDir()
	for name, b := range map[string][]byte{
		"ca.crt": EncodeCert(srv.Leaf.Raw),
		"ca.key": mustEncodeKey(t, srv.PrivateKey.(crypto.Signer)),
	} {
		if err := os.WriteFile(filepath.Join(other, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := LoadCA(other); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Fatalf("LoadCA with a server certificate as ca.crt = %v", err)
	}
}

func mustEncodeKey(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	b, err := EncodeKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServerCertificate_IssuedForHostsWithCAInChain(t *testing.T) {
	ca, dir := newCA(t)
	c := serverCert(t, ca, dir, "mamori.example", "192.0.2.10", "", "::1")
	if len(c.Certificate) != 2 || !bytes.Equal(c.Certificate[1], ca.Cert.Raw) {
		t.Fatalf("chain has %d certificates; want leaf then CA", len(c.Certificate))
	}
	if !bytes.Equal(c.Certificate[0], c.Leaf.Raw) {
		t.Fatal("Leaf is not Certificate[0]")
	}
	if !slices.Equal(c.Leaf.DNSNames, []string{"mamori.example"}) {
		t.Errorf("DNSNames = %q", c.Leaf.DNSNames)
	}
	if len(c.Leaf.IPAddresses) != 2 || !c.Leaf.IPAddresses[0].Equal(net.ParseIP("192.0.2.10")) || !c.Leaf.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("IPAddresses = %v", c.Leaf.IPAddresses)
	}
	if !slices.Equal(c.Leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("ExtKeyUsage = %v, want server auth only", c.Leaf.ExtKeyUsage)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "mamori.example"}); err != nil {
		t.Fatalf("server certificate does not verify against the CA: %v", err)
	}
	if m := fileMode(t, filepath.Join(dir, "server.key")); m != 0o600 {
		t.Fatalf("server.key mode %o, want 600", m)
	}
	if !c.PrivateKey.(*ecdsa.PrivateKey).PublicKey.Equal(c.Leaf.PublicKey) {
		t.Fatal("private key does not match the certificate")
	}
}

func TestServerCertificate_ReusedWhileValid(t *testing.T) {
	ca, dir := newCA(t)
	first := serverCert(t, ca, dir, "a.example", "192.0.2.1")
	for _, hosts := range [][]string{
		{"a.example", "192.0.2.1"},
		{"192.0.2.1", "a.example"},
		{"a.example"}, // a subset is still covered
		nil,
	} {
		again := serverCert(t, ca, dir, hosts...)
		if !bytes.Equal(again.Leaf.Raw, first.Leaf.Raw) {
			t.Fatalf("hosts %q: server certificate re-issued although still valid", hosts)
		}
		if len(again.Certificate) != 2 || !bytes.Equal(again.Certificate[1], ca.Cert.Raw) {
			t.Fatalf("hosts %q: reused chain lacks the CA", hosts)
		}
	}
	// Also after a restart, with the CA loaded from disk.
	reloaded, _, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again := serverCert(t, reloaded, dir, "a.example"); !bytes.Equal(again.Leaf.Raw, first.Leaf.Raw) {
		t.Fatal("server certificate re-issued after reloading the CA")
	}
}

func TestServerCertificate_ReissuedWhenNeeded(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, ca *CA, dir string) // after issuing for a.example
		hosts []string
	}{
		{"new DNS name", nil, []string{"a.example", "b.example"}},
		{"new IP", nil, []string{"a.example", "192.0.2.7"}},
		{"signed by another CA", func(t *testing.T, _ *CA, dir string) {
			other, otherDir := newCA(t)
			c := serverCert(t, other, otherDir, "a.example")
			writePair(t, dir, c.Leaf.Raw, c.PrivateKey.(crypto.Signer))
		}, []string{"a.example"}},
		{"expiring within 30 days", func(t *testing.T, ca *CA, dir string) {
			key, _ := NewKey()
			tmpl := &x509.Certificate{SerialNumber: randomSerial(), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 24 * time.Hour),
				DNSNames: []string{"a.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
			if err != nil {
				t.Fatal(err)
			}
			writePair(t, dir, der, key)
		}, []string{"a.example"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca, dir := newCA(t)
			serverCert(t, ca, dir, "a.example")
			if tc.setup != nil {
				tc.setup(t, ca, dir)
			}
			before, err := os.ReadFile(filepath.Join(dir, "server.crt"))
			if err != nil {
				t.Fatal(err)
			}
			c := serverCert(t, ca, dir, tc.hosts...)
			if bytes.Equal(EncodeCert(c.Leaf.Raw), before) {
				t.Fatal("server certificate was not re-issued")
			}
			if !covers(c.Leaf, tc.hosts) || c.Leaf.CheckSignatureFrom(ca.Cert) != nil || time.Until(c.Leaf.NotAfter) < ServerValidity-2*time.Hour {
				t.Fatalf("re-issued certificate: names %q %v, not after %v", c.Leaf.DNSNames, c.Leaf.IPAddresses, c.Leaf.NotAfter)
			}
			onDisk, err := os.ReadFile(filepath.Join(dir, "server.crt"))
			if err != nil || !bytes.Equal(onDisk, EncodeCert(c.Leaf.Raw)) {
				t.Fatal("re-issued certificate not written to server.crt")
			}
		})
	}
}

func writePair(t *testing.T, dir string, der []byte, key crypto.Signer) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "server.crt"), EncodeCert(der), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "server.key"), mustEncodeKey(t, key), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSignAgentCSR_IssuesClientCertificateForComputerID(t *testing.T) {
	ca, _ := newCA(t)
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key, "i-would-like-to-be-someone-else")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ca.SignAgentCSR(csr, "3f2a9c1e-computer")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(got.DER)
	if err != nil {
		t.Fatal(err)
	}
	if ComputerID(cert) != "3f2a9c1e-computer" || cert.Subject.CommonName != "3f2a9c1e-computer" {
		t.Fatalf("CN = %q, want the computer id (the CSR's subject is ignored)", cert.Subject.CommonName)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || len(cert.UnknownExtKeyUsage) != 0 {
		t.Fatalf("ExtKeyUsage = %v, want client auth only", cert.ExtKeyUsage)
	}
	if cert.IsCA {
		t.Fatal("agent certificate is a CA")
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Fatal("certificate is not for the CSR's key")
	}
	if got.Serial != SerialString(cert.SerialNumber) || got.Serial == "" || strings.ToLower(got.Serial) != got.Serial {
		t.Fatalf("Serial = %q, certificate serial %x", got.Serial, cert.SerialNumber)
	}
	if !got.NotAfter.Truncate(time.Second).Equal(cert.NotAfter) {
		t.Fatalf("NotAfter = %v, certificate %v", got.NotAfter, cert.NotAfter)
	}
	if d := time.Until(cert.NotAfter); d < AgentValidity-2*time.Hour || d > AgentValidity {
		t.Fatalf("agent certificate valid for %v, want about %v", d, AgentValidity)
	}
	if err := ca.VerifyAgent(cert); err != nil {
		t.Fatalf("VerifyAgent: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("agent certificate verifies as a server certificate")
	}
	other, _ := newCA(t)
	if err := other.VerifyAgent(cert); err == nil {
		t.Fatal("another CA accepted the agent certificate")
	}
	if again, err := ca.SignAgentCSR(csr, "3f2a9c1e-computer"); err != nil || again.Serial == got.Serial {
		t.Fatalf("second signing: serial %v (first %s), %v; serials must differ", again, got.Serial, err)
	}
}

func TestSignAgentCSR_AcceptedKeyTypes(t *testing.T) {
	ca, _ := newCA(t)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{"P-384": p384, "Ed25519": ed, "RSA-2048": rsa2048} {
		t.Run(name, func(t *testing.T) {
			csr, err := NewCSR(key, "x")
			if err != nil {
				t.Fatal(err)
			}
			got, err := ca.SignAgentCSR(csr, "id")
			if err != nil {
				t.Fatalf("SignAgentCSR refused a %s key: %v", name, err)
			}
			cert, err := x509.ParseCertificate(got.DER)
			if err != nil || ca.VerifyAgent(cert) != nil {
				t.Fatalf("certificate for a %s key does not verify: %v", name, err)
			}
		})
	}
}

func TestSignAgentCSR_RefusesBadRequests(t *testing.T) {
	ca, _ := newCA(t)
	csrFor := func(t *testing.T, key crypto.Signer, cn string) []byte {
		t.Helper()
		csr, err := NewCSR(key, cn)
		if err != nil {
			t.Fatal(err)
		}
		return csr
	}
	good, _ := NewKey()
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)

	for _, tc := range []struct {
		name string
		csr  func(t *testing.T) []byte
		why  string
	}{
		{"empty", func(*testing.T) []byte { return nil }, "missing"},
		{"oversized", func(*testing.T) []byte { return bytes.Repeat([]byte{0x30}, 16<<10+1) }, "too large"},
		{"garbage", func(*testing.T) []byte { return []byte("-----BEGIN CERTIFICATE REQUEST-----") }, "malformed"},
		{"PEM instead of DER", func(t *testing.T) []byte {
			return []byte("-----BEGIN CERTIFICATE REQUEST-----\n" + string(csrFor(t, good, "x")) + "\n-----END CERTIFICATE REQUEST-----\n")
		}, "malformed"},
		{"truncated", func(t *testing.T) []byte { c := csrFor(t, good, "x"); return c[:len(c)-10] }, "malformed"},
		{"tampered subject", func(t *testing.T) []byte {
			c := csrFor(t, good, "aaaaaaaaaaaaaaaa")
			i := bytes.Index(c, []byte("aaaaaaaaaaaaaaaa"))
			if i < 0 {
				t.Fatal("subject not found in CSR")
			}
			c = bytes.Clone(c)
			c[i] = 'b'
			if _, err := x509.ParseCertificateRequest(c); err != nil {
				t.Fatalf("tampered CSR no longer parses, so the test would not reach the signature check: %v", err)
			}
			return c
		}, "signature"},
		{"a certificate, not a request", func(t *testing.T) []byte { return ca.Cert.Raw }, "malformed"},
		{"RSA-1024", func(t *testing.T) []byte { return csrFor(t, rsa1024, "x") }, "2048"},
		{"P-224", func(t *testing.T) []byte { return csrFor(t, p224, "x") }, "curve"},
		{"P-521", func(t *testing.T) []byte { return csrFor(t, p521, "x") }, "curve"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ca.SignAgentCSR(tc.csr(t), "id")
			if errcode.Of(err) != errcode.Invalid || got != nil {
				t.Fatalf("SignAgentCSR = %v, %v; want invalid", got, err)
			}
			if msg := errcode.Message(err); !strings.Contains(msg, tc.why) {
				t.Fatalf("message %q does not say %q", msg, tc.why)
			}
		})
	}
}

func TestParseFingerprint(t *testing.T) {
	ca, _ := newCA(t)
	pin := ca.Fingerprint()
	hexPart := strings.TrimPrefix(pin, "sha256:")
	var colons []string
	for i := 0; i < len(hexPart); i += 2 {
		colons = append(colons, strings.ToUpper(hexPart[i:i+2]))
	}
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"canonical", pin, true},
		{"upper case", "sha256:" + strings.ToUpper(hexPart), true},
		{"colon separated upper case", "sha256:" + strings.Join(colons, ":"), true},
		{"surrounding space", "  " + pin + "\n", true},
		{"missing prefix", hexPart, false},
		{"other algorithm", "sha1:" + hexPart, false},
		{"upper-case prefix", "SHA256:" + hexPart, false},
		{"too short", pin[:len(pin)-2], false},
		{"too long", pin + "00", false},
		{"odd length", pin[:len(pin)-1], false},
		{"not hex", "sha256:" + strings.Repeat("zz", 32), false},
		{"empty", "", false},
		{"prefix only", "sha256:", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFingerprint(tc.in)
			if tc.ok {
				if err != nil || got != pin {
					t.Fatalf("ParseFingerprint(%q) = %q, %v; want %q", tc.in, got, err, pin)
				}
				return
			}
			if errcode.Of(err) != errcode.Invalid || got != "" {
				t.Fatalf("ParseFingerprint(%q) = %q, %v; want invalid", tc.in, got, err)
			}
		})
	}
}

func TestVerifyPinnedServer(t *testing.T) {
	ca, dir := newCA(t)
	other, otherDir := newCA(t)
	srv := serverCert(t, ca, dir, "mamori.example")
	otherSrv := serverCert(t, other, otherDir, "mamori.example")
	agent := agentCert(t, ca, "computer-1")
	pin := ca.Fingerprint()

	var mismatch *PinMismatchError
	for _, tc := range []struct {
		name         string
		pin          string
		root         *x509.Certificate
		chain        [][]byte
		ok, mismatch bool
	}{
		{name: "the real server chain", pin: pin, chain: srv.Certificate, ok: true},
		{name: "the real server chain, root given", pin: pin, root: ca.Cert, chain: srv.Certificate, ok: true},
		{name: "leaf only, root given", pin: pin, root: ca.Cert, chain: [][]byte{srv.Certificate[0]}, ok: true},
		{name: "leaf only, no root", pin: pin, chain: [][]byte{srv.Certificate[0]}, mismatch: true},
		{name: "another CA's chain", pin: pin, chain: otherSrv.Certificate, mismatch: true},
		{name: "another CA's chain, root given", pin: pin, root: ca.Cert, chain: otherSrv.Certificate},
		{name: "another CA's leaf with the pinned CA appended", pin: pin, chain: [][]byte{otherSrv.Certificate[0], ca.Cert.Raw}},
		{name: "root that is not the pin", pin: pin, root: other.Cert, chain: otherSrv.Certificate, mismatch: true},
		{name: "agent certificate as server leaf", pin: pin, chain: [][]byte{agent, ca.Cert.Raw}},
		{name: "agent certificate as server leaf, root given", pin: pin, root: ca.Cert, chain: [][]byte{agent}},
		{name: "empty chain", pin: pin},
		{name: "empty chain, root given", pin: pin, root: ca.Cert},
		{name: "garbage leaf", pin: pin, chain: [][]byte{[]byte("junk"), ca.Cert.Raw}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyPinnedServer(tc.pin, tc.root)(tc.chain, nil)
			if tc.ok {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if got := errors.As(err, &mismatch); got != tc.mismatch {
				t.Fatalf("error %v: PinMismatchError %v, want %v", err, got, tc.mismatch)
			}
			if tc.mismatch && mismatch.Pin != tc.pin {
				t.Fatalf("PinMismatchError.Pin = %q", mismatch.Pin)
			}
		})
	}
}

// TestVerifyPinnedServer_TLSHandshake uses the verifier the way the agent
// does: host names unchecked, the pin decides.
func TestVerifyPinnedServer_TLSHandshake(t *testing.T) {
	ca, dir := newCA(t)
	other, _ := newCA(t)
	srv := serverCert(t, ca, dir, "mamori.example")
	for _, tc := range []struct {
		name string
		pin  string
		ok   bool
	}{
		{"pinned CA, any address", ca.Fingerprint(), true},
		{"wrong pin", other.Fingerprint(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			serverDone := make(chan error, 1)
			go func() {
				sc, err := ln.Accept()
				if err != nil {
					serverDone <- err
					return
				}
				defer sc.Close()
				s := tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{srv}, MinVersion: tls.VersionTLS13})
				serverDone <- s.HandshakeContext(t.Context())
			}()
			cc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			c := tls.Client(cc, &tls.Config{
				ServerName:            "10.9.8.7", // not in the certificate
				InsecureSkipVerify:    true,       // replaced by the pin check below
				VerifyPeerCertificate: VerifyPinnedServer(tc.pin, nil),
				MinVersion:            tls.VersionTLS13,
			})
			err = c.HandshakeContext(t.Context())
			if tc.ok != (err == nil) {
				t.Fatalf("handshake error %v, want success %v", err, tc.ok)
			}
			if tc.ok {
				if err := <-serverDone; err != nil {
					t.Fatalf("server side of the handshake: %v", err)
				}
			}
			var mismatch *PinMismatchError
			if !tc.ok && !errors.As(err, &mismatch) {
				t.Fatalf("handshake error %v is not a PinMismatchError", err)
			}
		})
	}
}

func TestKeyAndCertPEMRoundTrip(t *testing.T) {
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseKeyPEM(mustEncodeKey(t, key))
	if err != nil || !key.Equal(parsed) {
		t.Fatalf("ParseKeyPEM = %v, %v", parsed, err)
	}
	ca, _ := newCA(t)
	cert, err := ParseCertPEM(EncodeCert(ca.Cert.Raw))
	if err != nil || !bytes.Equal(cert.Raw, ca.Cert.Raw) {
		t.Fatalf("ParseCertPEM = %v, %v", cert, err)
	}
	for _, bad := range [][]byte{nil, []byte("junk"), EncodeCert(ca.Cert.Raw)} {
		if _, err := ParseKeyPEM(bad); err == nil {
			t.Errorf("ParseKeyPEM(%.20q) accepted", bad)
		}
	}
	if _, err := ParseCertPEM(mustEncodeKey(t, key)); err == nil {
		t.Error("ParseCertPEM accepted a key")
	}
}
