package agentcli

import (
	"os/exec"
	"strings"
	"testing"
)

// The agent links only agent-side update code: no server, store, publisher,
// mirror or metrics packages, for every platform it ships on, without cgo.
func TestAgentSidePackagesStayLean(t *testing.T) {
	const module = "github.com/mamori/mamori/"
	forbidden := []string{module + "internal/store", module + "internal/server", module + "internal/httpapi", module + "internal/auth",
		module + "internal/updates/mirror", module + "internal/updates/repo", module + "internal/updates/updatecli",
		"modernc.org/sqlite", "github.com/pressly/goose/v3", "github.com/prometheus/client_golang/prometheus"}
	pkgs := []string{module + "internal/updates/agentcli", module + "internal/updates/updater", module + "internal/updates/client"}
	for _, goos := range []string{"linux", "windows", "darwin"} {
		cmd := exec.Command("go", append([]string{"list", "-deps", "-f", "{{.ImportPath}}"}, pkgs...)...)
		cmd.Env = append(cmd.Environ(), "GOOS="+goos, "CGO_ENABLED=0")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list for %s: %v", goos, err)
		}
		for _, d := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				if d == f {
					t.Errorf("agent-side update packages (%s) link %s", goos, d)
				}
			}
		}
	}
}
