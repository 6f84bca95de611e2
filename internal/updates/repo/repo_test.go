package repo_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/engine/signature"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/updates/repo"
	"github.com/mamori/mamori/internal/updates/scheme"
	"github.com/mamori/mamori/internal/updates/source"
	"github.com/mamori/mamori/internal/updates/trust"
	"github.com/mamori/mamori/internal/updates/updatestest"
)

// verified refreshes a fresh client view of the repository.
func verified(t *testing.T, r *updatestest.Repo) *trust.State {
	t.Helper()
	st, err := trust.Refresh(context.Background(), source.NewDir(r.Public(), nil), trust.Options{CacheDir: t.TempDir(), InitialRoot: r.Root})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func blob(t *testing.T, r *updatestest.Repo, st *trust.State, path string) []byte {
	t.Helper()
	tf := st.Targets()[path]
	name, err := trust.RemotePath(tf)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(r.Public(), filepath.FromSlash(name)))
	if err != nil {
		t.Fatal(err)
	}
	if err := trust.VerifyTarget(tf, b); err != nil {
		t.Fatal(err)
	}
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	out, err := dec.DecodeAll(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPublish_ListsExactlyTheScheduledDeltasAndEachIsTheNetChange(t *testing.T) {
	const window, checkpoint = 12, 4
	r := updatestest.NewRepo(t, window, checkpoint, 300)
	sets := map[uint64][]signature.Record{}
	var versions []uint64
	for i := 0; i < 30; i++ {
		v := r.PublishNext(t, 5, 2)
		versions = append(versions, v)
		sets[v] = enginedb.Normalize(r.Evo.Records())
	}
	st := verified(t, r)
	latest := versions[len(versions)-1]
	sched := scheme.Schedule{Window: window, Checkpoint: checkpoint}
	want := map[string]bool{scheme.FullPath(latest): true}
	n := len(versions) - 1
	for h := range sched.Needed(n, 0) {
		want[scheme.DeltaPath(versions[h.From], versions[h.To])] = true
	}
	for p := range st.Targets() {
		if !want[p] {
			t.Errorf("listed %s, which no client in the window needs", p)
		}
	}
	for p := range want {
		if _, ok := st.Targets()[p]; !ok {
			t.Errorf("%s is needed but not listed", p)
		}
	}
	// every listed delta is the exact net change between its versions
	for p, tf := range st.Targets() {
		k, from, to := scheme.ParsePath(p)
		if k != scheme.KindDelta {
			continue
		}
		d, err := enginedb.ReadDelta(bytes.NewReader(blob(t, r, st, p)))
		if err != nil {
			t.Fatal(err)
		}
		di, err := scheme.ParseDeltaInfo(tf.Custom, p)
		if err != nil {
			t.Fatal(err)
		}
		var raw bytes.Buffer
		d.WriteTo(&raw)
		if int64(raw.Len()) != di.Raw {
			t.Errorf("%s: custom raw %d, content %d", p, di.Raw, raw.Len())
		}
		var wantD bytes.Buffer
		enginedb.Diff(sets[from], sets[to], from, to).WriteTo(&wantD)
		if raw.String() != wantD.String() {
			t.Errorf("%s is not Diff(%d, %d)", p, from, to)
		}
	}
	// the full engine is Build(latest set) and its custom metadata says so
	full := blob(t, r, st, scheme.FullPath(latest))
	db, _ := enginedb.Build(sets[latest], latest)
	if !bytes.Equal(full, db) {
		t.Fatal("the full engine is not Build(records, version)")
	}
	fi, err := scheme.ParseFullInfo(st.Targets()[scheme.FullPath(latest)].Custom, scheme.FullPath(latest))
	if err != nil || fi.DBLength != int64(len(db)) || fi.DBSHA256 != trust.SHA256Hex(db) || fi.Release != uint64(n) {
		t.Fatalf("full custom %+v %v", fi, err)
	}
}

func TestPublish_RefusesVersionsThatDoNotGoForward(t *testing.T) {
	r := updatestest.NewRepo(t, 10, 2, 50)
	if _, err := r.Publish(r.Evo.Records(), 1); !errcode.Is(err, errcode.Conflict) {
		t.Fatalf("version 1 (the built-in engine's): %v", err)
	}
	if _, err := r.Publish(r.Evo.Records(), 10); err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint64{9, 10} {
		if _, err := r.Publish(r.Evo.Records(), v); !errcode.Is(err, errcode.Conflict) {
			t.Errorf("version %d after 10: %v", v, err)
		}
	}
	res, err := r.Publish(r.Evo.Step(1, 0), 0)
	if err != nil || res.Version != 11 {
		t.Fatalf("default version: %+v %v", res, err)
	}
}

func TestOpen_TakesTheLockAndRecoversFromAnUncommittedPublish(t *testing.T) {
	r := updatestest.NewRepo(t, 10, 2, 50)
	r.PublishNext(t, 3, 1)
	if _, err := repo.Open(r.Dir, repo.Options{}); !errcode.Is(err, errcode.Conflict) {
		t.Fatalf("second Open while locked: %v", err)
	}
	// a publisher died after writing history but before the timestamp:
	// simulate by restoring the old timestamp after a publish
	ts, _ := os.ReadFile(filepath.Join(r.Public(), "metadata", "timestamp.json"))
	v3 := r.PublishNext(t, 3, 1)
	os.WriteFile(filepath.Join(r.Public(), "metadata", "timestamp.json"), ts, 0o644)
	r.Close()
	r2, err := repo.Open(r.Dir, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if got := r2.LatestVersion(); got != v3-1 {
		t.Fatalf("after recovery the latest version is %d, want %d", got, v3-1)
	}
	res, err := r2.Publish(r.Evo.Step(2, 0), 0)
	if err != nil || res.Version != v3 {
		t.Fatalf("publish after recovery: %+v %v", res, err)
	}
	st := verified(t, &updatestest.Repo{Repo: r2, Dir: r.Dir, Root: r.Root})
	if _, ok := st.Targets()[scheme.FullPath(v3)]; !ok {
		t.Fatal("the republished version is not offered")
	}
}

func TestInit_RefusesANonEmptyDirectoryAndBadSettings(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x"), nil, 0o644)
	if _, _, err := repo.Init(dir, repo.DefaultSettings(), repo.Options{}); !errcode.Is(err, errcode.Conflict) {
		t.Fatalf("non-empty: %v", err)
	}
	for _, mod := range []func(*repo.Settings){
		func(s *repo.Settings) { s.Window = 8; s.Checkpoint = 16 },
		func(s *repo.Settings) { s.Checkpoint = 0 },
		func(s *repo.Settings) { s.TimestampExpiry = repo.Duration(time.Second) },
		func(s *repo.Settings) { s.RootExpiry = repo.Duration(100 * 365 * 24 * time.Hour) },
	} {
		s := repo.DefaultSettings()
		mod(&s)
		if _, _, err := repo.Init(filepath.Join(t.TempDir(), "r"), s, repo.Options{}); !errcode.Is(err, errcode.Invalid) {
			t.Errorf("%+v: %v", s, err)
		}
	}
	if _, err := repo.Open(t.TempDir(), repo.Options{}); !errcode.Is(err, errcode.NotFound) {
		t.Errorf("Open of a non-repository: %v", err)
	}
}

func TestRefresh_ResignsTimestampAndRenewsWhatIsNearExpiry(t *testing.T) {
	clock := &updatestest.FixedClock{T: time.Now()}
	dir := filepath.Join(t.TempDir(), "r")
	r, _, err := repo.Init(dir, repo.DefaultSettings(), repo.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	evo := updatestest.NewEvolver(2, 40)
	if _, err := r.Publish(evo.Records(), 0); err != nil {
		t.Fatal(err)
	}
	st0, _ := r.Status()
	clock.Advance(36 * time.Hour)
	res, err := r.Refresh()
	if err != nil || !res.Timestamp || res.Snapshot || res.Targets {
		t.Fatalf("refresh after 36 h: %+v %v", res, err)
	}
	st1, _ := r.Status()
	if st1.TimestampVersion != st0.TimestampVersion+1 || !st1.TimestampExpires.After(st0.TimestampExpires) {
		t.Fatalf("timestamp not renewed: %+v -> %+v", st0, st1)
	}
	clock.Advance(20 * 24 * time.Hour) // targets (30 d) past half life
	res, err = r.Refresh()
	if err != nil || !res.Targets || !res.Snapshot {
		t.Fatalf("refresh after 21 days: %+v %v", res, err)
	}
	// a client whose clock is now verifies the renewed metadata
	root, _ := os.ReadFile(filepath.Join(dir, "public", "metadata", "1.root.json"))
	st, err := trust.Refresh(context.Background(), source.NewDir(filepath.Join(dir, "public"), nil), trust.Options{CacheDir: t.TempDir(), InitialRoot: root, RefTime: clock.T})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Targets()) != 1 {
		t.Fatalf("targets changed by a refresh: %d", len(st.Targets()))
	}
}

func TestPrune_RemovesWhatLeftTheWindowButNothingListed(t *testing.T) {
	clock := &updatestest.FixedClock{T: time.Now()}
	dir := filepath.Join(t.TempDir(), "r")
	s := repo.DefaultSettings()
	s.Window, s.Checkpoint = 8, 2
	r, _, err := repo.Init(dir, s, repo.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	evo := updatestest.NewEvolver(3, 100)
	for i := 0; i < 25; i++ {
		if _, err := r.Publish(evo.Step(4, 1), 0); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := r.Status()
	// with a grace of a day nothing published today may go
	res, err := r.Prune(24 * time.Hour)
	if err != nil || res.Files != 0 || res.MetadataFiles != 0 {
		t.Fatalf("prune within grace: %+v %v", res, err)
	}
	if res.Releases == 0 {
		t.Fatal("no release outside the window was dropped from the history")
	}
	// make every file old
	filepath.WalkDir(filepath.Join(dir, "public"), func(p string, d os.DirEntry, err error) error {
		if !d.IsDir() {
			os.Chtimes(p, clock.T.Add(-48*time.Hour), clock.T.Add(-48*time.Hour))
		}
		return nil
	})
	res, err = r.Prune(24 * time.Hour)
	if err != nil || res.Files == 0 || res.MetadataFiles == 0 {
		t.Fatalf("prune after grace: %+v %v", res, err)
	}
	after, _ := r.Status()
	if after.PublicBytes >= before.PublicBytes {
		t.Fatalf("public bytes %d -> %d", before.PublicBytes, after.PublicBytes)
	}
	// everything the current metadata lists is still there and verifies
	root, _ := os.ReadFile(filepath.Join(dir, "public", "metadata", "1.root.json"))
	st, err := trust.Refresh(context.Background(), source.NewDir(filepath.Join(dir, "public"), nil), trust.Options{CacheDir: t.TempDir(), InitialRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	for _, tf := range st.Targets() {
		name, _ := trust.RemotePath(tf)
		b, err := os.ReadFile(filepath.Join(dir, "public", filepath.FromSlash(name)))
		if err != nil || trust.VerifyTarget(tf, b) != nil {
			t.Fatalf("%s missing after prune: %v", tf.Path, err)
		}
	}
	// and publishing goes on (the step deltas of the window are kept)
	if _, err := r.Publish(evo.Step(4, 1), 0); err != nil {
		t.Fatal(err)
	}
}

func TestRotateRoot_ClientsFollowAndOldKeysStopWorking(t *testing.T) {
	r := updatestest.NewRepo(t, 10, 2, 50)
	r.PublishNext(t, 2, 0)
	cache := t.TempDir()
	src := source.NewDir(r.Public(), nil)
	if _, err := trust.Refresh(context.Background(), src, trust.Options{CacheDir: cache, InitialRoot: r.Root}); err != nil {
		t.Fatal(err)
	}
	newKey := filepath.Join(t.TempDir(), "root2.pem")
	res, err := r.RotateRoot(repo.RotateOptions{NewRootKey: newKey, RotateOnline: true})
	if err != nil || res.Version != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	v := r.PublishNext(t, 2, 0)
	st, err := trust.Refresh(context.Background(), src, trust.Options{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if st.RootVersion() != 2 || len(st.NewRoots) != 1 {
		t.Fatalf("root version %d, new roots %d", st.RootVersion(), len(st.NewRoots))
	}
	if _, ok := st.Targets()[scheme.FullPath(v)]; !ok {
		t.Fatal("the engine published after the rotation is not offered")
	}
	// the retired timestamp key can no longer sign anything clients accept
	retired := filepath.Join(r.Dir, "keys", "timestamp.pem.retired-1")
	if _, err := os.Stat(retired); err != nil {
		t.Fatal(err)
	}
	// a second rotation with the old root key is refused: it is not a root key any more
	if _, err := r.RotateRoot(repo.RotateOptions{OldRootKeys: []string{filepath.Join(r.Dir, "keys", "root.pem")}}); !errcode.Is(err, errcode.Forbidden) {
		t.Fatalf("rotation signed by a retired root key: %v", err)
	}
	if _, err := r.RotateRoot(repo.RotateOptions{OldRootKeys: []string{newKey}}); err != nil {
		t.Fatalf("rotation by the current root key: %v", err)
	}
}

func TestLoadKey_RefusesWhatIsNotAnEd25519Key(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ec)
	cases := map[string]string{
		"empty":   write("empty", nil),
		"garbage": write("garbage", []byte("hello")),
		"ecdsa":   write("ec", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"wrong":   write("wrong", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		"bad der": write("bad", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})),
		"huge":    write("huge", bytes.Repeat([]byte("A"), 1<<20)),
	}
	for name, p := range cases {
		if _, err := repo.LoadKey(p); !errcode.Is(err, errcode.Invalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := repo.LoadKey(filepath.Join(dir, "none")); !errcode.Is(err, errcode.NotFound) {
		t.Errorf("missing: %v", err)
	}
	p := filepath.Join(dir, "k.pem")
	if _, err := repo.GenerateKey(p); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", fi.Mode().Perm())
	}
	if _, err := repo.GenerateKey(p); err == nil {
		t.Error("GenerateKey overwrote a key file")
	}
	if _, err := repo.LoadKey(p); err != nil {
		t.Error(err)
	}
}

func TestPublishEngineFile_RebuildsFromRecords(t *testing.T) {
	r := updatestest.NewRepo(t, 10, 2, 60)
	db, err := enginedb.Build(r.Evo.Records(), 7)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "e.mdb")
	os.WriteFile(f, db, 0o644)
	res, err := r.PublishEngineFile(f, 0)
	if err != nil || res.Version != 7 {
		t.Fatalf("%+v %v", res, err)
	}
	os.WriteFile(f, db[:len(db)-5], 0o644)
	if _, err := r.PublishEngineFile(f, 9); !errcode.Is(err, errcode.Invalid) {
		t.Fatalf("damaged engine file: %v", err)
	}
	st := verified(t, r)
	if _, ok := st.Targets()[scheme.FullPath(7)]; !ok {
		t.Fatal("not offered")
	}
	_ = strconv.Itoa
	_ = strings.Contains
	_ = errors.New
}
