package loadtest

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mamori/mamori/internal/agent"
	"github.com/mamori/mamori/internal/agentproto"
	"github.com/mamori/mamori/internal/atomicfile"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/pki"
)

// agentIdentity is an enrolled simulated agent.
type agentIdentity struct {
	agent.Identity
	fp  string
	inv simInventory
	// config is the configuration version the agent applied in an earlier
	// run: a real agent keeps it on disk and announces it when it
	// connects, so the server pushes nothing when it is still current.
	config string
}

// configsPath is where the applied configuration versions of a cache's
// agents are kept between runs (computer id -> version).
func configsPath(cfg *Config, ca *x509.Certificate) string {
	return filepath.Join(cfg.CacheDir, "configs-"+pki.Fingerprint(ca.Raw)[7:19]+".json")
}

// saveConfigs records the configuration version each agent of a stopped
// fleet applied.
func saveConfigs(f *fleet) error {
	m := make(map[string]string, len(f.sims))
	for _, s := range f.sims {
		s.pmu.Lock()
		s.id.config = s.config // the next fleet of this run starts from it too
		s.pmu.Unlock()
		if s.id.config != "" {
			m[s.id.ComputerID] = s.id.config
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return atomicfile.Write(configsPath(f.cfg, f.env.ca), b, 0o600)
}

// identities loads cached identities or enrolls new ones. The cache is one
// JSON line per agent (agent.Identity), per CA: a fresh server data
// directory starts a fresh cache.
func identities(ctx context.Context, cfg *Config, ca *x509.Certificate, api *apiClient) ([]*agentIdentity, error) {
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
	if need := cfg.Agents - len(ids); need > 0 {
		token := cfg.Token
		if token == "" {
			if api == nil {
				return nil, errors.New("enrolling needs --api (and the admin password) or --token")
			}
			var err error
			if token, err = api.token(need); err != nil {
				return nil, err
			}
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
				id, err := enrollRetrying(gctx, cfg.Server, ca, token, fmt.Sprintf("sim-%06d", start+i))
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
	}
	var configs map[string]string
	if b, err := os.ReadFile(configsPath(cfg, ca)); err == nil {
		json.Unmarshal(b, &configs) // a damaged file: every agent starts without one
	}
	out := make([]*agentIdentity, len(ids))
	for i, id := range ids {
		fp := fingerprint(id.Instance)
		out[i] = &agentIdentity{Identity: *id, fp: fp, inv: newSimInventory(id.Instance, id.Instance, fp, cfg.PackagesMin, cfg.PackagesMax),
			config: configs[id.ComputerID]}
	}
	return out, nil
}

// enrollAttempts bounds enrollment tries of one simulated agent while the
// server is unreachable or busy (as a real agent keeps trying).
const enrollAttempts = 8

// enrollRetrying enrolls, trying again after an unavailable answer (a
// server busy with thousands of connections times out now and then), 1 s
// then up to 10 s apart. A try whose answer was lost may leave a computer
// behind: the next one enrolls another.
func enrollRetrying(ctx context.Context, server string, ca *x509.Certificate, token, name string) (*agent.Identity, error) {
	for attempt := 1; ; attempt++ {
		id, err := enroll(ctx, server, ca, token, name)
		if err == nil || errcode.Of(err) != errcode.Unavailable || attempt == enrollAttempts {
			return id, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(min(time.Duration(attempt)*time.Second, 10*time.Second)):
		}
	}
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

func execShell(ctx context.Context, command string) (string, error) {
	out, err := exec.CommandContext(ctx, "sh", "-c", command).CombinedOutput()
	return string(out), err
}
