package agent

import (
	"crypto/tls"
	"sync"
)

// ticketFailures is how many failed handshakes in a row a TLS session
// ticket survives before it is forgotten.
const ticketFailures = 3

// ticketCache is the agent's TLS session cache: it keeps a session ticket
// across a few failed handshakes.
//
// crypto/tls forgets the ticket after any handshake that tried to resume
// and failed (RFC 5077's advice; for TLS 1.3 it only matters for a
// corrupted ticket, which the server rejects every time). A server that
// sheds load in a reconnect storm closes connections before answering, and
// every such close would cost the agent its ticket: its next attempt would
// be a full handshake, three times the server's CPU of a resumed one. So a
// forget only takes effect after ticketFailures in a row; a new ticket
// starts the count over. Expired tickets are still never offered
// (crypto/tls checks the expiry before offering one).
type ticketCache struct {
	inner tls.ClientSessionCache
	mu    sync.Mutex
	fails map[string]int
}

// NewTicketCache is the agent's TLS session cache, for clients that build
// their own TLS configuration (the load generator's lean client).
func NewTicketCache(capacity int) tls.ClientSessionCache { return newTicketCache(capacity) }

func newTicketCache(capacity int) *ticketCache {
	return &ticketCache{inner: tls.NewLRUClientSessionCache(capacity), fails: map[string]int{}}
}

func (c *ticketCache) Get(key string) (*tls.ClientSessionState, bool) {
	return c.inner.Get(key)
}

func (c *ticketCache) Put(key string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock() // a forget and a new ticket land in order
	if cs == nil {
		c.fails[key]++
		if c.fails[key] < ticketFailures {
			return
		}
	}
	delete(c.fails, key)
	c.inner.Put(key, cs)
}
