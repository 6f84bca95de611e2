package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/store"
)

// The server deletes what outlived the retention settings: here events a
// computer reported two months ago (written into the store as they would
// have been then), while today's events stay.
func TestRetention_TheServerDeletesOldEvents(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--retention-interval", "1s")
	s.agent(t, filepath.Join(t.TempDir(), "agent"), nil, append(s.enrollArgs(s.token()), "--instance", "kept")...)
	c, _ := s.api.waitStatus(t, "kept", "online", 20*time.Second)

	db, err := store.OpenSQLite(t.Context(), s.data, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	then := time.Now().Add(-60 * 24 * time.Hour)
	if _, err := db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: c.ID, Now: then,
		Events: []store.Event{{ID: "from-two-months-ago", Type: "agent.started", OccurredAt: then, Data: "{}"}}}); err != nil {
		t.Fatal(err)
	}
	events := func() (old, recent int) {
		var l struct {
			Items []struct {
				ID string `json:"id"`
			}
		}
		if code := s.api.do(t, "GET", "/api/v1/computers/"+c.ID+"/events?limit=500", nil, &l); code != 200 {
			t.Fatalf("events: HTTP %d", code)
		}
		for _, e := range l.Items {
			if e.ID == "from-two-months-ago" {
				old++
			} else {
				recent++
			}
		}
		return old, recent
	}
	if old, _ := events(); old != 1 {
		t.Fatalf("the old event was not written (%d)", old)
	}
	waitFor(t, 30*time.Second, "the old event deleted", func() (bool, string) {
		old, recent := events()
		return old == 0, fmt.Sprintf("%d old, %d recent", old, recent)
	})
	if _, recent := events(); recent == 0 {
		t.Fatal("today's events went too")
	}
	if n := s.api.metric(t, `mamori_retention_deleted_total{kind="computer_events"}`); n < 1 {
		t.Fatalf("mamori_retention_deleted_total{kind=\"computer_events\"} = %v", n)
	}
}
