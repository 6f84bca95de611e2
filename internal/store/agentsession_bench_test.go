package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/store"
	"github.com/mamori/mamori/internal/store/storetest"
)

// BenchmarkAgentSessionSetUp compares what the server reads to set up an
// agent's session: the three queries it made before (certificate, computer,
// section hashes) against AgentSession's one. On PostgreSQL each query is a
// round trip (here over loopback, the cheapest there is).
//
//	./scripts/with-postgres.sh go test -run '^$' -bench AgentSessionSetUp ./internal/store/
func BenchmarkAgentSessionSetUp(b *testing.B) {
	onBothStores(b, func(b *testing.B, db *store.DB) {
		serials := seedSessions(b, db, 200)
		b.Run("three_queries", func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				ctx := b.Context()
				cert, err := db.AgentCertificateBySerial(ctx, serials[i%len(serials)])
				if err != nil {
					b.Fatal(err)
				}
				c, err := db.ComputerByID(ctx, cert.ComputerID)
				if err != nil {
					b.Fatal(err)
				}
				h, err := db.SectionHashes(ctx, c.ID)
				if err != nil || len(h) != 6 {
					b.Fatalf("SectionHashes = %d, %v", len(h), err)
				}
				i++
			}
		})
		b.Run("one_query", func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				s, err := db.AgentSession(b.Context(), serials[i%len(serials)])
				if err != nil || len(s.SectionHashes) != 6 {
					b.Fatalf("AgentSession: %v", err)
				}
				i++
			}
		})
	})
}

// onBothStores runs f as a sub-benchmark on a fresh SQLite store and on a
// fresh PostgreSQL schema (skipped without MAMORI_TEST_POSTGRES).
func onBothStores(b *testing.B, f func(b *testing.B, db *store.DB)) {
	b.Run("sqlite", func(b *testing.B) { f(b, openSQLite(b, b.TempDir(), store.Options{})) })
	b.Run("postgres", func(b *testing.B) { f(b, openPostgres(b, storetest.PostgresSchema(b, storetest.PostgresURL(b)))) })
}

// seedSessions enrolls n computers, each with the six inventory sections an
// agent reports, and returns their certificates' serials.
func seedSessions(b *testing.B, db *store.DB, n int) []string {
	b.Helper()
	ctx := b.Context()
	t0 := time.Now()
	tok := &store.EnrollmentToken{ID: "bench", SecretHash: "bench-secret", GroupID: store.GroupLostFound,
		ExpiresAt: t0.Add(time.Hour), CreatedBy: "bench", CreatedAt: t0}
	if err := db.CreateEnrollmentToken(ctx, tok); err != nil {
		b.Fatal(err)
	}
	var serials []string
	for i := range n {
		id, serial := fmt.Sprintf("c%04d", i), fmt.Sprintf("%032x", i)
		c := &store.Computer{ID: id, Name: id, Hostname: id, HardwareFingerprint: "fp-" + id}
		cert := &store.AgentCertificate{Serial: serial, IssuedAt: t0, NotAfter: t0.Add(time.Hour)}
		if err := db.EnrollComputer(ctx, tok.SecretHash, t0, c, cert); err != nil {
			b.Fatal(err)
		}
		ci := &store.CheckIn{ComputerID: id, Now: t0}
		for _, s := range []string{"system", "hardware", "network", "software", "users", "agent"} {
			ci.Sections = append(ci.Sections, store.InventorySection{Section: s, Hash: make([]byte, 32), Data: `{}`})
		}
		if _, err := db.ApplyCheckIn(ctx, ci); err != nil {
			b.Fatal(err)
		}
		serials = append(serials, serial)
	}
	return serials
}
