// Command mamori is the management server and its administration commands.
//
//	mamori server --data DIR [--agent-listen ADDR] [--api-listen ADDR] ...
//	mamori token create --data DIR [--group PATH] [--ttl 24h] [--uses N]
//	mamori ca fingerprint --data DIR
//	mamori engine build --from DIR... --out FILE --version N
//	mamori engine info FILE
//	mamori repo init|publish|refresh|prune|rotate-root|status --repo DIR ...
//	mamori mirror serve|sync|export --dir DIR ...
//	mamori version
//	mamori login --server URL [--user NAME] [--ca-fingerprint sha256:HEX | --ca-file FILE]
//	mamori logout | whoami
//	mamori users|groups|tokens|enrollment-tokens|permission-sets|audit|computers SUBCOMMAND ...
//	mamori dynamic-groups|policies|tasks|task-runs SUBCOMMAND ...
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/mamori/mamori/internal/admincli"
	"github.com/mamori/mamori/internal/engine/enginecli"
	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/updates/updatecli"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

const usage = `usage: mamori <command> [flags]

commands:
  server            run the management server
  token create      create an agent enrollment token
  ca fingerprint    print the CA fingerprint agents pin
  recover           a new password for a user, on the server's machine (lost password, locked out)
  engine build      compile signature sources into an engine database
  engine info       describe an engine database
  repo              publish engine updates (init, publish, refresh, prune, rotate-root, status)
  mirror            verify and re-serve an update repository (serve, sync, export)
  version           print the version

administration through the REST API of a running server:
` + admincli.Usage + `
Run "mamori <command> -h" for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; {
	case cmd == "server":
		err = runServer(ctx, rest, stderr)
	case cmd == "token" && len(rest) > 0 && rest[0] == "create":
		err = runTokenCreate(ctx, rest[1:], stdout)
	case cmd == "recover":
		err = runRecover(ctx, rest, stdout)
	case cmd == "ca" && len(rest) > 0 && rest[0] == "fingerprint":
		err = runCAFingerprint(rest[1:], stdout)
	case cmd == "engine" && len(rest) > 0 && rest[0] == "build":
		return enginecli.Build(rest[1:], stdout, stderr)
	case cmd == "engine" && len(rest) > 0 && rest[0] == "info":
		return enginecli.Info(rest[1:], stdout, stderr)
	case cmd == "repo":
		return updatecli.Repo(ctx, rest, stdout, stderr)
	case cmd == "mirror":
		return updatecli.Mirror(ctx, rest, stdout, stderr)
	case admincli.IsCommand(cmd):
		return admincli.Run(ctx, args, os.Stdin, stdout, stderr)
	case cmd == "version" || cmd == "--version":
		fmt.Fprintln(stdout, "mamori", version)
	case cmd == "help" || cmd == "-h" || cmd == "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "mamori: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	return exitCode(err, stderr)
}

// exitCode prints err as one line and maps it to an exit status: 2 for
// usage errors, 1 for everything else.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errcode.Of(err) == errcode.Internal:
		fmt.Fprintln(stderr, "mamori:", err)
	default:
		fmt.Fprintln(stderr, "mamori:", errcode.Message(err))
	}
	if errors.As(err, new(usageError)) || errcode.Of(err) == errcode.Invalid {
		return 2
	}
	return 1
}

type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }
