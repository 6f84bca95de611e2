package taskrun

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	"github.com/mamori/mamori/internal/agent/scancmd"
	"github.com/mamori/mamori/internal/engine/enginecli"
	"github.com/mamori/mamori/internal/engine/scanner"
	"github.com/mamori/mamori/internal/tasks"
)

// ScanRequest is an on-demand scan a task asks for.
type ScanRequest struct {
	RunID      string
	Paths      []string
	Exclusions []string // the task's, added to the policy's
	Action     string   // quarantine or report
	// Source names what asked for the scan in its detections; default
	// "scan task RUNID".
	Source string
}

// ScanResult is its outcome.
type ScanResult struct {
	Output     string
	ExitCode   int
	Detections int
}

func (r *Runner) scan(ctx context.Context, runID string, p tasks.Params) result {
	res, err := r.Scan(ctx, ScanRequest{RunID: runID, Paths: list(p, "paths"), Exclusions: list(p, "exclusions"), Action: str(p, "action")})
	code := res.ExitCode
	out := result{exitCode: &code, output: res.Output, state: "succeeded"}
	if out.err = scanFailure(ctx, res, err); out.err != "" {
		out.state = "failed"
	}
	return out
}

// scanFailure says why a scan failed, "" when it did not: finding threats
// is what a scan is for, so detections are a success.
func scanFailure(ctx context.Context, res ScanResult, err error) string {
	switch {
	case err != nil:
		return err.Error()
	case ctx.Err() != nil:
		return "scan stopped"
	case res.ExitCode == enginecli.ExitError:
		return "the scan had errors"
	}
	return ""
}

// builtinScan scans with the agent's engine and the protection settings in
// effect (policy and local), reporting every detection through the outbox.
func (r *Runner) builtinScan(ctx context.Context, req ScanRequest) (ScanResult, error) {
	var args []string
	action := req.Action
	if r.Config != nil {
		s := r.Config.Settings()
		for _, e := range s.ScanExclusions {
			args = append(args, "--exclude", e)
		}
		if s.MaxFileSize > 0 {
			args = append(args, "--max-filesize", strconv.FormatInt(s.MaxFileSize, 10))
		}
		if s.ArchiveMaxDepth > 0 {
			args = append(args, "--max-depth", strconv.Itoa(s.ArchiveMaxDepth))
		}
		if s.ArchiveMaxScanSize > 0 {
			args = append(args, "--max-scansize", strconv.FormatInt(s.ArchiveMaxScanSize, 10))
		}
		if s.ArchiveMaxRatio > 0 {
			args = append(args, "--max-ratio", strconv.Itoa(s.ArchiveMaxRatio))
		}
		if action == "" {
			action = s.ActionOnDetection
		}
	}
	for _, e := range req.Exclusions {
		args = append(args, "--exclude", e)
	}
	if action == "quarantine" {
		args = append(args, "--quarantine", "--quarantine-dir", filepath.Join(r.StateDir, "quarantine"))
	}
	args = append(append(args, "--"), req.Paths...)
	hooks := enginecli.ScanHooks{}
	if e, err := scancmd.LoadEngine(r.StateDir); e != nil {
		hooks.Engine = e
	} else if err != nil {
		r.Log.Warn("the agent's engine is unusable; scanning with the built-in engine", "err", err)
	}
	source := req.Source
	if source == "" {
		source = "scan task " + req.RunID
	}
	found := 0
	var outboxErr error
	hooks.OnDetection = func(d scanner.Detection, qid string) {
		found++
		ev := scancmd.DetectionEvent{Path: d.Path, File: d.File, Member: d.Member, Signature: d.Signature, Kind: d.Kind,
			MatchKind: d.MatchKind, Size: d.Size, MD5: d.MD5, SHA1: d.SHA1, SHA256: d.SHA256,
			EngineVersion: d.EngineVersion, Action: "reported", QuarantineID: qid, Source: source}
		if qid != "" {
			ev.Action = "quarantined"
		}
		if _, err := r.Outbox.Append("detection.found", ev); err != nil && outboxErr == nil {
			outboxErr = err
		}
	}
	out := &cappedBuffer{max: tasks.MaxOutput - 1024}
	code := enginecli.Scan(ctx, args, out, io.MultiWriter(out), hooks)
	res := ScanResult{Output: out.String(), ExitCode: code, Detections: found}
	if outboxErr != nil {
		return res, fmt.Errorf("detections could not be recorded for the server: %v", outboxErr)
	}
	return res, nil
}
