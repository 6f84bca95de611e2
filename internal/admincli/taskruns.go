package admincli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mamori/mamori/internal/apiclient"
	"github.com/mamori/mamori/internal/errcode"
)

// DefaultWait bounds "tasks run --wait" when --timeout is not given.
const DefaultWait = 10 * time.Minute

// pollInterval is the longest pause between two looks at waited runs.
const pollInterval = 2 * time.Second

func (inv *invocation) tasksRun(args []string) error {
	fs := inv.flags("ID_OR_NAME [--computer ID_OR_NAME]... [--group PATH]... [--dynamic-group ID_OR_NAME]... [--random-delay D] [--expiry D] [--wait [--timeout D]]\n\n" +
		"Runs the task now on the computers the targets name (a server task takes no targets: it runs once on the server).\n" +
		"--wait follows the runs until every one finished and prints each computer's state, exit code and output;\n" +
		"the exit status is then 1 when a run did not succeed or the wait timed out. With --wait, --timeout bounds\n" +
		"the whole wait (default " + DefaultWait.String() + ") as well as each request.")
	g := inv.globalFlags(fs, true)
	tf := newTargetFlags(fs)
	delay := fs.String("random-delay", "", "spread the starts over a random delay up to this duration (at most 24h)")
	expiry := fs.String("expiry", "", "how long runs wait for offline computers (default 24h, at most 168h)")
	wait := fs.Bool("wait", false, "wait until every run finished and show the results")
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	waitFor := DefaultWait
	if setFlags(fs)["timeout"] {
		waitFor = g.timeout
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	t, err := inv.findTask(c, pos[0])
	if err != nil {
		return err
	}
	targets, err := inv.resolveTargets(c, tf)
	if err != nil {
		return err
	}
	started, err := c.RunTask(inv.ctx, t.ID, apiclient.RunRequest{Targets: targets, RandomDelay: *delay, Expiry: *expiry})
	if err != nil {
		return err
	}
	if *wait {
		return inv.waitRuns(g, c, t, started, waitFor)
	}
	return inv.emit(g, started.JSON(), func(w io.Writer) {
		switch {
		case started.Run != nil:
			fmt.Fprintf(w, "Task %s will run on the server: run %s (see \"mamori task-runs show %s\").\n", t.Name, started.Run.ID, started.Run.ID)
		case started.Trigger != nil:
			fmt.Fprintf(w, "Task %s will run on %s (trigger %s); see \"mamori tasks runs %s\".\n", t.Name,
				inv.newNamer(c).targets(started.Trigger.Targets), started.Trigger.ID, t.Name)
		}
	})
}

// waited is the state of the runs a wait follows.
type waited struct {
	fired bool // the run-now trigger planned its runs
	runs  []apiclient.TaskRun
	raw   []json.RawMessage // the API's JSON of each run
}

func (w *waited) unfinished() int {
	n := 0
	for i := range w.runs {
		if !w.runs[i].Finished() {
			n++
		}
	}
	return n
}

// progress says what the wait waits for: runs not delivered yet wait for
// their computer (offline, or a random delay), so a long wait is explained.
func (w *waited) progress() string {
	if !w.fired {
		return "waiting for the runs to be planned"
	}
	by := map[string]int{}
	for i := range w.runs {
		if !w.runs[i].Finished() {
			by[w.runs[i].State]++
		}
	}
	msg := fmt.Sprintf("waiting for %d of %d runs:", w.unfinished(), len(w.runs))
	for _, s := range []string{"planned", "delivered", "running"} {
		if by[s] > 0 {
			msg += fmt.Sprintf(" %d %s", by[s], s)
		}
	}
	if by["planned"] > 0 {
		msg += " (planned: not handed to their computer yet; offline ones get it when they connect)"
	}
	return msg
}

// waitRuns follows the runs a run-now started until all finished or
// waitFor passed, and prints them.
func (inv *invocation) waitRuns(g *globals, c *apiclient.Client, t *apiclient.Task, started *apiclient.RunStarted, waitFor time.Duration) error {
	ctx, cancel := context.WithTimeout(inv.ctx, waitFor)
	defer cancel()
	var st *waited
	pause := 100 * time.Millisecond
	said := ""
	for {
		cur, err := inv.pollRuns(ctx, c, t, started)
		if err == nil {
			st = cur
			if st.fired && st.unfinished() == 0 {
				break
			}
			if p := st.progress(); p != said { // on stderr: stdout keeps the results alone
				fmt.Fprintln(inv.stderr, p)
				said = p
			}
		} else if ctx.Err() == nil {
			return err
		}
		if ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			}
			pause = min(2*pause, pollInterval)
		}
		if ctx.Err() != nil {
			if inv.ctx.Err() != nil {
				return inv.ctx.Err()
			}
			// One last look, so that what is shown is current.
			last, lcancel := context.WithTimeout(inv.ctx, 5*time.Second)
			if cur, err := inv.pollRuns(last, c, t, started); err == nil {
				st = cur
			}
			lcancel()
			if st == nil {
				st = &waited{}
			}
			if st.fired && st.unfinished() == 0 {
				break
			}
			if err := inv.printRuns(g, t, st, false); err != nil {
				return err
			}
			if !st.fired {
				return errcode.New(errcode.Unavailable, "timed out after %s: the runs of task %s were not planned yet (is the server's scheduler running?)", waitFor, t.Name)
			}
			return errcode.New(errcode.Unavailable, "timed out after %s: %d of %d runs not finished", waitFor, st.unfinished(), len(st.runs))
		}
	}
	if err := inv.printRuns(g, t, st, true); err != nil {
		return err
	}
	if len(st.runs) == 0 && g.output == "text" {
		fmt.Fprintln(inv.stderr, "(the targets name no computer: nothing ran)")
	}
	bad := 0
	for i := range st.runs {
		if st.runs[i].State != apiclient.RunSucceeded {
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d runs did not succeed", bad, len(st.runs))
	}
	return nil
}

// pollRuns reads the current state of a run-now's runs.
func (inv *invocation) pollRuns(ctx context.Context, c *apiclient.Client, t *apiclient.Task, started *apiclient.RunStarted) (*waited, error) {
	if started.Run != nil {
		r, err := c.GetTaskRun(ctx, started.Run.ID)
		if err != nil {
			return nil, err
		}
		return &waited{fired: true, runs: []apiclient.TaskRun{*r}, raw: []json.RawMessage{r.JSON()}}, nil
	}
	if started.Trigger == nil {
		return nil, errcode.New(errcode.Internal, "the server's answer names neither a trigger nor a run")
	}
	tr, err := c.GetTrigger(ctx, t.ID, started.Trigger.ID)
	if err != nil {
		return nil, err
	}
	if tr.LastFiredAt.IsZero() {
		return &waited{}, nil
	}
	// The runs of the trigger, newest first; a retried run counts with its
	// latest attempt.
	latest := map[string]int{} // computer id -> index in st.runs
	st := &waited{fired: true}
	oldest := tr.CreatedAt.Add(-time.Second)
	for off := 0; ; {
		l, err := c.ListTaskRuns(ctx, t.ID, apiclient.TaskRunQuery{Page: apiclient.Page{Limit: 1000, Offset: off}})
		if err != nil {
			return nil, err
		}
		var raw struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(l.JSON(), &raw); err != nil || len(raw.Items) != len(l.Items) {
			return nil, fmt.Errorf("decoding the runs of task %s: %v", t.Name, err)
		}
		done := false
		for i := range l.Items {
			r := &l.Items[i]
			if r.CreatedAt.Before(oldest) {
				done = true
			}
			if r.TriggerID != tr.ID {
				continue
			}
			key := ""
			if r.Computer != nil {
				key = r.Computer.ID
			}
			if j, ok := latest[key]; ok {
				if st.runs[j].Attempt < r.Attempt {
					st.runs[j], st.raw[j] = *r, raw.Items[i]
				}
				continue
			}
			latest[key] = len(st.runs)
			st.runs, st.raw = append(st.runs, *r), append(st.raw, raw.Items[i])
		}
		off += len(l.Items)
		if done || len(l.Items) == 0 || off >= l.Total {
			break
		}
	}
	idx := make([]int, len(st.runs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return strings.Compare(runComputer(&st.runs[a]), runComputer(&st.runs[b])) })
	sorted := &waited{fired: true}
	for _, i := range idx {
		sorted.runs, sorted.raw = append(sorted.runs, st.runs[i]), append(sorted.raw, st.raw[i])
	}
	return sorted, nil
}

// printRuns shows the waited runs: a table, then each run's output.
func (inv *invocation) printRuns(g *globals, t *apiclient.Task, st *waited, complete bool) error {
	if g.output == "json" {
		raw := st.raw
		if raw == nil {
			raw = []json.RawMessage{}
		}
		return writeJSON(inv.stdout, marshal(map[string]any{"task": map[string]string{"id": t.ID, "name": t.Name}, "complete": complete, "runs": raw}))
	}
	tw := tabwriter.NewWriter(inv.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPUTER\tSTATE\tEXIT\tRUN ID")
	for i := range st.runs {
		r := &st.runs[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", runComputer(r), r.State, exitText(r), r.ID)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for i := range st.runs {
		r := &st.runs[i]
		if r.Output == "" && r.Error == "" {
			continue
		}
		head := r.State
		if r.ExitCode != nil {
			head += fmt.Sprintf(", exit code %d", *r.ExitCode)
		}
		fmt.Fprintf(inv.stdout, "\n== %s: %s\n", runComputer(r), head)
		if r.Output != "" {
			io.WriteString(inv.stdout, r.Output)
			if !strings.HasSuffix(r.Output, "\n") {
				fmt.Fprintln(inv.stdout)
			}
		}
		if r.Error != "" {
			fmt.Fprintf(inv.stdout, "error: %s\n", r.Error)
		}
	}
	return nil
}

// taskRuns: mamori task-runs show|cancel|retry|download. Runs are named by
// id (see "mamori tasks runs TASK").
func (inv *invocation) taskRuns(args []string) error {
	return inv.group(args, map[string]func([]string) error{
		"show":     inv.runShow,
		"cancel":   inv.runCancel,
		"retry":    inv.runRetry,
		"download": inv.runDownload,
	})
}

// runArg parses RUN_ID and returns a client.
func (inv *invocation) runArg(args []string, synopsis string) (*globals, *apiclient.Client, string, error) {
	fs := inv.flags(synopsis)
	g := inv.globalFlags(fs, true)
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return nil, nil, "", err
	}
	c, err := inv.client(g)
	if err != nil {
		return nil, nil, "", err
	}
	return g, c, pos[0], nil
}

func (inv *invocation) printRun(g *globals, c *apiclient.Client, r *apiclient.TaskRun) error {
	task := r.TaskID
	if g.output == "text" {
		if t, err := c.GetTask(inv.ctx, r.TaskID); err == nil {
			task = t.Name + " (" + t.ID + ")"
		}
	}
	if g.output == "json" {
		return writeJSON(inv.stdout, r.JSON())
	}
	w := tabwriter.NewWriter(inv.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "run:\t%s\ntask:\t%s\ntype:\t%s\ncomputer:\t%s\nstate:\t%s\nattempt:\t%d\nexit code:\t%s\n", r.ID, task, r.Type,
		runComputer(r), r.State, r.Attempt, exitText(r))
	fmt.Fprintf(w, "created:\t%s\nnot before:\t%s\nexpires:\t%s\ndelivered:\t%s\nstarted:\t%s\nfinished:\t%s\nattachment:\t%s\ntrigger:\t%s\n",
		ts(r.CreatedAt), ts(r.NotBefore), ts(r.ExpiresAt), ts(r.DeliveredAt), ts(r.StartedAt), ts(r.FinishedAt), yes(r.Attachment), orDash(r.TriggerID))
	if r.Error != "" {
		fmt.Fprintf(w, "error:\t%s\n", oneLine(r.Error))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if r.Output != "" {
		fmt.Fprintf(inv.stdout, "output:\n%s", r.Output)
		if !strings.HasSuffix(r.Output, "\n") {
			fmt.Fprintln(inv.stdout)
		}
	}
	return nil
}

func (inv *invocation) runShow(args []string) error {
	g, c, id, err := inv.runArg(args, "RUN_ID")
	if err != nil {
		return err
	}
	r, err := c.GetTaskRun(inv.ctx, id)
	if err != nil {
		return err
	}
	return inv.printRun(g, c, r)
}

func (inv *invocation) runCancel(args []string) error {
	g, c, id, err := inv.runArg(args, "RUN_ID\n\nCancels a run that has not finished; an agent that already has it stops it.")
	if err != nil {
		return err
	}
	r, err := c.CancelTaskRun(inv.ctx, id)
	if err != nil {
		return err
	}
	return inv.emit(g, r.JSON(), func(w io.Writer) {
		fmt.Fprintf(w, "Run %s on %s cancelled.\n", r.ID, runComputer(r))
	})
}

func (inv *invocation) runRetry(args []string) error {
	g, c, id, err := inv.runArg(args, "RUN_ID\n\nPlans a failed, expired or cancelled run again, as a new attempt with the same parameters.")
	if err != nil {
		return err
	}
	r, err := c.RetryTaskRun(inv.ctx, id)
	if err != nil {
		return err
	}
	return inv.emit(g, r.JSON(), func(w io.Writer) {
		fmt.Fprintf(w, "Run %s on %s planned again as run %s (attempt %d).\n", id, runComputer(r), r.ID, r.Attempt)
	})
}

func (inv *invocation) runDownload(args []string) error {
	fs := inv.flags("RUN_ID [--file FILE | --file -] [--force]\n\n" +
		"Saves the file a run uploaded (a diagnostics bundle), by default under the server's file name in the\n" +
		"current directory. An existing file is not overwritten unless --force.")
	g := inv.globalFlags(fs, true)
	file := fs.String("file", "", "where to save the file; - for stdout")
	force := fs.Bool("force", false, "overwrite an existing file")
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *file != "" && *file != "-" && !*force {
		if _, err := os.Lstat(*file); err == nil {
			return fmt.Errorf("%s exists; give --force to overwrite it", *file)
		}
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	a, err := c.OpenAttachment(inv.ctx, pos[0])
	if err != nil {
		return err
	}
	defer a.Close()
	if *file == "-" {
		_, err := io.Copy(inv.stdout, a)
		return err
	}
	name := *file
	if name == "" {
		name = a.Name
		if name == "" {
			name = pos[0] + ".bin"
		}
	}
	n, err := saveFile(name, a, *force)
	if err != nil {
		return err
	}
	if g.output == "json" {
		return writeJSON(inv.stdout, marshal(map[string]any{"run": pos[0], "file": name, "bytes": n}))
	}
	fmt.Fprintf(inv.stdout, "Saved %d bytes to %s.\n", n, name)
	return nil
}

// saveFile writes r to name (mode 0600). Without force an existing file
// is refused; with force it is replaced once the download is complete.
func saveFile(name string, r io.Reader, force bool) (int64, error) {
	if !force {
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return 0, fmt.Errorf("%s exists; give --force to overwrite it", name)
		}
		if err != nil {
			return 0, err
		}
		n, err := io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(name)
			return n, err
		}
		return n, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*.part")
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(tmp, r)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), name)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return n, err
	}
	return n, nil
}
