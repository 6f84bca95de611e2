package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/mamori/mamori/internal/agent"
	"github.com/mamori/mamori/internal/agentproto"
)

// rawClient speaks the agent protocol directly, so a test can send what a
// well-behaved agent never would.
func rawClient(t *testing.T, p *inproc, withCert bool) (agentproto.AgentClient, string) {
	t.Helper()
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	computerID := ""
	if withCert {
		state := filepath.Join(t.TempDir(), "raw")
		a, err := agent.New(agent.Config{StateDir: state, Servers: []string{p.srv.AgentAddr()}, Token: p.token(t),
			CAFingerprint: p.srv.CAFingerprint(), Instance: "raw", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Enroll(t.Context()); err != nil {
			t.Fatal(err)
		}
		id := a.Identity()
		cert, err := tls.X509KeyPair([]byte(id.CertPEM), []byte(id.KeyPEM))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
		computerID = id.ComputerID
	}
	conn, err := grpc.NewClient("passthrough:///"+p.srv.AgentAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentproto.NewAgentClient(conn), computerID
}

func hello() *agentproto.AgentMessage {
	return &agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Hello{Hello: &agentproto.Hello{
		CapabilityVersion: agentproto.CapabilityVersion, AgentVersion: "raw", HardwareFingerprint: agent.HardwareFingerprint("raw"), SessionId: "s1"}}}
}

func checkIn(ci *agentproto.CheckIn) *agentproto.AgentMessage {
	return &agentproto.AgentMessage{Msg: &agentproto.AgentMessage_CheckIn{CheckIn: ci}}
}

// openSession sends hello and reads Welcome.
func openSession(t *testing.T, c agentproto.AgentClient) agentproto.Agent_SessionClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	s, err := c.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(hello()); err != nil {
		t.Fatal(err)
	}
	m, err := s.Recv()
	if err != nil || m.GetWelcome() == nil {
		t.Fatalf("welcome: %v %v", m, err)
	}
	return s
}

// streamError sends msgs and returns the status code that ends the stream.
func streamError(t *testing.T, s agentproto.Agent_SessionClient, msgs ...*agentproto.AgentMessage) *status.Status {
	t.Helper()
	for _, m := range msgs {
		if err := s.Send(m); err != nil {
			break
		}
	}
	for {
		_, err := s.Recv()
		if err != nil {
			return status.Convert(err)
		}
	}
}

func ack(t *testing.T, s agentproto.Agent_SessionClient, ci *agentproto.CheckIn) *agentproto.Ack {
	t.Helper()
	if err := s.Send(checkIn(ci)); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("waiting for ack %d: %v", ci.Seq, err)
		}
		if a := m.GetAck(); a != nil && a.Seq == ci.Seq {
			return a
		}
	}
}

func ev(id, typ, data string) *agentproto.Event {
	return &agentproto.Event{Id: id, Type: typ, TimeUnixMs: time.Now().UnixMilli(), DataJson: []byte(data)}
}

func TestProtocol_HostileAgentMessages(t *testing.T) {
	t.Parallel()
	p := startInproc(t)

	t.Run("session without a client certificate", func(t *testing.T) {
		c, _ := rawClient(t, p, false)
		s, err := c.Session(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		st := streamError(t, s, hello())
		if st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "client certificate") {
			t.Fatalf("got %v", st)
		}
	})

	c, id := rawClient(t, p, true)

	t.Run("first message is not hello", func(t *testing.T) {
		s, _ := c.Session(t.Context())
		st := streamError(t, s, checkIn(&agentproto.CheckIn{Seq: 1}))
		if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "Hello") {
			t.Fatalf("got %v", st)
		}
	})

	t.Run("capability version zero", func(t *testing.T) {
		s, _ := c.Session(t.Context())
		h := hello()
		h.GetHello().CapabilityVersion = 0
		if st := streamError(t, s, h); st.Code() != codes.FailedPrecondition {
			t.Fatalf("got %v", st)
		}
	})

	t.Run("section body of another kind", func(t *testing.T) {
		s := openSession(t, c)
		bad := &agentproto.InventorySection{Section: agentproto.Section_SECTION_SYSTEM, Hash: []byte("0123456789abcdef"),
			Body: &agentproto.InventorySection_Hardware{Hardware: &agentproto.HardwareInfo{CpuCores: 2}}}
		st := streamError(t, s, checkIn(&agentproto.CheckIn{Seq: 1, Sections: []*agentproto.InventorySection{bad}}))
		if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "system") {
			t.Fatalf("got %v", st)
		}
		if len(p.api.computer(t, id).Inventory) != 0 {
			t.Fatal("a refused check-in stored inventory")
		}
	})

	t.Run("too many events", func(t *testing.T) {
		s := openSession(t, c)
		ci := &agentproto.CheckIn{Seq: 1}
		for i := range 1001 {
			ci.Events = append(ci.Events, ev("bulk-"+strconv.Itoa(i), "test.bulk", "{}"))
		}
		if st := streamError(t, s, checkIn(ci)); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "at most 1000") {
			t.Fatalf("got %v", st)
		}
	})

	t.Run("malformed events are rejected one by one, the rest stored exactly once", func(t *testing.T) {
		s := openSession(t, c)
		a := ack(t, s, &agentproto.CheckIn{Seq: 1, Events: []*agentproto.Event{
			ev("good-1", "test.good", `{"n":1}`),
			ev("bad id!", "test.bad", "{}"),
			ev("bad-type", "Test.Bad", "{}"),
			ev("bad-data", "test.bad", `[1,2]`),
			ev("bad-json", "test.bad", `{"n":`),
			{Id: "no-time", Type: "test.bad"},
			ev("big-data", "test.bad", `{"x":"`+strings.Repeat("a", 65<<10)+`"}`),
		}})
		if len(a.Rejected) != 6 {
			t.Fatalf("rejected %d events, want 6: %v", len(a.Rejected), a.Rejected)
		}
		for _, r := range a.Rejected {
			if r.Reason == "" {
				t.Errorf("rejection of %s has no reason", r.Id)
			}
		}
		// The acknowledgement was "lost": the agent sends the same event
		// again, in a new check-in and in a new session.
		ack(t, s, &agentproto.CheckIn{Seq: 2, Events: []*agentproto.Event{ev("good-1", "test.good", `{"n":1}`), ev("good-2", "test.good", `{"n":2}`)}})
		s2 := openSession(t, c)
		ack(t, s2, &agentproto.CheckIn{Seq: 1, Events: []*agentproto.Event{ev("good-2", "test.good", `{"n":2}`)}})
		evs := p.api.events(t, id)
		assertUniqueIDs(t, evs)
		if n := countTypes(evs); n["test.good"] != 2 || n["test.bad"] != 0 {
			t.Fatalf("stored %v", fmtCounts(n))
		}
	})

	t.Run("oversized message", func(t *testing.T) {
		c, _ := rawClient(t, p, true) // the connection may not survive this
		s := openSession(t, c)
		ci := &agentproto.CheckIn{Seq: 1, Events: []*agentproto.Event{ev("big", "test.big", `{"x":"`+strings.Repeat("a", 17<<20)+`"}`)}}
		if st := streamError(t, s, checkIn(ci)); st.Code() != codes.ResourceExhausted {
			t.Fatalf("got %v", st)
		}
	})
}
