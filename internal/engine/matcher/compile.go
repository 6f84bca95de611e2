// Package matcher is the compiled detection engine: a size-indexed hash
// matcher and a multi-pattern body matcher, driven by a streaming per-file
// Scanner that reads each byte once.
//
// Body patterns are split into parts at unbounded gaps ("*", "{n-}"). Each
// part gets one anchor: the rarest window of exact bytes among its longest
// literal runs. Anchors are found by a q-gram automaton (see lane.go): every
// anchor of length W registers its W-3 four-byte grams in a bit filter and a
// probe table, and the scan tests only every s-th position (s = W-3 ≤ 8),
// which still sees every occurrence exactly once. A hit is checked against the
// whole anchor and then verified by matching the part's prefix backwards and
// suffix forwards inside a bounded window (position-set simulation, so
// wildcards, ranges and alternatives never backtrack exponentially).
// Multi-part patterns keep, per file, the earliest end of each part matched
// in order, which decides "P1 * P2 * ..." exactly in one pass.
package matcher

import (
	"fmt"
	"math/bits"
	"os"
	"sort"

	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/engine/signature"
)

// hash algorithm bits in size masks.
const (
	algMD5 uint8 = 1 << iota
	algSHA1
	algSHA256
)

// Engine is a compiled engine database, safe for concurrent use by many
// Scanners.
type Engine struct {
	db      *enginedb.DB
	version uint64

	sizeMask map[int64]uint8 // algorithms needed for files of that size
	anyMask  uint8           // algorithms with "*"-size entries

	pats   []cpat
	parts  []cpart
	lanes  []*lane
	hist   int // bytes kept before a candidate anchor start
	look   int // bytes needed from a candidate anchor start
	nState int // multi-part state slots
	hasEOF bool
}

type cpat struct {
	name      string
	off       signature.Offset
	firstPart int32
	nparts    int32
	state     int32 // first state slot (multi-part patterns)
}

type cpart struct {
	pat     int32
	idx     int32
	anchor  []byte
	pre     []elem // reversed: matched backwards from the anchor start
	post    []elem // matched forwards from the anchor end
	preMax  int
	postMax int
	gapMin  int64
	simple  bool // single-part, no prefix/suffix, offset "*": the anchor is the match
}

type elemKind uint8

const (
	eLit elemKind = iota + 1
	eMasked
	eGap
	eAlt
)

type elem struct {
	kind   elemKind
	lit    []byte
	bm     []signature.ByteMatch
	min    int
	max    int
	alts   [][]signature.ByteMatch
	neg    bool
	negLen int
}

// LoadFile loads and compiles an engine database file.
func LoadFile(path string) (*Engine, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	e, err := Load(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return e, nil
}

// Load loads and compiles engine database bytes.
func Load(data []byte) (*Engine, error) {
	db, err := enginedb.Load(data)
	if err != nil {
		return nil, err
	}
	return Compile(db)
}

// Compile builds the matching structures for a loaded database.
func Compile(db *enginedb.DB) (*Engine, error) {
	e := &Engine{db: db, version: db.Version(), sizeMask: map[int64]uint8{}}
	for _, t := range []signature.Type{signature.TypeMD5, signature.TypeSHA1, signature.TypeSHA256,
		signature.TypeAllowMD5, signature.TypeAllowSHA1, signature.TypeAllowSHA256} {
		h := db.Hashes(t)
		bit := algBit(t)
		for i, n := 0, h.Len(); i < n; i++ {
			if s := h.Size(i); s == signature.AnySize {
				e.anyMask |= bit
			} else {
				e.sizeMask[s] |= bit
			}
		}
	}
	type pending struct {
		part    signature.Part
		longest int
	}
	var todo []pending
	for _, br := range db.Body() {
		if br.Target != 0 {
			return nil, fmt.Errorf("body signature %q: target type %d is not supported", db.Name(br.NameID), br.Target)
		}
		p, err := signature.ParsePattern(br.Pattern)
		if err != nil {
			return nil, fmt.Errorf("body signature %q: %v", db.Name(br.NameID), err)
		}
		pi := int32(len(e.pats))
		parts := p.Parts()
		cp := cpat{name: db.Name(br.NameID), off: br.Offset, firstPart: int32(len(e.parts)), nparts: int32(len(parts))}
		if len(parts) > 1 {
			cp.state = int32(e.nState)
			e.nState += len(parts)
		}
		if br.Offset.Kind == signature.OffsetEOF {
			e.hasEOF = true
		}
		e.pats = append(e.pats, cp)
		for k, part := range parts {
			e.parts = append(e.parts, cpart{pat: pi, idx: int32(k), gapMin: int64(part.GapMin)})
			todo = append(todo, pending{part, longestRun(part.Nodes)})
		}
	}
	longest := make([]int, len(todo))
	for i, t := range todo {
		longest[i] = t.longest
	}
	specs, assign := planLanes(longest)
	entries := make([][]laneEntry, len(specs))
	for i, t := range todo {
		li := assign[i]
		cpt := &e.parts[i]
		anchorPart(cpt, t.part, specs[li].width())
		pat := &e.pats[cpt.pat]
		cpt.simple = pat.nparts == 1 && len(cpt.pre) == 0 && len(cpt.post) == 0 && pat.off.Kind == signature.OffsetAny
		for j, g := range specs[li].grams(cpt.anchor) {
			entries[li] = append(entries[li], laneEntry{gram: g, part: int32(i), j: uint8(j)})
		}
		e.hist = max(e.hist, cpt.preMax)
		e.look = max(e.look, len(cpt.anchor)+cpt.postMax)
	}
	for li, es := range entries {
		if len(es) > 0 {
			e.lanes = append(e.lanes, newLane(specs[li], es))
		}
	}
	e.hist += 16 // anchor offsets within a stride, plus slack
	e.look = max(e.look, 8)
	return e, nil
}

func algBit(t signature.Type) uint8 {
	switch t {
	case signature.TypeMD5, signature.TypeAllowMD5:
		return algMD5
	case signature.TypeSHA1, signature.TypeAllowSHA1:
		return algSHA1
	case signature.TypeSHA256, signature.TypeAllowSHA256:
		return algSHA256
	}
	return 0
}

// Version is the engine version.
func (e *Engine) Version() uint64 { return e.version }

// DB is the underlying database.
func (e *Engine) DB() *enginedb.DB { return e.db }

// HasEOFSignatures reports whether some body signature is anchored to the end
// of the file, so scanning a stream needs its size up front.
func (e *Engine) HasEOFSignatures() bool { return e.hasEOF }

// MaxSpan is the largest window the body matcher keeps around a candidate
// (bytes before + after), a property of the loaded signatures.
func (e *Engine) MaxSpan() int { return e.hist + e.look }

// byteCost estimates how common a byte is in ordinary files; anchors are
// chosen to minimize the summed cost.
var byteCost = func() (c [256]int) {
	for i := range c {
		switch {
		case i == 0x00:
			c[i] = 12
		case i == 0xff:
			c[i] = 7
		case i == ' ' || i == '\n' || i == '\r' || i == '\t':
			c[i] = 6
		case i >= 'a' && i <= 'z', i >= '0' && i <= '9':
			c[i] = 4
		case i >= 0x21 && i < 0x7f:
			c[i] = 3
		case i == 0x90 || i == 0xcc || i == 0x01 || i == 0x80:
			c[i] = 3
		default:
			c[i] = 1
		}
	}
	return
}()

// longestRun is the length of the longest run of exact bytes in nodes.
func longestRun(nodes []signature.Node) int {
	best := 0
	for _, n := range nodes {
		if n.Kind != signature.NodeBytes {
			continue
		}
		cur := 0
		for _, b := range n.Bytes {
			if b.Mask == 0xff {
				cur++
				best = max(best, cur)
			} else {
				cur = 0
			}
		}
	}
	return best
}

// anchorPart chooses the cheapest window of w exact bytes as the part's
// anchor and splits the part around it.
func anchorPart(cp *cpart, part signature.Part, w int) {
	nodes := part.Nodes
	bestNode, bestStart, bestCost := -1, 0, int(^uint(0)>>1)
	for ni, n := range nodes {
		if n.Kind != signature.NodeBytes {
			continue
		}
		bs := n.Bytes
		for s := 0; s+w <= len(bs); s++ {
			cost, ok := 0, true
			for k := s; k < s+w; k++ {
				if bs[k].Mask != 0xff {
					ok = false
					break
				}
				cost += byteCost[bs[k].Value]
				if k > s && bs[k].Value == bs[k-1].Value {
					cost += 8
				}
			}
			if ok && cost < bestCost {
				bestNode, bestStart, bestCost = ni, s, cost
			}
		}
	}
	an := nodes[bestNode].Bytes
	cp.anchor = make([]byte, w)
	for k := range cp.anchor {
		cp.anchor[k] = an[bestStart+k].Value
	}
	var pre, post []signature.Node
	pre = append(pre, nodes[:bestNode]...)
	if bestStart > 0 {
		pre = append(pre, signature.Node{Kind: signature.NodeBytes, Bytes: an[:bestStart]})
	}
	if bestStart+w < len(an) {
		post = append(post, signature.Node{Kind: signature.NodeBytes, Bytes: an[bestStart+w:]})
	}
	post = append(post, nodes[bestNode+1:]...)
	for i := len(pre) - 1; i >= 0; i-- {
		cp.pre = append(cp.pre, toElem(pre[i]))
		cp.preMax += pre[i].MaxLen()
	}
	for _, n := range post {
		cp.post = append(cp.post, toElem(n))
		cp.postMax += n.MaxLen()
	}
}

func toElem(n signature.Node) elem {
	switch n.Kind {
	case signature.NodeBytes:
		exact := true
		for _, b := range n.Bytes {
			if b.Mask != 0xff {
				exact = false
				break
			}
		}
		if exact {
			lit := make([]byte, len(n.Bytes))
			for i, b := range n.Bytes {
				lit[i] = b.Value
			}
			return elem{kind: eLit, lit: lit}
		}
		return elem{kind: eMasked, bm: n.Bytes}
	case signature.NodeGap:
		return elem{kind: eGap, min: n.Min, max: n.Max}
	default:
		el := elem{kind: eAlt, alts: n.Alts, neg: n.Negate}
		if n.Negate {
			el.negLen = len(n.Alts[0])
		}
		return el
	}
}

// Stats describes the compiled engine.
type Stats struct {
	Version      uint64
	Records      int
	BodyPatterns int
	BodyParts    int
	Lanes        []string // "q4/s8: 79992 grams, 512 KiB filter"
	WindowBytes  int      // history + lookahead kept by each Scanner
	HashSizes    int      // distinct file sizes in the hash index
}

// Stats returns a description of the compiled engine.
func (e *Engine) Stats() Stats {
	st := Stats{Version: e.version, Records: e.db.RecordCount(), BodyPatterns: len(e.pats), BodyParts: len(e.parts),
		WindowBytes: e.hist + e.look, HashSizes: len(e.sizeMask)}
	for _, l := range e.lanes {
		st.Lanes = append(st.Lanes, fmt.Sprintf("q%d/s%d: %d grams, %d KiB filter", l.q, l.s, len(l.entries), len(l.bits)*8/1024))
	}
	sort.Strings(st.Lanes)
	return st
}

func log2(n int) int { return bits.Len(uint(n)) - 1 }
