package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/store"
)

// slowWriter records batch sizes and fails any batch holding a "bad"
// computer.
type slowWriter struct {
	mu      sync.Mutex
	batches []int
}

func (w *slowWriter) ApplyCheckIns(ctx context.Context, cs []*store.CheckIn) ([]int, error) {
	time.Sleep(5 * time.Millisecond) // like a sync to disk
	w.mu.Lock()
	w.batches = append(w.batches, len(cs))
	w.mu.Unlock()
	out := make([]int, len(cs))
	for i, c := range cs {
		if c.ComputerID == "bad" {
			return nil, errors.New("constraint failed")
		}
		out[i] = len(c.Events)
	}
	return out, nil
}

func TestBatcher_GroupsConcurrentWritesAndIsolatesAFailure(t *testing.T) {
	w := &slowWriter{}
	b := newBatcher(w, slog.New(slog.NewTextHandler(io.Discard, nil)), 64)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.run(ctx)

	const n = 200
	var wg sync.WaitGroup
	errs := make([]error, n)
	got := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := "ok"
			if i == 77 {
				id = "bad"
			}
			ci := &store.CheckIn{ComputerID: id, Events: make([]store.Event, i%5)}
			got[i], errs[i] = b.apply(ctx, ci)
		}()
	}
	wg.Wait()
	for i := range n {
		switch {
		case i == 77 && errs[i] == nil:
			t.Errorf("the bad write did not fail")
		case i != 77 && errs[i] != nil:
			t.Errorf("write %d failed with its batch: %v", i, errs[i])
		case i != 77 && got[i] != i%5:
			t.Errorf("write %d: inserted %d, want %d", i, got[i], i%5)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	maxBatch, total := 0, 0
	for _, s := range w.batches {
		maxBatch = max(maxBatch, s)
		total += s
	}
	if maxBatch < 2 {
		t.Fatalf("no batching happened: batches %v", w.batches)
	}
	if len(w.batches) >= n {
		t.Fatalf("%d transactions for %d writes", len(w.batches), n)
	}
}

func TestBatcher_QueuedWritesAreAnsweredAtShutdown(t *testing.T) {
	b := newBatcher(&slowWriter{}, slog.New(slog.NewTextHandler(io.Discard, nil)), 4)
	ctx, cancel := context.WithCancel(context.Background())
	r := &writeReq{ci: &store.CheckIn{ComputerID: "ok"}, done: make(chan struct{})}
	b.reqs <- r // queued before the batcher runs
	cancel()
	b.run(ctx) // returns at once, answering the queue
	select {
	case <-r.done:
		if r.err == nil {
			t.Fatal("a write that was never made reported success")
		}
	default:
		t.Fatal("queued write left waiting")
	}
}
