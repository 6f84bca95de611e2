package agentcfg

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/policy"
)

// doc builds a server document: applied and forced values over defaults.
func doc(t *testing.T, applied, forced map[string]any) (string, []byte) {
	t.Helper()
	pols := map[string]*policy.Policy{}
	var as []policy.Assignment
	add := func(key string, v any, flag policy.Flag) {
		product, k, _ := strings.Cut(key, ".")
		id := product + string(flag)
		if pols[id] == nil {
			pols[id] = &policy.Policy{ID: id, Name: id, Product: product, Settings: map[string]policy.Value{}}
			as = append(as, policy.Assignment{ID: id, PolicyID: id, TargetType: policy.TargetStatic, TargetID: "all"})
		}
		pols[id].Settings[k] = policy.Value{Flag: flag, Value: v}
	}
	for k, v := range applied {
		add(k, v, policy.Apply)
	}
	for k, v := range forced {
		add(k, v, policy.Force)
	}
	d := policy.NewDocument(policy.Compute(as, pols))
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return d.Version, b
}

func open(t *testing.T, dir string) *Manager {
	t.Helper()
	m, err := Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestApply_ValidConfigurationIsAppliedSavedAndReported(t *testing.T) {
	dir := t.TempDir()
	m := open(t, dir)
	if m.Version() != "" {
		t.Fatal("fresh agent has a version")
	}
	var seen []*Settings
	m.OnChange(func(s *Settings) { seen = append(seen, s) })
	if s := seen[0]; s.CheckInInterval != time.Minute || s.LogLevel != slog.LevelInfo || s.ActionOnDetection != "quarantine" {
		t.Fatalf("defaults %+v", s)
	}
	v, raw := doc(t, map[string]any{"agent.check_in_interval": "15s", "protection.scan_exclusions": []string{"/proc/*"},
		"protection.scheduled_scans": []string{"0 3 * * 1 /home,/srv"}, "protection.max_file_size": "10M"},
		map[string]any{"agent.log_level": "debug"})
	if err := m.Apply(v, raw); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 {
		t.Fatalf("%d change notifications", len(seen))
	}
	s := seen[1]
	if s.Version != v || s.CheckInInterval != 15*time.Second || s.LogLevel != slog.LevelDebug || s.MaxFileSize != 10<<20 ||
		len(s.ScanExclusions) != 1 || len(s.ScheduledScans) != 1 || s.ScheduledScans[0].Cron != "0 3 * * 1" ||
		strings.Join(s.ScheduledScans[0].Paths, ",") != "/home,/srv" {
		t.Fatalf("applied %+v", s)
	}
	r, ok := m.TakeReport()
	if !ok || r.Version != v || r.Error != "" {
		t.Fatalf("report %+v %v", r, ok)
	}
	if _, ok := m.TakeReport(); ok {
		t.Fatal("report given twice")
	}
	// A restart starts from the saved configuration.
	m2 := open(t, dir)
	if m2.Version() != v || m2.Settings().CheckInInterval != 15*time.Second {
		t.Fatalf("after restart version %q interval %v", m2.Version(), m2.Settings().CheckInInterval)
	}
}

func TestApply_InvalidConfigurationIsRefusedAndThePreviousStays(t *testing.T) {
	dir := t.TempDir()
	m := open(t, dir)
	v, raw := doc(t, map[string]any{"agent.check_in_interval": "20s"}, nil)
	if err := m.Apply(v, raw); err != nil {
		t.Fatal(err)
	}
	m.TakeReport()
	for name, tc := range map[string]struct {
		version string
		raw     []byte
		want    string
	}{
		"garbage":          {"x", []byte("not json"), "not a JSON document"},
		"version mismatch": {"other", raw, "announced"},
		"tampered":         {v, []byte(strings.Replace(string(raw), `"20s"`, `"5s"`, 1)), "does not match"},
		"out of schema": {func() string { x, _ := doc(t, map[string]any{"agent.check_in_interval": "30s"}, nil); return x }(), func() []byte {
			var d policy.Document
			_, good := doc(t, map[string]any{"agent.check_in_interval": "30s"}, nil)
			_ = json.Unmarshal(good, &d)
			d.Settings["agent"]["check_in_interval"] = "1s"
			d.Version = d.Hash()
			b, _ := json.Marshal(d)
			return b
		}(), "agent.check_in_interval"},
	} {
		if tc.version == "" {
			continue
		}
		err := m.Apply(tc.version, tc.raw)
		if err == nil {
			t.Errorf("%s: applied", name)
			continue
		}
		r, ok := m.TakeReport()
		if !ok || r.Version != v || !strings.Contains(r.Error, "refused") || !strings.Contains(r.Error, tc.want) {
			t.Errorf("%s: report %+v", name, r)
		}
		if m.Version() != v || m.Settings().CheckInInterval != 20*time.Second {
			t.Errorf("%s: previous configuration lost: %q", name, m.Version())
		}
	}
	saved, _ := os.ReadFile(filepath.Join(dir, AppliedFile))
	if string(saved) != string(raw) {
		t.Fatal("a refused configuration replaced the saved one")
	}
}

func TestLocal_OverridesAppliedValuesButNotForcedOnes(t *testing.T) {
	dir := t.TempDir()
	m := open(t, dir)
	v, raw := doc(t, map[string]any{"agent.check_in_interval": "20s"}, map[string]any{"agent.log_level": "warn"})
	if err := m.Apply(v, raw); err != nil {
		t.Fatal(err)
	}
	val := func(s string) *string { return &s }
	err := SetLocal(dir, "agent.log_level", val("debug"))
	if errcode.Of(err) != errcode.Forbidden || !strings.Contains(err.Error(), "forced") {
		t.Fatalf("overriding a forced setting: %v", err)
	}
	if err := SetLocal(dir, "agent.check_in_interval", val("45s")); err != nil {
		t.Fatal(err)
	}
	if err := SetLocal(dir, "protection.scan_exclusions", val("/mnt/*, /media/*")); err != nil {
		t.Fatal(err)
	}
	for key, bad := range map[string]string{"agent.check_in_interval": "1s", "agent.nothing": "x", "protection.archive_max_depth": "deep"} {
		if err := SetLocal(dir, key, val(bad)); errcode.Of(err) != errcode.Invalid {
			t.Errorf("SetLocal(%s, %q): %v", key, bad, err)
		}
	}
	if err := m.ReloadLocal(); err != nil {
		t.Fatal(err)
	}
	s := m.Settings()
	if s.CheckInInterval != 45*time.Second || s.LogLevel != slog.LevelWarn || strings.Join(s.ScanExclusions, "|") != "/mnt/*|/media/*" {
		t.Fatalf("settings %+v", s)
	}
	sources := map[string]string{}
	for _, e := range m.Effective() {
		sources[e.Key] = e.Source
	}
	if sources["agent.check_in_interval"] != SourceLocal || sources["agent.log_level"] != SourceForced ||
		sources["agent.proxy"] != SourceDefault || sources["updates.interval"] != SourceDefault {
		t.Fatalf("sources %v", sources)
	}
	// A later policy forcing the interval beats the local value.
	v2, raw2 := doc(t, nil, map[string]any{"agent.check_in_interval": "30s", "agent.log_level": "warn"})
	if err := m.Apply(v2, raw2); err != nil {
		t.Fatal(err)
	}
	if got := m.Settings().CheckInInterval; got != 30*time.Second {
		t.Fatalf("forced interval %v", got)
	}
	// Clearing a local value.
	if err := SetLocal(dir, "protection.scan_exclusions", nil); err != nil {
		t.Fatal(err)
	}
	if err := m.ReloadLocal(); err != nil {
		t.Fatal(err)
	}
	if len(m.Settings().ScanExclusions) != 0 {
		t.Fatal("cleared override still in effect")
	}
}

func TestOpen_DamagedFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, AppliedFile), []byte(`{"version":"x","settings":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	m := open(t, dir)
	if m.Version() != "" {
		t.Fatal("damaged configuration used")
	}
	if _, err := os.Stat(filepath.Join(dir, AppliedFile+".bad")); err != nil {
		t.Fatal("damaged configuration not set aside")
	}
	if err := os.WriteFile(filepath.Join(dir, LocalFile), []byte(`{"agent.check_in_interval":"2s"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, nil); err == nil || !strings.Contains(err.Error(), LocalFile) {
		t.Fatalf("invalid local file: %v", err)
	}
	// A running agent keeps its overrides when the file turns bad.
	if err := os.WriteFile(filepath.Join(dir, LocalFile), []byte(`{"agent.check_in_interval":"40s"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	m = open(t, dir)
	future := time.Now().Add(time.Minute)
	if err := os.WriteFile(filepath.Join(dir, LocalFile), []byte(`{`), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.Chtimes(filepath.Join(dir, LocalFile), future, future)
	if err := m.ReloadLocal(); err == nil {
		t.Fatal("bad local file accepted")
	}
	if m.Settings().CheckInInterval != 40*time.Second {
		t.Fatal("overrides lost")
	}
}

// A list whose items hold commas (a scheduled scan of several paths) is
// set as a JSON array; a malformed array is refused, and the
// comma-separated form still splits.
func TestSetLocal_ListsAsJSONArrays(t *testing.T) {
	dir := t.TempDir()
	val := func(s string) *string { return &s }
	if err := SetLocal(dir, "protection.scheduled_scans", val(`["0 3 * * 1 /home,/srv", "30 12 * * * /opt"]`)); err != nil {
		t.Fatal(err)
	}
	got := open(t, dir).Settings().ScheduledScans
	if len(got) != 2 || got[0].Cron != "0 3 * * 1" || strings.Join(got[0].Paths, "|") != "/home|/srv" {
		t.Fatalf("scheduled scans %+v, want two, the first on /home and /srv", got)
	}
	for _, bad := range []string{`["0 3 * * 1 /home"`, `[1, 2]`, `["0 3 * * 1 relative"]`} {
		if err := SetLocal(dir, "protection.scheduled_scans", val(bad)); errcode.Of(err) != errcode.Invalid {
			t.Errorf("SetLocal(%q): %v, want invalid", bad, err)
		}
	}
	if err := SetLocal(dir, "protection.scan_exclusions", val("/mnt/*,/media/*")); err != nil {
		t.Fatal(err)
	}
	if ex := open(t, dir).Settings().ScanExclusions; strings.Join(ex, "|") != "/mnt/*|/media/*" {
		t.Fatalf("comma-separated exclusions %v", ex)
	}
}

// A value set before the agent's first start makes the state directory,
// private as the agent makes it.
func TestSetLocal_BeforeTheFirstStartMakesTheStateDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	proxy := "http://127.0.0.1:3128"
	if err := SetLocal(dir, "agent.proxy", &proxy); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory: %v, %v; want one of mode 0700", fi, err)
	}
	if got := open(t, dir).Settings().Proxy; got != proxy {
		t.Fatalf("proxy %q, want %q", got, proxy)
	}
}
