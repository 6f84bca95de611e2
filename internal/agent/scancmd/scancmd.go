// Package scancmd is the agent side of `mamori-agent scan` and
// `mamori-agent quarantine`: it adds the agent's state directory to the
// protection module's commands (internal/engine/enginecli) — scan settings
// from STATE/scan.json, the agent-owned quarantine in STATE/quarantine, the
// agent's current engine — and hands every detection to the running agent
// through the spool, so it reaches the server through the durable outbox.
package scancmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/agent"
	"github.com/mamori/mamori/internal/agent/agentcfg"
	"github.com/mamori/mamori/internal/agent/spool"
	"github.com/mamori/mamori/internal/engine/enginecli"
	"github.com/mamori/mamori/internal/engine/matcher"
	"github.com/mamori/mamori/internal/engine/scanner"
	"github.com/mamori/mamori/internal/updates/client"
)

// SettingsFile holds local scan settings in the state directory. The
// protection settings of the agent's configuration come first (policies,
// `mamori-agent config set`), then this file except where a policy forces
// the value, then the command line.
const SettingsFile = "scan.json"

// LoadEngine loads the agent's current engine, installed by the engine
// updater in agent.EngineStateDir(state). It returns nil and no error when
// the built-in engine is current (no update installed yet).
func LoadEngine(state string) (*matcher.Engine, error) {
	dir := agent.EngineStateDir(state)
	if _, err := os.Stat(filepath.Join(dir, "engine.json")); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	// Twice: an update may remove the file between reading the pointer
	// and opening it (it keeps only a few versions).
	var err error
	for range 2 {
		var st client.Status
		if st, err = client.ReadStatus(dir, time.Now()); err != nil || st.Builtin {
			return nil, err
		}
		var e *matcher.Engine
		if e, err = matcher.LoadFile(st.EnginePath); err == nil {
			return e, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	return nil, err
}

// Settings are the local scan settings. Every field is optional; command
// line flags win.
type Settings struct {
	// Exclude lists globs matched against full paths and base names.
	Exclude []string `json:"exclude"`
	// MaxFileSize skips larger files ("100M", "2G"; "" no limit).
	MaxFileSize string `json:"max_filesize"`
	// Action on detection: "report" (default) or "quarantine".
	Action string `json:"action"`
	// Archive limits.
	ArchiveMaxDepth  int    `json:"archive_max_depth"`
	ArchiveMaxSize   string `json:"archive_max_scansize"`
	ArchiveMaxRatio  int    `json:"archive_max_ratio"`
	Workers          int    `json:"workers"`
	FollowSymlinks   bool   `json:"follow_symlinks"`
	ReportAllMatches bool   `json:"all_match"`
}

// LoadSettings reads STATE/scan.json; a missing file is no settings.
// Unknown fields and bad values are errors naming the file.
func LoadSettings(stateDir string) (*Settings, error) {
	path := filepath.Join(stateDir, SettingsFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Settings{}, nil
	}
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Settings
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	switch s.Action {
	case "", "report", "quarantine":
	default:
		return nil, fmt.Errorf("%s: action must be \"report\" or \"quarantine\", not %q", path, s.Action)
	}
	if s.ArchiveMaxDepth < 0 || s.ArchiveMaxRatio < 0 || s.Workers < 0 {
		return nil, fmt.Errorf("%s: numbers must not be negative", path)
	}
	return &s, nil
}

// policyArgs turns the protection settings of the agent's configuration
// (policy and `mamori-agent config set`) into flags; values at their
// default add nothing, so scan.json and the command line decide them.
func policyArgs(c *agentcfg.Settings) []string {
	set := func(k string) bool { return c.Sources["protection."+k] != agentcfg.SourceDefault }
	var a []string
	if set("scan_exclusions") {
		for _, e := range c.ScanExclusions {
			a = append(a, "--exclude", e)
		}
	}
	if set("max_file_size") && c.MaxFileSize > 0 {
		a = append(a, "--max-filesize", strconv.FormatInt(c.MaxFileSize, 10))
	}
	if set("action_on_detection") && c.ActionOnDetection == "quarantine" {
		a = append(a, "--quarantine")
	}
	if set("archive_max_depth") {
		a = append(a, "--max-depth", strconv.Itoa(c.ArchiveMaxDepth))
	}
	if set("archive_max_scan_size") {
		a = append(a, "--max-scansize", strconv.FormatInt(c.ArchiveMaxScanSize, 10))
	}
	if set("archive_max_ratio") {
		a = append(a, "--max-ratio", strconv.Itoa(c.ArchiveMaxRatio))
	}
	return a
}

// args turns scan.json into flags placed after the configuration's and
// before the user's own; settings a policy forces are left out (sources:
// the configuration's sources by "product.key").
func (s *Settings) args(sources map[string]string) []string {
	free := func(k string) bool { return sources["protection."+k] != agentcfg.SourceForced }
	var a []string
	if free("scan_exclusions") {
		for _, e := range s.Exclude {
			a = append(a, "--exclude", e)
		}
	}
	if s.MaxFileSize != "" && free("max_file_size") {
		a = append(a, "--max-filesize", s.MaxFileSize)
	}
	if s.Action == "quarantine" && free("action_on_detection") {
		a = append(a, "--quarantine")
	}
	if s.ArchiveMaxDepth > 0 && free("archive_max_depth") {
		a = append(a, "--max-depth", strconv.Itoa(s.ArchiveMaxDepth))
	}
	if s.ArchiveMaxSize != "" && free("archive_max_scan_size") {
		a = append(a, "--max-scansize", s.ArchiveMaxSize)
	}
	if s.ArchiveMaxRatio > 0 && free("archive_max_ratio") {
		a = append(a, "--max-ratio", strconv.Itoa(s.ArchiveMaxRatio))
	}
	if s.Workers > 0 {
		a = append(a, "--workers", strconv.Itoa(s.Workers))
	}
	if s.FollowSymlinks {
		a = append(a, "--follow-symlinks")
	}
	if s.ReportAllMatches {
		a = append(a, "--all-match")
	}
	return a
}

// splitState removes --state DIR (or --state=DIR) from args.
func splitState(args []string, def string) (string, []string, error) {
	state := def
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			rest = append(rest, args[i:]...)
			return state, rest, nil
		case a == "--state" || a == "-state":
			if i+1 >= len(args) {
				return "", nil, errors.New("--state needs a directory")
			}
			state = args[i+1]
			i++
		case strings.HasPrefix(a, "--state=") || strings.HasPrefix(a, "-state="):
			state = a[strings.Index(a, "=")+1:]
		default:
			rest = append(rest, a)
		}
	}
	return state, rest, nil
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == "--"+name || a == "-"+name || strings.HasPrefix(a, "--"+name+"=") || strings.HasPrefix(a, "-"+name+"=") {
			return true
		}
	}
	return false
}

// DetectionEvent is the data of a detection.found event.
type DetectionEvent struct {
	Path          string `json:"path"`
	File          string `json:"file"`
	Member        string `json:"member,omitempty"`
	Signature     string `json:"signature"`
	Kind          string `json:"kind"`
	MatchKind     string `json:"match_kind"`
	Size          int64  `json:"size"`
	MD5           string `json:"md5,omitempty"`
	SHA1          string `json:"sha1,omitempty"`
	SHA256        string `json:"sha256,omitempty"`
	EngineVersion uint64 `json:"engine_version"`
	Action        string `json:"action"` // reported, quarantined
	QuarantineID  string `json:"quarantine_id,omitempty"`
	Source        string `json:"source"` // on-demand scan from the command line
}

// Scan runs `mamori-agent scan` with the agent's state directory.
func Scan(ctx context.Context, args []string, defaultState string, stdout, stderr io.Writer) int {
	state, rest, err := splitState(args, defaultState)
	if err != nil {
		fmt.Fprintln(stderr, "mamori-agent scan:", err)
		return enginecli.ExitError
	}
	settings, err := LoadSettings(state)
	if err != nil {
		fmt.Fprintln(stderr, "mamori-agent scan:", err)
		return enginecli.ExitError
	}
	cfg, err := agentcfg.Open(state, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(stderr, "mamori-agent scan:", err)
		return enginecli.ExitError
	}
	rest = append(append(policyArgs(cfg.Settings()), settings.args(cfg.Settings().Sources)...), rest...)
	if hasFlag(rest, "quarantine") && !hasFlag(rest, "quarantine-dir") {
		rest = append([]string{"--quarantine-dir", filepath.Join(state, "quarantine")}, rest...)
	}
	hooks := enginecli.ScanHooks{}
	if e, err := LoadEngine(state); e != nil {
		hooks.Engine = e
	} else if err != nil {
		fmt.Fprintf(stderr, "mamori-agent scan: the agent's engine is unusable (%v); using the built-in engine\n", err)
	}
	_, idErr := agent.LoadIdentity(state)
	enrolled := idErr == nil
	if !enrolled {
		fmt.Fprintf(stderr, "mamori-agent scan: note: no enrolled agent in %s; detections are not reported to a server (give the agent's --state)\n", state)
	}
	var spoolErr error
	if enrolled {
		hooks.OnDetection = func(d scanner.Detection, qid string) {
			ev := DetectionEvent{Path: d.Path, File: d.File, Member: d.Member, Signature: d.Signature, Kind: d.Kind,
				MatchKind: d.MatchKind, Size: d.Size, MD5: d.MD5, SHA1: d.SHA1, SHA256: d.SHA256,
				EngineVersion: d.EngineVersion, Action: "reported", QuarantineID: qid, Source: "command line"}
			if qid != "" {
				ev.Action = "quarantined"
			}
			if _, err := spool.Write(state, "detection.found", ev); err != nil && spoolErr == nil {
				spoolErr = err
			}
		}
	}
	code := enginecli.Scan(ctx, rest, stdout, stderr, hooks)
	if spoolErr != nil {
		fmt.Fprintf(stderr, "mamori-agent scan: detections could not be queued for the server: %v\n", spoolErr)
		return enginecli.ExitError
	}
	return code
}

// Quarantine runs `mamori-agent quarantine` on the agent's quarantine.
func Quarantine(args []string, defaultState string, stdout, stderr io.Writer) int {
	state, rest, err := splitState(args, defaultState)
	if err != nil {
		fmt.Fprintln(stderr, "mamori-agent quarantine:", err)
		return 2
	}
	if !hasFlag(rest, "dir") {
		rest = append(rest, "--dir", filepath.Join(state, "quarantine"))
	}
	var hooks enginecli.QuarantineHooks
	if _, err := agent.LoadIdentity(state); err == nil {
		// The server's detection says "quarantined" until told otherwise.
		report := func(typ, id, dest string) {
			if _, err := spool.Write(state, typ, QuarantineEvent{QuarantineID: id, RestoredTo: dest}); err != nil {
				fmt.Fprintf(stderr, "mamori-agent quarantine: the server could not be told (%v)\n", err)
			}
		}
		hooks.OnRestore = func(id, dest string) { report(EventQuarantineRestored, id, dest) }
		hooks.OnDelete = func(id string) { report(EventQuarantineDeleted, id, "") }
	}
	return enginecli.Quarantine(rest, stdout, stderr, hooks)
}

// Events of quarantine items released on the computer.
const (
	EventQuarantineRestored = "quarantine.restored"
	EventQuarantineDeleted  = "quarantine.deleted"
)

// QuarantineEvent names the item an administrator restored or deleted on
// the computer.
type QuarantineEvent struct {
	QuarantineID string `json:"quarantine_id"`
	RestoredTo   string `json:"restored_to,omitempty"`
}
