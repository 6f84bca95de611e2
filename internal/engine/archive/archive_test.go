package archive

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"testing"
)

type file struct {
	name string
	data []byte
}

func makeZip(t testing.TB, files ...file) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, f := range files {
		w, err := zw.Create(f.name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(f.data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func makeTar(t testing.TB, files ...file) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "dir/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"})
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Size: int64(len(f.data)), Mode: 0o644, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(f.data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func makeGzip(t testing.TB, name string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	zw.Name = name
	zw.Write(data)
	zw.Close()
	return b.Bytes()
}

func TestSniff(t *testing.T) {
	tests := []struct {
		name string
		head []byte
		want Format
	}{
		{"zip", makeZip(t, file{"a", []byte("x")}), Zip},
		{"empty zip", makeZip(t), Zip},
		{"gzip", makeGzip(t, "a", []byte("x")), Gzip},
		{"tar", makeTar(t, file{"a", []byte("x")}), Tar},
		{"text", []byte("hello world"), None},
		{"PK but not zip", []byte("PK\x01\x02zzzz"), None},
		{"gzip magic, bad method", []byte{0x1f, 0x8b, 0x07, 0, 0, 0, 0, 0, 0, 0}, None},
		{"gzip magic, reserved flags", []byte{0x1f, 0x8b, 0x08, 0xe0, 0, 0, 0, 0, 0, 0}, None},
		{"empty", nil, None},
	}
	badTar := makeTar(t, file{"a", []byte("x")})
	badTar[148] ^= 1 // checksum field
	tests = append(tests, struct {
		name string
		head []byte
		want Format
	}{"tar with bad checksum", badTar, None})
	for _, tc := range tests {
		h := tc.head
		if len(h) > SniffLen {
			h = h[:SniffLen]
		}
		if got := Sniff(h); got != tc.want {
			t.Errorf("%s: Sniff = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func readAll(t testing.TB, m Member) ([]byte, error) {
	t.Helper()
	rc, err := m.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestWalkZip_Members(t *testing.T) {
	z := makeZip(t, file{"a.txt", []byte("alpha")}, file{"dir/", nil}, file{"dir/b.bin", bytes.Repeat([]byte{1}, 1000)})
	var names []string
	b := NewBudget(Limits{})
	err := WalkZip(bytes.NewReader(z), int64(len(z)), b, func(m Member) error {
		if m.Err != nil {
			t.Fatalf("%s: %v", m.Name, m.Err)
		}
		data, err := readAll(t, m)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != m.Size {
			t.Fatalf("%s: %d bytes, size %d", m.Name, len(data), m.Size)
		}
		again, err := readAll(t, m) // zip members reopen
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("reopen: %v", err)
		}
		names = append(names, m.Name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "a.txt,dir/b.bin" {
		t.Fatalf("members %v", names)
	}
	if b.Used() != 2*(5+1000) {
		t.Fatalf("budget used %d", b.Used())
	}
}

// zipBomb has one honest member of n zero bytes (deflate makes it ~1000:1).
func zipBomb(t testing.TB, n int) []byte {
	return makeZip(t, file{"zeros.bin", make([]byte, n)})
}

func TestWalkZip_BombReportedWithoutUnpacking(t *testing.T) {
	z := zipBomb(t, 20<<20)
	if len(z) > 100<<10 {
		t.Fatalf("test bomb is %d bytes; expected strong compression", len(z))
	}
	b := NewBudget(Limits{})
	var got *Error
	err := WalkZip(bytes.NewReader(z), int64(len(z)), b, func(m Member) error {
		got = m.Err
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Kind != KindLimit || !strings.Contains(got.Reason, "compression ratio") {
		t.Fatalf("member error = %v, want archive_limit for the ratio", got)
	}
	if b.Used() != 0 {
		t.Fatalf("%d bytes were unpacked from a bomb", b.Used())
	}
}

// TestWalkZip_LyingSizes: a member declaring a small size whose deflate
// stream inflates to much more is cut off right after the declared size.
func TestWalkZip_LyingSizes(t *testing.T) {
	var comp bytes.Buffer
	fw, _ := flate.NewWriter(&comp, flate.BestCompression)
	fw.Write(make([]byte, 50<<20))
	fw.Close()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	w, err := zw.CreateRaw(&zip.FileHeader{Name: "liar.bin", Method: zip.Deflate,
		CompressedSize64: uint64(comp.Len()), UncompressedSize64: 1000, CRC32: crc32.ChecksumIEEE(make([]byte, 1000))})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(comp.Bytes())
	zw.Close()
	bud := NewBudget(Limits{})
	var readErr error
	WalkZip(bytes.NewReader(b.Bytes()), int64(b.Len()), bud, func(m Member) error {
		_, readErr = readAll(t, m)
		return nil
	})
	if readErr == nil {
		t.Fatal("over-long member read without error")
	}
	if bud.Used() > 1<<20 {
		t.Fatalf("unpacked %d bytes from a member declaring 1000", bud.Used())
	}
}

func TestWalkZip_TotalAndMemberLimits(t *testing.T) {
	z := makeZip(t, file{"a", bytes.Repeat([]byte("abc"), 1000)}, file{"b", bytes.Repeat([]byte("xyz"), 1000)})
	b := NewBudget(Limits{MaxTotalSize: 4000})
	n := 0
	err := WalkZip(bytes.NewReader(z), int64(len(z)), b, func(m Member) error {
		n++
		_, err := readAll(t, m)
		return err
	})
	var ae *Error
	if !errors.As(err, &ae) || ae.Kind != KindLimit || n != 1 {
		t.Fatalf("total limit: err %v after %d members", err, n)
	}
	b = NewBudget(Limits{MaxMemberSize: 2000})
	var merr *Error
	WalkZip(bytes.NewReader(z), int64(len(z)), b, func(m Member) error {
		if m.Err != nil {
			merr = m.Err
		}
		return nil
	})
	if merr == nil || merr.Kind != KindLimit {
		t.Fatalf("member limit not reported: %v", merr)
	}
	b = NewBudget(Limits{MaxMembers: 1})
	err = WalkZip(bytes.NewReader(z), int64(len(z)), b, func(Member) error { return nil })
	if !errors.As(err, &ae) || ae.Kind != KindLimit {
		t.Fatalf("member count limit: %v", err)
	}
}

func TestWalkZip_Corrupt(t *testing.T) {
	z := makeZip(t, file{"a.txt", bytes.Repeat([]byte("hello "), 100)})
	for _, data := range [][]byte{z[:len(z)/2], z[:30], []byte("PK\x03\x04 garbage garbage")} {
		err := WalkZip(bytes.NewReader(data), int64(len(data)), NewBudget(Limits{}), func(Member) error { return nil })
		var ae *Error
		if !errors.As(err, &ae) || ae.Kind != KindCorrupt {
			t.Errorf("truncated zip (%d bytes): err %v, want archive_corrupt", len(data), err)
		}
	}
	// Damaged member data: the read fails (checksum), it does not panic.
	bad := append([]byte(nil), z...)
	bad[40] ^= 0xff
	var readErr error
	WalkZip(bytes.NewReader(bad), int64(len(bad)), NewBudget(Limits{}), func(m Member) error {
		_, readErr = readAll(t, m)
		return nil
	})
	if readErr == nil {
		t.Error("damaged member read without error")
	}
}

func TestWalkTar(t *testing.T) {
	tr := makeTar(t, file{"a", []byte("alpha")}, file{"sub/b", []byte("beta")})
	var names []string
	err := WalkTar(bytes.NewReader(tr), NewBudget(Limits{}), func(m Member) error {
		data, err := readAll(t, m)
		if err != nil {
			return err
		}
		names = append(names, m.Name+"="+string(data))
		if _, err := m.Open(); err == nil {
			t.Error("tar member opened twice")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "a=alpha,sub/b=beta" {
		t.Fatalf("members %v (directories and links must be skipped)", names)
	}
	// Truncated: an error, not a panic.
	big := makeTar(t, file{"a", bytes.Repeat([]byte("x"), 5000)})
	err = WalkTar(bytes.NewReader(big[:2000]), NewBudget(Limits{}), func(m Member) error {
		_, err := readAll(t, m)
		return err
	})
	var ae *Error
	if !errors.As(err, &ae) || ae.Kind != KindCorrupt {
		t.Fatalf("truncated tar: %v", err)
	}
	// Member larger than the member limit: reported, skipped.
	var merr *Error
	err = WalkTar(bytes.NewReader(big), NewBudget(Limits{MaxMemberSize: 100}), func(m Member) error {
		merr = m.Err
		return nil
	})
	if err != nil || merr == nil || merr.Kind != KindLimit {
		t.Fatalf("member limit: %v %v", err, merr)
	}
}

func TestOpenGzip(t *testing.T) {
	g := makeGzip(t, "inner.txt", []byte("hello gzip"))
	name, r, err := OpenGzip(bytes.NewReader(g), NewBudget(Limits{}))
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(r)
	if err != nil || string(data) != "hello gzip" || name != "inner.txt" {
		t.Fatalf("got %q %q %v", name, data, err)
	}
	// Bomb: stopped by the ratio check soon after RatioMinSize.
	bomb := makeGzip(t, "", make([]byte, 64<<20))
	b := NewBudget(Limits{})
	_, r, err = OpenGzip(bytes.NewReader(bomb), b)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, r)
	var ae *Error
	if !errors.As(err, &ae) || ae.Kind != KindLimit {
		t.Fatalf("gzip bomb: %v", err)
	}
	if b.Used() > 2*DefaultRatioMinSize {
		t.Fatalf("unpacked %d bytes of a gzip bomb", b.Used())
	}
	// Truncated stream: a corrupt error while reading.
	_, r, err = OpenGzip(bytes.NewReader(g[:len(g)-6]), NewBudget(Limits{}))
	if err == nil {
		_, err = io.ReadAll(r)
	}
	if !errors.As(err, &ae) || ae.Kind != KindCorrupt {
		t.Fatalf("truncated gzip: %v", err)
	}
	// Bad header.
	if _, _, err := OpenGzip(strings.NewReader("\x1f\x8bxx"), NewBudget(Limits{})); !errors.As(err, &ae) || ae.Kind != KindCorrupt {
		t.Fatalf("bad header: %v", err)
	}
}

func TestGzipInnerName(t *testing.T) {
	for _, c := range [][3]string{
		{"a.tar.gz", "", "a.tar"}, {"x.tgz", "", "x.tar"}, {"eicar.com.GZ", "", "eicar.com"}, {"raw", "", "raw.out"},
		{"a.gz", "dir/../stored.txt", "stored.txt"}, {"a.gz", `c:\x\y.txt`, "y.txt"},
	} {
		if got := GzipInnerName(c[0], c[1]); got != c[2] {
			t.Errorf("GzipInnerName(%q, %q) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
}

// fuzzLimits keeps fuzz iterations small.
var fuzzLimits = Limits{MaxTotalSize: 4 << 20, MaxMemberSize: 1 << 20, MaxMembers: 64, RatioMinSize: 64 << 10, MaxRatio: 50}

func FuzzWalkZip(f *testing.F) {
	f.Add(makeZip(f, file{"a", []byte("hello")}, file{"b/c", bytes.Repeat([]byte("x"), 300)}))
	f.Add(zipBomb(f, 1<<20))
	f.Add([]byte("PK\x05\x06" + strings.Repeat("\x00", 18)))
	f.Fuzz(func(t *testing.T, data []byte) {
		b := NewBudget(fuzzLimits)
		WalkZip(bytes.NewReader(data), int64(len(data)), b, func(m Member) error {
			if m.Err != nil {
				return nil
			}
			rc, err := m.Open()
			if err != nil {
				return nil
			}
			io.Copy(io.Discard, rc)
			rc.Close()
			return nil
		})
		if b.Used() > fuzzLimits.MaxTotalSize+(64<<10) {
			t.Fatalf("budget overrun: %d", b.Used())
		}
	})
}

func FuzzWalkTar(f *testing.F) {
	f.Add(makeTar(f, file{"a", []byte("hello")}, file{"b", []byte("world")}))
	f.Fuzz(func(t *testing.T, data []byte) {
		b := NewBudget(fuzzLimits)
		WalkTar(bytes.NewReader(data), b, func(m Member) error {
			if m.Err != nil {
				return nil
			}
			rc, err := m.Open()
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, rc)
			return err
		})
		Sniff(data)
	})
}

func FuzzOpenGzip(f *testing.F) {
	f.Add(makeGzip(f, "x", []byte("hello hello hello")))
	f.Add(makeGzip(f, "", make([]byte, 200<<10)))
	f.Fuzz(func(t *testing.T, data []byte) {
		b := NewBudget(fuzzLimits)
		_, r, err := OpenGzip(bytes.NewReader(data), b)
		if err != nil {
			return
		}
		io.Copy(io.Discard, r)
		if b.Used() > fuzzLimits.MaxTotalSize+(64<<10) {
			t.Fatalf("budget overrun: %d", b.Used())
		}
	})
}
