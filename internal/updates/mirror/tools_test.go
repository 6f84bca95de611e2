package mirror

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/updates/client"
	"github.com/mamori/mamori/internal/updates/scheme"
)

// needTool returns the path of a binary, skipping the test when it is
// missing (failing when MAMORI_REQUIRE_TOOLS is set).
func needTool(t *testing.T, name string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("MAMORI_REQUIRE_TOOLS") != "" {
		t.Fatalf("%s is required (MAMORI_REQUIRE_TOOLS is set): apt-get install %s", name, name)
	}
	t.Skipf("%s not installed", name)
	return ""
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// worldReadable makes a test directory and its parents traversable by the
// unprivileged users nginx and squid switch to.
func worldReadable(t *testing.T, dir string) {
	for d := dir; d != "/" && d != "." && strings.HasPrefix(d, os.TempDir()); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
}

func startDaemon(t *testing.T, name string, args []string, ready string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	// helpers a daemon starts may keep the output pipe open after it exits
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", ready, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not start: %s", name, out.String())
}

// The mirror directory is a plain static tree: nginx serving it is a valid
// update source.
func TestMirrorDirectory_ServedByNginx(t *testing.T) {
	nginx := needTool(t, "nginx")
	e := newMenv(t, 300)
	v := e.r.PublishNext(t, 10, 1)
	m, _ := e.mirror(Config{})
	mustSync(t, m)
	dir := t.TempDir()
	worldReadable(t, m.Dir())
	worldReadable(t, dir)
	addr := freeAddr(t)
	conf := filepath.Join(dir, "nginx.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path %[1]s/b; proxy_temp_path %[1]s/p; fastcgi_temp_path %[1]s/f; uwsgi_temp_path %[1]s/u; scgi_temp_path %[1]s/s;
  server { listen %[2]s; root %[3]s; }
}
`, dir, addr, m.Dir())), 0o644)
	startDaemon(t, nginx, []string{"-p", dir, "-c", conf, "-g", "daemon off;"}, addr)
	r, err := agentUpdate(t, t.TempDir(), e.r.Root, "http://"+addr)
	if err != nil || r.To != v {
		t.Fatalf("update from nginx: %+v %v", r, err)
	}
	// the private state is not part of what a static server should expose,
	// but nothing in it is secret: the mirror holds no keys
	if _, err := os.Stat(filepath.Join(m.Dir(), ".mirror", "tuf", "root.json")); err != nil {
		t.Fatal(err)
	}
}

// Squid in front of the mirror caches what it serves: a second agent behind
// the same Squid gets the engine without the mirror sending it again.
func TestMirror_BehindSquidTheEngineIsFetchedOnce(t *testing.T) {
	squid := needTool(t, "squid")
	e := newMenv(t, 2000)
	v := e.r.PublishNext(t, 10, 1)
	m, _ := e.mirror(Config{})
	mustSync(t, m)
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path]++
		mu.Unlock()
		m.Handler().ServeHTTP(w, r)
	}))
	defer srv.Close()
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	worldReadable(t, dir)
	addr := freeAddr(t)
	conf := filepath.Join(dir, "squid.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`http_port %[2]s
pid_filename %[1]s/squid.pid
cache_log %[1]s/cache.log
access_log none
cache_store_log none
coredump_dir %[1]s
cache_effective_user proxy
cache_mem 64 MB
maximum_object_size_in_memory 16 MB
maximum_object_size 64 MB
acl local src 127.0.0.0/8
http_access allow local
http_access deny all
shutdown_lifetime 1 seconds
`, dir, addr)), 0o644)
	startDaemon(t, squid, []string{"-N", "-f", conf}, addr)
	update := func() client.Result {
		d, err := client.New(client.Config{StateDir: t.TempDir(), Sources: []string{srv.URL}, TrustedRoot: e.r.Root, Proxy: "http://" + addr, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		r, err := d.Update(context.Background(), client.UpdateOptions{})
		if err != nil || r.To != v {
			t.Fatalf("update through squid: %+v %v", r, err)
		}
		return r
	}
	update()
	var full string
	for n, p := range targetNames(t, e.r) {
		if p == scheme.FullPath(v) {
			full = "/" + n
		}
	}
	mu.Lock()
	first := seen[full]
	mu.Unlock()
	if first != 1 {
		t.Fatalf("the mirror sent the engine %d times to the first agent", first)
	}
	update()
	mu.Lock()
	defer mu.Unlock()
	if seen[full] != 1 {
		t.Fatalf("the mirror sent the engine again (%d times): Squid did not cache it", seen[full])
	}
}
