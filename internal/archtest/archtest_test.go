// Package archtest guards the shape of the module: which packages may import
// which. Cheap, and it keeps the house standing.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/mamori/mamori/"

func deps(t *testing.T, pkg string, tags ...string) []string {
	t.Helper()
	args := []string{"list", "-deps", "-f", "{{.ImportPath}}"}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	out, err := exec.Command("go", append(args, pkg)...).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

func TestAgentProtoImportsNothingInternal(t *testing.T) {
	for _, d := range deps(t, module+"internal/agentproto") {
		if strings.HasPrefix(d, module) && d != module+"internal/agentproto" {
			t.Errorf("internal/agentproto imports %s; the wire package must stand alone", d)
		}
	}
}

func TestAgentBinaryDoesNotLinkServerSide(t *testing.T) {
	forbidden := []string{module + "internal/store", module + "internal/server", module + "internal/httpapi",
		module + "internal/auth", "modernc.org/sqlite", "github.com/pressly/goose/v3"}
	for _, goos := range []string{"linux", "windows", "darwin"} {
		cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", module+"cmd/mamori-agent")
		cmd.Env = append(cmd.Environ(), "GOOS="+goos, "CGO_ENABLED=0")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list for %s: %v", goos, err)
		}
		for _, d := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				if d == f {
					t.Errorf("mamori-agent (%s) links %s", goos, d)
				}
			}
		}
	}
}

func TestEngineDoesNotDependOnConnectionCode(t *testing.T) {
	out, err := exec.Command("go", "list", module+"internal/engine/...").Output()
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		t.Skip("no engine packages yet")
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, d := range deps(t, pkg) {
			if strings.HasPrefix(d, module+"internal/agent") || strings.HasPrefix(d, module+"internal/server") || d == "google.golang.org/grpc" {
				t.Errorf("%s depends on %s; the protection engine must stand alone", pkg, d)
			}
		}
	}
}
