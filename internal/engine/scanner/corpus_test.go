package scanner

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/engine/matcher"
)

// genScript finds shared/bench/scan/gen.py beside the repository, else the
// repository's copy in testdata/scanbench (or $MAMORI_SCAN_GEN).
func genScript(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("MAMORI_SCAN_GEN"); p != "" {
		return p
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		for _, c := range []string{"shared/bench/scan/gen.py", "../shared/bench/scan/gen.py", "testdata/scanbench/gen.py"} {
			p := filepath.Join(dir, c)
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			skipOrFail(t, "shared/bench/scan/gen.py not found beside the repository (set MAMORI_SCAN_GEN)")
		}
		dir = parent
	}
}

// skipOrFail skips, or fails when MAMORI_REQUIRE_TOOLS is set (as in CI,
// which installs every tool the tests need).
func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("MAMORI_REQUIRE_TOOLS") != "" {
		t.Fatal(msg + " (MAMORI_REQUIRE_TOOLS is set)")
	}
	t.Skip(msg)
}

// genCorpus runs gen.py for a seed at the smallest scale (~100 files,
// ~60 MB, 65,000 signatures) into a fresh directory.
func genCorpus(t testing.TB, seed int) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		skipOrFail(t, "python3 is not installed; the corpus test needs it to run shared/bench/scan/gen.py")
	}
	script := genScript(t)
	out := t.TempDir()
	cmd := exec.Command(py, script, out, "--seed", strconv.Itoa(seed), "--scale", "0.01")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen.py: %v\n%s", err, b)
	}
	return out
}

type expectedHit struct{ path, kind, sig string }

// readExpected parses expected.tsv: "corpus/REL\tKIND\tSIGNATURE" per line,
// KIND one of eicar, body, md5, sha256.
func readExpected(t testing.TB, dir string) []expectedHit {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "expected.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []expectedHit
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), "\t")
		if len(fs) != 3 {
			t.Fatalf("expected.tsv: bad line %q", sc.Text())
		}
		out = append(out, expectedHit{fs[0], fs[1], fs[2]})
	}
	if len(out) == 0 {
		t.Fatal("expected.tsv is empty")
	}
	return out
}

func loadEngine(t testing.TB, sigDir string) *matcher.Engine {
	t.Helper()
	recs, err := enginedb.ReadSources([]string{sigDir})
	if err != nil {
		t.Fatal(err)
	}
	data, err := enginedb.Build(recs, 7)
	if err != nil {
		t.Fatal(err)
	}
	e, err := matcher.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestScan_CorpusMatchesExpected runs the real scanner with all 65,000
// generated signatures over the generated corpus for several seeds and
// requires exactly the planted detections: none missing, none extra.
func TestScan_CorpusMatchesExpected(t *testing.T) {
	if testing.Short() {
		t.Skip("corpus generation is skipped in -short mode")
	}
	seeds := []int{1, 2, 3, 42}
	if env := os.Getenv("MAMORI_CORPUS_SEEDS"); env != "" { // e.g. "5,6,7"
		seeds = nil
		for _, f := range strings.Split(env, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				t.Fatalf("MAMORI_CORPUS_SEEDS: %v", err)
			}
			seeds = append(seeds, n)
		}
	}
	for _, seed := range seeds {
		t.Run("seed"+strconv.Itoa(seed), func(t *testing.T) {
			t.Parallel()
			dir := genCorpus(t, seed)
			e := loadEngine(t, filepath.Join(dir, "sigs"))
			var (
				mu  sync.Mutex
				got []string
			)
			sum, err := Scan(context.Background(), []string{filepath.Join(dir, "corpus")}, Options{
				Engine: e,
				OnDetection: func(d Detection) {
					mu.Lock()
					defer mu.Unlock()
					rel, err := filepath.Rel(dir, d.Path)
					if err != nil {
						t.Error(err)
					}
					got = append(got, rel+"\t"+d.Kind+"\t"+d.Signature)
				},
				OnIssue: func(is Issue) { t.Errorf("unexpected issue: %v (%s)", is, is.Kind) },
			})
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, h := range readExpected(t, dir) {
				kind := map[string]string{"md5": KindHash, "sha256": KindHash, "body": KindBody, "eicar": KindBody}[h.kind]
				if kind == "" {
					t.Fatalf("expected.tsv: unknown kind %q", h.kind)
				}
				want = append(want, h.path+"\t"+kind+"\t"+h.sig)
			}
			sort.Strings(got)
			sort.Strings(want)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("detections differ from expected.tsv\n got (%d):\n%s\nwant (%d):\n%s",
					len(got), strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
			}
			if sum.Detections != int64(len(want)) || sum.Errors != 0 {
				t.Errorf("summary %+v, want %d detections and no errors", sum, len(want))
			}
			entries := 0
			filepath.WalkDir(filepath.Join(dir, "corpus"), func(p string, d os.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					entries++
				}
				return nil
			})
			if sum.Files != int64(entries) {
				t.Errorf("scanned %d files, corpus has %d", sum.Files, entries)
			}
		})
	}
}
