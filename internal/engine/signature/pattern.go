package signature

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Limits of the body-pattern compiler. A "part" is a stretch of a pattern
// between unbounded gaps ("*" or "{n-}"); the matcher verifies one part inside
// a bounded window, so its maximal span is limited.
const (
	MaxPartSpan    = 64 << 10 // longest possible match of one part, bytes
	MaxParts       = 64       // parts per pattern
	MaxAlternation = 256      // alternatives in one (..|..) group
	MaxAltLen      = 1024     // bytes in one alternative
	MaxPatternHex  = 1 << 18  // characters in one hex signature
)

// ByteMatch matches one byte c when c&Mask == Value. Mask 0xff is an exact
// byte, 0xf0 a high nibble ("a?"), 0x0f a low nibble ("?a"), 0 any byte ("??").
type ByteMatch struct{ Value, Mask byte }

// Match reports whether c matches.
func (b ByteMatch) Match(c byte) bool { return c&b.Mask == b.Value }

// NodeKind is the kind of a pattern node.
type NodeKind uint8

// Pattern node kinds.
const (
	NodeBytes NodeKind = iota + 1 // a run of ByteMatch
	NodeGap                       // Min..Max arbitrary bytes; Max < 0 means unbounded
	NodeAlt                       // one of Alts (or, Negate, none of them)
)

// Node is one element of a body pattern.
type Node struct {
	Kind   NodeKind
	Bytes  []ByteMatch   // NodeBytes
	Min    int           // NodeGap
	Max    int           // NodeGap; -1 = unbounded
	Alts   [][]ByteMatch // NodeAlt
	Negate bool          // NodeAlt: matches any string of the alternatives' (common) length that none of them matches
}

// MaxLen is the longest input the node can consume (-1 if unbounded).
func (n *Node) MaxLen() int {
	switch n.Kind {
	case NodeBytes:
		return len(n.Bytes)
	case NodeGap:
		return n.Max
	case NodeAlt:
		m := 0
		for _, a := range n.Alts {
			m = max(m, len(a))
		}
		return m
	}
	return 0
}

// Pattern is a compiled ClamAV hex body signature.
type Pattern struct {
	Nodes []Node
}

// Part is a stretch of a pattern between unbounded gaps.
type Part struct {
	Nodes   []Node
	GapMin  int // for parts after the first: bytes that must separate it from the previous part's end
	MaxSpan int // longest possible match of the part
}

// Parts splits the pattern at its unbounded gaps.
func (p *Pattern) Parts() []Part {
	var parts []Part
	cur := Part{}
	for _, n := range p.Nodes {
		if n.Kind == NodeGap && n.Max < 0 {
			parts = append(parts, cur)
			cur = Part{GapMin: n.Min}
			continue
		}
		cur.Nodes = append(cur.Nodes, n)
		cur.MaxSpan += n.MaxLen()
	}
	return append(parts, cur)
}

// String is the canonical text form of the pattern: lower-case hex, "??",
// "a?", "?a", "*", "{n}", "{n-}", "{-m}", "{n-m}", "(..|..)", "!(..|..)",
// with adjacent gaps merged. Parsing it again yields an equal pattern.
func (p *Pattern) String() string {
	var b strings.Builder
	for i := range p.Nodes {
		n := &p.Nodes[i]
		switch n.Kind {
		case NodeBytes:
			writeBytes(&b, n.Bytes)
		case NodeGap:
			switch {
			case n.Min == 0 && n.Max < 0:
				b.WriteByte('*')
			case n.Max < 0:
				fmt.Fprintf(&b, "{%d-}", n.Min)
			case n.Min == n.Max:
				fmt.Fprintf(&b, "{%d}", n.Min)
			case n.Min == 0:
				fmt.Fprintf(&b, "{-%d}", n.Max)
			default:
				fmt.Fprintf(&b, "{%d-%d}", n.Min, n.Max)
			}
		case NodeAlt:
			if n.Negate {
				b.WriteByte('!')
			}
			b.WriteByte('(')
			for j, a := range n.Alts {
				if j > 0 {
					b.WriteByte('|')
				}
				writeBytes(&b, a)
			}
			b.WriteByte(')')
		}
	}
	return b.String()
}

const hexDigits = "0123456789abcdef"

func writeBytes(b *strings.Builder, bs []ByteMatch) {
	for _, m := range bs {
		switch m.Mask {
		case 0xff:
			b.WriteByte(hexDigits[m.Value>>4])
			b.WriteByte(hexDigits[m.Value&15])
		case 0xf0:
			b.WriteByte(hexDigits[m.Value>>4])
			b.WriteByte('?')
		case 0x0f:
			b.WriteByte('?')
			b.WriteByte(hexDigits[m.Value&15])
		default:
			b.WriteString("??")
		}
	}
}

// ParsePattern compiles a ClamAV hex body signature. Supported: hex bytes,
// "??", nibble wildcards "a?" and "?a", "*", "{n}", "{n-}", "{-m}", "{n-m}",
// alternatives "(aa|bbcc|??dd)" (hex bytes and byte wildcards only), and
// negated fixed-length alternatives "!(aa|bb)". Rejected with a reason:
// word/line boundaries "(B)" "(L)", anchored bytes "[x-y]", case-insensitive
// strings, nested groups, gaps inside alternatives, patterns that start or
// end with a gap, parts (between unbounded gaps) without an exact byte to
// anchor on or longer than MaxPartSpan, and patterns with fewer than two
// exact bytes.
func ParsePattern(s string) (*Pattern, error) {
	if s == "" {
		return nil, errors.New("empty hex signature")
	}
	if len(s) > MaxPatternHex {
		return nil, fmt.Errorf("hex signature longer than %d characters", MaxPatternHex)
	}
	p := &Pattern{}
	var run []ByteMatch
	flush := func() {
		if len(run) > 0 {
			p.Nodes = append(p.Nodes, Node{Kind: NodeBytes, Bytes: run})
			run = nil
		}
	}
	addGap := func(lo, hi int) {
		flush()
		if k := len(p.Nodes); k > 0 && p.Nodes[k-1].Kind == NodeGap {
			g := &p.Nodes[k-1]
			g.Min += lo
			if g.Max < 0 || hi < 0 {
				g.Max = -1
			} else {
				g.Max += hi
			}
			return
		}
		p.Nodes = append(p.Nodes, Node{Kind: NodeGap, Min: lo, Max: hi})
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case isHexOrQ(c):
			if i+1 >= len(s) || !isHexOrQ(s[i+1]) {
				return nil, fmt.Errorf("odd hex digit %q at position %d", string(c), i+1)
			}
			m, err := byteMatch(c, s[i+1])
			if err != nil {
				return nil, fmt.Errorf("%v at position %d", err, i+1)
			}
			run = append(run, m)
			i += 2
		case c == '*':
			addGap(0, -1)
			i++
		case c == '{':
			j := strings.IndexByte(s[i:], '}')
			if j < 0 {
				return nil, fmt.Errorf("unterminated {...} at position %d", i+1)
			}
			lo, hi, err := parseRange(s[i+1 : i+j])
			if err != nil {
				return nil, fmt.Errorf("bad gap {%s} at position %d: %v", s[i+1:i+j], i+1, err)
			}
			addGap(lo, hi)
			i += j + 1
		case c == '(' || c == '!':
			neg := c == '!'
			if neg {
				if i+1 >= len(s) || s[i+1] != '(' {
					return nil, fmt.Errorf("'!' not followed by '(' at position %d", i+1)
				}
				i++
			}
			j := strings.IndexByte(s[i:], ')')
			if j < 0 {
				return nil, fmt.Errorf("unterminated (...) at position %d", i+1)
			}
			body := s[i+1 : i+j]
			if body == "B" || body == "L" {
				return nil, fmt.Errorf("boundary match (%s) at position %d is not supported", body, i+1)
			}
			alts, err := parseAlts(body, neg)
			if err != nil {
				return nil, fmt.Errorf("bad alternative group at position %d: %v", i+1, err)
			}
			flush()
			p.Nodes = append(p.Nodes, Node{Kind: NodeAlt, Alts: alts, Negate: neg})
			i += j + 1
		case c == '[':
			return nil, fmt.Errorf("anchored byte ranges [x-y] at position %d are not supported", i+1)
		case c == ')' || c == '}' || c == '|':
			return nil, fmt.Errorf("unexpected %q at position %d", string(c), i+1)
		default:
			return nil, fmt.Errorf("invalid character %q at position %d", string(rune(c)), i+1)
		}
	}
	flush()
	if err := p.validate(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Pattern) validate() error {
	if len(p.Nodes) == 0 {
		return errors.New("empty hex signature")
	}
	if p.Nodes[0].Kind == NodeGap {
		return errors.New("signature must not start with a gap")
	}
	if p.Nodes[len(p.Nodes)-1].Kind == NodeGap {
		return errors.New("signature must not end with a gap")
	}
	for _, n := range p.Nodes {
		if n.Kind == NodeGap && n.Min == 0 && n.Max == 0 {
			return errors.New("empty gap {0}")
		}
	}
	parts := p.Parts()
	if len(parts) > MaxParts {
		return fmt.Errorf("too many unbounded gaps (%d parts, max %d)", len(parts), MaxParts)
	}
	exact := 0
	for i, part := range parts {
		n := 0
		for _, nd := range part.Nodes {
			if nd.Kind == NodeBytes {
				for _, b := range nd.Bytes {
					if b.Mask == 0xff {
						n++
					}
				}
			}
		}
		if n == 0 {
			return fmt.Errorf("part %d (between unbounded gaps) has no exact byte to anchor on", i+1)
		}
		if part.MaxSpan > MaxPartSpan {
			return fmt.Errorf("part %d can span %d bytes; the maximum is %d (split it with * or {n-})", i+1, part.MaxSpan, MaxPartSpan)
		}
		exact += n
	}
	if exact < 2 {
		return errors.New("signature needs at least two exact bytes")
	}
	return nil
}

func isHexOrQ(c byte) bool {
	return c == '?' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func byteMatch(hi, lo byte) (ByteMatch, error) {
	switch {
	case hi == '?' && lo == '?':
		return ByteMatch{}, nil
	case hi == '?':
		return ByteMatch{Value: unhex(lo), Mask: 0x0f}, nil
	case lo == '?':
		return ByteMatch{Value: unhex(hi) << 4, Mask: 0xf0}, nil
	default:
		return ByteMatch{Value: unhex(hi)<<4 | unhex(lo), Mask: 0xff}, nil
	}
}

func parseRange(s string) (lo, hi int, err error) {
	num := func(t string) (int, error) {
		if t == "" {
			return 0, errors.New("missing number")
		}
		for i := 0; i < len(t); i++ {
			if t[i] < '0' || t[i] > '9' {
				return 0, fmt.Errorf("%q is not a decimal number", t)
			}
		}
		n, err := strconv.Atoi(t)
		if err != nil || n > MaxPartSpan {
			return 0, fmt.Errorf("%q is larger than %d", t, MaxPartSpan)
		}
		return n, nil
	}
	a, b, isRange := strings.Cut(s, "-")
	if !isRange {
		n, err := num(a)
		if err != nil {
			return 0, 0, err
		}
		return n, n, nil
	}
	switch {
	case a == "" && b == "":
		return 0, 0, errors.New("missing bounds")
	case a == "":
		hi, err = num(b)
		return 0, hi, err
	case b == "":
		lo, err = num(a)
		return lo, -1, err
	}
	if lo, err = num(a); err != nil {
		return 0, 0, err
	}
	if hi, err = num(b); err != nil {
		return 0, 0, err
	}
	if lo > hi {
		return 0, 0, fmt.Errorf("lower bound %d exceeds upper bound %d", lo, hi)
	}
	return lo, hi, nil
}

func parseAlts(body string, neg bool) ([][]ByteMatch, error) {
	if body == "" {
		return nil, errors.New("empty group")
	}
	fields := strings.Split(body, "|")
	if len(fields) > MaxAlternation {
		return nil, fmt.Errorf("%d alternatives (max %d)", len(fields), MaxAlternation)
	}
	alts := make([][]ByteMatch, 0, len(fields))
	for k, f := range fields {
		if f == "" {
			return nil, fmt.Errorf("alternative %d is empty", k+1)
		}
		for i := 0; i < len(f); i++ {
			if !isHexOrQ(f[i]) {
				return nil, fmt.Errorf("alternative %d: only hex bytes and ?-wildcards are supported inside (...), got %q", k+1, f)
			}
		}
		if len(f)%2 != 0 {
			return nil, fmt.Errorf("alternative %d has an odd number of hex digits", k+1)
		}
		if len(f)/2 > MaxAltLen {
			return nil, fmt.Errorf("alternative %d is longer than %d bytes", k+1, MaxAltLen)
		}
		a := make([]ByteMatch, 0, len(f)/2)
		for i := 0; i < len(f); i += 2 {
			m, _ := byteMatch(f[i], f[i+1])
			a = append(a, m)
		}
		if neg && len(alts) > 0 && len(a) != len(alts[0]) {
			return nil, errors.New("negated alternatives must all have the same length")
		}
		alts = append(alts, a)
	}
	return alts, nil
}
