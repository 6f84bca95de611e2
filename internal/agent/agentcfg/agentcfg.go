// Package agentcfg is the agent's side of configuration management: it
// validates the configuration the server pushes (internal/policy's
// document), keeps the last good one on disk so a restart starts from it,
// layers the local overrides an operator sets on the computer under it
// (forced settings cannot be overridden), and reports what was applied or
// refused for the next check-in.
//
// Precedence for each setting: forced by policy > local override > applied
// by policy > the schema's default.
package agentcfg

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mamori/mamori/internal/atomicfile"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/policy"
)

// File names in the state directory.
const (
	AppliedFile = "config.json"       // the last good document from the server
	LocalFile   = "local-config.json" // {"product.key": value} set on the computer
)

// Sources of an effective value.
const (
	SourceForced  = "forced"
	SourceLocal   = "local"
	SourcePolicy  = "policy"
	SourceDefault = "default"
)

// Value is one effective setting on the agent.
type Value struct {
	Key    string `json:"key"` // product.key
	Value  any    `json:"value"`
	Source string `json:"source"`
}

// Report is what the next check-in tells the server.
type Report struct {
	Version string // the version in effect (after applying, or still after a refusal)
	Error   string // why the last configuration was refused ("" applied)
}

// Manager holds the agent's configuration.
type Manager struct {
	dir string
	log *slog.Logger

	mu       sync.Mutex
	doc      *policy.Document // nil: never configured by the server
	local    map[string]any
	localSum [32]byte // SHA-256 of the local file as last read
	report   *Report
	onChange []func(*Settings)
}

// Open loads the applied document and the local overrides from dir. A
// damaged applied file is set aside (the server sends the configuration
// again: the agent reports no version); a damaged local file is an error
// naming it, so an operator's typo is not silently ignored.
func Open(dir string, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.Default()
	}
	m := &Manager{dir: dir, log: log, local: map[string]any{}}
	raw, err := os.ReadFile(filepath.Join(dir, AppliedFile))
	switch {
	case err == nil:
		d, _, perr := policy.ParseDocument(raw)
		if perr != nil {
			log.Error("stored configuration is damaged; waiting for the server's", "file", AppliedFile, "err", perr)
			_ = os.Rename(filepath.Join(dir, AppliedFile), filepath.Join(dir, AppliedFile+".bad"))
		} else {
			m.doc = d
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	if err := m.loadLocal(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manager) loadLocal() error {
	path := filepath.Join(m.dir, LocalFile)
	raw, err := readLocalFile(path)
	if errors.Is(err, os.ErrNotExist) {
		m.local, m.localSum = map[string]any{}, [32]byte{}
		return nil
	}
	if err != nil {
		return err
	}
	// The content, not the modification time, tells a change: two writes
	// within the file system's timestamp granularity keep the same time.
	sum := sha256.Sum256(raw)
	if m.local != nil && sum == m.localSum {
		return nil
	}
	local, err := parseLocal(path, raw)
	if err != nil {
		return err
	}
	m.local, m.localSum = local, sum
	return nil
}

// ReadLocal reads and validates a local overrides file.
func ReadLocal(path string) (map[string]any, error) {
	raw, err := readLocalFile(path)
	if err != nil {
		return nil, err
	}
	return parseLocal(path, raw)
}

func readLocalFile(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(raw) > policy.MaxDocumentBytes {
		return nil, errcode.New(errcode.Invalid, "%s: larger than %d bytes", path, policy.MaxDocumentBytes)
	}
	return raw, nil
}

func parseLocal(path string, raw []byte) (map[string]any, error) {
	var in map[string]json.RawMessage
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, errcode.New(errcode.Invalid, "%s: not a JSON object of \"product.key\": value", path)
	}
	out := map[string]any{}
	for k, v := range in {
		n, err := normalize(k, v)
		if err != nil {
			return nil, errcode.New(errcode.Invalid, "%s: %s", path, errcode.Message(err))
		}
		out[k] = n
	}
	return out, nil
}

func lookup(key string) (*policy.Setting, error) {
	product, k, ok := strings.Cut(key, ".")
	s, found := policy.Lookup(product, k)
	if !ok || !found {
		return nil, errcode.New(errcode.Invalid, "unknown setting %q (see mamori-agent config show)", key)
	}
	return s, nil
}

func normalize(key string, raw json.RawMessage) (any, error) {
	s, err := lookup(key)
	if err != nil {
		return nil, err
	}
	var v any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, errcode.New(errcode.Invalid, "%s: not a JSON value", key)
	}
	return s.Normalize(v)
}

// Version is the applied configuration's version ("" none).
func (m *Manager) Version() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.doc == nil {
		return ""
	}
	return m.doc.Version
}

// OnChange registers f to receive the settings after every change
// (applied configuration, local override); it is called once now.
func (m *Manager) OnChange(f func(*Settings)) {
	m.mu.Lock()
	m.onChange = append(m.onChange, f)
	s := m.settingsLocked()
	m.mu.Unlock()
	f(s)
}

func (m *Manager) notify() {
	m.mu.Lock()
	s := m.settingsLocked()
	fs := slices.Clone(m.onChange)
	m.mu.Unlock()
	for _, f := range fs {
		f(s)
	}
}

// Apply validates a pushed configuration and applies it. An invalid one is
// refused with the reason (kept for the next check-in's report) and the
// previous configuration stays.
func (m *Manager) Apply(version string, raw []byte) error {
	d, unknown, err := policy.ParseDocument(raw)
	if err == nil && d.Version != version {
		err = errcode.New(errcode.Invalid, "configuration announced as %q carries version %q", version, d.Version)
	}
	if err == nil {
		// The settings must also build (cross-field checks).
		if _, berr := build(d, nil); berr != nil {
			err = berr
		}
	}
	if err != nil {
		m.mu.Lock()
		current := ""
		if m.doc != nil {
			current = m.doc.Version
		}
		m.report = &Report{Version: current, Error: fmt.Sprintf("configuration %s refused: %s", version, errcode.Message(err))}
		m.mu.Unlock()
		m.log.Error("refused the configuration from the server; keeping the previous one", "version", version, "err", err)
		return err
	}
	if len(unknown) > 0 {
		m.log.Warn("configuration has settings this agent does not know; ignoring them", "settings", unknown)
	}
	if err := atomicfile.Write(filepath.Join(m.dir, AppliedFile), raw, 0o600); err != nil {
		m.mu.Lock()
		m.report = &Report{Version: version, Error: "saving the configuration: " + err.Error()}
		m.mu.Unlock()
		return err
	}
	m.mu.Lock()
	m.doc = d
	m.report = &Report{Version: version}
	m.mu.Unlock()
	m.log.Info("configuration applied", "version", version, "forced", len(d.Forced))
	m.notify()
	return nil
}

// TakeReport returns what to report at the next check-in, once.
func (m *Manager) TakeReport() (Report, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.report == nil {
		return Report{}, false
	}
	r := *m.report
	m.report = nil
	return r, true
}

// Restore puts a report back after a check-in that was not acknowledged.
func (m *Manager) Restore(r Report) {
	m.mu.Lock()
	if m.report == nil {
		m.report = &r
	}
	m.mu.Unlock()
}

// ReloadLocal re-reads the local overrides file if it changed. A file that
// became invalid is refused and the previous overrides stay.
func (m *Manager) ReloadLocal() error {
	m.mu.Lock()
	before := m.localSum
	err := m.loadLocal()
	changed := m.localSum != before
	m.mu.Unlock()
	if err != nil {
		return err
	}
	if changed {
		m.log.Info("local configuration changed")
		m.notify()
	}
	return nil
}

// forced reports whether key is forced by the applied configuration.
func (m *Manager) forcedLocked(key string) bool {
	return m.doc != nil && slices.Contains(m.doc.Forced, key)
}

// SetLocal sets (value non-nil) or clears (nil) a local override in the
// state directory dir. A forced setting is refused with the reason.
func SetLocal(dir, key string, value *string) error {
	s, err := lookup(key)
	if err != nil {
		return err
	}
	m, err := Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	if m.forcedLocked(key) {
		return errcode.New(errcode.Forbidden, "%s is forced by the administrator's policy and cannot be changed on this computer", key)
	}
	local := m.local
	if value == nil {
		delete(local, key)
	} else {
		var v any = *value
		if s.Kind == policy.KindList {
			if v, err = listValue(*value); err != nil {
				return errcode.New(errcode.Invalid, "%s: %v", key, err)
			}
		} else if s.Kind == policy.KindInt || s.Kind == policy.KindBool {
			var x any
			if json.Unmarshal([]byte(*value), &x) == nil {
				v = x
			}
		}
		n, err := s.Normalize(v)
		if err != nil {
			return err
		}
		local[key] = n
	}
	b, _ := json.MarshalIndent(local, "", "  ")
	// Set before the agent's first start, the state directory is made as
	// the agent makes it.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, LocalFile), append(b, '\n'), 0o600)
}

// listValue reads a list given on the command line: a JSON array (for
// items that hold commas: a scheduled scan of several paths) or
// comma-separated items.
func listValue(s string) (any, error) {
	if strings.HasPrefix(strings.TrimSpace(s), "[") {
		var items []string
		if err := json.Unmarshal([]byte(s), &items); err != nil {
			return nil, fmt.Errorf("a list starting with [ must be a JSON array of strings: %v", err)
		}
		out := make([]any, len(items))
		for i, x := range items {
			out[i] = x
		}
		return out, nil
	}
	return splitList(s), nil
}

func splitList(s string) []any {
	out := []any{}
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// Effective lists every setting with its value and source.
func (m *Manager) Effective() []Value {
	m.mu.Lock()
	defer m.mu.Unlock()
	vals := m.valuesLocked()
	out := make([]Value, 0, len(vals))
	for _, v := range vals {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func (m *Manager) valuesLocked() map[string]Value {
	out := map[string]Value{}
	for _, s := range policy.Schema {
		key := s.Product + "." + s.Key
		v := Value{Key: key, Value: s.Default, Source: SourceDefault}
		if n, err := s.Normalize(s.Default); err == nil {
			v.Value = n
		}
		if m.doc != nil {
			if pv, ok := m.doc.Settings[s.Product][s.Key]; ok {
				v.Value, v.Source = pv, SourcePolicy
			}
		}
		if lv, ok := m.local[key]; ok && !m.forcedLocked(key) {
			v.Value, v.Source = lv, SourceLocal
		}
		if m.forcedLocked(key) {
			v.Source = SourceForced
		}
		out[key] = v
	}
	return out
}

// Settings returns the typed settings in effect.
func (m *Manager) Settings() *Settings {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.settingsLocked()
}

func (m *Manager) settingsLocked() *Settings {
	s, err := build(m.doc, m)
	if err != nil {
		// Cannot happen for values that passed Normalize; fall back to the
		// defaults rather than leave the agent unconfigured.
		m.log.Error("configuration does not build; using defaults", "err", err)
		s, _ = build(nil, nil)
	}
	if m.doc != nil {
		s.Version = m.doc.Version
	}
	return s
}

// Settings are the typed values the agent's parts use.
type Settings struct {
	Version string
	// Sources says where each value comes from ("product.key" -> forced,
	// local, policy or default): parts with their own command-line default
	// keep it while the source is default.
	Sources map[string]string

	CheckInInterval time.Duration
	Servers         []string
	Proxy           string
	LogLevel        slog.Level
	OutboxMaxEvents int

	ScanExclusions     []string
	MaxFileSize        int64
	ArchiveMaxDepth    int
	ArchiveMaxScanSize int64
	ArchiveMaxRatio    int
	ActionOnDetection  string
	ScheduledScans     []ScheduledScan

	UpdateSources  []string
	UpdateInterval time.Duration
	UpdateSplay    time.Duration
	UpdateProxy    string
	RollbackDepth  int
}

// ScheduledScan is "CRON PATH[,PATH...]".
type ScheduledScan struct {
	Cron  string
	Paths []string
}

// build turns a document (nil: defaults) layered with m's local overrides
// (m nil: none) into Settings.
func build(d *policy.Document, m *Manager) (*Settings, error) {
	var vals map[string]Value
	if m != nil {
		vals = m.valuesLocked()
	} else {
		tmp := &Manager{doc: d, local: map[string]any{}}
		vals = tmp.valuesLocked()
	}
	var errs []error
	str := func(k string) string { s, _ := vals[k].Value.(string); return s }
	list := func(k string) []string { l, _ := vals[k].Value.([]string); return slices.Clone(l) }
	dur := func(k string) time.Duration {
		d, err := time.ParseDuration(str(k))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", k, err))
		}
		return d
	}
	size := func(k string) int64 {
		n, err := policy.ParseSize(str(k))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", k, err))
		}
		return n
	}
	num := func(k string) int {
		switch n := vals[k].Value.(type) {
		case int64:
			return int(n)
		case int:
			return n
		}
		errs = append(errs, fmt.Errorf("%s: not a whole number", k))
		return 0
	}
	s := &Settings{
		CheckInInterval: dur("agent.check_in_interval"), Servers: list("agent.servers"), Proxy: str("agent.proxy"),
		OutboxMaxEvents: num("agent.outbox_max_events"),
		ScanExclusions:  list("protection.scan_exclusions"), MaxFileSize: size("protection.max_file_size"),
		ArchiveMaxDepth: num("protection.archive_max_depth"), ArchiveMaxScanSize: size("protection.archive_max_scan_size"),
		ArchiveMaxRatio: num("protection.archive_max_ratio"), ActionOnDetection: str("protection.action_on_detection"),
		UpdateSources: list("updates.sources"), UpdateInterval: dur("updates.interval"), UpdateSplay: dur("updates.random_splay"),
		UpdateProxy: str("updates.proxy"), RollbackDepth: num("updates.rollback_depth"),
	}
	s.Sources = map[string]string{}
	for k, v := range vals {
		s.Sources[k] = v.Source
	}
	if err := s.LogLevel.UnmarshalText([]byte(str("agent.log_level"))); err != nil {
		errs = append(errs, fmt.Errorf("agent.log_level: %v", err))
	}
	for _, line := range list("protection.scheduled_scans") {
		fs := strings.Fields(line)
		if len(fs) != 6 {
			errs = append(errs, fmt.Errorf("protection.scheduled_scans: %q", line))
			continue
		}
		s.ScheduledScans = append(s.ScheduledScans, ScheduledScan{Cron: strings.Join(fs[:5], " "), Paths: strings.Split(fs[5], ",")})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, errcode.New(errcode.Invalid, "%v", err)
	}
	return s, nil
}
