package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/dyngroup"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

// Servers sharing a PostgreSQL store (several processes on one machine,
// each under its own open-files limit, or several machines) each hold
// their own agents' connections. What one asks of another's agents goes
// through the store as signals; what must run once runs on the leader.
const (
	heartbeatEvery  = 5 * time.Second
	serverStaleAge  = 30 * time.Second // a server not heard from this long is dead; its computers go offline
	signalPoll      = 250 * time.Millisecond
	signalWindow    = 30 * time.Second // signals are read again for this long (their sequence may commit out of order)
	signalRetention = time.Hour
	leaderCheck     = 2 * time.Second
)

// Signal kinds.
const (
	signalWake       = "wake"        // wake computers connected to their server
	signalDisconnect = "disconnect"  // drop a computer's connections (revoked)
	signalConfig     = "config"      // computers' configuration changed: push it
	signalReevaluate = "reevaluate"  // the leader re-evaluates a dynamic group
	signalCancelRuns = "cancel_runs" // tell an agent runs were cancelled
)

type signalData struct {
	IDs    []string `json:"ids,omitempty"`
	Reason string   `json:"reason,omitempty"`
	Group  string   `json:"group,omitempty"`
	Runs   []string `json:"runs,omitempty"`
}

type clusterStore interface {
	RegisterServer(ctx context.Context, id, name string, now time.Time) error
	HeartbeatServer(ctx context.Context, id string, now time.Time) error
	ReapServers(ctx context.Context, staleBefore time.Time) (int64, error)
	RemoveServer(ctx context.Context, id string) error
	PostSignal(ctx context.Context, s *store.Signal) error
	SignalsSince(ctx context.Context, since time.Time) ([]store.Signal, error)
	SignalData(ctx context.Context, seq int64) (string, error)
	DeleteSignalsBefore(ctx context.Context, t time.Time) (int64, error)
	OnlineElsewhere(ctx context.Context, serverID string) (map[string]bool, error)
	ComputerByID(ctx context.Context, id string) (*store.Computer, error)
	Lead(ctx context.Context, check time.Duration) (lost <-chan struct{}, release func(), err error)
	Shared() bool
}

// cluster is this server's membership of the servers sharing its store.
type cluster struct {
	db      clusterStore
	id      string
	name    string
	log     *slog.Logger
	hub     *Hub
	leading atomic.Bool

	// Set before run: what signals from the others do here.
	pushConfig func(ids []string)
	reevaluate func(groupID string)

	seenMu sync.Mutex
	seen   map[int64]time.Time // signals handled, by sequence, for signalWindow
}

// start reaps, then registers the server. A lone server (SQLite) reaps
// every earlier registration: whatever was online was connected to its
// previous run. Sharing servers reap only the ones that stopped answering.
func (c *cluster) start(ctx context.Context) error {
	now := time.Now()
	staleBefore := now.Add(-serverStaleAge)
	if !c.db.Shared() {
		staleBefore = now.Add(time.Millisecond)
	}
	if n, err := c.db.ReapServers(ctx, staleBefore); err != nil {
		return err
	} else if n > 0 {
		c.log.Info("marked computers offline: their server stopped", "computers", n)
	}
	return c.db.RegisterServer(ctx, c.id, c.name, now)
}

// stop forgets the server (after its computers were flushed offline).
func (c *cluster) stop(ctx context.Context) {
	if err := c.db.RemoveServer(ctx, c.id); err != nil {
		c.log.Warn("removing the server's registration", "err", err)
	}
}

// run keeps the heartbeat and follows the others' signals (both only when
// the store is shared: a lone server has nobody to tell) and, while this
// server leads, runs leaderWork (each function until its context ends).
func (c *cluster) run(ctx context.Context, leaderWork ...func(context.Context)) {
	var wg sync.WaitGroup
	if c.db.Shared() {
		wg.Go(func() { c.heartbeat(ctx) })
		wg.Go(func() { c.follow(ctx) })
		leaderWork = append(leaderWork, c.reap)
	}
	wg.Go(func() { c.lead(ctx, leaderWork...) })
	wg.Wait()
}

func (c *cluster) heartbeat(ctx context.Context) {
	every(ctx, heartbeatEvery, func(now time.Time) {
		err := c.db.HeartbeatServer(ctx, c.id, now)
		if errcode.Of(err) == errcode.NotFound {
			// Taken for dead (the store was out of reach too long) and its
			// computers marked offline: come back and say who is here.
			c.log.Warn("this server was taken for dead by the others; registering again")
			if err = c.db.RegisterServer(ctx, c.id, c.name, time.Now()); err == nil {
				c.hub.reassert()
			}
		}
		if err != nil && ctx.Err() == nil {
			c.log.Warn("server heartbeat", "err", err)
		}
	})
}

// lead waits for leadership, runs work while it lasts, and waits again.
func (c *cluster) lead(ctx context.Context, work ...func(context.Context)) {
	for ctx.Err() == nil {
		lost, release, err := c.db.Lead(ctx, leaderCheck)
		if err != nil {
			return // ctx ended
		}
		c.leading.Store(true)
		if c.db.Shared() {
			c.log.Info("this server leads the servers sharing the store")
		}
		lctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for _, w := range work {
			wg.Go(func() { w(lctx) })
		}
		select {
		case <-ctx.Done():
		case <-lost:
			c.log.Warn("leadership lost; waiting to lead again")
		}
		cancel()
		wg.Wait()
		c.leading.Store(false)
		release()
	}
}

// reap (leader) takes offline the computers of servers that stopped
// answering and forgets old signals.
func (c *cluster) reap(ctx context.Context) {
	every(ctx, serverStaleAge/3, func(now time.Time) {
		if n, err := c.db.ReapServers(ctx, now.Add(-serverStaleAge)); err != nil {
			c.log.Warn("reaping stopped servers", "err", err)
		} else if n > 0 {
			c.log.Info("marked computers of stopped servers offline", "computers", n)
		}
		if _, err := c.db.DeleteSignalsBefore(ctx, now.Add(-signalRetention)); err != nil {
			c.log.Warn("removing old signals", "err", err)
		}
	})
}

// every calls fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func(now time.Time)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			fn(now)
		}
	}
}

// post sends a signal to the other servers (nothing to do alone).
func (c *cluster) post(kind string, d signalData) {
	if !c.db.Shared() {
		return
	}
	b, _ := json.Marshal(d)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.db.PostSignal(ctx, &store.Signal{At: time.Now(), Origin: c.id, Kind: kind, Data: string(b)}); err != nil {
		c.log.Warn("signalling the other servers", "kind", kind, "err", err)
	}
}

// follow applies the other servers' signals as they appear.
func (c *cluster) follow(ctx context.Context) {
	start := time.Now() // signals from before the start were for the previous run
	every(ctx, signalPoll, func(now time.Time) {
		from := now.Add(-signalWindow)
		if from.Before(start) {
			from = start
		}
		sigs, err := c.db.SignalsSince(ctx, from)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("reading signals", "err", err)
			}
			return
		}
		for _, s := range sigs {
			if s.Origin == c.id || !c.firstSight(s.Seq, now) {
				continue
			}
			data, err := c.db.SignalData(ctx, s.Seq)
			if err != nil {
				c.log.Warn("reading a signal", "seq", s.Seq, "err", err)
				continue
			}
			var d signalData
			if err := json.Unmarshal([]byte(data), &d); err != nil {
				c.log.Warn("malformed signal", "seq", s.Seq, "kind", s.Kind, "err", err)
				continue
			}
			c.apply(s.Kind, d)
		}
		c.forget(now)
	})
}

func (c *cluster) firstSight(seq int64, now time.Time) bool {
	c.seenMu.Lock()
	defer c.seenMu.Unlock()
	if _, ok := c.seen[seq]; ok {
		return false
	}
	if c.seen == nil {
		c.seen = map[int64]time.Time{}
	}
	c.seen[seq] = now
	return true
}

func (c *cluster) forget(now time.Time) {
	c.seenMu.Lock()
	defer c.seenMu.Unlock()
	for seq, at := range c.seen {
		if now.Sub(at) > 2*signalWindow {
			delete(c.seen, seq)
		}
	}
}

func (c *cluster) apply(kind string, d signalData) {
	switch kind {
	case signalWake:
		c.hub.WakeMany(d.IDs, d.Reason)
	case signalDisconnect:
		for _, id := range d.IDs {
			c.hub.Disconnect(id)
		}
	case signalConfig:
		if c.pushConfig != nil {
			c.pushConfig(d.IDs)
		}
	case signalReevaluate:
		if c.leading.Load() && c.reevaluate != nil {
			c.reevaluate(d.Group)
		}
	case signalCancelRuns:
		for _, id := range d.IDs {
			c.hub.CancelRuns(id, d.Runs)
		}
	default:
		c.log.Warn("unknown signal kind (a newer server?)", "kind", kind)
	}
}

// clusterPresence is the hub as the API and server tasks see it: what
// concerns computers connected to another server sharing the store is
// passed on to it as a signal.
type clusterPresence struct {
	*Hub
	c *cluster
}

// Wake wakes a computer connected here, or asks the server it is
// connected to.
func (p clusterPresence) Wake(computerID, reason string) (string, error) {
	id, err := p.Hub.Wake(computerID, reason)
	if errcode.Of(err) != errcode.Unavailable || !p.c.db.Shared() {
		return id, err
	}
	row, lerr := p.c.db.ComputerByID(context.Background(), computerID)
	if lerr != nil || row.Status != store.StatusOnline || row.ServerID == p.c.id {
		return id, err
	}
	p.c.post(signalWake, signalData{IDs: []string{computerID}, Reason: reason})
	return uuid.NewString(), nil
}

// WakeMany wakes the computers connected here and asks the other servers
// to wake theirs; it returns how many are connected to any.
func (p clusterPresence) WakeMany(ids []string, reason string) int {
	n := p.Hub.WakeMany(ids, reason)
	if !p.c.db.Shared() || n == len(ids) {
		return n
	}
	elsewhere, err := p.c.db.OnlineElsewhere(context.Background(), p.c.id)
	if err != nil {
		p.c.log.Warn("finding computers connected to other servers", "err", err)
		return n
	}
	var fwd []string
	for _, id := range ids {
		if elsewhere[id] {
			fwd = append(fwd, id)
		}
	}
	if len(fwd) > 0 {
		p.c.post(signalWake, signalData{IDs: fwd, Reason: reason})
	}
	return n + len(fwd)
}

// Disconnect drops a computer's connections here and on the others.
func (p clusterPresence) Disconnect(computerID string) {
	p.Hub.Disconnect(computerID)
	p.c.post(signalDisconnect, signalData{IDs: []string{computerID}})
}

// CancelRuns tells the computer's agent, wherever it is connected.
func (p clusterPresence) CancelRuns(computerID string, runIDs []string) {
	p.Hub.CancelRuns(computerID, runIDs)
	p.c.post(signalCancelRuns, signalData{IDs: []string{computerID}, Runs: runIDs})
}

// clusterDynamicGroups asks the leader, which evaluates dynamic groups, to
// re-evaluate one.
type clusterDynamicGroups struct {
	*dyngroup.Evaluator
	c *cluster
}

func (d clusterDynamicGroups) Reevaluate(groupID string) {
	if d.c.leading.Load() {
		d.Evaluator.Reevaluate(groupID)
		return
	}
	d.c.post(signalReevaluate, signalData{Group: groupID})
}
