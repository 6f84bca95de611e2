package spool

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mamori/mamori/internal/agent/outbox"
)

func TestWriteImport_MovesEventsWithTheirIDsOnce(t *testing.T) {
	state := t.TempDir()
	id1, err := Write(state, "detection.found", map[string]string{"path": "/tmp/x"})
	if err != nil {
		t.Fatal(err)
	}
	id2, _ := Write(state, "scan.finished", map[string]int{"files": 3})
	ob, err := outbox.Open(filepath.Join(state, "outbox.db"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	n, err := Import(state, ob)
	if err != nil || n != 2 {
		t.Fatalf("Import = %d, %v", n, err)
	}
	evs, _ := ob.Pending(10)
	ids := map[string]string{}
	for _, e := range evs {
		ids[e.ID] = e.Type
	}
	if ids[id1] != "detection.found" || ids[id2] != "scan.finished" || len(evs) != 2 {
		t.Fatalf("outbox holds %+v", evs)
	}
	if left, _ := os.ReadDir(Dir(state)); len(left) != 0 {
		t.Fatalf("spool not emptied: %v", left)
	}
	if n, err := Import(state, ob); n != 0 || err != nil {
		t.Fatalf("second import: %d %v", n, err)
	}
}

func TestImport_CorruptFilesAreSetAsideAndReported(t *testing.T) {
	state := t.TempDir()
	Write(state, "detection.found", map[string]string{"path": "/a"})
	os.WriteFile(filepath.Join(Dir(state), "junk.json"), []byte("{not json"), 0o600)
	os.WriteFile(filepath.Join(Dir(state), "noid.json"), []byte(`{"type":"x","time":"2026-01-01T00:00:00Z"}`), 0o600)
	os.WriteFile(filepath.Join(Dir(state), "big.json"), make([]byte, MaxFile+1), 0o600)
	ob, _ := outbox.Open(filepath.Join(state, "outbox.db"), 0)
	defer ob.Close()
	n, err := Import(state, ob)
	if n != 1 || err == nil {
		t.Fatalf("Import = %d, %v; want 1 imported and an error about the bad files", n, err)
	}
	for _, bad := range []string{"junk.json.bad", "noid.json.bad", "big.json.bad"} {
		if _, err := os.Stat(filepath.Join(Dir(state), bad)); err != nil {
			t.Errorf("%s not set aside: %v", bad, err)
		}
	}
}
