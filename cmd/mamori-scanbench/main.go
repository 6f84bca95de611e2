// Command mamori-scanbench is a thin wrapper around the engine commands for
// benchmarks and development (scripts/bench-scan.sh), usable before the
// engine commands are wired into mamori and mamori-agent:
//
//	mamori-scanbench build --from DIR --out FILE --version N
//	mamori-scanbench info FILE
//	mamori-scanbench scan PATH... [flags]
//	mamori-scanbench quarantine list|restore|delete ...
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/mamori/mamori/internal/engine/enginecli"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: mamori-scanbench build|info|scan|quarantine ...")
		os.Exit(2)
	}
	args := os.Args[2:]
	var code int
	switch os.Args[1] {
	case "build":
		code = enginecli.Build(args, os.Stdout, os.Stderr)
	case "info":
		code = enginecli.Info(args, os.Stdout, os.Stderr)
	case "scan":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		code = enginecli.Scan(ctx, args, os.Stdout, os.Stderr, enginecli.ScanHooks{})
		stop()
	case "quarantine":
		code = enginecli.Quarantine(args, os.Stdout, os.Stderr)
	default:
		fmt.Fprintf(os.Stderr, "mamori-scanbench: unknown command %q\n", os.Args[1])
		code = 2
	}
	os.Exit(code)
}
