package signature

import (
	"bytes"
	"strings"
	"testing"
)

// fuzzLine checks one format's line parser: it must never panic, and any
// record it accepts must survive the Key and Line round trips unchanged.
func fuzzLine(t *testing.T, format, line string) {
	r, err := ParseLine(format, line)
	if err != nil {
		if r.Name != "" || r.Hash != nil || r.Pattern != "" {
			t.Fatalf("error with non-zero record: %+v", r)
		}
		return
	}
	back, err := ParseKey(r.Key())
	if err != nil {
		t.Fatalf("ParseKey(%q) of accepted line %q: %v", r.Key(), line, err)
	}
	if !back.Equal(r) {
		t.Fatalf("key round trip changed the record: %+v -> %+v", r, back)
	}
	again, err := ParseLine(format, r.Line())
	if err != nil || !again.Equal(r) {
		t.Fatalf("canonical line %q does not parse back: %v", r.Line(), err)
	}
	if r.Type.IsHash() && len(r.Hash) != r.Type.HashLen() {
		t.Fatalf("hash length %d for %v", len(r.Hash), r.Type)
	}
}

func FuzzParseHDB(f *testing.F) {
	for _, s := range []string{md5Hex + ":68:Eicar", md5Hex + ":*:X:73", md5Hex + ":1:X:1:2", ":::", md5Hex + ":-1:x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { fuzzLine(t, "hdb", s) })
}

func FuzzParseHSB(f *testing.F) {
	for _, s := range []string{sha1Hex + ":68:A", sha256Hex + ":*:B:73", sha256Hex + ":0:C:1:", "x:y:z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { fuzzLine(t, "hsb", s) })
}

func FuzzParseFP(f *testing.F) {
	for _, s := range []string{md5Hex + ":68:good", md5Hex + ":*:good:73"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { fuzzLine(t, "fp", s) })
}

func FuzzParseSFP(f *testing.F) {
	for _, s := range []string{sha1Hex + ":68:good", sha256Hex + ":*:good"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { fuzzLine(t, "sfp", s) })
}

func FuzzParseNDB(f *testing.F) {
	for _, s := range []string{
		"A:0:*:4142434445", "A:0:10,5:41424344", "A:0:EOF-20:41??42", "A:0:*:41a?42?b*43{2-}44{-3}45{1-2}46(47|4849)4a!(4b|4c)4d:51:255",
		"A:1:*:4142", "A:0:EP+0:4142", "A:0:*:41(B)42",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { fuzzLine(t, "ndb", s) })
}

// FuzzParsePattern checks the hex-signature compiler: no panics; accepted
// patterns have a canonical form that parses to itself, respect the part
// limits and have an exact byte in every part.
func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{
		"4142", "41??42", "a?4142?b", "41*42", "41{3}42", "41{3-}42", "41{-3}42", "41{3-5}42", "41(42|4344)45",
		"41!(42|43)44", "41{2}{3}42", "4142*{5}43", "(41|42)4344", "41(B)42", "41[1-2]42", "41{65536}42",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePattern(s)
		if err != nil {
			return
		}
		c := p.String()
		q, err := ParsePattern(c)
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", c, s, err)
		}
		if q.String() != c {
			t.Fatalf("canonical form not stable: %q -> %q", c, q.String())
		}
		for i, part := range p.Parts() {
			if part.MaxSpan > MaxPartSpan {
				t.Fatalf("part %d spans %d", i, part.MaxSpan)
			}
			exact := false
			for _, n := range part.Nodes {
				if n.Kind == NodeGap && n.Max < 0 {
					t.Fatalf("unbounded gap inside a part")
				}
				for _, b := range n.Bytes {
					exact = exact || b.Mask == 0xff
				}
			}
			if !exact {
				t.Fatalf("part %d has no exact byte", i)
			}
		}
		if strings.ContainsAny(c, "ABCDEF") {
			t.Fatalf("canonical form %q is not lower-case", c)
		}
	})
}

// FuzzParseFile feeds whole files (several lines, CR/LF, comments) to every
// format.
func FuzzParseFile(f *testing.F) {
	f.Add([]byte(md5Hex+":68:A\n# c\n\r\n"+md5Hex+":*:B:73"), uint8(0))
	f.Add([]byte("A:0:*:4142\nB:0:EOF-3:41??42\n"), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		formats := []string{"hdb", "hsb", "ndb", "fp", "sfp"}
		format := formats[int(which)%len(formats)]
		recs, err := ParseFile("f."+format, bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, r := range recs {
			if _, err := ParseKey(r.Key()); err != nil {
				t.Fatalf("accepted record %q does not round-trip: %v", r.Key(), err)
			}
		}
	})
}
