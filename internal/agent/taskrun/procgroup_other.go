//go:build !unix

package taskrun

import "os/exec"

// setProcessGroup: elsewhere the command's own process is killed.
func setProcessGroup(cmd *exec.Cmd) {}
