package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/store"
)

// BenchmarkApplyPresence writes what a server flushes after a restart: a
// batch of 1,000 computers coming online (a status change each: a change
// number and an agent.connected event), then the same computers' last-seen
// times alone (steady state). ns/op is per batch.
//
//	./scripts/with-postgres.sh go test -run '^$' -bench ApplyPresence ./internal/store/
func BenchmarkApplyPresence(b *testing.B) {
	const n = 1000
	onBothStores(b, func(b *testing.B, db *store.DB) {
		seedSessions(b, db, n)
		at := time.Now()
		batch := func(status string) []store.PresenceUpdate {
			at = at.Add(time.Second)
			ups := make([]store.PresenceUpdate, n)
			for i := range ups {
				ups[i] = store.PresenceUpdate{ComputerID: fmt.Sprintf("c%04d", i), Status: status, LastSeen: at, ConnectedSince: at, ServerID: "s1"}
			}
			return ups
		}
		b.Run("online", func(b *testing.B) {
			for b.Loop() {
				if err := db.ApplyPresence(b.Context(), batch(store.StatusOnline)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("last_seen", func(b *testing.B) {
			for b.Loop() {
				if err := db.ApplyPresence(b.Context(), batch("")); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
