package enginecli

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/mamori/mamori/internal/engine/scanner"
)

var eicar = []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$` + `EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`)

func run(f func(stdout, stderr *bytes.Buffer) int) (int, string, string) {
	var o, e bytes.Buffer
	code := f(&o, &e)
	return code, o.String(), e.String()
}

func runScan(t *testing.T, hooks ScanHooks, args ...string) (int, string, string) {
	t.Helper()
	return run(func(o, e *bytes.Buffer) int { return Scan(context.Background(), args, o, e, hooks) })
}

func write(t *testing.T, p string, data []byte) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestParseSize(t *testing.T) {
	ok := map[string]int64{"0": 0, "1024": 1024, "512K": 512 << 10, "512k": 512 << 10, "100M": 100 << 20,
		"2G": 2 << 30, "1T": 1 << 40, "10MB": 10 << 20, "10MiB": 10 << 20, "7b": 7}
	for in, want := range ok {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1", "1.5G", "12X", "abc", "99999999999999999999", "9999999999T"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}

func TestBuildAndInfo(t *testing.T) {
	src := t.TempDir()
	write(t, filepath.Join(src, "a.ndb"), []byte("Test.Body:0:*:4142434445464748\n"))
	write(t, filepath.Join(src, "b.hdb"), []byte("44d88612fea8a8f36de82e1278abb02f:68:Test.Hash\n"))
	out := filepath.Join(t.TempDir(), "engine.mdb")
	code, stdout, stderr := run(func(o, e *bytes.Buffer) int {
		return Build([]string{"--from", src, "--out", out, "--version", "12"}, o, e)
	})
	if code != 0 || !strings.Contains(stdout, "engine version 12, 2 records") || stderr != "" {
		t.Fatalf("build: %d %q %q", code, stdout, stderr)
	}
	code, stdout, _ = run(func(o, e *bytes.Buffer) int { return Info([]string{out}, o, e) })
	if code != 0 || !strings.Contains(stdout, "engine version:  12") || !strings.Contains(stdout, "md5 1, body 1") {
		t.Fatalf("info: %d %q", code, stdout)
	}
	code, stdout, _ = run(func(o, e *bytes.Buffer) int { return Info([]string{"--json", out}, o, e) })
	var info map[string]any
	if code != 0 || json.Unmarshal([]byte(stdout), &info) != nil || info["engine_version"] != float64(12) || info["records"] != float64(2) {
		t.Fatalf("info --json: %d %q", code, stdout)
	}
	// A damaged database is rejected with a reason.
	b, _ := os.ReadFile(out)
	b[len(b)/2] ^= 1
	os.WriteFile(out, b, 0o644)
	code, _, stderr = run(func(o, e *bytes.Buffer) int { return Info([]string{out}, o, e) })
	if code != ExitError || !strings.Contains(stderr, "checksum mismatch") {
		t.Fatalf("damaged info: %d %q", code, stderr)
	}
	// The engine is usable for scanning.
	os.WriteFile(out, func() []byte { b[len(b)/2] ^= 1; return b }(), 0o644)
	dir := t.TempDir()
	write(t, filepath.Join(dir, "x"), []byte("..ABCDEFGH.."))
	if code, stdout, _ := runScan(t, ScanHooks{}, dir, "--engine", out); code != ExitFound || !strings.Contains(stdout, "x: Test.Body FOUND") {
		t.Fatalf("scan with built engine: %d %q", code, stdout)
	}
}

func TestBuild_Errors(t *testing.T) {
	src := t.TempDir()
	write(t, filepath.Join(src, "bad.ndb"), []byte("Good:0:*:41424344\nBad:0:*:41{0}42\n"))
	out := filepath.Join(t.TempDir(), "e.mdb")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--from", src, "--out", out, "--version", "1"}, "bad.ndb:2: empty gap"},
		{[]string{"--out", out, "--version", "1"}, "--from is required"},
		{[]string{"--from", src, "--version", "1"}, "--out is required"},
		{[]string{"--from", src, "--out", out}, "--version N (N > 0) is required"},
		{[]string{"--from", src, "--out", out, "--version", "x"}, "invalid value"},
		{[]string{"--bogus"}, "flag provided but not defined"},
		{[]string{"--from", src, "--out", out, "--version", "1", "extra"}, `unexpected argument "extra"`},
	}
	for _, c := range cases {
		code, _, stderr := run(func(o, e *bytes.Buffer) int { return Build(c.args, o, e) })
		if code != ExitError || !strings.Contains(stderr, c.want) {
			t.Errorf("Build(%q) = %d %q, want exit 2 and %q", c.args, code, stderr, c.want)
		}
		if c.want != "bad.ndb:2: empty gap" && strings.Count(stderr, "\n") != 1 {
			t.Errorf("Build(%q): usage error is not one line: %q", c.args, stderr)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("output written despite errors")
	}
}

type jsonLine map[string]any

func parseLines(t *testing.T, s string) []jsonLine {
	t.Helper()
	var out []jsonLine
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		var m jsonLine
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func TestScan_JSONOutputAndExitCodes(t *testing.T) {
	dir := t.TempDir()
	odd := "odd\nname\xff.com"
	if runtime.GOOS == "windows" {
		odd = "odd name.com"
	}
	write(t, filepath.Join(dir, odd), eicar)
	write(t, filepath.Join(dir, "clean.txt"), []byte("clean"))
	var hooked []scanner.Detection
	var summary scanner.Summary
	hooks := ScanHooks{OnDetection: func(d scanner.Detection, qid string) { hooked = append(hooked, d) },
		OnSummary: func(s scanner.Summary) { summary = s }}
	code, stdout, stderr := runScan(t, hooks, "--json", dir)
	if code != ExitFound || stderr != "" {
		t.Fatalf("exit %d stderr %q", code, stderr)
	}
	lines := parseLines(t, stdout)
	if len(lines) != 2 {
		t.Fatalf("want detection + summary, got %d lines:\n%s", len(lines), stdout)
	}
	d, s := lines[0], lines[1]
	if d["signature"] != "EICAR-Test-File" || d["kind"] != "body" || d["path"] == nil || d["quarantined"] != nil {
		t.Fatalf("detection line %v", d)
	}
	if runtime.GOOS != "windows" {
		// The exact bytes survive in path_raw (base64 in JSON).
		var raw struct {
			PathRaw []byte `json:"path_raw"`
		}
		json.Unmarshal([]byte(strings.Split(stdout, "\n")[0]), &raw)
		if string(raw.PathRaw) != filepath.Join(dir, odd) {
			t.Fatalf("path_raw = %q", raw.PathRaw)
		}
	}
	if s["summary"] != true || s["files"] != float64(2) || s["detections"] != float64(1) || s["errors"] != float64(0) ||
		s["bytes"] != float64(len(eicar)+5) || s["seconds"] == nil {
		t.Fatalf("summary line %v", s)
	}
	if len(hooked) != 1 || hooked[0].Signature != "EICAR-Test-File" || summary.Detections != 1 {
		t.Fatalf("hooks got %v %+v", hooked, summary)
	}
	// Clean: 0.
	if code, _, _ := runScan(t, ScanHooks{}, filepath.Join(dir, "clean.txt")); code != ExitOK {
		t.Fatalf("clean scan exit %d", code)
	}
	// Errors win over detections: 2, detections still printed.
	code, stdout, stderr = runScan(t, ScanHooks{}, dir, filepath.Join(dir, "missing"))
	if code != ExitError || !strings.Contains(stdout, "EICAR-Test-File FOUND") || !strings.Contains(stderr, "missing") {
		t.Fatalf("errors+detections: %d %q %q", code, stdout, stderr)
	}
	// Text output quotes odd paths so one line is one record.
	if runtime.GOOS != "windows" {
		_, stdout, _ = runScan(t, ScanHooks{}, dir)
		if !strings.Contains(stdout, `odd\nname\xff.com": EICAR-Test-File FOUND`) {
			t.Fatalf("text output %q", stdout)
		}
	}
}

func TestScan_BadFlagsOneLineExit2(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--nope", dir}, {"--max-filesize", "12X", dir}, {}, {"--workers", "-1", dir}, {"--engine"},
		{"--quarantine-dir", dir, dir}, {"--max-filesize"},
	} {
		code, stdout, stderr := runScan(t, ScanHooks{}, args...)
		if code != ExitError || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "mamori-agent scan: ") {
			t.Errorf("Scan(%q) = %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	code, _, stderr := runScan(t, ScanHooks{}, dir, "--engine", filepath.Join(dir, "missing.mdb"))
	if code != ExitError || strings.Count(stderr, "\n") != 1 {
		t.Errorf("missing engine: %d %q", code, stderr)
	}
	if code, stdout, _ := runScan(t, ScanHooks{}, "-h"); code != 0 || !strings.Contains(stdout, "usage: mamori-agent scan") {
		t.Errorf("-h: %d %q", code, stdout)
	}
}

func TestScan_MaxFileSizeAndExclude(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "big", "eicar.com"), append(append([]byte(nil), eicar...), make([]byte, 2000)...))
	write(t, filepath.Join(dir, "ex", "eicar.com"), eicar)
	code, stdout, stderr := runScan(t, ScanHooks{}, dir, "--max-filesize", "1K", "--exclude", "ex", "--json")
	lines := parseLines(t, stdout)
	if code != ExitOK || len(lines) != 1 || lines[0]["detections"] != float64(0) || !strings.Contains(stderr, "size_limit") {
		t.Fatalf("%d %q %q", code, stdout, stderr)
	}
}

func TestScan_QuarantineThenQuarantineCommands(t *testing.T) {
	dir := t.TempDir()
	qdir := filepath.Join(t.TempDir(), "q")
	target := filepath.Join(dir, "sub", "eicar.com")
	write(t, target, eicar)
	write(t, filepath.Join(dir, "arch.zip"), zipWith(t, "m.com", eicar))
	var qids []string
	hooks := ScanHooks{OnDetection: func(d scanner.Detection, qid string) { qids = append(qids, qid) }}
	code, stdout, stderr := runScan(t, hooks, dir, "--json", "--quarantine", "--quarantine-dir", qdir)
	if code != ExitFound || stderr != "" {
		t.Fatalf("%d %q %q", code, stdout, stderr)
	}
	lines := parseLines(t, stdout)
	if len(lines) != 3 {
		t.Fatalf("lines:\n%s", stdout)
	}
	for _, l := range lines[:2] {
		if l["quarantined"] != true || l["quarantine_id"] == "" {
			t.Fatalf("not quarantined: %v", l)
		}
	}
	if len(qids) != 2 || qids[0] == "" || qids[1] == "" {
		t.Fatalf("hook quarantine ids %v", qids)
	}
	for _, p := range []string{target, filepath.Join(dir, "arch.zip")} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s still present", p)
		}
	}
	// A second scan of the same tree finds nothing.
	if code, _, _ := runScan(t, ScanHooks{}, dir); code != ExitOK {
		t.Fatalf("rescan exit %d", code)
	}
	q := func(args ...string) (int, string, string) {
		return run(func(o, e *bytes.Buffer) int { return Quarantine(append(args, "--dir", qdir), o, e) })
	}
	code, stdout, _ = q("list", "--json")
	items := parseLines(t, stdout)
	if code != 0 || len(items) != 2 {
		t.Fatalf("list: %d %q", code, stdout)
	}
	var id string
	for _, it := range items {
		if it["original_path"] == target {
			id = it["id"].(string)
		}
	}
	if id == "" {
		t.Fatalf("no item for %s in %v", target, items)
	}
	code, stdout, _ = q("list")
	if code != 0 || !strings.Contains(stdout, id) || !strings.Contains(stdout, "EICAR-Test-File") {
		t.Fatalf("list text: %q", stdout)
	}
	write(t, target, []byte("occupied"))
	if code, _, stderr := q("restore", id); code != ExitFound || !strings.Contains(stderr, "already exists") {
		t.Fatalf("restore over existing: %d %q", code, stderr)
	}
	if code, stdout, _ := q("restore", id, "--force"); code != 0 || !strings.Contains(stdout, "restored "+id) {
		t.Fatalf("forced restore: %d %q", code, stdout)
	}
	if b, _ := os.ReadFile(target); !bytes.Equal(b, eicar) {
		t.Fatal("restored bytes differ")
	}
	other := items[0]["id"].(string)
	if other == id {
		other = items[1]["id"].(string)
	}
	if code, stdout, _ := q("delete", other); code != 0 || stdout != "deleted "+other+"\n" {
		t.Fatalf("delete: %d %q", code, stdout)
	}
	if code, stdout, _ := q("list", "--json"); code != 0 || strings.TrimSpace(stdout) != "" {
		t.Fatalf("list after: %q", stdout)
	}
	for _, args := range [][]string{{"bogus"}, {"restore"}, {"delete", "a", "b"}, {"list", "--to", "x"}, {}} {
		if code, _, stderr := q(args...); code != ExitError || strings.Count(stderr, "\n") != 1 {
			t.Errorf("Quarantine(%q) = %d %q", args, code, stderr)
		}
	}
	if code, _, _ := q("delete", "0123456789abcdef0123456789abcdef"); code != ExitFound {
		t.Errorf("delete unknown id: %d", code)
	}
}

func zipWith(t *testing.T, name string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	w, _ := zw.Create(name)
	w.Write(data)
	zw.Close()
	return b.Bytes()
}
