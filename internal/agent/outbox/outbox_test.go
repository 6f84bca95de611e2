package outbox

import (
	"errors"
	"path/filepath"
	"testing"
)

func open(t *testing.T, path string, max int) *Outbox {
	t.Helper()
	o, err := Open(path, max)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestOutbox_EventsSurviveReopenUntilAcked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	o := open(t, path, 0)
	id1, err := o.Append("agent.started", map[string]string{"version": "1"})
	if err != nil {
		t.Fatal(err)
	}
	id2, _ := o.Append("agent.stopped", nil)
	o.Close()

	o = open(t, path, 0)
	defer o.Close()
	evs, err := o.Pending(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].ID != id1 || evs[1].ID != id2 || evs[0].Type != "agent.started" || string(evs[0].Data) != `{"version":"1"}` {
		t.Fatalf("after reopen: %+v", evs)
	}
	if o.Len() != 2 {
		t.Fatalf("Len = %d, want 2", o.Len())
	}
	if err := o.Ack([]uint64{evs[0].Seq, evs[0].Seq}); err != nil { // acking twice is harmless
		t.Fatal(err)
	}
	evs, _ = o.Pending(10)
	if len(evs) != 1 || evs[0].ID != id2 || o.Len() != 1 {
		t.Fatalf("after ack: %+v len %d", evs, o.Len())
	}
}

func TestOutbox_FullDropsOldestAndCounts(t *testing.T) {
	o := open(t, filepath.Join(t.TempDir(), "outbox.db"), 3)
	defer o.Close()
	var ids []string
	for range 5 {
		id, err := o.Append("x.y", nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	evs, _ := o.Pending(10)
	if len(evs) != 3 || evs[0].ID != ids[2] || evs[2].ID != ids[4] {
		t.Fatalf("kept %+v, want the newest three", evs)
	}
	if o.Dropped() != 2 || o.Len() != 3 {
		t.Fatalf("dropped %d len %d", o.Dropped(), o.Len())
	}
}

func TestOutbox_SecondProcessIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	o := open(t, path, 0)
	defer o.Close()
	if _, err := Open(path, 0); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

func TestOutbox_NotifyOnAppend(t *testing.T) {
	o := open(t, filepath.Join(t.TempDir(), "outbox.db"), 0)
	defer o.Close()
	o.Append("a.b", nil)
	o.Append("a.c", nil)
	select {
	case <-o.Notify():
	default:
		t.Fatal("no notification after Append")
	}
}

// The bound follows the configuration: lowered, the next event leaves the
// newest n (the oldest dropped and counted); raised, nothing more is
// dropped; 0 is the default.
func TestOutbox_SetMaxEventsAppliesFromTheNextEvent(t *testing.T) {
	o := open(t, filepath.Join(t.TempDir(), "outbox.db"), 10)
	defer o.Close()
	for range 8 {
		if _, err := o.Append("e", nil); err != nil {
			t.Fatal(err)
		}
	}
	o.SetMaxEvents(3)
	if o.Len() != 8 || o.Dropped() != 0 {
		t.Fatalf("lowering the bound dropped at once: Len %d, dropped %d", o.Len(), o.Dropped())
	}
	last, err := o.Append("last", nil)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := o.Pending(100)
	if err != nil {
		t.Fatal(err)
	}
	if o.Len() != 3 || o.Dropped() != 6 || len(evs) != 3 || evs[2].ID != last {
		t.Fatalf("after an event under a bound of 3: Len %d, dropped %d, pending %d (last %v)", o.Len(), o.Dropped(), len(evs), evs[len(evs)-1].ID == last)
	}
	o.SetMaxEvents(5)
	for range 2 {
		o.Append("e", nil)
	}
	if o.Len() != 5 || o.Dropped() != 6 {
		t.Fatalf("after raising the bound to 5: Len %d, dropped %d; want 5, 6", o.Len(), o.Dropped())
	}
	o.SetMaxEvents(0)
	o.mu.Lock()
	max := o.maxEvents
	o.mu.Unlock()
	if max != DefaultMaxEvents {
		t.Fatalf("SetMaxEvents(0) = %d, want the default", max)
	}
}
