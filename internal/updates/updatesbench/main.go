// Command updatesbench runs the update-distribution benchmarks of
// docs/benchmarks.md (see scripts/bench-updates.sh):
//
//	go run ./internal/updates/updatesbench halfyear [flags]    a simulated half-year of releases and client profiles
//	go run ./internal/updates/updatesbench herd [flags]        10,000 clients against one capped mirror
//	go run ./internal/updates/updatesbench throughput [flags]  the mirror against nginx on the same files
//
// "updatesbench mirror ARGS..." runs "mamori mirror ARGS..." (the herd and
// throughput benchmarks start the mirror as a separate process with it).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/mamori/mamori/internal/updates/updatecli"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: updatesbench halfyear|herd|throughput|mirror [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if p := os.Getenv("UPDATESBENCH_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	var err error
	switch os.Args[1] {
	case "halfyear":
		err = halfYear(ctx, os.Args[2:])
	case "herd":
		err = herd(ctx, os.Args[2:])
	case "throughput":
		err = throughput(ctx, os.Args[2:])
	case "mirror":
		code := updatecli.Mirror(ctx, os.Args[2:], os.Stdout, os.Stderr)
		pprof.StopCPUProfile()
		os.Exit(code)
	default:
		err = fmt.Errorf("unknown benchmark %q", os.Args[1])
	}
	if err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "updatesbench:", err)
		os.Exit(1)
	}
}
