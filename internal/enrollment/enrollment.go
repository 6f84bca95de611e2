// Package enrollment issues enrollment tokens and turns a valid token plus a
// certificate signing request into an enrolled computer with a certificate.
// The API, the CLI (`mamori token create`, which writes to the store directly
// while the server runs) and the agent endpoint all go through Service.
package enrollment

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/instance"
	"github.com/mamori/mamori/internal/pki"
	"github.com/mamori/mamori/internal/store"
)

// Store is what enrollment needs from the store.
type Store interface {
	Groups(ctx context.Context) (*store.GroupTree, error)
	CreateEnrollmentToken(ctx context.Context, t *store.EnrollmentToken) error
	CheckEnrollmentToken(ctx context.Context, secretHash string, now time.Time) (*store.EnrollmentToken, error)
	EnrollComputer(ctx context.Context, secretHash string, now time.Time, c *store.Computer, cert *store.AgentCertificate) error
}

// AuditLog receives the audit entries of enrollments.
type AuditLog interface {
	AppendAudit(ctx context.Context, e *store.AuditEntry) error
}

// Service issues tokens and enrolls computers.
type Service struct {
	Store Store
	// Audit, when set, records every enrollment attempt (success and
	// refusal) in the audit log: enrollments add computers.
	Audit AuditLog
	// CA signs agent certificates; nil is allowed for token creation only.
	CA  *pki.CA
	Now func() time.Time // default time.Now
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Token limits and defaults.
const (
	DefaultTTL   = 24 * time.Hour
	MinTTL       = time.Minute
	MaxTTL       = 365 * 24 * time.Hour
	MaxUses      = 1_000_000
	secretPrefix = "mmr_"
)

// TokenParams describe a new enrollment token.
type TokenParams struct {
	GroupPath string // static group for new computers; "" = Lost & Found
	// AccessGroupID is the group the token itself lives in; "" = All.
	AccessGroupID string
	TTL           time.Duration // default 24h, 1m..365d
	Uses          int           // 0 = unlimited
	Description   string
	CreatedBy     string
}

// NewToken is a created token with its secret, shown exactly once.
type NewToken struct {
	Token     *store.EnrollmentToken
	Secret    string
	GroupPath string
}

// CreateToken creates an enrollment token. Returns invalid for bad
// parameters and not_found for an unknown group.
func (s *Service) CreateToken(ctx context.Context, p TokenParams) (*NewToken, error) {
	if p.TTL == 0 {
		p.TTL = DefaultTTL
	}
	if p.TTL < MinTTL || p.TTL > MaxTTL {
		return nil, errcode.New(errcode.Invalid, "ttl must be between %s and %s", MinTTL, MaxTTL)
	}
	if p.Uses < 0 || p.Uses > MaxUses {
		return nil, errcode.New(errcode.Invalid, "uses must be between 0 (unlimited) and %d", MaxUses)
	}
	if len(p.Description) > 256 || !printable(p.Description) {
		return nil, errcode.New(errcode.Invalid, "description must be printable and at most 256 bytes")
	}
	groups, err := s.Store.Groups(ctx)
	if err != nil {
		return nil, err
	}
	groupID := store.GroupLostFound
	if p.GroupPath != "" {
		g, err := groups.Resolve(p.GroupPath)
		if err != nil {
			return nil, err
		}
		groupID = g.ID
	}
	g, _ := groups.Get(groupID)
	secret := NewSecret()
	now := s.now().UTC().Truncate(time.Millisecond)
	t := &store.EnrollmentToken{
		ID:            uuid.NewString(),
		SecretHash:    HashSecret(secret),
		GroupID:       groupID,
		AccessGroupID: p.AccessGroupID,
		Description:   p.Description,
		ExpiresAt:     now.Add(p.TTL),
		UsesAllowed:   p.Uses,
		CreatedBy:     p.CreatedBy,
		CreatedAt:     now,
	}
	if err := s.Store.CreateEnrollmentToken(ctx, t); err != nil {
		return nil, err
	}
	return &NewToken{Token: t, Secret: secret, GroupPath: g.Path}, nil
}

// NewSecret returns a fresh token secret ("mmr_" + 43 base64url characters).
func NewSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return secretPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// HashSecret is how a secret is kept in the store.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Request is an agent's enrollment request.
type Request struct {
	Remote              string // the agent's address, for the audit log
	Token               string
	CSR                 []byte
	Hostname            string
	Instance            string
	HardwareFingerprint string
	AgentVersion        string
	Platform            string
}

// Result is a successful enrollment.
type Result struct {
	Computer    *store.Computer
	GroupPath   string
	Certificate []byte // DER
	CA          []byte // DER
}

// Enroll validates req, consumes one use of its token and returns the new
// computer and its certificate. Returns unauthorized for an unknown, expired,
// revoked or used-up token and invalid for a malformed request.
func (s *Service) Enroll(ctx context.Context, req Request) (res *Result, err error) {
	defer func() { s.audit(ctx, req, res, err) }()
	if err := req.validate(); err != nil {
		return nil, err
	}
	if s.CA == nil {
		return nil, errcode.New(errcode.Unavailable, "enrollment is not available")
	}
	hash := HashSecret(req.Token)
	if _, err := s.Store.CheckEnrollmentToken(ctx, hash, s.now()); err != nil {
		return nil, err // before any signing work
	}
	id := uuid.NewString()
	cert, err := s.CA.SignAgentCSR(req.CSR, id)
	if err != nil {
		return nil, err
	}
	name := req.Hostname
	if req.Instance != "" {
		name = req.Instance
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	c := &store.Computer{
		ID:                  id,
		Name:                name,
		Hostname:            req.Hostname,
		Instance:            req.Instance,
		Status:              store.StatusOffline,
		Platform:            req.Platform,
		AgentVersion:        req.AgentVersion,
		HardwareFingerprint: req.HardwareFingerprint,
	}
	rec := &store.AgentCertificate{Serial: cert.Serial, ComputerID: id, IssuedAt: now, NotAfter: cert.NotAfter}
	if err := s.Store.EnrollComputer(ctx, hash, now, c, rec); err != nil {
		return nil, err
	}
	groups, err := s.Store.Groups(ctx)
	if err != nil {
		return nil, err
	}
	path := ""
	if g, ok := groups.Get(c.GroupID); ok {
		path = g.Path
	}
	return &Result{Computer: c, GroupPath: path, Certificate: cert.DER, CA: s.CA.Cert.Raw}, nil
}

func (r *Request) validate() error {
	switch {
	case r.Token == "":
		return errcode.New(errcode.Unauthorized, "enrollment token missing")
	case len(r.Token) > 128:
		return errcode.New(errcode.Unauthorized, "unknown enrollment token")
	case r.Hostname == "" || len(r.Hostname) > 253 || !printable(r.Hostname):
		return errcode.New(errcode.Invalid, "hostname must be 1-253 printable characters")
	case !instance.Valid(r.Instance):
		return errcode.New(errcode.Invalid, "instance must be at most 64 characters of letters, digits, '.', '_' and '-'")
	case len(r.HardwareFingerprint) < 16 || len(r.HardwareFingerprint) > 128 || !isHex(r.HardwareFingerprint):
		return errcode.New(errcode.Invalid, "hardware fingerprint must be 16-128 hex digits")
	case len(r.AgentVersion) > 64 || !printable(r.AgentVersion):
		return errcode.New(errcode.Invalid, "agent version must be at most 64 printable characters")
	case len(r.Platform) > 16 || !printable(r.Platform):
		return errcode.New(errcode.Invalid, "platform must be at most 16 printable characters")
	}
	return nil
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

func (s *Service) audit(ctx context.Context, req Request, res *Result, err error) {
	if s.Audit == nil {
		return
	}
	name := req.Hostname
	if req.Instance != "" {
		name = req.Instance
	}
	e := &store.AuditEntry{At: s.now().UTC(), Username: "(agent)", Via: "agent", RemoteAddr: req.Remote,
		Domain: "computers", Action: "enroll", ObjectName: name, Result: store.AuditSuccess}
	if err != nil {
		e.Result, e.Detail = store.AuditFailure, errcode.Message(err)
	} else {
		e.ObjectID = res.Computer.ID
		e.Diff = `{"group":[null,` + strconv.Quote(res.GroupPath) + `],"clone_suspected":[null,` + strconv.FormatBool(res.Computer.CloneSuspected) + `]}`
	}
	_ = s.Audit.AppendAudit(context.WithoutCancel(ctx), e) // best effort: an enrollment is not refused for the audit log
}
