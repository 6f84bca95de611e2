package client

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/engine/signature"
	"github.com/mamori/mamori/internal/updates/source"
	"github.com/mamori/mamori/internal/updates/trust"
	"github.com/mamori/mamori/internal/updates/updatestest"
)

// env is a repository served over HTTP (with hooks to misbehave) and an
// agent state directory.
type env struct {
	t     *testing.T
	r     *updatestest.Repo
	sets  map[uint64][]signature.Record
	srv   *httptest.Server
	state string

	mu       sync.Mutex
	override func(w http.ResponseWriter, r *http.Request) bool // true: handled
	requests []string
}

func newEnv(t *testing.T, window, checkpoint, n int) *env {
	t.Helper()
	e := &env{t: t, r: updatestest.NewRepo(t, window, checkpoint, n), sets: map[uint64][]signature.Record{}, state: filepath.Join(t.TempDir(), "state")}
	fs := http.FileServer(http.Dir(e.r.Public()))
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.requests = append(e.requests, r.URL.Path+" "+r.Header.Get("Range"))
		o := e.override
		e.mu.Unlock()
		if o != nil && o(w, r) {
			return
		}
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) publish(add, remove int) uint64 {
	e.t.Helper()
	v := e.r.PublishNext(e.t, add, remove)
	e.sets[v] = enginedb.Normalize(e.r.Evo.Records())
	return v
}

func (e *env) setOverride(f func(w http.ResponseWriter, r *http.Request) bool) {
	e.mu.Lock()
	e.override = f
	e.mu.Unlock()
}

func (e *env) takeRequests() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.requests
	e.requests = nil
	return r
}

func (e *env) config(sources ...string) Config {
	if len(sources) == 0 {
		sources = []string{e.srv.URL}
	}
	return Config{StateDir: e.state, Sources: sources, TrustedRoot: e.r.Root, StallTimeout: 5 * time.Second,
		sleep: func(ctx context.Context, d time.Duration) error { return ctx.Err() }}
}

func (e *env) direct(cfg Config) *Direct {
	e.t.Helper()
	d, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

func (e *env) update(d *Direct) (Result, error) {
	return d.Update(context.Background(), UpdateOptions{})
}

// mustBeAt checks the installed engine is exactly version v of the
// published record sets.
func (e *env) mustBeAt(v uint64) {
	e.t.Helper()
	st, err := OpenStore(e.state)
	if err != nil {
		e.t.Fatal(err)
	}
	cur, path := st.Current()
	if cur != v {
		e.t.Fatalf("installed engine is %d, want %d", cur, v)
	}
	if path == "" {
		return
	}
	got, err := os.ReadFile(path)
	if err != nil {
		e.t.Fatal(err)
	}
	want, err := enginedb.Build(e.sets[v], v)
	if err != nil {
		e.t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		e.t.Fatalf("engine %d on disk differs from Build(records of %d)", v, v)
	}
}

// remote returns the URL path of a target as the repository stores it.
func (e *env) remote(path string) string {
	e.t.Helper()
	st, err := trust.Refresh(context.Background(), source.NewDir(e.r.Public(), nil), trust.Options{CacheDir: e.t.TempDir(), InitialRoot: e.r.Root})
	if err != nil {
		e.t.Fatal(err)
	}
	tf := st.Targets()[path]
	if tf == nil {
		e.t.Fatalf("%s is not listed", path)
	}
	name, _ := trust.RemotePath(tf)
	return "/" + name
}

// logicalVolume is the logical change volume between two versions: the net
// delta, compressed as one stream the way the repository compresses.
func (e *env) logicalVolume(from, to uint64) int64 {
	var b bytes.Buffer
	enginedb.Diff(e.sets[from], e.sets[to], from, to).WriteTo(&b)
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1))
	defer enc.Close()
	return int64(len(enc.EncodeAll(b.Bytes(), nil)))
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func hasPrefix(reqs []string, prefix string) int {
	n := 0
	for _, r := range reqs {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}
