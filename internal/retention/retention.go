// Package retention deletes what has outlived the retention administrators
// set (GET/PUT /api/v1/settings/retention): computer and server events,
// detections resolved long ago, finished task runs with the files they
// uploaded. It runs on one server (the cluster's leader), in small batches
// so check-ins keep their turn at the store. Audit entries have their own
// retention (the security policy's audit_retention_days).
package retention

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

// SettingsKey is the store setting holding Settings.
const SettingsKey = "retention"

// Defaults, in days, and the bound of every field.
const (
	DefaultEventsDays     = 30
	DefaultDetectionsDays = 90
	DefaultTaskRunsDays   = 90
	MaxDays               = 3650
)

// Settings are the retention periods in days; zero takes the default.
type Settings struct {
	// EventsDays keeps computer events (agent events, detections and task
	// results as events) and server events (connections, group changes).
	EventsDays int `json:"events_days"`
	// DetectionsDays keeps resolved detections; unresolved ones are never
	// deleted.
	DetectionsDays int `json:"detections_days"`
	// TaskRunsDays keeps finished task runs and their uploaded files; runs
	// not finished are never deleted.
	TaskRunsDays int `json:"task_runs_days"`
}

// Defaults fills zero fields.
func (s Settings) Defaults() Settings {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&s.EventsDays, DefaultEventsDays)
	def(&s.DetectionsDays, DefaultDetectionsDays)
	def(&s.TaskRunsDays, DefaultTaskRunsDays)
	return s
}

// Validate checks settings given by an administrator.
func (s Settings) Validate() error {
	for name, v := range map[string]int{"events_days": s.EventsDays, "detections_days": s.DetectionsDays, "task_runs_days": s.TaskRunsDays} {
		if v < 0 || v > MaxDays {
			return errcode.New(errcode.Invalid, "%s must be between 1 and %d days (0: the default)", name, MaxDays)
		}
	}
	return nil
}

// SettingsStore reads and writes the setting.
type SettingsStore interface {
	store.SettingReader
	store.SettingWriter
}

// Load returns the stored settings with defaults, and their version (0
// when never set).
func Load(ctx context.Context, st SettingsStore) (Settings, int64, error) {
	var s Settings
	v, err := store.LoadJSONSetting(ctx, st, SettingsKey, &s)
	if err != nil {
		return Settings{}, 0, err
	}
	return s.Defaults(), v, nil
}

// Save validates and writes s if the stored version is still version.
func Save(ctx context.Context, st SettingsStore, s Settings, version int64) (int64, error) {
	if err := s.Validate(); err != nil {
		return 0, err
	}
	return store.SaveJSONSetting(ctx, st, SettingsKey, s.Defaults(), version)
}

// Store is what the pruner deletes from (internal/store).
type Store interface {
	SettingsStore
	DeleteComputerEventsBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	DeleteServerEventsBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	DeleteResolvedDetectionsBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	DeleteFinishedRunsBefore(ctx context.Context, t time.Time, limit int) (int64, []string, error)
}

// Kinds of what is deleted, as Result and OnDeleted name them.
const (
	KindComputerEvents = "computer_events"
	KindServerEvents   = "server_events"
	KindDetections     = "detections"
	KindTaskRuns       = "task_runs"
	KindFiles          = "files"
)

// Result counts what one pass deleted, by kind.
type Result map[string]int64

// Pruner deletes what outlived the retention, every Every.
type Pruner struct {
	Store         Store
	AttachmentDir string // where task runs' uploads are ("" none)
	Log           *slog.Logger
	Now           func() time.Time // default time.Now
	Delay         time.Duration    // before the first pass (default 1 min: after a start, agents come first)
	Every         time.Duration    // between passes (default 1 h)
	Batch         int              // rows per statement (default 1000)
	Pause         time.Duration    // between statements (default 20 ms)
	// OnDeleted hears what each statement deleted (metrics).
	OnDeleted func(kind string, n int64)
}

func (p *Pruner) defaults() {
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Log == nil {
		p.Log = slog.New(slog.DiscardHandler)
	}
	if p.Delay <= 0 {
		p.Delay = time.Minute
	}
	if p.Every <= 0 {
		p.Every = time.Hour
	}
	if p.Batch <= 0 {
		p.Batch = 1000
	}
	if p.Pause <= 0 {
		p.Pause = 20 * time.Millisecond
	}
}

// Run makes a pass after Delay and then every Every, until ctx ends.
func (p *Pruner) Run(ctx context.Context) {
	p.defaults()
	wait := p.Delay
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = p.Every
		res, err := p.Pass(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			p.Log.Warn("retention pass", "err", err)
		case len(res) > 0:
			p.Log.Info("retention removed old records", "computer_events", res[KindComputerEvents], "server_events", res[KindServerEvents],
				"detections", res[KindDetections], "task_runs", res[KindTaskRuns], "files", res[KindFiles])
		}
	}
}

// Pass deletes, once, everything that outlived the current settings.
func (p *Pruner) Pass(ctx context.Context) (Result, error) {
	p.defaults()
	s, _, err := Load(ctx, p.Store)
	if err != nil {
		return nil, err
	}
	now := p.Now()
	ago := func(days int) time.Time { return now.Add(-time.Duration(days) * 24 * time.Hour) }
	res := Result{}
	steps := []struct {
		kind string
		del  func() (int64, error)
	}{
		{KindComputerEvents, func() (int64, error) { return p.Store.DeleteComputerEventsBefore(ctx, ago(s.EventsDays), p.Batch) }},
		{KindServerEvents, func() (int64, error) { return p.Store.DeleteServerEventsBefore(ctx, ago(s.EventsDays), p.Batch) }},
		{KindDetections, func() (int64, error) {
			return p.Store.DeleteResolvedDetectionsBefore(ctx, ago(s.DetectionsDays), p.Batch)
		}},
		{KindTaskRuns, func() (int64, error) {
			n, files, err := p.Store.DeleteFinishedRunsBefore(ctx, ago(s.TaskRunsDays), p.Batch)
			if err == nil { // the runs are gone: their files may go
				p.count(res, KindFiles, p.removeFiles(files))
			}
			return n, err
		}},
	}
	for _, st := range steps {
		for {
			n, err := st.del()
			p.count(res, st.kind, n)
			if err != nil {
				return res, err
			}
			if n < int64(p.Batch) {
				break
			}
			select { // the store's other writers take their turn
			case <-ctx.Done():
				return res, ctx.Err()
			case <-time.After(p.Pause):
			}
		}
	}
	return res, nil
}

func (p *Pruner) count(res Result, kind string, n int64) {
	if n == 0 {
		return
	}
	res[kind] += n
	if p.OnDeleted != nil {
		p.OnDeleted(kind, n)
	}
}

// removeFiles deletes uploads of deleted runs (names the store recorded;
// only their base name is used, inside AttachmentDir).
func (p *Pruner) removeFiles(names []string) int64 {
	var n int64
	for _, name := range names {
		if p.AttachmentDir == "" || name == "" {
			continue
		}
		err := os.Remove(filepath.Join(p.AttachmentDir, filepath.Base(name)))
		switch {
		case err == nil:
			n++
		case !errors.Is(err, fs.ErrNotExist):
			p.Log.Warn("removing an old task run's upload", "file", name, "err", err)
		}
	}
	return n
}
