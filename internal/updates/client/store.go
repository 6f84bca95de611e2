package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mamori/mamori/internal/atomicfile"
	"github.com/mamori/mamori/internal/engine/builtin"
	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/updates/filelock"
)

// Installed is one engine version kept on disk.
type Installed struct {
	Version     uint64    `json:"version"`
	SHA256      string    `json:"sha256"`
	InstalledAt time.Time `json:"installed_at"`
	// PublishedAt is when the repository published it (zero: unknown).
	PublishedAt time.Time `json:"published_at,omitzero"`
}

// EngineState is engine.json: which engine is current, which are kept for
// rollback (newest first), and a hold after a rollback.
type EngineState struct {
	Current        uint64      `json:"current"` // 0: the built-in engine
	Installed      []Installed `json:"installed"`
	HoldUntil      time.Time   `json:"hold_until,omitempty"`
	RolledBackFrom uint64      `json:"rolled_back_from,omitempty"`
}

// Store keeps the engine files of an agent:
//
//	engines/<version>.mdb   engine databases (never modified once written)
//	engine.json             the current version and those kept for rollback
//
// A new engine is written to a temporary file, synced and renamed into
// place, then engine.json is replaced atomically: a crash at any moment
// leaves the old or the new engine current, each complete (the database's
// own SHA-256 trailer is checked when loaded).
type Store struct {
	dir   string
	mu    sync.Mutex // guards state
	state EngineState
	// writeFile writes a file atomically (tests inject failures).
	writeFile func(path string, data []byte, perm os.FileMode) error
	// crash is called at each step of an install (tests kill the process).
	crash func(stage string)
}

// Install stages, for crash tests.
const (
	StageEngineWritten = "engine-written" // engines/<v>.mdb in place, engine.json not yet
	StagePointer       = "pointer"        // engine.json replaced, old files not yet removed
)

// OpenStore opens (creating) the engine store in dir and, unless an update
// holds the state directory's lock (its temporary files are then work in
// progress, not leftovers), removes leftovers of interrupted writes. A
// current engine that no longer loads is replaced by the newest kept one
// that does (or the built-in engine).
func OpenStore(dir string) (*Store, error) {
	return openStore(dir, false)
}

// openStore opens the store; locked says the caller holds the lock.
func openStore(dir string, locked bool) (*Store, error) {
	s := &Store{dir: dir, writeFile: atomicfile.Write, crash: func(string) {}}
	if err := os.MkdirAll(filepath.Join(dir, "engines"), 0o755); err != nil {
		return nil, err
	}
	clean := locked
	if !locked {
		if l, err := filelock.TryLock(filepath.Join(dir, "lock")); err == nil {
			defer l.Unlock()
			clean = true
		}
	}
	if clean {
		ents, _ := os.ReadDir(filepath.Join(dir, "engines"))
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") {
				os.Remove(filepath.Join(dir, "engines", e.Name()))
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "engine.json"))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if err := json.Unmarshal(b, &s.state); err != nil {
			// a damaged pointer: start from the built-in engine
			s.state = EngineState{}
		}
	}
	return s, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// State returns a copy of engine.json.
func (s *Store) State() EngineState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state
	st.Installed = append([]Installed(nil), s.state.Installed...)
	return st
}

// EnginePath is the file of an installed version.
func (s *Store) EnginePath(v uint64) string {
	return filepath.Join(s.dir, "engines", strconv.FormatUint(v, 10)+".mdb")
}

// Current returns the current engine version and file ("" and the built-in
// version when the built-in engine is current).
func (s *Store) Current() (uint64, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state.Current == 0 {
		return builtin.Version, ""
	}
	return s.state.Current, s.EnginePath(s.state.Current)
}

// LoadCurrent loads the current engine database, verifying its checksum. If
// it is damaged, the newest kept version that loads becomes current (and
// engine.json says so); if none does, the built-in engine.
func (s *Store) LoadCurrent() (*enginedb.DB, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.state.Current != 0 {
		db, err := enginedb.LoadFile(s.EnginePath(s.state.Current))
		if err == nil && db.Version() == s.state.Current {
			return db, nil
		}
		// drop the damaged version and fall back
		bad := s.state.Current
		var keep []Installed
		for _, in := range s.state.Installed {
			if in.Version != bad {
				keep = append(keep, in)
			}
		}
		s.state.Installed = keep
		s.state.Current = 0
		if len(keep) > 0 {
			s.state.Current = keep[0].Version
		}
		if err := s.saveState(); err != nil {
			return nil, err
		}
	}
	data, err := builtin.DB()
	if err != nil {
		return nil, err
	}
	return enginedb.Load(data)
}

func (s *Store) saveState() error {
	b, err := json.MarshalIndent(s.state, "", "  ")
	if err != nil {
		return err
	}
	return s.writeFile(filepath.Join(s.dir, "engine.json"), append(b, '\n'), 0o644)
}

// Install makes db (already verified) the current engine and keeps the
// keep−1 previous versions for rollback. It clears a rollback hold.
func (s *Store) Install(version uint64, db []byte, sha string, keep int, now time.Time) error {
	return s.InstallPublished(version, db, sha, keep, now, time.Time{})
}

// InstallPublished is Install recording when the repository published the
// engine (for its age in the inventory).
func (s *Store) InstallPublished(version uint64, db []byte, sha string, keep int, now, published time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if keep < 1 {
		keep = 1
	}
	path := s.EnginePath(version)
	if err := s.writeFile(path, db, 0o644); err != nil {
		return errcode.New(errcode.Unavailable, "writing engine %d: %v", version, err)
	}
	s.crash(StageEngineWritten)
	old := s.state
	next := EngineState{Current: version}
	next.Installed = append(next.Installed, Installed{Version: version, SHA256: sha, InstalledAt: now.UTC(), PublishedAt: published.UTC()})
	for _, in := range old.Installed {
		if in.Version != version && len(next.Installed) < keep {
			next.Installed = append(next.Installed, in)
		}
	}
	s.state = next
	if err := s.saveState(); err != nil {
		s.state = old
		os.Remove(path)
		return errcode.New(errcode.Unavailable, "switching to engine %d: %v", version, err)
	}
	s.crash(StagePointer)
	s.removeUnkept()
	return nil
}

// removeUnkept removes engine files no longer listed (errors are ignored: a
// file still open on Windows goes next time).
func (s *Store) removeUnkept() {
	kept := map[string]bool{}
	for _, in := range s.state.Installed {
		kept[strconv.FormatUint(in.Version, 10)+".mdb"] = true
	}
	ents, _ := os.ReadDir(filepath.Join(s.dir, "engines"))
	for _, e := range ents {
		if !kept[e.Name()] {
			os.Remove(filepath.Join(s.dir, "engines", e.Name()))
		}
	}
}

// RollbackResult describes a rollback.
type RollbackResult struct {
	From      uint64    `json:"from"`
	To        uint64    `json:"to"`
	HoldUntil time.Time `json:"hold_until"`
}

// Rollback makes the newest kept version older than the current one
// current (the built-in engine when none is kept) and holds automatic
// updates for hold. It fails with errcode not_found when there is nothing
// to roll back to.
func (s *Store) Rollback(hold time.Duration, now time.Time) (RollbackResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.state.Current
	if cur == 0 {
		return RollbackResult{}, errcode.New(errcode.NotFound, "the built-in engine is current; there is nothing to roll back to")
	}
	var to uint64
	var rest []Installed
	for _, in := range s.state.Installed {
		if in.Version < cur {
			rest = append(rest, in)
		}
	}
	sort.Slice(rest, func(a, b int) bool { return rest[a].Version > rest[b].Version })
	for _, in := range rest {
		if db, err := enginedb.LoadFile(s.EnginePath(in.Version)); err == nil && db.Version() == in.Version {
			to = in.Version
			break
		}
	}
	old := s.state
	next := EngineState{Current: to, RolledBackFrom: cur, HoldUntil: now.Add(hold).UTC()}
	for _, in := range s.state.Installed {
		if in.Version < cur {
			next.Installed = append(next.Installed, in)
		}
	}
	s.state = next
	if err := s.saveState(); err != nil {
		s.state = old
		return RollbackResult{}, err
	}
	s.removeUnkept()
	res := RollbackResult{From: cur, To: to, HoldUntil: next.HoldUntil}
	if to == 0 {
		res.To = builtin.Version
	}
	return res, nil
}

// ClearHold ends a rollback hold.
func (s *Store) ClearHold() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state.HoldUntil.IsZero() {
		return nil
	}
	s.state.HoldUntil = time.Time{}
	return s.saveState()
}

// Held reports whether automatic updates are on hold at now.
func (s *Store) Held(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return now.Before(s.state.HoldUntil)
}

func (s *Store) String() string { return fmt.Sprintf("engine store %s", s.dir) }
