package enginedb

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mamori/mamori/internal/engine/signature"
)

// randomRecords makes n distinct valid records of every type from a seed.
func randomRecords(t testing.TB, seed int64, n int) []signature.Record {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	var recs []signature.Record
	hexb := func(k int) string {
		b := make([]byte, k)
		rng.Read(b)
		return fmt.Sprintf("%x", b)
	}
	for i := 0; i < n; i++ {
		var format, line string
		name := fmt.Sprintf("Test.Sig.%d.%d", seed, rng.Intn(n*4))
		size := fmt.Sprint(rng.Intn(1 << 20))
		if rng.Intn(10) == 0 {
			size = "*"
		}
		switch rng.Intn(7) {
		case 0:
			format, line = "hdb", hexb(16)+":"+size+":"+name
		case 1:
			format, line = "hsb", hexb(20)+":"+size+":"+name
		case 2:
			format, line = "hsb", hexb(32)+":"+size+":"+name
		case 3:
			format, line = "fp", hexb(16)+":"+size+":"+name
		case 4:
			format, line = "sfp", hexb(32)+":"+size+":"+name
		default:
			offs := []string{"*", "0", "17", "5,3", "EOF-30", "EOF-8,4"}
			pats := []string{hexb(8), hexb(4) + "??" + hexb(4), hexb(5) + "*" + hexb(6), hexb(4) + "{2-7}" + hexb(4),
				hexb(3) + "(" + hexb(1) + "|" + hexb(2) + ")" + hexb(4), hexb(4) + "a?" + hexb(3)}
			format, line = "ndb", name+":0:"+offs[rng.Intn(len(offs))]+":"+pats[rng.Intn(len(pats))]
		}
		r, err := signature.ParseLine(format, line)
		if err != nil {
			t.Fatalf("generated bad line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return Normalize(recs)
}

func keys(recs []signature.Record) string {
	var b strings.Builder
	for _, r := range recs {
		b.WriteString(r.Key())
		b.WriteByte('\n')
	}
	return b.String()
}

func TestBuildLoad_RoundTrip(t *testing.T) {
	recs := randomRecords(t, 1, 3000)
	data, err := Build(recs, 42)
	if err != nil {
		t.Fatal(err)
	}
	db, err := Load(data)
	if err != nil {
		t.Fatal(err)
	}
	if db.Version() != 42 || db.RecordCount() != len(recs) {
		t.Fatalf("version %d count %d, want 42 %d", db.Version(), db.RecordCount(), len(recs))
	}
	got, err := db.Records()
	if err != nil {
		t.Fatal(err)
	}
	if keys(got) != keys(recs) {
		t.Fatal("records differ after round trip")
	}
	want := fmt.Sprintf("%x", sha256.Sum256(data[:len(data)-32]))
	if db.Checksum() != want {
		t.Fatalf("checksum %s, want %s", db.Checksum(), want)
	}
	total := 0
	for _, n := range db.Counts() {
		total += n
	}
	if total != len(recs) {
		t.Fatalf("counts sum to %d, want %d", total, len(recs))
	}
}

func TestBuild_DeterministicWhateverTheOrder(t *testing.T) {
	recs := randomRecords(t, 2, 500)
	a, err := Build(recs, 9)
	if err != nil {
		t.Fatal(err)
	}
	shuffled := append([]signature.Record(nil), recs...)
	rand.New(rand.NewSource(3)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	shuffled = append(shuffled, recs[:50]...) // duplicates collapse
	b, err := Build(shuffled, 9)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("Build depends on record order or duplicates")
	}
	c, _ := Build(recs, 10)
	if bytes.Equal(a, c) {
		t.Fatal("version is not part of the database")
	}
}

func TestBuild_Empty(t *testing.T) {
	data, err := Build(nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	db, err := Load(data)
	if err != nil {
		t.Fatal(err)
	}
	if recs, err := db.Records(); err != nil || len(recs) != 0 {
		t.Fatalf("records %v, %v", recs, err)
	}
}

func TestBuild_RejectsInvalidRecords(t *testing.T) {
	bad := []signature.Record{
		{Type: signature.TypeMD5, Name: "x", Hash: []byte{1, 2}, Size: 1},       // short hash
		{Type: signature.TypeMD5, Name: "a:b", Hash: make([]byte, 16), Size: 1}, // colon in name
		{Type: signature.TypeBody, Name: "x", Pattern: "4A4B"},                  // not canonical
		{Type: signature.TypeBody, Name: "x", Pattern: "41"},                    // invalid pattern
		{Type: 99, Name: "x"}, // unknown type
		{Type: signature.TypeSHA1, Name: "x", Hash: make([]byte, 20), Size: -5},                   // bad size
		{Type: signature.TypeBody, Name: "x", Target: 1, Pattern: "41424344"},                     // target
		{Type: signature.TypeBody, Name: "x", Pattern: "4142", Offset: signature.Offset{Kind: 9}}, // offset kind
	}
	for i, r := range bad {
		if _, err := Build([]signature.Record{r}, 1); err == nil {
			t.Errorf("record %d (%+v) accepted", i, r)
		}
	}
}

func TestLoad_RejectsDamage(t *testing.T) {
	data, err := Build(randomRecords(t, 4, 400), 5)
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func([]byte) []byte) []byte { return f(append([]byte(nil), data...)) }
	tests := []struct {
		name, want string
		data       []byte
	}{
		{"empty", "bad magic", nil},
		{"not a db", "bad magic", []byte("hello world, this is not an engine database at all....................................")},
		{"flipped data byte", "checksum mismatch", mutate(func(b []byte) []byte { b[len(b)/2] ^= 1; return b })},
		{"flipped checksum byte", "checksum mismatch", mutate(func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b })},
		{"truncated by one byte", "truncated", data[:len(data)-1]},
		{"truncated to half", "truncated", data[:len(data)/2]},
		{"truncated inside header", "truncated", data[:20]},
		{"trailing garbage", "trailing data", append(append([]byte(nil), data...), 0)},
		{"future format version", "unsupported format version 2", mutate(func(b []byte) []byte {
			binary.LittleEndian.PutUint16(b[8:], 2)
			return b
		})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.data)
			var fe *FormatError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want *FormatError containing %q", err, tc.want)
			}
		})
	}
}

// fixChecksum recomputes the trailer so structural checks are reached.
func fixChecksum(b []byte) []byte {
	if len(b) >= headerSize+trailerSize {
		binary.LittleEndian.PutUint64(b[32:], uint64(len(b)))
		sum := sha256.Sum256(b[:len(b)-trailerSize])
		copy(b[len(b)-trailerSize:], sum[:])
	}
	return b
}

func TestLoad_RejectsStructuralDamageWithValidChecksum(t *testing.T) {
	data, err := Build(randomRecords(t, 5, 300), 5)
	if err != nil {
		t.Fatal(err)
	}
	rejected := 0
	rng := rand.New(rand.NewSource(6))
	for i := 0; i < 2000; i++ {
		b := append([]byte(nil), data...)
		pos := headerSize + rng.Intn(len(b)-headerSize-trailerSize)
		b[pos] ^= byte(1 + rng.Intn(255))
		db, err := Load(fixChecksum(b))
		if err != nil {
			rejected++
			continue
		}
		// Accepted damage must still give a consistent database.
		if _, err := db.Records(); err != nil {
			continue
		}
	}
	if rejected == 0 {
		t.Fatal("no structural damage was detected")
	}
}

func TestDelta_ApplyEqualsDirectBuild(t *testing.T) {
	for seed := int64(0); seed < 20; seed++ {
		rng := rand.New(rand.NewSource(seed))
		pool := randomRecords(t, 100+seed, 600)
		var a, b []signature.Record
		for _, r := range pool {
			switch rng.Intn(3) {
			case 0:
				a = append(a, r)
			case 1:
				b = append(b, r)
			default:
				a, b = append(a, r), append(b, r)
			}
		}
		dbA, err := Build(a, 10)
		if err != nil {
			t.Fatal(err)
		}
		want, err := Build(b, 11)
		if err != nil {
			t.Fatal(err)
		}
		loadedA, err := Load(dbA)
		if err != nil {
			t.Fatal(err)
		}
		recsA, err := loadedA.Records()
		if err != nil {
			t.Fatal(err)
		}
		d := Diff(recsA, b, 10, 11)
		// Through the text form, as shipped.
		var buf bytes.Buffer
		if _, err := d.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		d2, err := ReadDelta(&buf)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ApplyToDB(loadedA, d2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("seed %d: delta applied to A differs from build(B)", seed)
		}
		if len(d.Added)+len(d.Removed) == 0 && !bytes.Equal(dbA[64:], want[64:]) {
			t.Fatalf("seed %d: empty delta between different sets", seed)
		}
	}
}

func TestDelta_RefusesWrongBase(t *testing.T) {
	a := randomRecords(t, 7, 50)
	b := randomRecords(t, 8, 50)
	d := Diff(a, b, 1, 2)
	if _, err := Apply(b, d); err == nil {
		t.Fatal("delta applied to the wrong base set")
	}
	dbB, _ := Build(b, 5)
	loaded, _ := Load(dbB)
	if _, err := ApplyToDB(loaded, d); err == nil || !strings.Contains(err.Error(), "version") {
		t.Fatalf("ApplyToDB with wrong version: %v", err)
	}
}

func TestReadDelta_Rejects(t *testing.T) {
	for _, s := range []string{
		"", "nope\n", deltaHeader + "\nfrom x\nto 2\n", deltaHeader + "\nfrom 1\nto 2\n*hdb:x\n",
		deltaHeader + "\nfrom 1\nto 2\n+hdb:zz:1:x\n", deltaHeader + "\nfrom 1\nto 2\n\n",
	} {
		if _, err := ReadDelta(strings.NewReader(s)); err == nil {
			t.Errorf("ReadDelta(%q) succeeded", s)
		}
	}
}

func TestReadSources(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.hdb", strings.Repeat("ab", 16)+":10:A\n")
	write("b.ndb", "B:0:*:41424344\n")
	write("c.sfp", strings.Repeat("cd", 32)+":*:C\n")
	recs, err := ReadSources([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 {
		t.Fatalf("got %d records", len(recs))
	}
	write("d.ldb", "x\n")
	_, err = ReadSources([]string{dir})
	if err == nil || !strings.Contains(err.Error(), "d.ldb") || !strings.Contains(err.Error(), "not supported") {
		t.Fatalf("unsupported file not rejected: %v", err)
	}
	os.Remove(filepath.Join(dir, "d.ldb"))
	write("e.ndb", "E:0:*:41424344\nF:0:*:4\n")
	_, err = ReadSources([]string{dir})
	if err == nil || !strings.Contains(err.Error(), "e.ndb:2: ") {
		t.Fatalf("bad line not reported with file and line: %v", err)
	}
	os.Remove(filepath.Join(dir, "e.ndb"))
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	if _, err := ReadSources([]string{dir}); err == nil || !strings.Contains(err.Error(), "sub-directories") {
		t.Fatalf("sub-directory not rejected: %v", err)
	}
	if _, err := ReadSources([]string{filepath.Join(dir, "a.hdb")}); err != nil {
		t.Fatalf("single file source: %v", err)
	}
	if _, err := ReadSources([]string{t.TempDir()}); err == nil {
		t.Fatal("empty directory accepted")
	}
}

// FuzzLoad feeds arbitrary bytes to the loader, once as they are and once
// with a valid checksum so the structural checks are exercised. Anything it
// accepts must list consistent records.
func FuzzLoad(f *testing.F) {
	seed, _ := Build(randomRecords(f, 9, 40), 3)
	f.Add(seed)
	empty, _ := Build(nil, 1)
	f.Add(empty)
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		Load(data)
		b := fixChecksum(append([]byte(nil), data...))
		db, err := Load(b)
		if err != nil {
			return
		}
		recs, err := db.Records()
		if err != nil {
			return
		}
		rebuilt, err := Build(recs, db.Version())
		if err != nil {
			t.Fatalf("records of an accepted database do not rebuild: %v", err)
		}
		if _, err := Load(rebuilt); err != nil {
			t.Fatalf("rebuilt database does not load: %v", err)
		}
		for _, t2 := range []signature.Type{signature.TypeMD5, signature.TypeSHA1, signature.TypeSHA256} {
			h := db.Hashes(t2)
			for i := 0; i < h.Len(); i++ {
				h.Find(h.Hash(i))
			}
		}
	})
}
