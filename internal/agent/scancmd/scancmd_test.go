package scancmd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mamori/mamori/internal/agent/agentcfg"
	"github.com/mamori/mamori/internal/agent/spool"
)

func TestLoadSettings(t *testing.T) {
	dir := t.TempDir()
	if s, err := LoadSettings(dir); err != nil || len(s.args(nil)) != 0 {
		t.Fatalf("missing file: %+v %v", s, err)
	}
	write := func(body string) { os.WriteFile(filepath.Join(dir, SettingsFile), []byte(body), 0o600) }
	write(`{"exclude":["*.iso","/proc/*"],"max_filesize":"100M","action":"quarantine","archive_max_depth":3,"workers":1}`)
	s, err := LoadSettings(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--exclude", "*.iso", "--exclude", "/proc/*", "--max-filesize", "100M", "--quarantine", "--max-depth", "3", "--workers", "1"}
	if got := s.args(nil); !slices.Equal(got, want) {
		t.Fatalf("args %q, want %q", got, want)
	}
	// A policy forcing the action and the exclusions wins over the file.
	forced := map[string]string{"protection.action_on_detection": "forced", "protection.scan_exclusions": "forced", "protection.max_file_size": "policy"}
	want = []string{"--max-filesize", "100M", "--max-depth", "3", "--workers", "1"}
	if got := s.args(forced); !slices.Equal(got, want) {
		t.Fatalf("args under forced settings %q, want %q", got, want)
	}
	for body, msg := range map[string]string{
		`{"action":"delete"}`:      "action must be",
		`{"exlude":["x"]}`:         "unknown field",
		`{"archive_max_depth":-1}`: "negative",
		`{"exclude":"not a list"}`: "cannot unmarshal",
		`not json`:                 "invalid character",
	} {
		write(body)
		if _, err := LoadSettings(dir); err == nil || !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), SettingsFile) {
			t.Errorf("%s: error %v, want one naming the file and containing %q", body, err, msg)
		}
	}
}

func TestSplitStateAndHasFlag(t *testing.T) {
	state, rest, err := splitState([]string{"--json", "--state", "/s", "/a", "--state=/t", "/b", "--", "--state"}, "/def")
	if err != nil || state != "/t" || !slices.Equal(rest, []string{"--json", "/a", "/b", "--", "--state"}) {
		t.Fatalf("got %q %q %v", state, rest, err)
	}
	if _, _, err := splitState([]string{"--state"}, "/d"); err == nil {
		t.Fatal("--state without a value accepted")
	}
	if !hasFlag([]string{"x", "--quarantine"}, "quarantine") || hasFlag([]string{"--quarantine-dir", "q"}, "quarantine") ||
		hasFlag([]string{"--", "--quarantine"}, "quarantine") || !hasFlag([]string{"-dir=x"}, "dir") {
		t.Fatal("hasFlag")
	}
}

func TestScan_BadSettingsIsAnErrorAndNotEnrolledSpoolsNothing(t *testing.T) {
	state, files := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(files, "eicar.com"), []byte("X5O!P%@AP[4\\PZX54(P^)7CC)7}$"+"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"), 0o644)
	var out, errb bytes.Buffer
	if code := Scan(context.Background(), []string{"--state", state, files}, "/unused", &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1; stderr %s", code, errb.String())
	}
	if _, err := os.Stat(spool.Dir(state)); !os.IsNotExist(err) {
		t.Fatal("a scan in a state directory that is not enrolled spooled events")
	}
	if !strings.Contains(errb.String(), "detections are not reported to a server") {
		t.Fatalf("no note that nothing is reported: %q", errb.String())
	}
	os.WriteFile(filepath.Join(state, SettingsFile), []byte(`{"action":"explode"}`), 0o600)
	errb.Reset()
	if code := Scan(context.Background(), []string{"--state", state, files}, "/unused", &out, &errb); code != 2 || !strings.Contains(errb.String(), "action must be") {
		t.Fatalf("bad settings: exit %d, stderr %q", code, errb.String())
	}
}

func TestPolicyArgs_OnlyValuesSetByAPolicyOrLocally(t *testing.T) {
	dir := t.TempDir()
	m, err := agentcfg.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := policyArgs(m.Settings()); len(got) != 0 {
		t.Fatalf("defaults gave flags %q", got)
	}
	v := "/mnt/*"
	if err := agentcfg.SetLocal(dir, "protection.scan_exclusions", &v); err != nil {
		t.Fatal(err)
	}
	q := "quarantine"
	if err := agentcfg.SetLocal(dir, "protection.action_on_detection", &q); err != nil {
		t.Fatal(err)
	}
	if err := m.ReloadLocal(); err != nil {
		t.Fatal(err)
	}
	want := []string{"--exclude", "/mnt/*", "--quarantine"}
	if got := policyArgs(m.Settings()); !slices.Equal(got, want) {
		t.Fatalf("flags %q, want %q", got, want)
	}
}
