package taskrun

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/tasks"
)

// diagnosticFiles are the state files a bundle carries. The identity's
// private key and the outbox database are never included (identity.json holds the key: the agent adds its public parts).
var diagnosticFiles = []string{"config.json", "local-config.json", "scan.json", ledgerFile}

// urlPassword matches the password of a URL ("http://user:PASSWORD@host"),
// in JSON or text.
var urlPassword = regexp.MustCompile(`(://[^:/@\s"']+:)[^@/\s"']+@`)

// redactURLPasswords hides URL passwords (a proxy's, set by a policy or on
// the command line): whoever may download a bundle may not read them.
func redactURLPasswords(b []byte) []byte {
	return urlPassword.ReplaceAll(b, []byte("${1}xxxxx@"))
}

// maxDiagnosticFile bounds one file in a bundle.
const maxDiagnosticFile = 4 << 20

// diagnostics builds a tar.gz bundle of the agent's state and recent log and
// uploads it for the run; at most max_bytes are sent.
func (r *Runner) diagnostics(ctx context.Context, runID string, p tasks.Params) result {
	if r.Upload == nil {
		return failed("uploads are not set up on this agent")
	}
	limit := num(p, "max_bytes")
	f, err := os.CreateTemp(r.StateDir, "diagnostics-*.tar.gz")
	if err != nil {
		return failed("creating the bundle: %v", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	names, err := r.writeBundle(f, limit)
	if err != nil {
		return failed("building the bundle: %v", err)
	}
	st, err := f.Stat()
	if err != nil {
		return failed("%v", err)
	}
	if st.Size() > limit {
		return failed("the bundle is %d bytes, more than max_bytes (%d)", st.Size(), limit)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return failed("%v", err)
	}
	host, _ := os.Hostname()
	name := fmt.Sprintf("diagnostics-%s-%s.tar.gz", sanitize(host), r.Now().UTC().Format("20060102-150405"))
	if err := r.Upload.Upload(ctx, runID, name, f, st.Size()); err != nil {
		return failed("uploading the bundle: %v", err)
	}
	return result{state: "succeeded", output: fmt.Sprintf("uploaded %s (%d bytes): %s", name, st.Size(), strings.Join(names, ", "))}
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, s)
}

// countingWriter counts compressed bytes so the bundle stops growing near
// the limit.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (r *Runner) writeBundle(w io.Writer, limit int64) ([]string, error) {
	cw := &countingWriter{w: w}
	gz := gzip.NewWriter(cw)
	tw := tar.NewWriter(gz)
	var names []string
	now := r.Now()
	add := func(name string, data []byte) error {
		data = redactURLPasswords(data)
		if cw.n+int64(len(data))/4 > limit-64<<10 { // leave room; data compresses
			return nil
		}
		if len(data) > maxDiagnosticFile {
			data = append(data[:maxDiagnosticFile:maxDiagnosticFile], []byte("\n[truncated]\n")...)
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: now, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
		names = append(names, name)
		return tw.Flush()
	}
	summary := fmt.Sprintf("os: %s/%s\ngo: %s\ntime: %s\nstate: %s\n", runtime.GOOS, runtime.GOARCH, runtime.Version(), now.UTC().Format(time.RFC3339), r.StateDir)
	if err := add("summary.txt", []byte(summary)); err != nil {
		return nil, err
	}
	if r.Diagnostics != nil {
		extra := r.Diagnostics()
		keys := make([]string, 0, len(extra))
		for k := range extra {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := add(filepath.Base(k), extra[k]); err != nil {
				return nil, err
			}
		}
	}
	for _, name := range diagnosticFiles {
		b, err := os.ReadFile(filepath.Join(r.StateDir, name))
		if err != nil {
			continue
		}
		if err := add("state/"+name, b); err != nil {
			return nil, err
		}
	}
	// Listings (names and sizes only) of the engine and the quarantine.
	for _, dir := range []string{"engine", "quarantine"} {
		var b strings.Builder
		_ = filepath.WalkDir(filepath.Join(r.StateDir, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			if info, err := d.Info(); err == nil {
				rel, _ := filepath.Rel(r.StateDir, path)
				fmt.Fprintf(&b, "%s\t%d\t%s\n", rel, info.Size(), info.ModTime().UTC().Format(time.RFC3339))
			}
			return nil
		})
		if err := add(dir+"-files.txt", []byte(b.String())); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return names, gz.Close()
}
