package enginecli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/mamori/mamori/internal/engine/quarantine"
)

const quarantineUsage = `usage: mamori-agent quarantine list [--dir DIR] [--json]
       mamori-agent quarantine restore ID [--to PATH] [--force] [--dir DIR] [--json]
       mamori-agent quarantine delete ID [--dir DIR] [--json]

DIR defaults to $MAMORI_QUARANTINE_DIR or the system quarantine directory.
restore writes the original bytes, mode, mtime and (when run as root) owner
back to the original path or PATH, refuses to replace an existing file
unless --force, and removes the item. Exit status: 0 done, 1 the operation
failed (unknown ID, destination exists, I/O error), 2 usage error.
`

// jsonItem is one quarantine item in --json output.
type jsonItem struct {
	ID              string    `json:"id"`
	OriginalPath    string    `json:"original_path"`
	OriginalPathRaw []byte    `json:"original_path_raw,omitempty"`
	Size            int64     `json:"size"`
	Mode            string    `json:"mode"`
	UID             int       `json:"uid"`
	GID             int       `json:"gid"`
	MD5             string    `json:"md5"`
	SHA256          string    `json:"sha256"`
	Detection       string    `json:"detection"`
	EngineVersion   uint64    `json:"engine_version"`
	QuarantinedAt   time.Time `json:"quarantined_at"`
}

// QuarantineHooks hear what `mamori-agent quarantine` did, after it did it
// (the agent reports it to its server).
type QuarantineHooks struct {
	OnRestore func(id, dest string)
	OnDelete  func(id string)
}

// Quarantine implements `mamori-agent quarantine`. args are the arguments
// after "quarantine".
func Quarantine(args []string, stdout, stderr io.Writer, hooks ...QuarantineHooks) int {
	var h QuarantineHooks
	if len(hooks) > 0 {
		h = hooks[0]
	}
	const prog = "mamori-agent quarantine"
	fs := newFlagSet(prog)
	dir := fs.String("dir", "", "quarantine directory")
	asJSON := fs.Bool("json", false, "JSON Lines output")
	to := fs.String("to", "", "restore: destination path")
	force := fs.Bool("force", false, "restore: replace an existing file")
	pos, err := parseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, quarantineUsage)
		return ExitOK
	}
	if err != nil {
		return usageErr(stderr, prog, err)
	}
	if len(pos) == 0 {
		return usageErr(stderr, prog, errors.New("want list, restore ID or delete ID"))
	}
	cmd := pos[0]
	want := map[string]int{"list": 1, "restore": 2, "delete": 2}
	n, ok := want[cmd]
	switch {
	case !ok:
		return usageErr(stderr, prog, fmt.Errorf("unknown command %q (want list, restore or delete)", cmd))
	case len(pos) != n:
		return usageErr(stderr, prog, fmt.Errorf("%s: wrong number of arguments", cmd))
	case cmd != "restore" && (*to != "" || *force):
		return usageErr(stderr, prog, errors.New("--to and --force apply to restore only"))
	}
	d := *dir
	if d == "" {
		d = quarantine.DefaultDir()
	}
	store, err := quarantine.Open(d)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return ExitFound
	}
	switch cmd {
	case "list":
		items, err := store.List()
		if *asJSON {
			for _, it := range items {
				ji := jsonItem{ID: it.ID, OriginalPath: it.OriginalPath, Size: it.Size, Mode: it.Mode.String(),
					UID: it.UID, GID: it.GID, MD5: it.MD5, SHA256: it.SHA256, Detection: it.Detection,
					EngineVersion: it.EngineVersion, QuarantinedAt: it.QuarantinedAt}
				if !utf8.Valid(it.OriginalPathRaw) {
					ji.OriginalPathRaw = it.OriginalPathRaw
				}
				writeJSON(stdout, ji)
			}
		} else {
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tQUARANTINED\tSIZE\tDETECTION\tORIGINAL PATH")
			for _, it := range items {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", it.ID, it.QuarantinedAt.Local().Format(time.RFC3339), it.Size,
					it.Detection, displayPath(string(it.OriginalPathRaw)))
			}
			tw.Flush()
		}
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", prog, err)
			return ExitFound
		}
	case "restore":
		dest, err := store.Restore(pos[1], *to, *force)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", prog, err)
			return ExitFound
		}
		if h.OnRestore != nil {
			h.OnRestore(pos[1], dest)
		}
		if *asJSON {
			writeJSON(stdout, map[string]any{"id": pos[1], "restored_to": dest})
		} else {
			fmt.Fprintf(stdout, "restored %s to %s\n", pos[1], displayPath(dest))
		}
	case "delete":
		if err := store.Delete(pos[1]); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", prog, err)
			return ExitFound
		}
		if h.OnDelete != nil {
			h.OnDelete(pos[1])
		}
		if *asJSON {
			writeJSON(stdout, map[string]any{"id": pos[1], "deleted": true})
		} else {
			fmt.Fprintf(stdout, "deleted %s\n", pos[1])
		}
	}
	return ExitOK
}
