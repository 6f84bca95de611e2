package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/policy"
	"github.com/mamori/mamori/internal/store"
)

// capPushes is the capability that understands Configuration and TaskRuns.
const capPushes = 2

// pushable returns the connections of a computer that take pushes.
func (h *Hub) pushable(computerID string) []*agentConn {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*agentConn
	for _, c := range h.conns[computerID] {
		if c.capability >= capPushes {
			out = append(out, c)
		}
	}
	return out
}

// pushAsync sends m on c without blocking the caller (a slow agent must
// not hold up a dispatcher); a failed send is logged and the state the
// message carried is sent again when the agent reconnects.
func (h *Hub) pushAsync(c *agentConn, m *agentproto.ServerMessage, what string) {
	go func() {
		if err := c.sendMsg(m); err != nil {
			h.log.Debug("push not delivered", "what", what, "computer", c.computerID, "err", err)
			return
		}
		h.metrics.pushes.WithLabelValues(what).Inc()
	}()
}

// Deliver implements scheduler.Deliverer: it pushes runs to the computer's
// agent and reports whether it is connected (with a capable agent).
func (h *Hub) Deliver(computerID string, runs []*store.TaskRun) bool {
	conns := h.pushable(computerID)
	if len(conns) == 0 {
		return false
	}
	msg := &agentproto.TaskRuns{}
	for _, r := range runs {
		msg.Runs = append(msg.Runs, &agentproto.TaskRun{Id: r.ID, Type: r.Type, ParamsJson: []byte(r.Params),
			ExpiresUnixMs: r.ExpiresAt.UnixMilli(), Attempt: uint32(r.Attempt)})
	}
	for _, c := range conns {
		h.pushAsync(c, &agentproto.ServerMessage{Msg: &agentproto.ServerMessage_TaskRuns{TaskRuns: msg}}, "task_runs")
	}
	return true
}

// CancelRuns tells a connected agent that runs were cancelled.
func (h *Hub) CancelRuns(computerID string, runIDs []string) {
	for _, c := range h.pushable(computerID) {
		h.pushAsync(c, &agentproto.ServerMessage{Msg: &agentproto.ServerMessage_TaskRuns{TaskRuns: &agentproto.TaskRuns{Cancelled: runIDs}}}, "cancel")
	}
}

// Documents computes configuration documents (configs.Service).
type Documents interface {
	Documents(ctx context.Context, ids []string) (map[string]*policy.Document, error)
}

// RecordedVersions reads the configuration version recorded for a
// computer (store.DB).
type RecordedVersions interface {
	ConfigVersion(ctx context.Context, computerID string) (string, error)
}

// configPusher sends computers their configuration: when it changes
// (Changed, from the configuration service) and when an agent connects with
// another version than the server's. Changes are pushed in batches, paced
// at rate per second, so a policy change for every computer does not send
// twenty thousand messages — and get twenty thousand check-ins back — in
// the same instant.
type configPusher struct {
	docs     Documents
	versions RecordedVersions // nil: every connecting agent's document is computed
	hub      *Hub
	log      *slog.Logger
	rate     int
	queue    chan []string
	// changes counts Changed calls: a session whose set-up saw it move
	// reads its computer's recorded version again (onConnect).
	changes atomic.Uint64
}

func newConfigPusher(docs Documents, versions RecordedVersions, hub *Hub, log *slog.Logger, rate int) *configPusher {
	if rate <= 0 {
		rate = 2000
	}
	return &configPusher{docs: docs, versions: versions, hub: hub, log: log, rate: rate, queue: make(chan []string, 1024)}
}

// Changed queues computers whose configuration changed. It does not block
// for long: the service calls it after a recomputation.
func (p *configPusher) Changed(ids []string) {
	p.changes.Add(1)
	select {
	case p.queue <- ids:
	case <-time.After(5 * time.Second):
		p.log.Warn("configuration push queue full; connected agents get the change at their next connection", "computers", len(ids))
	}
}

// changesSeen is the count of Changed calls so far (0 for no pusher).
func (p *configPusher) changesSeen() uint64 {
	if p == nil {
		return 0
	}
	return p.changes.Load()
}

func configMessage(d *policy.Document) (*agentproto.ServerMessage, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	return &agentproto.ServerMessage{Msg: &agentproto.ServerMessage_Configuration{Configuration: &agentproto.Configuration{
		Version: d.Version, DocumentJson: b}}}, nil
}

// run pushes queued changes until ctx ends.
func (p *configPusher) run(ctx context.Context) {
	const tick = 10 * time.Millisecond
	perTick := max(1, p.rate/int(time.Second/tick))
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		var ids []string
		select {
		case <-ctx.Done():
			return
		case ids = <-p.queue:
		}
		// Only connected, capable agents get pushes; the others get the
		// configuration when they connect.
		var live []string
		for _, id := range ids {
			if len(p.hub.pushable(id)) > 0 {
				live = append(live, id)
			}
		}
		for start := 0; start < len(live); start += 500 {
			chunk := live[start:min(start+500, len(live))]
			docs, err := p.docs.Documents(ctx, chunk)
			if err != nil {
				if ctx.Err() == nil {
					p.log.Error("computing configurations to push", "err", err)
				}
				break
			}
			sent := 0
			for _, id := range chunk {
				d, ok := docs[id]
				if !ok {
					continue
				}
				msg, err := configMessage(d)
				if err != nil {
					p.log.Error("encoding a configuration", "computer", id, "err", err)
					continue
				}
				for _, c := range p.hub.pushable(id) {
					p.hub.pushAsync(c, msg, "configuration")
				}
				if sent++; sent%perTick == 0 {
					select {
					case <-ctx.Done():
						return
					case <-t.C:
					}
				}
			}
		}
	}
}

// onConnect pushes the configuration to a capable agent that announced
// another version than its current one.
//
// When the agent announces the version recorded for its computer, nothing
// is computed: every change of policies or groups is recomputed, recorded,
// and then pushed to the agents connected at that moment (configs.Service
// calls Changed after recording). The session read the recorded version
// with its computer (recorded), and the Changed count (seen) before that
// read; onConnect runs once the agent is in the hub. A change recorded
// after the read was either announced by Changed before now (the count
// moved: the version is read again) or will be pushed by Changed (the
// agent is in the hub). In a reconnect storm this skips computing
// thousands of documents that would all match, and reading thousands of
// versions again.
func (p *configPusher) onConnect(ctx context.Context, c *agentConn, agentVersion, recorded string, seen uint64) {
	if p == nil || c.capability < capPushes {
		return
	}
	if agentVersion != "" && p.changes.Load() != seen {
		recorded = ""
		if p.versions != nil {
			if v, err := p.versions.ConfigVersion(ctx, c.computerID); err == nil {
				recorded = v
			}
		}
	}
	if agentVersion != "" && agentVersion == recorded {
		return
	}
	docs, err := p.docs.Documents(ctx, []string{c.computerID})
	if err != nil {
		p.log.Error("computing a configuration", "computer", c.computerID, "err", err)
		return
	}
	d, ok := docs[c.computerID]
	if !ok || d.Version == agentVersion {
		return
	}
	msg, err := configMessage(d)
	if err != nil {
		return
	}
	p.hub.pushAsync(c, msg, "configuration")
}

// sessionStarted runs after a capable agent's Welcome: its configuration
// if it differs from the server's (recorded: the version read with the
// computer at set-up, after seen Changed calls), and the task runs waiting
// for it.
func (a *agentService) sessionStarted(ctx context.Context, c *agentConn, hello *agentproto.Hello, recorded string, seen uint64) {
	if c.capability < capPushes {
		return
	}
	if a.configs != nil {
		a.work.do(ctx, func() { a.configs.onConnect(ctx, c, hello.GetConfigVersion(), recorded, seen) })
	}
	if a.connected != nil {
		a.connected(c.computerID)
	}
}
