//go:build unix

package taskrun

import (
	"os/exec"
	"syscall"
)

// setProcessGroup starts the command in its own process group and kills the
// whole group on cancel, so a shell's children do not outlive the run.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
