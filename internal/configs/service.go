package configs

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/mamori/mamori/internal/policy"
	"github.com/mamori/mamori/internal/store"
)

// Store is what the configuration service reads and writes.
type Store interface {
	Groups(ctx context.Context) (*store.GroupTree, error)
	ComputerByID(ctx context.Context, id string) (*store.Computer, error)
	ComputersByID(ctx context.Context, ids []string) (map[string]*store.Computer, error)
	ComputerIDs(ctx context.Context, groupIDs []string) ([]string, error)
	DynamicGroups(ctx context.Context) ([]*store.DynamicGroup, error)
	DynamicMembershipsOf(ctx context.Context, computerIDs []string) (map[string][]string, error)
	Policies(ctx context.Context) ([]*store.PolicyRow, error)
	PolicyAssignments(ctx context.Context, policyID string) ([]*store.PolicyAssignment, error)
	SetDesiredConfig(ctx context.Context, versions map[string]string) error
}

// Service computes computers' effective configurations from the store and
// tells whoever delivers them (the agent endpoint) which computers'
// configuration changed.
type Service struct {
	Store Store
	// Changed, when set, receives the computers whose configuration
	// version changed after Recompute.
	Changed func(computerIDs []string)
	// Leading, when set, reports whether this server leads the servers
	// sharing its store: only the leader follows dynamic group changes,
	// and Run leaves the first full pass to whoever starts leading (it
	// calls Queue(nil)). Unset: this server does both.
	Leading func() bool

	cacheMu  sync.Mutex
	cached   *world
	cachedAt time.Time

	mu      sync.Mutex
	all     bool
	pending map[string]bool
	once    sync.Once
	kick    chan struct{}
}

// world is everything ordering needs, loaded once.
type world struct {
	tree     *store.GroupTree
	dyn      []policy.DynGroup
	dynNames map[string]string
	policies map[string]*policy.Policy
	assigns  []policy.Assignment
}

func (s *Service) load(ctx context.Context) (*world, error) {
	w := &world{policies: map[string]*policy.Policy{}, dynNames: map[string]string{}}
	var err error
	if w.tree, err = s.Store.Groups(ctx); err != nil {
		return nil, err
	}
	dyns, err := s.Store.DynamicGroups(ctx)
	if err != nil {
		return nil, err
	}
	for _, d := range dyns {
		w.dyn = append(w.dyn, policy.DynGroup{ID: d.ID, Name: d.Name, StaticParentID: d.StaticParentID, DynamicParent: d.DynamicParentID})
		w.dynNames[d.ID] = d.Name
	}
	ps, err := s.Store.Policies(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		pol, err := FromRow(p)
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", p.ID, err)
		}
		w.policies[p.ID] = pol
	}
	as, err := s.Store.PolicyAssignments(ctx, "")
	if err != nil {
		return nil, err
	}
	for _, a := range as {
		name := a.TargetID
		switch a.TargetType {
		case policy.TargetStatic:
			if g, ok := w.tree.Get(a.TargetID); ok {
				name = g.Path
			}
		case policy.TargetDynamic:
			name = w.dynNames[a.TargetID]
		}
		w.assigns = append(w.assigns, policy.Assignment{ID: a.ID, PolicyID: a.PolicyID, TargetType: a.TargetType, TargetID: a.TargetID, TargetName: name, Rank: a.Rank})
	}
	return w, nil
}

// FromRow decodes a stored policy.
func FromRow(p *store.PolicyRow) (*policy.Policy, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(p.Settings), &raw); err != nil {
		return nil, err
	}
	settings, err := policy.ParseSettings(p.Product, raw)
	if err != nil {
		return nil, err
	}
	return &policy.Policy{ID: p.ID, Name: p.Name, Product: p.Product, Settings: settings}, nil
}

func (w *world) effective(c *store.Computer, memberOf []string) []policy.Effective {
	var path []string
	for g := c.GroupID; g != ""; {
		path = append([]string{g}, path...)
		gr, ok := w.tree.Get(g)
		if !ok || len(path) > 256 {
			break
		}
		g = gr.ParentID
	}
	member := map[string]bool{}
	for _, d := range memberOf {
		member[d] = true
	}
	assigns := make([]policy.Assignment, len(w.assigns))
	copy(assigns, w.assigns)
	for i := range assigns {
		if assigns[i].TargetType == policy.TargetComputer && assigns[i].TargetID == c.ID {
			assigns[i].TargetName = c.Name
		}
	}
	return policy.Compute(policy.Order(c.ID, path, w.dyn, member, assigns), w.policies)
}

// Effective returns a computer's effective configuration and the document
// its agent gets.
func (s *Service) Effective(ctx context.Context, computerID string) ([]policy.Effective, *policy.Document, error) {
	w, err := s.load(ctx)
	if err != nil {
		return nil, nil, err
	}
	c, err := s.Store.ComputerByID(ctx, computerID)
	if err != nil {
		return nil, nil, err
	}
	m, err := s.Store.DynamicMembershipsOf(ctx, []string{c.ID})
	if err != nil {
		return nil, nil, err
	}
	eff := w.effective(c, invert(m)[c.ID])
	return eff, policy.NewDocument(eff), nil
}

// invert turns group -> computers into computer -> groups.
func invert(m map[string][]string) map[string][]string {
	out := map[string][]string{}
	for g, cs := range m {
		for _, c := range cs {
			out[c] = append(out[c], g)
		}
	}
	return out
}

// worldTTL bounds how long Documents reuses loaded policies and groups
// (a crowd of agents reconnecting must not reload them each); changes made
// through the API invalidate them at once (Queue(nil)).
const worldTTL = 2 * time.Second

func (s *Service) cachedWorld(ctx context.Context) (*world, error) {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if s.cached != nil && time.Since(s.cachedAt) < worldTTL {
		return s.cached, nil
	}
	w, err := s.load(ctx)
	if err != nil {
		return nil, err
	}
	s.cached, s.cachedAt = w, time.Now()
	return w, nil
}

// Invalidate drops the loaded policies and groups: another server sharing
// the store changed them.
func (s *Service) Invalidate() { s.invalidate() }

func (s *Service) invalidate() {
	s.cacheMu.Lock()
	s.cached = nil
	s.cacheMu.Unlock()
}

// Documents returns the documents of the given computers (unknown ones
// are left out), loading policies and groups at most every two seconds.
func (s *Service) Documents(ctx context.Context, ids []string) (map[string]*policy.Document, error) {
	w, err := s.cachedWorld(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*policy.Document, len(ids))
	err = s.each(ctx, w, ids, func(c *store.Computer, d *policy.Document) { out[c.ID] = d })
	return out, err
}

// each computes the document of every computer of ids, 500 at a time.
func (s *Service) each(ctx context.Context, w *world, ids []string, f func(*store.Computer, *policy.Document)) error {
	for start := 0; start < len(ids); start += 500 {
		chunk := ids[start:min(start+500, len(ids))]
		m, err := s.Store.DynamicMembershipsOf(ctx, chunk)
		if err != nil {
			return err
		}
		memberOf := invert(m)
		cs, err := s.Store.ComputersByID(ctx, chunk)
		if err != nil {
			return err
		}
		for _, id := range chunk {
			if c, ok := cs[id]; ok { // absent: unknown, or gone meanwhile
				f(c, policy.NewDocument(w.effective(c, memberOf[id])))
			}
		}
	}
	return nil
}

// Recompute recomputes the configuration version of computers (nil: all),
// records it, and reports those whose version changed to Changed.
func (s *Service) Recompute(ctx context.Context, ids []string) error {
	w, err := s.load(ctx)
	if err != nil {
		return err
	}
	if ids == nil {
		if ids, err = s.Store.ComputerIDs(ctx, nil); err != nil {
			return err
		}
	}
	var changed []string
	versions := map[string]string{}
	flush := func() error {
		if len(versions) == 0 {
			return nil
		}
		err := s.Store.SetDesiredConfig(ctx, versions)
		versions = map[string]string{}
		return err
	}
	err = s.each(ctx, w, ids, func(c *store.Computer, d *policy.Document) {
		if d.Version != c.ConfigVersion {
			versions[c.ID] = d.Version
			changed = append(changed, c.ID)
		}
	})
	if err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	if len(changed) > 0 && s.Changed != nil {
		s.Changed(changed)
	}
	return nil
}

// Queue asks for a recomputation: of the given computers, or of all when
// ids is nil. It never blocks; Run does the work.
func (s *Service) Queue(ids []string) {
	if ids == nil {
		s.invalidate()
	}
	s.mu.Lock()
	if ids == nil {
		s.all = true
	} else {
		if s.pending == nil {
			s.pending = map[string]bool{}
		}
		for _, id := range ids {
			s.pending[id] = true
		}
	}
	s.mu.Unlock()
	s.wake()
}

func (s *Service) wake() {
	s.once.Do(func() { s.kick = make(chan struct{}, 1) })
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// EventStore gives Run the dynamic group membership changes.
type EventStore interface {
	ServerEventSeq(ctx context.Context) (int64, error)
	ServerEventsAfter(ctx context.Context, after int64, types []string, limit int) ([]store.ServerEvent, error)
}

// recomputeRetry is the wait before a failed recomputation is tried again.
const recomputeRetry = 5 * time.Second

// Run recomputes what was queued (coalescing bursts) and follows dynamic
// group membership changes, until ctx ends.
func (s *Service) Run(ctx context.Context, events EventStore, log interface{ Error(string, ...any) }) {
	s.wake()
	seq := s.lastSeq(ctx, events) // earlier changes are covered by the first full pass
	t := time.NewTicker(time.Second)
	defer t.Stop()
	if s.Leading == nil {
		s.Queue(nil) // the first pass covers everything
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s.Leading != nil && !s.Leading() {
				seq = s.lastSeq(ctx, events) // the leader follows them
				continue
			}
			for {
				evs, err := events.ServerEventsAfter(ctx, seq, []string{store.EventJoinedDynamicGroup, store.EventLeftDynamicGroup}, 1000)
				if err != nil || len(evs) == 0 {
					break
				}
				var ids []string
				for _, e := range evs {
					ids = append(ids, e.ComputerID)
					seq = e.Seq
				}
				s.Queue(ids)
			}
		case <-s.kick:
			time.Sleep(100 * time.Millisecond) // let a burst of edits settle
			s.mu.Lock()
			all, ids := s.all, make([]string, 0, len(s.pending))
			for id := range s.pending {
				ids = append(ids, id)
			}
			s.all, s.pending = false, nil
			s.mu.Unlock()
			if all {
				ids = nil
			} else if len(ids) == 0 {
				continue
			}
			if err := s.Recompute(ctx, ids); err != nil && ctx.Err() == nil {
				// Try again later: connecting agents are only sent what
				// was recorded (the server's configPusher).
				log.Error("recomputing configurations; retrying in 5s", "err", err)
				time.AfterFunc(recomputeRetry, func() {
					if ctx.Err() == nil {
						s.Queue(ids)
					}
				})
			}
		}
	}
}

func (s *Service) lastSeq(ctx context.Context, events EventStore) int64 {
	seq, _ := events.ServerEventSeq(ctx)
	return seq
}
