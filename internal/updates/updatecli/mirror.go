package updatecli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mamori/mamori/internal/updates/clikit"
	"github.com/mamori/mamori/internal/updates/source"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mamori/mamori/internal/updates/mirror"
)

const mirrorUsage = `usage: mamori mirror <command> [flags]

Commands:
  serve   sync from an upstream and serve the repository over HTTP(S)
  sync    sync a mirror directory once
  export  write an offline bundle (a directory, or a .tar file)

Run "mamori mirror <command> -h" for the command's flags.
`

// Mirror implements "mamori mirror ...". args are the arguments after
// "mirror".
func Mirror(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	sub, rest := clikit.Subcommand(args)
	c := cmd{Prog: "mamori mirror " + sub, Stdout: stdout, Stderr: stderr}
	switch sub {
	case "serve":
		return mirrorServe(ctx, c, rest)
	case "sync":
		return mirrorSync(ctx, c, rest)
	case "export":
		return mirrorExport(ctx, c, rest)
	case "", "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, mirrorUsage)
		if sub == "" {
			return ExitUsage
		}
		return ExitOK
	}
	c.Prog = "mamori mirror"
	return c.Usage(fmt.Errorf("unknown command %q", sub))
}

type mirrorFlags struct {
	upstream, dir, root, rootSHA, proxy, upstreamCA *string
}

func addMirrorFlags(fs interface {
	String(name, env, def, help string) *string
}) mirrorFlags {
	return mirrorFlags{
		upstream: fs.String("upstream", "MAMORI_MIRROR_UPSTREAM", "", "repository or mirror URL, folder, or bundle .tar"),
		dir:      fs.String("dir", "MAMORI_MIRROR_DIR", "", "mirror directory"),
		root:     fs.String("root", "MAMORI_UPDATE_ROOT", "", "trusted root.json of the repository (needed for the first sync)"),
		rootSHA:  fs.String("root-sha256", "MAMORI_UPDATE_ROOT_SHA256", "", "or: SHA-256 of the repository's 1.root.json"),
		proxy:    fs.String("proxy", "MAMORI_UPDATE_PROXY", "", `HTTP proxy for the upstream ("" from the environment, "none")`),
		upstreamCA: fs.String("upstream-ca", "MAMORI_MIRROR_UPSTREAM_CA", "",
			"PEM file of CA certificates trusted for an https:// upstream besides the system's (a management server's built-in mirror: its DATA/ca.crt)"),
	}
}

func (f mirrorFlags) config(c cmd) (mirror.Config, error) {
	var cfg mirror.Config
	if *f.dir == "" {
		return cfg, errors.New("--dir is required")
	}
	root, err := clikit.ReadRoot(*f.root)
	if err != nil {
		return cfg, err
	}
	cfg = mirror.Config{Dir: *f.dir, Upstream: *f.upstream, TrustedRoot: root, RootSHA256: *f.rootSHA, Proxy: *f.proxy,
		Logger: slog.New(slog.NewTextHandler(c.Stderr, nil))}
	if *f.upstreamCA != "" {
		if cfg.HTTPClient, err = clientTrusting(*f.upstreamCA, *f.proxy); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// clientTrusting is the upstream HTTP client (source.NewHTTPClient) that
// also trusts the CA certificates in the PEM file caFile. Host names are
// still checked: the upstream's certificate must name the host dialled.
func clientTrusting(caFile, proxy string) (*http.Client, error) {
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--upstream-ca: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("--upstream-ca: %s holds no PEM certificate", caFile)
	}
	client, err := source.NewHTTPClient(proxy)
	if err != nil {
		return nil, err
	}
	client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return client, nil
}

const serveHelp = `usage: mamori mirror serve --upstream URL|DIR --dir DIR --listen ADDR [flags]

Syncs from the upstream (verifying everything through TUF before serving it)
at start, every --sync-interval and on SIGHUP, and serves the repository as
static files: / (metadata/, targets/), /-/metrics (Prometheus), /-/healthz.
Limits: --max-conns target transfers at once (over it: 503 with Retry-After
at once; metadata has its own limit of 8 × that), --rate bytes/s for all
clients, --client-rate bytes/s per client address. Sizes accept K, M, G
(powers of 1024) and an optional /s.

`

func mirrorServe(ctx context.Context, c cmd, args []string) int {
	fs := clikit.NewFlags(c.Prog)
	mf := addMirrorFlags(fs)
	listen := fs.String("listen", "MAMORI_MIRROR_LISTEN", ":8080", "listen address")
	metricsListen := fs.String("metrics-listen", "MAMORI_MIRROR_METRICS_LISTEN", "", "serve /-/metrics and /-/healthz on this address instead (e.g. a private interface)")
	maxConns := fs.Int("max-conns", "MAMORI_MIRROR_MAX_CONNS", mirror.DefaultMaxConns, "target files sent at once (-1: unlimited)")
	interval := fs.Duration("sync-interval", "MAMORI_MIRROR_SYNC_INTERVAL", mirror.DefaultSyncInterval, "time between syncs")
	retain := fs.Duration("retain", "MAMORI_MIRROR_RETAIN", mirror.DefaultRetain, "keep superseded files this long")
	tsAge := fs.Duration("timestamp-max-age", "MAMORI_MIRROR_TIMESTAMP_MAX_AGE", mirror.DefaultTimestampMaxAge, "Cache-Control max-age of timestamp.json")
	certFile := fs.String("tls-cert", "MAMORI_MIRROR_TLS_CERT", "", "TLS certificate (PEM); serve HTTPS")
	keyFile := fs.String("tls-key", "MAMORI_MIRROR_TLS_KEY", "", "TLS key (PEM)")
	rate, err1 := clikit.SizeFlag(fs, "rate", "MAMORI_MIRROR_RATE", 0, "bytes/s for all clients together (0: no cap)")
	clientRate, err2 := clikit.SizeFlag(fs, "client-rate", "MAMORI_MIRROR_CLIENT_RATE", 0, "bytes/s per client address (0: no cap)")
	if err := errors.Join(err1, err2); err != nil {
		return c.Usage(err)
	}
	if done, code := c.Parse(fs, args, serveHelp); done {
		return code
	}
	cfg, err := mf.config(c)
	if err != nil {
		return c.Usage(err)
	}
	if cfg.Upstream == "" {
		return c.Usage(errors.New("--upstream is required"))
	}
	if (*certFile == "") != (*keyFile == "") {
		return c.Usage(errors.New("give both --tls-cert and --tls-key"))
	}
	if *maxConns == 0 || *maxConns < -1 {
		return c.Usage(errors.New("--max-conns must be positive or -1"))
	}
	reg := prometheus.NewRegistry()
	cfg.MaxConns, cfg.Rate, cfg.ClientRate, cfg.SyncInterval, cfg.Retain, cfg.TimestampMaxAge = *maxConns, rate.N, clientRate.N, *interval, *retain, *tsAge
	cfg.Registerer = reg
	m, err := mirror.New(cfg)
	if err != nil {
		return c.Fail(err)
	}
	defer m.Close()
	mux := http.NewServeMux()
	mux.Handle("/metadata/", m.Handler())
	mux.Handle("/targets/", m.Handler())
	admin := mux
	if *metricsListen != "" {
		admin = http.NewServeMux()
	}
	admin.Handle("/-/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	admin.HandleFunc("/-/healthz", func(w http.ResponseWriter, r *http.Request) {
		st := m.Status()
		if st.TimestampVersion == 0 {
			http.Error(w, "not synced yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ok engine=%d timestamp=%d\n", st.EngineVersion, st.TimestampVersion)
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return c.Fail(err)
	}
	if *metricsListen != "" {
		mln, err := net.Listen("tcp", *metricsListen)
		if err != nil {
			ln.Close()
			return c.Fail(err)
		}
		msrv := &http.Server{Handler: admin, ReadHeaderTimeout: 10 * time.Second}
		go msrv.Serve(mln)
		defer msrv.Close()
		fmt.Fprintf(c.Stderr, "mirror metrics on %s\n", mln.Addr())
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second, MaxHeaderBytes: 16 << 10}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				m.SyncNow()
			}
		}
	}()
	go m.Run(ctx)
	errc := make(chan error, 1)
	go func() {
		if *certFile != "" {
			errc <- srv.ServeTLS(ln, *certFile, *keyFile)
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	fmt.Fprintf(c.Stderr, "mirror serving %s on %s (upstream %s)\n", cfg.Dir, ln.Addr(), cfg.Upstream)
	select {
	case <-ctx.Done():
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		srv.Shutdown(sctx)
		return ExitOK
	case err := <-errc:
		return c.Fail(err)
	}
}

const syncHelp = `usage: mamori mirror sync --upstream URL|DIR --dir DIR [--root FILE | --root-sha256 HEX]

Syncs the mirror directory once (verifying everything) and exits. A bundle
.tar or folder upstream imports an offline bundle.

`

func mirrorSync(ctx context.Context, c cmd, args []string) int {
	fs := clikit.NewFlags(c.Prog)
	mf := addMirrorFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if done, code := c.Parse(fs, args, syncHelp); done {
		return code
	}
	cfg, err := mf.config(c)
	if err != nil {
		return c.Usage(err)
	}
	if cfg.Upstream == "" {
		return c.Usage(errors.New("--upstream is required"))
	}
	p := clikit.NewProgress(c.Stderr, "sync")
	cfg.Progress = p.Update
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := mirror.New(cfg)
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	defer m.Close()
	res, err := m.Sync(ctx)
	p.Finish()
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	if *asJSON {
		c.JSON(res)
		return ExitOK
	}
	fmt.Fprintf(c.Stdout, "mirror %s: engine %d (timestamp version %d); fetched %d files (%s), removed %d, %.2fs\n",
		cfg.Dir, res.EngineVersion, res.TimestampVersion, res.Fetched, clikit.HumanBytes(res.FetchedBytes), res.Removed, res.Seconds)
	return ExitOK
}

const exportHelp = `usage: mamori mirror export --dir DIR --to PATH [--full-only]

Writes an offline bundle of the mirror's (or a repository's) current state:
a directory, or one uncompressed tar when PATH ends in .tar. Agents use it as
an update source (--source PATH); a mirror imports it (--upstream PATH).
Everything is verified again while it is copied.

`

func mirrorExport(ctx context.Context, c cmd, args []string) int {
	fs := clikit.NewFlags(c.Prog)
	dir := fs.String("dir", "MAMORI_MIRROR_DIR", "", "mirror or repository directory")
	to := fs.String("to", "MAMORI_EXPORT_TO", "", "bundle to write (.tar file, or a directory)")
	root := fs.String("root", "MAMORI_UPDATE_ROOT", "", "trusted root.json (default: the mirror's)")
	rootSHA := fs.String("root-sha256", "MAMORI_UPDATE_ROOT_SHA256", "", "or: SHA-256 of the repository's 1.root.json")
	fullOnly := fs.Bool("full-only", false, "leave the deltas out")
	asJSON := fs.Bool("json", false, "print JSON")
	if done, code := c.Parse(fs, args, exportHelp); done {
		return code
	}
	if *dir == "" || *to == "" {
		return c.Usage(errors.New("--dir and --to are required"))
	}
	rb, err := clikit.ReadRoot(*root)
	if err != nil {
		return c.Usage(err)
	}
	p := clikit.NewProgress(c.Stderr, "export")
	res, err := mirror.Export(ctx, mirror.ExportConfig{Dir: *dir, To: *to, FullOnly: *fullOnly, TrustedRoot: rb, RootSHA256: *rootSHA, Progress: p.Update})
	p.Finish()
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	if *asJSON {
		c.JSON(res)
		return ExitOK
	}
	fmt.Fprintf(c.Stdout, "wrote %s: engine %d, %d files, %s; metadata expires %s\n", res.Path, res.EngineVersion, res.Files, clikit.HumanBytes(res.Bytes), res.Expires.Format(time.RFC3339))
	if res.Expired {
		fmt.Fprintf(c.Stderr, "%s: warning: the metadata has already expired; agents accept the bundle only within their offline max age\n", c.Prog)
	}
	return ExitOK
}
