package server

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/store"
)

// A server applies each other server's signal once, although it reads the
// same window of signals again at every poll, and skips its own and
// malformed ones (logged, not fatal).
func TestCluster_FollowAppliesEachOtherServersSignalOnce(t *testing.T) {
	db, err := store.OpenSQLite(t.Context(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mu sync.Mutex
	var pushed [][]string
	c := &cluster{db: db, id: "me", log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		pushConfig: func(ids []string) {
			mu.Lock()
			defer mu.Unlock()
			pushed = append(pushed, ids)
		}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); c.follow(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(10 * time.Millisecond) // signals from before the start are ignored
	for _, s := range []store.Signal{
		{Origin: "other", Kind: signalConfig, Data: `{"ids":["a","b"]}`},
		{Origin: "me", Kind: signalConfig, Data: `{"ids":["mine"]}`},
		{Origin: "other", Kind: signalConfig, Data: `{"ids":`},
		{Origin: "other", Kind: "from-a-newer-server", Data: `{}`},
		{Origin: "third", Kind: signalConfig, Data: `{"ids":["c"]}`},
	} {
		s.At = time.Now()
		if err := db.PostSignal(t.Context(), &s); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(8 * signalPoll) // several polls over the same window
	mu.Lock()
	defer mu.Unlock()
	want := [][]string{{"a", "b"}, {"c"}}
	if !slices.EqualFunc(pushed, want, slices.Equal[[]string]) {
		t.Fatalf("configuration pushes %v, want %v (each other server's valid signal once)", pushed, want)
	}
}
