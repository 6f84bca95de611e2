package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The standard EICAR test file, split so this source is not itself a
// detection.
var eicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

type detection struct {
	ID        string
	Signature string
	Path      string
	Action    string
	State     string
	Computer  struct{ ID, Name string }
	Details   json.RawMessage
}

func TestDetection_ScanOnAnAgentReachesTheServerOnceAndCanBeResolved(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	state := filepath.Join(t.TempDir(), "agent")
	s.agent(t, state, nil, append(s.enrollArgs(s.token()), "--instance", "scanned")...)
	c, _ := s.api.waitStatus(t, "scanned", "online", 20*time.Second)

	files := t.TempDir()
	os.WriteFile(filepath.Join(files, "eicar.com"), []byte(eicar), 0o644)
	os.WriteFile(filepath.Join(files, "clean.txt"), []byte("nothing to see"), 0o644)
	// Local scan settings: quarantine what is found.
	os.WriteFile(filepath.Join(state, "scan.json"), []byte(`{"action":"quarantine","exclude":["*.iso"]}`), 0o600)
	out, err := exec.Command(bin("mamori-agent"), "scan", "--state", state, "--json", files).Output()
	if code := exitCode(err); code != 1 {
		t.Fatalf("scan exit %d (%v), want 1 (detections); output:\n%s", code, err, out)
	}
	if !strings.Contains(string(out), `"EICAR-Test-File"`) || !strings.Contains(string(out), `"quarantined":true`) {
		t.Fatalf("scan output:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(files, "eicar.com")); !os.IsNotExist(err) {
		t.Fatalf("the detected file was not quarantined: %v", err)
	}
	ql, err := exec.Command(bin("mamori-agent"), "quarantine", "list", "--state", state).Output()
	if err != nil || !strings.Contains(string(ql), "EICAR-Test-File") {
		t.Fatalf("quarantine list: %v\n%s", err, ql)
	}

	var list struct {
		Items []detection
		Total int
	}
	waitFor(t, 20*time.Second, "detection reported", func() (bool, string) {
		s.api.do(t, "GET", "/api/v1/detections?computer="+c.ID, nil, &list)
		return list.Total == 1, "none yet"
	})
	d := list.Items[0]
	if d.Signature != "EICAR-Test-File" || d.State != "unresolved" || d.Action != "quarantined" || d.Computer.Name != "scanned" ||
		!strings.HasSuffix(d.Path, "eicar.com") {
		t.Fatalf("detection %+v", d)
	}
	if got, _ := s.api.computerByName(t, "scanned"); got.UnresolvedDetections != 1 {
		t.Fatalf("unresolved count %d, want 1", got.UnresolvedDetections)
	}
	// Filters.
	for q, want := range map[string]int{"state=unresolved": 1, "state=resolved": 0, "name=eicar": 1, "name=other": 0, "group=All": 1} {
		s.api.do(t, "GET", "/api/v1/detections?"+q, nil, &list)
		if list.Total != want {
			t.Errorf("?%s: %d, want %d", q, list.Total, want)
		}
	}
	var resolved detection
	if code := s.api.do(t, "POST", "/api/v1/detections/"+d.ID+"/resolve", nil, &resolved); code != 200 || resolved.State != "resolved" {
		t.Fatalf("resolve: %d %+v", code, resolved)
	}
	if got, _ := s.api.computerByName(t, "scanned"); got.UnresolvedDetections != 0 {
		t.Fatalf("unresolved count %d after resolving", got.UnresolvedDetections)
	}
	// The same detection event delivered again (spool imported twice) is
	// stored once: the id is the agent's.
	s.api.do(t, "GET", "/api/v1/detections", nil, &list)
	if list.Total != 1 {
		t.Fatalf("%d detections, want 1", list.Total)
	}
	// Restored on the computer: the server's detection says so.
	var item struct {
		ID string `json:"id"`
	}
	qj, err := exec.Command(bin("mamori-agent"), "quarantine", "list", "--state", state, "--json").Output()
	if err != nil || json.Unmarshal(qj, &item) != nil || item.ID == "" {
		t.Fatalf("quarantine list --json: %v\n%s", err, qj)
	}
	if out, err := exec.Command(bin("mamori-agent"), "quarantine", "restore", item.ID, "--state", state).CombinedOutput(); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	waitFor(t, 30*time.Second, "the restore reported", func() (bool, string) {
		var got detection
		s.api.do(t, "GET", "/api/v1/detections/"+d.ID, nil, &got)
		return got.Action == "restored", got.Action
	})
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
