package matcher

import (
	"cmp"
	"encoding/binary"
	"slices"
)

// A lane is one q-gram automaton: it finds, in one pass over a buffer, the
// positions p (with p ≡ 0 mod s in absolute file offsets) whose q-gram is the
// j-th gram of some anchor, j < s. An anchor of width W = q+s-1 registers the
// grams at its offsets 0..s-1; any occurrence of the anchor contains exactly
// one aligned position among them, so every occurrence is reported exactly
// once while only 1/s of the positions are tested. The test is a bit filter
// (1-2 % false positives) followed by an exact probe-table lookup.
type lane struct {
	q, s    int
	bits    []uint64
	shift   uint32 // q=4: filter index = (gram*mul) >> shift
	table   []slot // open addressing by gram
	tmask   uint32
	entries []laneEntry
}

type laneSpec struct{ q, s int }

func (l laneSpec) width() int { return l.q + l.s - 1 }

// Lane planning. Every lane is one pass over the data testing 1/s of the
// positions, so the cost of a lane is ~1/s tests per byte whatever its size:
// few lanes with wide strides are what matters.
//
//   - long anchors (exact run >= 11): one q=4 lane with stride 8, one 4-byte
//     gram per stride position in a bit filter sized ~48 bits per gram;
//   - short anchors (run 2..10): one q=2 lane (a 64 Ki-bit, L1-resident filter)
//     whose stride is set by the shortest of them (run-1, at most 8); if it
//     would hold too many grams for a 16-bit filter, the anchors of 4+ bytes
//     move to a q=4 lane of stride (shortest run-3);
//   - single-byte anchors: a q=1 lane testing every byte.
const (
	longRun       = 11   // anchors at least this long use the long lane
	maxShortGrams = 4096 // q=2 lane capacity before it gets too unselective
)

// planLanes assigns each part (by its longest exact run) to a lane and
// returns the lanes' specs and each part's lane index.
func planLanes(longest []int) ([]laneSpec, []int) {
	var specs []laneSpec
	assign := make([]int, len(longest))
	add := func(spec laneSpec, pick func(r int) bool) {
		idx := -1
		for i, r := range longest {
			if pick(r) {
				if idx < 0 {
					idx = len(specs)
					specs = append(specs, spec)
				}
				assign[i] = idx
			}
		}
	}
	minOf := func(pick func(r int) bool) (m, n int) {
		m = 1 << 30
		for _, r := range longest {
			if pick(r) {
				m = min(m, r)
				n++
			}
		}
		return m, n
	}
	add(laneSpec{4, 8}, func(r int) bool { return r >= longRun })
	short := func(r int) bool { return r >= 2 && r < longRun }
	if m, n := minOf(short); n > 0 {
		s := min(8, m-1)
		if n*s > maxShortGrams && m >= 4 {
			mid := func(r int) bool { return r >= 4 && r < longRun }
			add(laneSpec{4, min(8, m-3)}, mid)
			tiny := func(r int) bool { return r >= 2 && r < 4 }
			if m2, n2 := minOf(tiny); n2 > 0 {
				add(laneSpec{2, m2 - 1}, tiny)
			}
		} else {
			add(laneSpec{2, s}, short)
		}
	}
	add(laneSpec{1, 1}, func(r int) bool { return r == 1 })
	return specs, assign
}

func (l laneSpec) grams(anchor []byte) []uint32 {
	g := make([]uint32, l.s)
	for j := range g {
		g[j] = gramAt(anchor, j, l.q)
	}
	return g
}

func gramAt(b []byte, i, q int) uint32 {
	switch q {
	case 4:
		return binary.LittleEndian.Uint32(b[i:])
	case 2:
		return uint32(binary.LittleEndian.Uint16(b[i:]))
	default:
		return uint32(b[i])
	}
}

type laneEntry struct {
	gram uint32
	part int32
	j    uint8
}

type slot struct {
	gram   uint32
	lo, hi uint32 // entries[lo:hi]; hi == 0 means empty
}

const gramMul = 0x9E3779B1

func newLane(spec laneSpec, es []laneEntry) *lane {
	l := &lane{q: spec.q, s: spec.s}
	sortEntries(es)
	l.entries = es
	var nbits int
	switch spec.q {
	case 4:
		nbits = 1 << 12
		for nbits < len(es)*48 && nbits < 1<<23 {
			nbits <<= 1
		}
		l.shift = uint32(32 - log2(nbits))
	case 2:
		nbits = 1 << 16
	default:
		nbits = 1 << 8
	}
	l.bits = make([]uint64, nbits/64)
	distinct := 0
	for i := range es {
		if i == 0 || es[i].gram != es[i-1].gram {
			distinct++
		}
		h := l.filterIndex(es[i].gram)
		l.bits[h>>6] |= 1 << (h & 63)
	}
	size := 8
	for size < distinct*2 {
		size <<= 1
	}
	l.table = make([]slot, size)
	l.tmask = uint32(size - 1)
	for i := 0; i < len(es); {
		j := i
		for j < len(es) && es[j].gram == es[i].gram {
			j++
		}
		h := (es[i].gram * gramMul) >> 7 & l.tmask
		for l.table[h].hi != 0 {
			h = (h + 1) & l.tmask
		}
		l.table[h] = slot{gram: es[i].gram, lo: uint32(i), hi: uint32(j)}
		i = j
	}
	return l
}

// sortEntries orders entries by (gram, part, j), packing them into integers
// for a fast sort when part ids fit in 24 bits.
func sortEntries(es []laneEntry) {
	if len(es) >= 1<<24 || len(es) == 0 {
		slices.SortFunc(es, cmpEntry)
		return
	}
	keys := make([]uint64, len(es))
	for i, e := range es {
		if e.part >= 1<<24 {
			slices.SortFunc(es, cmpEntry)
			return
		}
		keys[i] = uint64(e.gram)<<32 | uint64(e.part)<<8 | uint64(e.j)
	}
	slices.Sort(keys)
	for i, k := range keys {
		es[i] = laneEntry{gram: uint32(k >> 32), part: int32(k >> 8 & (1<<24 - 1)), j: uint8(k)}
	}
}

func cmpEntry(a, b laneEntry) int {
	switch {
	case a.gram != b.gram:
		return cmp.Compare(a.gram, b.gram)
	case a.part != b.part:
		return cmp.Compare(a.part, b.part)
	}
	return cmp.Compare(a.j, b.j)
}

func (l *lane) filterIndex(g uint32) uint32 {
	if l.q == 4 {
		return (g * gramMul) >> l.shift
	}
	return g
}

func (l *lane) lookup(g uint32) []laneEntry {
	h := (g * gramMul) >> 7 & l.tmask
	for {
		s := &l.table[h]
		if s.hi == 0 {
			return nil
		}
		if s.gram == g {
			return l.entries[s.lo:s.hi]
		}
		h = (h + 1) & l.tmask
	}
}

// hit is a filter hit: buffer position and gram.
type hit struct {
	p int
	g uint32
}

// scan appends the filter hits at aligned positions p in [from, to) of buf,
// where abs is the absolute offset of buf[0]. The caller guarantees
// to+q-1 <= len(buf).
func (l *lane) scan(buf []byte, from, to int, abs int64, out []hit) []hit {
	s := l.s
	p := from
	if r := int((abs + int64(from)) % int64(s)); r != 0 {
		p += s - r
	}
	if p >= to {
		return out
	}
	bitsv := l.bits
	switch l.q {
	case 4:
		sh := l.shift
		if to+3 > len(buf) {
			return out
		}
		b := buf[:to+3]
		for ; p < to; p += s {
			g := binary.LittleEndian.Uint32(b[p:])
			h := (g * gramMul) >> sh
			if bitsv[h>>6]&(1<<(h&63)) != 0 {
				out = append(out, hit{p, g})
			}
		}
	case 2:
		if to+1 > len(buf) {
			return out
		}
		b := buf[:to+1]
		for ; p < to; p += s {
			g := uint32(binary.LittleEndian.Uint16(b[p:]))
			if bitsv[g>>6]&(1<<(g&63)) != 0 {
				out = append(out, hit{p, g})
			}
		}
	default:
		for ; p < to; p++ {
			g := uint32(buf[p])
			if bitsv[g>>6]&(1<<(g&63)) != 0 {
				out = append(out, hit{p, g})
			}
		}
	}
	return out
}
