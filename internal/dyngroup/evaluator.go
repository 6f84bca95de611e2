package dyngroup

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/mamori/mamori/internal/store"
)

// Store is what the evaluator needs.
type Store interface {
	Groups(ctx context.Context) (*store.GroupTree, error)
	DynamicGroupDefinitions(ctx context.Context) ([]*store.DynamicGroup, error)
	ChangedComputers(ctx context.Context, seq int64, limit int) ([]string, int64, error)
	ComputersForEvaluation(ctx context.Context, afterID string, limit int, ids []string, sections []string) ([]store.EvalRow, error)
	DynamicGroupMembers(ctx context.Context, groupID string) ([]string, error)
	DynamicMembershipsOf(ctx context.Context, computerIDs []string) (map[string][]string, error)
	ApplyMembership(ctx context.Context, groupID string, added, removed []string, now time.Time) error
}

// Evaluator keeps dynamic group membership current on the server:
// computers that changed are re-evaluated within a second (incrementally:
// only them), a group whose template changed is re-evaluated in the
// background, and groups whose rules depend on time (last seen, engine age)
// are re-evaluated periodically.
//
// Lifecycle: construct, Run(ctx) until ctx ends; Reevaluate and Preview are
// safe to call concurrently.
type Evaluator struct {
	Store Store
	Log   *slog.Logger
	Now   func() time.Time
	// Interval between incremental passes; default 1s.
	Interval time.Duration
	// TimeRulesEvery re-evaluates groups with time-based rules; default 5m.
	TimeRulesEvery time.Duration

	once   sync.Once
	kick   chan struct{}
	mu     sync.Mutex
	queued map[string]bool // groups waiting for a full pass
	seq    int64
}

const batch = 500

func (e *Evaluator) init() {
	e.once.Do(func() {
		e.kick = make(chan struct{}, 1)
		e.queued = map[string]bool{}
		if e.Interval == 0 {
			e.Interval = time.Second
		}
		if e.TimeRulesEvery == 0 {
			e.TimeRulesEvery = 5 * time.Minute
		}
		if e.Now == nil {
			e.Now = time.Now
		}
		if e.Log == nil {
			e.Log = slog.Default()
		}
	})
}

// Reevaluate queues a full pass of a group (after its template changed).
func (e *Evaluator) Reevaluate(groupID string) {
	e.init()
	e.mu.Lock()
	e.queued[groupID] = true
	e.mu.Unlock()
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Run evaluates until ctx ends: first every group in full, then
// incrementally.
func (e *Evaluator) Run(ctx context.Context) {
	e.init()
	// Changes made before the start are covered by the first full pass.
	e.seq = e.currentSeq(ctx)
	if err := e.full(ctx, nil); err != nil && ctx.Err() == nil {
		e.Log.Error("dynamic groups: first evaluation", "err", err)
	}
	tick := time.NewTicker(e.Interval)
	defer tick.Stop()
	timeRules := time.NewTicker(e.TimeRulesEvery)
	defer timeRules.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := e.incremental(ctx); err != nil && ctx.Err() == nil {
				e.Log.Error("dynamic groups: incremental evaluation", "err", err)
			}
		case <-e.kick:
			e.settle(ctx) // a burst of template changes makes one pass
			e.mu.Lock()
			ids := make([]string, 0, len(e.queued))
			for id := range e.queued {
				ids = append(ids, id)
			}
			clear(e.queued)
			e.mu.Unlock()
			if err := e.full(ctx, ids); err != nil && ctx.Err() == nil {
				e.Log.Error("dynamic groups: re-evaluation", "groups", len(ids), "err", err)
			}
		case <-timeRules.C:
			if err := e.full(ctx, e.timeGroups(ctx)); err != nil && ctx.Err() == nil {
				e.Log.Error("dynamic groups: time-based evaluation", "err", err)
			}
		}
	}
}

// settle waits until no group was queued for 300 ms (5 s at most), so
// that templates changed one after another are evaluated in one pass.
func (e *Evaluator) settle(ctx context.Context) {
	limit := time.NewTimer(5 * time.Second)
	defer limit.Stop()
	quiet := time.NewTimer(300 * time.Millisecond)
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-limit.C:
			return
		case <-quiet.C:
			return
		case <-e.kick:
			quiet.Reset(300 * time.Millisecond)
		}
	}
}

func (e *Evaluator) currentSeq(ctx context.Context) int64 {
	var seq int64
	for {
		ids, next, err := e.Store.ChangedComputers(ctx, seq, 10000)
		if err != nil || len(ids) == 0 {
			return seq
		}
		seq = next
	}
}

func (e *Evaluator) timeGroups(ctx context.Context) []string {
	gs, err := e.load(ctx)
	if err != nil {
		return nil
	}
	var out []string
	for _, g := range gs {
		if g.tpl.UsesTime() {
			out = append(out, g.ID)
		}
	}
	return out
}

// group is a dynamic group with its parsed template.
type group struct {
	*store.DynamicGroup
	tpl *Template
}

// load returns the groups with valid templates, parents before children.
func (e *Evaluator) load(ctx context.Context) ([]*group, error) {
	all, err := e.Store.DynamicGroupDefinitions(ctx)
	if err != nil {
		return nil, err
	}
	byID := map[string]*group{}
	for _, g := range all {
		tpl, err := Parse([]byte(g.Template))
		if err != nil {
			e.Log.Error("dynamic group has an invalid template; not evaluated", "group", g.ID, "err", err)
			continue
		}
		byID[g.ID] = &group{g, tpl}
	}
	var out []*group
	done := map[string]bool{}
	var visit func(g *group, depth int)
	visit = func(g *group, depth int) {
		if done[g.ID] || depth > 64 {
			return
		}
		if p, ok := byID[g.DynamicParentID]; ok {
			visit(p, depth+1)
		} else if g.DynamicParentID != "" {
			return // parent invalid or missing: cannot evaluate
		}
		done[g.ID] = true
		out = append(out, g)
	}
	for _, g := range all {
		if gg, ok := byID[g.ID]; ok {
			visit(gg, 0)
		}
	}
	return out, nil
}

// match computes, for the computers in rows, the target groups each
// belongs to; groups outside targets contribute their stored membership
// (as scope for their dynamic children).
func (e *Evaluator) match(ctx context.Context, groups []*group, targets map[string]bool, tree *store.GroupTree, rows []store.EvalRow,
	stored map[string]map[string]bool, now time.Time) (map[string][]string, error) {
	out := map[string][]string{}
	for _, r := range rows {
		f := NewFacts(r.Computer, r.Tags, r.Sections, now)
		in := map[string]bool{}
		for _, g := range groups {
			var scoped bool
			if g.StaticParentID != "" {
				scoped = tree.IsWithin(r.Computer.GroupID, g.StaticParentID)
			} else if targets[g.DynamicParentID] {
				scoped = in[g.DynamicParentID]
			} else {
				scoped = stored[g.DynamicParentID][r.Computer.ID]
			}
			if !targets[g.ID] {
				continue
			}
			if scoped && g.tpl.Matches(f, now) {
				in[g.ID] = true
				out[g.ID] = append(out[g.ID], r.Computer.ID)
			}
		}
	}
	return out, nil
}

// plan expands ids (nil: all groups) with their dynamic descendants and
// returns the groups, the targets, the sections to read and the stored
// membership of non-target parents.
func (e *Evaluator) plan(ctx context.Context, ids []string) ([]*group, map[string]bool, []string, map[string]map[string]bool, error) {
	groups, err := e.load(ctx)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	targets := map[string]bool{}
	for _, g := range groups {
		if ids == nil || slices.Contains(ids, g.ID) || targets[g.DynamicParentID] {
			targets[g.ID] = true
		}
	}
	secs := map[string]bool{}
	stored := map[string]map[string]bool{}
	for _, g := range groups {
		if !targets[g.ID] {
			continue
		}
		for s := range g.tpl.Sections() {
			secs[s] = true
		}
		if p := g.DynamicParentID; p != "" && !targets[p] && stored[p] == nil {
			m, err := e.Store.DynamicGroupMembers(ctx, p)
			if err != nil {
				return nil, nil, nil, nil, err
			}
			stored[p] = map[string]bool{}
			for _, c := range m {
				stored[p][c] = true
			}
		}
	}
	sections := make([]string, 0, len(secs))
	for s := range secs {
		sections = append(sections, s)
	}
	slices.Sort(sections)
	return groups, targets, sections, stored, nil
}

// full re-evaluates the given groups (nil: all) over every computer.
func (e *Evaluator) full(ctx context.Context, ids []string) error {
	if ids != nil && len(ids) == 0 {
		return nil
	}
	groups, targets, sections, stored, err := e.plan(ctx, ids)
	if err != nil || len(targets) == 0 {
		return err
	}
	tree, err := e.Store.Groups(ctx)
	if err != nil {
		return err
	}
	now := e.Now()
	next := map[string]map[string]bool{}
	for id := range targets {
		next[id] = map[string]bool{}
	}
	after := ""
	for {
		rows, err := e.Store.ComputersForEvaluation(ctx, after, batch, nil, sections)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			break
		}
		m, err := e.match(ctx, groups, targets, tree, rows, stored, now)
		if err != nil {
			return err
		}
		for g, cs := range m {
			for _, c := range cs {
				next[g][c] = true
			}
		}
		after = rows[len(rows)-1].Computer.ID
	}
	for _, g := range groups { // parents first: children's events follow
		if !targets[g.ID] {
			continue
		}
		cur, err := e.Store.DynamicGroupMembers(ctx, g.ID)
		if err != nil {
			return err
		}
		if err := e.apply(ctx, g.ID, cur, next[g.ID], nil, now); err != nil {
			return err
		}
	}
	return nil
}

// incremental re-evaluates the computers changed since the last pass.
func (e *Evaluator) incremental(ctx context.Context) error {
	for {
		ids, seq, err := e.Store.ChangedComputers(ctx, e.seq, batch)
		if err != nil || len(ids) == 0 {
			return err
		}
		if err := e.evaluateComputers(ctx, ids); err != nil {
			return err
		}
		e.seq = seq
	}
}

func (e *Evaluator) evaluateComputers(ctx context.Context, ids []string) error {
	groups, targets, sections, stored, err := e.plan(ctx, nil)
	if err != nil || len(groups) == 0 {
		return err
	}
	tree, err := e.Store.Groups(ctx)
	if err != nil {
		return err
	}
	rows, err := e.Store.ComputersForEvaluation(ctx, "", len(ids), ids, sections)
	if err != nil {
		return err
	}
	now := e.Now()
	m, err := e.match(ctx, groups, targets, tree, rows, stored, now)
	if err != nil {
		return err
	}
	scope := map[string]bool{}
	for _, id := range ids {
		scope[id] = true // revoked or deleted computers are in ids but not in rows: they leave every group
	}
	current, err := e.Store.DynamicMembershipsOf(ctx, ids)
	if err != nil {
		return err
	}
	for _, g := range groups {
		cur := current[g.ID]
		next := map[string]bool{}
		for _, c := range m[g.ID] {
			next[c] = true
		}
		if err := e.apply(ctx, g.ID, cur, next, scope, now); err != nil {
			return err
		}
	}
	return nil
}

// apply writes the difference between the current members and next,
// limited to computers in scope (nil: all).
func (e *Evaluator) apply(ctx context.Context, groupID string, cur []string, next map[string]bool, scope map[string]bool, now time.Time) error {
	have := map[string]bool{}
	var removed, added []string
	for _, c := range cur {
		have[c] = true
		if (scope == nil || scope[c]) && !next[c] {
			removed = append(removed, c)
		}
	}
	for c := range next {
		if !have[c] {
			added = append(added, c)
		}
	}
	if len(added) == 0 && len(removed) == 0 && scope != nil {
		return nil
	}
	slices.Sort(added)
	return e.Store.ApplyMembership(ctx, groupID, added, removed, now)
}

// Preview returns the computers a template would select under a static
// parent (or a dynamic parent, using its current members), without saving.
func (e *Evaluator) Preview(ctx context.Context, staticParent, dynamicParent string, tpl *Template) ([]string, error) {
	e.init()
	tree, err := e.Store.Groups(ctx)
	if err != nil {
		return nil, err
	}
	var parentMembers map[string]bool
	if dynamicParent != "" {
		m, err := e.Store.DynamicGroupMembers(ctx, dynamicParent)
		if err != nil {
			return nil, err
		}
		parentMembers = map[string]bool{}
		for _, c := range m {
			parentMembers[c] = true
		}
	}
	secs := []string{}
	for s := range tpl.Sections() {
		secs = append(secs, s)
	}
	now := e.Now()
	out := []string{}
	after := ""
	for {
		rows, err := e.Store.ComputersForEvaluation(ctx, after, batch, nil, secs)
		if err != nil {
			return nil, err
		}
		if len(rows) == 0 {
			return out, nil
		}
		for _, r := range rows {
			in := parentMembers[r.Computer.ID]
			if staticParent != "" {
				in = tree.IsWithin(r.Computer.GroupID, staticParent)
			}
			if in && tpl.Matches(NewFacts(r.Computer, r.Tags, r.Sections, now), now) {
				out = append(out, r.Computer.ID)
			}
		}
		after = rows[len(rows)-1].Computer.ID
	}
}
