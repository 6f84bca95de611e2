// Package logging builds the structured logger (log/slog) both binaries use.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// New returns a logger writing to w at level (debug, info, warn, error) in
// format (text or json).
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	l, _, err := NewVar(w, level, format)
	return l, err
}

// NewVar is New with the level in a LevelVar the caller may change later
// (the agent follows its configuration's log level).
func NewVar(w io.Writer, level, format string) (*slog.Logger, *slog.LevelVar, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, fmt.Errorf("log level %q must be debug, info, warn or error", level)
	}
	lv := &slog.LevelVar{}
	lv.Set(l)
	lg, err := handler(w, lv, format)
	return lg, lv, err
}

func handler(w io.Writer, lv *slog.LevelVar, format string) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q must be text or json", format)
}
