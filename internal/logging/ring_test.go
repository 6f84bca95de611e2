package logging

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestRing_KeepsTheLastWholeLines(t *testing.T) {
	r := NewRing(64)
	if got := string(r.Bytes()); got != "" {
		t.Fatalf("empty ring: %q", got)
	}
	for i := range 20 {
		fmt.Fprintf(r, "line %02d\n", i) // 8 bytes each
	}
	got := string(r.Bytes())
	if !strings.HasPrefix(got, "[older lines dropped]\n") || !strings.HasSuffix(got, "line 19\n") {
		t.Fatalf("ring: %q", got)
	}
	body := strings.TrimPrefix(got, "[older lines dropped]\n")
	if len(body) > 64 || !strings.HasPrefix(body, "line ") {
		t.Fatalf("kept %d bytes, first line cut: %q", len(body), body)
	}
	// One write larger than the ring keeps its end, and counts as whole.
	big := []byte(strings.Repeat("x", 100) + "\nlast\n")
	if n, err := r.Write(big); n != len(big) || err != nil {
		t.Fatalf("Write of %d bytes = %d, %v", len(big), n, err)
	}
	if got := string(r.Bytes()); !strings.HasSuffix(got, "last\n") || len(got) > 64+len("[older lines dropped]\n") {
		t.Fatalf("after a large write: %q", got)
	}
}

func TestRing_ConcurrentWriters(t *testing.T) {
	r := NewRing(1 << 10)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 200 {
				fmt.Fprintf(r, "writer %d line %d\n", w, i)
			}
		})
	}
	wg.Wait()
	for _, l := range strings.Split(strings.TrimSuffix(string(r.Bytes()), "\n"), "\n") {
		if l != "[older lines dropped]" && !strings.HasPrefix(l, "writer ") {
			t.Fatalf("a torn line: %q", l)
		}
	}
}
