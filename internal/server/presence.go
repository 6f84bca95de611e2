package server

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

// presenceStore is what the hub needs from the store.
type presenceStore interface {
	ApplyPresence(ctx context.Context, ups []store.PresenceUpdate) error
}

// agentConn is one live Session stream.
type agentConn struct {
	computerID  string
	sessionID   string
	fingerprint string
	remote      string
	capability  uint32 // the agent's protocol capability (Hello)
	connectedAt time.Time
	lastSeen    atomic.Int64 // Unix ms of the last message received
	flushedSeen int64        // last value written to the store; flusher only
	cancel      context.CancelFunc
	drop        func() // closes the network connection under the stream

	sendMu sync.Mutex
	send   func(*agentproto.ServerMessage) error // gRPC stream Send; not concurrency-safe itself

	wakeBusy atomic.Bool // a WakeUp send is in flight (coalesces bursts)
	wakeAt   atomic.Int64
	wakeID   atomic.Pointer[string]
}

func (c *agentConn) touch(now time.Time) { c.lastSeen.Store(now.UnixMilli()) }

func (c *agentConn) sendMsg(m *agentproto.ServerMessage) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return c.send(m)
}

// Hub tracks which agents are connected. Presence is the connection: an
// agent is online while a Session stream is open. Status transitions are
// written in batches every PresenceFlush (default 1s) and last_seen every
// LastSeenFlush (default 10s), so no check-in writes to the store just to say
// "still here"; readers that need the live value ask the hub.
type Hub struct {
	store         presenceStore
	log           *slog.Logger
	metrics       *metrics
	presenceFlush time.Duration
	lastSeenFlush time.Duration
	wakeRate      int    // wake-ups pushed per second by WakeMany
	serverID      string // this server's id (cluster), written with status changes

	mu      sync.Mutex
	conns   map[string][]*agentConn // usually one per computer; more means a clone or a quick reconnect
	pending map[string]store.PresenceUpdate

	flushMu sync.Mutex // serialises flushes
}

func newHub(st presenceStore, log *slog.Logger, m *metrics, presenceFlush, lastSeenFlush time.Duration, wakeRate int) *Hub {
	return &Hub{
		store: st, log: log, metrics: m,
		presenceFlush: presenceFlush, lastSeenFlush: lastSeenFlush, wakeRate: wakeRate,
		conns:   map[string][]*agentConn{},
		pending: map[string]store.PresenceUpdate{},
	}
}

// attachResult tells the session what attaching found.
type attachResult struct {
	// cloneReason is set when this connection and another one for the same
	// computer come from different hardware at the same time.
	cloneReason string
}

// attach registers c. A second connection for the same computer from the same
// hardware replaces the first (a reconnect that beat the old connection's
// teardown); from different hardware both stay and the computer is a
// suspected clone.
func (h *Hub) attach(c *agentConn) attachResult {
	var res attachResult
	var kicked []*agentConn
	h.mu.Lock()
	existing := h.conns[c.computerID]
	kept := existing[:0:0]
	for _, o := range existing {
		if o.fingerprint == c.fingerprint {
			kicked = append(kicked, o)
			continue
		}
		res.cloneReason = "certificate in use from two machines at once (hardware " + short(o.fingerprint) + " and " + short(c.fingerprint) + ")"
		kept = append(kept, o)
	}
	h.conns[c.computerID] = append(kept, c)
	if len(kept) == 0 {
		h.pending[c.computerID] = store.PresenceUpdate{ComputerID: c.computerID, Status: store.StatusOnline, ServerID: h.serverID,
			LastSeen: c.connectedAt, ConnectedSince: c.connectedAt}
	}
	n := h.countLocked()
	h.mu.Unlock()
	h.metrics.connected.Set(float64(n))
	for _, o := range kicked {
		h.log.Info("replacing older connection of the same agent", "computer", c.computerID, "old_remote", o.remote, "new_remote", c.remote)
		o.cancel()
		if o.remote != c.remote {
			// A grpc-go handler blocked in Recv cannot be interrupted; closing
			// the old network connection ends it. When both streams share one
			// connection the old stream has already been reset by the agent.
			o.drop()
		}
	}
	return res
}

// reassert marks every connected computer online again at the next flush
// (after other servers took this one for dead and marked them offline).
func (h *Hub) reassert() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, conns := range h.conns {
		if len(conns) > 0 {
			c := conns[0]
			h.pending[id] = store.PresenceUpdate{ComputerID: id, Status: store.StatusOnline, ServerID: h.serverID,
				LastSeen: time.UnixMilli(c.lastSeen.Load()), ConnectedSince: c.connectedAt}
		}
	}
}

// detach removes c; the computer goes offline when it was the last one.
func (h *Hub) detach(c *agentConn) {
	h.mu.Lock()
	list := h.conns[c.computerID]
	found := false
	for i, o := range list {
		if o == c {
			list = append(list[:i:i], list[i+1:]...)
			found = true
			break
		}
	}
	if !found {
		h.mu.Unlock()
		return
	}
	if len(list) == 0 {
		delete(h.conns, c.computerID)
		h.pending[c.computerID] = store.PresenceUpdate{ComputerID: c.computerID, Status: store.StatusOffline, ServerID: h.serverID,
			LastSeen: time.UnixMilli(c.lastSeen.Load())}
	} else {
		h.conns[c.computerID] = list
	}
	n := h.countLocked()
	h.mu.Unlock()
	h.metrics.connected.Set(float64(n))
}

func (h *Hub) countLocked() int { return len(h.conns) }

// Connected returns the number of computers with an open connection.
func (h *Hub) Connected() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// Live returns whether a computer is connected to this server and when it
// was last heard from.
func (h *Hub) Live(computerID string) (online bool, lastSeen time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var last int64
	for _, c := range h.conns[computerID] {
		last = max(last, c.lastSeen.Load())
	}
	if last == 0 {
		return false, time.Time{}
	}
	return true, time.UnixMilli(last).UTC()
}

// Wake asks every connection of a computer to replicate now. It returns the
// wake-up id, or unavailable if the computer is not connected.
func (h *Hub) Wake(computerID, reason string) (string, error) {
	h.mu.Lock()
	conns := append([]*agentConn(nil), h.conns[computerID]...)
	h.mu.Unlock()
	if len(conns) == 0 {
		return "", errcode.New(errcode.Unavailable, "computer is not connected")
	}
	id := uuid.NewString()
	for _, c := range conns {
		h.sendWake(c, id, reason)
	}
	return id, nil
}

// WakeMany wakes the connected computers among ids and returns how many
// were connected. The pushes are paced at the hub's wake-up rate (default
// 10,000 per second) in the background, so the check-ins that answer them
// do not all arrive in the same instant.
func (h *Hub) WakeMany(ids []string, reason string) int {
	var targets []*agentConn
	h.mu.Lock()
	for _, id := range ids {
		targets = append(targets, h.conns[id]...)
	}
	h.mu.Unlock()
	if len(targets) == 0 {
		return 0
	}
	wakeID := uuid.NewString()
	h.metrics.wakeupsPending.Add(float64(len(targets)))
	go func() {
		const tick = 10 * time.Millisecond
		perTick := max(1, h.wakeRate/int(time.Second/tick))
		t := time.NewTicker(tick)
		defer t.Stop()
		for i := 0; i < len(targets); i += perTick {
			batch := targets[i:min(i+perTick, len(targets))]
			for _, c := range batch {
				h.sendWake(c, wakeID, reason)
			}
			h.metrics.wakeupsPending.Sub(float64(len(batch)))
			if i+perTick < len(targets) {
				<-t.C
			}
		}
	}()
	n := 0
	seen := map[string]bool{}
	for _, c := range targets {
		if !seen[c.computerID] {
			seen[c.computerID] = true
			n++
		}
	}
	return n
}

func (h *Hub) sendWake(c *agentConn, id, reason string) {
	if !c.wakeBusy.CompareAndSwap(false, true) {
		return // a wake-up is already on its way; the agent will replicate anyway
	}
	c.wakeID.Store(&id)
	c.wakeAt.Store(time.Now().UnixNano())
	go func() {
		defer c.wakeBusy.Store(false)
		msg := &agentproto.ServerMessage{Msg: &agentproto.ServerMessage_WakeUp{WakeUp: &agentproto.WakeUp{Id: id, Reason: reason}}}
		if err := c.sendMsg(msg); err != nil {
			h.log.Debug("wake-up not delivered", "computer", c.computerID, "err", err)
			return
		}
		h.metrics.wakeupsSent.Inc()
	}()
}

// wakeAnswered records the latency of a wake-up when a check-in answers it.
func (h *Hub) wakeAnswered(c *agentConn, id string, now time.Time) {
	p := c.wakeID.Load()
	if p == nil || *p != id {
		return
	}
	if c.wakeID.CompareAndSwap(p, nil) {
		h.metrics.wakeupLatency.Observe(now.Sub(time.Unix(0, c.wakeAt.Load())).Seconds())
	}
}

// run flushes presence until ctx ends, then flushes once more.
func (h *Hub) run(ctx context.Context) {
	pt := time.NewTicker(h.presenceFlush)
	defer pt.Stop()
	lt := time.NewTicker(h.lastSeenFlush)
	defer lt.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-pt.C:
			h.flush(ctx, false)
		case <-lt.C:
			h.flush(ctx, true)
		}
	}
}

// flush writes pending status transitions and, with seen, the last_seen of
// every connection that was heard from since the previous flush.
func (h *Hub) flush(ctx context.Context, seen bool) {
	h.flushMu.Lock()
	defer h.flushMu.Unlock()
	h.mu.Lock()
	ups := make([]store.PresenceUpdate, 0, len(h.pending))
	for _, u := range h.pending {
		ups = append(ups, u)
	}
	if len(h.pending) > 4096 {
		h.pending = map[string]store.PresenceUpdate{} // a cleared map keeps its buckets
	} else {
		clear(h.pending)
	}
	if seen {
		for id, list := range h.conns {
			for _, c := range list {
				if v := c.lastSeen.Load(); v > c.flushedSeen {
					c.flushedSeen = v
					ups = append(ups, store.PresenceUpdate{ComputerID: id, LastSeen: time.UnixMilli(v)})
				}
			}
		}
	}
	h.mu.Unlock()
	if len(ups) == 0 {
		return
	}
	if err := h.store.ApplyPresence(ctx, ups); err != nil {
		if ctx.Err() != nil {
			// Stopping: the shutdown's own flush writes them.
			h.log.Debug("presence write cut short by shutdown", "updates", len(ups))
		} else {
			h.log.Error("writing presence", "updates", len(ups), "err", err)
		}
		// Put status transitions back unless a newer one arrived meanwhile.
		h.mu.Lock()
		for _, u := range ups {
			if _, newer := h.pending[u.ComputerID]; !newer && u.Status != "" {
				h.pending[u.ComputerID] = u
			}
		}
		h.mu.Unlock()
		return
	}
	h.metrics.presenceWrites.Add(float64(len(ups)))
}

// returnPlan is when the agents of a server that stops on purpose come
// back: the first after After, then Rate per second.
type returnPlan struct {
	After time.Duration
	Rate  int
}

// hint is the i-th agent's time to come back.
func (p returnPlan) hint(i int) time.Duration {
	return p.After + time.Duration(i)*time.Second/time.Duration(p.Rate)
}

// leaveSenders bounds the hints being written at once: a send to an agent
// that reads nothing may block until the connection is dropped.
const leaveSenders = 64

// leave tells the connected agents (capability 3) that this server is
// stopping and when to come back, spread by plan in random order: after
// a restart they return at the rate the plan gives instead of all at once
// (when thousands return together, the listen queue overflows and the
// kernel drops their connections before any back-pressure can answer).
// It returns how many were told, once their sessions have ended (each
// agent ends its session on the hint) or ctx ends; closeAll drops the
// rest.
func (h *Hub) leave(ctx context.Context, plan returnPlan) int {
	h.mu.Lock()
	var tell []*agentConn
	untold := 0
	for _, list := range h.conns {
		all := true
		for _, c := range list {
			if c.capability >= 3 {
				tell = append(tell, c)
			} else {
				all = false // an older agent ignores the hint
			}
		}
		if !all {
			untold++
		}
	}
	h.mu.Unlock()
	if len(tell) == 0 {
		return 0
	}
	rand.Shuffle(len(tell), func(i, j int) { tell[i], tell[j] = tell[j], tell[i] })
	var told atomic.Int64
	next := make(chan int)
	sent := make(chan struct{})
	var wg sync.WaitGroup
	for range min(leaveSenders, len(tell)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				after := plan.hint(i)
				msg := &agentproto.ServerMessage{Msg: &agentproto.ServerMessage_RetryLater{RetryLater: &agentproto.RetryLater{
					RetryAfterMs: uint32(after / time.Millisecond), Reason: "server restarting"}}}
				if tell[i].sendMsg(msg) == nil {
					told.Add(1)
					h.metrics.retryAfter.Observe(after.Seconds())
				}
			}
		}()
	}
	go func() { wg.Wait(); close(sent) }()
feed:
	for i := range tell {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-sent:
			sent = nil // then wait for the sessions to end
		case <-t.C:
			done = sent == nil && h.Connected() <= untold
		}
	}
	return int(told.Load())
}

// closeAll ends every connection and records everyone offline for the
// next flush (shutdown).
func (h *Hub) closeAll() {
	h.mu.Lock()
	var all []*agentConn
	for _, list := range h.conns {
		all = append(all, list...)
	}
	h.mu.Unlock()
	for _, c := range all {
		c.cancel()
		c.drop()
		h.detach(c)
	}
}

func short(fp string) string {
	if len(fp) > 12 {
		return fp[:12]
	}
	return fp
}

// Disconnect ends every connection of a computer (after its certificate was
// revoked, for instance).
func (h *Hub) Disconnect(computerID string) {
	h.mu.Lock()
	conns := append([]*agentConn(nil), h.conns[computerID]...)
	h.mu.Unlock()
	for _, c := range conns {
		c.cancel()
		c.drop()
	}
}
