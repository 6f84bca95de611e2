// Package outbox is the agent's durable queue of events for the server. An
// event stays on disk (bbolt, fsync on every commit) until the server
// acknowledges it; every event carries an id the server uses to store it at
// most once, so a resend after a lost acknowledgement never duplicates.
//
// The file is locked while open, which also keeps two agent processes from
// sharing one state directory.
package outbox

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

var bucket = []byte("events")

// DefaultMaxEvents bounds the queue; beyond it the oldest events are dropped
// and counted (an agent offline for months must not fill its disk).
const DefaultMaxEvents = 100_000

// ErrLocked means another process holds the outbox.
var ErrLocked = errors.New("the state directory is in use by another agent process")

// Event is one queued event.
type Event struct {
	Seq  uint64          `json:"-"`
	ID   string          `json:"id"`
	Type string          `json:"type"`
	Time time.Time       `json:"time"`
	Data json.RawMessage `json:"data,omitempty"`
}

// Outbox is the durable queue. Safe for concurrent use.
type Outbox struct {
	db        *bolt.DB
	maxEvents int
	notify    chan struct{}

	mu      sync.Mutex // serialises writes and guards the counters
	count   int
	dropped uint64
}

// Open opens (creating) the outbox file at path.
func Open(path string, maxEvents int) (*Outbox, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, ErrLocked
	}
	if err != nil {
		return nil, fmt.Errorf("opening outbox %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		db.Close()
		return nil, err
	}
	if maxEvents <= 0 {
		maxEvents = DefaultMaxEvents
	}
	o := &Outbox{db: db, maxEvents: maxEvents, notify: make(chan struct{}, 1)}
	db.View(func(tx *bolt.Tx) error {
		o.count = tx.Bucket(bucket).Stats().KeyN
		return nil
	})
	return o, nil
}

// SetMaxEvents changes the bound (0 or less: DefaultMaxEvents), as a
// configuration change asks. A lower bound drops the oldest events above
// it when the next event is queued; events are never dropped otherwise.
func (o *Outbox) SetMaxEvents(n int) {
	if n <= 0 {
		n = DefaultMaxEvents
	}
	o.mu.Lock()
	o.maxEvents = n
	o.mu.Unlock()
}

// Close closes the file.
func (o *Outbox) Close() error { return o.db.Close() }

// Notify is signalled (coalesced) whenever an event is appended.
func (o *Outbox) Notify() <-chan struct{} { return o.notify }

// Append queues an event of type typ with data (marshalled to JSON; nil for
// none) and returns its id once it is on disk.
func (o *Outbox) Append(typ string, data any) (string, error) {
	var raw json.RawMessage
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			return "", err
		}
		raw = b
	}
	e := Event{ID: uuid.NewString(), Type: typ, Time: time.Now().UTC(), Data: raw}
	if err := o.Put(e); err != nil {
		return "", err
	}
	return e.ID, nil
}

// Put queues an event that already has its id and time (an event handed
// over by another process keeps its id, so handing it over twice never
// duplicates it at the server).
func (o *Outbox) Put(e Event) error {
	if e.ID == "" || e.Type == "" {
		return errors.New("an event needs an id and a type")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	dropped := 0
	err := o.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		dropped = 0
		c := b.Cursor()
		for k, _ := c.First(); k != nil && o.count-dropped >= o.maxEvents; k, _ = c.First() {
			if err := c.Delete(); err != nil {
				return err
			}
			dropped++
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		return b.Put(key(seq), v)
	})
	if err != nil {
		return err
	}
	o.count += 1 - dropped
	o.dropped += uint64(dropped)
	select {
	case o.notify <- struct{}{}:
	default:
	}
	return nil
}

// Pending returns up to max of the oldest queued events.
// Records that do not decode (a corrupt file) are removed, since they can
// never be sent.
func (o *Outbox) Pending(max int) ([]Event, error) {
	var out []Event
	var corrupt []uint64
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		for k, v := c.First(); k != nil && len(out) < max; k, v = c.Next() {
			var e Event
			if len(k) != 8 || json.Unmarshal(v, &e) != nil || e.ID == "" {
				if len(k) == 8 {
					corrupt = append(corrupt, binary.BigEndian.Uint64(k))
				}
				continue
			}
			e.Seq = binary.BigEndian.Uint64(k)
			out = append(out, e)
		}
		return nil
	})
	if err == nil && len(corrupt) > 0 {
		err = o.Ack(corrupt)
	}
	return out, err
}

// Ack removes events the server has stored (or refused for good).
func (o *Outbox) Ack(seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	removed := 0
	err := o.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		removed = 0
		for _, s := range seqs {
			if b.Get(key(s)) == nil {
				continue
			}
			if err := b.Delete(key(s)); err != nil {
				return err
			}
			removed++
		}
		return nil
	})
	if err == nil {
		o.count -= removed
	}
	return err
}

// Len returns how many events are queued.
func (o *Outbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.count
}

// Dropped returns how many events were dropped because the outbox was full
// since it was opened.
func (o *Outbox) Dropped() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dropped
}

func key(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}
