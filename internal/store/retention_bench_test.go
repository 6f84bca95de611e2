package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/store"
)

// BenchmarkApplyCheckInEvents writes what a server's group commit flushes
// when agents report events: 100 check-ins of 5 new events each, in one
// ApplyCheckIns. It is the write that the retention indexes on the event
// tables' time columns (migration 00010) make dearer; compare it with the
// same benchmark on a tree without them. ns/op is per batch of 500 events.
//
//	./scripts/with-postgres.sh go test -run '^$' -bench ApplyCheckInEvents ./internal/store/
func BenchmarkApplyCheckInEvents(b *testing.B) {
	const computers, perCheckIn = 100, 5
	onBothStores(b, func(b *testing.B, db *store.DB) {
		seedSessions(b, db, computers)
		at, seq := time.Now(), 0
		batch := func() []*store.CheckIn {
			at = at.Add(time.Second)
			cs := make([]*store.CheckIn, computers)
			for i := range cs {
				c := &store.CheckIn{ComputerID: fmt.Sprintf("c%04d", i), Now: at}
				for range perCheckIn {
					seq++
					c.Events = append(c.Events, benchEvent(seq, at))
				}
				cs[i] = c
			}
			return cs
		}
		ops := 0
		for b.Loop() {
			n, err := db.ApplyCheckIns(b.Context(), batch())
			if err != nil {
				b.Fatal(err)
			}
			if n[0] != perCheckIn {
				b.Fatalf("ApplyCheckIns stored %d events of the first check-in, want %d", n[0], perCheckIn)
			}
			ops++
		}
		b.ReportMetric(float64(ops*computers*perCheckIn)/b.Elapsed().Seconds(), "events/s")
	})
}

// BenchmarkRetentionDelete measures a retention pass over computer events,
// in batches of 1,000 as the retention loop deletes them, on a table
// holding 100,000 young events (received now). In empty_pass nothing is
// older than the cutoff: ns/op is one DeleteComputerEventsBefore that
// deletes nothing, what each retention tick costs once the backlog is gone.
// In delete_100k, 100,000 events a year old are loaded (untimed), then
// deleted by DeleteComputerEventsBefore(cutoff, 1000) until a batch comes
// back short: ns/op is the whole backlog, rows/s its throughput.
//
//	./scripts/with-postgres.sh go test -run '^$' -bench RetentionDelete ./internal/store/
func BenchmarkRetentionDelete(b *testing.B) {
	const computers, rows, limit = 100, 100_000, 1000
	onBothStores(b, func(b *testing.B, db *store.DB) {
		seedSessions(b, db, computers)
		now := time.Now()
		cutoff := now.AddDate(0, 0, -90)
		seq := 0
		// load stores rows events received at (or, for old ones, around) at,
		// spread over the computers, 10,000 to a transaction.
		load := func(at time.Time, spread bool) {
			for done := 0; done < rows; {
				cs := make([]*store.CheckIn, computers)
				for i := range cs {
					recv := at
					if spread {
						recv = at.Add(time.Duration(done) * time.Minute)
					}
					c := &store.CheckIn{ComputerID: fmt.Sprintf("c%04d", i), Now: recv}
					for range rows / computers / 10 {
						seq++
						c.Events = append(c.Events, benchEvent(seq, recv))
					}
					done += len(c.Events)
					cs[i] = c
				}
				if _, err := db.ApplyCheckIns(b.Context(), cs); err != nil {
					b.Fatal(err)
				}
			}
		}
		load(now, false)
		b.Run("empty_pass", func(b *testing.B) {
			for b.Loop() {
				n, err := db.DeleteComputerEventsBefore(b.Context(), cutoff, limit)
				if err != nil || n != 0 {
					b.Fatalf("DeleteComputerEventsBefore = %d, %v; want 0", n, err)
				}
			}
		})
		b.Run("delete_100k", func(b *testing.B) {
			deleted := int64(0)
			for b.Loop() {
				b.StopTimer()
				load(now.AddDate(-1, 0, 0), true)
				b.StartTimer()
				total := int64(0)
				for {
					n, err := db.DeleteComputerEventsBefore(b.Context(), cutoff, limit)
					if err != nil {
						b.Fatal(err)
					}
					total += n
					if n < limit {
						break
					}
				}
				if total != rows {
					b.Fatalf("deleted %d events, want %d", total, rows)
				}
				deleted += total
			}
			b.ReportMetric(float64(deleted)/b.Elapsed().Seconds(), "rows/s")
		})
	})
}

// benchEvent is an agent event of about the size agents report.
func benchEvent(seq int, at time.Time) store.Event {
	id := fmt.Sprintf("e%010d", seq)
	return store.Event{ID: id, Type: "scan.finished", OccurredAt: at,
		Data: `{"id":"` + id + `","files":1234,"bytes":567890,"detections":0,"duration_ms":4321}`}
}
