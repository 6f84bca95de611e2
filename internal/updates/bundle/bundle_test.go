package bundle

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeTarBytes(t testing.TB, hdrs []*tar.Header, bodies []string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i, h := range hdrs {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if bodies[i] != "" {
			tw.Write([]byte(bodies[i]))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func openBytes(t testing.TB, b []byte) (*Tar, error) {
	p := filepath.Join(t.TempDir(), "b.tar")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return OpenTar(p)
}

func TestWriteTarOpenTar_RoundTrip(t *testing.T) {
	src := filepath.Join(t.TempDir(), "blob")
	os.WriteFile(src, bytes.Repeat([]byte("x"), 70000), 0o644)
	files := []File{{Name: "metadata/timestamp.json", Data: []byte(`{"a":1}`)}, {Name: "targets/engine/abc.full-2.mdb.zst", Path: src}, {Name: "bundle.json", Data: []byte("{}")}}
	var buf bytes.Buffer
	var last, total int64
	if err := WriteTar(&buf, files, time.Unix(1, 0), func(d, tot int64) { last, total = d, tot }); err != nil {
		t.Fatal(err)
	}
	if last != total || total != 70000+7+2 {
		t.Fatalf("progress ended at %d/%d", last, total)
	}
	tb, err := openBytes(t, buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	if tb.Len() != 3 {
		t.Fatalf("%d files", tb.Len())
	}
	r, n, err := tb.Open("targets/engine/abc.full-2.mdb.zst")
	if err != nil || n != 70000 {
		t.Fatal(n, err)
	}
	b, _ := io.ReadAll(r)
	if !bytes.Equal(b, bytes.Repeat([]byte("x"), 70000)) {
		t.Fatal("content differs")
	}
	if _, _, err := tb.Open("metadata/none"); !os.IsNotExist(err) && !strings.Contains(err.Error(), "not exist") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestOpenTar_RefusesAmbiguousOrUnsafeBundles(t *testing.T) {
	reg := func(name string) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: 1, Mode: 0o644}
	}
	cases := map[string][]*tar.Header{
		"duplicate":  {reg("metadata/a"), reg("metadata/a")},
		"dup dot":    {reg("metadata/a"), reg("./metadata/a")},
		"traversal":  {reg("../etc/passwd")},
		"inner ..":   {reg("metadata/../../x")},
		"absolute":   {reg("/etc/passwd")},
		"backslash":  {reg(`metadata\..\x`)},
		"symlink":    {{Typeflag: tar.TypeSymlink, Name: "metadata/l", Linkname: "/etc/passwd"}},
		"hardlink":   {{Typeflag: tar.TypeLink, Name: "metadata/l", Linkname: "metadata/a"}},
		"device":     {{Typeflag: tar.TypeChar, Name: "metadata/dev"}},
		"fifo":       {{Typeflag: tar.TypeFifo, Name: "metadata/fifo"}},
		"control ch": {reg("metadata/a\x01")},
		"empty part": {reg("metadata//a")},
	}
	for name, hdrs := range cases {
		bodies := make([]string, len(hdrs))
		for i, h := range hdrs {
			if h.Typeflag == tar.TypeReg {
				bodies[i] = "x"
			}
		}
		if _, err := openBytes(t, writeTarBytes(t, hdrs, bodies)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// a truncated tar
	good := writeTarBytes(t, []*tar.Header{{Typeflag: tar.TypeReg, Name: "a", Size: 5000, Mode: 0o644}}, []string{strings.Repeat("y", 5000)})
	if _, err := openBytes(t, good[:1500]); err == nil {
		t.Error("a truncated tar was accepted")
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a", "metadata/1.root.json", "targets/engine/ab.delta-1-2.zst"} {
		if err := CheckName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/..", "/a", "a/", "a//b", "c:x", "a\\b", "a\x00", strings.Repeat("a", MaxNameLen+1)} {
		if CheckName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzOpenTar(f *testing.F) {
	f.Add(writeTarBytes(f, []*tar.Header{{Typeflag: tar.TypeReg, Name: "metadata/a", Size: 3, Mode: 0o644}}, []string{"abc"}))
	f.Add(writeTarBytes(f, []*tar.Header{{Typeflag: tar.TypeDir, Name: "metadata/", Mode: 0o755}, {Typeflag: tar.TypeReg, Name: "metadata/b", Size: 1}}, []string{"", "z"}))
	f.Add([]byte("garbage"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "f.tar")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		tb, err := OpenTar(p)
		if err != nil {
			return
		}
		defer tb.Close()
		for name, e := range tb.entries {
			if CheckName(name) != nil {
				t.Fatalf("unsafe name %q indexed", name)
			}
			if e.off < 0 || e.size < 0 || e.off+e.size > int64(len(data)) {
				t.Fatalf("entry %q at %d+%d outside a %d-byte file", name, e.off, e.size, len(data))
			}
			r, n, err := tb.Open(name)
			if err != nil || n != e.size {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(r)
			if int64(len(b)) != n || !bytes.Equal(b, data[e.off:e.off+e.size]) {
				t.Fatalf("entry %q reads %d bytes, not its slice", name, len(b))
			}
		}
	})
}
