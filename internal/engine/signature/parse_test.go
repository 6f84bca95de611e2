package signature

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	md5Hex    = "44d88612fea8a8f36de82e1278abb02f"
	sha1Hex   = "3395856ce81f2b7382dee72602f798b642f14140"
	sha256Hex = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
)

func TestParseLine_HashFormats(t *testing.T) {
	tests := []struct {
		name, format, line string
		want               Record
	}{
		{"hdb", "hdb", md5Hex + ":68:Eicar", Record{Type: TypeMD5, Hash: mustHex(t, md5Hex), Size: 68, Name: "Eicar"}},
		{"hdb upper-case hex", "hdb", strings.ToUpper(md5Hex) + ":68:Eicar", Record{Type: TypeMD5, Hash: mustHex(t, md5Hex), Size: 68, Name: "Eicar"}},
		{"hdb any size", "hdb", md5Hex + ":*:Eicar:73", Record{Type: TypeMD5, Hash: mustHex(t, md5Hex), Size: AnySize, Name: "Eicar"}},
		{"hdb min and max flevel", "hdb", md5Hex + ":68:Eicar:20:255", Record{Type: TypeMD5, Hash: mustHex(t, md5Hex), Size: 68, Name: "Eicar"}},
		{"hdb empty max flevel", "hdb", md5Hex + ":68:Eicar:20:", Record{Type: TypeMD5, Hash: mustHex(t, md5Hex), Size: 68, Name: "Eicar"}},
		{"hsb sha1", "hsb", sha1Hex + ":68:E.Sha1", Record{Type: TypeSHA1, Hash: mustHex(t, sha1Hex), Size: 68, Name: "E.Sha1"}},
		{"hsb sha256", "hsb", sha256Hex + ":68:E.Sha256", Record{Type: TypeSHA256, Hash: mustHex(t, sha256Hex), Size: 68, Name: "E.Sha256"}},
		{"hsb sha256 any size with flevel", "hsb", sha256Hex + ":*:E.Sha256:73", Record{Type: TypeSHA256, Hash: mustHex(t, sha256Hex), Size: AnySize, Name: "E.Sha256"}},
		{"hsb size zero", "hsb", sha1Hex + ":0:Empty", Record{Type: TypeSHA1, Hash: mustHex(t, sha1Hex), Size: 0, Name: "Empty"}},
		{"fp", "fp", md5Hex + ":68:good.exe", Record{Type: TypeAllowMD5, Hash: mustHex(t, md5Hex), Size: 68, Name: "good.exe"}},
		{"sfp sha1", "sfp", sha1Hex + ":*:good", Record{Type: TypeAllowSHA1, Hash: mustHex(t, sha1Hex), Size: AnySize, Name: "good"}},
		{"sfp sha256", "sfp", sha256Hex + ":68:good", Record{Type: TypeAllowSHA256, Hash: mustHex(t, sha256Hex), Size: 68, Name: "good"}},
		{"name with spaces and punctuation", "hdb", md5Hex + ":1:Win.Trojan.Agent-123 (x)", Record{Type: TypeMD5, Hash: mustHex(t, md5Hex), Size: 1, Name: "Win.Trojan.Agent-123 (x)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLine(tc.format, tc.line)
			if err != nil {
				t.Fatalf("ParseLine(%q): %v", tc.line, err)
			}
			if !got.Equal(tc.want) {
				t.Fatalf("ParseLine(%q) = %+v, want %+v", tc.line, got, tc.want)
			}
			back, err := ParseKey(got.Key())
			if err != nil || !back.Equal(got) {
				t.Fatalf("key %q does not round-trip: %v", got.Key(), err)
			}
		})
	}
}

func TestParseLine_BodyFormat(t *testing.T) {
	tests := []struct {
		name, line string
		off        Offset
		pattern    string // canonical
	}{
		{"plain hex any offset", "A:0:*:4142434445", Offset{Kind: OffsetAny}, "4142434445"},
		{"upper-case hex is canonicalised", "A:0:*:4A4B4C", Offset{Kind: OffsetAny}, "4a4b4c"},
		{"absolute offset", "A:0:10:41424344", Offset{Kind: OffsetAbs, N: 10}, "41424344"},
		{"absolute offset zero", "A:0:0:41424344", Offset{Kind: OffsetAbs, N: 0}, "41424344"},
		{"floating offset", "A:0:10,5:41424344", Offset{Kind: OffsetAbs, N: 10, Shift: 5}, "41424344"},
		{"EOF offset", "A:0:EOF-20:41424344", Offset{Kind: OffsetEOF, N: 20}, "41424344"},
		{"EOF floating offset", "A:0:EOF-20,4:41424344", Offset{Kind: OffsetEOF, N: 20, Shift: 4}, "41424344"},
		{"min flevel", "A:0:*:41424344:51", Offset{Kind: OffsetAny}, "41424344"},
		{"min and max flevel", "A:0:*:41424344:51:255", Offset{Kind: OffsetAny}, "41424344"},
		{"any byte", "A:0:*:4142??4344", Offset{Kind: OffsetAny}, "4142??4344"},
		{"high nibble", "A:0:*:4142a?4344", Offset{Kind: OffsetAny}, "4142a?4344"},
		{"low nibble", "A:0:*:4142?a4344", Offset{Kind: OffsetAny}, "4142?a4344"},
		{"star", "A:0:*:4142*4344", Offset{Kind: OffsetAny}, "4142*4344"},
		{"fixed gap", "A:0:*:4142{5}4344", Offset{Kind: OffsetAny}, "4142{5}4344"},
		{"at least gap", "A:0:*:4142{5-}4344", Offset{Kind: OffsetAny}, "4142{5-}4344"},
		{"at most gap", "A:0:*:4142{-5}4344", Offset{Kind: OffsetAny}, "4142{-5}4344"},
		{"range gap", "A:0:*:4142{2-5}4344", Offset{Kind: OffsetAny}, "4142{2-5}4344"},
		{"adjacent gaps merge", "A:0:*:4142{2}{3-4}4344", Offset{Kind: OffsetAny}, "4142{5-6}4344"},
		{"gap then star merge", "A:0:*:4142{2}*4344", Offset{Kind: OffsetAny}, "4142{2-}4344"},
		{"zero-to-unbounded gap is star", "A:0:*:4142{0-}4344", Offset{Kind: OffsetAny}, "4142*4344"},
		{"alternatives", "A:0:*:4142(43|4445|??46)4748", Offset{Kind: OffsetAny}, "4142(43|4445|??46)4748"},
		{"negated alternatives", "A:0:*:4142!(43|44)4748", Offset{Kind: OffsetAny}, "4142!(43|44)4748"},
		{"negated multi-byte alternatives", "A:0:*:4142!(4344|4546)4748", Offset{Kind: OffsetAny}, "4142!(4344|4546)4748"},
		{"everything", "A:0:*:41??42a?43?b44*45{3}46{2-}47{-9}48{1-7}49(4a|4b4c)4d!(4e|4f)5051", Offset{Kind: OffsetAny},
			"41??42a?43?b44*45{3}46{2-}47{-9}48{1-7}49(4a|4b4c)4d!(4e|4f)5051"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseLine("ndb", tc.line)
			if err != nil {
				t.Fatalf("ParseLine(%q): %v", tc.line, err)
			}
			if r.Type != TypeBody || r.Name != "A" || r.Target != 0 || r.Offset != tc.off || r.Pattern != tc.pattern {
				t.Fatalf("ParseLine(%q) = %+v, want offset %+v pattern %q", tc.line, r, tc.off, tc.pattern)
			}
			back, err := ParseKey(r.Key())
			if err != nil || !back.Equal(r) {
				t.Fatalf("key %q does not round-trip: %v", r.Key(), err)
			}
		})
	}
}

func TestParsePattern_Nodes(t *testing.T) {
	p, err := ParsePattern("41a??b??{2-4}(42|4344)!(45|46)*47")
	if err != nil {
		t.Fatal(err)
	}
	want := []Node{
		{Kind: NodeBytes, Bytes: []ByteMatch{{0x41, 0xff}, {0xa0, 0xf0}, {0x0b, 0x0f}, {0, 0}}},
		{Kind: NodeGap, Min: 2, Max: 4},
		{Kind: NodeAlt, Alts: [][]ByteMatch{{{0x42, 0xff}}, {{0x43, 0xff}, {0x44, 0xff}}}},
		{Kind: NodeAlt, Alts: [][]ByteMatch{{{0x45, 0xff}}, {{0x46, 0xff}}}, Negate: true},
		{Kind: NodeGap, Min: 0, Max: -1},
		{Kind: NodeBytes, Bytes: []ByteMatch{{0x47, 0xff}}},
	}
	if len(p.Nodes) != len(want) {
		t.Fatalf("got %d nodes, want %d: %+v", len(p.Nodes), len(want), p.Nodes)
	}
	for i := range want {
		g, w := p.Nodes[i], want[i]
		if g.Kind != w.Kind || g.Min != w.Min || g.Max != w.Max || g.Negate != w.Negate ||
			!equalBM(g.Bytes, w.Bytes) || len(g.Alts) != len(w.Alts) {
			t.Fatalf("node %d = %+v, want %+v", i, g, w)
		}
		for j := range w.Alts {
			if !equalBM(g.Alts[j], w.Alts[j]) {
				t.Fatalf("node %d alt %d = %+v, want %+v", i, j, g.Alts[j], w.Alts[j])
			}
		}
	}
	parts := p.Parts()
	if len(parts) != 2 || parts[1].GapMin != 0 || parts[0].MaxSpan != 4+4+2+1 || parts[1].MaxSpan != 1 {
		t.Fatalf("parts = %+v", parts)
	}
	// Nibble semantics.
	hi, lo := p.Nodes[0].Bytes[1], p.Nodes[0].Bytes[2]
	for c := 0; c < 256; c++ {
		if hi.Match(byte(c)) != (c>>4 == 0xa) || lo.Match(byte(c)) != (c&15 == 0xb) {
			t.Fatalf("nibble match wrong for %#x", c)
		}
	}
}

func equalBM(a, b []ByteMatch) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParseLine_Rejects(t *testing.T) {
	tests := []struct {
		name, format, line, reason string
	}{
		{"hdb too few fields", "hdb", md5Hex + ":68", "got 2 field(s)"},
		{"hdb sha1 in hdb", "hdb", sha1Hex + ":68:x", "MD5 hash must be 32 hex digits"},
		{"hdb bad hex", "hdb", strings.Repeat("g", 32) + ":68:x", "not hexadecimal"},
		{"hdb negative size", "hdb", md5Hex + ":-1:x", "bad file size"},
		{"hdb plus size", "hdb", md5Hex + ":+1:x", "bad file size"},
		{"hdb size not a number", "hdb", md5Hex + ":abc:x", "bad file size"},
		{"hdb empty name", "hdb", md5Hex + ":68:", "empty malware name"},
		{"hdb name with control char", "hdb", md5Hex + ":68:a\tb", "control character"},
		{"hdb name with trailing space", "hdb", md5Hex + ":68:ab ", "leading or trailing spaces"},
		{"hdb bad flevel", "hdb", md5Hex + ":68:x:abc", "bad minimum functionality level"},
		{"hdb bad max flevel", "hdb", md5Hex + ":68:x:1:z", "bad maximum functionality level"},
		{"hdb too many fields", "hdb", md5Hex + ":68:x:1:2:3", "too many fields"},
		{"hsb md5 in hsb", "hsb", md5Hex + ":68:x", "40 or 64 hex digits"},
		{"hsb odd length", "hsb", sha1Hex + "0:68:x", "40 or 64 hex digits"},
		{"fp wrong length", "fp", sha256Hex + ":68:x", "MD5 hash must be 32"},
		{"sfp wrong length", "sfp", md5Hex + ":68:x", "40 or 64 hex digits"},
		{"ndb too few fields", "ndb", "A:0:*", "got 3 field(s)"},
		{"ndb target PE", "ndb", "A:1:*:41424344", "target type 1 (PE) is not supported"},
		{"ndb target unknown", "ndb", "A:99:*:41424344", "target type 99 (unknown) is not supported"},
		{"ndb target not a number", "ndb", "A:x:*:41424344", "bad target type"},
		{"ndb target negative", "ndb", "A:-1:*:41424344", "bad target type"},
		{"ndb offset EP", "ndb", "A:0:EP+0:41424344", "needs executable parsing"},
		{"ndb offset section", "ndb", "A:0:S1+4:41424344", "needs executable parsing"},
		{"ndb offset last section", "ndb", "A:0:SL+4:41424344", "needs executable parsing"},
		{"ndb offset entire section", "ndb", "A:0:SE1:41424344", "needs executable parsing"},
		{"ndb offset garbage", "ndb", "A:0:abc:41424344", "bad offset"},
		{"ndb offset negative", "ndb", "A:0:-5:41424344", "bad offset"},
		{"ndb offset EOF without number", "ndb", "A:0:EOF-:41424344", "bad offset"},
		{"ndb offset bad shift", "ndb", "A:0:5,x:41424344", "max shift"},
		{"ndb offset too large", "ndb", "A:0:99999999999999999999:41424344", "out of range"},
		{"ndb empty pattern", "ndb", "A:0:*:", "empty hex signature"},
		{"ndb odd hex", "ndb", "A:0:*:414", "odd hex digit"},
		{"ndb invalid char", "ndb", "A:0:*:41x2", "invalid character"},
		{"ndb space", "ndb", "A:0:*:41 42", "invalid character"},
		{"ndb lone nibble wildcard", "ndb", "A:0:*:41?", "odd hex digit"},
		{"ndb leading star", "ndb", "A:0:*:*4142", "must not start with a gap"},
		{"ndb trailing gap", "ndb", "A:0:*:4142{3}", "must not end with a gap"},
		{"ndb unterminated brace", "ndb", "A:0:*:41{34243", "unterminated {"},
		{"ndb empty brace", "ndb", "A:0:*:41{}42", "bad gap"},
		{"ndb brace dash only", "ndb", "A:0:*:41{-}42", "missing bounds"},
		{"ndb inverted range", "ndb", "A:0:*:41{5-2}42", "exceeds upper bound"},
		{"ndb range not a number", "ndb", "A:0:*:41{a-2}42", "not a decimal number"},
		{"ndb empty gap", "ndb", "A:0:*:41{0}42", "empty gap"},
		{"ndb gap too large", "ndb", "A:0:*:41{70000}42", "larger than 65536"},
		{"ndb part span too large", "ndb", "A:0:*:41{60000}42{60000}43", "the maximum is 65536"},
		{"ndb unterminated group", "ndb", "A:0:*:41(42|43", "unterminated ("},
		{"ndb empty group", "ndb", "A:0:*:41()42", "empty group"},
		{"ndb empty alternative", "ndb", "A:0:*:41(42|)43", "alternative 2 is empty"},
		{"ndb odd alternative", "ndb", "A:0:*:41(423|44)43", "odd number of hex digits"},
		{"ndb gap inside alternative", "ndb", "A:0:*:41(42*43|44)45", "only hex bytes"},
		{"ndb nested group", "ndb", "A:0:*:41(42(43|44)|45)46", "only hex bytes"},
		{"ndb negation of different lengths", "ndb", "A:0:*:41!(42|4344)45", "same length"},
		{"ndb bang without group", "ndb", "A:0:*:41!4243", "not followed by '('"},
		{"ndb word boundary", "ndb", "A:0:*:4142(B)4344", "boundary match (B)"},
		{"ndb line boundary", "ndb", "A:0:*:4142(L)4344", "boundary match (L)"},
		{"ndb anchored bytes", "ndb", "A:0:*:4142[1-2]43", "anchored byte ranges"},
		{"ndb stray close paren", "ndb", "A:0:*:41)42", "unexpected"},
		{"ndb stray pipe", "ndb", "A:0:*:41|42", "unexpected"},
		{"ndb part without exact byte", "ndb", "A:0:*:41424344*a?b?", "part 2 (between unbounded gaps) has no exact byte"},
		{"ndb only wildcards", "ndb", "A:0:*:????", "no exact byte"},
		{"ndb single exact byte", "ndb", "A:0:*:41??", "at least two exact bytes"},
		{"ndb bad flevel", "ndb", "A:0:*:41424344:x", "bad minimum functionality level"},
		{"ndb too many fields", "ndb", "A:0:*:41424344:1:2:3", "too many fields"},
		{"ndb empty name", "ndb", ":0:*:41424344", "empty malware name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseLine(tc.format, tc.line)
			if err == nil {
				t.Fatalf("ParseLine(%s, %q) succeeded, want error containing %q", tc.format, tc.line, tc.reason)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("ParseLine(%s, %q) error %q does not contain %q", tc.format, tc.line, err, tc.reason)
			}
			// In a file, the error names file, line and reason.
			src := "# comment\n\n" + tc.line + "\n"
			_, ferr := ParseFile("sigs/x."+tc.format, strings.NewReader(src))
			var pe *ParseError
			if !errors.As(ferr, &pe) {
				t.Fatalf("ParseFile error %v is not a *ParseError", ferr)
			}
			if pe.File != "sigs/x."+tc.format || pe.Line != 3 || !strings.Contains(pe.Reason, tc.reason) {
				t.Fatalf("ParseFile error = %+v, want file sigs/x.%s line 3 reason containing %q", pe, tc.format, tc.reason)
			}
			if want := "sigs/x." + tc.format + ":3: "; !strings.HasPrefix(ferr.Error(), want) {
				t.Fatalf("error text %q does not start with %q", ferr, want)
			}
		})
	}
}

func TestParseFile_RejectsUnsupportedFiles(t *testing.T) {
	tests := []struct{ name, reason string }{
		{"main.ldb", "logical signatures (.ldb) are not supported"},
		{"main.cdb", "container metadata signatures (.cdb) are not supported"},
		{"main.mdb", "PE section hash"},
		{"main.cvd", "unpack them with sigtool"},
		{"README", "no file extension"},
		{"notes.txt", `unknown signature file extension ".txt"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFile(tc.name, strings.NewReader("x\n"))
			var pe *ParseError
			if !errors.As(err, &pe) || pe.File != tc.name || pe.Line != 0 || !strings.Contains(pe.Reason, tc.reason) {
				t.Fatalf("ParseFile(%q) = %v, want *ParseError naming the file with reason %q", tc.name, err, tc.reason)
			}
		})
	}
}

func TestParseFile_AllRecordsCommentsAndCRLF(t *testing.T) {
	src := "# header\r\n" + md5Hex + ":68:A\r\n\r\n" + strings.Repeat("a", 32) + ":*:B:73\n" + md5Hex + ":1:C" // no final newline
	recs, err := ParseFile("x.hdb", strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range recs {
		names = append(names, r.Name)
	}
	if strings.Join(names, ",") != "A,B,C" {
		t.Fatalf("names = %v", names)
	}
}

func TestParseFile_ReportsEveryBadLineUpToALimit(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(md5Hex + ":68:good\n")
	for i := 0; i < 30; i++ {
		b.WriteString("bad line\n")
	}
	_, err := ParseFile("many.hdb", &b)
	if err == nil {
		t.Fatal("want error")
	}
	msg := err.Error()
	if !strings.Contains(msg, "many.hdb:2: ") || !strings.Contains(msg, "many.hdb:21: ") || strings.Contains(msg, "many.hdb:22: ") ||
		!strings.Contains(msg, "too many errors") {
		t.Fatalf("error does not list lines 2..21 then give up:\n%s", msg)
	}
}

func TestParseFile_LineTooLong(t *testing.T) {
	src := strings.Repeat("4", MaxLineLen+10)
	_, err := ParseFile("long.ndb", strings.NewReader("A:0:*:4142\n"+src+"\n"))
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 2 || !strings.Contains(pe.Reason, "longer than") {
		t.Fatalf("got %v, want line 2 too long", err)
	}
}

func TestParseKey_RejectsNonCanonical(t *testing.T) {
	for _, k := range []string{
		"hdb:" + strings.ToUpper(md5Hex) + ":68:x", // upper-case hex
		"ndb:A:0:*:4A4B",             // upper-case pattern
		"ndb:A:0:*:41{2}{3}42",       // unmerged gaps
		"hdb:" + md5Hex + ":68:x:73", // flevel kept
		"xyz:foo",                    // unknown format
		"nocolon",
	} {
		if _, err := ParseKey(k); err == nil {
			t.Errorf("ParseKey(%q) succeeded, want error", k)
		}
	}
}
