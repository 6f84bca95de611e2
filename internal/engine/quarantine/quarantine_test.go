package quarantine

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/engine/scanner"
)

var eicar = []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$` + `EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "q"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func write(t *testing.T, p string, data []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func scanDetections(t *testing.T, dir string) int {
	t.Helper()
	sum, err := scanner.Scan(context.Background(), []string{dir}, scanner.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return int(sum.Detections)
}

func TestQuarantine_RoundTrip(t *testing.T) {
	s := newStore(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "eicar.com")
	content := append(append([]byte(nil), eicar...), bytes.Repeat([]byte("\n"), 3)...)
	write(t, p, content, 0o751)
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(p, mtime, mtime)
	if n := scanDetections(t, dir); n != 1 {
		t.Fatalf("test file not detected before quarantine (%d)", n)
	}

	it, err := s.Quarantine(p, Meta{Detection: "EICAR-Test-File", EngineVersion: 7})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("original still there: %v", err)
	}
	wantMD5, wantSHA := md5.Sum(content), sha256.Sum256(content)
	if it.MD5 != hex.EncodeToString(wantMD5[:]) || it.SHA256 != hex.EncodeToString(wantSHA[:]) ||
		it.Size != int64(len(content)) || it.Detection != "EICAR-Test-File" || it.EngineVersion != 7 ||
		it.Mode.Perm() != 0o751 || !it.ModTime.Equal(mtime) {
		t.Fatalf("item %+v", it)
	}
	if runtime.GOOS != "windows" && (it.UID != os.Getuid() || it.GID < 0) {
		t.Fatalf("owner %d:%d", it.UID, it.GID)
	}
	// Stored bytes: not the original, mode 0600, no extension, not detected.
	ents, _ := os.ReadDir(s.Dir())
	for _, e := range ents {
		fi, _ := e.Info()
		b, _ := os.ReadFile(filepath.Join(s.Dir(), e.Name()))
		if bytes.Contains(b, eicar[:20]) && strings.HasSuffix(e.Name(), ".data") {
			t.Fatalf("%s holds the original bytes", e.Name())
		}
		if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s has mode %v", e.Name(), fi.Mode())
		}
		if strings.Contains(e.Name(), ".com") {
			t.Fatalf("%s keeps the original extension", e.Name())
		}
	}
	if n := scanDetections(t, s.Dir()); n != 0 {
		t.Fatalf("quarantine directory scan found %d detections", n)
	}
	if fi, _ := os.Stat(s.Dir()); runtime.GOOS != "windows" && fi.Mode().Perm() != 0o700 {
		t.Fatalf("store directory mode %v", fi.Mode())
	}

	items, err := s.List()
	if err != nil || len(items) != 1 || items[0].ID != it.ID {
		t.Fatalf("List = %v, %v", items, err)
	}

	// Refuses to overwrite an existing file.
	write(t, p, []byte("new file"), 0o644)
	if _, err := s.Restore(it.ID, "", false); !errors.Is(err, ErrExists) {
		t.Fatalf("restore over existing file: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "new file" {
		t.Fatal("existing file was changed")
	}
	// To another path.
	other := filepath.Join(dir, "restored.bin")
	got, err := s.Restore(it.ID, other, false)
	if err != nil || got != other {
		t.Fatalf("restore: %q %v", got, err)
	}
	b, _ := os.ReadFile(other)
	fi, _ := os.Stat(other)
	if !bytes.Equal(b, content) || fi.Mode().Perm() != 0o751 || !fi.ModTime().Equal(mtime) {
		t.Fatalf("restored %q mode %v mtime %v", b, fi.Mode(), fi.ModTime())
	}
	// Restoring removes the item.
	if items, _ := s.List(); len(items) != 0 {
		t.Fatalf("item still listed after restore: %v", items)
	}
	if _, err := s.Restore(it.ID, other, true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second restore: %v", err)
	}
}

func TestQuarantine_ForceRestoreAndDelete(t *testing.T) {
	s := newStore(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "x.exe")
	write(t, p, eicar, 0o644)
	it, err := s.Quarantine(p, Meta{Detection: "X"})
	if err != nil {
		t.Fatal(err)
	}
	write(t, p, []byte("replacement"), 0o644)
	if _, err := s.Restore(it.ID, "", true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, eicar) {
		t.Fatal("forced restore did not replace the file")
	}
	it2, err := s.Quarantine(p, Meta{Detection: "X"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(it2.ID); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(s.Dir()); len(ents) != 0 {
		t.Fatalf("files left after delete: %v", ents)
	}
	if err := s.Delete(it2.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	for _, bad := range []string{"../../etc/passwd", "", strings.Repeat("A", 32)} {
		if _, err := s.Get(bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) = %v", bad, err)
		}
	}
}

func TestQuarantine_OddBytesInPath(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows file names cannot hold these bytes")
	}
	s := newStore(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "odd\nname \xff\xfe.com")
	write(t, p, eicar, 0o600)
	it, err := s.Quarantine(p, Meta{Detection: "E"})
	if err != nil {
		t.Fatal(err)
	}
	// A fresh store instance reads the sidecar back.
	s2, err := Open(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.Get(it.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.OriginalPathRaw) != p || strings.ContainsRune(got.OriginalPath, 0xff) {
		t.Fatalf("raw %q display %q", got.OriginalPathRaw, got.OriginalPath)
	}
	dest, err := s2.Restore(it.ID, "", false)
	if err != nil || dest != p {
		t.Fatalf("restore: %q %v", dest, err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, eicar) {
		t.Fatal("bytes differ")
	}
}

func TestQuarantine_CorruptedStoreIsRefused(t *testing.T) {
	s := newStore(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	write(t, p, bytes.Repeat([]byte("payload"), 100), 0o644)
	it, err := s.Quarantine(p, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	dp := filepath.Join(s.Dir(), it.ID+".data")
	b, _ := os.ReadFile(dp)
	b[10] ^= 1
	os.WriteFile(dp, b, 0o600)
	if _, err := s.Restore(it.ID, "", false); err == nil || !strings.Contains(err.Error(), "corrupted") {
		t.Fatalf("restore of damaged data: %v", err)
	}
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("damaged data was restored")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

func TestQuarantine_FollowsLinksToTheFile(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symlinks need privileges on Windows")
	}
	s := newStore(t)
	dir := t.TempDir()
	real := filepath.Join(dir, "real.bin")
	write(t, real, eicar, 0o644)
	link := filepath.Join(dir, "link.bin")
	os.Symlink(real, link)
	it, err := s.Quarantine(link, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(real); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("the file behind the link was not moved")
	}
	if want, _ := filepath.EvalSymlinks(dir); string(it.OriginalPathRaw) != filepath.Join(want, "real.bin") {
		t.Fatalf("original path %q", it.OriginalPathRaw)
	}
	if _, err := s.Quarantine(dir, Meta{}); err == nil {
		t.Fatal("a directory was quarantined")
	}
}

func TestOpen_CleansStaleTemporaries(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	stale := filepath.Join(dir, strings.Repeat("a", 32)+".data.tmp")
	fresh := filepath.Join(dir, strings.Repeat("b", 32)+".data.tmp")
	orphan := filepath.Join(dir, strings.Repeat("c", 32)+".data")
	for _, p := range []string{stale, fresh, orphan} {
		os.WriteFile(p, []byte("x"), 0o600)
	}
	os.Chtimes(stale, old, old)
	os.Chtimes(orphan, old, old)
	if _, err := Open(s.Dir()); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{stale: false, fresh: true, orphan: false} {
		_, err := os.Stat(p)
		if (err == nil) != want {
			t.Errorf("%s exists=%v, want %v", filepath.Base(p), err == nil, want)
		}
	}
}
