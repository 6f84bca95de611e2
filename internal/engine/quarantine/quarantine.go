// Package quarantine is the agent's quarantine store: a directory (mode 0700,
// owned by the agent) holding detected files encrypted with a per-item
// AES-256-CTR key, so they can neither run nor be detected again where they
// lie, each with a JSON sidecar of metadata.
//
// Store layout, for an item with id ID (32 hex digits):
//
//	ID.data  the file's bytes encrypted (mode 0600, no original extension)
//	ID.json  the metadata (Item), written last: an item exists iff its
//	         sidecar does
//
// Quarantining copies, fsyncs and verifies the encrypted copy before it
// removes the original, so a crash at any point leaves the file either in
// place or safely stored (possibly both: a crash between storing and
// removing leaves a duplicate, never a loss).
package quarantine

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Errors.
var (
	ErrNotFound = errors.New("quarantine item not found")
	ErrExists   = errors.New("destination already exists (use force to overwrite)")
	ErrChanged  = errors.New("file changed while it was being quarantined")
)

// Item is one quarantined file's metadata (the JSON sidecar).
type Item struct {
	ID string `json:"id"`
	// OriginalPath is the original path for display (invalid UTF-8 bytes
	// replaced); OriginalPathRaw holds the exact bytes and is what Restore
	// uses.
	OriginalPath    string      `json:"original_path"`
	OriginalPathRaw []byte      `json:"original_path_raw"`
	UID             int         `json:"uid"` // -1 if unknown (non-Unix)
	GID             int         `json:"gid"`
	Mode            fs.FileMode `json:"mode"` // permission and special bits
	ModTime         time.Time   `json:"mtime"`
	Size            int64       `json:"size"`
	MD5             string      `json:"md5"`
	SHA256          string      `json:"sha256"`
	Detection       string      `json:"detection"`
	EngineVersion   uint64      `json:"engine_version"`
	QuarantinedAt   time.Time   `json:"quarantined_at"`
	Cipher          string      `json:"cipher"` // "aes-256-ctr"
	Key             []byte      `json:"key"`
	IV              []byte      `json:"iv"`
}

// Meta is what the caller tells about a file it quarantines.
type Meta struct {
	Detection     string
	EngineVersion uint64
}

// Store is a quarantine directory.
type Store struct {
	dir string
	now func() time.Time
}

// Open opens (creating it with mode 0700 if needed) a quarantine store and
// removes leftovers of interrupted operations older than an hour.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("quarantine: empty directory")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("quarantine: %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 && runtime.GOOS != "windows" {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("quarantine: %w", err)
		}
	}
	s := &Store{dir: dir, now: time.Now}
	s.cleanup()
	return s, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) cleanup() {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	cutoff := s.now().Add(-time.Hour)
	for _, e := range ents {
		n := e.Name()
		stale := strings.HasSuffix(n, ".tmp")
		if id, ok := strings.CutSuffix(n, ".data"); ok && validID(id) {
			if _, err := os.Stat(filepath.Join(s.dir, id+".json")); errors.Is(err, fs.ErrNotExist) {
				stale = true // data without sidecar: interrupted before commit
			}
		}
		if !stale {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.ModTime().Before(cutoff) {
			os.Remove(filepath.Join(s.dir, n))
		}
	}
}

func validID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}

func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

func (s *Store) dataPath(id string) string { return filepath.Join(s.dir, id+".data") }
func (s *Store) metaPath(id string) string { return filepath.Join(s.dir, id+".json") }

func newStream(key, iv []byte) (cipher.Stream, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewCTR(blk, iv), nil
}

// Quarantine moves the file at path into the store. The path is resolved
// through symbolic links first, so the file itself (not a link to it) is
// moved. Only regular files can be quarantined.
func (s *Store) Quarantine(path string, m Meta) (Item, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return Item{}, fmt.Errorf("quarantine %q: %w", path, err)
	}
	if abs, err := filepath.Abs(real); err == nil {
		real = abs
	}
	src, err := openNoFollow(real)
	if err != nil {
		return Item{}, fmt.Errorf("quarantine %q: %w", path, err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return Item{}, fmt.Errorf("quarantine %q: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return Item{}, fmt.Errorf("quarantine %q: not a regular file", path)
	}
	id, err := newID()
	if err != nil {
		return Item{}, err
	}
	it := Item{
		ID: id, OriginalPath: strings.ToValidUTF8(real, string(utf8.RuneError)), OriginalPathRaw: []byte(real),
		UID: -1, GID: -1, Mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky),
		ModTime: fi.ModTime(), Size: fi.Size(), Detection: m.Detection, EngineVersion: m.EngineVersion,
		QuarantinedAt: s.now().UTC(), Cipher: "aes-256-ctr", Key: make([]byte, 32), IV: make([]byte, aes.BlockSize),
	}
	it.UID, it.GID = owner(fi)
	if _, err := rand.Read(it.Key); err != nil {
		return Item{}, err
	}
	if _, err := rand.Read(it.IV); err != nil {
		return Item{}, err
	}
	tmpData := s.dataPath(id) + ".tmp"
	committed := false
	defer func() {
		if !committed {
			os.Remove(tmpData)
		}
	}()
	// 1. Encrypted copy, hashed on the way, fsynced.
	md5h, sha := md5.New(), sha256.New()
	if err := s.writeEncrypted(tmpData, io.TeeReader(src, io.MultiWriter(md5h, sha)), it.Key, it.IV); err != nil {
		return Item{}, fmt.Errorf("quarantine %q: %w", path, err)
	}
	it.MD5, it.SHA256 = hex.EncodeToString(md5h.Sum(nil)), hex.EncodeToString(sha.Sum(nil))
	// 2. The original must not have changed meanwhile.
	if fi2, err := src.Stat(); err != nil || fi2.Size() != fi.Size() || !fi2.ModTime().Equal(fi.ModTime()) {
		return Item{}, fmt.Errorf("quarantine %q: %w", path, ErrChanged)
	}
	if n, err := s.verifyData(tmpData, &it); err != nil || n != it.Size {
		if err == nil {
			err = fmt.Errorf("stored %d bytes of %d", n, it.Size)
		}
		return Item{}, fmt.Errorf("quarantine %q: verify stored copy: %w", path, err)
	}
	// 3. Commit: data, then sidecar.
	if err := os.Rename(tmpData, s.dataPath(id)); err != nil {
		return Item{}, err
	}
	if err := s.writeMeta(it); err != nil {
		os.Remove(s.dataPath(id))
		return Item{}, err
	}
	committed = true
	syncDir(s.dir)
	// 4. Only now remove the original.
	src.Close()
	if err := os.Remove(real); err != nil {
		s.Delete(id)
		return Item{}, fmt.Errorf("quarantine %q: remove original: %w", path, err)
	}
	syncDir(filepath.Dir(real))
	return it, nil
}

func (s *Store) writeEncrypted(dst string, r io.Reader, key, iv []byte) error {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	st, err := newStream(key, iv)
	if err != nil {
		f.Close()
		return err
	}
	if _, err := io.Copy(cipher.StreamWriter{S: st, W: f}, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// verifyData decrypts stored data, checks its SHA-256 against the item and
// returns its length.
func (s *Store) verifyData(path string, it *Item) (int64, error) {
	var n int64
	err := s.decrypt(path, it, func(r io.Reader) error {
		var err error
		n, err = io.Copy(io.Discard, r)
		return err
	})
	return n, err
}

// decrypt streams an item's plaintext to fn and fails if it does not hash to
// the item's SHA-256.
func (s *Store) decrypt(path string, it *Item, fn func(io.Reader) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := newStream(it.Key, it.IV)
	if err != nil {
		return err
	}
	sha := sha256.New()
	if err := fn(io.TeeReader(cipher.StreamReader{S: st, R: f}, sha)); err != nil {
		return err
	}
	if got := hex.EncodeToString(sha.Sum(nil)); got != it.SHA256 {
		return fmt.Errorf("stored data is corrupted (sha256 %s, want %s)", got, it.SHA256)
	}
	return nil
}

func (s *Store) writeMeta(it Item) error {
	b, err := json.MarshalIndent(it, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.metaPath(it.ID) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.metaPath(it.ID))
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// Get returns one item.
func (s *Store) Get(id string) (Item, error) {
	if !validID(id) {
		return Item{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	b, err := os.ReadFile(s.metaPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return Item{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Item{}, err
	}
	var it Item
	if err := json.Unmarshal(b, &it); err != nil {
		return Item{}, fmt.Errorf("quarantine item %s: bad metadata: %w", id, err)
	}
	if it.ID != id || len(it.Key) != 32 || len(it.IV) != aes.BlockSize {
		return Item{}, fmt.Errorf("quarantine item %s: inconsistent metadata", id)
	}
	return it, nil
}

// List returns all items, oldest first.
func (s *Store) List() ([]Item, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []Item
	var errs []error
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !validID(id) {
			continue
		}
		it, err := s.Get(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, it)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].QuarantinedAt.Equal(out[j].QuarantinedAt) {
			return out[i].QuarantinedAt.Before(out[j].QuarantinedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, errors.Join(errs...)
}

// Restore writes an item's original bytes back to its original path, or to
// `to` if not empty, with its mode, modification time and (where permitted)
// owner, then removes the item. It refuses to replace an existing file
// unless force is set. The returned path is where the file was written.
func (s *Store) Restore(id, to string, force bool) (string, error) {
	it, err := s.Get(id)
	if err != nil {
		return "", err
	}
	dest := to
	if dest == "" {
		dest = string(it.OriginalPathRaw)
	}
	if !force {
		if _, err := os.Lstat(dest); err == nil {
			return "", fmt.Errorf("restore %s to %q: %w", id, dest, ErrExists)
		}
	}
	dir := filepath.Dir(dest)
	rnd, err := newID()
	if err != nil {
		return "", err
	}
	tmp := filepath.Join(dir, ".mamori-restore-"+rnd[:12]+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("restore %s: %w", id, err)
	}
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()
	err = s.decrypt(s.dataPath(id), &it, func(r io.Reader) error {
		_, err := io.Copy(f, r)
		return err
	})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("restore %s: %w", id, err)
	}
	setOwner(tmp, it.UID, it.GID) // best effort: needs privileges
	if err := os.Chmod(tmp, it.Mode); err != nil {
		return "", fmt.Errorf("restore %s: %w", id, err)
	}
	os.Chtimes(tmp, it.ModTime, it.ModTime)
	if force {
		err = os.Rename(tmp, dest)
	} else {
		err = linkNoReplace(tmp, dest)
	}
	if err != nil {
		return "", fmt.Errorf("restore %s to %q: %w", id, dest, err)
	}
	ok = true
	syncDir(dir)
	if err := s.Delete(id); err != nil {
		return dest, fmt.Errorf("restored to %q but could not remove the item: %w", dest, err)
	}
	return dest, nil
}

// linkNoReplace moves tmp to dest unless dest exists, atomically where hard
// links are supported.
func linkNoReplace(tmp, dest string) error {
	if err := os.Link(tmp, dest); err == nil {
		os.Remove(tmp)
		return nil
	} else if errors.Is(err, fs.ErrExist) {
		return ErrExists
	}
	// No hard links on this file system: check, then rename.
	if _, err := os.Lstat(dest); err == nil {
		return ErrExists
	}
	return os.Rename(tmp, dest)
}

// Delete removes an item for good.
func (s *Store) Delete(id string) error {
	if !validID(id) {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err := os.Remove(s.metaPath(id)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return err
	}
	if err := os.Remove(s.dataPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	syncDir(s.dir)
	return nil
}

// DefaultDir is the quarantine directory used when none is given:
// $MAMORI_QUARANTINE_DIR if set, else a per-OS system location.
func DefaultDir() string {
	if d := os.Getenv("MAMORI_QUARANTINE_DIR"); d != "" {
		return d
	}
	switch runtime.GOOS {
	case "windows":
		pd := os.Getenv("ProgramData")
		if pd == "" {
			pd = `C:\ProgramData`
		}
		return filepath.Join(pd, "Mamori", "Quarantine")
	case "darwin":
		return "/Library/Application Support/Mamori/Quarantine"
	}
	return "/var/lib/mamori/quarantine"
}
