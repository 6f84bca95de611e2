package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/pki"
)

// ticketServer is a TLS 1.3 server that sheds (closes before answering)
// the connections for which shed returns true, and otherwise completes the
// handshake, sends one byte (so the client reads the session ticket that
// precedes it) and reports whether the handshake resumed.
func ticketServer(t *testing.T, shed func(n int) bool) (addr string, resumed <-chan bool) {
	t.Helper()
	ca, _, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	out := make(chan bool, 16)
	go func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if shed(n) {
				// Read the ClientHello, then close without a word, as
				// the agent listener does when its queue is full.
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				c.Read(make([]byte, 1))
				c.Close()
				continue
			}
			tc := tls.Server(c, cfg)
			if err := tc.Handshake(); err != nil {
				c.Close()
				continue
			}
			tc.Write([]byte{1})
			out <- tc.ConnectionState().DidResume
			tc.Close()
		}
	}()
	return ln.Addr().String(), out
}

// next is the server's report of the next completed handshake.
func next(t *testing.T, resumed <-chan bool) bool {
	t.Helper()
	select {
	case r := <-resumed:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the server completed no handshake")
		return false
	}
}

// dialTicket makes one connection with cache; it reports whether the
// handshake completed.
func dialTicket(t *testing.T, addr string, cache tls.ClientSessionCache) bool {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "127.0.0.1", ClientSessionCache: cache, MinVersion: tls.VersionTLS13})
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("reading after the handshake: %v", err)
	}
	return true
}

// shedDials makes n connections that the server sheds.
func shedDials(t *testing.T, addr string, cache tls.ClientSessionCache, n int) {
	t.Helper()
	for i := range n {
		if dialTicket(t, addr, cache) {
			t.Fatalf("connection %d of %d was not shed", i+1, n)
		}
	}
}

// served makes a connection the server completes and reports whether it
// resumed a session.
func served(t *testing.T, addr string, cache tls.ClientSessionCache, resumed <-chan bool) bool {
	t.Helper()
	if !dialTicket(t, addr, cache) {
		t.Fatal("a connection the server should complete failed")
	}
	return next(t, resumed)
}

func TestTicketCache_KeepsTheTicketAcrossShedConnections(t *testing.T) {
	// Connections 1 and 2 are shed: fewer than ticketFailures in a row.
	addr, resumed := ticketServer(t, func(n int) bool { return n == 1 || n == 2 })
	cache := newTicketCache(4)
	if served(t, addr, cache, resumed) {
		t.Fatal("first connection resumed a session it cannot have")
	}
	shedDials(t, addr, cache, 2)
	if !served(t, addr, cache, resumed) {
		t.Fatal("after two shed connections the agent made a full handshake: its ticket was forgotten")
	}
}

func TestTicketCache_ForgetsATicketThatKeepsFailingAndANewOneStartsOver(t *testing.T) {
	// 0: full; 1-3: shed (ticketFailures in a row); 4: full, a new
	// ticket; 5-6: shed (fewer than ticketFailures); 7: resumes.
	addr, resumed := ticketServer(t, func(n int) bool { return n >= 1 && n <= ticketFailures || n == 5 || n == 6 })
	cache := newTicketCache(4)
	served(t, addr, cache, resumed)
	shedDials(t, addr, cache, ticketFailures)
	if served(t, addr, cache, resumed) {
		t.Fatalf("the ticket survived %d failed handshakes in a row; want it forgotten", ticketFailures)
	}
	// The new ticket's count starts over: two failures do not lose it.
	shedDials(t, addr, cache, 2)
	if !served(t, addr, cache, resumed) {
		t.Fatal("the new ticket was lost after two failures: its count did not start over")
	}
}

// Each session attempt of the agent reaches the server: a failed
// connection is not left to gRPC's own reconnect backoff, which would fail
// the attempts in between at once with the previous error.
func TestDirect_EveryAttemptDialsAfterAFailedConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // refused until it listens again
	d := NewDirect(DirectOptions{Pin: "sha256:00"})
	defer d.Close()
	attempt := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _, err := d.OpenSession(ctx, addr, &agentproto.Hello{})
		return err
	}
	for range 2 {
		err := attempt()
		var refused *RefusedError
		if !errors.As(err, &refused) || errcode.Of(err) != errcode.Unavailable {
			t.Fatalf("nothing listening: %v (%T), want a refused, unavailable error", err, err)
		}
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken again meanwhile: %v", addr, err)
	}
	defer ln.Close()
	accepted := countAccepts(ln)
	const attempts = 5
	for i := 1; i <= attempts; i++ {
		err := attempt()
		if err == nil {
			t.Fatal("a session opened on a server that closes every connection")
		}
		deadline := time.Now().Add(5 * time.Second)
		for accepted.Load() < int64(i) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if got := accepted.Load(); got != int64(i) {
			t.Fatalf("after %d attempts the server saw %d connections (last error: %v)", i, got, err)
		}
		var rl *RetryLaterError
		if errors.As(err, &rl) {
			t.Fatalf("a closed connection read as RetryLater: %v", err)
		}
		var refused *RefusedError
		if errors.As(err, &refused) {
			t.Fatalf("a connection accepted and closed read as refused: %v", err)
		}
	}
}
