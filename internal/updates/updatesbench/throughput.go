package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mamori/mamori/internal/updates/repo"
	"github.com/mamori/mamori/internal/updates/scheme"
	"github.com/mamori/mamori/internal/updates/source"
	"github.com/mamori/mamori/internal/updates/trust"
	"github.com/mamori/mamori/internal/updates/updatestest"
)

const nginxConf = `worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/tmp-body;
  proxy_temp_path %[1]s/tmp-proxy;
  fastcgi_temp_path %[1]s/tmp-fastcgi;
  uwsgi_temp_path %[1]s/tmp-uwsgi;
  scgi_temp_path %[1]s/tmp-scgi;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  keepalive_timeout 60;
  open_file_cache max=10000 inactive=60s;
  types { application/json json; }
  default_type application/octet-stream;
  server {
    listen %[2]s;
    root %[3]s;
    location / { add_header Cache-Control "public, max-age=31536000, immutable"; }
  }
}
`

// load runs conc keep-alive clients fetching path for d and returns bytes/s
// and requests/s.
func load(ctx context.Context, base, path string, size int64, conc int, d time.Duration) (float64, float64, error) {
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	var bytes, reqs atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				resp, err := hc.Get(base + path)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || n != size {
					firstErr.CompareAndSwap(nil, fmt.Errorf("%s: status %d, %d bytes (want %d)", base+path, resp.StatusCode, n, size))
					return
				}
				bytes.Add(n)
				reqs.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	if e := firstErr.Load(); e != nil {
		return 0, 0, e.(error)
	}
	return float64(bytes.Load()) / el, float64(reqs.Load()) / el, nil
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func throughput(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("throughput", flag.ContinueOnError)
	dir := fs.String("dir", "/tmp/mamori-bench-throughput", "work directory (emptied; must be readable by nginx's workers)")
	initial := fs.Int("initial", 500000, "records of the full engine (its size sets the large file)")
	seconds := fs.Duration("duration", 8*time.Second, "length of each run")
	rounds := fs.Int("rounds", 3, "rounds (mirror and nginx interleaved); medians are reported")
	nginxBin := fs.String("nginx", "nginx", "nginx binary")
	out := fs.String("json", "", "write the results as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := exec.LookPath(*nginxBin); err != nil {
		return fmt.Errorf("nginx not found (apt-get install -y nginx): %v", err)
	}
	os.RemoveAll(*dir)
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	os.Chmod(*dir, 0o755)
	r, _, err := repo.Init(filepath.Join(*dir, "repo"), repo.DefaultSettings(), repo.Options{Logger: quiet})
	if err != nil {
		return err
	}
	evo := updatestest.NewEvolver(21, *initial)
	p1, err := r.Publish(evo.Records(), 0)
	if err != nil {
		return err
	}
	p2, err := r.Publish(evo.Step(2500, 20), 0)
	if err != nil {
		return err
	}
	r.Close()
	rootFile := filepath.Join(*dir, "repo", "public", "metadata", "1.root.json")
	root, _ := os.ReadFile(rootFile)
	mdir := filepath.Join(*dir, "mirror")
	mctx, mcancel := context.WithCancel(ctx)
	defer mcancel()
	cmd, maddr, err := startMirror(mctx, "--upstream", filepath.Join(*dir, "repo"), "--dir", mdir, "--root", rootFile,
		"--listen", "127.0.0.1:0", "--max-conns", "-1", "--sync-interval", "24h")
	if err != nil {
		return err
	}
	defer func() { mcancel(); cmd.Wait() }()
	// the files both servers serve
	st, err := trust.Refresh(ctx, source.NewDir(filepath.Join(*dir, "repo", "public"), nil), trust.Options{CacheDir: filepath.Join(*dir, "tuf"), InitialRoot: root})
	if err != nil {
		return err
	}
	type file struct {
		name string
		path string
		size int64
	}
	pick := func(target string) file {
		tf := st.Targets()[target]
		n, _ := trust.RemotePath(tf)
		return file{name: target, path: "/" + n, size: tf.Length}
	}
	ts, _ := os.ReadFile(filepath.Join(mdir, "metadata", "timestamp.json"))
	files := []struct {
		f    file
		conc int
	}{
		{pick(scheme.FullPath(p2.Version)), 8},
		{pick(scheme.DeltaPath(p1.Version, p2.Version)), 32},
		{file{name: "timestamp.json", path: "/metadata/timestamp.json", size: int64(len(ts))}, 32},
	}
	// nginx on the same directory
	ndir := filepath.Join(*dir, "nginx")
	os.MkdirAll(ndir, 0o755)
	naddr, err := freePort()
	if err != nil {
		return err
	}
	conf := filepath.Join(ndir, "nginx.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, ndir, naddr, mdir)), 0o644)
	ncmd := exec.CommandContext(mctx, *nginxBin, "-p", ndir, "-c", conf, "-g", "daemon off;")
	ncmd.Stderr = os.Stderr
	// SIGTERM lets the nginx master stop its workers (SIGKILL would orphan them)
	ncmd.Cancel = func() error { return ncmd.Process.Signal(syscall.SIGTERM) }
	ncmd.WaitDelay = 10 * time.Second
	if err := ncmd.Start(); err != nil {
		return err
	}
	defer func() { mcancel(); ncmd.Wait() }()
	for i := 0; i < 100; i++ {
		if resp, err := http.Get("http://" + naddr + "/metadata/timestamp.json"); err == nil {
			resp.Body.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	type result struct {
		File          string    `json:"file"`
		Size          int64     `json:"size"`
		Conc          int       `json:"connections"`
		MirrorBps     []float64 `json:"mirror_bytes_per_s"`
		NginxBps      []float64 `json:"nginx_bytes_per_s"`
		MirrorRps     []float64 `json:"mirror_requests_per_s"`
		NginxRps      []float64 `json:"nginx_requests_per_s"`
		MedianRatio   float64   `json:"median_ratio"`
		MirrorMedMBps float64   `json:"mirror_median_mb_per_s"`
		NginxMedMBps  float64   `json:"nginx_median_mb_per_s"`
		MirrorMedRps  float64   `json:"mirror_median_req_per_s"`
		NginxMedRps   float64   `json:"nginx_median_req_per_s"`
	}
	var results []*result
	for _, f := range files {
		results = append(results, &result{File: f.f.name, Size: f.f.size, Conc: f.conc})
	}
	for round := 0; round < *rounds; round++ {
		for i, f := range files {
			order := []string{"mirror", "nginx"}
			if round%2 == 1 {
				order = []string{"nginx", "mirror"}
			}
			for _, srv := range order {
				base := "http://" + maddr
				if srv == "nginx" {
					base = "http://" + naddr
				}
				// warm up, then measure
				if _, _, err := load(ctx, base, f.f.path, f.f.size, f.conc, time.Second); err != nil {
					return err
				}
				bps, rps, err := load(ctx, base, f.f.path, f.f.size, f.conc, *seconds)
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "round %d %-6s %-34s %8.1f MB/s %9.0f req/s\n", round+1, srv, f.f.name, bps/1e6, rps)
				if srv == "mirror" {
					results[i].MirrorBps = append(results[i].MirrorBps, bps)
					results[i].MirrorRps = append(results[i].MirrorRps, rps)
				} else {
					results[i].NginxBps = append(results[i].NginxBps, bps)
					results[i].NginxRps = append(results[i].NginxRps, rps)
				}
			}
		}
	}
	fmt.Printf("mirror vs nginx on the same files, %d rounds of %s, medians:\n\n", *rounds, *seconds)
	fmt.Println("| file | size | connections | mirror MB/s | nginx MB/s | mirror req/s | nginx req/s | mirror ÷ nginx |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		var ratios []float64
		for i := range r.MirrorBps {
			ratios = append(ratios, r.MirrorBps[i]/r.NginxBps[i])
		}
		r.MedianRatio = median(ratios)
		r.MirrorMedMBps, r.NginxMedMBps = median(r.MirrorBps)/1e6, median(r.NginxBps)/1e6
		r.MirrorMedRps, r.NginxMedRps = median(r.MirrorRps), median(r.NginxRps)
		fmt.Printf("| %s | %s | %d | %.1f | %.1f | %.0f | %.0f | %.2f |\n", r.File, humanSize(r.Size), r.Conc, r.MirrorMedMBps, r.NginxMedMBps, r.MirrorMedRps, r.NginxMedRps, r.MedianRatio)
	}
	nv, _ := exec.Command(*nginxBin, "-v").CombinedOutput()
	if *out != "" {
		b, _ := json.MarshalIndent(map[string]any{"machine": machine(), "nginx": strings.TrimSpace(string(nv)), "results": results}, "", "  ")
		return os.WriteFile(*out, b, 0o644)
	}
	return nil
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " B"
}
