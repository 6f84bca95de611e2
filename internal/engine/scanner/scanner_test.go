package scanner

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mamori/mamori/internal/engine/archive"
	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/engine/matcher"
	"github.com/mamori/mamori/internal/engine/signature"
)

// eicar is the standard EICAR test file (68 bytes).
var eicar = []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$` + `EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`)

type member struct {
	name string
	data []byte
}

func zipOf(t testing.TB, ms ...member) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, m := range ms {
		w, err := zw.Create(m.name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(m.data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func tarOf(t testing.TB, ms ...member) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, m := range ms {
		tw.WriteHeader(&tar.Header{Name: m.name, Size: int64(len(m.data)), Mode: 0o644, Typeflag: tar.TypeReg})
		tw.Write(m.data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gzipOf(t testing.TB, name string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Name = name
	zw.Write(data)
	zw.Close()
	return b.Bytes()
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

type collected struct {
	mu     sync.Mutex
	dets   []Detection
	issues []Issue
}

func (c *collected) opts(o Options) Options {
	o.OnDetection = func(d Detection) { c.mu.Lock(); c.dets = append(c.dets, d); c.mu.Unlock() }
	o.OnIssue = func(i Issue) { c.mu.Lock(); c.issues = append(c.issues, i); c.mu.Unlock() }
	return o
}

// lines renders detections as "relpath kind signature" sorted.
func (c *collected) lines(root string) []string {
	var out []string
	for _, d := range c.dets {
		rel := strings.TrimPrefix(d.Path, root+string(filepath.Separator))
		out = append(out, rel+" "+d.Kind+" "+d.Signature)
	}
	sort.Strings(out)
	return out
}

func (c *collected) issueKinds(root string) []string {
	var out []string
	for _, i := range c.issues {
		out = append(out, strings.TrimPrefix(i.Path, root+string(filepath.Separator))+" "+i.Kind)
	}
	sort.Strings(out)
	return out
}

func scan(t *testing.T, o Options, paths ...string) (*collected, Summary) {
	t.Helper()
	c := &collected{}
	sum, err := Scan(context.Background(), paths, c.opts(o))
	if err != nil {
		t.Fatal(err)
	}
	return c, sum
}

func TestScan_EicarPlainAndInsideArchives(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "plain", "eicar.com"), eicar)
	writeFile(t, filepath.Join(root, "plain", "eicar-with-newline.txt"), append(append([]byte(nil), eicar...), '\n'))
	writeFile(t, filepath.Join(root, "clean.txt"), []byte("nothing to see "+string(eicar[:20])))
	writeFile(t, filepath.Join(root, "eicar.zip"), zipOf(t, member{"readme.txt", []byte("hi")}, member{"bin/eicar.com", eicar}))
	inner := zipOf(t, member{"dir/eicar.com", eicar})
	writeFile(t, filepath.Join(root, "nested.zip"), zipOf(t, member{"inner.zip", inner}))
	writeFile(t, filepath.Join(root, "eicar.tar.gz"), gzipOf(t, "", tarOf(t, member{"docs/a.txt", []byte("a")}, member{"docs/eicar.txt", eicar})))
	writeFile(t, filepath.Join(root, "eicar.com.gz"), gzipOf(t, "eicar.com", eicar))
	writeFile(t, filepath.Join(root, "plain.tar"), tarOf(t, member{"x/eicar", eicar}))
	writeFile(t, filepath.Join(root, "deep.zip"), zipOf(t, member{"l1.tar.gz", gzipOf(t, "", tarOf(t, member{"l2.zip", inner}))}))
	writeFile(t, filepath.Join(root, "clean.zip"), zipOf(t, member{"ok.txt", []byte("fine")}))

	c, sum := scan(t, Options{}, root)
	want := []string{
		"deep.zip!l1.tar.gz!l2.zip!dir/eicar.com archive EICAR-Test-File",
		"eicar.com.gz!eicar.com archive EICAR-Test-File",
		"eicar.tar.gz!docs/eicar.txt archive EICAR-Test-File",
		"eicar.zip!bin/eicar.com archive EICAR-Test-File",
		"nested.zip!inner.zip!dir/eicar.com archive EICAR-Test-File",
		"plain.tar!x/eicar archive EICAR-Test-File",
		"plain/eicar-with-newline.txt body EICAR-Test-File",
		"plain/eicar.com body EICAR-Test-File",
	}
	if got := c.lines(root); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("detections:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(c.issues) != 0 {
		t.Fatalf("issues: %v", c.issueKinds(root))
	}
	if sum.Files != 10 || sum.Detections != 8 || sum.Errors != 0 {
		t.Fatalf("summary %+v", sum)
	}
	for _, d := range c.dets {
		if d.Kind == KindArchive {
			if !strings.HasSuffix(d.File, ".zip") && !strings.HasSuffix(d.File, ".gz") && !strings.HasSuffix(d.File, ".tar") {
				t.Errorf("%s: File %q is not the archive on disk", d.Path, d.File)
			}
			if d.File+"!"+d.Member != d.Path || d.MatchKind != KindBody {
				t.Errorf("%s: File %q Member %q MatchKind %q", d.Path, d.File, d.Member, d.MatchKind)
			}
		}
		if d.Size != int64(len(eicar)) && !strings.HasSuffix(d.Path, "newline.txt") {
			t.Errorf("%s: size %d", d.Path, d.Size)
		}
		if d.EngineVersion == 0 {
			t.Errorf("%s: no engine version", d.Path)
		}
	}
}

func TestScan_ArchiveDepthLimit(t *testing.T) {
	root := t.TempDir()
	data := zipOf(t, member{"eicar.com", eicar})
	for i := 0; i < 5; i++ { // eicar at depth 6
		data = zipOf(t, member{"level.zip", data})
	}
	writeFile(t, filepath.Join(root, "deep.zip"), data)
	c, _ := scan(t, Options{Archive: archive.Limits{MaxDepth: 3}}, root)
	if len(c.dets) != 0 {
		t.Fatalf("found beyond the depth limit: %v", c.lines(root))
	}
	if got := c.issueKinds(root); len(got) != 1 || got[0] != "deep.zip!level.zip!level.zip!level.zip archive_limit" {
		t.Fatalf("issues %v", got)
	}
	c, _ = scan(t, Options{}, root)
	if len(c.dets) != 1 || len(c.issues) != 0 {
		t.Fatalf("default depth: detections %v issues %v", c.lines(root), c.issueKinds(root))
	}
}

func TestScan_ZipBombReportedNotUnpacked(t *testing.T) {
	root := t.TempDir()
	bomb := zipOf(t, member{"zeros.bin", make([]byte, 64<<20)}, member{"eicar.com", eicar})
	if len(bomb) > 200<<10 {
		t.Fatalf("bomb is %d bytes", len(bomb))
	}
	writeFile(t, filepath.Join(root, "bomb.zip"), bomb)
	// A bomb inside a tar.gz: the gzip layer's ratio is checked while inflating.
	writeFile(t, filepath.Join(root, "bomb.tar.gz"), gzipOf(t, "", tarOf(t, member{"zeros", make([]byte, 64<<20)})))
	c, sum := scan(t, Options{}, root)
	issues := c.issueKinds(root)
	if strings.Join(issues, ",") != "bomb.tar.gz archive_limit,bomb.zip!zeros.bin archive_limit" {
		t.Fatalf("issues %v", issues)
	}
	if got := c.lines(root); len(got) != 1 || got[0] != "bomb.zip!eicar.com archive EICAR-Test-File" {
		t.Fatalf("detections %v", got)
	}
	for _, i := range c.issues {
		if !strings.Contains(i.Err.Error(), "ratio") {
			t.Errorf("%s: %v is not reported as a compression-ratio bomb", i.Path, i.Err)
		}
	}
	if sum.Errors != 0 || sum.Warnings != 2 {
		t.Fatalf("summary %+v: bombs are warnings, not errors", sum)
	}
}

func TestScan_CorruptArchivesAreIssuesNotPanics(t *testing.T) {
	root := t.TempDir()
	z := zipOf(t, member{"a.txt", bytes.Repeat([]byte("hello "), 2000)}, member{"eicar.com", eicar})
	writeFile(t, filepath.Join(root, "truncated.zip"), z[:len(z)/2])
	tgz := gzipOf(t, "", tarOf(t, member{"a", bytes.Repeat([]byte("data "), 5000)}))
	writeFile(t, filepath.Join(root, "truncated.tar.gz"), tgz[:len(tgz)/2])
	writeFile(t, filepath.Join(root, "garbage.gz"), append([]byte{0x1f, 0x8b, 8, 0}, bytes.Repeat([]byte{0xee}, 100)...))
	badCRC := append([]byte(nil), z...)
	badCRC[60] ^= 0xff // inside the first member's data
	writeFile(t, filepath.Join(root, "badcrc.zip"), badCRC)
	c, sum := scan(t, Options{}, root)
	if sum.Files != 4 || sum.Errors != 0 {
		t.Fatalf("summary %+v, issues %v", sum, c.issueKinds(root))
	}
	kinds := map[string]string{}
	for _, i := range c.issues {
		kinds[strings.TrimPrefix(i.Path, root+"/")] = i.Kind
	}
	for _, p := range []string{"truncated.zip", "garbage.gz"} {
		if kinds[p] != IssueArchiveCorrupt {
			t.Errorf("%s: issue kind %q, want archive_corrupt (all: %v)", p, kinds[p], c.issueKinds(root))
		}
	}
	found := false
	for p, k := range kinds {
		if strings.HasPrefix(p, "truncated.tar.gz") && k == IssueArchiveCorrupt {
			found = true
		}
	}
	if !found {
		t.Errorf("truncated.tar.gz not reported as corrupt: %v", c.issueKinds(root))
	}
	if kinds["badcrc.zip!a.txt"] != IssueArchiveCorrupt {
		t.Errorf("bad CRC member not reported: %v", c.issueKinds(root))
	}
	// The intact member after the damaged one is still scanned.
	if got := c.lines(root); len(got) != 1 || got[0] != "badcrc.zip!eicar.com archive EICAR-Test-File" {
		t.Errorf("detections %v", got)
	}
}

func TestScan_FileDeletedBeforeOpen(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "a", "gone.com"), eicar)
	writeFile(t, filepath.Join(root, "a", "stays.com"), eicar)
	o := Options{Workers: 1}
	o.beforeOpen = func(p string) {
		if filepath.Base(p) == "gone.com" {
			if err := os.Remove(p); err != nil {
				t.Error(err)
			}
		}
	}
	c, sum := scan(t, o, root)
	if got := c.issueKinds(root); strings.Join(got, ",") != "a/gone.com vanished" {
		t.Fatalf("issues %v", got)
	}
	if got := c.lines(root); strings.Join(got, ",") != "a/stays.com body EICAR-Test-File" {
		t.Fatalf("detections %v", got)
	}
	if sum.Errors != 1 || sum.Files != 1 {
		t.Fatalf("summary %+v", sum)
	}
}

func TestScan_UnreadableFile(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("chmod does not block reads on Windows")
	}
	if os.Geteuid() == 0 {
		t.Skip("running as root: chmod 000 does not block reads")
	}
	root := t.TempDir()
	p := filepath.Join(root, "secret.com")
	writeFile(t, p, eicar)
	writeFile(t, filepath.Join(root, "open.com"), eicar)
	if err := os.Chmod(p, 0); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(p, 0o644)
	c, sum := scan(t, Options{}, root)
	if got := c.issueKinds(root); strings.Join(got, ",") != "secret.com io" {
		t.Fatalf("issues %v", got)
	}
	if len(c.dets) != 1 || sum.Errors != 1 {
		t.Fatalf("detections %v summary %+v", c.lines(root), sum)
	}
}

func TestScan_OddBytesInPaths(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows file names cannot hold these bytes")
	}
	root := t.TempDir()
	name := "new\nline \xff\xfe bad-utf8 \t.com"
	writeFile(t, filepath.Join(root, name), eicar)
	writeFile(t, filepath.Join(root, "arch.zip"), zipOf(t, member{"m\nember\xff.com", eicar}))
	c, _ := scan(t, Options{}, root)
	want := []string{
		"arch.zip!m\nember\xff.com archive EICAR-Test-File",
		name + " body EICAR-Test-File",
	}
	if got := c.lines(root); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestScan_ExcludesAndMaxFileSize(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "skipdir", "eicar.com"), eicar)
	writeFile(t, filepath.Join(root, "keep", "eicar.com"), eicar)
	writeFile(t, filepath.Join(root, "keep", "eicar.skip"), eicar)
	big := append(append([]byte(nil), eicar...), make([]byte, 1000)...)
	writeFile(t, filepath.Join(root, "keep", "big.com"), big)
	c, sum := scan(t, Options{Excludes: []string{"skipdir", "*.skip"}, MaxFileSize: 500}, root)
	if got := c.lines(root); strings.Join(got, ",") != "keep/eicar.com body EICAR-Test-File" {
		t.Fatalf("detections %v", got)
	}
	if got := c.issueKinds(root); strings.Join(got, ",") != "keep/big.com size_limit" {
		t.Fatalf("issues %v", got)
	}
	if sum.Skipped != 3 || sum.Errors != 0 {
		t.Fatalf("summary %+v", sum)
	}
	if _, err := Scan(context.Background(), []string{root}, Options{Excludes: []string{"[bad"}}); err == nil {
		t.Fatal("bad glob accepted")
	}
}

func TestScan_MissingRootIsAnErrorNotFatal(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "eicar.com"), eicar)
	c, sum := scan(t, Options{}, filepath.Join(root, "nope"), root)
	if sum.Errors != 1 || len(c.dets) != 1 {
		t.Fatalf("summary %+v detections %v", sum, c.lines(root))
	}
}

func TestScan_AllMatchReportsEveryInfectedMember(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "two.zip"), zipOf(t, member{"a.com", eicar}, member{"b.com", eicar}))
	c, _ := scan(t, Options{}, root)
	if len(c.dets) != 1 {
		t.Fatalf("default: %v", c.lines(root))
	}
	c, _ = scan(t, Options{AllMatch: true}, root)
	// Two members, each matched by the body and the MD5 signature.
	if len(c.dets) != 4 {
		t.Fatalf("all-match: %v", c.lines(root))
	}
}

func TestScan_ContextCancelled(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "eicar.com"), eicar)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Scan(ctx, []string{root}, Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestScan_ProgressReported(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "a.txt"), []byte("abc"))
	var last Progress
	n := 0
	_, err := Scan(context.Background(), []string{root}, Options{OnProgress: func(p Progress) { last = p; n++ }})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || last.Files != 1 || last.Bytes != 3 {
		t.Fatalf("progress %d calls, last %+v", n, last)
	}
}

func TestScan_ArchiveHashAndAllowList(t *testing.T) {
	root := t.TempDir()
	z := zipOf(t, member{"eicar.com", eicar})
	writeFile(t, filepath.Join(root, "a.zip"), z)
	sum := md5.Sum(z)
	line := hex.EncodeToString(sum[:]) + ":" + strconv.Itoa(len(z)) + ":"
	build := func(extra ...string) *matcher.Engine {
		t.Helper()
		var recs []signature.Record
		for _, l := range append([]string{"ndb:Body.Eicar:0:0:" + hex.EncodeToString(eicar)}, extra...) {
			format, rest, _ := strings.Cut(l, ":")
			r, err := signature.ParseLine(format, rest)
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, r)
		}
		db, err := enginedb.Build(recs, 3)
		if err != nil {
			t.Fatal(err)
		}
		e, err := matcher.Load(db)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	c, _ := scan(t, Options{Engine: build()}, root)
	if got := c.lines(root); strings.Join(got, ",") != "a.zip!eicar.com archive Body.Eicar" {
		t.Fatalf("plain engine: %v", got)
	}
	c, _ = scan(t, Options{Engine: build("hdb:" + line + "Zip.Hash"), AllMatch: true}, root)
	if got := c.lines(root); strings.Join(got, ",") != "a.zip hash Zip.Hash,a.zip!eicar.com archive Body.Eicar" {
		t.Fatalf("archive hash: %v", got)
	}
	c, _ = scan(t, Options{Engine: build("hdb:"+line+"Zip.Hash", "fp:"+line+"Trusted.Zip"), AllMatch: true}, root)
	if len(c.dets) != 0 {
		t.Fatalf("allow-listed archive reported: %v", c.lines(root))
	}
}

func TestScan_FileChangedWhileReadIsAWarning(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "growing.log")
	writeFile(t, p, eicar)
	o := Options{}
	o.afterRead = func(path string) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		f.WriteString("more data")
		f.Close()
	}
	c, sum := scan(t, o, root)
	if got := c.issueKinds(root); strings.Join(got, ",") != "growing.log changed" {
		t.Fatalf("issues %v", got)
	}
	if len(c.dets) != 1 || sum.Errors != 0 || sum.Warnings != 1 {
		t.Fatalf("detections %v summary %+v", c.lines(root), sum)
	}
}
