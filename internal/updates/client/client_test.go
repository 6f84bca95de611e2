package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/mamori/mamori/internal/engine/builtin"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/updates/bundle"
	"github.com/mamori/mamori/internal/updates/filelock"
	"github.com/mamori/mamori/internal/updates/repo"
	"github.com/mamori/mamori/internal/updates/scheme"
	"github.com/mamori/mamori/internal/updates/trust"
)

func TestUpdate_FullFirstThenAtMostThreeDeltasWithinTheWindow(t *testing.T) {
	const window, checkpoint = 16, 4
	e := newEnv(t, window, checkpoint, 300)
	v := e.publish(20, 3)
	d := e.direct(e.config())
	res, err := e.update(d)
	if err != nil || res.Method != "full" || res.From != builtin.Version || res.To != v || res.PayloadRequests != 1 {
		t.Fatalf("first update: %+v %v", res, err)
	}
	e.mustBeAt(v)
	// clients behind by various amounts, up to the whole window
	for _, lag := range []int{1, 2, checkpoint - 1, checkpoint + 3, 2*checkpoint + 5, window - 1, window} {
		from := v
		for i := 0; i < lag; i++ {
			v = e.publish(10+i%7, i%3)
		}
		e.takeRequests()
		res, err := e.update(d)
		if err != nil {
			t.Fatalf("lag %d: %v", lag, err)
		}
		if res.Method != "delta" || res.PayloadRequests > scheme.MaxHops || res.Deltas != res.PayloadRequests {
			t.Fatalf("lag %d: %+v", lag, res)
		}
		logical := e.logicalVolume(from, v)
		if float64(res.PayloadBytes) > 1.2*float64(logical) {
			t.Errorf("lag %d: %d payload bytes for a logical change of %d (%.2f×)", lag, res.PayloadBytes, logical, float64(res.PayloadBytes)/float64(logical))
		}
		reqs := e.takeRequests()
		if got := hasPrefix(reqs, "/targets/"); got != res.PayloadRequests {
			t.Fatalf("lag %d: the server saw %d target requests, the client reports %d", lag, got, res.PayloadRequests)
		}
		if int64(len(reqs)) != res.Requests {
			t.Fatalf("lag %d: the server saw %d requests, the client reports %d: %v", lag, len(reqs), res.Requests, reqs)
		}
		e.mustBeAt(v)
	}
	// beyond the window: the compressed full engine
	from := v
	for i := 0; i < window+1; i++ {
		v = e.publish(3, 1)
	}
	res, err = e.update(d)
	if err != nil || res.Method != "full" || res.From != from || res.To != v {
		t.Fatalf("beyond the window: %+v %v", res, err)
	}
	e.mustBeAt(v)
	// up to date: metadata only
	res, err = e.update(d)
	if err != nil || res.Method != "none" || res.PayloadRequests != 0 {
		t.Fatalf("up to date: %+v %v", res, err)
	}
}

func TestUpdate_TamperedBlobIsRefusedAndTheNextSourceIsUsed(t *testing.T) {
	e := newEnv(t, 20, 4, 200)
	v1 := e.publish(10, 1)
	d := e.direct(e.config())
	if _, err := e.update(d); err != nil {
		t.Fatal(err)
	}
	v2 := e.publish(10, 1)
	target := e.remote(scheme.DeltaPath(v1, v2))
	e.setOverride(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != target {
			return false
		}
		b, _ := os.ReadFile(filepath.Join(e.r.Public(), filepath.FromSlash(strings.TrimPrefix(target, "/"))))
		b[len(b)/2] ^= 0x40
		w.Write(b)
		return true
	})
	res, err := e.update(d)
	if trust.KindOf(err) != trust.KindHash {
		t.Fatalf("tampered delta: %+v %v", res, err)
	}
	e.mustBeAt(v1)
	if ents, _ := os.ReadDir(filepath.Join(e.state, "downloads")); len(ents) != 0 {
		t.Fatalf("the tampered download was kept: %v", ents)
	}
	st, _ := ReadStatus(e.state, time.Now())
	if st.LastErrorKind != "hash" || st.ConsecutiveFailures != 1 || st.State != "failing" {
		t.Fatalf("status after the failure: %+v", st)
	}
	// a good second source
	res, err = e.direct(e.config(e.srv.URL, e.r.Dir)).Update(context.Background(), UpdateOptions{})
	if err != nil || res.Source != e.r.Dir || res.To != v2 {
		t.Fatalf("failover: %+v %v", res, err)
	}
	e.mustBeAt(v2)
}

// resign rewrites a metadata file's signed content and signs it with key.
func resign[T metadata.Roles](t *testing.T, path string, key ed25519.PrivateKey, edit func(*metadata.Metadata[T])) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m metadata.Metadata[T]
	if _, err := m.FromBytes(raw); err != nil {
		t.Fatal(err)
	}
	edit(&m)
	m.ClearSignatures()
	s, _ := signature.LoadSigner(key, 0)
	if _, err := m.Sign(s); err != nil {
		t.Fatal(err)
	}
	out, _ := m.ToBytes(false)
	return out
}

func TestUpdate_MetadataResignedWithTheWrongKeyIsRefused(t *testing.T) {
	e := newEnv(t, 20, 4, 100)
	v1 := e.publish(5, 0)
	_, evil, _ := ed25519.GenerateKey(nil)
	// an attacker who replaces the timestamp with one signed by their own key
	tsPath := filepath.Join(e.r.Public(), "metadata", "timestamp.json")
	forged := resign(t, tsPath, evil, func(m *metadata.Metadata[metadata.TimestampType]) { m.Signed.Version += 10 })
	e.setOverride(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/metadata/timestamp.json" {
			w.Write(forged)
			return true
		}
		return false
	})
	d := e.direct(e.config())
	if _, err := e.update(d); trust.KindOf(err) != trust.KindSignature || !errcode.Is(err, errcode.Invalid) {
		t.Fatalf("forged timestamp: %v", err)
	}
	e.mustBeAt(builtin.Version)
	// a forged root rotation (2.root.json signed by the attacker)
	rootPath := filepath.Join(e.r.Public(), "metadata", "1.root.json")
	forgedRoot := resign(t, rootPath, evil, func(m *metadata.Metadata[metadata.RootType]) { m.Signed.Version = 2 })
	e.setOverride(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/metadata/2.root.json" {
			w.Write(forgedRoot)
			return true
		}
		return false
	})
	if _, err := e.update(d); trust.KindOf(err) != trust.KindSignature {
		t.Fatalf("forged root: %v", err)
	}
	e.setOverride(nil)
	if _, err := e.update(d); err != nil {
		t.Fatal(err)
	}
	e.mustBeAt(v1)
}

func TestUpdate_RollbackToAnOlderValidSnapshotIsRefused(t *testing.T) {
	e := newEnv(t, 20, 4, 100)
	e.publish(5, 0)
	old := t.TempDir()
	copyDir(t, e.r.Public(), old) // a validly signed but older repository state
	v2 := e.publish(5, 0)
	d := e.direct(e.config())
	if _, err := e.update(d); err != nil {
		t.Fatal(err)
	}
	e.mustBeAt(v2)
	// a mirror replays the old (still unexpired) metadata
	oldFS := http.FileServer(http.Dir(old))
	e.setOverride(func(w http.ResponseWriter, r *http.Request) bool { oldFS.ServeHTTP(w, r); return true })
	res, err := e.update(d)
	if trust.KindOf(err) != trust.KindVersion || !errcode.Is(err, errcode.Conflict) {
		t.Fatalf("replayed old metadata: %+v %v", res, err)
	}
	e.mustBeAt(v2)
	// the same old state from a folder is refused the same way
	if _, err := e.direct(e.config(old)).Update(context.Background(), UpdateOptions{}); trust.KindOf(err) != trust.KindVersion {
		t.Fatalf("old bundle: %v", err)
	}
	e.mustBeAt(v2)
}

func TestUpdate_ExpiredTimestampIsRefused(t *testing.T) {
	e := newEnv(t, 20, 4, 100)
	e.publish(5, 0)
	cfg := e.config()
	cfg.Now = func() time.Time { return time.Now().Add(3 * 24 * time.Hour) } // timestamps live 2 days
	res, err := e.direct(cfg).Update(context.Background(), UpdateOptions{})
	if trust.KindOf(err) != trust.KindExpired || !errcode.Is(err, errcode.Unavailable) {
		t.Fatalf("frozen repository: %+v %v", res, err)
	}
	e.mustBeAt(builtin.Version)
}

func TestUpdate_MixAndMatchIsRefused(t *testing.T) {
	e := newEnv(t, 20, 4, 100)
	e.publish(5, 0)
	oldTargets, _ := os.ReadFile(filepath.Join(e.r.Public(), "metadata", "2.targets.json"))
	v2 := e.publish(5, 0)
	d := e.direct(e.config())
	// the new timestamp and snapshot with an older (validly signed) targets
	e.setOverride(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/metadata/3.targets.json" {
			w.Write(oldTargets)
			return true
		}
		return false
	})
	if _, err := e.update(d); trust.KindOf(err) != trust.KindHash {
		t.Fatalf("old targets under the new name: %v", err)
	}
	e.mustBeAt(builtin.Version)
	// a full engine of one version served for another version's path
	e.setOverride(nil)
	v3 := e.publish(5, 0)
	oldFull := e.remote(scheme.FullPath(v3))
	e.publish(0, 1)
	e.setOverride(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, ".full-") {
			// the older engine, cut or padded to the length the new one has
			want, _ := os.ReadFile(filepath.Join(e.r.Public(), filepath.FromSlash(strings.TrimPrefix(r.URL.Path, "/"))))
			b, _ := os.ReadFile(filepath.Join(e.r.Public(), filepath.FromSlash(strings.TrimPrefix(oldFull, "/"))))
			b = append(b, make([]byte, len(want))...)[:len(want)]
			w.Write(b)
			return true
		}
		return false
	})
	if _, err := e.update(d); trust.KindOf(err) != trust.KindHash {
		t.Fatalf("another version's engine: %v", err)
	}
	e.mustBeAt(builtin.Version)
	_ = v2
}

func TestUpdate_MaliciousMirrorsAreSurvived(t *testing.T) {
	cases := map[string]func(e *env) func(w http.ResponseWriter, r *http.Request) bool{
		"endless timestamp": func(e *env) func(w http.ResponseWriter, r *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path != "/metadata/timestamp.json" {
					return false
				}
				chunk := bytes.Repeat([]byte(" "), 64<<10)
				for i := 0; i < 64; i++ {
					if _, err := w.Write(chunk); err != nil {
						break
					}
				}
				return true
			}
		},
		"blob longer than signed": func(e *env) func(w http.ResponseWriter, r *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.HasPrefix(r.URL.Path, "/targets/") {
					return false
				}
				b, _ := os.ReadFile(filepath.Join(e.r.Public(), filepath.FromSlash(strings.TrimPrefix(r.URL.Path, "/"))))
				w.Write(append(b, bytes.Repeat([]byte{0}, 1<<20)...))
				return true
			}
		},
		"garbage metadata": func(e *env) func(w http.ResponseWriter, r *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if strings.HasSuffix(r.URL.Path, ".snapshot.json") {
					w.Write([]byte(`{"signed":{"_type":"snapshot"`))
					return true
				}
				return false
			}
		},
		"root probe answers 500": func(e *env) func(w http.ResponseWriter, r *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path == "/metadata/2.root.json" {
					w.WriteHeader(http.StatusInternalServerError)
					return true
				}
				return false
			}
		},
		"always busy for an hour": func(e *env) func(w http.ResponseWriter, r *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Retry-After", "3600")
				w.WriteHeader(http.StatusServiceUnavailable)
				return true
			}
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, 20, 4, 100)
			v := e.publish(5, 0)
			e.setOverride(mk(e))
			d := e.direct(e.config(e.srv.URL, e.r.Dir))
			res, err := e.update(d)
			if err != nil || res.Source != e.r.Dir {
				t.Fatalf("%+v %v", res, err)
			}
			e.mustBeAt(v)
			// alone, the bad mirror fails the update and changes nothing
			v2 := e.publish(5, 0)
			if _, err := e.update(e.direct(e.config())); err == nil {
				t.Fatal("the bad mirror alone succeeded")
			}
			e.mustBeAt(v)
			_ = v2
		})
	}
}

func TestUpdate_InterruptedDownloadIsResumedByTheNextAttempt(t *testing.T) {
	e := newEnv(t, 20, 4, 3000)
	v := e.publish(10, 0)
	full := e.remote(scheme.FullPath(v))
	fullBytes, _ := os.ReadFile(filepath.Join(e.r.Public(), filepath.FromSlash(strings.TrimPrefix(full, "/"))))
	var cuts atomic.Int32
	var cutAtA atomic.Int64
	e.setOverride(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != full || cuts.Load() >= 5 {
			return false
		}
		// each attempt gets a bit further, then the connection dies
		n := int(cuts.Add(1))
		off := 0
		if rg := r.Header.Get("Range"); rg != "" {
			off, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, len(fullBytes)-1, len(fullBytes)))
			w.Header().Set("Content-Length", strconv.Itoa(len(fullBytes)-off))
			w.WriteHeader(http.StatusPartialContent)
		} else {
			w.Header().Set("Content-Length", strconv.Itoa(len(fullBytes)))
		}
		end := off + len(fullBytes)/10
		w.Write(fullBytes[off:end])
		cutAtA.Store(int64(end))
		w.(http.Flusher).Flush()
		c, _, _ := w.(http.Hijacker).Hijack()
		c.Close()
		_ = n
		return true
	})
	d := e.direct(e.config())
	if _, err := e.update(d); err == nil {
		t.Fatal("the update succeeded although every transfer was cut")
	}
	e.mustBeAt(builtin.Version)
	cutAt := int(cutAtA.Load())
	sha := strings.SplitN(filepath.Base(full), ".", 2)[0]
	part := filepath.Join(e.state, "downloads", sha+".part")
	fi, err := os.Stat(part)
	if err != nil || fi.Size() != int64(cutAt) {
		t.Fatalf("partial download: %v size %v, want %d", err, fi, cutAt)
	}
	e.takeRequests()
	res, err := e.update(d)
	if err != nil {
		t.Fatal(err)
	}
	reqs := e.takeRequests()
	want := full + " bytes=" + strconv.Itoa(cutAt) + "-"
	if hasPrefix(reqs, want) != 1 {
		t.Fatalf("the second attempt did not resume at %d: %v", cutAt, reqs)
	}
	if res.PayloadBytes != int64(len(fullBytes)-cutAt) {
		t.Fatalf("payload %d bytes, want the missing %d", res.PayloadBytes, len(fullBytes)-cutAt)
	}
	e.mustBeAt(v)
	if _, err := os.Stat(part); !os.IsNotExist(err) {
		t.Fatal("the finished part file was left behind")
	}
}

func TestUpdate_DiskFullDuringApplyLeavesTheEngineUnchanged(t *testing.T) {
	e := newEnv(t, 20, 4, 500)
	v1 := e.publish(10, 0)
	d := e.direct(e.config())
	if _, err := e.update(d); err != nil {
		t.Fatal(err)
	}
	v2 := e.publish(10, 0)
	for _, victim := range []string{".mdb", "engine.json"} {
		d.store.writeFile = func(path string, data []byte, perm os.FileMode) error {
			if strings.HasSuffix(path, victim) {
				// what a full disk does: part of the file, then ENOSPC
				f, _ := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
				f.Write(data[:len(data)/3])
				f.Close()
				os.Remove(f.Name())
				return &os.PathError{Op: "write", Path: path, Err: syscall.ENOSPC}
			}
			return os.WriteFile(path, data, perm)
		}
		_, err := e.update(d)
		if err == nil || !strings.Contains(err.Error(), "no space left") {
			t.Fatalf("%s: %v", victim, err)
		}
		e.mustBeAt(v1)
		ents, _ := os.ReadDir(filepath.Join(e.state, "engines"))
		for _, en := range ents {
			if en.Name() != strconv.FormatUint(v1, 10)+".mdb" {
				t.Fatalf("%s: %s left in engines/", victim, en.Name())
			}
		}
	}
	d.store.writeFile = nil // restored by the next Update's OpenStore
	d2 := e.direct(e.config())
	if _, err := e.update(d2); err != nil {
		t.Fatal(err)
	}
	e.mustBeAt(v2)
}

func TestUpdate_OfflineBundleOnAnIsolatedAgent(t *testing.T) {
	e := newEnv(t, 20, 4, 200)
	e.publish(5, 0)
	v := e.publish(5, 0)
	usb := filepath.Join(t.TempDir(), "usb")
	copyDir(t, e.r.Public(), usb)
	// the same as one tar file
	var files []bundle.File
	filepath.WalkDir(usb, func(p string, d os.DirEntry, err error) error {
		if !d.IsDir() {
			rel, _ := filepath.Rel(usb, p)
			files = append(files, bundle.File{Name: filepath.ToSlash(rel), Path: p})
		}
		return nil
	})
	tarPath := filepath.Join(t.TempDir(), "bundle.tar")
	f, _ := os.Create(tarPath)
	if err := bundle.WriteTar(f, files, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	f.Close()
	later := time.Now().Add(10 * 24 * time.Hour) // the timestamp expired 8 days ago
	for _, src := range []string{usb, tarPath} {
		e.state = filepath.Join(t.TempDir(), "state")
		// strict: refused
		cfg := e.config(src)
		cfg.Now = func() time.Time { return later }
		cfg.SetStrictOffline()
		if _, err := e.direct(cfg).Update(context.Background(), UpdateOptions{}); trust.KindOf(err) != trust.KindExpired {
			t.Fatalf("%s strict: %v", src, err)
		}
		// a week of staleness allowed: still refused
		cfg = e.config(src)
		cfg.Now = func() time.Time { return later }
		cfg.OfflineMaxAge = 7 * 24 * time.Hour
		if _, err := e.direct(cfg).Update(context.Background(), UpdateOptions{}); trust.KindOf(err) != trust.KindExpired {
			t.Fatalf("%s 7 days: %v", src, err)
		}
		e.mustBeAt(builtin.Version)
		// the default (30 days): accepted, fully verified
		cfg = e.config(src)
		cfg.Now = func() time.Time { return later }
		res, err := e.direct(cfg).Update(context.Background(), UpdateOptions{})
		if err != nil || res.To != v {
			t.Fatalf("%s default: %+v %v", src, res, err)
		}
		e.mustBeAt(v)
		// the same metadata over HTTP at that time is a freeze: refused…
		cfg = e.config()
		cfg.Now = func() time.Time { return later }
		if _, err := e.direct(cfg).Update(context.Background(), UpdateOptions{}); trust.KindOf(err) != trust.KindExpired {
			t.Fatalf("online with the same age: %v", err)
		}
		// …unless the source is declared an offline (air-gapped) mirror
		e.state = filepath.Join(t.TempDir(), "state")
		cfg = e.config("offline:" + e.srv.URL)
		cfg.Now = func() time.Time { return later }
		if res, err := e.direct(cfg).Update(context.Background(), UpdateOptions{}); err != nil || res.To != v {
			t.Fatalf("offline:URL: %+v %v", res, err)
		}
	}
	// a tampered bundle is refused
	victim := ""
	filepath.WalkDir(filepath.Join(usb, "targets"), func(p string, d os.DirEntry, err error) error {
		if !d.IsDir() && strings.Contains(p, ".full-") {
			victim = p
		}
		return nil
	})
	b, _ := os.ReadFile(victim)
	b[10] ^= 1
	os.WriteFile(victim, b, 0o644)
	e.state = filepath.Join(t.TempDir(), "state")
	if _, err := e.direct(e.config(usb)).Update(context.Background(), UpdateOptions{}); trust.KindOf(err) != trust.KindHash {
		t.Fatalf("tampered bundle: %v", err)
	}
	e.mustBeAt(builtin.Version)
}

func TestUpdate_NeverGoesBackwards(t *testing.T) {
	e := newEnv(t, 20, 4, 100)
	e.publish(5, 0)
	oldBundle := t.TempDir()
	copyDir(t, e.r.Public(), oldBundle)
	v2 := e.publish(5, 0)
	if _, err := e.update(e.direct(e.config())); err != nil {
		t.Fatal(err)
	}
	e.mustBeAt(v2)
	// an older bundle on a stick: refused, engine kept
	if _, err := e.direct(e.config(oldBundle)).Update(context.Background(), UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "older") {
		t.Fatalf("older bundle: %v", err)
	}
	e.mustBeAt(v2)
	// a fresh agent that installed v2 elsewhere and is offered v1 keeps v2
	state2 := filepath.Join(t.TempDir(), "s2")
	e.state = state2
	if _, err := e.update(e.direct(e.config())); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(state2, "metadata")) // forget the metadata, keep the engine
	res, err := e.direct(e.config(oldBundle)).Update(context.Background(), UpdateOptions{})
	if err != nil || res.Method != "none" || res.To != v2 || !strings.Contains(res.Note, "older") {
		t.Fatalf("older engine offered: %+v %v", res, err)
	}
	e.mustBeAt(v2)
}

func TestRollback_RestoresThePreviousEngineAndHoldsUpdates(t *testing.T) {
	e := newEnv(t, 20, 4, 100)
	d := e.direct(e.config())
	var vs []uint64
	for i := 0; i < 4; i++ {
		vs = append(vs, e.publish(5, 1))
		if _, err := e.update(d); err != nil {
			t.Fatal(err)
		}
	}
	if got := d.Store().State().Installed; len(got) != DefaultKeepVersions {
		t.Fatalf("kept %d versions, want %d", len(got), DefaultKeepVersions)
	}
	ents, _ := os.ReadDir(filepath.Join(e.state, "engines"))
	if len(ents) != DefaultKeepVersions {
		t.Fatalf("%d engine files on disk", len(ents))
	}
	rb, err := d.Rollback(time.Hour)
	if err != nil || rb.From != vs[3] || rb.To != vs[2] {
		t.Fatalf("rollback: %+v %v", rb, err)
	}
	e.mustBeAt(vs[2])
	res, err := e.update(d)
	if err != nil || res.Method != "none" || !strings.Contains(res.Note, "held") {
		t.Fatalf("update during the hold: %+v %v", res, err)
	}
	e.mustBeAt(vs[2])
	st, _ := ReadStatus(e.state, time.Now())
	if st.State != "held" || st.RolledBackFrom != vs[3] {
		t.Fatalf("status: %+v", st)
	}
	// rolling back again, to the oldest kept
	if rb, err = d.Rollback(time.Hour); err != nil || rb.To != vs[1] {
		t.Fatalf("second rollback: %+v %v", rb, err)
	}
	// a forced (manual) update goes forward and ends the hold
	res, err = d.Update(context.Background(), UpdateOptions{Force: true})
	if err != nil || res.To != vs[3] {
		t.Fatalf("forced update: %+v %v", res, err)
	}
	e.mustBeAt(vs[3])
	if d.Store().Held(time.Now()) {
		t.Fatal("the hold survived a manual update")
	}
}

func TestStore_ADamagedCurrentEngineFallsBackToTheNewestGoodOne(t *testing.T) {
	e := newEnv(t, 20, 4, 100)
	d := e.direct(e.config())
	var vs []uint64
	for i := 0; i < 3; i++ {
		vs = append(vs, e.publish(5, 1))
		if _, err := e.update(d); err != nil {
			t.Fatal(err)
		}
	}
	_, p := d.Current()
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 0xff
	os.WriteFile(p, b, 0o644)
	st, _ := OpenStore(e.state)
	db, err := st.LoadCurrent()
	if err != nil || db.Version() != vs[1] {
		t.Fatalf("fallback: %v %v", db, err)
	}
	if v, _ := st.Current(); v != vs[1] {
		t.Fatalf("current after fallback %d", v)
	}
	// the next update repairs it
	if _, err := e.update(d); err != nil {
		t.Fatal(err)
	}
	e.mustBeAt(vs[2])
}

func TestUpdate_FullOnlyBundleFallsBackFromMissingDeltas(t *testing.T) {
	e := newEnv(t, 20, 4, 200)
	e.publish(5, 0)
	d := e.direct(e.config())
	if _, err := e.update(d); err != nil {
		t.Fatal(err)
	}
	v := e.publish(5, 0)
	usb := t.TempDir()
	copyDir(t, e.r.Public(), usb)
	filepath.WalkDir(usb, func(p string, de os.DirEntry, err error) error {
		if !de.IsDir() && strings.Contains(filepath.Base(p), ".delta-") {
			os.Remove(p)
		}
		return nil
	})
	res, err := e.direct(e.config(usb)).Update(context.Background(), UpdateOptions{})
	if err != nil || res.Method != "full" || !strings.Contains(res.Note, "delta path failed") {
		t.Fatalf("%+v %v", res, err)
	}
	e.mustBeAt(v)
}

func TestUpdate_FollowsARootRotation(t *testing.T) {
	e := newEnv(t, 20, 4, 100)
	e.publish(5, 0)
	d := e.direct(e.config())
	if _, err := e.update(d); err != nil {
		t.Fatal(err)
	}
	if _, err := e.r.RotateRoot(rotateOpts(t)); err != nil {
		t.Fatal(err)
	}
	v := e.publish(5, 0)
	if _, err := e.update(d); err != nil {
		t.Fatal(err)
	}
	e.mustBeAt(v)
	root, _ := trust.CachedRoot(filepath.Join(e.state, "metadata"))
	if !bytes.Contains(root, []byte(`"version":2`)) {
		t.Fatal("the agent did not keep the rotated root")
	}
}

func TestUpdate_PinnedRootSHA256(t *testing.T) {
	e := newEnv(t, 20, 4, 100)
	v := e.publish(5, 0)
	cfg := e.config()
	cfg.TrustedRoot = nil
	cfg.RootSHA256 = strings.Repeat("0", 64)
	if _, err := e.direct(cfg).Update(context.Background(), UpdateOptions{}); trust.KindOf(err) != trust.KindHash {
		t.Fatalf("wrong pin: %v", err)
	}
	cfg.RootSHA256 = "sha256:" + trust.SHA256Hex(e.r.Root)
	if _, err := e.direct(cfg).Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.mustBeAt(v)
	cfg.RootSHA256 = ""
	cfg.StateDir = t.TempDir()
	if _, err := e.direct(cfg).Update(context.Background(), UpdateOptions{}); trust.KindOf(err) != trust.KindNoRoot {
		t.Fatalf("no root at all: %v", err)
	}
}

func TestUpdate_SecondProcessIsRefusedWhileOneRuns(t *testing.T) {
	e := newEnv(t, 20, 4, 100)
	e.publish(5, 0)
	d := e.direct(e.config())
	l, err := d.lock()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	if _, err := e.update(e.direct(e.config())); !errcode.Is(err, errcode.Conflict) {
		t.Fatalf("concurrent update: %v", err)
	}
}

func rotateOpts(t *testing.T) repo.RotateOptions {
	return repo.RotateOptions{NewRootKey: filepath.Join(t.TempDir(), "root2.pem"), RotateOnline: true}
}

// A reader (the agent's inventory reading the status, "engine status")
// must not delete the temporary file of an update in progress; once no
// update holds the lock, such a file is a leftover and goes.
func TestOpenStore_KeepsTemporaryFilesWhileAnUpdateHoldsTheLock(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenStore(dir); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "engines", ".7.mdb.tmp123")
	if err := os.WriteFile(tmp, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := filelock.TryLock(filepath.Join(dir, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadStatus(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("an update's temporary file was removed while it held the lock: %v", err)
	}
	l.Unlock()
	if _, err := OpenStore(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leftover temporary file survived with no update running: %v", err)
	}
}
