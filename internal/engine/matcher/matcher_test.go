package matcher

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"sort"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/engine/signature"
)

// refMatch is an independent reference for body signatures: it computes the
// set of positions reachable after each node over the whole input (no
// anchors, no parts, no streaming) and reports whether the pattern matches
// with a start allowed by the offset.
func refMatch(p *signature.Pattern, off signature.Offset, data []byte) bool {
	n := len(data)
	cur := make([]bool, n+1)
	for s := 0; s < n; s++ {
		switch off.Kind {
		case signature.OffsetAny:
			cur[s] = true
		case signature.OffsetAbs:
			cur[s] = int64(s) >= off.N && int64(s) <= off.N+off.Shift
		case signature.OffsetEOF:
			lo := int64(n) - off.N
			cur[s] = int64(s) >= lo && int64(s) <= lo+off.Shift
		}
	}
	matchAt := func(p int, bm []signature.ByteMatch) bool {
		if p+len(bm) > n {
			return false
		}
		for i, b := range bm {
			if !b.Match(data[p+i]) {
				return false
			}
		}
		return true
	}
	for _, nd := range p.Nodes {
		nxt := make([]bool, n+1)
		switch nd.Kind {
		case signature.NodeBytes:
			for q := 0; q <= n; q++ {
				if cur[q] && matchAt(q, nd.Bytes) {
					nxt[q+len(nd.Bytes)] = true
				}
			}
		case signature.NodeGap:
			mx := nd.Max
			if mx < 0 {
				mx = n
			}
			// nxt[q] = any cur[p] for p in [q-mx, q-min]; sliding count.
			cnt := make([]int, n+2)
			for q := 0; q <= n; q++ {
				cnt[q+1] = cnt[q]
				if cur[q] {
					cnt[q+1]++
				}
			}
			for q := 0; q <= n; q++ {
				lo, hi := q-mx, q-nd.Min
				if hi < 0 {
					continue
				}
				lo = max(lo, 0)
				nxt[q] = cnt[hi+1]-cnt[lo] > 0
			}
		case signature.NodeAlt:
			for q := 0; q <= n; q++ {
				if !cur[q] {
					continue
				}
				if nd.Negate {
					k := len(nd.Alts[0])
					if q+k > n {
						continue
					}
					hit := false
					for _, a := range nd.Alts {
						hit = hit || matchAt(q, a)
					}
					if !hit {
						nxt[q+k] = true
					}
					continue
				}
				for _, a := range nd.Alts {
					if matchAt(q, a) {
						nxt[q+len(a)] = true
					}
				}
			}
		}
		cur = nxt
	}
	for _, v := range cur {
		if v {
			return true
		}
	}
	return false
}

func buildEngine(t testing.TB, recs []signature.Record) *Engine {
	t.Helper()
	data, err := enginedb.Build(recs, 1)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Load(data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func ndb(t testing.TB, line string) signature.Record {
	t.Helper()
	r, err := signature.ParseLine("ndb", line)
	if err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	return r
}

func scanAll(t testing.TB, e *Engine, r io.Reader, size int64) []string {
	t.Helper()
	res, err := e.NewScanner().Scan(r, size, Options{AllMatch: true})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range res.Matches {
		names = append(names, m.Name)
	}
	sort.Strings(names)
	return names
}

// randomPattern derives a pattern from a random window of data (so it often
// matches), sprinkled with every wildcard form; with probability 1/3 one
// byte is then corrupted so it often does not.
func randomPattern(rng *rand.Rand, data []byte) string {
	if len(data) < 8 {
		return "41424344"
	}
	start := rng.Intn(len(data) - 4)
	length := 4 + rng.Intn(min(40, len(data)-start-3))
	src := data[start : start+length]
	var b strings.Builder
	exactRun := 0
	for i := 0; i < len(src); i++ {
		c := src[i]
		canWild := i > 0 && i < len(src)-1 && exactRun >= 2
		switch r := rng.Intn(20); {
		case canWild && r == 0:
			b.WriteString("??")
			exactRun = 0
		case canWild && r == 1:
			fmt.Fprintf(&b, "%x?", c>>4)
			exactRun = 0
		case canWild && r == 2:
			fmt.Fprintf(&b, "?%x", c&15)
			exactRun = 0
		case canWild && r == 3:
			// skip k data bytes with a gap that allows them
			k := 1 + rng.Intn(3)
			if i+k >= len(src)-1 {
				fmt.Fprintf(&b, "%02x", c)
				exactRun++
				continue
			}
			switch rng.Intn(4) {
			case 0:
				fmt.Fprintf(&b, "{%d}", k)
			case 1:
				fmt.Fprintf(&b, "{%d-%d}", max(0, k-rng.Intn(2)), k+rng.Intn(3))
			case 2:
				fmt.Fprintf(&b, "{-%d}", k+rng.Intn(3))
			default:
				b.WriteString("*")
			}
			i += k - 1
			exactRun = 0
		case canWild && r == 4:
			fmt.Fprintf(&b, "(%02x|%02x%02x)", c, byte(rng.Intn(256)), byte(rng.Intn(256)))
			exactRun = 0
		case canWild && r == 5:
			fmt.Fprintf(&b, "!(%02x|%02x)", byte(rng.Intn(256)), byte(rng.Intn(256)))
			exactRun = 0
		default:
			fmt.Fprintf(&b, "%02x", c)
			exactRun++
		}
	}
	s := b.String()
	if rng.Intn(3) == 0 {
		// corrupt one exact hex digit
		idx := rng.Intn(len(s))
		if isHex(s[idx]) {
			s = s[:idx] + string("0123456789abcdef"[rng.Intn(16)]) + s[idx+1:]
		}
	}
	return s
}

func isHex(c byte) bool { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') }

func randomOffset(rng *rand.Rand, n int) string {
	switch rng.Intn(6) {
	case 0:
		return fmt.Sprint(rng.Intn(n + 1))
	case 1:
		return fmt.Sprintf("%d,%d", rng.Intn(n+1), rng.Intn(50))
	case 2:
		return fmt.Sprintf("EOF-%d", rng.Intn(n+1))
	case 3:
		return fmt.Sprintf("EOF-%d,%d", rng.Intn(n+1), rng.Intn(50))
	}
	return "*"
}

// TestScan_MatchesReference compares the streaming engine with the
// reference on random data (small alphabets make many near-matches), random
// patterns of every wildcard form, random offsets, tiny buffer chunks (so
// anchors and patterns straddle many buffer boundaries) and 1-byte reads.
func TestScan_MatchesReference(t *testing.T) {
	old := chunkSize
	defer func() { chunkSize = old }()
	rng := rand.New(rand.NewSource(1))
	iters := 1000
	if testing.Short() {
		iters = 100
	}
	positives, negatives, multipart := 0, 0, 0
	defer func() {
		t.Logf("%d matching and %d non-matching signatures checked (%d multi-part)", positives, negatives, multipart)
		if positives < iters/2 || negatives < iters/2 {
			t.Errorf("too few positive (%d) or negative (%d) cases for a meaningful comparison", positives, negatives)
		}
	}()
	for it := 0; it < iters; it++ {
		chunkSize = []int{1, 7, 64, 4096, ChunkSize}[rng.Intn(5)]
		alpha := 2 + rng.Intn(6)
		data := make([]byte, 1+rng.Intn(3000))
		for i := range data {
			data[i] = byte(0x40 + rng.Intn(alpha))
		}
		var recs []signature.Record
		type want struct {
			name string
			ok   bool
		}
		var wants []want
		for k := 0; k < 1+rng.Intn(12); k++ {
			ps := randomPattern(rng, data)
			name := fmt.Sprintf("P%d", k)
			r, err := signature.ParseLine("ndb", name+":0:"+randomOffset(rng, len(data))+":"+ps)
			if err != nil {
				continue // e.g. a part left without an exact byte
			}
			p, _ := signature.ParsePattern(r.Pattern)
			recs = append(recs, r)
			ok := refMatch(p, r.Offset, data)
			wants = append(wants, want{name, ok})
			if ok {
				positives++
			} else {
				negatives++
			}
			if len(p.Parts()) > 1 {
				multipart++
			}
		}
		if len(recs) == 0 {
			continue
		}
		e := buildEngine(t, recs)
		var exp []string
		for _, w := range wants {
			if w.ok {
				exp = append(exp, w.name)
			}
		}
		sort.Strings(exp)
		var rd io.Reader = bytes.NewReader(data)
		if rng.Intn(2) == 0 {
			rd = iotest.OneByteReader(rd)
		}
		got := scanAll(t, e, rd, int64(len(data)))
		if strings.Join(got, ",") != strings.Join(exp, ",") {
			var lines []string
			for _, r := range recs {
				lines = append(lines, r.Line())
			}
			t.Fatalf("iteration %d (chunk %d, %d bytes %q):\nsignatures:\n%s\ngot  %v\nwant %v",
				it, chunkSize, len(data), truncated(data), strings.Join(lines, "\n"), got, exp)
		}
	}
}

func truncated(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// TestScan_StraddlesBufferBoundaries plants patterns across every boundary
// of the real 256 KiB read buffer in a file several buffers long, with a
// reader that returns odd-sized pieces.
func TestScan_StraddlesBufferBoundaries(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	size := 3*ChunkSize + 12345
	data := make([]byte, size)
	rng.Read(data)
	lit := []byte("\x8f\x13straddling-literal-anchor\x01\x02")
	wild := []byte("\x91\x92\x93\x94\x95WILD")
	recs := []signature.Record{
		ndb(t, "Lit:0:*:"+hex.EncodeToString(lit)),
		ndb(t, "Wild:0:*:"+hex.EncodeToString(wild[:5])+"{10-300}"+hex.EncodeToString(wild[5:])),
		ndb(t, "Star:0:*:"+hex.EncodeToString([]byte("STAR-ONE"))+"*"+hex.EncodeToString([]byte("STAR-TWO"))),
		ndb(t, "Tail:0:EOF-40:"+hex.EncodeToString([]byte("tail-marker-here"))),
		ndb(t, "Head:0:0:"+hex.EncodeToString(data[:12])),
	}
	e := buildEngine(t, recs)
	for _, boundary := range []int{ChunkSize, 2 * ChunkSize, 3 * ChunkSize} {
		for _, delta := range []int{-len(lit), -7, -1, 0, 1} {
			d := append([]byte(nil), data...)
			copy(d[boundary+delta:], lit)
			w := boundary + delta - 150
			copy(d[w:], wild[:5])
			copy(d[w+5+200:], wild[5:]) // straddles with a 200-byte gap
			copy(d[boundary-5000:], "STAR-ONE")
			copy(d[boundary+100:], "STAR-TWO")
			copy(d[len(d)-40:], "tail-marker-here")
			got := scanAll(t, e, iotest.HalfReader(bytes.NewReader(d)), int64(len(d)))
			if strings.Join(got, ",") != "Head,Lit,Star,Tail,Wild" {
				t.Fatalf("boundary %d%+d: got %v", boundary, delta, got)
			}
		}
	}
	// Nothing planted: only the header signature.
	if got := scanAll(t, e, bytes.NewReader(data), int64(len(data))); strings.Join(got, ",") != "Head" {
		t.Fatalf("clean data: got %v", got)
	}
	// Star parts in the wrong order do not match.
	d := append([]byte(nil), data...)
	copy(d[1000:], "STAR-TWO")
	copy(d[ChunkSize+1000:], "STAR-ONE")
	if got := scanAll(t, e, bytes.NewReader(d), int64(len(d))); strings.Join(got, ",") != "Head" {
		t.Fatalf("reversed star parts: got %v", got)
	}
}

func TestScan_EOFOffsets(t *testing.T) {
	data := bytes.Repeat([]byte{'.'}, 5000)
	copy(data[5000-30:], "ENDMARK")
	recs := []signature.Record{
		ndb(t, "Exact:0:EOF-30:"+hex.EncodeToString([]byte("ENDMARK"))),
		ndb(t, "Wrong:0:EOF-31:"+hex.EncodeToString([]byte("ENDMARK"))),
		ndb(t, "Float:0:EOF-35,5:"+hex.EncodeToString([]byte("ENDMARK"))),
		ndb(t, "FloatShort:0:EOF-35,4:"+hex.EncodeToString([]byte("ENDMARK"))),
		ndb(t, "Abs:0:4970:"+hex.EncodeToString([]byte("ENDMARK"))),
		ndb(t, "AbsFloat:0:4960,10:"+hex.EncodeToString([]byte("ENDMARK"))),
		ndb(t, "AbsMiss:0:4971,100:"+hex.EncodeToString([]byte("ENDMARK"))),
		ndb(t, "PrefixEOF:0:EOF-32:2e2e"+hex.EncodeToString([]byte("ENDMARK"))),
	}
	e := buildEngine(t, recs)
	got := scanAll(t, e, bytes.NewReader(data), int64(len(data)))
	if want := "Abs,AbsFloat,Exact,Float,PrefixEOF"; strings.Join(got, ",") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	// Unknown size: EOF-relative signatures cannot match, others still do.
	got = scanAll(t, e, bytes.NewReader(data), -1)
	if want := "Abs,AbsFloat"; strings.Join(got, ",") != want {
		t.Fatalf("unknown size: got %v, want %s", got, want)
	}
}

func TestScan_HashSignaturesAndAllowList(t *testing.T) {
	body := []byte("some file content that is hashed")
	other := []byte("another file, same length!!!!!!!")
	if len(other) != len(body) {
		t.Fatal("test data lengths differ")
	}
	m, s1, s2 := md5.Sum(body), sha1.Sum(body), sha256.Sum256(body)
	line := func(h []byte, size string, name string) string {
		return hex.EncodeToString(h) + ":" + size + ":" + name
	}
	parse := func(format, l string) signature.Record {
		r, err := signature.ParseLine(format, l)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	recs := []signature.Record{
		parse("hdb", line(m[:], fmt.Sprint(len(body)), "ByMD5")),
		parse("hdb", line(m[:], fmt.Sprint(len(body)+1), "WrongSize")),
		parse("hsb", line(s1[:], "*", "BySHA1Any")),
		parse("hsb", line(s2[:], fmt.Sprint(len(body)), "BySHA256")),
	}
	e := buildEngine(t, recs)
	sc := e.NewScanner()
	res, err := sc.Scan(bytes.NewReader(body), int64(len(body)), Options{AllMatch: true})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mt := range res.Matches {
		names = append(names, mt.Name)
		if mt.Kind != KindHash {
			t.Errorf("%s kind %s", mt.Name, mt.Kind)
		}
	}
	if strings.Join(names, ",") != "ByMD5,BySHA1Any,BySHA256" {
		t.Fatalf("matches %v", names)
	}
	if !bytes.Equal(res.Hashes.MD5, m[:]) || !bytes.Equal(res.Hashes.SHA1, s1[:]) || !bytes.Equal(res.Hashes.SHA256, s2[:]) {
		t.Fatal("digests not reported")
	}
	// First match only by default.
	res, _ = sc.Scan(bytes.NewReader(body), int64(len(body)), Options{})
	if len(res.Matches) != 1 {
		t.Fatalf("default mode gave %d matches", len(res.Matches))
	}
	// Same size, other content: hashed (size index hit) but no match.
	res, _ = sc.Scan(bytes.NewReader(other), int64(len(other)), Options{})
	if len(res.Matches) != 0 || res.Hashes.MD5 == nil {
		t.Fatalf("other content: %+v", res)
	}
	// Size not in the index and no "*" for MD5/SHA-256: those are not computed.
	short := body[:10]
	res, _ = sc.Scan(bytes.NewReader(short), int64(len(short)), Options{})
	if res.Hashes.MD5 != nil || res.Hashes.SHA256 != nil || res.Hashes.SHA1 == nil {
		t.Fatalf("size index not honoured: md5 %x sha1 %x sha256 %x", res.Hashes.MD5, res.Hashes.SHA1, res.Hashes.SHA256)
	}
	// Allow-listed by SHA-256: never reported, not even by a body signature.
	allow := append(recs, parse("sfp", line(s2[:], "*", "trusted")), ndb(t, "Body:0:*:"+hex.EncodeToString([]byte("file content"))))
	e2 := buildEngine(t, allow)
	res, _ = e2.NewScanner().Scan(bytes.NewReader(body), int64(len(body)), Options{AllMatch: true})
	if len(res.Matches) != 0 || !res.Allowed {
		t.Fatalf("allow-listed file reported: %+v", res)
	}
	// Allow-list by MD5 with a size that does not match: still reported.
	e3 := buildEngine(t, append(recs, parse("fp", line(m[:], "5", "trusted-other-size"))))
	res, _ = e3.NewScanner().Scan(bytes.NewReader(body), int64(len(body)), Options{})
	if len(res.Matches) != 1 || res.Allowed {
		t.Fatalf("fp with other size suppressed detection: %+v", res)
	}
}

func TestScan_BodyBeforeHashAndFirstBodyMatch(t *testing.T) {
	data := []byte("xxxxFIRST-SIG....SECOND-SIGxxxx")
	m := md5.Sum(data)
	r, _ := signature.ParseLine("hdb", hex.EncodeToString(m[:])+":"+fmt.Sprint(len(data))+":Hash")
	e := buildEngine(t, []signature.Record{r,
		ndb(t, "B2:0:*:"+hex.EncodeToString([]byte("SECOND-SIG"))),
		ndb(t, "B1:0:*:"+hex.EncodeToString([]byte("FIRST-SIG")))})
	res, err := e.NewScanner().Scan(bytes.NewReader(data), int64(len(data)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Matches) != 1 || res.Matches[0].Name != "B1" || res.Matches[0].Offset != 4 {
		t.Fatalf("first match = %+v, want B1 at 4", res.Matches)
	}
	if res.Hashes.MD5 == nil {
		t.Fatal("hash not computed after an early body match")
	}
}

func TestScan_SizeMismatch(t *testing.T) {
	e := buildEngine(t, []signature.Record{ndb(t, "A:0:*:41424344")})
	res, err := e.NewScanner().Scan(strings.NewReader("xxABCDxx"), 100, Options{})
	if err != ErrSizeMismatch || res == nil || res.Size != 8 || len(res.Matches) != 1 {
		t.Fatalf("short stream: %+v %v", res, err)
	}
	// Longer than announced: only the announced bytes are read.
	res, err = e.NewScanner().Scan(strings.NewReader("xxxxABCD"), 4, Options{})
	if err != nil || res.Size != 4 || len(res.Matches) != 0 {
		t.Fatalf("long stream: %+v %v", res, err)
	}
}

func TestScan_ReadErrorIsReturned(t *testing.T) {
	e := buildEngine(t, []signature.Record{ndb(t, "A:0:*:41424344")})
	_, err := e.NewScanner().Scan(iotest.TimeoutReader(strings.NewReader(strings.Repeat("x", 10))), -1, Options{})
	if err == nil {
		t.Fatal("read error swallowed")
	}
}

// TestScan_LargeFile streams more data than the buffer with a match near
// the end and a long multi-part pattern, and checks memory stays bounded by
// the buffer (no growth with the input).
func TestScan_LargeFile(t *testing.T) {
	const size = 40 << 20
	e := buildEngine(t, []signature.Record{
		ndb(t, "End:0:*:"+hex.EncodeToString([]byte("needle-at-the-end"))),
		ndb(t, "Span:0:*:"+hex.EncodeToString([]byte("first-part"))+"*"+hex.EncodeToString([]byte("second-part"))),
	})
	r := &patternReader{size: size, plant: map[int64][]byte{
		100:         []byte("first-part"),
		size - 5000: []byte("second-part"),
		size - 100:  []byte("needle-at-the-end"),
	}}
	got := scanAll(t, e, r, size)
	if strings.Join(got, ",") != "End,Span" {
		t.Fatalf("got %v", got)
	}
	if e.NewScanner() == nil || cap(e.NewScanner().buf) > ChunkSize+e.MaxSpan() {
		t.Fatal("scanner buffer larger than chunk + window")
	}
}

// patternReader produces size pseudo-random bytes with planted strings,
// without holding them in memory.
type patternReader struct {
	size, off int64
	plant     map[int64][]byte
	x         uint64
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.size {
		return 0, io.EOF
	}
	n := int64(len(b))
	if n > p.size-p.off {
		n = p.size - p.off
	}
	for i := int64(0); i < n; i++ {
		p.x = p.x*6364136223846793005 + 1442695040888963407
		b[i] = byte(p.x >> 56)
	}
	for at, s := range p.plant {
		for i, c := range s {
			if pos := at + int64(i); pos >= p.off && pos < p.off+n {
				b[pos-p.off] = c
			}
		}
	}
	p.off += n
	return int(n), nil
}

// FuzzScanAgainstReference is a differential fuzz target: for arbitrary
// data and a pattern derived from it, the engine must agree with refMatch.
func FuzzScanAgainstReference(f *testing.F) {
	f.Add([]byte("ABABABCABCDABCDE"), int64(1), uint8(3))
	f.Add([]byte("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09"), int64(7), uint8(64))
	f.Fuzz(func(t *testing.T, data []byte, seed int64, chunk uint8) {
		if len(data) > 4096 {
			return
		}
		old := chunkSize
		defer func() { chunkSize = old }()
		chunkSize = 1 + int(chunk)
		rng := rand.New(rand.NewSource(seed))
		ps := randomPattern(rng, data)
		r, err := signature.ParseLine("ndb", "F:0:"+randomOffset(rng, len(data))+":"+ps)
		if err != nil {
			return
		}
		p, _ := signature.ParsePattern(r.Pattern)
		want := refMatch(p, r.Offset, data)
		got := len(scanAll(t, buildEngine(t, []signature.Record{r}), bytes.NewReader(data), int64(len(data)))) == 1
		if got != want {
			t.Fatalf("pattern %s offset %s on %q: engine %v, reference %v", r.Pattern, r.Offset, data, got, want)
		}
	})
}
