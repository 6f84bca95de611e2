package server

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mamori/mamori/internal/pki"
)

func TestSessionGate_AdmitsUpToTheBoundThenSchedulesReturnsApart(t *testing.T) {
	g := newSessionGate(3)
	now := time.Now()
	for i := range 3 {
		if ok, _ := g.enter(now); !ok {
			t.Fatalf("setup %d refused below the bound", i+1)
		}
	}
	var hints []time.Duration
	for range 100 {
		ok, after := g.enter(now)
		if ok {
			t.Fatal("admitted beyond the bound")
		}
		hints = append(hints, after)
	}
	if hints[0] < time.Second {
		t.Errorf("first hint %s, want at least the 1s floor", hints[0])
	}
	for i := 1; i < len(hints); i++ {
		if hints[i] < hints[i-1] {
			t.Fatalf("hint %d (%s) earlier than hint %d (%s): returns must be scheduled in order", i, hints[i], i-1, hints[i-1])
		}
	}
	// At the assumed 50 setups/s the 100 refused are spread over ~2s.
	if spread := hints[99] - hints[0]; spread < time.Second || spread > 3*time.Second {
		t.Errorf("100 refused agents spread over %s, want about 2s", spread)
	}
	g.leave(now)
	if ok, _ := g.enter(now); !ok {
		t.Error("a freed place was not given out")
	}
}

func TestSessionGate_HintsFollowTheMeasuredRate(t *testing.T) {
	g := newSessionGate(1)
	now := time.Now()
	// 1,000 setups complete in one second.
	for i := range 1001 {
		g.enter(now)
		g.leave(now.Add(time.Duration(i) * time.Millisecond))
	}
	g.enter(now) // occupy the only place
	start := now.Add(2 * time.Second)
	_, first := g.enter(start)
	var last time.Duration
	for range 999 {
		_, last = g.enter(start)
	}
	// Scheduled at twice the measured rate: about half a second.
	if spread := last - first; spread < 250*time.Millisecond || spread > 750*time.Millisecond {
		t.Errorf("1,000 refused at ~1,000 setups/s spread over %s, want about 0.5s", spread)
	}
	if _, capped := g.enter(start.Add(-time.Hour)); capped > g.maxAfter+time.Hour {
		t.Errorf("hint %s beyond the cap", capped)
	}
}

func TestRotateTicketKeys_PersistsRotatesDailyAndExpiresOldKeys(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	k1, err := rotateTicketKeys(dir, t0)
	if err != nil || len(k1) != 1 {
		t.Fatalf("first start: %d keys, %v", len(k1), err)
	}
	if fi, err := os.Stat(filepath.Join(dir, TicketKeysFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, fi.Mode())
	}
	again, _ := rotateTicketKeys(dir, t0.Add(time.Hour))
	if len(again) != 1 || again[0] != k1[0] {
		t.Fatal("a restart within the day did not keep the same key")
	}
	day2, _ := rotateTicketKeys(dir, t0.Add(25*time.Hour))
	if len(day2) != 2 || day2[1] != k1[0] || day2[0] == k1[0] {
		t.Fatalf("after a day: want a new first key and the old one kept for decryption, got %d keys", len(day2))
	}
	// Keys live as long as the tickets they encrypted: rotation period + 7 days.
	var keys [][32]byte
	for d := 2; d <= 12; d++ {
		keys, _ = rotateTicketKeys(dir, t0.Add(time.Duration(d)*24*time.Hour+time.Hour))
	}
	if len(keys) < 8 || len(keys) > 10 {
		t.Errorf("after 12 days %d keys are kept, want 8-10", len(keys))
	}
	for _, k := range keys {
		if k == k1[0] {
			t.Error("the first key outlived every ticket it encrypted")
		}
	}
	os.WriteFile(filepath.Join(dir, TicketKeysFile), []byte("{not json"), 0o600)
	if k, err := rotateTicketKeys(dir, t0); err != nil || len(k) != 1 {
		t.Errorf("an unreadable key file: %d keys, %v; want a fresh start", len(k), err)
	}
}

// acceptorFixture is a tlsAcceptor on loopback with a CA-signed server
// certificate.
type acceptorFixture struct {
	a       *tlsAcceptor
	addr    string
	served  chan *tls.Conn
	m       *metrics
	clients *tls.Config
}

func newAcceptorFixture(t *testing.T, slots, queue int, timeout time.Duration) *acceptorFixture {
	t.Helper()
	dir := t.TempDir()
	ca, _, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := rotateTicketKeys(dir, time.Now())
	cfg := agentTLSConfig(cert, ca.Cert)
	cfg.SetSessionTicketKeys(keys)
	f := &acceptorFixture{addr: ln.Addr().String(), served: make(chan *tls.Conn, 100), m: newMetrics()}
	f.a = newTLSAcceptor(ln, cfg, slots, queue, timeout, f.m, slog.New(slog.NewTextHandler(io.Discard, nil)),
		func(c *tls.Conn) { f.served <- c })
	go f.a.run()
	t.Cleanup(f.a.close)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	f.clients = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}, ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	return f
}

func (f *acceptorFixture) count(result string) float64 {
	var m dto.Metric
	f.m.handshakes.WithLabelValues(result).Write(&m)
	return m.GetCounter().GetValue()
}

func TestTLSAcceptor_HandsOverHandshakenConnectionsAndResumesSessions(t *testing.T) {
	f := newAcceptorFixture(t, 2, 10, 5*time.Second)
	for i := range 2 {
		c, err := tls.Dial("tcp", f.addr, f.clients)
		if err != nil {
			t.Fatal(err)
		}
		// Read the session ticket the server sends after the handshake.
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		c.Read(make([]byte, 1))
		sc := <-f.served
		if sc.ConnectionState().NegotiatedProtocol != "h2" {
			t.Errorf("connection %d: ALPN %q, want h2", i, sc.ConnectionState().NegotiatedProtocol)
		}
		if got := c.ConnectionState().DidResume; got != (i == 1) {
			t.Errorf("connection %d: resumed %v", i, got)
		}
		c.Close()
		sc.Close()
	}
	if f.count("full") != 1 || f.count("resumed") != 1 {
		t.Errorf("handshakes: full %v, resumed %v; want 1 and 1", f.count("full"), f.count("resumed"))
	}
}

// A connection that sends nothing holds no handshake slot: with one slot, a
// silent client does not delay a real one, and is dropped at its deadline.
func TestTLSAcceptor_SilentConnectionsHoldNoSlot(t *testing.T) {
	f := newAcceptorFixture(t, 1, 10, 300*time.Millisecond)
	silent, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	c, err := tls.Dial("tcp", f.addr, f.clients)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("handshake took %s behind a silent connection", d)
	}
	silent.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("silent connection: read %v, want EOF once its deadline passed", err)
	}
}

// Beyond the queue bound a connection is refused at once, not left to time out.
func TestTLSAcceptor_ShedsBeyondTheQueueBound(t *testing.T) {
	f := newAcceptorFixture(t, 1, 1, 2*time.Second)
	f.a.slots <- struct{}{} // the only full-handshake slot is busy
	defer func() { <-f.a.slots }()
	// Fill the queue with a client waiting for that slot.
	f.helloOnly(t)
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	_, err := tls.Dial("tcp", f.addr, f.clients)
	if err == nil {
		t.Fatal("a connection was served with the slot busy and the queue full")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusal took %s; want at once", d)
	}
	if f.count("shed") != 1 {
		t.Errorf("shed %v, want 1", f.count("shed"))
	}
}

// A client that sends its ClientHello and then stalls holds no slot once
// the server has answered: the slot bounds the server's work, not the
// client's.
func TestTLSAcceptor_AStalledClientDoesNotHoldTheSlot(t *testing.T) {
	f := newAcceptorFixture(t, 1, 10, 5*time.Second)
	stalled := f.helloOnly(t)
	// The server's flight arrives: it has had the slot and given it back.
	stalled.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := stalled.Read(make([]byte, 1)); err != nil {
		t.Fatalf("no answer to the ClientHello: %v", err)
	}
	start := time.Now()
	c, err := tls.Dial("tcp", f.addr, f.clients)
	if err != nil {
		t.Fatalf("a second client behind a stalled one: %v", err)
	}
	c.Close()
	(<-f.served).Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("the second client took %s behind a stalled one", d)
	}
}

// helloOnly connects, sends a ClientHello and nothing more (closed at the
// end of the test).
func (f *acceptorFixture) helloOnly(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(clientHello(t)); err != nil {
		t.Fatal(err)
	}
	return c
}

// clientHello returns the first flight of a TLS 1.3 client.
func clientHello(t *testing.T) []byte {
	t.Helper()
	a, b := net.Pipe()
	go tls.Client(a, &tls.Config{InsecureSkipVerify: true}).Handshake()
	buf := make([]byte, 4096)
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	b.Close()
	return buf[:n]
}

// A client that offers to resume its session does not wait behind full
// handshakes: with the only full-handshake slot busy, it still gets in at
// once, while a client without a ticket waits for that slot.
func TestTLSAcceptor_ResumingClientsDoNotQueueBehindFullHandshakes(t *testing.T) {
	f := newAcceptorFixture(t, 1, 10, 5*time.Second)
	first, err := tls.Dial("tcp", f.addr, f.clients)
	if err != nil {
		t.Fatal(err)
	}
	first.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	first.Read(make([]byte, 1)) // the session ticket
	first.Close()
	(<-f.served).Close()

	f.a.slots <- struct{}{} // the only full-handshake slot is busy

	start := time.Now()
	c, err := tls.Dial("tcp", f.addr, f.clients)
	if err != nil {
		t.Fatalf("resuming client refused while the full-handshake slot was busy: %v", err)
	}
	if !c.ConnectionState().DidResume {
		t.Error("the second connection did not resume")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("resuming client took %s behind a busy full-handshake slot", d)
	}
	c.Close()
	(<-f.served).Close()

	fresh := f.clients.Clone()
	fresh.ClientSessionCache = nil
	done := make(chan error, 1)
	go func() {
		c, err := tls.Dial("tcp", f.addr, fresh)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a client without a ticket finished (%v) while the only full-handshake slot was held", err)
	case <-time.After(400 * time.Millisecond):
	}
	<-f.a.slots // frees the slot
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("client without a ticket, once the slot was free: %v", err)
		}
		(<-f.served).Close()
	case <-time.After(3 * time.Second):
		t.Fatal("the client without a ticket did not get the freed slot")
	}
	if f.count("full") != 2 || f.count("resumed") != 1 {
		t.Errorf("handshakes: full %v, resumed %v; want 2 and 1", f.count("full"), f.count("resumed"))
	}
}

// gatedConn holds its second write (the client's second flight) until
// open is closed.
type gatedConn struct {
	net.Conn
	writes  int
	flight1 chan struct{} // closed after the first write
	open    chan struct{}
}

func (c *gatedConn) Write(p []byte) (int, error) {
	c.writes++
	if c.writes == 2 {
		<-c.open
	}
	n, err := c.Conn.Write(p)
	if c.writes == 1 {
		close(c.flight1)
	}
	return n, err
}

// When the client's second flight arrives the server takes a slot again to
// verify it: with every slot busy, that work waits for one.
func TestTLSAcceptor_TheClientsSecondFlightWaitsForASlot(t *testing.T) {
	f := newAcceptorFixture(t, 1, 10, 5*time.Second)
	raw, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	gc := &gatedConn{Conn: raw, flight1: make(chan struct{}), open: make(chan struct{})}
	cfg := f.clients.Clone()
	cfg.ClientSessionCache = nil
	done := make(chan error, 1)
	go func() {
		c := tls.Client(gc, cfg)
		done <- c.Handshake()
	}()
	<-gc.flight1
	time.Sleep(200 * time.Millisecond) // the server has answered and given its slot back
	f.a.slots <- struct{}{}            // every full-handshake slot is busy
	close(gc.open)                     // the client's second flight goes out
	select {
	case c := <-f.served:
		c.Close()
		t.Fatal("the server finished a handshake without a slot")
	case <-time.After(400 * time.Millisecond):
	}
	<-f.a.slots
	select {
	case c := <-f.served:
		c.Close()
	case <-time.After(3 * time.Second):
		t.Fatal("the handshake did not finish once a slot was free")
	}
	if err := <-done; err != nil {
		t.Fatalf("client: %v", err)
	}
	raw.Close()
}
