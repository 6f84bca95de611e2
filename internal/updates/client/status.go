package client

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/mamori/mamori/internal/atomicfile"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/updates/trust"
)

// Status is what the agent reports about its engine updates (it goes into
// the inventory so the server can flag "engine outdated").
type Status struct {
	EngineVersion       uint64    `json:"engine_version"`
	EnginePath          string    `json:"engine_path,omitempty"`     // empty: the built-in engine
	EnginePublished     time.Time `json:"engine_published,omitzero"` // when the repository published it (zero: unknown)
	Builtin             bool      `json:"builtin"`
	Installed           []uint64  `json:"installed"` // kept for rollback, newest first
	State               string    `json:"state"`     // idle, updating, held, failing
	LastAttempt         time.Time `json:"last_attempt,omitzero"`
	LastSuccess         time.Time `json:"last_success,omitzero"`
	LastError           string    `json:"last_error,omitempty"`
	LastErrorCode       string    `json:"last_error_code,omitempty"`
	LastErrorKind       string    `json:"last_error_kind,omitempty"` // verification failures: expired, version, signature, hash, format
	ConsecutiveFailures int       `json:"consecutive_failures"`
	NextAttempt         time.Time `json:"next_attempt,omitzero"`
	HeldUntil           time.Time `json:"held_until,omitzero"`
	RolledBackFrom      uint64    `json:"rolled_back_from,omitempty"`
	LastResult          *Result   `json:"last_result,omitempty"`
}

// attempts is status.json: the fields the store does not know.
type attempts struct {
	LastAttempt         time.Time `json:"last_attempt,omitzero"`
	LastSuccess         time.Time `json:"last_success,omitzero"`
	LastError           string    `json:"last_error,omitempty"`
	LastErrorCode       string    `json:"last_error_code,omitempty"`
	LastErrorKind       string    `json:"last_error_kind,omitempty"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	NextAttempt         time.Time `json:"next_attempt,omitzero"`
	LastResult          *Result   `json:"last_result,omitempty"`
}

func statusPath(dir string) string { return filepath.Join(dir, "status.json") }

func readAttempts(dir string) attempts {
	var a attempts
	if b, err := os.ReadFile(statusPath(dir)); err == nil {
		json.Unmarshal(b, &a)
	}
	return a
}

func writeAttempts(dir string, a attempts) error {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(statusPath(dir), append(b, '\n'), 0o644)
}

func (d *Direct) recordAttempt(start time.Time, res Result, err error) {
	a := readAttempts(d.cfg.StateDir)
	a.LastAttempt = start.UTC()
	r := res
	a.LastResult = &r
	if err == nil {
		a.LastSuccess = start.UTC()
		a.LastError, a.LastErrorCode, a.LastErrorKind = "", "", ""
		a.ConsecutiveFailures = 0
	} else {
		a.LastError = err.Error()
		a.LastErrorCode = string(errcode.Of(err))
		a.LastErrorKind = string(trust.KindOf(err))
		a.ConsecutiveFailures++
	}
	if werr := writeAttempts(d.cfg.StateDir, a); werr != nil {
		d.log.Warn("writing engine update status", "err", werr)
	}
}

// SetNextAttempt records when the next automatic attempt is due.
func SetNextAttempt(stateDir string, t time.Time) error {
	a := readAttempts(stateDir)
	a.NextAttempt = t.UTC()
	return writeAttempts(stateDir, a)
}

// ReadStatus reads the engine update status of a state directory (without
// taking its lock: it is a snapshot).
func ReadStatus(stateDir string, now time.Time) (Status, error) {
	if _, err := os.Stat(stateDir); errors.Is(err, os.ErrNotExist) {
		return Status{}, errcode.New(errcode.NotFound, "no engine state in %s", stateDir)
	}
	st, err := OpenStore(stateDir)
	if err != nil {
		return Status{}, err
	}
	a := readAttempts(stateDir)
	es := st.State()
	s := Status{
		LastAttempt: a.LastAttempt, LastSuccess: a.LastSuccess, LastError: a.LastError, LastErrorCode: a.LastErrorCode,
		LastErrorKind: a.LastErrorKind, ConsecutiveFailures: a.ConsecutiveFailures, NextAttempt: a.NextAttempt,
		LastResult: a.LastResult, HeldUntil: es.HoldUntil, RolledBackFrom: es.RolledBackFrom, State: "idle",
	}
	s.EngineVersion, s.EnginePath = st.Current()
	s.Builtin = s.EnginePath == ""
	for _, in := range es.Installed {
		s.Installed = append(s.Installed, in.Version)
		if in.Version == s.EngineVersion {
			s.EnginePublished = in.PublishedAt
		}
	}
	switch {
	case st.Held(now):
		s.State = "held"
	case a.ConsecutiveFailures > 0:
		s.State = "failing"
	}
	return s, nil
}
