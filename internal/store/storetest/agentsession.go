package storetest

// Conformance tests for AgentSession: the one query that sets up an agent's
// session (its certificate, its computer and the computer's section hashes).

import (
	"bytes"
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

// certificateAdder adds a certificate to an enrolled computer. The product
// issues one per computer, at enrollment, but the schema allows several; the
// store's test build has the method (export_test.go), and the suite runs
// from the store's own tests.
type certificateAdder interface {
	AddAgentCertificate(ctx context.Context, c *store.AgentCertificate) error
}

// enrollSerial enrolls a computer id whose certificate has serial.
func enrollSerial(t *testing.T, db *store.DB, id, serial string) *store.Computer {
	t.Helper()
	tok := NewToken(t, db, store.GroupLostFound, 0)
	c := store.Computer{ID: id, Name: id, Hostname: id, HardwareFingerprint: randomHex(t, 16)}
	must(t, db.EnrollComputer(t.Context(), tok.SecretHash, T0, &c, &store.AgentCertificate{Serial: serial, IssuedAt: T0, NotAfter: T0.Add(24 * time.Hour)}))
	return computer(t, db, id)
}

// wantAgentSession fails t unless AgentSession(serial) returns what
// AgentCertificateBySerial, ComputerByID and SectionHashes return.
func wantAgentSession(t *testing.T, db *store.DB, serial string) *store.AgentSession {
	t.Helper()
	s, err := db.AgentSession(t.Context(), serial)
	must(t, err)
	cert, err := db.AgentCertificateBySerial(t.Context(), serial)
	must(t, err)
	if !reflect.DeepEqual(s.Certificate, cert) {
		t.Fatalf("AgentSession(%s).Certificate = %+v, AgentCertificateBySerial = %+v", serial, s.Certificate, cert)
	}
	c := computer(t, db, cert.ComputerID)
	if !reflect.DeepEqual(s.Computer, c) {
		t.Fatalf("AgentSession(%s).Computer = %+v, ComputerByID = %+v", serial, s.Computer, c)
	}
	hashes, err := db.SectionHashes(t.Context(), c.ID)
	must(t, err)
	if !reflect.DeepEqual(s.SectionHashes, hashes) {
		t.Fatalf("AgentSession(%s).SectionHashes = %v, SectionHashes = %v", serial, s.SectionHashes, hashes)
	}
	return s
}

func testAgentSessionNoSections(t *testing.T, db *store.DB) {
	c := enrollSerial(t, db, "c1", "5e1")
	s := wantAgentSession(t, db, "5e1")
	if s.Certificate.Serial != "5e1" || s.Certificate.ComputerID != c.ID || !s.Certificate.IssuedAt.Equal(T0) ||
		!s.Certificate.NotAfter.Equal(T0.Add(24*time.Hour)) || !s.Certificate.RevokedAt.IsZero() {
		t.Fatalf("certificate = %+v", s.Certificate)
	}
	if s.Computer.ID != c.ID || s.Computer.Name != "c1" || !s.Computer.RevokedAt.IsZero() {
		t.Fatalf("computer = %+v", s.Computer)
	}
	if s.SectionHashes == nil || len(s.SectionHashes) != 0 {
		t.Fatalf("SectionHashes = %#v, want empty", s.SectionHashes)
	}
}

func testAgentSessionSections(t *testing.T, db *store.DB) {
	c := enrollSerial(t, db, "c1", "5e1")
	other := enrollSerial(t, db, "c2", "5e2")
	_, err := db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: c.ID, Now: T0.Add(time.Minute),
		Sections: []store.InventorySection{
			{Section: "system", Hash: []byte{1}, Data: `{}`},
			{Section: "hardware", Hash: []byte{2, 2}, Data: `{}`},
			{Section: "software", Hash: bytes.Repeat([]byte{3}, 32), Data: `{}`},
		},
		Events: []store.Event{
			detectionEvent("d1", "EICAR-Test-File", "/tmp/a", T0),
			detectionEvent("d2", "EICAR-Test-File", "/tmp/b", T0),
		}})
	must(t, err)
	_, err = db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: c.ID, Now: T0.Add(2 * time.Minute),
		Sections: []store.InventorySection{{Section: "system", Hash: []byte{4, 4, 4}, Data: `{}`}}})
	must(t, err)
	_, err = db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: other.ID, Now: T0.Add(time.Minute),
		Sections: []store.InventorySection{{Section: "users", Hash: []byte{9}, Data: `{}`}}})
	must(t, err)

	s := wantAgentSession(t, db, "5e1")
	want := map[string][]byte{"system": {4, 4, 4}, "hardware": {2, 2}, "software": bytes.Repeat([]byte{3}, 32)}
	if !reflect.DeepEqual(s.SectionHashes, want) {
		t.Fatalf("SectionHashes = %v, want %v", s.SectionHashes, want)
	}
	// One row per section: the computer's columns (the detection count
	// among them) are not multiplied.
	if s.Computer.ID != c.ID || s.Computer.UnresolvedDetections != 2 {
		t.Fatalf("computer = %+v, want %s with 2 unresolved detections", s.Computer, c.ID)
	}
	if o := wantAgentSession(t, db, "5e2"); o.Computer.ID != other.ID || len(o.SectionHashes) != 1 || !bytes.Equal(o.SectionHashes["users"], []byte{9}) {
		t.Fatalf("other computer's session = %+v", o)
	}
}

func testAgentSessionUnknown(t *testing.T, db *store.DB) {
	enrollSerial(t, db, "c1", "0a1b2c")
	for _, serial := range []string{"0A1B2C", "nope", "", "c1"} {
		s, err := db.AgentSession(t.Context(), serial)
		WantCode(t, err, errcode.NotFound)
		if s != nil {
			t.Fatalf("AgentSession(%q) = %+v with not_found", serial, s)
		}
	}
}

// Revocations are returned as stored: refusing the session is the server's
// decision.
func testAgentSessionRevoked(t *testing.T, db *store.DB) {
	c := enrollSerial(t, db, "c1", "5e1")
	_, err := db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: c.ID, Now: T0.Add(time.Minute),
		Sections: []store.InventorySection{{Section: "system", Hash: []byte{1}, Data: `{}`}}})
	must(t, err)
	enrollSerial(t, db, "c2", "5e2")
	// A revoked certificate of a computer still managed.
	adder, ok := any(db).(certificateAdder)
	if !ok {
		t.Fatal("the store has no AddAgentCertificate: run the suite from the store's tests (export_test.go)")
	}
	old := T0.Add(-time.Hour)
	must(t, adder.AddAgentCertificate(t.Context(), &store.AgentCertificate{Serial: "01d", ComputerID: c.ID, IssuedAt: old, NotAfter: T0, RevokedAt: T0}))
	s := wantAgentSession(t, db, "01d")
	if !s.Certificate.RevokedAt.Equal(T0) || !s.Computer.RevokedAt.IsZero() || len(s.SectionHashes) != 1 {
		t.Fatalf("revoked certificate's session = cert %+v, computer revoked at %v, hashes %v", s.Certificate, s.Computer.RevokedAt, s.SectionHashes)
	}
	// A removed computer: it and its certificates are revoked.
	at := T0.Add(time.Hour)
	must(t, db.RevokeComputer(t.Context(), c.ID, at))
	s = wantAgentSession(t, db, "5e1")
	if !s.Certificate.RevokedAt.Equal(at) || !s.Computer.RevokedAt.Equal(at) || s.Computer.ID != c.ID || len(s.SectionHashes) != 1 {
		t.Fatalf("revoked computer's session = cert %+v, computer %+v, hashes %v", s.Certificate, s.Computer, s.SectionHashes)
	}
	if s := wantAgentSession(t, db, "01d"); !s.Certificate.RevokedAt.Equal(T0) { // revoked first, keeps its time
		t.Fatalf("earlier revoked certificate = %+v", s.Certificate)
	}
	if s := wantAgentSession(t, db, "5e2"); !s.Certificate.RevokedAt.IsZero() || !s.Computer.RevokedAt.IsZero() {
		t.Fatalf("other computer's session = cert %+v, computer %+v", s.Certificate, s.Computer)
	}
}

// A computer with two certificates: each serial returns its own certificate
// and the same computer and sections, once.
func testAgentSessionTwoCertificates(t *testing.T, db *store.DB) {
	c := enrollSerial(t, db, "c1", "5e1")
	adder, ok := any(db).(certificateAdder)
	if !ok {
		t.Fatal("the store has no AddAgentCertificate: run the suite from the store's tests (export_test.go)")
	}
	must(t, adder.AddAgentCertificate(t.Context(), &store.AgentCertificate{Serial: "5e1b", ComputerID: c.ID, IssuedAt: T0.Add(time.Hour), NotAfter: T0.Add(48 * time.Hour)}))
	_, err := db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: c.ID, Now: T0.Add(time.Minute),
		Sections: []store.InventorySection{{Section: "system", Hash: []byte{1}, Data: `{}`}, {Section: "agent", Hash: []byte{2}, Data: `{}`}}})
	must(t, err)
	a, b := wantAgentSession(t, db, "5e1"), wantAgentSession(t, db, "5e1b")
	if a.Certificate.Serial != "5e1" || !a.Certificate.NotAfter.Equal(T0.Add(24*time.Hour)) ||
		b.Certificate.Serial != "5e1b" || !b.Certificate.IssuedAt.Equal(T0.Add(time.Hour)) || !b.Certificate.NotAfter.Equal(T0.Add(48*time.Hour)) {
		t.Fatalf("certificates %+v and %+v", a.Certificate, b.Certificate)
	}
	if !reflect.DeepEqual(a.Computer, b.Computer) || !reflect.DeepEqual(a.SectionHashes, b.SectionHashes) || len(a.SectionHashes) != 2 {
		t.Fatalf("sessions of one computer differ: %+v %v and %+v %v", a.Computer, a.SectionHashes, b.Computer, b.SectionHashes)
	}
}
