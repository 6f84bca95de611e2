// Command mamori-loadtest simulates many agents against a running server and
// reports what they cost it (see docs/benchmarks.md).
//
//	mamori-loadtest --server 127.0.0.1:2222 --api https://127.0.0.1:8443 --data DIR --agents 5000 [--json FILE]
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/mamori/mamori/internal/flagenv"
	"github.com/mamori/mamori/internal/loadtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flagenv.New("mamori-loadtest")
	server := fs.String("server", "MAMORI_SERVER", "127.0.0.1:2222", "agent listener HOST:PORT")
	api := fs.String("api", "MAMORI_API", "https://127.0.0.1:8443", "API base URL")
	data := fs.String("data", "MAMORI_DATA", "", "the server's data directory (CA certificate, initial admin password)")
	agents := fs.Int("agents", "", 1000, "simulated agents")
	ramp := fs.Int("ramp", "", 500, "new connections per second")
	settle := fs.Duration("settle", "", 10e9, "wait after connecting before reading idle memory")
	checkins := fs.Int("checkins", "", 5, "no-change check-ins per agent to measure")
	wakeups := fs.Int("wakeups", "", 200, "wake-ups to time")
	packages := fs.Int("packages", "", 800, "packages in each synthetic inventory")
	cache := fs.String("cache", "", "", "identity cache directory (default: next to --data)")
	jsonOut := fs.String("json", "", "", "write the report as JSON to this file")
	pprofURL := fs.String("pprof", "", "", "the server's --debug-listen URL (http://HOST:PORT): collect garbage before memory readings")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *data == "" {
		fmt.Fprintln(os.Stderr, "mamori-loadtest: --data is required")
		os.Exit(2)
	}
	rep, err := loadtest.Run(ctx, loadtest.Config{Server: *server, API: *api, DataDir: *data, Password: os.Getenv("MAMORI_ADMIN_PASSWORD"),
		Agents: *agents, Ramp: *ramp, Settle: *settle, CheckIns: *checkins, Wakeups: *wakeups, Packages: *packages,
		CacheDir: *cache, PprofURL: *pprofURL, Log: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "mamori-loadtest:", err)
		os.Exit(1)
	}
	fmt.Printf("agents connected        %d of %d (%d errors) in %.1fs\n", rep.Connected, rep.Agents, rep.Errors, rep.ConnectSeconds)
	fmt.Printf("server RSS              %.1f MiB (baseline %.1f MiB)\n", rep.ServerRSS/(1<<20), rep.ServerRSSBaseline/(1<<20))
	fmt.Printf("per idle agent          RSS %.1f KiB (live heap %.1f KiB, stacks %.1f KiB), %.2f goroutines\n",
		rep.ServerRSSPerAgent/1024, rep.ServerHeapPerAgent/1024, rep.ServerStackPerAgent/1024, rep.ServerGoroutinesAgent)
	fmt.Printf("first check-in          %.0f bytes on the wire (handshake + full inventory)\n", rep.FirstCheckInBytes)
	fmt.Printf("no-change check-in      %.0f bytes (%.0f up, %.0f down), %.0f/s, p50 %.2f ms, p99 %.2f ms\n",
		rep.BytesPerCheckIn, rep.BytesPerCheckInUp, rep.BytesPerCheckInDown, rep.CheckInsPerSec, rep.P50ms, rep.P99ms)
	fmt.Printf("wake-up → replicated    p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", rep.WakeupP50ms, rep.WakeupP99ms, rep.WakeupMaxms)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "mamori-loadtest:", err)
			os.Exit(1)
		}
	}
}
