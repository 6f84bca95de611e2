package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/pki"
	"github.com/mamori/mamori/internal/sectionzip"
)

// EchoConfig configures an echo endpoint.
type EchoConfig struct {
	// DataDir is a server's data directory: the echo endpoint reads its CA
	// and server certificate (writes nothing), so agents enrolled with that
	// server connect to it unchanged. Required.
	DataDir string
	// Listen is the agent address; default ":2223".
	Listen string
	// Transport is the server's AgentTransport: "lean" (default) or "grpc".
	Transport string
	// DebugListen, if set, serves /metrics and pprof (plain HTTP).
	DebugListen string
	// ReusePort lets several echo endpoints bind Listen (SO_REUSEPORT), as
	// servers sharing a store do: one process holds at most as many
	// agents as it may open files.
	ReusePort bool
	// KeepaliveTime/KeepaliveTimeout as in Config; defaults 30s and 20s.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// Log is the logger; default slog.Default().
	Log *slog.Logger
}

// Echo is the load harness's baseline: an agent endpoint with the server's
// exact protocol stack (the same TLS configuration, handshake slots and
// gRPC settings; see agentEndpoint) whose Agent service does no work: no
// store, no presence, no validation. It answers Hello with Welcome and
// every CheckIn with its Ack. The only state it keeps is, per computer,
// the section hashes last sent (so reconnecting agents are not asked for a
// full replication every time). Enroll is not served.
//
// What the server achieves divided by what Echo achieves on the same
// machine in the same run is the harness's echo_ratio.
//
// Lifecycle: NewEcho (binds) → Run (until ctx ends) → Close.
type Echo struct {
	cfg     EchoConfig
	ln      net.Listener
	debugLn net.Listener
	agent   *agentEndpoint
	metrics *metrics
	conns   sync.Map
}

// NewEcho prepares an echo endpoint.
func NewEcho(cfg EchoConfig) (*Echo, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("echo: the server's data directory is required")
	}
	if cfg.Listen == "" {
		cfg.Listen = ":2223"
	}
	if cfg.KeepaliveTime == 0 {
		cfg.KeepaliveTime = 30 * time.Second
	}
	if cfg.KeepaliveTimeout == 0 {
		cfg.KeepaliveTimeout = 20 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	ca, err := pki.LoadCACert(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("echo: reading the CA: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(cfg.DataDir, "server.crt"), filepath.Join(cfg.DataDir, "server.key"))
	if err != nil {
		return nil, fmt.Errorf("echo: reading the server certificate: %w", err)
	}
	cert.Certificate = append(cert.Certificate, ca.Raw)
	e := &Echo{cfg: cfg, metrics: newMetrics()}
	if e.ln, err = listen(cfg.Listen, cfg.ReusePort); err != nil {
		return nil, err
	}
	if cfg.DebugListen != "" {
		if e.debugLn, err = net.Listen("tcp", cfg.DebugListen); err != nil {
			e.ln.Close()
			return nil, err
		}
	}
	tlsCfg := agentTLSConfig(cert, ca)
	e.agent = newAgentEndpoint(endpointOptions{
		Transport:      cfg.Transport,
		TLS:            tlsCfg,
		Listener:       countingListener{Listener: e.ln, in: &e.metrics.in, out: &e.metrics.out, conns: &e.conns},
		HandshakeSlots: 128, HandshakeQueue: 10000, HandshakeTimeout: 30 * time.Second,
		KeepaliveTime: cfg.KeepaliveTime, KeepaliveTimeout: cfg.KeepaliveTimeout,
		Metrics: e.metrics, Log: cfg.Log,
	}, &echoService{metrics: e.metrics})
	return e, nil
}

// agentTLSConfig is the agent listener's TLS configuration.
func agentTLSConfig(cert tls.Certificate, ca *x509.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven, // Enroll is the one call made without a certificate
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{"h2"},
	}
}

// Addr is the bound agent address.
func (e *Echo) Addr() string { return e.ln.Addr().String() }

// DebugAddr is the bound debug address ("" without one).
func (e *Echo) DebugAddr() string {
	if e.debugLn == nil {
		return ""
	}
	return e.debugLn.Addr().String()
}

// Run serves until ctx ends.
func (e *Echo) Run(ctx context.Context) error {
	if e.debugLn != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(e.metrics.reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		dbg := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go dbg.Serve(e.debugLn)
		defer dbg.Close()
	}
	errc := make(chan error, 1)
	go func() { errc <- e.agent.serve() }()
	e.cfg.Log.Info("echo endpoint running", "listen", e.Addr())
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	e.agent.close()
	return nil
}

// Close releases the listeners.
func (e *Echo) Close() error {
	e.agent.close()
	e.ln.Close()
	if e.debugLn != nil {
		e.debugLn.Close()
	}
	return nil
}

type echoService struct {
	agentproto.UnimplementedAgentServer
	metrics *metrics
	hashes  sync.Map // computer id -> []*agentproto.SectionHash
}

func (s *echoService) Session(stream agentproto.Agent_SessionServer) error {
	p, _ := peer.FromContext(stream.Context())
	var info credentials.TLSInfo
	if p != nil {
		info, _ = p.AuthInfo.(credentials.TLSInfo)
	}
	if len(info.State.VerifiedChains) == 0 {
		return status.Error(codes.Unauthenticated, "a client certificate is required")
	}
	id := pki.ComputerID(info.State.PeerCertificates[0])
	first, err := stream.Recv()
	if err != nil {
		return nil
	}
	if first.GetHello() == nil {
		return status.Error(codes.InvalidArgument, "the first message of a session must be Hello")
	}
	welcome := &agentproto.Welcome{CapabilityVersion: agentproto.CapabilityVersion, ComputerId: id, ServerTimeUnixMs: time.Now().UnixMilli()}
	if h, ok := s.hashes.Load(id); ok {
		welcome.SectionHashes = h.([]*agentproto.SectionHash)
	}
	if err := stream.Send(&agentproto.ServerMessage{Msg: &agentproto.ServerMessage_Welcome{Welcome: welcome}}); err != nil {
		return nil
	}
	s.metrics.sessions.WithLabelValues("accepted").Inc()
	s.metrics.connected.Inc()
	defer s.metrics.connected.Dec()
	for {
		m, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return nil
		}
		ci := m.GetCheckIn()
		if ci == nil {
			return status.Error(codes.InvalidArgument, "expected CheckIn")
		}
		s.metrics.checkIns.Inc()
		if len(ci.Sections) > 0 || len(ci.SectionsGzip) > 0 {
			s.remember(id, ci)
		}
		if err := stream.Send(&agentproto.ServerMessage{Msg: &agentproto.ServerMessage_Ack{Ack: &agentproto.Ack{Seq: ci.Seq}}}); err != nil {
			return nil
		}
	}
}

// remember keeps the hashes of the sections a check-in carried.
func (s *echoService) remember(id string, ci *agentproto.CheckIn) {
	secs, err := sectionzip.Unpack(ci)
	if err != nil {
		return
	}
	byKind := map[agentproto.Section][]byte{}
	if h, ok := s.hashes.Load(id); ok {
		for _, x := range h.([]*agentproto.SectionHash) {
			byKind[x.Section] = x.Hash
		}
	}
	for _, sec := range secs {
		byKind[sec.Section] = sec.Hash
	}
	hs := make([]*agentproto.SectionHash, 0, len(byKind))
	for k, v := range byKind {
		hs = append(hs, &agentproto.SectionHash{Section: k, Hash: v})
	}
	s.hashes.Store(id, hs)
}
