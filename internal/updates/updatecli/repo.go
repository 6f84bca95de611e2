package updatecli

import (
	"context"
	"errors"
	"fmt"
	"github.com/mamori/mamori/internal/updates/clikit"
	"io"
	"path/filepath"
	"time"

	"github.com/mamori/mamori/internal/engine/enginedb"
	"github.com/mamori/mamori/internal/updates/repo"
)

const repoUsage = `usage: mamori repo <command> [flags]

Commands:
  init         create a repository with new keys and empty signed metadata
  publish      add an engine version (--engine FILE or --from SIGDIR...)
  refresh      re-sign the timestamp (and anything near expiry); run at least daily
  prune        remove what fell out of the delta window
  rotate-root  write a new root version (new root key, optionally new online keys)
  status       show the repository's state

Run "mamori repo <command> -h" for the command's flags.
`

// Repo implements "mamori repo ...". args are the arguments after "repo".
func Repo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	sub, rest := clikit.Subcommand(args)
	c := cmd{Prog: "mamori repo " + sub, Stdout: stdout, Stderr: stderr}
	switch sub {
	case "init":
		return repoInit(c, rest)
	case "publish":
		return repoPublish(c, rest)
	case "refresh":
		return repoRefresh(c, rest)
	case "prune":
		return repoPrune(c, rest)
	case "rotate-root":
		return repoRotate(c, rest)
	case "status":
		return repoStatus(c, rest)
	case "", "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, repoUsage)
		if sub == "" {
			return ExitUsage
		}
		return ExitOK
	}
	c.Prog = "mamori repo"
	return c.Usage(fmt.Errorf("unknown command %q", sub))
}

func openRepo(dir, keys string) (*repo.Repo, error) {
	if dir == "" {
		return nil, errors.New("--repo is required")
	}
	return repo.Open(dir, repo.Options{KeysDir: keys})
}

const initHelp = `usage: mamori repo init --repo DIR [flags]

Creates a repository: Ed25519 keys for the root, targets, snapshot and
timestamp roles (PEM files in DIR/keys, mode 0600), signed empty metadata,
and repo.json with the settings below. Move DIR/keys/root.pem offline
afterwards: only rotate-root needs it. Prints the SHA-256 of 1.root.json,
which agents and mirrors can pin (--root-sha256).

`

func repoInit(c cmd, args []string) int {
	fs := clikit.NewFlags(c.Prog)
	dir := fs.String("repo", "MAMORI_REPO", "", "repository directory (must not exist or be empty)")
	keys := fs.String("keys", "MAMORI_REPO_KEYS", "", "key directory (default REPO/keys)")
	window := fs.Int("window", "MAMORI_REPO_WINDOW", repo.DefaultSettings().Window, "delta window K in releases (0: full downloads only)")
	checkpoint := fs.Int("checkpoint", "MAMORI_REPO_CHECKPOINT", repo.DefaultSettings().Checkpoint, "releases between checkpoints S")
	rootExp := fs.Duration("root-expiry", "MAMORI_REPO_ROOT_EXPIRY", repo.DefaultRootExpiry, "root metadata lifetime")
	targetsExp := fs.Duration("targets-expiry", "MAMORI_REPO_TARGETS_EXPIRY", repo.DefaultTargetsExpiry, "targets metadata lifetime")
	snapExp := fs.Duration("snapshot-expiry", "MAMORI_REPO_SNAPSHOT_EXPIRY", repo.DefaultSnapshotExpiry, "snapshot metadata lifetime")
	tsExp := fs.Duration("timestamp-expiry", "MAMORI_REPO_TIMESTAMP_EXPIRY", repo.DefaultTimestampExpiry, "timestamp metadata lifetime")
	asJSON := fs.Bool("json", false, "print JSON")
	if done, code := c.Parse(fs, args, initHelp); done {
		return code
	}
	if *dir == "" {
		return c.Usage(errors.New("--repo is required"))
	}
	s := repo.DefaultSettings()
	s.Window, s.Checkpoint = *window, *checkpoint
	s.RootExpiry, s.TargetsExpiry, s.SnapshotExpiry, s.TimestampExpiry = repo.Duration(*rootExp), repo.Duration(*targetsExp), repo.Duration(*snapExp), repo.Duration(*tsExp)
	if err := s.Validate(); err != nil {
		return c.Usage(err)
	}
	r, res, err := repo.Init(*dir, s, repo.Options{KeysDir: *keys})
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	r.Close()
	if *asJSON {
		c.JSON(map[string]any{"repo": *dir, "root_sha256": res.RootSHA256, "keys": res.KeyFiles, "public": filepath.Join(*dir, "public")})
		return ExitOK
	}
	fmt.Fprintf(c.Stdout, "created repository %s\nserve or mirror: %s\nroot sha256: %s\nkeys: %v\nmove the root key offline; only rotate-root needs it.\n",
		*dir, filepath.Join(*dir, "public"), res.RootSHA256, res.KeyFiles)
	return ExitOK
}

const publishHelp = `usage: mamori repo publish --repo DIR (--engine FILE | --from SIGDIR...) [--version N]

Adds an engine version: the compressed full engine, the logical deltas into
it from earlier releases in the window, and new signed targets, snapshot and
timestamp. The version must exceed the last one; with --from it defaults to
last+1 (2 for the first), with --engine to the file's version.

`

func repoPublish(c cmd, args []string) int {
	fs := clikit.NewFlags(c.Prog)
	dir := fs.String("repo", "MAMORI_REPO", "", "repository directory")
	keys := fs.String("keys", "MAMORI_REPO_KEYS", "", "key directory (default REPO/keys)")
	engine := fs.String("engine", "MAMORI_PUBLISH_ENGINE", "", "engine database file (mamori engine build)")
	from := fs.List("from", "MAMORI_PUBLISH_FROM", "signature source directory or file (repeatable)")
	version := fs.Int("version", "MAMORI_PUBLISH_VERSION", 0, "engine version (default: see above)")
	window := fs.Int("window", "MAMORI_REPO_WINDOW", -1, "change the delta window K (releases) from now on")
	asJSON := fs.Bool("json", false, "print JSON")
	if done, code := c.Parse(fs, args, publishHelp); done {
		return code
	}
	switch {
	case *dir == "":
		return c.Usage(errors.New("--repo is required"))
	case (*engine == "") == (len(*from) == 0):
		return c.Usage(errors.New("give exactly one of --engine FILE or --from SIGDIR"))
	case *version < 0:
		return c.Usage(errors.New("--version must be positive"))
	}
	r, err := openRepo(*dir, *keys)
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	defer r.Close()
	if *window >= 0 {
		if err := r.SetSchedule(*window, r.Settings().Checkpoint); err != nil {
			return c.Usage(err)
		}
	}
	start := time.Now()
	var res repo.PublishResult
	if *engine != "" {
		res, err = r.PublishEngineFile(*engine, uint64(*version))
	} else {
		recs, rerr := enginedb.ReadSources(*from)
		if rerr != nil {
			return c.FailJSON(*asJSON, rerr, nil)
		}
		res, err = r.Publish(recs, uint64(*version))
	}
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	if *asJSON {
		c.JSON(map[string]any{"version": res.Version, "release": res.Release, "records": res.Records, "full_bytes": res.FullBytes,
			"db_bytes": res.DBBytes, "added": res.StepAdded, "removed": res.StepRemoved, "deltas": res.Deltas,
			"delta_bytes": res.DeltaBytes, "targets_listed": res.Listed, "seconds": time.Since(start).Seconds()})
		return ExitOK
	}
	fmt.Fprintf(c.Stdout, "published engine %d (release %d): %d records, +%d -%d since the last release; full engine %s, %d deltas (%s); %d targets listed; %.2fs\n",
		res.Version, res.Release, res.Records, res.StepAdded, res.StepRemoved, clikit.HumanBytes(res.FullBytes), res.Deltas, clikit.HumanBytes(res.DeltaBytes), res.Listed, time.Since(start).Seconds())
	return ExitOK
}

const refreshHelp = `usage: mamori repo refresh --repo DIR

Re-signs timestamp.json, and snapshot/targets when less than half of their
lifetime is left, without changing what is published. Run it at least once a
day (hourly from a timer is good) so metadata never expires between releases.

`

func repoRefresh(c cmd, args []string) int {
	fs := clikit.NewFlags(c.Prog)
	dir := fs.String("repo", "MAMORI_REPO", "", "repository directory")
	keys := fs.String("keys", "MAMORI_REPO_KEYS", "", "key directory (default REPO/keys)")
	asJSON := fs.Bool("json", false, "print JSON")
	if done, code := c.Parse(fs, args, refreshHelp); done {
		return code
	}
	r, err := openRepo(*dir, *keys)
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	defer r.Close()
	res, err := r.Refresh()
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	if *asJSON {
		c.JSON(map[string]any{"timestamp": res.Timestamp, "snapshot": res.Snapshot, "targets": res.Targets, "expires": res.Expires})
		return ExitOK
	}
	fmt.Fprintf(c.Stdout, "re-signed timestamp (snapshot %v, targets %v); expires %s\n", res.Snapshot, res.Targets, res.Expires.Format(time.RFC3339))
	return ExitOK
}

const pruneHelp = `usage: mamori repo prune --repo DIR [--grace 24h]

Removes releases older than the window from the history, and target files and
metadata versions that neither the current metadata nor any published within
--grace reference.

`

func repoPrune(c cmd, args []string) int {
	fs := clikit.NewFlags(c.Prog)
	dir := fs.String("repo", "MAMORI_REPO", "", "repository directory")
	keys := fs.String("keys", "MAMORI_REPO_KEYS", "", "key directory (default REPO/keys)")
	grace := fs.Duration("grace", "MAMORI_REPO_PRUNE_GRACE", repo.DefaultPruneGrace, "keep what metadata published this recently references")
	asJSON := fs.Bool("json", false, "print JSON")
	if done, code := c.Parse(fs, args, pruneHelp); done {
		return code
	}
	if *grace < 0 {
		return c.Usage(errors.New("--grace must not be negative"))
	}
	r, err := openRepo(*dir, *keys)
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	defer r.Close()
	res, err := r.Prune(*grace)
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	if *asJSON {
		c.JSON(res)
		return ExitOK
	}
	fmt.Fprintf(c.Stdout, "pruned %d releases, %d files (%s), %d metadata versions; kept %d files (%s)\n",
		res.Releases, res.Files, clikit.HumanBytes(res.Bytes), res.MetadataFiles, res.KeptFiles, clikit.HumanBytes(res.KeptBytes))
	return ExitOK
}

const rotateHelp = `usage: mamori repo rotate-root --repo DIR [--root-key OLD.pem]... [--new-root-key NEW.pem] [--rotate-online]

Writes root version n+1 signed by the current root key(s) and the new one,
then re-signs targets, snapshot and timestamp. --new-root-key is generated
when the file does not exist. --rotate-online replaces the targets, snapshot
and timestamp keys (the old files are renamed .retired-<n>). Agents and
mirrors follow the rotation at their next update.

`

func repoRotate(c cmd, args []string) int {
	fs := clikit.NewFlags(c.Prog)
	dir := fs.String("repo", "MAMORI_REPO", "", "repository directory")
	keys := fs.String("keys", "MAMORI_REPO_KEYS", "", "key directory (default REPO/keys)")
	oldKeys := fs.List("root-key", "MAMORI_REPO_ROOT_KEY", "current root key file (repeatable; default KEYS/root.pem)")
	newKey := fs.String("new-root-key", "MAMORI_REPO_NEW_ROOT_KEY", "", "new root key file (generated if missing; default: keep the root key)")
	online := fs.Bool("rotate-online", false, "also replace the targets, snapshot and timestamp keys")
	asJSON := fs.Bool("json", false, "print JSON")
	if done, code := c.Parse(fs, args, rotateHelp); done {
		return code
	}
	r, err := openRepo(*dir, *keys)
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	defer r.Close()
	res, err := r.RotateRoot(repo.RotateOptions{OldRootKeys: *oldKeys, NewRootKey: *newKey, RotateOnline: *online})
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	if *asJSON {
		c.JSON(map[string]any{"root_version": res.Version, "expires": res.Expires})
		return ExitOK
	}
	fmt.Fprintf(c.Stdout, "wrote root version %d (expires %s)\n", res.Version, res.Expires.Format(time.RFC3339))
	return ExitOK
}

func repoStatus(c cmd, args []string) int {
	fs := clikit.NewFlags(c.Prog)
	dir := fs.String("repo", "MAMORI_REPO", "", "repository directory")
	keys := fs.String("keys", "MAMORI_REPO_KEYS", "", "key directory (default REPO/keys)")
	asJSON := fs.Bool("json", false, "print JSON")
	if done, code := c.Parse(fs, args, "usage: mamori repo status --repo DIR [--json]\n\n"); done {
		return code
	}
	r, err := openRepo(*dir, *keys)
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	defer r.Close()
	st, err := r.Status()
	if err != nil {
		return c.FailJSON(*asJSON, err, nil)
	}
	if *asJSON {
		c.JSON(st)
		return ExitOK
	}
	fmt.Fprintf(c.Stdout, "repository %s\nengine version %d (release %d, %d records, full %s)\nwindow %d releases, checkpoint every %d; %d releases in history\n%d targets listed (targets metadata %s)\nroot version %d, 1.root.json sha256 %s\nexpires: timestamp %s, snapshot %s, targets %s, root %s\npublic: %d files, %s\n",
		st.Dir, st.EngineVersion, st.Release, st.Records, clikit.HumanBytes(st.FullBytes), st.Window, st.Checkpoint, st.Releases,
		st.Targets, clikit.HumanBytes(st.TargetsBytes), st.RootVersion, st.RootSHA256,
		st.TimestampExpires.Format(time.RFC3339), st.SnapshotExpires.Format(time.RFC3339), st.TargetsExpires.Format(time.RFC3339), st.RootExpires.Format(time.RFC3339),
		st.PublicFiles, clikit.HumanBytes(st.PublicBytes))
	return ExitOK
}
