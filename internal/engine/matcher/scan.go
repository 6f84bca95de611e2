package matcher

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"math"
	"slices"

	"github.com/mamori/mamori/internal/engine/signature"
)

// ChunkSize is how many new bytes a Scanner reads per step.
const ChunkSize = 256 << 10

// chunkSize is ChunkSize; tests shrink it to multiply buffer boundaries.
var chunkSize = ChunkSize

// Kind says what kind of signature matched.
type Kind string

// Match kinds.
const (
	KindHash Kind = "hash"
	KindBody Kind = "body"
)

// Match is one signature that matched a file.
type Match struct {
	Name string
	Kind Kind
	// Hash is the hash record type for hash matches (signature.TypeMD5...).
	Hash signature.Type
	// Offset is the absolute start of the first part of a body match's
	// anchor region (informational).
	Offset int64
}

// Hashes holds the digests computed for a file; nil when not computed.
type Hashes struct {
	MD5, SHA1, SHA256 []byte
}

// Result of scanning one stream.
type Result struct {
	Matches []Match
	Hashes  Hashes
	Size    int64 // bytes read
	// Allowed is true when the stream's hash is on an allow-list (.fp/.sfp);
	// Matches is then empty whatever matched.
	Allowed bool
}

// Options of one Scan call.
type Options struct {
	// AllMatch reports every matching signature instead of the first.
	// The first is the earliest body match in the stream; hash matches come
	// after body matches.
	AllMatch bool
	// NoBody skips body signatures (hash signatures only), e.g. for an
	// archive whose members are scanned separately.
	NoBody bool
	// WantHashes forces computing these digests (algMD5|...) even when no
	// signature needs them; see HashMD5 etc.
	WantHashes HashSet
}

// HashSet selects digests.
type HashSet uint8

// Digest selectors for Options.WantHashes.
const (
	HashMD5    HashSet = HashSet(algMD5)
	HashSHA1   HashSet = HashSet(algSHA1)
	HashSHA256 HashSet = HashSet(algSHA256)
)

// ErrSizeMismatch is returned (with a valid Result) when the stream ended
// before or after the size the caller announced, e.g. a file that changed
// while it was scanned.
var ErrSizeMismatch = errors.New("stream size differs from the announced size")

// Scanner scans streams against an Engine. It owns reusable buffers and is
// not safe for concurrent use; use one per goroutine.
type Scanner struct {
	e      *Engine
	buf    []byte
	hits   []hit
	cands  []cand
	ivA    []iv
	ivB    []iv
	gen    uint32
	patGen []uint32 // pattern matched in this file when == gen
	stGen  []uint32
	stEnd  []int64 // multi-part: earliest end of part k (absolute)
	md5    hash.Hash
	sha1   hash.Hash
	sha256 hash.Hash

	// per-stream state
	base    int64
	size    int64
	matches []Match
	done    bool
	all     bool
}

type cand struct {
	a    int64 // absolute anchor start
	part int32
}

// NewScanner returns a Scanner for the engine.
func (e *Engine) NewScanner() *Scanner {
	return &Scanner{
		e:      e,
		buf:    make([]byte, e.hist+e.look+chunkSize),
		patGen: make([]uint32, len(e.pats)),
		stGen:  make([]uint32, e.nState),
		stEnd:  make([]int64, e.nState),
		md5:    md5.New(),
		sha1:   sha1.New(),
		sha256: sha256.New(),
	}
}

// Engine returns the scanner's engine.
func (s *Scanner) Engine() *Engine { return s.e }

// HashesNeeded returns the digests the engine needs for a file of this size
// (size < 0: unknown, all digests any signature uses).
func (e *Engine) HashesNeeded(size int64) HashSet {
	if size < 0 {
		var m uint8
		for _, v := range e.sizeMask {
			m |= v
		}
		return HashSet(m | e.anyMask)
	}
	return HashSet(e.sizeMask[size] | e.anyMask)
}

// Scan reads r to its end and matches it. size is the stream's length if
// known (needed for EOF-relative offsets and the hash size index), or -1.
// With a known size at most size bytes are read; a stream that ends early
// gives ErrSizeMismatch together with the result for the bytes read.
func (s *Scanner) Scan(r io.Reader, size int64, opt Options) (*Result, error) {
	e := s.e
	if size >= 0 {
		r = io.LimitReader(r, size)
	}
	algs := uint8(e.HashesNeeded(size) | opt.WantHashes)
	var hs []hash.Hash
	if algs&algMD5 != 0 {
		s.md5.Reset()
		hs = append(hs, s.md5)
	}
	if algs&algSHA1 != 0 {
		s.sha1.Reset()
		hs = append(hs, s.sha1)
	}
	if algs&algSHA256 != 0 {
		s.sha256.Reset()
		hs = append(hs, s.sha256)
	}
	s.gen++
	if s.gen == 0 { // wrapped: clear generations
		clear(s.patGen)
		clear(s.stGen)
		s.gen = 1
	}
	s.base, s.size, s.matches, s.all = 0, size, nil, opt.AllMatch
	s.done = opt.NoBody || len(e.lanes) == 0

	buf := s.buf
	n := 0
	var total int64
	scanned := int64(0)
	eof := false
	var rerr error
	for {
		for n < len(buf) && !eof {
			k, err := r.Read(buf[n:])
			if k > 0 {
				for _, h := range hs {
					h.Write(buf[n : n+k])
				}
				n += k
				total += int64(k)
			}
			if err == io.EOF {
				eof = true
			} else if err != nil {
				rerr = err
				eof = true
			}
		}
		if rerr != nil {
			return nil, rerr
		}
		end := s.base + int64(n)
		limit := end
		if !eof {
			limit = end - int64(e.look)
		}
		if !s.done && limit > scanned {
			s.scanRange(buf[:n], int(scanned-s.base), int(limit-s.base))
		}
		if limit > scanned {
			scanned = limit
		}
		if eof {
			break
		}
		keep := max(s.base, scanned-int64(e.hist))
		drop := int(keep - s.base)
		copy(buf, buf[drop:n])
		n -= drop
		s.base = keep
	}

	res := &Result{Size: total}
	if algs&algMD5 != 0 {
		res.Hashes.MD5 = s.md5.Sum(nil)
	}
	if algs&algSHA1 != 0 {
		res.Hashes.SHA1 = s.sha1.Sum(nil)
	}
	if algs&algSHA256 != 0 {
		res.Hashes.SHA256 = s.sha256.Sum(nil)
	}
	matches := s.matches
	if len(matches) == 0 || s.all {
		matches = append(matches, e.hashMatches(res.Hashes, total, s.all)...)
		if !s.all && len(matches) > 1 {
			matches = matches[:1]
		}
	}
	if res.Allowed = e.allowed(res.Hashes, total); res.Allowed {
		matches = nil
	}
	res.Matches = matches
	s.matches = nil
	if size >= 0 && total != size {
		return res, ErrSizeMismatch
	}
	return res, nil
}

func (e *Engine) hashMatches(h Hashes, size int64, all bool) []Match {
	var out []Match
	for _, c := range []struct {
		t   signature.Type
		sum []byte
	}{{signature.TypeMD5, h.MD5}, {signature.TypeSHA1, h.SHA1}, {signature.TypeSHA256, h.SHA256}} {
		if c.sum == nil {
			continue
		}
		ht := e.db.Hashes(c.t)
		lo, hi := ht.Find(c.sum)
		for i := lo; i < hi; i++ {
			if sz := ht.Size(i); sz == size || sz == signature.AnySize {
				out = append(out, Match{Name: e.db.Name(ht.NameID(i)), Kind: KindHash, Hash: c.t})
				if !all {
					return out
				}
			}
		}
	}
	return out
}

func (e *Engine) allowed(h Hashes, size int64) bool {
	for _, c := range []struct {
		t   signature.Type
		sum []byte
	}{{signature.TypeAllowMD5, h.MD5}, {signature.TypeAllowSHA1, h.SHA1}, {signature.TypeAllowSHA256, h.SHA256}} {
		if c.sum == nil {
			continue
		}
		ht := e.db.Hashes(c.t)
		lo, hi := ht.Find(c.sum)
		for i := lo; i < hi; i++ {
			if sz := ht.Size(i); sz == size || sz == signature.AnySize {
				return true
			}
		}
	}
	return false
}

// scanRange runs the lanes over anchor positions [from, to) of buf and
// verifies the candidates in anchor order.
func (s *Scanner) scanRange(buf []byte, from, to int) {
	s.cands = s.cands[:0]
	for _, l := range s.e.lanes {
		t := min(to, len(buf)-l.q+1)
		if t <= from {
			continue
		}
		s.hits = l.scan(buf, from, t, s.base, s.hits[:0])
		for _, h := range s.hits {
			for _, en := range l.lookup(h.g) {
				a := h.p - int(en.j)
				pt := &s.e.parts[en.part]
				if a < 0 || a+len(pt.anchor) > len(buf) || s.base+int64(a) < 0 {
					continue
				}
				if !bytes.Equal(buf[a:a+len(pt.anchor)], pt.anchor) {
					continue
				}
				s.cands = append(s.cands, cand{s.base + int64(a), en.part})
			}
		}
	}
	if len(s.cands) > 1 {
		slices.SortFunc(s.cands, func(x, y cand) int {
			if x.a != y.a {
				if x.a < y.a {
					return -1
				}
				return 1
			}
			return int(x.part - y.part)
		})
	}
	for _, c := range s.cands {
		if s.done {
			return
		}
		s.verify(buf, c)
	}
}

func (s *Scanner) verify(buf []byte, c cand) {
	e := s.e
	pt := &e.parts[c.part]
	pat := &e.pats[pt.pat]
	if s.patGen[pt.pat] == s.gen {
		return // already matched
	}
	a := int(c.a - s.base)
	if pt.simple {
		s.report(pt.pat, c.a)
		return
	}
	// Cheap offset pre-check for the first part.
	if pt.idx == 0 && pat.off.Kind != signature.OffsetAny {
		lo, hi, ok := s.offsetRange(pat.off)
		if !ok || c.a < lo || c.a-int64(pt.preMax) > hi {
			return
		}
	}
	var prevEnd int64
	if pt.idx > 0 {
		slot := pat.state + pt.idx - 1
		if s.stGen[slot] != s.gen {
			return // previous part not seen yet
		}
		prevEnd = s.stEnd[slot]
	}
	// Prefix: possible starts.
	starts := s.backward(pt.pre, buf, a, 0)
	if len(starts) == 0 {
		return
	}
	if pt.idx == 0 {
		if pat.off.Kind != signature.OffsetAny {
			lo, hi, _ := s.offsetRange(pat.off)
			if !overlaps(starts, lo-s.base, hi-s.base) {
				return
			}
		}
	} else if s.base+int64(starts[len(starts)-1].hi) < prevEnd+pt.gapMin {
		return
	}
	endIdx, ok := s.forward(pt.post, buf, a+len(pt.anchor), len(buf))
	if !ok {
		return
	}
	if pt.idx == pat.nparts-1 {
		s.report(pt.pat, c.a)
		return
	}
	slot := pat.state + pt.idx
	end := s.base + int64(endIdx)
	if s.stGen[slot] != s.gen || end < s.stEnd[slot] {
		s.stGen[slot] = s.gen
		s.stEnd[slot] = end
	}
}

// offsetRange is the absolute range of allowed match starts.
func (s *Scanner) offsetRange(o signature.Offset) (lo, hi int64, ok bool) {
	switch o.Kind {
	case signature.OffsetAbs:
		return o.N, o.N + o.Shift, true
	case signature.OffsetEOF:
		if s.size < 0 {
			return 0, 0, false
		}
		return s.size - o.N, s.size - o.N + o.Shift, true
	}
	return math.MinInt64, math.MaxInt64, true
}

func (s *Scanner) report(pat int32, off int64) {
	s.patGen[pat] = s.gen
	s.matches = append(s.matches, Match{Name: s.e.pats[pat].name, Kind: KindBody, Offset: off})
	if !s.all {
		s.done = true
	}
}

// iv is an inclusive interval of buffer positions.
type iv struct{ lo, hi int }

func overlaps(set []iv, lo, hi int64) bool {
	for _, v := range set {
		if int64(v.hi) >= lo && int64(v.lo) <= hi {
			return true
		}
	}
	return false
}

// forward matches elems from position start and returns the smallest
// possible end position.
func (s *Scanner) forward(elems []elem, buf []byte, start, limit int) (int, bool) {
	if len(elems) == 0 {
		return start, true
	}
	if len(elems) == 1 && elems[0].kind == eLit {
		l := elems[0].lit
		if start+len(l) <= limit && bytes.Equal(buf[start:start+len(l)], l) {
			return start + len(l), true
		}
		return 0, false
	}
	cur := append(s.ivA[:0], iv{start, start})
	nxt := s.ivB[:0]
	for i := range elems {
		nxt = step(&elems[i], buf, cur, nxt[:0], 1, 0, limit)
		cur, nxt = nxt, cur
		if len(cur) == 0 {
			break
		}
	}
	s.ivA, s.ivB = cur, nxt
	if len(cur) == 0 {
		return 0, false
	}
	return cur[0].lo, true
}

// backward matches reversed elems ending at position end and returns the set
// of possible start positions. The result aliases scanner scratch space.
func (s *Scanner) backward(elems []elem, buf []byte, end, low int) []iv {
	cur := append(s.ivA[:0], iv{end, end})
	nxt := s.ivB[:0]
	for i := range elems {
		nxt = step(&elems[i], buf, cur, nxt[:0], -1, low, len(buf))
		cur, nxt = nxt, cur
		if len(cur) == 0 {
			break
		}
	}
	s.ivA, s.ivB = cur, nxt
	return cur
}

// step advances a position set over one element, forwards (dir 1: positions
// are starts, results are ends) or backwards (dir -1: positions are ends,
// results are starts). Positions stay within [low, limit].
func step(el *elem, buf []byte, cur, out []iv, dir, low, limit int) []iv {
	switch el.kind {
	case eGap:
		for _, v := range cur {
			var lo, hi int
			if dir > 0 {
				lo, hi = v.lo+el.min, min(v.hi+el.max, limit)
			} else {
				lo, hi = max(v.lo-el.max, low), v.hi-el.min
			}
			if lo > hi {
				continue
			}
			out = addIv(out, lo, hi)
		}
		return out
	case eLit, eMasked:
		k := el.len()
		for _, v := range cur {
			for p := v.lo; p <= v.hi; p++ {
				q := p
				if dir < 0 {
					q = p - k
				}
				if q < low || q+k > limit {
					continue
				}
				if el.matchAt(buf, q) {
					out = addPoint(out, p+dir*k)
				}
			}
		}
		return out
	default: // eAlt
		if el.neg {
			k := el.negLen
			for _, v := range cur {
				for p := v.lo; p <= v.hi; p++ {
					q := p
					if dir < 0 {
						q = p - k
					}
					if q < low || q+k > limit {
						continue
					}
					if !el.altAt(buf, q, k) {
						out = addPoint(out, p+dir*k)
					}
				}
			}
			return out
		}
		start := len(out)
		sorted := true
		for _, alt := range el.alts {
			k := len(alt)
			for _, v := range cur {
				for p := v.lo; p <= v.hi; p++ {
					q := p
					if dir < 0 {
						q = p - k
					}
					if q < low || q+k > limit {
						continue
					}
					if matchMask(buf[q:q+k], alt) {
						np := p + dir*k
						if n := len(out); n > start && np < out[n-1].lo {
							sorted = false
						}
						out = append(out, iv{np, np})
					}
				}
			}
		}
		if !sorted || len(el.alts) > 1 {
			seg := out[start:]
			slices.SortFunc(seg, func(x, y iv) int { return x.lo - y.lo })
			merged := out[:start]
			for _, v := range seg {
				merged = addIv(merged, v.lo, v.hi)
			}
			out = merged
		}
		return out
	}
}

// addIv appends [lo, hi] to a set built in ascending order of lo.
func addIv(out []iv, lo, hi int) []iv {
	if n := len(out); n > 0 && lo <= out[n-1].hi+1 {
		if hi > out[n-1].hi {
			out[n-1].hi = hi
		}
		return out
	}
	return append(out, iv{lo, hi})
}

func addPoint(out []iv, p int) []iv { return addIv(out, p, p) }

func (el *elem) len() int {
	if el.kind == eLit {
		return len(el.lit)
	}
	return len(el.bm)
}

func (el *elem) matchAt(buf []byte, q int) bool {
	if el.kind == eLit {
		return bytes.Equal(buf[q:q+len(el.lit)], el.lit)
	}
	return matchMask(buf[q:q+len(el.bm)], el.bm)
}

func (el *elem) altAt(buf []byte, q, k int) bool {
	for _, alt := range el.alts {
		if matchMask(buf[q:q+k], alt) {
			return true
		}
	}
	return false
}

func matchMask(b []byte, m []signature.ByteMatch) bool {
	for i, bm := range m {
		if b[i]&bm.Mask != bm.Value {
			return false
		}
	}
	return true
}
