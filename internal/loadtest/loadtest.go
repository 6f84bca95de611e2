// Package loadtest simulates many agents speaking the real agent protocol
// over real mTLS connections against one server, and measures what the
// server pays for them: memory per idle connection, bytes on the wire per
// no-change check-in, check-in and wake-up latency.
//
// Each simulated agent is a real agent.Direct client with its own TLS
// connection and a synthetic inventory; identities are cached on disk so a
// large run enrolls only once.
package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mamori/mamori/internal/agent"
	"github.com/mamori/mamori/internal/agent/inventory"
	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/pki"
	"github.com/mamori/mamori/internal/sectionzip"
)

// Config describes a run.
type Config struct {
	Server   string // agent listener HOST:PORT
	API      string // https://HOST:PORT
	DataDir  string // the server's data directory: CA, admin password
	Password string // admin password; default read from DataDir
	Agents   int
	Ramp     int           // new connections per second; default 500
	Settle   time.Duration // wait before reading idle memory; default 10s
	CheckIns int           // no-change check-ins per agent to measure; default 5
	Wakeups  int           // wake-ups to time; default 200
	Packages int           // packages in the synthetic inventory; default 800
	CacheDir string        // identity cache; default DataDir/../loadtest-cache
	// PprofURL is the server's --debug-listen base URL; when set, the server
	// is made to collect garbage before each memory reading, so per-agent
	// figures are live memory, not garbage awaiting collection.
	PprofURL string
	Log      io.Writer
}

// Report holds the results (JSON keys are stable).
type Report struct {
	Agents                int     `json:"agents"`
	Connected             int     `json:"connected"`
	Errors                int     `json:"errors"`
	ConnectSeconds        float64 `json:"connect_seconds"`
	ServerRSSBaseline     float64 `json:"server_rss_baseline_bytes"`
	ServerRSS             float64 `json:"server_rss_bytes"`
	ServerRSSPerAgent     float64 `json:"server_rss_per_agent_bytes"`
	ServerHeapPerAgent    float64 `json:"server_heap_per_agent_bytes"`
	ServerStackPerAgent   float64 `json:"server_stack_per_agent_bytes"`
	ServerGoroutinesAgent float64 `json:"server_goroutines_per_agent"`
	FirstCheckInBytes     float64 `json:"first_check_in_bytes"`
	BytesPerCheckInUp     float64 `json:"bytes_per_checkin_up"`
	BytesPerCheckInDown   float64 `json:"bytes_per_checkin_down"`
	BytesPerCheckIn       float64 `json:"bytes_per_checkin"`
	CheckInsPerSec        float64 `json:"checkins_per_sec"`
	P50ms                 float64 `json:"p50_ms"`
	P99ms                 float64 `json:"p99_ms"`
	WakeupP50ms           float64 `json:"wakeup_p50_ms"`
	WakeupP99ms           float64 `json:"wakeup_p99_ms"`
	WakeupMaxms           float64 `json:"wakeup_max_ms"`
}

type sim struct {
	id      *agent.Identity
	d       *agent.Direct
	s       *agent.Session
	in, out atomic.Uint64
	sendMu  sync.Mutex
	seq     uint64
	acks    chan uint64
	woken   chan time.Time
}

// Run executes the measurement and returns the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Agents <= 0 {
		return nil, errors.New("--agents must be positive")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.Ramp, 500)
	def(&cfg.CheckIns, 5)
	def(&cfg.Wakeups, 200)
	def(&cfg.Packages, 800)
	if cfg.Settle == 0 {
		cfg.Settle = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = filepath.Join(filepath.Dir(filepath.Clean(cfg.DataDir)), "loadtest-cache")
	}
	raiseFileLimit()
	caPEM, err := os.ReadFile(filepath.Join(cfg.DataDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("reading the server CA: %w", err)
	}
	ca, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		return nil, err
	}
	if cfg.Password == "" {
		b, err := os.ReadFile(filepath.Join(cfg.DataDir, "initial-admin-password"))
		if err != nil {
			return nil, fmt.Errorf("admin password: set MAMORI_ADMIN_PASSWORD or keep DATA/initial-admin-password: %w", err)
		}
		cfg.Password = strings.TrimSpace(string(b))
	}
	api, err := newAPI(cfg.API, ca, cfg.Password)
	if err != nil {
		return nil, err
	}
	ids, err := identities(ctx, cfg, ca, api)
	if err != nil {
		return nil, err
	}
	rep := &Report{Agents: cfg.Agents}
	api.pprof = strings.TrimSuffix(cfg.PprofURL, "/")
	base, err := api.metrics()
	if err != nil {
		return nil, err
	}
	rep.ServerRSSBaseline = base["process_resident_memory_bytes"]

	// Connect with a controlled ramp; each agent replicates once in full.
	sims := make([]*sim, len(ids))
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(cfg.Ramp))
	var wg sync.WaitGroup
	var errs atomic.Int64
	var firstBytes atomic.Uint64
	for i, id := range ids {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := connect(ctx, id, ca, cfg)
			if err != nil {
				errs.Add(1)
				fmt.Fprintf(cfg.Log, "agent %d: %v\n", i, err)
				return
			}
			firstBytes.Add(s.in.Load() + s.out.Load())
			sims[i] = s
		}()
	}
	tick.Stop()
	wg.Wait()
	rep.ConnectSeconds = time.Since(start).Seconds()
	live := slices.DeleteFunc(slices.Clone(sims), func(s *sim) bool { return s == nil })
	rep.Connected = len(live)
	rep.Errors = int(errs.Load())
	if len(live) == 0 {
		return rep, errors.New("no agent connected")
	}
	rep.FirstCheckInBytes = float64(firstBytes.Load()) / float64(len(live))
	fmt.Fprintf(cfg.Log, "%d/%d connected in %.1fs; settling %s\n", len(live), cfg.Agents, rep.ConnectSeconds, cfg.Settle)

	time.Sleep(cfg.Settle)
	idle, err := api.metrics()
	if err != nil {
		return nil, err
	}
	n := float64(len(live))
	rep.ServerRSS = idle["process_resident_memory_bytes"]
	rep.ServerRSSPerAgent = (idle["process_resident_memory_bytes"] - base["process_resident_memory_bytes"]) / n
	rep.ServerHeapPerAgent = (idle["go_memstats_heap_alloc_bytes"] - base["go_memstats_heap_alloc_bytes"]) / n
	rep.ServerStackPerAgent = (idle["go_memstats_stack_inuse_bytes"] - base["go_memstats_stack_inuse_bytes"]) / n
	rep.ServerGoroutinesAgent = (idle["go_goroutines"] - base["go_goroutines"]) / n

	// No-change check-ins on established connections.
	var up, down uint64
	for _, s := range live {
		up += s.out.Load()
		down += s.in.Load()
	}
	lat := make([]time.Duration, 0, len(live)*cfg.CheckIns)
	var latMu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(256)
	ciStart := time.Now()
	for _, s := range live {
		g.Go(func() error {
			local := make([]time.Duration, 0, cfg.CheckIns)
			for range cfg.CheckIns {
				t0 := time.Now()
				if err := s.checkIn(gctx, nil, ""); err != nil {
					return err
				}
				local = append(local, time.Since(t0))
			}
			latMu.Lock()
			lat = append(lat, local...)
			latMu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("check-ins: %w", err)
	}
	elapsed := time.Since(ciStart)
	var up2, down2 uint64
	for _, s := range live {
		up2 += s.out.Load()
		down2 += s.in.Load()
	}
	total := float64(len(lat))
	rep.BytesPerCheckInUp = float64(up2-up) / total
	rep.BytesPerCheckInDown = float64(down2-down) / total
	rep.BytesPerCheckIn = rep.BytesPerCheckInUp + rep.BytesPerCheckInDown
	rep.CheckInsPerSec = total / elapsed.Seconds()
	rep.P50ms, rep.P99ms = pct(lat, 50), pct(lat, 99)

	// Wake-ups through the API, timed until the agent's answer is acknowledged.
	wl := make([]time.Duration, 0, cfg.Wakeups)
	for i := 0; i < cfg.Wakeups; i++ {
		s := live[rand.IntN(len(live))]
		t0 := time.Now()
		if err := api.wake(s.id.ComputerID); err != nil {
			return nil, err
		}
		select {
		case <-s.woken:
			wl = append(wl, time.Since(t0))
		case <-time.After(10 * time.Second):
			return nil, fmt.Errorf("wake-up of %s not answered within 10s", s.id.ComputerID)
		}
	}
	if len(wl) > 0 {
		rep.WakeupP50ms, rep.WakeupP99ms, rep.WakeupMaxms = pct(wl, 50), pct(wl, 99), pct(wl, 100)
	}
	for _, s := range live {
		s.s.Close()
		s.d.Close()
	}
	return rep, nil
}

func pct(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return float64(s[i].Microseconds()) / 1000
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

func connect(ctx context.Context, id *agent.Identity, ca *x509.Certificate, cfg Config) (*sim, error) {
	cert, err := tls.X509KeyPair([]byte(id.CertPEM), []byte(id.KeyPEM))
	if err != nil {
		return nil, err
	}
	s := &sim{id: id, acks: make(chan uint64, 4), woken: make(chan time.Time, 4)}
	s.d = agent.NewDirect(agent.DirectOptions{Pin: pki.Fingerprint(ca.Raw), CA: ca, Cert: &cert,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return countingConn{Conn: c, s: s}, nil
		}})
	fp := fingerprint(id.Instance)
	hello := &agentproto.Hello{CapabilityVersion: agentproto.CapabilityVersion, AgentVersion: "loadtest",
		HardwareFingerprint: fp, SessionId: id.ComputerID, Instance: id.Instance}
	sess, _, err := s.d.OpenSession(ctx, cfg.Server, hello)
	if err != nil {
		s.d.Close()
		return nil, err
	}
	s.s = sess
	go s.recv()
	if err := s.checkIn(ctx, syntheticInventory(id, fp, cfg.Packages).Sections, ""); err != nil {
		sess.Close()
		s.d.Close()
		return nil, err
	}
	return s, nil
}

func (s *sim) recv() {
	for {
		m, err := s.s.Recv()
		if err != nil {
			close(s.acks)
			return
		}
		switch x := m.Msg.(type) {
		case *agentproto.ServerMessage_Ack:
			s.acks <- x.Ack.Seq
		case *agentproto.ServerMessage_WakeUp:
			go func() {
				if s.checkIn(context.Background(), nil, x.WakeUp.Id) == nil {
					s.woken <- time.Now()
				}
			}()
		}
	}
}

func (s *sim) checkIn(ctx context.Context, secs []*agentproto.InventorySection, wakeID string) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.seq++
	seq := s.seq
	ci := &agentproto.CheckIn{Seq: seq, WakeId: wakeID}
	if err := sectionzip.Pack(ci, secs); err != nil {
		return err
	}
	if err := s.s.Send(ci); err != nil {
		return err
	}
	for {
		select {
		case got, ok := <-s.acks:
			if !ok {
				return errors.New("session closed")
			}
			if got == seq {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(30 * time.Second):
			return errors.New("no ack within 30s")
		}
	}
}

// fingerprint is a simulated machine's hardware fingerprint, stable per name.
func fingerprint(name string) string {
	sum := sha256.Sum256([]byte("loadtest\x00" + name))
	return hex.EncodeToString(sum[:])
}

// syntheticInventory is a plausible computer with n packages.
func syntheticInventory(id *agent.Identity, fp string, n int) *inventory.Snapshot {
	r := rand.New(rand.NewPCG(uint64(len(id.ComputerID)), uint64(id.ComputerID[0])))
	pk := make([]*agentproto.Package, n)
	for i := range pk {
		pk[i] = &agentproto.Package{Name: fmt.Sprintf("package-%05d", i), Version: fmt.Sprintf("%d.%d.%d-%d", r.IntN(9), r.IntN(20), r.IntN(99), r.IntN(5)), Architecture: "amd64"}
	}
	return inventory.NewSnapshot(
		&agentproto.SystemInfo{Hostname: id.ComputerName, OsFamily: "linux", OsName: "Debian GNU/Linux", OsVersion: "12", Kernel: "6.1.0-28-amd64", Architecture: "amd64"},
		&agentproto.HardwareInfo{CpuModel: "Intel(R) Core(TM) i5-8500", CpuCores: 6, RamBytes: 16 << 30,
			Disks: []*agentproto.Disk{{Device: "/dev/nvme0n1p2", MountPoint: "/", Filesystem: "ext4", SizeBytes: 512 << 30, FreeGib: 200}}},
		&agentproto.NetworkInfo{Interfaces: []*agentproto.NetworkInterface{{Name: "eth0", Mac: "02:00:00:00:00:01", Addresses: []string{"10.0.0.2/24"}, Up: true}}},
		&agentproto.SoftwareInfo{Source: "dpkg", Packages: pk},
		&agentproto.UsersInfo{},
		&agentproto.AgentInfo{Version: "loadtest", CapabilityVersion: agentproto.CapabilityVersion, Instance: id.Instance, HardwareFingerprint: fp},
	)
}

// identities loads cached identities or enrolls new ones.
func identities(ctx context.Context, cfg Config, ca *x509.Certificate, api *apiClient) ([]*agent.Identity, error) {
	if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(cfg.CacheDir, "identities-"+pki.Fingerprint(ca.Raw)[7:19]+".jsonl")
	var ids []*agent.Identity
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() && len(ids) < cfg.Agents {
			var id agent.Identity
			if json.Unmarshal(sc.Bytes(), &id) == nil {
				ids = append(ids, &id)
			}
		}
		f.Close()
	}
	if len(ids) >= cfg.Agents {
		return ids[:cfg.Agents], nil
	}
	need := cfg.Agents - len(ids)
	token, err := api.token(need)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	start := len(ids)
	fmt.Fprintf(cfg.Log, "enrolling %d agents (cached in %s)\n", need, path)
	for i := range need {
		g.Go(func() error {
			id, err := enroll(gctx, cfg.Server, ca, token, fmt.Sprintf("sim-%06d", start+i))
			if err != nil {
				return err
			}
			b, _ := json.Marshal(id)
			mu.Lock()
			defer mu.Unlock()
			ids = append(ids, id)
			_, err = f.Write(append(b, '\n'))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("enrolling: %w", err)
	}
	return ids, nil
}

func enroll(ctx context.Context, server string, ca *x509.Certificate, token, name string) (*agent.Identity, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(key, name)
	if err != nil {
		return nil, err
	}
	d := agent.NewDirect(agent.DirectOptions{Pin: pki.Fingerprint(ca.Raw), CA: ca})
	defer d.Close()
	resp, err := d.Enroll(ctx, server, &agentproto.EnrollRequest{CapabilityVersion: agentproto.CapabilityVersion, Token: token, CsrDer: csr,
		Hostname: name, Instance: name, HardwareFingerprint: fingerprint(name), AgentVersion: "loadtest", Platform: "linux"})
	if err != nil {
		return nil, err
	}
	kp, err := pki.EncodeKey(key)
	if err != nil {
		return nil, err
	}
	return &agent.Identity{ComputerID: resp.ComputerId, ComputerName: resp.ComputerName, Instance: name, KeyPEM: string(kp),
		CertPEM: string(pki.EncodeCert(resp.CertificateDer)), CAPEM: string(pki.EncodeCert(resp.CaCertificateDer)), Servers: []string{server}}, nil
}

// raiseFileLimit lifts the soft open-files limit to the hard one.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

type apiClient struct {
	base  string
	pprof string
	c     *http.Client
}

func newAPI(base string, ca *x509.Certificate, password string) (*apiClient, error) {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	jar, _ := cookiejar.New(nil)
	a := &apiClient{base: strings.TrimSuffix(base, "/"), c: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 16}}}
	if err := a.post("/api/v1/session", map[string]string{"username": "admin", "password": password}, nil); err != nil {
		return nil, fmt.Errorf("logging in to %s: %w", base, err)
	}
	return a, nil
}

func (a *apiClient) post(path string, body, out any) error {
	b, _ := json.Marshal(body)
	resp, err := a.c.Post(a.base+path, "application/json", bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("POST %s: %s: %s", path, resp.Status, rb)
	}
	if out != nil {
		return json.Unmarshal(rb, out)
	}
	return nil
}

func (a *apiClient) token(uses int) (string, error) {
	var r struct{ Token string }
	err := a.post("/api/v1/enrollment-tokens", map[string]any{"ttl": "2h", "uses": uses, "description": "loadtest"}, &r)
	return r.Token, err
}

func (a *apiClient) wake(id string) error {
	return a.post("/api/v1/computers/"+id+"/wakeup", struct{}{}, nil)
}

// metrics reads the server's unlabelled Prometheus samples.
func (a *apiClient) metrics() (map[string]float64, error) {
	if a.pprof != "" {
		// heap?gc=1 runs a garbage collection first; twice lets the
		// second cycle shrink the stacks the first one found oversized.
		for range 2 {
			r, err := http.Get(a.pprof + "/debug/pprof/heap?gc=1")
			if err != nil {
				return nil, err
			}
			io.Copy(io.Discard, r.Body)
			r.Body.Close()
		}
	}
	resp, err := a.c.Get(a.base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.Contains(line, "{") {
			continue
		}
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			m[k] = f
		}
	}
	return m, sc.Err()
}
