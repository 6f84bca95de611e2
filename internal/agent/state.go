package agent

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mamori/mamori/internal/atomicfile"
	"github.com/mamori/mamori/internal/pki"
)

// Files in the state directory.
const (
	IdentityFile = "identity.json" // written once, atomically, when enrollment succeeds
	OutboxFile   = "outbox.db"
)

// Identity is what enrollment leaves in the state directory: the agent's key
// (generated here, never sent anywhere), its certificate, the pinned CA and
// the connection settings later runs reuse.
type Identity struct {
	ComputerID   string    `json:"computer_id"`
	ComputerName string    `json:"computer_name"`
	GroupPath    string    `json:"group_path"`
	Servers      []string  `json:"servers"`
	Proxy        string    `json:"proxy,omitempty"`
	Instance     string    `json:"instance,omitempty"`
	KeyPEM       string    `json:"key_pem"`
	CertPEM      string    `json:"cert_pem"`
	CAPEM        string    `json:"ca_pem"`
	EnrolledAt   time.Time `json:"enrolled_at"`
}

// ErrNotEnrolled means the state directory holds no identity.
var ErrNotEnrolled = errors.New("not enrolled")

// LoadIdentity reads the identity from dir.
func LoadIdentity(dir string) (*Identity, error) {
	b, err := os.ReadFile(filepath.Join(dir, IdentityFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotEnrolled
	}
	if err != nil {
		return nil, err
	}
	var id Identity
	if err := json.Unmarshal(b, &id); err != nil {
		return nil, fmt.Errorf("%s is corrupt: %w", filepath.Join(dir, IdentityFile), err)
	}
	if _, err := id.certificate(); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, IdentityFile), err)
	}
	return &id, nil
}

// Save writes the identity atomically (mode 0600).
func (id *Identity) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, IdentityFile), b, 0o600)
}

func (id *Identity) certificate() (tls.Certificate, error) {
	c, err := tls.X509KeyPair([]byte(id.CertPEM), []byte(id.KeyPEM))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("agent certificate: %w", err)
	}
	return c, nil
}

func (id *Identity) ca() (*x509.Certificate, error) {
	return pki.ParseCertPEM([]byte(id.CAPEM))
}
