package trust_test

import (
	"context"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"testing"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/mamori/mamori/internal/updates/repo"
	"github.com/mamori/mamori/internal/updates/source"
	"github.com/mamori/mamori/internal/updates/trust"
	"github.com/mamori/mamori/internal/updates/updatestest"
)

func resignFile[T metadata.Roles](t *testing.T, path string, keyFile string, edit func(*metadata.Metadata[T])) []byte {
	t.Helper()
	var m metadata.Metadata[T]
	if _, err := m.FromFile(path); err != nil {
		t.Fatal(err)
	}
	edit(&m)
	m.ClearSignatures()
	var key ed25519.PrivateKey
	if keyFile == "" {
		_, key, _ = ed25519.GenerateKey(nil)
	} else {
		var err error
		if key, err = repo.LoadKey(keyFile); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := signature.LoadSigner(key, 0)
	if _, err := m.Sign(s); err != nil {
		t.Fatal(err)
	}
	b, _ := m.ToBytes(false)
	return b
}

func TestVerifyRootChain_RefusesBrokenChains(t *testing.T) {
	r := updatestest.NewRepo(t, 10, 2, 20)
	if _, err := r.RotateRoot(repo.RotateOptions{NewRootKey: filepath.Join(t.TempDir(), "k2.pem")}); err != nil {
		t.Fatal(err)
	}
	v2, _ := os.ReadFile(filepath.Join(r.Public(), "metadata", "2.root.json"))
	if err := trust.VerifyRootChain([][]byte{r.Root, v2}, v2); err != nil {
		t.Fatalf("valid chain: %v", err)
	}
	forged := resignFile(t, filepath.Join(r.Public(), "metadata", "2.root.json"), "", func(m *metadata.Metadata[metadata.RootType]) {})
	for name, tc := range map[string]struct {
		chain   [][]byte
		trusted []byte
		kind    trust.Kind
	}{
		"forged second root":               {[][]byte{r.Root, forged}, forged, trust.KindSignature},
		"does not end at the trusted root": {[][]byte{r.Root}, v2, trust.KindVersion},
		"starts above version 1":           {[][]byte{v2}, v2, trust.KindVersion},
		"empty":                            {nil, v2, trust.KindNoRoot},
		"garbage":                          {[][]byte{[]byte("{}")}, v2, trust.KindFormat},
	} {
		if err := trust.VerifyRootChain(tc.chain, tc.trusted); trust.KindOf(err) != tc.kind {
			t.Errorf("%s: %v, want kind %s", name, err, tc.kind)
		}
	}
}

// An attacker who held the old timestamp key pushed a timestamp with a huge
// version into the client's cache (fast-forward). After the publisher rotates
// the timestamp key, the client must discard it and accept the real, lower
// version.
func TestRefresh_RecoversFromAFastForwardAfterAKeyRotation(t *testing.T) {
	r := updatestest.NewRepo(t, 10, 2, 20)
	r.PublishNext(t, 2, 0)
	cache := t.TempDir()
	src := source.NewDir(r.Public(), nil)
	if _, err := trust.Refresh(context.Background(), src, trust.Options{CacheDir: cache, InitialRoot: r.Root}); err != nil {
		t.Fatal(err)
	}
	evil := resignFile(t, filepath.Join(r.Public(), "metadata", "timestamp.json"), filepath.Join(r.Dir, "keys", "timestamp.pem"),
		func(m *metadata.Metadata[metadata.TimestampType]) { m.Signed.Version = 999999 })
	os.WriteFile(filepath.Join(cache, "timestamp.json"), evil, 0o644)
	r.PublishNext(t, 2, 0)
	if _, err := trust.Refresh(context.Background(), src, trust.Options{CacheDir: cache}); trust.KindOf(err) != trust.KindVersion {
		t.Fatalf("before the rotation the fast-forwarded cache wins: %v", err)
	}
	if _, err := r.RotateRoot(repo.RotateOptions{RotateOnline: true}); err != nil {
		t.Fatal(err)
	}
	st, err := trust.Refresh(context.Background(), src, trust.Options{CacheDir: cache})
	if err != nil {
		t.Fatalf("after the rotation: %v", err)
	}
	if st.RootVersion() != 2 || st.TimestampVersion() >= 999999 {
		t.Fatalf("root %d timestamp %d", st.RootVersion(), st.TimestampVersion())
	}
}

func TestRefresh_SameVersionWithOtherContentIsRefused(t *testing.T) {
	r := updatestest.NewRepo(t, 10, 2, 20)
	r.PublishNext(t, 2, 0)
	cache := t.TempDir()
	src := source.NewDir(r.Public(), nil)
	if _, err := trust.Refresh(context.Background(), src, trust.Options{CacheDir: cache, InitialRoot: r.Root}); err != nil {
		t.Fatal(err)
	}
	// the timestamp key holder signs a second timestamp with the same version
	tsPath := filepath.Join(r.Public(), "metadata", "timestamp.json")
	other := resignFile(t, tsPath, filepath.Join(r.Dir, "keys", "timestamp.pem"),
		func(m *metadata.Metadata[metadata.TimestampType]) { m.Signed.Expires = m.Signed.Expires.Add(1) })
	os.WriteFile(tsPath, other, 0o644)
	if _, err := trust.Refresh(context.Background(), src, trust.Options{CacheDir: cache}); trust.KindOf(err) != trust.KindVersion {
		t.Fatalf("equal version, other content: %v", err)
	}
}

func TestRemotePath(t *testing.T) {
	tf := metadata.TargetFile()
	tf.Path = "engine/full-7.mdb.zst"
	tf.Length = 3
	tf.Hashes["sha256"] = make([]byte, 32)
	got, err := trust.RemotePath(tf)
	if err != nil || got != "targets/engine/0000000000000000000000000000000000000000000000000000000000000000.full-7.mdb.zst" {
		t.Fatalf("%q %v", got, err)
	}
	tf.Hashes = metadata.Hashes{"sha512": make([]byte, 64)}
	if _, err := trust.RemotePath(tf); err == nil {
		t.Fatal("a target without SHA-256 was accepted")
	}
}
