package logging

import (
	"bytes"
	"sync"
)

// Ring keeps the last bytes written to it, whole lines only: the agent's
// recent log for diagnostics bundles (an agent may log only to a console
// or a journal no one can fetch remotely). It is safe for concurrent use.
type Ring struct {
	mu   sync.Mutex
	max  int
	buf  []byte
	full bool // lines were dropped
}

// NewRing keeps at most max bytes.
func NewRing(max int) *Ring { return &Ring{max: max} }

// Write appends p, dropping the oldest whole lines beyond the bound.
func (r *Ring) Write(p []byte) (int, error) {
	n := len(p) // all of p is taken, kept or not (io.MultiWriter checks)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(p) > r.max {
		p = p[len(p)-r.max:]
	}
	r.buf = append(r.buf, p...)
	if over := len(r.buf) - r.max; over > 0 {
		cut := over
		if i := bytes.IndexByte(r.buf[over:], '\n'); i >= 0 {
			cut = over + i + 1
		}
		r.buf = append(r.buf[:0], r.buf[cut:]...)
		r.full = true
	}
	return n, nil
}

// Bytes returns a copy of what is kept, with a first line saying when
// older lines were dropped.
func (r *Ring) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]byte, 0, len(r.buf)+64)
	if r.full {
		out = append(out, "[older lines dropped]\n"...)
	}
	return append(out, r.buf...)
}
