package taskrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"time"

	"github.com/mamori/mamori/internal/tasks"
)

// cappedBuffer keeps the first max bytes written and counts the rest.
type cappedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	max     int
	dropped int64
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.max - b.buf.Len()
	if room > 0 {
		n := min(room, len(p))
		b.buf.Write(p[:n])
		b.dropped += int64(len(p) - n)
	} else {
		b.dropped += int64(len(p))
	}
	return len(p), nil
}

func (b *cappedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := clip(b.buf.String(), b.max)
	if b.dropped > 0 {
		s += fmt.Sprintf("\n[%d more bytes of output not kept]", b.dropped)
	}
	return s
}

// shell returns the command line to run s with the platform's shell.
func shell(s string) (string, []string) {
	if runtime.GOOS == "windows" {
		return "cmd.exe", []string{"/C", s}
	}
	return "/bin/sh", []string{"-c", s}
}

// runCommand runs the command of a run_command run: stdout and stderr
// together, the first max_output bytes kept, killed (with its process
// group where the platform allows) after timeout or on cancel.
func runCommand(ctx context.Context, p tasks.Params) result {
	timeout, err := time.ParseDuration(str(p, "timeout"))
	if err != nil || timeout <= 0 {
		timeout = time.Minute
	}
	max := int(num(p, "max_output"))
	if max <= 0 || max > tasks.MaxOutput {
		max = tasks.MaxOutput
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	name, args := shell(str(p, "command"))
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = str(p, "working_directory")
	if cmd.Dir != "" {
		if st, err := os.Stat(cmd.Dir); err != nil || !st.IsDir() {
			return failed("working directory %s does not exist", cmd.Dir)
		}
	}
	out := &cappedBuffer{max: max}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Stdin = nil
	setProcessGroup(cmd)
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	code := -1
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	res := result{exitCode: &code, output: out.String()}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		res.state, res.err = "failed", fmt.Sprintf("killed after the timeout of %s", timeout)
	case ctx.Err() != nil:
		res.state, res.err = "failed", "killed"
	case err != nil && code == -1:
		res.state, res.err = "failed", err.Error()
	case code != 0:
		res.state, res.err = "failed", fmt.Sprintf("exit status %d", code)
	default:
		res.state = "succeeded"
	}
	return res
}
