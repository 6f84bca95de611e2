package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mamori/mamori/internal/updates/client"
	"github.com/mamori/mamori/internal/updates/repo"
	"github.com/mamori/mamori/internal/updates/updatestest"
)

// startMirror starts "updatesbench mirror serve ..." as a child process
// and returns its address once it is healthy (and its metrics address, when
// --metrics-listen is among args).
func startMirror(ctx context.Context, args ...string) (*exec.Cmd, string, error) {
	cmd, addr, _, err := startMirrorMetrics(ctx, args...)
	return cmd, addr, err
}

func startMirrorMetrics(ctx context.Context, args ...string) (*exec.Cmd, string, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", "", err
	}
	cmd := exec.CommandContext(ctx, self, append([]string{"mirror", "serve"}, args...)...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, "", "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", "", err
	}
	re := regexp.MustCompile(` on ([0-9.:\[\]]+) \(upstream`)
	reM := regexp.MustCompile(`metrics on ([0-9.:\[\]]+)`)
	addrc, maddrc := make(chan string, 1), make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addrc <- m[1]
			}
			if m := reM.FindStringSubmatch(sc.Text()); m != nil {
				maddrc <- m[1]
			}
		}
	}()
	var addr, maddr string
	select {
	case addr = <-addrc:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		return nil, "", "", fmt.Errorf("the mirror did not start")
	}
	select {
	case maddr = <-maddrc:
	default:
	}
	_, port, _ := net.SplitHostPort(addr)
	addr = "127.0.0.1:" + port
	health := addr
	if maddr != "" {
		health = maddr
	}
	deadline := time.Now().Add(120 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + health + "/-/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return cmd, addr, health, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd.Process.Kill()
	return nil, "", "", fmt.Errorf("the mirror did not sync")
}

// scrape reads counters from the mirror's /-/metrics.
func scrape(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/-/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		name := f[0]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err == nil {
			out[name] += v
		}
	}
	return out, nil
}

func herd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("herd", flag.ContinueOnError)
	clients := fs.Int("clients", 10000, "concurrent clients")
	rate := fs.Int64("rate", 50_000_000, "mirror cap, bytes/s")
	maxConns := fs.Int("max-conns", 512, "mirror connection limit")
	initial := fs.Int("initial", 100000, "records in the installed engine")
	add := fs.Int("add", 18000, "records the new release adds")
	addrs := fs.Int("addrs", 32, "loopback source addresses the clients spread over")
	dir := fs.String("dir", "/dev/shm/mamori-bench-herd", "work directory (emptied; tmpfs keeps downloads off the disk)")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after")
	out := fs.String("json", "", "write the results as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	os.RemoveAll(*dir)
	settings := repo.DefaultSettings()
	r, _, err := repo.Init(filepath.Join(*dir, "repo"), settings, repo.Options{Logger: quiet})
	if err != nil {
		return err
	}
	evo := updatestest.NewEvolver(11, *initial)
	p1, err := r.Publish(evo.Records(), 0)
	if err != nil {
		return err
	}
	p2, err := r.Publish(evo.Step(*add, 50), 0)
	if err != nil {
		return err
	}
	r.Close()
	fmt.Fprintf(os.Stderr, "repository: engine %d (%d records) → %d, delta %d bytes\n", p1.Version, p1.Records, p2.Version, p2.DeltaBytes)
	rootFile := filepath.Join(*dir, "repo", "public", "metadata", "1.root.json")
	root, _ := os.ReadFile(rootFile)
	mctx, mcancel := context.WithCancel(ctx)
	defer mcancel()
	// metrics on their own listener, so the sampler is not stuck in the
	// herd's accept queue
	cmd, addr, maddr, err := startMirrorMetrics(mctx, "--upstream", filepath.Join(*dir, "repo"), "--dir", filepath.Join(*dir, "mirror"), "--root", rootFile,
		"--listen", "0.0.0.0:0", "--metrics-listen", "127.0.0.1:0", "--max-conns", strconv.Itoa(*maxConns), "--rate", strconv.FormatInt(*rate, 10), "--sync-interval", "24h")
	if err != nil {
		return err
	}
	defer func() { mcancel(); cmd.Wait() }()
	_, port, _ := net.SplitHostPort(addr)
	before, err := scrape(maddr)
	if err != nil {
		return err
	}
	// sampler
	type sample struct {
		at     time.Time
		bytes  float64
		rej    float64
		active float64
	}
	var samples []sample
	var smu sync.Mutex
	var slowScrapes atomic.Int64
	sctx, scancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			// a sample counts only if its round trip was short: a scrape that
			// waited behind the herd cannot be placed in time
			t0 := time.Now()
			if m, err := scrape(maddr); err == nil {
				if rtt := time.Since(t0); rtt < 50*time.Millisecond {
					smu.Lock()
					samples = append(samples, sample{t0.Add(rtt / 2), m["mamori_mirror_bytes_served_total"], m["mamori_mirror_rejected_total"], m["mamori_mirror_active_requests"]})
					smu.Unlock()
				} else {
					slowScrapes.Add(1)
				}
			}
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	rctx, rcancel := context.WithTimeout(ctx, *timeout)
	defer rcancel()
	var wg sync.WaitGroup
	var failedAttempts, done, failures atomic.Int64
	finish := make([]time.Duration, *clients)
	start := time.Now()
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := fmt.Sprintf("127.0.0.%d", 1+i%*addrs)
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 30 * time.Second}
			tr := &http.Transport{DialContext: d.DialContext, DisableCompression: true, MaxIdleConnsPerHost: 1, ResponseHeaderTimeout: 60 * time.Second}
			hc := &http.Client{Transport: tr}
			defer tr.CloseIdleConnections()
			c, err := client.New(client.Config{StateDir: filepath.Join(*dir, "clients"), Sources: []string{"http://" + src + ":" + port},
				TrustedRoot: root, HTTPClient: hc, DryRunFrom: p1.Version, Logger: quiet})
			if err != nil {
				failures.Add(1)
				return
			}
			for rctx.Err() == nil {
				res, err := c.Update(rctx, client.UpdateOptions{})
				if err == nil && res.To == p2.Version && res.PayloadBytes > 0 {
					if i == 0 && os.Getenv("HERD_DEBUG") != "" {
						fmt.Fprintf(os.Stderr, "client 0: %+v\n", res)
					}
					finish[i] = time.Since(start)
					done.Add(1)
					return
				}
				failedAttempts.Add(1)
				time.Sleep(time.Duration(1000+rand.IntN(4000)) * time.Millisecond)
			}
			failures.Add(1)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	time.Sleep(1500 * time.Millisecond)
	scancel()
	after, err := scrape(maddr)
	if err != nil {
		return err
	}
	served := after["mamori_mirror_bytes_served_total"] - before["mamori_mirror_bytes_served_total"]
	rejected := after["mamori_mirror_rejected_total"] - before["mamori_mirror_rejected_total"]
	smu.Lock()
	defer smu.Unlock()
	// rates between consecutive samples; steady phase = while the mirror ran
	// above half the cap
	var rates []float64
	var first, last = -1, -1
	for i := 1; i < len(samples); i++ {
		dt := samples[i].at.Sub(samples[i-1].at).Seconds()
		rt := (samples[i].bytes - samples[i-1].bytes) / dt
		rates = append(rates, rt)
		if rt >= 0.5*float64(*rate) {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	steadyMean, w10min, w10max := 0.0, 0.0, 0.0
	if first > 0 && last > first {
		steadyMean = (samples[last].bytes - samples[first-1].bytes) / samples[last].at.Sub(samples[first-1].at).Seconds()
		for i := first - 1; i <= last; i++ {
			j := i
			for j <= last && samples[j].at.Sub(samples[i].at) < 10*time.Second {
				j++
			}
			if j > last {
				break
			}
			w := (samples[j].bytes - samples[i].bytes) / samples[j].at.Sub(samples[i].at).Seconds()
			if w10min == 0 || w < w10min {
				w10min = w
			}
			w10max = max(w10max, w)
		}
	}
	sort.Slice(finish, func(a, b int) bool { return finish[a] < finish[b] })
	ideal := served / float64(*rate)
	res := map[string]any{
		"machine": machine(), "clients": *clients, "rate": *rate, "max_conns": *maxConns, "delta_bytes": p2.DeltaBytes,
		"completed": done.Load(), "failed_clients": failures.Load(), "failed_attempts": failedAttempts.Load(), "rejected_503": rejected,
		"served_bytes": served, "elapsed_s": elapsed.Seconds(), "ideal_s": ideal, "elapsed_over_ideal": elapsed.Seconds() / ideal,
		"steady_rate": steadyMean, "steady_over_cap": steadyMean / float64(*rate), "window10s_min_over_cap": w10min / float64(*rate),
		"window10s_max_over_cap": w10max / float64(*rate), "overall_rate_over_cap": served / elapsed.Seconds() / float64(*rate),
		"samples": len(samples), "slow_scrapes_dropped": slowScrapes.Load(),
		"finish_p50_s": finish[len(finish)/2].Seconds(), "finish_p99_s": finish[len(finish)*99/100].Seconds(), "rates_per_second": rates,
	}
	fmt.Printf("herd: %d clients, mirror capped at %.1f MB/s with %d connections; delta %d bytes per client\n", *clients, float64(*rate)/1e6, *maxConns, p2.DeltaBytes)
	fmt.Printf("completed %d, failed clients %d, failed attempts %d, 503 answers %.0f\n", done.Load(), failures.Load(), failedAttempts.Load(), rejected)
	fmt.Printf("served %.1f MB in %.1f s; total bytes ÷ cap = %.1f s (elapsed %.3f× that)\n", served/1e6, elapsed.Seconds(), ideal, elapsed.Seconds()/ideal)
	fmt.Printf("samples %d (%d slow scrapes dropped)\n", len(samples), slowScrapes.Load())
	if len(samples) > 0 {
		// everything served before the first clean sample, over its time
		s0 := samples[0]
		t0 := s0.at.Sub(start).Seconds()
		b0 := s0.bytes - before["mamori_mirror_bytes_served_total"]
		res["first_sample_s"], res["first_sample_bytes"] = t0, b0
		fmt.Printf("before the first clean sample (t = %.1f s): %.1f MB served = %.2f MB/s on average\n", t0, b0/1e6, b0/1e6/t0)
	}
	fmt.Printf("steady-phase rate %.2f MB/s = %.3f× cap; 10-s windows %.3f–%.3f× cap; finish p50 %.1f s, p99 %.1f s\n",
		steadyMean/1e6, steadyMean/float64(*rate), w10min/float64(*rate), w10max/float64(*rate), finish[len(finish)/2].Seconds(), finish[len(finish)*99/100].Seconds())
	if *out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			return err
		}
	}
	if failures.Load() > 0 {
		return fmt.Errorf("%d clients never completed", failures.Load())
	}
	_ = io.Discard
	return nil
}
