package server

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mamori/mamori/internal/store"
)

// checkInWriter is the store method the batcher needs.
type checkInWriter interface {
	ApplyCheckIns(ctx context.Context, cs []*store.CheckIn) ([]int, error)
}

// batcher group-commits check-in writes: one goroutine takes every write
// waiting at that moment (up to maxBatch) and applies them in one
// transaction, so a burst of check-ins costs one sync instead of one each.
// A failed batch is retried one by one so that one bad write cannot fail
// the others.
type batcher struct {
	store    checkInWriter
	log      *slog.Logger
	reqs     chan *writeReq
	maxBatch int
	// Optional metrics: writes waiting for a commit, check-ins per commit.
	queued    prometheus.Gauge
	batchSize prometheus.Histogram
}

type writeReq struct {
	ci       *store.CheckIn
	inserted int
	err      error
	done     chan struct{}
}

func newBatcher(st checkInWriter, log *slog.Logger, maxBatch int) *batcher {
	return &batcher{store: st, log: log, reqs: make(chan *writeReq, maxBatch), maxBatch: maxBatch}
}

// apply queues ci and waits until it is written; it returns the number of
// new events.
func (b *batcher) apply(ctx context.Context, ci *store.CheckIn) (int, error) {
	r := &writeReq{ci: ci, done: make(chan struct{})}
	if b.queued != nil {
		b.queued.Inc()
		defer b.queued.Dec()
	}
	select {
	case b.reqs <- r:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	<-r.done // the batcher always answers, even when shutting down
	return r.inserted, r.err
}

// run writes batches until ctx ends, then answers what is still queued.
func (b *batcher) run(ctx context.Context) {
	batch := make([]*writeReq, 0, b.maxBatch)
	for {
		batch = batch[:0]
		if ctx.Err() != nil {
			b.drain(ctx.Err())
			return
		}
		select {
		case <-ctx.Done():
			b.drain(ctx.Err())
			return
		case r := <-b.reqs:
			batch = append(batch, r)
		}
	fill:
		for len(batch) < b.maxBatch {
			select {
			case r := <-b.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		b.write(batch)
	}
}

func (b *batcher) write(batch []*writeReq) {
	if b.batchSize != nil {
		b.batchSize.Observe(float64(len(batch)))
	}
	cs := make([]*store.CheckIn, len(batch))
	for i, r := range batch {
		cs[i] = r.ci
	}
	// The writes belong to sessions that may end meanwhile; what was
	// received is still written.
	ins, err := b.store.ApplyCheckIns(context.Background(), cs)
	if err != nil && len(batch) > 1 {
		b.log.Warn("batched check-in write failed; retrying one by one", "batch", len(batch), "err", err)
		for _, r := range batch {
			b.write([]*writeReq{r})
		}
		return
	}
	for i, r := range batch {
		if err != nil {
			r.err = err
		} else {
			r.inserted = ins[i]
		}
		close(r.done)
	}
}

func (b *batcher) drain(err error) {
	for {
		select {
		case r := <-b.reqs:
			r.err = err
			close(r.done)
		default:
			return
		}
	}
}
