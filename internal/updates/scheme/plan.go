package scheme

import (
	"fmt"
	"sort"

	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/engine/signature"
)

// Edge is a delta target a client could download.
type Edge struct {
	From, To uint64
	Path     string
	Length   int64 // compressed bytes (what is downloaded)
}

// Plan returns the cheapest chain (by downloaded bytes, then by number of
// deltas) of at most maxHops deltas from version from to version to, and its
// total length. ok is false when no such chain exists. Edges must go
// forward (From < To); others are ignored.
func Plan(edges []Edge, from, to uint64, maxHops int) (chain []Edge, total int64, ok bool) {
	if from >= to || maxHops <= 0 {
		return nil, 0, false
	}
	type state struct {
		cost int64
		hops int
		prev int // index into edges of the last edge, -1 for the start
		back *state
	}
	// best[v] after k rounds: the cheapest way to reach v with ≤ k hops.
	best := map[uint64]*state{from: {prev: -1}}
	sorted := make([]int, 0, len(edges))
	for i, e := range edges {
		if e.From < e.To && e.Length >= 0 && e.From >= from && e.To <= to {
			sorted = append(sorted, i)
		}
	}
	sort.Slice(sorted, func(a, b int) bool {
		ea, eb := edges[sorted[a]], edges[sorted[b]]
		if ea.From != eb.From {
			return ea.From < eb.From
		}
		if ea.To != eb.To {
			return ea.To < eb.To
		}
		return ea.Path < eb.Path
	})
	for k := 0; k < maxHops; k++ {
		next := make(map[uint64]*state, len(best))
		for v, s := range best {
			next[v] = s
		}
		for _, i := range sorted {
			e := edges[i]
			s, ok := best[e.From]
			if !ok {
				continue
			}
			c := &state{cost: s.cost + e.Length, hops: s.hops + 1, prev: i, back: s}
			if cur, ok := next[e.To]; !ok || c.cost < cur.cost || (c.cost == cur.cost && c.hops < cur.hops) {
				next[e.To] = c
			}
		}
		best = next
	}
	end, ok := best[to]
	if !ok || end.prev < 0 {
		return nil, 0, false
	}
	for s := end; s.prev >= 0; s = s.back {
		chain = append(chain, edges[s.prev])
	}
	for l, r := 0, len(chain)-1; l < r; l, r = l+1, r-1 {
		chain[l], chain[r] = chain[r], chain[l]
	}
	return chain, end.cost, true
}

// Net accumulates consecutive deltas into one net delta: records added and
// later removed (or removed and later added back) cancel out. The zero value
// is not usable; start with NewNet.
type Net struct {
	from, to uint64
	added    map[string]signature.Record
	removed  map[string]struct{}
}

// NewNet starts an empty net delta at version v.
func NewNet(v uint64) *Net {
	return &Net{from: v, to: v, added: map[string]signature.Record{}, removed: map[string]struct{}{}}
}

// From and To are the versions the net delta spans.
func (n *Net) From() uint64 { return n.from }

// To is the version the net delta leads to.
func (n *Net) To() uint64 { return n.to }

// Append adds a later delta (n.To → d.To).
func (n *Net) Append(d enginedb.Delta) error {
	if d.From != n.to {
		return fmt.Errorf("delta %d->%d does not follow %d->%d", d.From, d.To, n.from, n.to)
	}
	for _, k := range d.Removed {
		if _, ok := n.added[k]; ok {
			delete(n.added, k)
			continue
		}
		if _, ok := n.removed[k]; ok {
			return fmt.Errorf("delta %d->%d removes %q twice", d.From, d.To, k)
		}
		n.removed[k] = struct{}{}
	}
	for _, r := range d.Added {
		k := r.Key()
		if _, ok := n.removed[k]; ok {
			delete(n.removed, k)
			continue
		}
		if _, ok := n.added[k]; ok {
			return fmt.Errorf("delta %d->%d adds %q twice", d.From, d.To, k)
		}
		n.added[k] = r
	}
	n.to = d.To
	return nil
}

// Prepend adds an earlier delta (d.From → n.From).
func (n *Net) Prepend(d enginedb.Delta) error {
	if d.To != n.from {
		return fmt.Errorf("delta %d->%d does not precede %d->%d", d.From, d.To, n.from, n.to)
	}
	for _, k := range d.Removed {
		if _, ok := n.added[k]; ok { // removed, then added back: no change
			delete(n.added, k)
			continue
		}
		if _, ok := n.removed[k]; ok {
			return fmt.Errorf("delta %d->%d removes %q twice", d.From, d.To, k)
		}
		n.removed[k] = struct{}{}
	}
	for _, r := range d.Added {
		k := r.Key()
		if _, ok := n.removed[k]; ok { // added, then removed: no change
			delete(n.removed, k)
			continue
		}
		if _, ok := n.added[k]; ok {
			return fmt.Errorf("delta %d->%d adds %q twice", d.From, d.To, k)
		}
		n.added[k] = r
	}
	n.from = d.From
	return nil
}

// Delta returns the net delta in enginedb's canonical (sorted) form.
func (n *Net) Delta() enginedb.Delta {
	d := enginedb.Delta{From: n.from, To: n.to}
	for k := range n.removed {
		d.Removed = append(d.Removed, k)
	}
	sort.Strings(d.Removed)
	keys := make([]string, 0, len(n.added))
	for k := range n.added {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		d.Added = append(d.Added, n.added[k])
	}
	return d
}

// Compose returns the net delta of a followed by b.
func Compose(a, b enginedb.Delta) (enginedb.Delta, error) {
	n := NewNet(a.From)
	if err := n.Append(a); err != nil {
		return enginedb.Delta{}, err
	}
	if err := n.Append(b); err != nil {
		return enginedb.Delta{}, err
	}
	return n.Delta(), nil
}
