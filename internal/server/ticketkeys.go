package server

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/mamori/mamori/internal/atomicfile"
)

// TicketKeysFile holds the TLS session ticket keys of the agent listener.
// They are kept in the data directory so that tickets issued before a
// restart still resume afterwards: a reconnect storm after a restart then
// costs abbreviated handshakes (no certificate signature, no client
// certificate verification) instead of full ones.
const TicketKeysFile = "tls-ticket-keys.json"

// Ticket key schedule. A new key encrypts tickets every ticketKeyRotate; a
// key is kept for decryption until every ticket it encrypted has expired
// (crypto/tls accepts tickets for at most 7 days).
const (
	ticketKeyRotate   = 24 * time.Hour
	ticketLifetime    = 7 * 24 * time.Hour
	ticketKeyLifetime = ticketKeyRotate + ticketLifetime
)

type ticketKey struct {
	Created time.Time `json:"created"`
	Key     []byte    `json:"key"` // 32 bytes
}

type ticketKeyFile struct {
	Keys []ticketKey `json:"keys"` // newest first
}

// rotateTicketKeys loads the key file in dir (a missing or unreadable file
// starts afresh), adds a key when the newest is older than ticketKeyRotate,
// drops keys past ticketKeyLifetime, writes the file back when it changed
// and returns the keys for tls.Config.SetSessionTicketKeys, newest first.
func rotateTicketKeys(dir string, now time.Time) ([][32]byte, error) {
	path := filepath.Join(dir, TicketKeysFile)
	var f ticketKeyFile
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if json.Unmarshal(b, &f) != nil {
			f = ticketKeyFile{} // unreadable: start afresh (only resumption is lost)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	changed := false
	f.Keys = slices.DeleteFunc(f.Keys, func(k ticketKey) bool {
		bad := len(k.Key) != 32 || now.Sub(k.Created) > ticketKeyLifetime || k.Created.After(now.Add(time.Hour))
		changed = changed || bad
		return bad
	})
	slices.SortStableFunc(f.Keys, func(a, b ticketKey) int { return b.Created.Compare(a.Created) })
	if len(f.Keys) == 0 || now.Sub(f.Keys[0].Created) >= ticketKeyRotate {
		k := ticketKey{Created: now.UTC().Truncate(time.Second), Key: make([]byte, 32)}
		if _, err := rand.Read(k.Key); err != nil {
			return nil, err
		}
		f.Keys = append([]ticketKey{k}, f.Keys...)
		changed = true
	}
	if changed {
		out, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			return nil, err
		}
		if err := atomicfile.Write(path, append(out, '\n'), 0o600); err != nil {
			return nil, fmt.Errorf("writing %s: %w", path, err)
		}
	}
	keys := make([][32]byte, len(f.Keys))
	for i, k := range f.Keys {
		copy(keys[i][:], k.Key)
	}
	return keys, nil
}
