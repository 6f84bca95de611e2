// Package spool hands events from short-lived agent commands (such as
// `mamori-agent scan`) to the running agent, which owns the outbox: each
// event is one JSON file written atomically into STATE/spool; the agent
// moves them into its outbox (keeping their ids, so a file imported twice is
// still stored once by the server) and then deletes them.
package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/agent/outbox"
	"github.com/mamori/mamori/internal/atomicfile"
)

// Dir is the spool directory inside a state directory.
func Dir(stateDir string) string { return filepath.Join(stateDir, "spool") }

// MaxFile bounds one spooled event file.
const MaxFile = 64 << 10

// Write spools an event of type typ with data (marshalled to JSON).
func Write(stateDir, typ string, data any) (string, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return "", err
	}
	e := outbox.Event{ID: uuid.NewString(), Type: typ, Time: time.Now().UTC(), Data: raw}
	b, err := json.Marshal(e)
	if err != nil {
		return "", err
	}
	if len(b) > MaxFile {
		return "", fmt.Errorf("event larger than %d bytes", MaxFile)
	}
	dir := Dir(stateDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return e.ID, atomicfile.Write(filepath.Join(dir, e.ID+".json"), b, 0o600)
}

// Import moves every spooled event into ob and returns how many it moved.
// Files that cannot be read as events are renamed *.bad and reported, so
// one corrupt file never blocks the others.
func Import(stateDir string, ob *outbox.Outbox) (int, error) {
	dir := Dir(stateDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, ent := range entries {
		name := ent.Name()
		if !ent.Type().IsRegular() || !strings.HasSuffix(name, ".json") {
			continue
		}
		path := filepath.Join(dir, name)
		e, err := read(path)
		if err != nil {
			os.Rename(path, path+".bad")
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		if err := ob.Put(e); err != nil {
			return n, err // the outbox is the problem; keep the files
		}
		if err := os.Remove(path); err != nil {
			return n, err
		}
		n++
	}
	return n, errors.Join(errs...)
}

func read(path string) (outbox.Event, error) {
	var e outbox.Event
	b, err := os.ReadFile(path)
	if err != nil {
		return e, err
	}
	if len(b) > MaxFile {
		return e, errors.New("file too large")
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, errors.New("not an event")
	}
	if e.ID == "" || e.Type == "" || len(e.ID) > 64 || len(e.Type) > 64 || e.Time.IsZero() {
		return e, errors.New("event lacks an id, type or time")
	}
	return e, nil
}
