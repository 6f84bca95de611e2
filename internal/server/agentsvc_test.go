package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/pki"
	"github.com/mamori/mamori/internal/store"
)

// sessionStore answers AgentSession from a map of serials; it counts the
// calls (a session set-up is one store query).
type sessionStore struct {
	sessions map[string]*store.AgentSession
	calls    int
}

func (s *sessionStore) AgentSession(_ context.Context, serial string) (*store.AgentSession, error) {
	s.calls++
	if serial == "ff" {
		return nil, errors.New("database unreachable")
	}
	if a, ok := s.sessions[serial]; ok {
		return a, nil
	}
	return nil, errcode.New(errcode.NotFound, "certificate not known")
}

func (s *sessionStore) MarkCloneSuspected(context.Context, string, string) error { return nil }

// withClientCert is ctx as a stream's context whose verified client
// certificate has serial and computer id cn (authenticate reads no more).
func withClientCert(serial int64, cn string) context.Context {
	leaf := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}}
	return peer.NewContext(context.Background(), &peer.Peer{
		Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{
			PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf}}}},
	})
}

func TestAuthenticate_OneStoreQueryAndEveryRefusal(t *testing.T) {
	revokedAt := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	hashes := map[string][]byte{"system": {1}}
	session := func(serial, computerID string, certRevoked, computerRevoked time.Time) *store.AgentSession {
		return &store.AgentSession{
			Certificate:   &store.AgentCertificate{Serial: serial, ComputerID: computerID, RevokedAt: certRevoked},
			Computer:      &store.Computer{ID: computerID, Name: computerID, RevokedAt: computerRevoked},
			SectionHashes: hashes,
		}
	}
	st := &sessionStore{sessions: map[string]*store.AgentSession{
		pki.SerialString(big.NewInt(1)): session("01", "c1", time.Time{}, time.Time{}),
		pki.SerialString(big.NewInt(2)): session("02", "c2", revokedAt, time.Time{}),
		pki.SerialString(big.NewInt(3)): session("03", "c3", time.Time{}, revokedAt),
		pki.SerialString(big.NewInt(4)): session("04", "c4", revokedAt, revokedAt),
	}}
	a := &agentService{store: st}

	s, err := a.authenticate(withClientCert(1, "c1"))
	if err != nil || s.Computer.ID != "c1" || len(s.SectionHashes) != 1 || st.calls != 1 {
		t.Fatalf("authenticate = %+v, %v after %d store calls; want c1 with its hashes after 1", s, err, st.calls)
	}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		code errcode.Code
		msg  string
	}{
		{"no peer", context.Background(), errcode.Unauthorized, "no peer information"},
		{"no client certificate", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{}}),
			errcode.Unauthorized, "a client certificate is required; enroll first"},
		{"unknown certificate", withClientCert(9, "c9"), errcode.Unauthorized, "certificate is not known to this server"},
		{"revoked certificate", withClientCert(2, "c2"), errcode.Forbidden, "certificate revoked at 2030-06-01T12:00:00Z"},
		{"certificate of another computer", withClientCert(1, "c2"), errcode.Forbidden, "certificate does not match its computer"},
		{"removed computer", withClientCert(3, "c3"), errcode.Forbidden, "computer has been removed from management"},
		{"removed computer and its certificates", withClientCert(4, "c4"), errcode.Forbidden, "certificate revoked at"},
		{"store failure", withClientCert(255, "c1"), errcode.Internal, "internal error"},
	} {
		s, err := a.authenticate(tc.ctx)
		if s != nil || errcode.Of(err) != tc.code || !strings.HasPrefix(errcode.Message(err), tc.msg) {
			t.Errorf("%s: authenticate = %+v, %v (code %s, message %q); want code %s, %q", tc.name, s, err, errcode.Of(err), errcode.Message(err), tc.code, tc.msg)
		}
	}
}
