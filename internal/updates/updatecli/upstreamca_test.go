package updatecli

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mamori/mamori/internal/updates/updatestest"
)

// A mirror syncs from an https:// upstream whose certificate a private CA
// signed (a management server's built-in mirror) once --upstream-ca names
// that CA; without it the certificate is refused; a file that holds no
// certificate is a clear error.
func TestMirrorSync_HTTPSUpstreamSignedByAPrivateCA(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	pin, _ := jsonOf(t, must(t, repoCmd("init", "--repo", repoDir, "--json"), 0))["root_sha256"].(string)
	sigs := filepath.Join(dir, "sigs")
	writeSigs(t, sigs, updatestest.NewEvolver(3, 50))
	must(t, repoCmd("publish", "--repo", repoDir, "--from", sigs), 0)
	srv := httptest.NewTLSServer(http.FileServer(http.Dir(filepath.Join(repoDir, "public"))))
	defer srv.Close()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}

	refused := must(t, mirrorCmd("sync", "--upstream", srv.URL, "--dir", filepath.Join(dir, "m1"), "--root-sha256", pin), 1)
	if !strings.Contains(refused.stderr, "certificate") {
		t.Fatalf("without --upstream-ca: %q", refused.stderr)
	}
	res := jsonOf(t, must(t, mirrorCmd("sync", "--upstream", srv.URL, "--upstream-ca", ca, "--dir", filepath.Join(dir, "m2"), "--root-sha256", pin, "--json"), 0))
	if res["engine_version"].(float64) != 2 {
		t.Fatalf("sync through the private CA: %v", res)
	}
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o644)
	if r := must(t, mirrorCmd("sync", "--upstream", srv.URL, "--upstream-ca", notPEM, "--dir", filepath.Join(dir, "m3"), "--root-sha256", pin), 2); !strings.Contains(r.stderr, "holds no PEM certificate") {
		t.Fatalf("a file without certificates: %q", r.stderr)
	}
}
