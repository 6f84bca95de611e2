package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/enrollment"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/pki"
	"github.com/mamori/mamori/internal/sectionzip"
	"github.com/mamori/mamori/internal/store"
)

// agentStore is what the agent endpoint needs from the store.
type agentStore interface {
	AgentSession(ctx context.Context, serial string) (*store.AgentSession, error)
	MarkCloneSuspected(ctx context.Context, id, reason string) error
}

// Limits on what one agent message may carry.
const (
	maxEventsPerCheckIn = 1000
	maxEventData        = 64 << 10
	maxEventIDLen       = 64
	maxEventTypeLen     = 64
	maxSectionHashLen   = 64
)

var (
	eventTypeRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$`)
	eventIDRE   = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// agentService implements the agent gRPC service.
type agentService struct {
	agentproto.UnimplementedAgentServer
	store    agentStore
	enroll   *enrollment.Service
	hub      *Hub
	metrics  *metrics
	log      *slog.Logger
	interval time.Duration // check-in interval asked of agents; 0 = theirs
	now      func() time.Time
	drop     func(remote string) // closes an agent's network connection
	work     *workPool
	writes   *batcher
	gate     *sessionGate
	// Management (capability 2): task run uploads, configuration pushes,
	// and the scheduler told about connections (pending runs). Each may
	// be nil.
	uploads   *uploads
	configs   *configPusher
	connected func(computerID string)
	updates   *updatesMirror // the built-in update mirror; nil: none
}

// workPool runs store work for sessions on a few long-lived goroutines.
// Session handlers wait on them instead of doing the work themselves, so a
// handler's stack stays shallow while it idles in Recv (memory per agent),
// and the number of concurrent store operations is bounded.
type workPool struct {
	jobs    chan func()
	waiting prometheus.Gauge // callers waiting for a worker; may be nil
}

func newWorkPool(ctx context.Context, n int, waiting prometheus.Gauge) *workPool {
	p := &workPool{jobs: make(chan func()), waiting: waiting}
	for range n {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case f := <-p.jobs:
					f()
				}
			}
		}()
	}
	return p
}

// do runs f on a pool goroutine and waits for it; it gives up when ctx ends.
func (p *workPool) do(ctx context.Context, f func()) error {
	done := make(chan struct{})
	job := func() { f(); close(done) }
	select {
	case p.jobs <- job: // a worker was idle
	default:
		if p.waiting != nil {
			p.waiting.Inc()
			defer p.waiting.Dec()
		}
		select {
		case p.jobs <- job:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	<-done
	return nil
}

func grpcError(err error) error {
	if err == nil {
		return nil
	}
	return status.Error(errcode.GRPCCode(err), errcode.Message(err))
}

func (a *agentService) Enroll(ctx context.Context, req *agentproto.EnrollRequest) (*agentproto.EnrollResponse, error) {
	if req.CapabilityVersion < agentproto.MinCapabilityVersion {
		a.metrics.enrollments.WithLabelValues(string(errcode.Invalid)).Inc()
		return nil, status.Error(codes.FailedPrecondition, "agent protocol too old; upgrade the agent")
	}
	remote := ""
	if p, ok := peer.FromContext(ctx); ok {
		remote = p.Addr.String()
	}
	res, err := a.enroll.Enroll(ctx, enrollment.Request{
		Remote:              remote,
		Token:               req.Token,
		CSR:                 req.CsrDer,
		Hostname:            req.Hostname,
		Instance:            req.Instance,
		HardwareFingerprint: req.HardwareFingerprint,
		AgentVersion:        req.AgentVersion,
		Platform:            req.Platform,
	})
	if err != nil {
		a.metrics.enrollments.WithLabelValues(string(errcode.Of(err))).Inc()
		a.log.Warn("enrollment refused", "remote", remote, "hostname", req.Hostname, "instance", req.Instance, "reason", errcode.Message(err), "err", err)
		return nil, grpcError(err)
	}
	a.metrics.enrollments.WithLabelValues("ok").Inc()
	a.log.Info("computer enrolled", "computer", res.Computer.ID, "name", res.Computer.Name, "group", res.GroupPath,
		"remote", remote, "clone_suspected", res.Computer.CloneSuspected)
	return &agentproto.EnrollResponse{
		CapabilityVersion: agentproto.CapabilityVersion,
		ComputerId:        res.Computer.ID,
		CertificateDer:    res.Certificate,
		CaCertificateDer:  res.CA,
		ComputerName:      res.Computer.Name,
		GroupPath:         res.GroupPath,
	}, nil
}

// authenticate finds the computer behind the stream's client certificate.
// One store query returns the certificate, its computer and the computer's
// section hashes (for Welcome): a session set-up costs one round trip to a
// PostgreSQL store.
func (a *agentService) authenticate(ctx context.Context) (*store.AgentSession, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, errcode.New(errcode.Unauthorized, "no peer information")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.PeerCertificates) == 0 {
		return nil, errcode.New(errcode.Unauthorized, "a client certificate is required; enroll first")
	}
	leaf := info.State.PeerCertificates[0]
	s, err := a.store.AgentSession(ctx, pki.SerialString(leaf.SerialNumber))
	if errcode.Is(err, errcode.NotFound) {
		return nil, errcode.New(errcode.Unauthorized, "certificate is not known to this server")
	}
	if err != nil {
		return nil, err
	}
	cert := s.Certificate
	if !cert.RevokedAt.IsZero() {
		return nil, errcode.New(errcode.Forbidden, "certificate revoked at %s", cert.RevokedAt.Format(time.RFC3339))
	}
	if cert.ComputerID != pki.ComputerID(leaf) {
		return nil, errcode.New(errcode.Forbidden, "certificate does not match its computer")
	}
	if !s.Computer.RevokedAt.IsZero() {
		return nil, errcode.New(errcode.Forbidden, "computer has been removed from management")
	}
	return s, nil
}

func (a *agentService) Session(stream agentproto.Agent_SessionServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	admitted, after := a.gate.enter(a.now())
	if !admitted {
		// Explicit back-pressure: answer the agent's Hello (it sends it
		// at once) with a time to come back, and end the stream. The
		// connection stays open for the agent's next attempt.
		if _, err := stream.Recv(); err != nil {
			return nil
		}
		a.metrics.sessions.WithLabelValues("retry_later").Inc()
		a.metrics.retryAfter.Observe(after.Seconds())
		stream.Send(&agentproto.ServerMessage{Msg: &agentproto.ServerMessage_RetryLater{RetryLater: &agentproto.RetryLater{
			RetryAfterMs: uint32(after / time.Millisecond), Reason: "server busy: too many agents connecting at once"}}})
		return nil
	}
	a.metrics.sessionSetups.Inc()
	inSetup := true
	setupDone := func() {
		if inSetup {
			inSetup = false
			a.gate.leave(a.now())
			a.metrics.sessionSetups.Dec()
		}
	}
	defer setupDone()
	var sess *store.AgentSession
	var err error
	seen := a.configs.changesSeen() // before the computer's configuration version is read
	if werr := a.work.do(ctx, func() { sess, err = a.authenticate(ctx) }); werr != nil {
		return nil
	}
	if err != nil {
		a.metrics.sessions.WithLabelValues("refused").Inc()
		return grpcError(err)
	}
	comp := sess.Computer
	first, err := stream.Recv()
	if err != nil {
		return nil
	}
	hello := first.GetHello()
	if hello == nil {
		a.metrics.sessions.WithLabelValues("refused").Inc()
		return status.Error(codes.InvalidArgument, "the first message of a session must be Hello")
	}
	if hello.CapabilityVersion < agentproto.MinCapabilityVersion {
		return status.Error(codes.FailedPrecondition, "agent protocol too old; upgrade the agent")
	}
	if len(hello.HardwareFingerprint) > 128 || len(hello.SessionId) > 64 || len(hello.AgentVersion) > 64 || len(hello.Hostname) > 253 {
		return status.Error(codes.InvalidArgument, "hello fields too long")
	}
	remote := ""
	if p, ok := peer.FromContext(ctx); ok {
		remote = p.Addr.String()
	}
	now := a.now()
	conn := &agentConn{
		computerID:  comp.ID,
		sessionID:   hello.SessionId,
		fingerprint: hello.HardwareFingerprint,
		remote:      remote,
		capability:  hello.CapabilityVersion,
		connectedAt: now,
		cancel:      cancel,
		drop:        func() { a.drop(remote) },
		send: func(m *agentproto.ServerMessage) error {
			return stream.Send(m)
		},
	}
	conn.touch(now)

	res := a.hub.attach(conn)
	defer a.hub.detach(conn)
	a.metrics.sessions.WithLabelValues("accepted").Inc()
	// Built when needed: a logger with attributes costs memory for the
	// life of the session, for every agent.
	name := comp.Name
	log := func() *slog.Logger { return a.log.With("computer", conn.computerID, "name", name, "remote", remote) }

	clone := res.cloneReason
	if clone == "" && hello.HardwareFingerprint != comp.HardwareFingerprint {
		clone = "certificate presented from different hardware (" + short(hello.HardwareFingerprint) + ", enrolled on " + short(comp.HardwareFingerprint) + ")"
	}
	if clone != "" && !(comp.CloneSuspected && comp.CloneReason == clone) {
		log().Warn("clone suspected", "reason", clone)
		a.work.do(ctx, func() { err = a.store.MarkCloneSuspected(ctx, comp.ID, clone) })
		if err != nil {
			return grpcError(err)
		}
	}

	welcome := &agentproto.Welcome{
		CapabilityVersion:      agentproto.CapabilityVersion,
		ComputerId:             comp.ID,
		CheckInIntervalSeconds: uint32(a.interval / time.Second),
		ServerTimeUnixMs:       now.UnixMilli(),
	}
	if conn.capability >= 2 {
		welcome.UpdateUrl, welcome.UpdateRootSha256 = a.updates.welcome()
	}
	for name, h := range sess.SectionHashes {
		if sec, ok := sectionByName[name]; ok {
			welcome.SectionHashes = append(welcome.SectionHashes, &agentproto.SectionHash{Section: sec, Hash: h})
		}
	}
	if err := conn.sendMsg(&agentproto.ServerMessage{Msg: &agentproto.ServerMessage_Welcome{Welcome: welcome}}); err != nil {
		return nil
	}
	setupDone()
	a.sessionStarted(ctx, conn, hello, comp.ConfigVersion, seen) // configuration and pending task runs
	for {
		msg, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				log().Debug("agent stream ended", "err", err)
			}
			return nil
		}
		ci := msg.GetCheckIn()
		if ci == nil {
			return status.Error(codes.InvalidArgument, "expected CheckIn")
		}
		var ack *agentproto.Ack
		var w *store.CheckIn
		if werr := a.work.do(ctx, func() { ack, w, err = a.checkIn(conn, ci) }); werr != nil {
			return nil
		}
		if err != nil {
			log().Warn("check-in refused", "err", err)
			return grpcError(err)
		}
		if w != nil {
			inserted, err := a.writes.apply(ctx, w)
			if err != nil {
				log().Error("storing check-in", "err", err)
				return grpcError(errcode.New(errcode.Unavailable, "could not store the check-in; retry"))
			}
			a.metrics.sectionsStored.Add(float64(len(w.Sections)))
			a.metrics.events.WithLabelValues("stored").Add(float64(inserted))
			a.metrics.events.WithLabelValues("duplicate").Add(float64(len(w.Events) - inserted))
		}
		if err := conn.sendMsg(&agentproto.ServerMessage{Msg: &agentproto.ServerMessage_Ack{Ack: ack}}); err != nil {
			return nil
		}
	}
}

// checkIn validates one check-in and returns its Ack and what it must write
// (nil when nothing changed). The caller sends the Ack only after the write
// committed.
func (a *agentService) checkIn(conn *agentConn, ci *agentproto.CheckIn) (*agentproto.Ack, *store.CheckIn, error) {
	now := a.now()
	conn.touch(now)
	a.metrics.checkIns.Inc()
	if ci.WakeId != "" {
		a.hub.wakeAnswered(conn, ci.WakeId, now)
	}
	if len(ci.Events) > maxEventsPerCheckIn {
		return nil, nil, errcode.New(errcode.Invalid, "at most %d events per check-in", maxEventsPerCheckIn)
	}
	secs, err := sectionzip.Unpack(ci)
	if err != nil {
		return nil, nil, errcode.New(errcode.Invalid, "%v", err)
	}
	w := &store.CheckIn{ComputerID: conn.computerID, Now: now}
	for _, s := range secs {
		sec, err := sectionRecord(s)
		if err != nil {
			return nil, nil, err
		}
		w.Sections = append(w.Sections, sec)
		summarize(&w.Summary, s)
	}
	ack := &agentproto.Ack{Seq: ci.Seq}
	seen := make(map[string]bool, len(ci.Events))
	for _, e := range ci.Events {
		if reason := invalidEvent(e); reason != "" {
			ack.Rejected = append(ack.Rejected, &agentproto.RejectedEvent{Id: e.Id, Reason: reason})
			continue
		}
		if seen[e.Id] {
			continue
		}
		seen[e.Id] = true
		w.Events = append(w.Events, store.Event{ID: e.Id, Type: e.Type, OccurredAt: time.UnixMilli(e.TimeUnixMs), Data: string(e.DataJson)})
	}
	a.metrics.events.WithLabelValues("rejected").Add(float64(len(ack.Rejected)))
	if ci.ConfigVersion != "" || ci.ConfigError != "" {
		w.Config = &store.ConfigReport{Applied: clip(ci.ConfigVersion, 64), Error: clip(ci.ConfigError, 4096)}
	}
	if len(w.Sections) == 0 && len(w.Events) == 0 && w.Config == nil {
		return ack, nil, nil
	}
	return ack, w, nil
}

func invalidEvent(e *agentproto.Event) string {
	switch {
	case e.Id == "" || len(e.Id) > maxEventIDLen || !eventIDRE.MatchString(e.Id):
		return "id must be 1-64 characters of letters, digits, '-' and '_'"
	case len(e.Type) > maxEventTypeLen || !eventTypeRE.MatchString(e.Type):
		return "type must be dotted lower-case words of at most 64 characters"
	case e.TimeUnixMs <= 0:
		return "time missing"
	case len(e.DataJson) > maxEventData:
		return "data larger than 64 KiB"
	case len(e.DataJson) > 0 && !isJSONObject(e.DataJson):
		return "data must be a JSON object"
	}
	return ""
}

// isJSONObject reports whether b is one UTF-8 JSON object (json.Unmarshal
// alone accepts null and invalid UTF-8).
func isJSONObject(b []byte) bool {
	var m map[string]json.RawMessage
	return utf8.Valid(b) && json.Unmarshal(b, &m) == nil && m != nil
}

var sectionNames = map[agentproto.Section]string{
	agentproto.Section_SECTION_SYSTEM:   "system",
	agentproto.Section_SECTION_HARDWARE: "hardware",
	agentproto.Section_SECTION_NETWORK:  "network",
	agentproto.Section_SECTION_SOFTWARE: "software",
	agentproto.Section_SECTION_USERS:    "users",
	agentproto.Section_SECTION_AGENT:    "agent",
}

var sectionByName = func() map[string]agentproto.Section {
	m := map[string]agentproto.Section{}
	for k, v := range sectionNames {
		m[v] = k
	}
	return m
}()

var inventoryJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// sectionRecord checks that a section's body matches its declared kind and
// turns it into its stored JSON form.
func sectionRecord(s *agentproto.InventorySection) (store.InventorySection, error) {
	name, ok := sectionNames[s.Section]
	if !ok {
		return store.InventorySection{}, errcode.New(errcode.Invalid, "unknown inventory section %d", s.Section)
	}
	if len(s.Hash) == 0 || len(s.Hash) > maxSectionHashLen {
		return store.InventorySection{}, errcode.New(errcode.Invalid, "section %s: hash must be 1-%d bytes", name, maxSectionHashLen)
	}
	var body proto.Message
	switch b := s.Body.(type) {
	case *agentproto.InventorySection_System:
		body, ok = b.System, s.Section == agentproto.Section_SECTION_SYSTEM
	case *agentproto.InventorySection_Hardware:
		body, ok = b.Hardware, s.Section == agentproto.Section_SECTION_HARDWARE
	case *agentproto.InventorySection_Network:
		body, ok = b.Network, s.Section == agentproto.Section_SECTION_NETWORK
	case *agentproto.InventorySection_Software:
		body, ok = b.Software, s.Section == agentproto.Section_SECTION_SOFTWARE
	case *agentproto.InventorySection_Users:
		body, ok = b.Users, s.Section == agentproto.Section_SECTION_USERS
	case *agentproto.InventorySection_Agent:
		body, ok = b.Agent, s.Section == agentproto.Section_SECTION_AGENT
	default:
		ok = false
	}
	if !ok || body == nil || !body.ProtoReflect().IsValid() { // a typed nil body is missing too
		return store.InventorySection{}, errcode.New(errcode.Invalid, "section %s: body missing or of another kind", name)
	}
	data, err := inventoryJSON.Marshal(body)
	if err != nil {
		return store.InventorySection{}, errcode.New(errcode.Invalid, "section %s: %v", name, err)
	}
	return store.InventorySection{Section: name, Hash: s.Hash, Data: string(data)}, nil
}

// summarize copies list-worthy fields onto the computer row.
func summarize(sum *store.ComputerSummary, s *agentproto.InventorySection) {
	switch b := s.Body.(type) {
	case *agentproto.InventorySection_System:
		sum.Hostname, sum.OSName, sum.OSVersion = clip(b.System.Hostname, 253), clip(b.System.OsName, 128), clip(b.System.OsVersion, 128)
	case *agentproto.InventorySection_Agent:
		sum.AgentVersion = clip(b.Agent.Version, 64)
		if st := b.Agent.EngineUpdateState; st != "" { // an agent with engine updates
			e := &store.EngineReport{Version: b.Agent.EngineVersion, UpdateState: clip(st, 32), LastError: clip(b.Agent.EngineLastError, 512)}
			if t := b.Agent.EngineLastSuccessUnix; t > 0 && t < 1<<40 {
				e.LastSuccess = time.Unix(t, 0)
			}
			sum.Engine = e
		}
	}
}

// clip cuts s to at most n bytes without splitting a UTF-8 sequence.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
