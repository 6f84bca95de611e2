package admincli

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/mamori/mamori/internal/apiclient"
)

// tasks: mamori tasks types|list|show|create|update|delete|run|runs|trigger.
// A task is named by id or exact name.
func (inv *invocation) tasks(args []string) error {
	return inv.group(args, map[string]func([]string) error{
		"types":   inv.tasksTypes,
		"list":    inv.tasksList,
		"show":    inv.tasksShow,
		"create":  inv.tasksCreate,
		"update":  inv.tasksUpdate,
		"delete":  inv.tasksDelete,
		"run":     inv.tasksRun,
		"runs":    inv.tasksRuns,
		"trigger": inv.tasksTrigger,
	})
}

// tasksTrigger: mamori tasks trigger add|list|update|delete.
func (inv *invocation) tasksTrigger(args []string) error {
	return inv.group(args, map[string]func([]string) error{
		"add":    inv.triggerAdd,
		"list":   inv.triggerList,
		"update": inv.triggerUpdate,
		"delete": inv.triggerDelete,
	})
}

const paramsHelp = `Parameters ("mamori tasks types TYPE" lists them):
  --param NAME=VALUE   one parameter; for list parameters each flag adds an item
                       (or give a JSON array); sizes take K, M and G suffixes
  --params JSON|@FILE  all parameters as a JSON object; --param changes it`

// findTask resolves a task id or exact name.
func (inv *invocation) findTask(c *apiclient.Client, idOrName string) (*apiclient.Task, error) {
	l, err := c.ListTasks(inv.ctx, "")
	if err != nil {
		return nil, err
	}
	id, err := pickID("task", idOrName, l.Items, func(t *apiclient.Task) string { return t.ID }, func(t *apiclient.Task) string { return t.Name })
	if err != nil {
		return nil, err
	}
	return c.GetTask(inv.ctx, id)
}

func (inv *invocation) tasksTypes(args []string) error {
	fs := inv.flags("[TYPE]\n\nLists the task types, or the parameters of one.")
	g := inv.globalFlags(fs, true)
	pos, err := inv.parse(fs, args, 0, 1)
	if err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	tt, err := c.TaskTypes(inv.ctx)
	if err != nil {
		return err
	}
	if len(pos) == 1 {
		ti := findType(tt, pos[0])
		if ti == nil {
			return usagef("unknown task type %q (known: %s)", pos[0], strings.Join(typeNames(tt), ", "))
		}
		return inv.emit(g, marshal(ti), func(w io.Writer) {
			fmt.Fprintf(w, "type:\t%s\nruns on:\t%s\ndescription:\t%s\n\nPARAMETER\tTYPE\tREQUIRED\tDEFAULT\tDESCRIPTION\n", ti.Type, runsOn(ti.Server), ti.Doc)
			if len(ti.Params) == 0 {
				fmt.Fprintf(w, "(none)\t\t\t\t\n")
			}
			for _, p := range ti.Params {
				def := "-"
				if len(p.Default) > 0 && string(p.Default) != "null" {
					def = quoteIfBlank(jsonText(p.Default))
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", p.Name, p.Type, yes(p.Required), def, p.Doc)
			}
		})
	}
	return inv.emit(g, tt.JSON(), func(w io.Writer) {
		fmt.Fprintln(w, "TYPE\tRUNS ON\tPARAMETERS\tDESCRIPTION")
		for _, ti := range tt.Types {
			var ps []string
			for _, p := range ti.Params {
				if p.Required {
					ps = append(ps, p.Name+"*")
				} else {
					ps = append(ps, p.Name)
				}
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", ti.Type, runsOn(ti.Server), orDash(strings.Join(ps, ", ")), ti.Doc)
		}
		fmt.Fprintf(w, "\n(* required)\ntrigger kinds:\t%s\nevents:\t%s\n", strings.Join(tt.TriggerKinds, ", "), strings.Join(tt.Events, ", "))
	})
}

func runsOn(server bool) string {
	if server {
		return "server"
	}
	return "computers"
}

func findType(tt *apiclient.TaskTypes, name string) *apiclient.TaskType {
	for i := range tt.Types {
		if tt.Types[i].Type == name {
			return &tt.Types[i]
		}
	}
	return nil
}

func typeNames(tt *apiclient.TaskTypes) []string {
	var out []string
	for _, t := range tt.Types {
		out = append(out, t.Type)
	}
	return out
}

// runStates are the states of a run, in their order.
var runStates = []string{apiclient.RunPlanned, apiclient.RunDelivered, apiclient.RunRunning, apiclient.RunSucceeded, apiclient.RunFailed,
	apiclient.RunExpired, apiclient.RunCancelled}

// runCounts summarises run counts by state: "2 succeeded, 1 failed".
func runCounts(m map[string]int) string {
	var out []string
	for _, s := range runStates {
		if m[s] > 0 {
			out = append(out, fmt.Sprintf("%d %s", m[s], s))
		}
	}
	for _, s := range sortedKeys(m) { // states this client does not know
		if !slices.Contains(runStates, s) && m[s] > 0 {
			out = append(out, fmt.Sprintf("%d %s", m[s], s))
		}
	}
	return orDash(strings.Join(out, ", "))
}

func (inv *invocation) tasksList(args []string) error {
	fs := inv.flags("[--type TYPE]")
	g := inv.globalFlags(fs, true)
	typ := fs.String("type", "", "only tasks of this type")
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	l, err := c.ListTasks(inv.ctx, *typ)
	if err != nil {
		return err
	}
	return inv.emit(g, l.JSON(), func(w io.Writer) {
		fmt.Fprintln(w, "NAME\tTYPE\tGROUP\tRUNS\tID")
		for _, t := range l.Items {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.Name, t.Type, t.Group.Path, runCounts(t.Runs), t.ID)
		}
	})
}

// printTask shows a task, with its triggers when it has them (GetTask).
func (inv *invocation) printTask(g *globals, c *apiclient.Client, t *apiclient.Task) error {
	return inv.emit(g, t.JSON(), func(w io.Writer) {
		fmt.Fprintf(w, "name:\t%s\nid:\t%s\ntype:\t%s (runs on %s)\ngroup:\t%s\ndescription:\t%s\n", t.Name, t.ID, t.Type, runsOn(t.Server),
			t.Group.Path, orDash(t.Description))
		fmt.Fprintf(w, "created:\t%s by %s\nupdated:\t%s\nversion:\t%d\nruns:\t%s\n", ts(t.CreatedAt), orDash(t.CreatedBy), ts(t.UpdatedAt), t.Version, runCounts(t.Runs))
		var params map[string]json.RawMessage
		if json.Unmarshal(t.Params, &params) == nil && len(params) > 0 {
			fmt.Fprintf(w, "\nPARAMETER\tVALUE\n")
			for _, k := range sortedKeys(params) {
				fmt.Fprintf(w, "%s\t%s\n", k, quoteIfBlank(jsonText(params[k])))
			}
		}
		if t.Triggers != nil {
			fmt.Fprintln(w)
			triggerTable(w, t.Triggers, inv.newNamer(c))
		}
	})
}

func (inv *invocation) tasksShow(args []string) error {
	fs := inv.flags("ID_OR_NAME")
	g := inv.globalFlags(fs, true)
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	t, err := inv.findTask(c, pos[0])
	if err != nil {
		return err
	}
	return inv.printTask(g, c, t)
}

// paramFlags collect --param, --params and --unset-param.
type paramFlags struct {
	set, unset stringList
	all        string
}

func newParamFlags(fs *flag.FlagSet, update bool) *paramFlags {
	p := &paramFlags{}
	fs.Var(&p.set, "param", "a parameter, NAME=VALUE (repeatable)")
	if update {
		fs.StringVar(&p.all, "params", "", "replace all parameters with this JSON object, or @FILE")
		fs.Var(&p.unset, "unset-param", "give parameter NAME its default again (repeatable)")
	} else {
		fs.StringVar(&p.all, "params", "", "the parameters as a JSON object, or @FILE")
	}
	return p
}

func (p *paramFlags) given() bool { return len(p.set) > 0 || len(p.unset) > 0 || p.all != "" }

// applyParams computes a task's parameters: base (the task's, or
// --params), less --unset-param, changed by --param (converted by the
// parameter types of ti; nil ti: sent as text).
func (inv *invocation) applyParams(p *paramFlags, base json.RawMessage, ti *apiclient.TaskType) (json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	if p.all != "" {
		raw, err := inv.jsonArg("params", p.all)
		if err != nil {
			return nil, err
		}
		base = raw
	}
	if len(base) > 0 {
		if err := json.Unmarshal(base, &out); err != nil {
			return nil, usagef("--params must be a JSON object")
		}
		if out == nil {
			out = map[string]json.RawMessage{}
		}
	}
	for _, name := range p.unset {
		if _, ok := out[name]; !ok {
			return nil, usagef("--unset-param %s: the task has no such parameter set", name)
		}
		delete(out, name)
	}
	types := map[string]string{}
	if ti != nil {
		for _, x := range ti.Params {
			types[x.Name] = x.Type
		}
	}
	lists := map[string][]string{}
	seen := map[string]bool{}
	var order []string
	for _, arg := range p.set {
		name, v, ok := strings.Cut(arg, "=")
		if !ok || name == "" {
			return nil, usagef("--param %q must be NAME=VALUE", arg)
		}
		typ := types[name]
		if typ == "list" {
			if !seen[name] {
				order = append(order, name)
				lists[name] = []string{}
			}
			seen[name] = true
			if strings.HasPrefix(strings.TrimSpace(v), "[") {
				var items []string
				if err := json.Unmarshal([]byte(v), &items); err != nil {
					return nil, usagef("--param %s: %q is not a JSON array of strings", name, v)
				}
				lists[name] = append(lists[name], items...)
			} else if v != "" {
				lists[name] = append(lists[name], v)
			}
			continue
		}
		if seen[name] {
			return nil, usagef("--param %s is given twice", name)
		}
		seen[name] = true
		switch typ {
		case "int":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, usagef("--param %s must be a whole number", name)
			}
			out[name] = marshal(n)
		case "size":
			n, err := parseSize(v)
			if err != nil {
				return nil, usagef("--param %s must be a size like 512K, 10M or 1G", name)
			}
			out[name] = marshal(n)
		default:
			out[name] = marshal(v)
		}
	}
	for _, name := range order {
		out[name] = marshal(lists[name])
	}
	return marshal(out), nil
}

// parseSize reads 512, 512K, 10M, 1G, 1T (binary multiples).
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}} {
		if r, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = r, u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

func (inv *invocation) tasksCreate(args []string) error {
	fs := inv.flags("NAME --type TYPE [--param NAME=VALUE]... [--params JSON|@FILE] [--group PATH] [--description TEXT]\n\n" +
		"\"mamori tasks types\" lists the types.\n" + paramsHelp)
	g := inv.globalFlags(fs, true)
	typ := fs.String("type", "", "the task type (scan, run_command, diagnostics, ...)")
	group := fs.String("group", "", "static group path the task lives in (who may see and run it; default your home group)")
	desc := fs.String("description", "", "what the task is for")
	pf := newParamFlags(fs, false)
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *typ == "" {
		fs.Usage()
		return usagef("%s: --type is required", inv.name)
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	req := apiclient.TaskRequest{Name: pos[0], Type: *typ, Description: *desc, Group: *group}
	if pf.given() {
		tt, err := c.TaskTypes(inv.ctx)
		if err != nil {
			return err
		}
		// An unknown type is refused by the server, which lists the known ones.
		if req.Params, err = inv.applyParams(pf, nil, findType(tt, *typ)); err != nil {
			return err
		}
	}
	t, err := c.CreateTask(inv.ctx, req)
	if err != nil {
		return err
	}
	return inv.printTask(g, c, t)
}

func (inv *invocation) tasksUpdate(args []string) error {
	fs := inv.flags("ID_OR_NAME [--name NAME] [--description TEXT] [--group PATH] [--param NAME=VALUE]... [--unset-param NAME]... [--params JSON|@FILE]\n\n" +
		"Parameters not named keep their values; runs already planned keep the parameters they had.\n" + paramsHelp)
	g := inv.globalFlags(fs, true)
	name := fs.String("name", "", "new name")
	desc := fs.String("description", "", "new description")
	group := fs.String("group", "", "static group path the task moves to")
	pf := newParamFlags(fs, true)
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	set := setFlags(fs)
	if !set["name"] && !set["description"] && !set["group"] && !pf.given() {
		fs.Usage()
		return usagef("%s: nothing to change", inv.name)
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	t, err := inv.findTask(c, pos[0])
	if err != nil {
		return err
	}
	u := apiclient.TaskUpdate{Version: t.Version}
	if set["name"] {
		u.Name = name
	}
	if set["description"] {
		u.Description = desc
	}
	if set["group"] {
		u.Group = group
	}
	if pf.given() {
		tt, err := c.TaskTypes(inv.ctx)
		if err != nil {
			return err
		}
		if u.Params, err = inv.applyParams(pf, t.Params, findType(tt, t.Type)); err != nil {
			return err
		}
	}
	if t, err = c.UpdateTask(inv.ctx, t.ID, u); err != nil {
		return err
	}
	return inv.printTask(g, c, t)
}

func (inv *invocation) tasksDelete(args []string) error {
	fs := inv.flags("ID_OR_NAME\n\nDeletes the task with its triggers and runs.")
	g := inv.globalFlags(fs, true)
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	t, err := inv.findTask(c, pos[0])
	if err != nil {
		return err
	}
	if err := c.DeleteTask(inv.ctx, t.ID, t.Version); err != nil {
		return err
	}
	inv.done(g, "Task %s deleted.", t.Name)
	return nil
}

func (inv *invocation) tasksRuns(args []string) error {
	fs := inv.flags("ID_OR_NAME [--state STATE] [--computer ID_OR_NAME] [--limit N] [--offset N]")
	g := inv.globalFlags(fs, true)
	state := fs.String("state", "", "only runs in this state: planned, delivered, running, succeeded, failed, expired or cancelled")
	computer := fs.String("computer", "", "only the runs on this computer")
	page := pageFlags(fs)
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	t, err := inv.findTask(c, pos[0])
	if err != nil {
		return err
	}
	q := apiclient.TaskRunQuery{State: *state, Page: *page}
	if *computer != "" {
		comp, err := inv.findComputer(c, *computer)
		if err != nil {
			return err
		}
		q.Computer = comp.ID
	}
	l, err := c.ListTaskRuns(inv.ctx, t.ID, q)
	if err != nil {
		return err
	}
	inv.moreNote(g, len(l.Items), l.Total, page.Offset)
	return inv.emit(g, l.JSON(), func(w io.Writer) { runTable(w, l.Items) })
}

// runComputer names the computer of a run ("(server)" for server runs).
func runComputer(r *apiclient.TaskRun) string {
	if r.Computer == nil {
		return "(server)"
	}
	return orDefault(r.Computer.Path, r.Computer.ID)
}

func exitText(r *apiclient.TaskRun) string {
	if r.ExitCode == nil {
		return "-"
	}
	return strconv.Itoa(*r.ExitCode)
}

func runTable(w io.Writer, runs []apiclient.TaskRun) {
	fmt.Fprintln(w, "CREATED\tCOMPUTER\tSTATE\tATTEMPT\tEXIT\tRUN ID")
	for i := range runs {
		r := &runs[i]
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", ts(r.CreatedAt), runComputer(r), r.State, r.Attempt, exitText(r), r.ID)
	}
}

// --- Triggers ----------------------------------------------------------------

const triggerHelp = `When (--kind is implied by --cron, --event and --joined-group):
  --kind asap                                     as soon as possible
  --kind once --at 2026-12-24T18:00:00+01:00      once
  --kind daily --at 03:30                         every day
  --kind weekly --weekdays mon,thu --at 03:30     on these days
  --kind monthly --day-of-month 1 --at 03:30      -1 is the last day
  --kind monthly --nth-weekday 2:mon --at 03:30   last:fri is the last Friday
  --kind yearly --month 12 --day-of-month 31 --at 23:00
  --cron '0 3 * * 1-5'                            five cron fields
  --joined-group ID_OR_NAME                       on each computer joining the dynamic group
  --event detection_found|agent_connected|task_failed
  --kind server_started                           when the server starts (server tasks)
--time-zone names the zone of --at (default UTC). --random-delay spreads the
starts; --expiry is how long runs wait for offline computers (default 24h).
Throttling: --window 22:00-06:00, --once-per 1h, --every-nth N, --n-within N/PERIOD.
--trigger JSON|@FILE gives the whole specification (the API's fields); the
flags above change it. An empty value (0 for numbers) removes a field.
Targets (none for server tasks): --computer, --group and --dynamic-group, repeatable.`

// triggerFlags are the flags of trigger add and update.
type triggerFlags struct {
	spec, kind, at, tz, weekdays, nth, cron, joined, event string
	randomDelay, expiry, window, oncePer, nWithin          string
	dayOfMonth, month, everyNth                            int
	targets                                                *targetFlags
}

func newTriggerFlags(fs *flag.FlagSet) *triggerFlags {
	t := &triggerFlags{}
	fs.StringVar(&t.spec, "trigger", "", "the whole trigger specification as JSON, or @FILE")
	fs.StringVar(&t.kind, "kind", "", "asap, once, daily, weekly, monthly, yearly, cron, joined_dynamic_group, event or server_started")
	fs.StringVar(&t.at, "at", "", "time of day HH:MM, or an RFC 3339 time for once")
	fs.StringVar(&t.tz, "time-zone", "", "IANA time zone of --at, like Europe/Berlin (default UTC)")
	fs.StringVar(&t.weekdays, "weekdays", "", "weekly: days like mon,wed,fri")
	fs.IntVar(&t.dayOfMonth, "day-of-month", 0, "monthly, yearly: 1..31, or -1 for the last day")
	fs.StringVar(&t.nth, "nth-weekday", "", "monthly: N:DAY like 2:mon (second Monday) or last:fri")
	fs.IntVar(&t.month, "month", 0, "yearly: 1..12")
	fs.StringVar(&t.cron, "cron", "", "cron expression, five fields (implies --kind cron)")
	fs.StringVar(&t.joined, "joined-group", "", "dynamic group, id or name: run on each computer joining it (implies --kind joined_dynamic_group)")
	fs.StringVar(&t.event, "event", "", "detection_found, agent_connected or task_failed (implies --kind event)")
	fs.StringVar(&t.randomDelay, "random-delay", "", "spread each start over a random delay up to this duration (at most 24h)")
	fs.StringVar(&t.expiry, "expiry", "", "how long runs wait for their computer (default 24h, at most 168h)")
	fs.StringVar(&t.window, "window", "", "throttle: only start within this daily window, HH:MM-HH:MM")
	fs.StringVar(&t.oncePer, "once-per", "", "throttle: start at most once per this duration")
	fs.IntVar(&t.everyNth, "every-nth", 0, "throttle: start only on every Nth occurrence")
	fs.StringVar(&t.nWithin, "n-within", "", "throttle: start only when N occurrences happened within PERIOD, N/PERIOD like 3/1h")
	t.targets = newTargetFlags(fs)
	return t
}

// triggerSpecFlags are the flags that change a trigger's specification.
var triggerSpecFlags = []string{"trigger", "kind", "at", "time-zone", "weekdays", "day-of-month", "nth-weekday", "month", "cron",
	"joined-group", "event", "random-delay", "expiry", "window", "once-per", "every-nth", "n-within"}

// kindSpecific are the fields of one trigger kind, dropped when the kind
// changes.
var kindSpecific = []string{"at", "weekdays", "day_of_month", "nth_weekday", "month", "cron", "dynamic_group_id", "event"}

// buildTrigger applies the flags given to base (a trigger's specification, or
// nil) and returns the new specification.
func (inv *invocation) buildTrigger(c *apiclient.Client, t *triggerFlags, set map[string]bool, base json.RawMessage) (json.RawMessage, error) {
	spec := map[string]any{}
	if set["trigger"] {
		raw, err := inv.jsonArg("trigger", t.spec)
		if err != nil {
			return nil, err
		}
		base = raw
	}
	if len(base) > 0 {
		if err := json.Unmarshal(base, &spec); err != nil || spec == nil {
			return nil, usagef("--trigger must be a JSON object like {\"kind\": \"daily\", \"at\": \"03:30\"}")
		}
	}
	kind := t.kind
	implied := map[string]string{"cron": "cron", "event": "event", "joined-group": "joined_dynamic_group"}
	for f, k := range implied {
		if set[f] && !set["kind"] {
			if kind != "" && kind != k {
				return nil, usagef("--cron, --event and --joined-group are different kinds of trigger; give one")
			}
			kind = k
		}
	}
	if set["kind"] {
		for f, k := range implied {
			if set[f] && k != kind {
				return nil, usagef("--%s does not go with --kind %s", f, kind)
			}
		}
	}
	if kind != "" && spec["kind"] != kind {
		if !set["trigger"] {
			for _, k := range kindSpecific {
				delete(spec, k)
			}
		}
		spec["kind"] = kind
	}
	str := func(flagName, key, v string) {
		if !set[flagName] {
			return
		}
		if v == "" {
			delete(spec, key)
		} else {
			spec[key] = v
		}
	}
	num := func(flagName, key string, v int) {
		if !set[flagName] {
			return
		}
		if v == 0 {
			delete(spec, key)
		} else {
			spec[key] = v
		}
	}
	str("at", "at", t.at)
	str("time-zone", "time_zone", t.tz)
	str("cron", "cron", t.cron)
	str("event", "event", t.event)
	str("random-delay", "random_delay", t.randomDelay)
	str("expiry", "expiry", t.expiry)
	num("day-of-month", "day_of_month", t.dayOfMonth)
	num("month", "month", t.month)
	if set["weekdays"] {
		var days []string
		for _, d := range strings.Split(t.weekdays, ",") {
			if d = strings.TrimSpace(d); d != "" {
				days = append(days, strings.ToLower(d))
			}
		}
		if len(days) == 0 {
			delete(spec, "weekdays")
		} else {
			spec["weekdays"] = days
		}
	}
	if set["nth-weekday"] {
		if t.nth == "" {
			delete(spec, "nth_weekday")
		} else {
			n, day, ok := strings.Cut(t.nth, ":")
			k, err := strconv.Atoi(n)
			if n == "last" {
				k, err = -1, nil
			}
			if !ok || err != nil || day == "" {
				return nil, usagef("--nth-weekday must be N:DAY like 2:mon, or last:fri")
			}
			spec["nth_weekday"] = map[string]any{"n": k, "weekday": strings.ToLower(day)}
		}
	}
	if set["joined-group"] {
		if t.joined == "" {
			delete(spec, "dynamic_group_id")
		} else {
			id, err := inv.findDynamicGroupID(c, t.joined)
			if err != nil {
				return nil, err
			}
			spec["dynamic_group_id"] = id
		}
	}
	th, _ := spec["throttle"].(map[string]any)
	if th == nil {
		th = map[string]any{}
	}
	if set["window"] {
		if t.window == "" {
			delete(th, "window")
		} else {
			from, to, ok := strings.Cut(t.window, "-")
			if !ok {
				return nil, usagef("--window must be HH:MM-HH:MM like 22:00-06:00")
			}
			th["window"] = map[string]string{"from": strings.TrimSpace(from), "to": strings.TrimSpace(to)}
		}
	}
	if set["once-per"] {
		if t.oncePer == "" {
			delete(th, "once_per")
		} else {
			th["once_per"] = t.oncePer
		}
	}
	if set["every-nth"] {
		if t.everyNth == 0 {
			delete(th, "every_nth")
		} else {
			th["every_nth"] = t.everyNth
		}
	}
	if set["n-within"] {
		if t.nWithin == "" {
			delete(th, "n_within")
		} else {
			n, period, ok := strings.Cut(t.nWithin, "/")
			k, err := strconv.Atoi(n)
			if !ok || err != nil || period == "" {
				return nil, usagef("--n-within must be N/PERIOD like 3/1h")
			}
			th["n_within"] = map[string]any{"n": k, "period": period}
		}
	}
	if len(th) > 0 {
		spec["throttle"] = th
	} else {
		delete(spec, "throttle")
	}
	if k, _ := spec["kind"].(string); k == "" {
		return nil, usagef("%s: say when the task runs: --kind (or --cron, --event, --joined-group) or --trigger", inv.name)
	}
	return marshal(spec), nil
}

// describeTrigger summarises a trigger specification.
func describeTrigger(raw json.RawMessage, n *namer) string {
	var t struct {
		Kind       string   `json:"kind"`
		At         string   `json:"at"`
		TimeZone   string   `json:"time_zone"`
		Weekdays   []string `json:"weekdays"`
		DayOfMonth int      `json:"day_of_month"`
		NthWeekday *struct {
			N       int    `json:"n"`
			Weekday string `json:"weekday"`
		} `json:"nth_weekday"`
		Month          int             `json:"month"`
		Cron           string          `json:"cron"`
		DynamicGroupID string          `json:"dynamic_group_id"`
		Event          string          `json:"event"`
		RandomDelay    string          `json:"random_delay"`
		Expiry         string          `json:"expiry"`
		Throttle       json.RawMessage `json:"throttle"`
	}
	if json.Unmarshal(raw, &t) != nil {
		return string(raw)
	}
	var s string
	switch t.Kind {
	case "asap":
		s = "as soon as possible"
	case "once":
		s = "once at " + t.At
	case "daily":
		s = "daily at " + t.At
	case "weekly":
		s = "weekly on " + strings.Join(t.Weekdays, ",") + " at " + t.At
	case "monthly":
		switch {
		case t.NthWeekday != nil && t.NthWeekday.N == -1:
			s = "monthly on the last " + t.NthWeekday.Weekday
		case t.NthWeekday != nil:
			s = fmt.Sprintf("monthly on %s %s", ordinal(t.NthWeekday.N), t.NthWeekday.Weekday)
		case t.DayOfMonth == -1:
			s = "monthly on the last day"
		default:
			s = fmt.Sprintf("monthly on day %d", t.DayOfMonth)
		}
		s += " at " + t.At
	case "yearly":
		s = fmt.Sprintf("yearly on %02d-%02d at %s", t.Month, t.DayOfMonth, t.At)
	case "cron":
		s = "cron " + t.Cron
	case "joined_dynamic_group":
		s = "on joining dynamic group " + n.dyn(t.DynamicGroupID)
	case "event":
		s = "on event " + t.Event
	case "server_started":
		s = "when the server starts"
	default:
		s = t.Kind
	}
	if t.TimeZone != "" {
		s += " " + t.TimeZone
	}
	if t.RandomDelay != "" {
		s += ", random delay " + t.RandomDelay
	}
	if t.Expiry != "" {
		s += ", expiry " + t.Expiry
	}
	if len(t.Throttle) > 0 && string(t.Throttle) != "null" {
		s += ", throttled " + jsonText(t.Throttle)
	}
	return s
}

func ordinal(n int) string {
	switch n {
	case 1:
		return "the 1st"
	case 2:
		return "the 2nd"
	case 3:
		return "the 3rd"
	}
	return fmt.Sprintf("the %dth", n)
}

func triggerTable(w io.Writer, trs []apiclient.Trigger, n *namer) {
	fmt.Fprintln(w, "TRIGGER\tWHEN\tTARGETS\tENABLED\tNEXT\tLAST FIRED")
	if len(trs) == 0 {
		fmt.Fprintln(w, "(none)\t\t\t\t\t")
	}
	for i := range trs {
		tr := &trs[i]
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", tr.ID, describeTrigger(tr.Trigger, n), n.targets(tr.Targets), yes(tr.Enabled), ts(tr.NextFireAt), ts(tr.LastFiredAt))
	}
}

func (inv *invocation) printTrigger(g *globals, c *apiclient.Client, t *apiclient.Task, tr *apiclient.Trigger) error {
	return inv.emit(g, tr.JSON(), func(w io.Writer) {
		n := inv.newNamer(c)
		fmt.Fprintf(w, "trigger:\t%s\ntask:\t%s\nwhen:\t%s\ntargets:\t%s\nenabled:\t%s\nnext:\t%s\nlast fired:\t%s\nversion:\t%d\n",
			tr.ID, t.Name, describeTrigger(tr.Trigger, n), n.targets(tr.Targets), yes(tr.Enabled), ts(tr.NextFireAt), ts(tr.LastFiredAt), tr.Version)
	})
}

func (inv *invocation) triggerAdd(args []string) error {
	fs := inv.flags("TASK (--kind KIND ... | --cron EXPR | --event EVENT | --joined-group DG | --trigger JSON|@FILE) [targets] [--disabled]\n\n" + triggerHelp)
	g := inv.globalFlags(fs, true)
	tf := newTriggerFlags(fs)
	disabled := fs.Bool("disabled", false, "add the trigger disabled")
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	set := setFlags(fs)
	if !set["trigger"] && !set["kind"] && !set["cron"] && !set["event"] && !set["joined-group"] {
		fs.Usage()
		return usagef("%s: say when the task runs: --kind (or --cron, --event, --joined-group) or --trigger", inv.name)
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	t, err := inv.findTask(c, pos[0])
	if err != nil {
		return err
	}
	spec, err := inv.buildTrigger(c, tf, set, nil)
	if err != nil {
		return err
	}
	targets, err := inv.resolveTargets(c, tf.targets)
	if err != nil {
		return err
	}
	req := apiclient.TriggerRequest{Trigger: spec, Targets: targets}
	if *disabled {
		f := false
		req.Enabled = &f
	}
	tr, err := c.CreateTrigger(inv.ctx, t.ID, req)
	if err != nil {
		return err
	}
	return inv.printTrigger(g, c, t, tr)
}

func (inv *invocation) triggerList(args []string) error {
	fs := inv.flags("TASK")
	g := inv.globalFlags(fs, true)
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	t, err := inv.findTask(c, pos[0])
	if err != nil {
		return err
	}
	l, err := c.ListTriggers(inv.ctx, t.ID)
	if err != nil {
		return err
	}
	return inv.emit(g, l.JSON(), func(w io.Writer) { triggerTable(w, l.Items, inv.newNamer(c)) })
}

func (inv *invocation) triggerUpdate(args []string) error {
	fs := inv.flags("TASK TRIGGER_ID [when flags] [targets | --no-targets] [--enable | --disable]\n\n" +
		"Fields not named keep their values; changing the kind drops the fields of the old kind.\n" +
		"Targets given replace the trigger's targets. The schedule is computed again from now.\n" + triggerHelp)
	g := inv.globalFlags(fs, true)
	tf := newTriggerFlags(fs)
	noTargets := fs.Bool("no-targets", false, "remove every target (a joined-group trigger runs on the joining computers)")
	enable := fs.Bool("enable", false, "enable the trigger")
	disable := fs.Bool("disable", false, "disable the trigger")
	pos, err := inv.parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	set := setFlags(fs)
	if *enable && *disable {
		return usagef("give --enable or --disable, not both")
	}
	if *noTargets && tf.targets.given() {
		return usagef("give targets or --no-targets, not both")
	}
	changesSpec := false
	for _, name := range triggerSpecFlags {
		changesSpec = changesSpec || set[name]
	}
	if !changesSpec && !*enable && !*disable && !*noTargets && !tf.targets.given() {
		fs.Usage()
		return usagef("%s: nothing to change", inv.name)
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	t, err := inv.findTask(c, pos[0])
	if err != nil {
		return err
	}
	tr, err := c.GetTrigger(inv.ctx, t.ID, pos[1])
	if err != nil {
		return err
	}
	u := apiclient.TriggerUpdate{Version: tr.Version}
	if changesSpec {
		if u.Trigger, err = inv.buildTrigger(c, tf, set, tr.Trigger); err != nil {
			return err
		}
	}
	switch {
	case *noTargets:
		u.Targets = &[]apiclient.Target{}
	case tf.targets.given():
		targets, err := inv.resolveTargets(c, tf.targets)
		if err != nil {
			return err
		}
		u.Targets = &targets
	}
	if *enable || *disable {
		on := *enable
		u.Enabled = &on
	}
	if tr, err = c.UpdateTrigger(inv.ctx, t.ID, tr.ID, u); err != nil {
		return err
	}
	return inv.printTrigger(g, c, t, tr)
}

func (inv *invocation) triggerDelete(args []string) error {
	fs := inv.flags("TASK TRIGGER_ID")
	g := inv.globalFlags(fs, true)
	pos, err := inv.parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	t, err := inv.findTask(c, pos[0])
	if err != nil {
		return err
	}
	tr, err := c.GetTrigger(inv.ctx, t.ID, pos[1])
	if err != nil {
		return err
	}
	if err := c.DeleteTrigger(inv.ctx, t.ID, tr.ID, tr.Version); err != nil {
		return err
	}
	inv.done(g, "Trigger %s of task %s deleted.", pos[1], t.Name)
	return nil
}
