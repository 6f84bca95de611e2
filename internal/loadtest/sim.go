package loadtest

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mamori/mamori/internal/agent"
	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/pki"
	"github.com/mamori/mamori/internal/sectionzip"
)

// sim is one simulated agent: a real agent.Direct client (its own gRPC
// connection, TLS session cache and client certificate) driven like
// agent.Auto drives one: it keeps its session open, reconnects with the
// agent's own policy (agent.ReconnectDelay, which honours RetryLater with
// jitter), checks in on an interval with jitter, answers wake-ups, and sends
// only the inventory sections whose hash differs from the server's.
type sim struct {
	f   *fleet
	idx int
	id  *agentIdentity
	d   *agent.Direct

	in, out atomic.Uint64 // bytes on this agent's TCP connections

	// Session state; mu serialises check-ins (the session loop's own and
	// the closed-loop driver's).
	mu           sync.Mutex
	cur          *simSession
	seq          uint64
	serverHashes map[agentproto.Section][]byte
	revision     int // software revision of the inventory
	hashes       map[agentproto.Section][]byte
	nextChange   time.Time

	connected  atomic.Bool
	everUp     atomic.Bool
	resumed    atomic.Bool // the last session's TLS handshake was resumed
	upAt       atomic.Int64
	wokenAt    atomic.Int64 // when the answer to the last wake-up was acknowledged
	sessions   atomic.Int64
	gaveUp     atomic.Bool
	lastErrMsg atomic.Pointer[string]
}

func newSim(f *fleet, idx int, id *agentIdentity) (*sim, error) {
	cert, err := tls.X509KeyPair([]byte(id.CertPEM), []byte(id.KeyPEM))
	if err != nil {
		return nil, err
	}
	s := &sim{f: f, idx: idx, id: id}
	var local net.Addr
	if srcs := f.cfg.SourceAddrs; len(srcs) > 0 {
		local = &net.TCPAddr{IP: net.ParseIP(srcs[idx%len(srcs)])}
	}
	s.d = agent.NewDirect(agent.DirectOptions{Pin: pki.Fingerprint(f.env.ca.Raw), CA: f.env.ca, Cert: &cert,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: local}
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return countingConn{Conn: c, s: s}, nil
		}})
	return s, nil
}

// fingerprint is a simulated machine's hardware fingerprint, stable per name.
func fingerprint(name string) string {
	sum := sha256.Sum256([]byte("loadtest\x00" + name))
	return hex.EncodeToString(sum[:])
}

// run keeps the agent connected until ctx ends or the server refuses it
// for good.
func (s *sim) run(ctx context.Context) {
	attempt := 0
	for ctx.Err() == nil {
		start := time.Now()
		err := s.session(ctx)
		if ctx.Err() != nil {
			return
		}
		msg := errcode.Message(err)
		s.lastErrMsg.Store(&msg)
		s.f.errs.add(errKind(err))
		if time.Since(start) > 30*time.Second {
			attempt = 0
		}
		delay, retry := agent.ReconnectDelay(err, attempt)
		if !retry {
			s.gaveUp.Store(true)
			return
		}
		var rl *agent.RetryLaterError
		if !errors.As(err, &rl) {
			attempt++
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// simSession is one open session.
type simSession struct {
	sess  *agent.Session
	acks  chan uint64
	wakes chan string
	done  chan struct{} // closed when the session has ended; err says why
	err   error
}

// session opens a session, replicates what changed and then serves it
// (periodic check-ins, wake-ups) until it fails.
func (s *sim) session(ctx context.Context) error {
	hello := &agentproto.Hello{CapabilityVersion: agentproto.CapabilityVersion, AgentVersion: "loadtest",
		HardwareFingerprint: s.id.fp, SessionId: s.id.ComputerID, Instance: s.id.Instance, Hostname: s.id.Instance}
	sess, welcome, err := s.d.OpenSession(ctx, s.f.target, hello)
	if err != nil {
		return err
	}
	defer sess.Close()
	if st, ok := sess.TLSState(); ok {
		s.resumed.Store(st.DidResume)
	}
	cur := &simSession{sess: sess, acks: make(chan uint64, 4), wakes: make(chan string, 4), done: make(chan struct{})}
	go func() {
		for {
			m, err := sess.Recv()
			if err != nil {
				cur.err = err
				close(cur.done)
				return
			}
			switch x := m.Msg.(type) {
			case *agentproto.ServerMessage_Ack:
				select {
				case cur.acks <- x.Ack.Seq:
				default: // nobody waits for it any more
				}
			case *agentproto.ServerMessage_WakeUp:
				select {
				case cur.wakes <- x.WakeUp.Id:
				default: // a wake-up is already pending
				}
			}
		}
	}()
	hashes := map[agentproto.Section][]byte{}
	for _, h := range welcome.SectionHashes {
		hashes[h.Section] = h.Hash
	}
	s.mu.Lock()
	s.cur, s.serverHashes, s.seq = cur, hashes, 0
	s.mu.Unlock()
	s.sessions.Add(1)
	defer func() {
		if s.connected.Swap(false) {
			s.f.up.Add(-1)
		}
		s.mu.Lock()
		s.cur = nil
		s.mu.Unlock()
	}()
	// The first check-in replicates whatever the server does not hold.
	if err := s.checkIn(ctx, agentproto.CheckInReason_CHECK_IN_REASON_STARTUP, ""); err != nil {
		return err
	}
	s.upAt.Store(time.Now().UnixNano())
	s.everUp.Store(true)
	s.connected.Store(true)
	s.f.up.Add(1)

	var tick <-chan time.Time
	var timer *time.Timer
	periodic := s.f.periodic // closed when periodic check-ins begin
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-cur.done:
			return cur.err
		case <-periodic:
			// The first periodic check-in falls anywhere in the first
			// interval so that the crowd is spread from the start.
			periodic = nil
			if iv := s.f.cfg.Interval; iv > 0 {
				timer = time.NewTimer(time.Duration(rand.Int64N(int64(iv))))
				defer timer.Stop()
				tick = timer.C
			}
		case id := <-cur.wakes:
			if err := s.checkIn(ctx, agentproto.CheckInReason_CHECK_IN_REASON_WAKE_UP, id); err != nil {
				return err
			}
			s.wokenAt.Store(time.Now().UnixNano())
		case <-tick:
			if err := s.checkIn(ctx, agentproto.CheckInReason_CHECK_IN_REASON_INTERVAL, ""); err != nil {
				return err
			}
			timer.Reset(s.f.jittered())
		}
	}
}

var errNotConnected = errors.New("not connected")

// checkIn sends one check-in with the sections that differ from the
// server's and waits for its acknowledgement.
func (s *sim) checkIn(ctx context.Context, reason agentproto.CheckInReason, wakeID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur
	if cur == nil {
		return errNotConnected
	}
	secs := s.changedSections(reason)
	s.seq++
	ci := &agentproto.CheckIn{Seq: s.seq, Reason: reason, WakeId: wakeID}
	if err := sectionzip.Pack(ci, secs); err != nil {
		return err
	}
	in0, out0 := s.in.Load(), s.out.Load()
	t0 := time.Now()
	if err := cur.sess.Send(ci); err != nil {
		select { // the receiving goroutine has the server's reason
		case <-cur.done:
			return cur.err
		case <-time.After(time.Second):
			return err
		}
	}
	t := time.NewTimer(ackTimeout)
	defer t.Stop()
	for {
		select {
		case got := <-cur.acks:
			if got != s.seq {
				continue
			}
			for _, sec := range secs {
				s.serverHashes[sec.Section] = sec.Hash
			}
			s.f.rec.checkIn(time.Since(t0), s.in.Load()-in0, s.out.Load()-out0, len(secs) > 0, reason)
			return nil
		case <-cur.done:
			return cur.err
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return errAckTimeout
		}
	}
}

const ackTimeout = 60 * time.Second // as the agent

var errAckTimeout = errcode.New(errcode.Unavailable, "no acknowledgement within %s", ackTimeout)

// changedSections returns the sections to send: those whose hash differs
// from the server's; under churn, the software list changes at the
// configured rate first.
func (s *sim) changedSections(reason agentproto.CheckInReason) []*agentproto.InventorySection {
	now := time.Now()
	if rate := s.f.cfg.ChangeRate; rate > 0 && reason != agentproto.CheckInReason_CHECK_IN_REASON_STARTUP {
		if s.nextChange.IsZero() {
			s.nextChange = now.Add(s.f.changeGap())
		} else if !now.Before(s.nextChange) {
			s.revision++
			s.hashes = nil
			s.nextChange = now.Add(s.f.changeGap())
		}
	}
	if s.hashes != nil && sameHashes(s.hashes, s.serverHashes) {
		return nil
	}
	snap := s.id.inv.snapshot(s.revision, s.f.cfg.ChangePackages)
	s.hashes = snap.Hashes()
	var out []*agentproto.InventorySection
	for _, sec := range snap.Sections {
		if string(s.serverHashes[sec.Section]) != string(sec.Hash) {
			out = append(out, sec)
		}
	}
	return out
}

func sameHashes(a, b map[agentproto.Section][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if string(b[k]) != string(v) {
			return false
		}
	}
	return true
}

func (s *sim) close() {
	s.d.Close()
}

type countingConn struct {
	net.Conn
	s *sim
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.s.in.Add(uint64(n))
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.s.out.Add(uint64(n))
	return n, err
}
