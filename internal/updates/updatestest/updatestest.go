// Package updatestest has helpers shared by the update packages' tests and
// benchmarks: synthetic signature sets that evolve release by release, and
// small repositories.
package updatestest

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/engine/signature"
	"github.com/mamori/mamori/internal/updates/repo"
)

// Evolver produces a sequence of signature sets: each Next adds and removes
// records, like a vendor's releases.
type Evolver struct {
	rng  *rand.Rand
	recs map[string]signature.Record
	keys []string
	seq  int
}

// NewEvolver starts with n random records.
func NewEvolver(seed int64, n int) *Evolver {
	e := &Evolver{rng: rand.New(rand.NewSource(seed)), recs: map[string]signature.Record{}}
	e.Add(n)
	return e
}

// Record returns a new random record (mostly MD5 hashes, some SHA-256 and
// body signatures, like real engines).
func (e *Evolver) Record() signature.Record {
	e.seq++
	name := fmt.Sprintf("Win.Trojan.Synth-%d-%d", e.seq, e.rng.Intn(10))
	switch x := e.rng.Intn(100); {
	case x < 80:
		h := make([]byte, 16)
		e.rng.Read(h)
		return signature.Record{Type: signature.TypeMD5, Hash: h, Size: int64(1024 + e.rng.Intn(4<<20)), Name: name}
	case x < 92:
		h := make([]byte, 32)
		e.rng.Read(h)
		return signature.Record{Type: signature.TypeSHA256, Hash: h, Size: int64(1024 + e.rng.Intn(4<<20)), Name: name}
	default:
		b := make([]byte, 12+e.rng.Intn(20))
		e.rng.Read(b)
		r, err := signature.ParseLine("ndb", fmt.Sprintf("%s:0:*:%x", name, b))
		if err != nil {
			panic(err)
		}
		return r
	}
}

// Add adds n new records.
func (e *Evolver) Add(n int) {
	for i := 0; i < n; i++ {
		r := e.Record()
		k := r.Key()
		if _, dup := e.recs[k]; dup {
			continue
		}
		e.recs[k] = r
		e.keys = append(e.keys, k)
	}
}

// Remove removes n random records.
func (e *Evolver) Remove(n int) {
	for i := 0; i < n && len(e.keys) > 0; i++ {
		j := e.rng.Intn(len(e.keys))
		delete(e.recs, e.keys[j])
		e.keys[j] = e.keys[len(e.keys)-1]
		e.keys = e.keys[:len(e.keys)-1]
	}
}

// Len is the current number of records.
func (e *Evolver) Len() int { return len(e.recs) }

// Rand is the evolver's random source.
func (e *Evolver) Rand() *rand.Rand { return e.rng }

// Records returns the current set.
func (e *Evolver) Records() []signature.Record {
	out := make([]signature.Record, 0, len(e.recs))
	for _, k := range e.keys {
		out = append(out, e.recs[k])
	}
	return out
}

// Step makes a typical small release: adds add and removes remove records.
func (e *Evolver) Step(add, remove int) []signature.Record {
	e.Remove(remove)
	e.Add(add)
	return e.Records()
}

// Repo is a test repository.
type Repo struct {
	*repo.Repo
	Dir  string
	Root []byte // 1.root.json
	Evo  *Evolver
}

// NewRepo creates a repository in a temporary directory with the given
// window and checkpoint interval and n initial records (nothing published).
func NewRepo(t testing.TB, window, checkpoint, n int) *Repo {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	s := repo.DefaultSettings()
	s.Window, s.Checkpoint = window, checkpoint
	r, _, err := repo.Init(dir, s, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	root, err := os.ReadFile(filepath.Join(dir, "public", "metadata", "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	return &Repo{Repo: r, Dir: dir, Root: root, Evo: NewEvolver(1, n)}
}

// PublishNext publishes the next release (adding add and removing remove
// records) and returns its version.
func (r *Repo) PublishNext(t testing.TB, add, remove int) uint64 {
	t.Helper()
	res, err := r.Publish(r.Evo.Step(add, remove), 0)
	if err != nil {
		t.Fatal(err)
	}
	return res.Version
}

// Public is the directory to serve.
func (r *Repo) Public() string { return filepath.Join(r.Dir, "public") }

// FixedClock is a settable clock for tests (safe for concurrent use).
type FixedClock struct {
	mu sync.Mutex
	T  time.Time
}

// Now returns the clock's time.
func (c *FixedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.T
}

// Advance moves the clock forward.
func (c *FixedClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.T = c.T.Add(d)
	c.mu.Unlock()
}
