package loadtest

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/agent"
	"github.com/mamori/mamori/internal/agent/taskrun"
	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/pki"
	"github.com/mamori/mamori/internal/policy"
	"github.com/mamori/mamori/internal/sectionzip"
	"github.com/mamori/mamori/internal/tasks"
)

// sim is one simulated agent: a real agent.Direct client (its own gRPC
// connection, TLS session cache and client certificate) driven like
// agent.Auto drives one: it keeps its session open, reconnects with the
// agent's own policy (agent.ReconnectDelay, which honours RetryLater with
// jitter), checks in on an interval with jitter, answers wake-ups, and sends
// only the inventory sections whose hash differs from the server's.
//
// It announces capability 2 as the agent does and takes the server's pushes
// like it (push.go): a Configuration is validated (policy.ParseDocument) and
// applied, and the applied version (or the refusal) is reported by a
// check-in sent at once; TaskRuns are accepted once per run id and reported
// with the agent's events, task.started then task.finished, through an
// in-memory outbox kept until the server acknowledges them (see simulateRun
// for what a run "does").
type sim struct {
	f   *fleet
	idx int
	id  *agentIdentity
	d   sessionClient

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

	// Management state. pmu guards it; the receiving goroutine takes it,
	// so it is never held while waiting for the server.
	pmu    sync.Mutex
	config string          // configuration version applied (sent in Hello)
	report *configReport   // what the next check-in reports about it
	outbox []simEvent      // events not yet acknowledged, oldest first
	ledger map[string]bool // run ids accepted: a run delivered twice runs once
	// Times (Unix ns) for the management scenario: when the last
	// configuration arrived and when the check-in reporting it applied was
	// acknowledged (configAcked: that version); when a run of the watched
	// task arrived and when its task.finished was acknowledged.
	configPushAt, configAckAt atomic.Int64
	configAcked               atomic.Pointer[string]
	taskPushAt, taskAckAt     atomic.Int64
}

// configReport is an applied (err empty) or refused configuration.
type configReport struct{ version, err string }

// simEvent is an outbox event; next is queued once it was acknowledged
// (a run's task.finished after its task.started), watched marks the
// task.finished of a run of the task the scenario measures.
type simEvent struct {
	ev      *agentproto.Event
	next    *simEvent
	watched bool
}

func newSim(f *fleet, idx int, id *agentIdentity) (*sim, error) {
	cert, err := tls.X509KeyPair([]byte(id.CertPEM), []byte(id.KeyPEM))
	if err != nil {
		return nil, err
	}
	s := &sim{f: f, idx: idx, id: id, config: id.config}
	var local net.Addr
	if srcs := f.cfg.SourceAddrs; len(srcs) > 0 {
		local = &net.TCPAddr{IP: net.ParseIP(srcs[idx%len(srcs)])}
	}
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: local}
		if local != nil {
			d.Control = bindNoPort
		}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, s: s}, nil
	}
	pin := pki.Fingerprint(f.env.ca.Raw)
	if f.cfg.Client == ClientLean {
		s.d = newLeanClient(pin, f.env.ca, &cert, dial)
	} else {
		s.d = grpcClient{agent.NewDirect(agent.DirectOptions{Pin: pin, CA: f.env.ca, Cert: &cert, NoReadBuffer: true, Dial: dial})}
	}
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
		s.f.errs.addErr(err)
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
	sess   agentSession
	acks   chan *agentproto.Ack
	wakes  chan string
	pushed chan struct{} // a configuration or task runs arrived: report them
	done   chan struct{} // closed when the session has ended; err says why
	err    error
}

// session opens a session, replicates what changed and then serves it
// (periodic check-ins, wake-ups) until it fails.
func (s *sim) session(ctx context.Context) error {
	s.pmu.Lock()
	applied := s.config
	s.pmu.Unlock()
	hello := &agentproto.Hello{CapabilityVersion: agentproto.CapabilityVersion, AgentVersion: "loadtest",
		HardwareFingerprint: s.id.fp, SessionId: s.id.ComputerID, Instance: s.id.Instance, Hostname: s.id.Instance,
		ConfigVersion: applied}
	sess, welcome, err := s.d.OpenSession(ctx, s.f.target, hello)
	if err != nil {
		return err
	}
	defer sess.Close()
	if st, ok := sess.TLSState(); ok {
		s.resumed.Store(st.DidResume)
	}
	cur := &simSession{sess: sess, acks: make(chan *agentproto.Ack, 4), wakes: make(chan string, 4), pushed: make(chan struct{}, 1),
		done: make(chan struct{})}
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
				case cur.acks <- x.Ack:
				default: // nobody waits for it any more
				}
			case *agentproto.ServerMessage_WakeUp:
				select {
				case cur.wakes <- x.WakeUp.Id:
				default: // a wake-up is already pending
				}
			case *agentproto.ServerMessage_Configuration:
				s.applyConfiguration(x.Configuration)
				cur.signal()
			case *agentproto.ServerMessage_TaskRuns:
				s.acceptRuns(x.TaskRuns)
				cur.signal()
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
	// The first check-in replicates whatever the server does not hold
	// (and carries what the outbox kept from an earlier session).
	if err := s.checkIn(ctx, agentproto.CheckInReason_CHECK_IN_REASON_STARTUP, ""); err != nil {
		return err
	}
	s.upAt.Store(time.Now().UnixNano())
	s.everUp.Store(true)
	s.connected.Store(true)
	s.f.up.Add(1)
	if err := s.drain(ctx); err != nil { // more than one check-in's worth
		return err
	}

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
		case <-cur.pushed:
			// Tell the server at once what a configuration did, and
			// report run results as the agent's outbox does.
			if err := s.drain(ctx); err != nil {
				return err
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
	s.pmu.Lock()
	report := s.report
	s.report = nil
	sent := slices.Clone(s.outbox[:min(len(s.outbox), maxSimEvents)])
	s.pmu.Unlock()
	if report != nil {
		ci.ConfigVersion, ci.ConfigError = report.version, report.err
	}
	for _, e := range sent {
		ci.Events = append(ci.Events, e.ev)
	}
	in0, out0 := s.in.Load(), s.out.Load()
	t0 := time.Now()
	ack, err := s.exchange(ctx, cur, ci)
	if err != nil {
		if report != nil { // reported again by the next check-in
			s.pmu.Lock()
			if s.report == nil {
				s.report = report
			}
			s.pmu.Unlock()
		}
		return err
	}
	now := time.Now()
	for _, sec := range secs {
		s.serverHashes[sec.Section] = sec.Hash
	}
	s.f.rec.checkIn(now.Sub(t0), s.in.Load()-in0, s.out.Load()-out0, len(secs) > 0, reason)
	if report != nil && report.err == "" {
		s.configAcked.Store(&report.version)
		s.configAckAt.Store(now.UnixNano())
	}
	for range ack.Rejected {
		s.f.errs.add("event_rejected")
	}
	if len(sent) > 0 {
		// Only check-ins (serialised by mu) remove events, from the head;
		// pushes append at the tail meanwhile.
		s.pmu.Lock()
		s.outbox = s.outbox[len(sent):]
		for _, e := range sent {
			if e.next != nil {
				s.outbox = append(s.outbox, *e.next)
			}
		}
		s.pmu.Unlock()
		for _, e := range sent {
			if e.watched {
				s.taskAckAt.Store(now.UnixNano())
			}
		}
	}
	return nil
}

// exchange sends a check-in and waits for its acknowledgement.
func (s *sim) exchange(ctx context.Context, cur *simSession, ci *agentproto.CheckIn) (*agentproto.Ack, error) {
	if err := cur.sess.Send(ci); err != nil {
		select { // the receiving goroutine has the server's reason
		case <-cur.done:
			return nil, cur.err
		case <-time.After(time.Second):
			return nil, err
		}
	}
	t := time.NewTimer(ackTimeout)
	defer t.Stop()
	for {
		select {
		case ack := <-cur.acks:
			if ack.GetSeq() != ci.Seq {
				continue
			}
			return ack, nil
		case <-cur.done:
			return nil, cur.err
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
			return nil, errAckTimeout
		}
	}
}

// maxSimEvents is how many events one check-in carries at most (as the
// agent's maxEventsPerCheckIn).
const maxSimEvents = 500

// signal tells the session loop that something arrived to report.
func (c *simSession) signal() {
	select {
	case c.pushed <- struct{}{}:
	default: // already signalled
	}
}

// drain sends check-ins while there is something to report: a
// configuration result or outbox events (a run's task.finished is queued
// when its task.started was acknowledged, so a run takes two).
func (s *sim) drain(ctx context.Context) error {
	for {
		s.pmu.Lock()
		due := s.report != nil || len(s.outbox) > 0
		s.pmu.Unlock()
		if !due {
			return nil
		}
		if err := s.checkIn(ctx, agentproto.CheckInReason_CHECK_IN_REASON_EVENTS, ""); err != nil {
			return err
		}
	}
}

// applyConfiguration validates a pushed configuration as the agent does
// (agentcfg.Manager.Apply: the document must parse and carry the announced
// version) and keeps the result for the next check-in; a refused one keeps
// the previous version.
func (s *sim) applyConfiguration(c *agentproto.Configuration) {
	now := time.Now()
	d, _, err := policy.ParseDocument(c.GetDocumentJson())
	if err == nil && d.Version != c.GetVersion() {
		err = fmt.Errorf("configuration announced as %q carries version %q", c.GetVersion(), d.Version)
	}
	s.pmu.Lock()
	if err != nil {
		s.report = &configReport{version: s.config, err: fmt.Sprintf("configuration %s refused: %s", c.GetVersion(), errcode.Message(err))}
	} else {
		s.config = c.GetVersion()
		s.report = &configReport{version: s.config}
	}
	s.pmu.Unlock()
	if err != nil {
		s.f.errs.add("config_refused")
	}
	s.configPushAt.Store(now.UnixNano())
}

// acceptRuns takes pushed task runs: each run id once (the server may
// deliver a run again after a reconnect), its task.started queued at once
// and its task.finished after that was acknowledged. Cancellations need
// nothing: a simulated run is over before one could arrive.
func (s *sim) acceptRuns(m *agentproto.TaskRuns) {
	now := time.Now()
	watch := s.f.watch.Load()
	s.pmu.Lock()
	defer s.pmu.Unlock()
	for _, run := range m.GetRuns() {
		id := run.GetId()
		if id == "" || s.ledger[id] {
			continue
		}
		if s.ledger == nil {
			s.ledger = map[string]bool{}
		}
		s.ledger[id] = true
		res, started := simulateRun(run, now)
		watched := watch != nil && runTitle(run) == *watch
		if watched {
			s.taskPushAt.Store(now.UnixNano())
		}
		fin := &simEvent{ev: simEventOf(taskrun.EventFinished, res, now), watched: watched}
		if !started {
			s.outbox = append(s.outbox, *fin)
			continue
		}
		s.outbox = append(s.outbox, simEvent{ev: simEventOf(taskrun.EventStarted, map[string]any{"run_id": id, "type": run.GetType()}, now), next: fin})
	}
}

// simulateRun is what a simulated agent does with a run: the result the
// real agent's taskrun reports (task.finished data), without executing
// anything. display_message succeeds with the agent's "message shown";
// run_command succeeds with exit code 0 and no output (no command runs);
// any other type fails as unsupported, and a run past its expiry or with
// parameters the agent would refuse fails as the agent's does. started is
// false when the agent would not start the run (no task.started).
func simulateRun(run *agentproto.TaskRun, now time.Time) (data map[string]any, started bool) {
	id := run.GetId()
	fail := func(msg string) map[string]any {
		return map[string]any{"run_id": id, "state": "failed", "output": "", "error": msg}
	}
	if exp := run.GetExpiresUnixMs(); exp > 0 && now.UnixMilli() > exp {
		return fail("expired before the agent could start it"), false
	}
	typ := tasks.Type(run.GetType())
	if _, err := tasks.ParseParams(typ, json.RawMessage(run.GetParamsJson())); err != nil {
		return fail(err.Error()), true
	}
	switch typ {
	case tasks.DisplayMessage:
		return map[string]any{"run_id": id, "state": "succeeded", "output": "message shown", "error": ""}, true
	case tasks.RunCommand:
		return map[string]any{"run_id": id, "state": "succeeded", "output": "", "error": "", "exit_code": 0}, true
	}
	return fail(fmt.Sprintf("task type %q is not simulated by the load harness", typ)), true
}

// runTitle is a run's "title" parameter (display_message), which the
// management scenario makes unique to recognise its task's runs.
func runTitle(run *agentproto.TaskRun) string {
	var p struct {
		Title string `json:"title"`
	}
	_ = json.Unmarshal(run.GetParamsJson(), &p)
	return p.Title
}

func simEventOf(typ string, data any, at time.Time) *agentproto.Event {
	b, _ := json.Marshal(data)
	return &agentproto.Event{Id: uuid.NewString(), Type: typ, TimeUnixMs: at.UnixMilli(), DataJson: b}
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
