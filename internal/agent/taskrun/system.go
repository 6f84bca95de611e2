package taskrun

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// SystemPower restarts and shuts down with the operating system's command,
// or with Command when set: it is run with the arguments ACTION SECONDS
// REASON (ACTION restart or shutdown) — for installations with their own
// procedure, and for tests.
type SystemPower struct {
	Command string
}

func (p SystemPower) run(ctx context.Context, action string, delay time.Duration, reason string) (string, error) {
	secs := int(delay.Round(time.Second) / time.Second)
	var name string
	var args []string
	switch {
	case p.Command != "":
		name, args = p.Command, []string{action, strconv.Itoa(secs), reason}
	case runtime.GOOS == "windows":
		flag := "/r"
		if action == "shutdown" {
			flag = "/s"
		}
		name, args = "shutdown.exe", []string{flag, "/t", strconv.Itoa(secs), "/c", reason}
	case runtime.GOOS == "linux" || runtime.GOOS == "darwin" || runtime.GOOS == "freebsd":
		flag := "-r"
		if action == "shutdown" {
			flag = "-h"
		}
		mins := (secs + 59) / 60 // shutdown(8) counts minutes
		when := "now"
		if mins > 0 {
			when = "+" + strconv.Itoa(mins)
		}
		name, args = "shutdown", []string{flag, when}
		if reason != "" {
			args = append(args, reason)
		}
	default:
		return "", fmt.Errorf("%s is not supported on %s", action, runtime.GOOS)
	}
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	text := strings.TrimSpace(string(out))
	if err != nil {
		return text, fmt.Errorf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return strings.TrimSpace(fmt.Sprintf("%s scheduled in %s. %s", action, time.Duration(secs)*time.Second, text)), nil
}

// Restart implements Power.
func (p SystemPower) Restart(ctx context.Context, delay time.Duration, reason string) (string, error) {
	return p.run(ctx, "restart", delay, reason)
}

// Shutdown implements Power.
func (p SystemPower) Shutdown(ctx context.Context, delay time.Duration, reason string) (string, error) {
	return p.run(ctx, "shutdown", delay, reason)
}

// FileNotifier records messages for the computer's users in
// STATE/messages.jsonl (what a tray application or login script shows),
// logs them, and runs Command (ARGS: LEVEL TITLE MESSAGE) when set, e.g. a
// wrapper around notify-send or wall.
type FileNotifier struct {
	StateDir string
	Command  string
	Log      *slog.Logger
}

// Display implements Notifier.
func (n FileNotifier) Display(ctx context.Context, title, message, level string) error {
	line, _ := json.Marshal(map[string]string{"time": time.Now().UTC().Format(time.RFC3339), "level": level, "title": title, "message": message})
	f, err := os.OpenFile(filepath.Join(n.StateDir, "messages.jsonl"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.Write(append(line, '\n'))
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return werr
	}
	if n.Log != nil {
		n.Log.Warn("message from the administrator", "title", title, "level", level, "message", message)
	}
	if n.Command != "" {
		if out, err := exec.CommandContext(ctx, n.Command, level, title, message).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", n.Command, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}
