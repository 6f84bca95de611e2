package admincli

import (
	"fmt"
	"io"
)

// settings: mamori settings retention.
func (inv *invocation) settings(args []string) error {
	return inv.group(args, map[string]func([]string) error{
		"retention": inv.settingsRetention,
	})
}

// settingsRetention shows the retention settings, or changes the periods
// its flags give (the others are kept).
func (inv *invocation) settingsRetention(args []string) error {
	fs := inv.flags("[--events-days N] [--detections-days N] [--task-runs-days N]\n\n" +
		"Shows how long the server keeps records, or changes the periods given (days, 1-3650).\n" +
		"Events: computer and server events. Detections: resolved ones (unresolved ones stay).\n" +
		"Task runs: finished ones, with the files they uploaded. A pass each hour deletes what is older.")
	g := inv.globalFlags(fs, true)
	events := fs.Int("events-days", 0, "keep computer and server events this many days")
	detections := fs.Int("detections-days", 0, "keep resolved detections this many days after their resolution")
	runs := fs.Int("task-runs-days", 0, "keep finished task runs (and their uploads) this many days")
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	r, err := c.GetRetention(inv.ctx)
	if err != nil {
		return err
	}
	changed, given := false, setFlags(fs)
	for _, f := range []struct {
		flag string
		v    int
		dst  *int
	}{{"events-days", *events, &r.EventsDays}, {"detections-days", *detections, &r.DetectionsDays}, {"task-runs-days", *runs, &r.TaskRunsDays}} {
		if !given[f.flag] {
			continue
		}
		if f.v < 1 {
			return usagef("--%s must be 1 or more days", f.flag)
		}
		*f.dst, changed = f.v, true
	}
	if changed {
		if r, err = c.PutRetention(inv.ctx, *r); err != nil {
			return err
		}
	}
	return inv.emit(g, r.JSON(), func(w io.Writer) {
		fmt.Fprintf(w, "events:\t%d days\nresolved detections:\t%d days\nfinished task runs:\t%d days\n", r.EventsDays, r.DetectionsDays, r.TaskRunsDays)
	})
}
