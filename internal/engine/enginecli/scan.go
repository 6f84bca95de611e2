package enginecli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/mamori/mamori/internal/engine/archive"
	"github.com/mamori/mamori/internal/engine/builtin"
	"github.com/mamori/mamori/internal/engine/matcher"
	"github.com/mamori/mamori/internal/engine/quarantine"
	"github.com/mamori/mamori/internal/engine/scanner"
)

// ScanHooks lets the caller of Scan take part in a scan.
type ScanHooks struct {
	// Engine, if not nil, is the engine used when --engine is not given
	// (the agent passes its current engine); else the built-in one.
	Engine *matcher.Engine
	// OnDetection receives every detection after it was printed and, with
	// --quarantine, after its file was quarantined (quarantineID is then
	// the item id, "" if not quarantined or if quarantining failed). It is
	// where the agent puts detections into its durable outbox. Calls are
	// never concurrent.
	OnDetection func(d scanner.Detection, quarantineID string)
	// OnSummary receives the final summary.
	OnSummary func(scanner.Summary)
}

const scanUsage = `usage: mamori-agent scan PATH... [flags]

Scans files and directories (recursively, looking into zip, gzip and tar
archives). Prints "PATH: SIGNATURE FOUND" per detection, or with --json one
JSON object per detection and a final {"summary": true, ...} object.

Flags:
  --state DIR            the agent's state directory (default /var/lib/mamori-agent, or
                         MAMORI_AGENT_STATE): its engine, settings and quarantine; when
                         that agent is enrolled, detections are reported to its server
  --engine FILE          engine database (default: the agent's engine, else built-in)
  --exclude GLOB         skip paths whose full path or base name matches (repeatable)
  --max-filesize SIZE    skip files larger than SIZE (e.g. 100M; default: no limit)
  --json                 JSON Lines output
  --quarantine           move detected files into the quarantine
  --quarantine-dir DIR   quarantine directory (default STATE/quarantine)
  --workers N            files scanned in parallel (default: number of CPUs)
  --all-match            report every matching signature, not only the first per file
  --follow-symlinks      follow symbolic links found while walking (roots are always followed)
  --max-depth N          archive nesting depth (default 10)
  --max-scansize SIZE    bytes unpacked per file from archives (default 1G)
  --max-ratio N          highest accepted compression ratio (default 100)

Exit status: 0 nothing found, 1 detections, 2 errors (errors win: a scan
with detections and errors exits 2; the detections are still printed).
`

// Scan implements `mamori-agent scan`. args are the arguments after "scan".
func Scan(ctx context.Context, args []string, stdout, stderr io.Writer, hooks ScanHooks) int {
	const prog = "mamori-agent scan"
	fs := newFlagSet(prog)
	enginePath := fs.String("engine", "", "engine database file")
	var excludes stringList
	fs.Var(&excludes, "exclude", "exclude glob (repeatable)")
	var maxFile, maxScan sizeFlag
	fs.Var(&maxFile, "max-filesize", "skip files larger than SIZE")
	fs.Var(&maxScan, "max-scansize", "bytes unpacked per file from archives")
	asJSON := fs.Bool("json", false, "JSON Lines output")
	doQuarantine := fs.Bool("quarantine", false, "quarantine detected files")
	qdir := fs.String("quarantine-dir", "", "quarantine directory")
	workers := fs.Int("workers", 0, "parallel files")
	allMatch := fs.Bool("all-match", false, "report all matches")
	follow := fs.Bool("follow-symlinks", false, "follow symbolic links")
	maxDepth := fs.Int("max-depth", 0, "archive nesting depth")
	maxRatio := fs.Int64("max-ratio", 0, "compression ratio limit")
	paths, err := parseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, scanUsage)
		return ExitOK
	}
	switch {
	case err != nil:
		return usageErr(stderr, prog, err)
	case len(paths) == 0:
		return usageErr(stderr, prog, errors.New("no PATH to scan"))
	case *workers < 0 || *maxDepth < 0 || *maxRatio < 0:
		return usageErr(stderr, prog, errors.New("--workers, --max-depth and --max-ratio must not be negative"))
	case *qdir != "" && !*doQuarantine:
		return usageErr(stderr, prog, errors.New("--quarantine-dir needs --quarantine"))
	}

	e := hooks.Engine
	if *enginePath != "" {
		if e, err = matcher.LoadFile(*enginePath); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", prog, err)
			return ExitError
		}
	} else if e == nil {
		if e, err = builtin.Engine(); err != nil {
			fmt.Fprintf(stderr, "%s: built-in engine: %v\n", prog, err)
			return ExitError
		}
	}
	var store *quarantine.Store
	if *doQuarantine {
		dir := *qdir
		if dir == "" {
			dir = quarantine.DefaultDir()
		}
		if store, err = quarantine.Open(dir); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", prog, err)
			return ExitError
		}
	}

	out := &scanOutput{stdout: stdout, stderr: stderr, json: *asJSON, store: store, hooks: hooks,
		quarantined: map[string]string{}, progress: isTerminal(stderr)}
	opts := scanner.Options{
		Engine: e, Excludes: excludes, MaxFileSize: maxFile.n, Workers: *workers, AllMatch: *allMatch,
		FollowSymlinks: *follow,
		Archive:        archive.Limits{MaxDepth: *maxDepth, MaxTotalSize: maxScan.n, MaxRatio: *maxRatio},
		OnDetection:    out.detection,
		OnIssue:        out.issue,
	}
	if out.progress {
		opts.OnProgress = out.showProgress
	}
	sum, err := scanner.Scan(ctx, paths, opts)
	out.clearProgress()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		sum.Errors++
	}
	sum.Errors += out.qErrors
	out.summary(sum)
	if hooks.OnSummary != nil {
		hooks.OnSummary(sum)
	}
	switch {
	case sum.Errors > 0:
		return ExitError
	case sum.Detections > 0:
		return ExitFound
	}
	return ExitOK
}

type scanOutput struct {
	stdout, stderr io.Writer
	json           bool
	store          *quarantine.Store
	hooks          ScanHooks
	quarantined    map[string]string // file -> item id ("" if it failed)
	qErrors        int64
	progress       bool
	progressShown  bool
}

// jsonDetection is one detection line of --json output.
type jsonDetection struct {
	Type          string `json:"type"`
	Path          string `json:"path"`
	PathRaw       []byte `json:"path_raw,omitempty"` // exact bytes (base64), when path is not valid UTF-8
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
	Quarantined   *bool  `json:"quarantined,omitempty"`
	QuarantineID  string `json:"quarantine_id,omitempty"`
}

func (o *scanOutput) detection(d scanner.Detection) {
	o.clearProgress()
	qid, tried := "", false
	if o.store != nil {
		tried = true
		var done bool
		if qid, done = o.quarantined[d.File]; !done {
			it, err := o.store.Quarantine(d.File, quarantine.Meta{Detection: d.Signature, EngineVersion: d.EngineVersion})
			if err != nil {
				o.qErrors++
				fmt.Fprintf(o.stderr, "%s: ERROR: quarantine failed: %v\n", displayPath(d.File), err)
			} else {
				qid = it.ID
			}
			o.quarantined[d.File] = qid
		}
	}
	if o.json {
		jd := jsonDetection{Type: "detection", Path: d.Path, File: d.File, Member: d.Member, Signature: d.Signature,
			Kind: d.Kind, MatchKind: d.MatchKind, Size: d.Size, MD5: d.MD5, SHA1: d.SHA1, SHA256: d.SHA256,
			EngineVersion: d.EngineVersion, QuarantineID: qid}
		if !utf8.ValidString(d.Path) {
			jd.PathRaw = []byte(d.Path)
		}
		if tried {
			q := qid != ""
			jd.Quarantined = &q
		}
		writeJSON(o.stdout, jd)
	} else {
		fmt.Fprintf(o.stdout, "%s: %s FOUND\n", displayPath(d.Path), d.Signature)
		if qid != "" {
			fmt.Fprintf(o.stdout, "%s: quarantined as %s\n", displayPath(d.File), qid)
		}
	}
	if o.hooks.OnDetection != nil {
		o.hooks.OnDetection(d, qid)
	}
}

func (o *scanOutput) issue(is scanner.Issue) {
	o.clearProgress()
	sev := "WARNING"
	if is.IsError() {
		sev = "ERROR"
	}
	fmt.Fprintf(o.stderr, "%s: %s: %s: %v\n", displayPath(is.Path), sev, is.Kind, is.Err)
}

func (o *scanOutput) showProgress(p scanner.Progress) {
	mb := float64(p.Bytes) / 1e6
	rate := 0.0
	if s := p.Elapsed.Seconds(); s > 0 {
		rate = mb / s
	}
	line := fmt.Sprintf("scanning: %d files, %.1f MB, %.1f MB/s, %d detections, %d errors", p.Files, mb, rate, p.Detections, p.Errors)
	fmt.Fprintf(o.stderr, "\r%-78s", line)
	o.progressShown = true
}

func (o *scanOutput) clearProgress() {
	if o.progressShown {
		fmt.Fprintf(o.stderr, "\r%78s\r", "")
		o.progressShown = false
	}
}

func (o *scanOutput) summary(s scanner.Summary) {
	secs := s.Duration.Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(s.Bytes) / 1e6 / secs
	}
	if o.json {
		writeJSON(o.stdout, map[string]any{
			"type": "summary", "summary": true, "files": s.Files, "dirs": s.Dirs, "bytes": s.Bytes,
			"seconds": secs, "mb_per_s": rate, "detections": s.Detections, "errors": s.Errors,
			"warnings": s.Warnings, "skipped": s.Skipped, "engine_version": s.EngineVersion,
		})
		return
	}
	var b strings.Builder
	b.WriteString("\n----------- SCAN SUMMARY -----------\n")
	fmt.Fprintf(&b, "Engine version: %d\nScanned files: %d\nScanned directories: %d\nData scanned: %.2f MB\n", s.EngineVersion, s.Files, s.Dirs, float64(s.Bytes)/1e6)
	fmt.Fprintf(&b, "Detections: %d\nErrors: %d\nWarnings: %d\nSkipped: %d\n", s.Detections, s.Errors, s.Warnings, s.Skipped)
	fmt.Fprintf(&b, "Time: %.3f sec (%.1f MB/s)\n", secs, rate)
	io.WriteString(o.stdout, b.String())
}

func writeJSON(w io.Writer, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	w.Write(append(b, '\n'))
}
