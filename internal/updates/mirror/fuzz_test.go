package mirror

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/mamori/mamori/internal/updates/source"
	"github.com/mamori/mamori/internal/updates/updatestest"
)

// FuzzHandler throws hostile paths and Range, If-Range, If-None-Match and
// Accept-Encoding headers at the mirror and checks what it answers is
// always a correct slice of a file it may serve.
func FuzzHandler(f *testing.F) {
	r := updatestest.NewRepo(f, 10, 2, 50)
	r.PublishNext(f, 5, 1)
	m, err := New(Config{Dir: filepath.Join(f.TempDir(), "m"), Upstream: r.Dir, TrustedRoot: r.Root, Logger: quiet})
	if err != nil {
		f.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Sync(context.Background()); err != nil {
		f.Fatal(err)
	}
	files := map[string][]byte{}
	var names []string
	for name, e := range m.idx.Load().files {
		b, err := source.NewDir(m.Dir(), nil).ReadFile(context.Background(), name, 1<<30)
		if e.data != nil {
			b = e.data
		}
		if err != nil && e.data == nil {
			f.Fatal(err)
		}
		files["/"+name] = b
		names = append(names, "/"+name)
	}
	for _, n := range names {
		f.Add(n, "bytes=0-10", "", "", "gzip")
		f.Add(n, "bytes=5-,0-1,-3", `"x"`, "*", "")
	}
	f.Add("/../etc/passwd", "bytes=-0", "W/\"a\"", `"a", "b"`, "gzip;q=0.5, br")
	f.Add("/metadata/timestamp.json", "bytes=0-0,0-0,0-0,0-0,0-0,0-0,0-0,0-0,0-0,0-0", "Mon, 02 Jan 2006 15:04:05 GMT", "", "*")
	f.Fuzz(func(t *testing.T, path, rng, ifRange, inm, ae string) {
		req := httptest.NewRequest(http.MethodGet, "http://mirror/", nil)
		req.URL.Path = path
		for k, v := range map[string]string{"Range": rng, "If-Range": ifRange, "If-None-Match": inm, "Accept-Encoding": ae} {
			if v != "" {
				req.Header.Set(k, v)
			}
		}
		w := httptest.NewRecorder()
		m.Handler().ServeHTTP(w, req)
		want, known := files[path]
		code := w.Code
		if !known {
			if code != http.StatusNotFound {
				t.Fatalf("%q is not served by the mirror but answered %d", path, code)
			}
			return
		}
		body := w.Body.Bytes()
		if w.Header().Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatalf("bad gzip body: %v", err)
			}
			body, _ = io.ReadAll(zr)
			if code != http.StatusOK || !bytes.Equal(body, want) {
				t.Fatalf("gzip answer %d differs from the file", code)
			}
			return
		}
		switch code {
		case http.StatusOK:
			if !bytes.Equal(body, want) {
				t.Fatalf("200 body differs from %s", path)
			}
		case http.StatusNotModified, http.StatusPreconditionFailed, http.StatusRequestedRangeNotSatisfiable:
		case http.StatusPartialContent:
			ct, params, _ := mime.ParseMediaType(w.Header().Get("Content-Type"))
			if ct == "multipart/byteranges" {
				mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
				n := 0
				for {
					p, err := mr.NextPart()
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					checkPart(t, p.Header.Get("Content-Range"), p, want)
					n++
				}
				if n < 2 {
					t.Fatalf("multipart answer with %d parts", n)
				}
				return
			}
			checkPart(t, w.Header().Get("Content-Range"), bytes.NewReader(body), want)
		default:
			t.Fatalf("unexpected status %d for %q Range %q", code, path, rng)
		}
	})
}

func checkPart(t *testing.T, cr string, r io.Reader, want []byte) {
	t.Helper()
	first, last, total, ok := source.ParseContentRange(cr)
	if !ok || total != int64(len(want)) {
		t.Fatalf("bad Content-Range %q for a %d-byte file", cr, len(want))
	}
	got, _ := io.ReadAll(r)
	if !bytes.Equal(got, want[first:last+1]) {
		t.Fatalf("part %q is not that slice of the file", cr)
	}
}
