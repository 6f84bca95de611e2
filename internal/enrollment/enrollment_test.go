package enrollment

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/pki"
	"github.com/mamori/mamori/internal/store"
)

// env is a Service on a real SQLite store and CA, with a clock the test
// moves by hand.
type env struct {
	svc *Service
	db  *store.DB
	ca  *pki.CA
	dir string
	now time.Time
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	db, err := store.OpenSQLite(t.Context(), dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ca, _, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{db: db, ca: ca, dir: dir, now: time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)}
	e.svc = &Service{Store: db, CA: ca, Now: func() time.Time { return e.now }}
	return e
}

func (e *env) token(t *testing.T, p TokenParams) *NewToken {
	t.Helper()
	tok, err := e.svc.CreateToken(t.Context(), p)
	if err != nil {
		t.Fatalf("CreateToken(%+v): %v", p, err)
	}
	return tok
}

func (e *env) computers(t *testing.T) int {
	t.Helper()
	_, total, err := e.db.ListComputers(t.Context(), store.ComputerFilter{IncludeRevoked: true})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

func (e *env) uses(t *testing.T, tok *NewToken) int {
	t.Helper()
	got, err := e.db.EnrollmentTokenByID(t.Context(), tok.Token.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got.Uses
}

func newCSR(t *testing.T) []byte {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "agent")
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// request is a valid enrollment request with secret; tests change one field.
func request(t *testing.T, secret string) Request {
	t.Helper()
	return Request{
		Token:               secret,
		CSR:                 newCSR(t),
		Hostname:            "ws-017.corp.example",
		HardwareFingerprint: "00112233445566778899aabbccddeeff",
		AgentVersion:        "1.2.3",
		Platform:            "linux",
	}
}

func wantCode(t *testing.T, err error, code errcode.Code) {
	t.Helper()
	if got := errcode.Of(err); got != code {
		t.Fatalf("error %v (code %q), want %q", err, got, code)
	}
}

func TestCreateToken_Defaults(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, TokenParams{CreatedBy: "alice"})
	if tok.GroupPath != "All/Lost & Found" || tok.Token.GroupID != store.GroupLostFound {
		t.Fatalf("default group = %q (%s), want All/Lost & Found", tok.GroupPath, tok.Token.GroupID)
	}
	if !tok.Token.CreatedAt.Equal(e.now) || !tok.Token.ExpiresAt.Equal(e.now.Add(DefaultTTL)) || DefaultTTL != 24*time.Hour {
		t.Fatalf("created %v expires %v, want now and now+24h", tok.Token.CreatedAt, tok.Token.ExpiresAt)
	}
	stored, err := e.db.EnrollmentTokenByID(t.Context(), tok.Token.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.UsesAllowed != 0 || stored.Uses != 0 || stored.CreatedBy != "alice" || !stored.ExpiresAt.Equal(e.now.Add(24*time.Hour)) ||
		stored.GroupID != store.GroupLostFound || !stored.RevokedAt.IsZero() {
		t.Fatalf("stored token = %+v", stored)
	}
}

func TestCreateToken_GroupPath(t *testing.T) {
	e := newEnv(t)
	servers, err := e.db.CreateGroup(t.Context(), store.GroupAll, "Servers")
	if err != nil {
		t.Fatal(err)
	}
	web, err := e.db.CreateGroup(t.Context(), servers.ID, "Web")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, wantID, wantPath string
	}{
		{"All/Servers/Web", web.ID, "All/Servers/Web"},
		{"Servers/Web", web.ID, "All/Servers/Web"},
		{"/Servers", servers.ID, "All/Servers"},
		{"All", store.GroupAll, "All"},
		{"Lost & Found", store.GroupLostFound, "All/Lost & Found"},
	} {
		tok := e.token(t, TokenParams{GroupPath: tc.path})
		if tok.Token.GroupID != tc.wantID || tok.GroupPath != tc.wantPath {
			t.Errorf("GroupPath %q: group %s path %q, want %s %q", tc.path, tok.Token.GroupID, tok.GroupPath, tc.wantID, tc.wantPath)
		}
	}
	for _, path := range []string{"Nope", "All/Servers/Nope", "servers"} {
		_, err := e.svc.CreateToken(t.Context(), TokenParams{GroupPath: path})
		wantCode(t, err, errcode.NotFound)
	}
}

func TestCreateToken_RefusesBadParams(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		p    TokenParams
		ok   bool
	}{
		{"ttl minimum", TokenParams{TTL: time.Minute}, true},
		{"ttl maximum", TokenParams{TTL: 365 * 24 * time.Hour}, true},
		{"ttl below minimum", TokenParams{TTL: time.Minute - time.Nanosecond}, false},
		{"ttl one second", TokenParams{TTL: time.Second}, false},
		{"ttl negative", TokenParams{TTL: -time.Hour}, false},
		{"ttl above maximum", TokenParams{TTL: 365*24*time.Hour + time.Second}, false},
		{"uses one", TokenParams{Uses: 1}, true},
		{"uses maximum", TokenParams{Uses: MaxUses}, true},
		{"uses negative", TokenParams{Uses: -1}, false},
		{"uses above maximum", TokenParams{Uses: MaxUses + 1}, false},
		{"description 256 bytes", TokenParams{Description: strings.Repeat("d", 256)}, true},
		{"description with spaces and unicode", TokenParams{Description: "Berlin office — 2. Stock"}, true},
		{"description 257 bytes", TokenParams{Description: strings.Repeat("d", 257)}, false},
		{"description with newline", TokenParams{Description: "line\nbreak"}, false},
		{"description with escape", TokenParams{Description: "\x1b[2J"}, false},
		{"description invalid UTF-8", TokenParams{Description: "\xff\xfe"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := e.svc.CreateToken(t.Context(), tc.p)
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if tc.p.TTL != 0 && !tok.Token.ExpiresAt.Equal(e.now.Add(tc.p.TTL)) {
					t.Fatalf("ExpiresAt = %v, want now+%v", tok.Token.ExpiresAt, tc.p.TTL)
				}
				if tok.Token.UsesAllowed != tc.p.Uses || tok.Token.Description != tc.p.Description {
					t.Fatalf("token = %+v", tok.Token)
				}
				return
			}
			wantCode(t, err, errcode.Invalid)
		})
	}
	all, err := e.db.ListEnrollmentTokens(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 6 {
		t.Fatalf("%d tokens stored, want the 6 accepted ones", len(all))
	}
}

func TestCreateToken_SecretsAreUniqueAndOnlyTheirHashIsStored(t *testing.T) {
	e := newEnv(t)
	seen := map[string]bool{}
	var secrets []string
	for range 20 {
		tok := e.token(t, TokenParams{Uses: 1})
		s := tok.Secret
		if !strings.HasPrefix(s, "mmr_") || len(s) != len("mmr_")+43 {
			t.Fatalf("secret %q: want mmr_ and 43 base64url characters", s)
		}
		if strings.ContainsAny(s[4:], "+/=") {
			t.Fatalf("secret %q is not base64url without padding", s)
		}
		if seen[s] {
			t.Fatalf("secret %q issued twice", s)
		}
		seen[s] = true
		secrets = append(secrets, s)
		if tok.Token.SecretHash != HashSecret(s) || tok.Token.SecretHash == s || strings.Contains(tok.Token.SecretHash, s[4:]) {
			t.Fatalf("token SecretHash %q is not the hash of the secret", tok.Token.SecretHash)
		}
	}
	stored, err := e.db.ListEnrollmentTokens(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	hashes := map[string]bool{}
	for _, tok := range stored {
		hashes[tok.SecretHash] = true
	}
	for _, s := range secrets {
		if !hashes[HashSecret(s)] {
			t.Fatalf("no stored token has the hash of %q", s)
		}
	}
	// The secrets appear nowhere in the data directory: not in the
	// database, its WAL, or anything else written there.
	entries, err := os.ReadDir(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for _, ent := range entries {
		b, err := os.ReadFile(filepath.Join(e.dir, ent.Name()))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s[4:])) {
				t.Fatalf("secret %q found in %s", s, ent.Name())
			}
		}
	}
	// Sanity: the scan reads the database's bytes, so it would see the
	// secrets if they were there: it does see their hashes.
	if !bytes.Contains(all, []byte(HashSecret(secrets[len(secrets)-1]))) {
		t.Fatalf("scan of %d bytes found not even a stored hash", len(all))
	}
}

func TestEnroll_HappyPath(t *testing.T) {
	e := newEnv(t)
	servers, err := e.db.CreateGroup(t.Context(), store.GroupAll, "Servers")
	if err != nil {
		t.Fatal(err)
	}
	tok := e.token(t, TokenParams{GroupPath: "Servers", Uses: 2})
	for _, tc := range []struct {
		name, instance, wantName string
	}{
		{"named by host name", "", "ws-017.corp.example"},
		{"named by instance", "blue-2", "blue-2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := request(t, tok.Secret)
			req.Instance = tc.instance
			res, err := e.svc.Enroll(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			c := res.Computer
			if c.Name != tc.wantName || c.Hostname != req.Hostname || c.Instance != tc.instance || c.GroupID != servers.ID ||
				c.Platform != "linux" || c.AgentVersion != "1.2.3" || c.HardwareFingerprint != req.HardwareFingerprint || !c.EnrolledAt.Equal(e.now) {
				t.Fatalf("computer = %+v", c)
			}
			if res.GroupPath != "All/Servers" {
				t.Fatalf("GroupPath = %q, want All/Servers", res.GroupPath)
			}
			if !bytes.Equal(res.CA, e.ca.Cert.Raw) {
				t.Fatal("result does not carry the CA certificate")
			}
			cert, err := x509.ParseCertificate(res.Certificate)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.ca.VerifyAgent(cert); err != nil {
				t.Fatalf("agent certificate does not verify: %v", err)
			}
			if pki.ComputerID(cert) != c.ID {
				t.Fatalf("certificate names %q, computer id %q", pki.ComputerID(cert), c.ID)
			}
			stored, err := e.db.ComputerByID(t.Context(), c.ID)
			if err != nil {
				t.Fatal(err)
			}
			if stored.Name != tc.wantName || stored.GroupID != servers.ID {
				t.Fatalf("stored computer = %+v", stored)
			}
			rec, err := e.db.AgentCertificateBySerial(t.Context(), pki.SerialString(cert.SerialNumber))
			if err != nil {
				t.Fatalf("certificate not recorded: %v", err)
			}
			if rec.ComputerID != c.ID || !rec.IssuedAt.Equal(e.now) || !rec.NotAfter.Truncate(time.Second).Equal(cert.NotAfter) { // certificates have second precision
				t.Fatalf("certificate record = %+v", rec)
			}
		})
	}
	if u := e.uses(t, tok); u != 2 {
		t.Fatalf("token uses = %d, want 2", u)
	}
	// The two enrollments share a hardware fingerprint: both are flagged.
	cs, _, err := e.db.ListComputers(t.Context(), store.ComputerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if !c.CloneSuspected {
			t.Errorf("%s not clone_suspected although it shares a fingerprint", c.Name)
		}
	}
}

func TestEnroll_Refusals(t *testing.T) {
	e := newEnv(t)
	live := e.token(t, TokenParams{})
	short := e.token(t, TokenParams{TTL: time.Hour})
	revoked := e.token(t, TokenParams{})
	if err := e.db.RevokeEnrollmentToken(t.Context(), revoked.Token.ID, e.now); err != nil {
		t.Fatal(err)
	}
	usedUp := e.token(t, TokenParams{Uses: 1})
	if _, err := e.svc.Enroll(t.Context(), request(t, usedUp.Secret)); err != nil {
		t.Fatal(err)
	}
	before := e.computers(t)

	for _, tc := range []struct {
		name   string
		later  time.Duration // advance the clock first
		change func(*Request)
		want   errcode.Code
	}{
		{name: "empty token", change: func(r *Request) { r.Token = "" }, want: errcode.Unauthorized},
		{name: "unknown token", change: func(r *Request) { r.Token = NewSecret() }, want: errcode.Unauthorized},
		{name: "overlong token", change: func(r *Request) { r.Token = live.Secret + strings.Repeat("x", 128) }, want: errcode.Unauthorized},
		{name: "expired token", later: time.Hour, change: func(r *Request) { r.Token = short.Secret }, want: errcode.Unauthorized},
		{name: "revoked token", change: func(r *Request) { r.Token = revoked.Secret }, want: errcode.Unauthorized},
		{name: "used-up token", change: func(r *Request) { r.Token = usedUp.Secret }, want: errcode.Unauthorized},
		{name: "empty hostname", change: func(r *Request) { r.Hostname = "" }, want: errcode.Invalid},
		{name: "hostname too long", change: func(r *Request) { r.Hostname = strings.Repeat("h", 254) }, want: errcode.Invalid},
		{name: "hostname with control character", change: func(r *Request) { r.Hostname = "ws\x00017" }, want: errcode.Invalid},
		{name: "hostname with newline", change: func(r *Request) { r.Hostname = "ws\n017" }, want: errcode.Invalid},
		{name: "hostname invalid UTF-8", change: func(r *Request) { r.Hostname = "ws\xff" }, want: errcode.Invalid},
		{name: "instance with space", change: func(r *Request) { r.Instance = "blue 2" }, want: errcode.Invalid},
		{name: "instance with slash", change: func(r *Request) { r.Instance = "../etc" }, want: errcode.Invalid},
		{name: "instance non-ASCII", change: func(r *Request) { r.Instance = "blå" }, want: errcode.Invalid},
		{name: "instance too long", change: func(r *Request) { r.Instance = strings.Repeat("i", 65) }, want: errcode.Invalid},
		{name: "fingerprint not hex", change: func(r *Request) { r.HardwareFingerprint = strings.Repeat("zz", 16) }, want: errcode.Invalid},
		{name: "fingerprint too short", change: func(r *Request) { r.HardwareFingerprint = "00112233445566" }, want: errcode.Invalid},
		{name: "fingerprint too long", change: func(r *Request) { r.HardwareFingerprint = strings.Repeat("ab", 65) }, want: errcode.Invalid},
		{name: "fingerprint empty", change: func(r *Request) { r.HardwareFingerprint = "" }, want: errcode.Invalid},
		{name: "platform too long", change: func(r *Request) { r.Platform = strings.Repeat("p", 17) }, want: errcode.Invalid},
		{name: "platform with control character", change: func(r *Request) { r.Platform = "lin\tux" }, want: errcode.Invalid},
		{name: "agent version too long", change: func(r *Request) { r.AgentVersion = strings.Repeat("1", 65) }, want: errcode.Invalid},
		{name: "missing CSR", change: func(r *Request) { r.CSR = nil }, want: errcode.Invalid},
		{name: "garbage CSR", change: func(r *Request) { r.CSR = []byte("not a csr") }, want: errcode.Invalid},
		// The token is checked before the CSR is looked at (no signing work
		// for unauthenticated callers), so a bad token wins over a bad CSR.
		{name: "unknown token and garbage CSR", change: func(r *Request) { r.Token = NewSecret(); r.CSR = []byte("not a csr") }, want: errcode.Unauthorized},
		{name: "revoked token and missing CSR", change: func(r *Request) { r.Token = revoked.Secret; r.CSR = nil }, want: errcode.Unauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saved := e.now
			defer func() { e.now = saved }()
			e.now = e.now.Add(tc.later)
			req := request(t, live.Secret)
			tc.change(&req)
			res, err := e.svc.Enroll(t.Context(), req)
			if res != nil {
				t.Fatalf("refused enrollment returned a result: %+v", res.Computer)
			}
			wantCode(t, err, tc.want)
			if n := e.computers(t); n != before {
				t.Fatalf("%d computers after a refused enrollment, want %d", n, before)
			}
		})
	}
	// None of the refusals consumed a use of the live token.
	if u := e.uses(t, live); u != 0 {
		t.Fatalf("live token uses = %d after refusals, want 0", u)
	}
	// The boundaries just inside the limits are accepted.
	req := request(t, live.Secret)
	req.Hostname = strings.Repeat("h", 253)
	req.Instance = strings.Repeat("i", 64)
	req.HardwareFingerprint = strings.Repeat("ab", 8)
	req.Platform = strings.Repeat("p", 16)
	if _, err := e.svc.Enroll(t.Context(), req); err != nil {
		t.Fatalf("request at the limits refused: %v", err)
	}
}

func TestEnroll_ExpiryFollowsInjectedClock(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, TokenParams{TTL: time.Hour})
	e.now = e.now.Add(time.Hour - time.Millisecond)
	if _, err := e.svc.Enroll(t.Context(), request(t, tok.Secret)); err != nil {
		t.Fatalf("enrollment a millisecond before expiry: %v", err)
	}
	e.now = e.now.Add(time.Millisecond)
	_, err := e.svc.Enroll(t.Context(), request(t, tok.Secret))
	wantCode(t, err, errcode.Unauthorized)
	if !strings.Contains(errcode.Message(err), "expired") {
		t.Fatalf("message %q does not say expired", errcode.Message(err))
	}
}

func TestEnroll_WithoutCAIsUnavailable(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, TokenParams{})
	svc := &Service{Store: e.db, Now: e.svc.Now} // token creation works without a CA
	if _, err := svc.CreateToken(t.Context(), TokenParams{}); err != nil {
		t.Fatalf("CreateToken without a CA: %v", err)
	}
	_, err := svc.Enroll(t.Context(), request(t, tok.Secret))
	wantCode(t, err, errcode.Unavailable)
	if n := e.computers(t); n != 0 {
		t.Fatalf("%d computers, want 0", n)
	}
}
