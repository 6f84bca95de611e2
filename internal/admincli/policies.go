package admincli

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/mamori/mamori/internal/apiclient"
	"github.com/mamori/mamori/internal/errcode"
)

// policies: mamori policies list|show|create|update|delete|schema|assign|unassign|rank.
// A policy is named by id or exact name.
func (inv *invocation) policies(args []string) error {
	return inv.group(args, map[string]func([]string) error{
		"list":     inv.policiesList,
		"show":     inv.policiesShow,
		"create":   inv.policiesCreate,
		"update":   inv.policiesUpdate,
		"delete":   inv.policiesDelete,
		"schema":   inv.policiesSchema,
		"assign":   inv.policiesAssign,
		"unassign": inv.policiesUnassign,
		"rank":     inv.policiesRank,
	})
}

const settingsHelp = `Settings:
  --set KEY=VALUE     set KEY; a policy assigned later may override it
  --force KEY=VALUE   set KEY and lock it: no later policy can override it
KEY is PRODUCT.SETTING (agent.check_in_interval) or SETTING alone; a policy
configures one product ("mamori policies schema" lists the settings). For list
settings each flag gives one item (repeat it for more, or give a JSON array
like '["/tmp/*","/var/cache/*"]'; KEY=[] is the empty list), and the operator
says how the list combines with what earlier policies set:
  KEY=ITEM   replace    KEY+=ITEM   append    KEY^=ITEM   prepend
--settings JSON|@FILE gives all settings as the API's JSON object
  {"check_in_interval": {"flag": "apply", "value": "30s"},
   "scan_exclusions": {"flag": "force", "value": ["/tmp/*"], "merge": "append"}}
and --set/--force change it.`

// findPolicy resolves a policy id or exact name.
func (inv *invocation) findPolicy(c *apiclient.Client, idOrName string) (*apiclient.Policy, error) {
	l, err := c.ListPolicies(inv.ctx, "")
	if err != nil {
		return nil, err
	}
	id, err := pickID("policy", idOrName, l.Items, func(p *apiclient.Policy) string { return p.ID }, func(p *apiclient.Policy) string { return p.Name })
	if err != nil {
		return nil, err
	}
	return c.GetPolicy(inv.ctx, id)
}

func (inv *invocation) policiesList(args []string) error {
	fs := inv.flags("[--product agent|protection|updates]")
	g := inv.globalFlags(fs, true)
	product := fs.String("product", "", "only policies of this product")
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	l, err := c.ListPolicies(inv.ctx, *product)
	if err != nil {
		return err
	}
	return inv.emit(g, l.JSON(), func(w io.Writer) {
		fmt.Fprintln(w, "NAME\tPRODUCT\tGROUP\tSETTINGS\tID")
		for _, p := range l.Items {
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", p.Name, p.Product, p.Group.Path, len(p.Settings), p.ID)
		}
	})
}

// assignmentTarget describes an assignment's target: "group All/Servers".
func assignmentTarget(a *apiclient.Assignment) string {
	name := orDefault(a.Target.Path, a.Target.ID)
	switch a.TargetType {
	case apiclient.TargetStatic:
		return "group " + name
	case apiclient.TargetDynamic:
		return "dynamic group " + name
	}
	return a.TargetType + " " + name
}

// settingValue shows a policy's value with its merge rule.
func settingValue(v apiclient.PolicyValue) string {
	s := jsonText(v.Value)
	if v.Merge != "" && v.Merge != "replace" {
		s += " (" + v.Merge + ")"
	}
	return s
}

// printPolicy shows a policy and, when as is not nil, its assignments.
func (inv *invocation) printPolicy(g *globals, p *apiclient.Policy, as []apiclient.Assignment) error {
	return inv.emit(g, p.JSON(), func(w io.Writer) {
		fmt.Fprintf(w, "name:\t%s\nid:\t%s\nproduct:\t%s\ngroup:\t%s\ndescription:\t%s\ncreated:\t%s\nupdated:\t%s\nversion:\t%d\n",
			p.Name, p.ID, p.Product, p.Group.Path, orDash(p.Description), ts(p.CreatedAt), ts(p.UpdatedAt), p.Version)
		fmt.Fprintf(w, "\nSETTING\tFLAG\tVALUE\n")
		if len(p.Settings) == 0 {
			fmt.Fprintf(w, "(none)\t\t\n")
		}
		for _, k := range sortedKeys(p.Settings) {
			fmt.Fprintf(w, "%s.%s\t%s\t%s\n", p.Product, k, p.Settings[k].Flag, settingValue(p.Settings[k]))
		}
		if as == nil {
			return
		}
		fmt.Fprintf(w, "\nASSIGNED TO\tRANK\tASSIGNMENT\n")
		if len(as) == 0 {
			fmt.Fprintf(w, "(nothing)\t\t\n")
		}
		for i := range as {
			fmt.Fprintf(w, "%s\t%d\t%s\n", assignmentTarget(&as[i]), as[i].Rank, as[i].ID)
		}
	})
}

func (inv *invocation) policiesShow(args []string) error {
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
	p, err := inv.findPolicy(c, pos[0])
	if err != nil {
		return err
	}
	var as []apiclient.Assignment
	if g.output == "text" {
		l, err := c.ListAssignments(inv.ctx, p.ID)
		if err != nil {
			return err
		}
		as = l.Items
	}
	return inv.printPolicy(g, p, as)
}

// settingFlags collect --set, --force and --settings.
type settingFlags struct {
	edits []settingEdit
	all   string // --settings
	unset stringList
}

// settingEdit is one --set or --force.
type settingEdit struct {
	flag    string // apply | force
	product string // "" when KEY has no product
	key     string
	op      string // "=", "+=" or "^="
	value   string
}

type settingFlag struct {
	edits *[]settingEdit
	flag  string
}

func (f settingFlag) String() string { return "" }

func (f settingFlag) Set(arg string) error {
	i := strings.IndexByte(arg, '=')
	if i <= 0 {
		return fmt.Errorf("%q must be KEY=VALUE, KEY+=ITEM or KEY^=ITEM", arg)
	}
	e := settingEdit{flag: f.flag, key: arg[:i], op: "=", value: arg[i+1:]}
	if k, ok := strings.CutSuffix(e.key, "+"); ok {
		e.key, e.op = k, "+="
	} else if k, ok := strings.CutSuffix(e.key, "^"); ok {
		e.key, e.op = k, "^="
	}
	if p, k, ok := strings.Cut(e.key, "."); ok {
		e.product, e.key = p, k
	}
	if e.key == "" || strings.ContainsAny(e.key, " .") {
		return fmt.Errorf("%q: KEY must be PRODUCT.SETTING or SETTING", arg)
	}
	*f.edits = append(*f.edits, e)
	return nil
}

func newSettingFlags(fs *flag.FlagSet, update bool) *settingFlags {
	s := &settingFlags{}
	fs.Var(settingFlag{&s.edits, "apply"}, "set", "set a setting: KEY=VALUE, KEY+=ITEM or KEY^=ITEM (repeatable)")
	fs.Var(settingFlag{&s.edits, "force"}, "force", "set and lock a setting: KEY=VALUE, KEY+=ITEM or KEY^=ITEM (repeatable)")
	if update {
		fs.StringVar(&s.all, "settings", "", "replace all settings with this JSON object, or @FILE")
		fs.Var(&s.unset, "unset", "stop setting KEY (repeatable)")
	} else {
		fs.StringVar(&s.all, "settings", "", "the settings as a JSON object, or @FILE")
	}
	return s
}

func (s *settingFlags) given() bool { return len(s.edits) > 0 || s.all != "" || len(s.unset) > 0 }

// product returns the one product the keys name ("" for none).
func (s *settingFlags) product() (string, error) {
	p := ""
	for _, e := range s.edits {
		if e.product == "" || e.product == p {
			continue
		}
		if p != "" {
			return "", usagef("a policy configures one product; the settings name %s and %s", p, e.product)
		}
		p = e.product
	}
	return p, nil
}

// applySettings computes a policy's settings: base (the policy's, or --settings),
// less --unset, changed by --set and --force. schema gives the setting
// types (values are converted to JSON by type).
func (inv *invocation) applySettings(s *settingFlags, product string, base map[string]apiclient.PolicyValue, schema *apiclient.PolicySchema) (map[string]apiclient.PolicyValue, error) {
	out := map[string]apiclient.PolicyValue{}
	if s.all != "" {
		raw, err := inv.jsonArg("settings", s.all)
		if err != nil {
			return nil, err
		}
		base = nil
		if err := json.Unmarshal(raw, &base); err != nil {
			return nil, usagef("--settings must be an object of KEY: {\"flag\": ..., \"value\": ...}: %v", err)
		}
	}
	for k, v := range base {
		out[k] = v
	}
	for _, k := range s.unset {
		p, key, ok := strings.Cut(k, ".")
		if !ok {
			p, key = product, k
		}
		if p != product {
			return nil, usagef("--unset %s: the policy configures %s", k, product)
		}
		if _, ok := out[key]; !ok {
			return nil, usagef("--unset %s: the policy does not set it", k)
		}
		delete(out, key)
	}
	kinds := map[string]string{}
	for _, st := range schema.Settings {
		if st.Product == product {
			kinds[st.Key] = st.Type
		}
	}
	type acc struct {
		flag, op string
		items    []json.RawMessage
		values   int
	}
	var order []string
	edits := map[string]*acc{}
	for _, e := range s.edits {
		if e.product != "" && e.product != product {
			return nil, usagef("%s.%s: the policy configures %s", e.product, e.key, product)
		}
		name := product + "." + e.key
		kind, known := kinds[e.key]
		a := edits[e.key]
		if a == nil {
			a = &acc{flag: e.flag, op: e.op}
			edits[e.key] = a
			order = append(order, e.key)
		} else if a.flag != e.flag || a.op != e.op {
			return nil, usagef("%s is given with different flags or operators", name)
		}
		a.values++
		if kind != "list" {
			if e.op != "=" && known {
				return nil, usagef("%s is not a list: give %s=VALUE", name, name)
			}
			if a.values > 1 {
				return nil, usagef("%s is given twice", name)
			}
			v, err := settingJSON(name, kind, e.value)
			if err != nil {
				return nil, err
			}
			a.items = []json.RawMessage{v}
			continue
		}
		switch {
		case strings.HasPrefix(strings.TrimSpace(e.value), "["):
			var items []string
			if err := json.Unmarshal([]byte(e.value), &items); err != nil {
				return nil, usagef("%s: %q is not a JSON array of strings", name, e.value)
			}
			for _, it := range items {
				a.items = append(a.items, marshal(it))
			}
		case e.value != "":
			// One item per flag: a comma is part of it (the agent's own
			// "config set" splits at commas; say so rather than store a
			// glob that never matches).
			if strings.Contains(e.value, ",") && e.key != "scheduled_scans" {
				fmt.Fprintf(inv.stderr, "note: %s gets one item %q, comma included; repeat the flag or give a JSON array for several items\n", name, e.value)
			}
			a.items = append(a.items, marshal(e.value))
		}
	}
	for _, key := range order {
		a := edits[key]
		v := apiclient.PolicyValue{Flag: a.flag}
		if kinds[key] == "list" {
			list := []json.RawMessage{}
			list = append(list, a.items...)
			v.Value = marshal(list)
			v.Merge = map[string]string{"=": "replace", "+=": "append", "^=": "prepend"}[a.op]
		} else {
			v.Value = a.items[0]
			if a.op != "=" {
				v.Merge = map[string]string{"+=": "append", "^=": "prepend"}[a.op] // unknown setting: the server says so
			}
		}
		out[key] = v
	}
	return out, nil
}

// settingJSON converts a --set value to the JSON of the setting's type.
func settingJSON(name, kind, v string) (json.RawMessage, error) {
	switch kind {
	case "bool":
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, usagef("%s must be true or false", name)
		}
		return marshal(b), nil
	case "int":
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, usagef("%s must be a whole number", name)
		}
		return marshal(n), nil
	}
	return marshal(v), nil
}

func (inv *invocation) policiesCreate(args []string) error {
	fs := inv.flags("NAME [--product agent|protection|updates] [--group PATH] [--description TEXT] [--set KEY=VALUE]... [--force KEY=VALUE]... [--settings JSON|@FILE]\n\n" +
		"The product defaults to the one the settings name.\n" + settingsHelp)
	g := inv.globalFlags(fs, true)
	product := fs.String("product", "", "the product the policy configures: agent, protection or updates")
	group := fs.String("group", "", "static group path the policy lives in (who may see and edit it; default your home group)")
	desc := fs.String("description", "", "what the policy is for")
	sf := newSettingFlags(fs, false)
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	p, err := sf.product()
	if err != nil {
		return err
	}
	switch {
	case *product == "" && p == "":
		fs.Usage()
		return usagef("%s: give --product (or settings named PRODUCT.SETTING)", inv.name)
	case *product == "":
		*product = p
	case p != "" && p != *product:
		return usagef("--product is %s but the settings name %s", *product, p)
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	req := apiclient.PolicyRequest{Name: pos[0], Product: *product, Description: *desc, Group: *group}
	if sf.given() {
		schema, err := c.PolicySchema(inv.ctx)
		if err != nil {
			return err
		}
		if req.Settings, err = inv.applySettings(sf, *product, nil, schema); err != nil {
			return err
		}
	}
	pol, err := c.CreatePolicy(inv.ctx, req)
	if err != nil {
		return err
	}
	return inv.printPolicy(g, pol, nil)
}

func (inv *invocation) policiesUpdate(args []string) error {
	fs := inv.flags("ID_OR_NAME [--name NAME] [--description TEXT] [--group PATH] [--set KEY=VALUE]... [--force KEY=VALUE]... [--unset KEY]... [--settings JSON|@FILE]\n\n" +
		"Settings not named keep their values; --settings replaces them all.\n" + settingsHelp)
	g := inv.globalFlags(fs, true)
	name := fs.String("name", "", "new name")
	desc := fs.String("description", "", "new description")
	group := fs.String("group", "", "static group path the policy moves to")
	sf := newSettingFlags(fs, true)
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	set := setFlags(fs)
	if !set["name"] && !set["description"] && !set["group"] && !sf.given() {
		fs.Usage()
		return usagef("%s: nothing to change", inv.name)
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	p, err := inv.findPolicy(c, pos[0])
	if err != nil {
		return err
	}
	u := apiclient.PolicyUpdate{Version: p.Version}
	if set["name"] {
		u.Name = name
	}
	if set["description"] {
		u.Description = desc
	}
	if set["group"] {
		u.Group = group
	}
	if sf.given() {
		schema, err := c.PolicySchema(inv.ctx)
		if err != nil {
			return err
		}
		settings, err := inv.applySettings(sf, p.Product, p.Settings, schema)
		if err != nil {
			return err
		}
		u.Settings = &settings
	}
	if p, err = c.UpdatePolicy(inv.ctx, p.ID, u); err != nil {
		return err
	}
	return inv.printPolicy(g, p, nil)
}

func (inv *invocation) policiesDelete(args []string) error {
	fs := inv.flags("ID_OR_NAME\n\nDeletes the policy and its assignments.")
	g := inv.globalFlags(fs, true)
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	p, err := inv.findPolicy(c, pos[0])
	if err != nil {
		return err
	}
	if err := c.DeletePolicy(inv.ctx, p.ID, p.Version); err != nil {
		return err
	}
	inv.done(g, "Policy %s deleted.", p.Name)
	return nil
}

func (inv *invocation) policiesSchema(args []string) error {
	fs := inv.flags("[--product agent|protection|updates]")
	g := inv.globalFlags(fs, true)
	product := fs.String("product", "", "only the settings of this product")
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	s, err := c.PolicySchema(inv.ctx)
	if err != nil {
		return err
	}
	return inv.emit(g, s.JSON(), func(w io.Writer) {
		fmt.Fprintln(w, "SETTING\tTYPE\tDEFAULT\tALLOWED\tDESCRIPTION")
		for _, st := range s.Settings {
			if *product != "" && st.Product != *product {
				continue
			}
			fmt.Fprintf(w, "%s.%s\t%s\t%s\t%s\t%s\n", st.Product, st.Key, st.Type, quoteIfBlank(jsonText(st.Default)), settingRange(st), st.Doc)
		}
	})
}

// settingRange describes the values a setting allows.
func settingRange(s apiclient.SettingInfo) string {
	if len(s.Enum) > 0 {
		return strings.Join(s.Enum, "|")
	}
	if s.Min == nil && s.Max == nil {
		return "-"
	}
	num := func(f *float64) string {
		if f == nil {
			return ""
		}
		return strconv.FormatFloat(*f, 'f', -1, 64)
	}
	unit := ""
	switch s.Type {
	case "duration":
		unit = " s"
	case "size":
		unit = " bytes"
	}
	return num(s.Min) + ".." + num(s.Max) + unit
}

// assignTarget is the target flags of assign, unassign and rank.
type assignTarget struct {
	group, dynamic, computer string
}

func newAssignTarget(fs *flag.FlagSet) *assignTarget {
	t := &assignTarget{}
	fs.StringVar(&t.group, "group", "", "static group path")
	fs.StringVar(&t.dynamic, "dynamic-group", "", "dynamic group, id or name")
	fs.StringVar(&t.computer, "computer", "", "computer, id or name")
	return t
}

func (t *assignTarget) count() int {
	n := 0
	for _, s := range []string{t.group, t.dynamic, t.computer} {
		if s != "" {
			n++
		}
	}
	return n
}

// resolveAssignTarget returns the API's target type and target (a path or an id).
func (inv *invocation) resolveAssignTarget(c *apiclient.Client, t *assignTarget) (typ, target string, err error) {
	switch {
	case t.group != "":
		return apiclient.TargetStatic, t.group, nil
	case t.dynamic != "":
		id, err := inv.findDynamicGroupID(c, t.dynamic)
		return apiclient.TargetDynamic, id, err
	default:
		comp, err := inv.findComputer(c, t.computer)
		if err != nil {
			return "", "", err
		}
		return apiclient.TargetComputer, comp.ID, nil
	}
}

func (inv *invocation) policiesAssign(args []string) error {
	fs := inv.flags("ID_OR_NAME (--group PATH | --dynamic-group ID_OR_NAME | --computer ID_OR_NAME) [--rank N]\n\n" +
		"Policies apply from All down a computer's static groups, then its dynamic groups, then the computer's own;\n" +
		"among the policies of one target, lower ranks apply first (a later policy overrides unless forced).")
	g := inv.globalFlags(fs, true)
	t := newAssignTarget(fs)
	rank := fs.Int("rank", 0, "order among the target's policies, lower first (-1000000..1000000)")
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if t.count() != 1 {
		fs.Usage()
		return usagef("%s: give one of --group, --dynamic-group or --computer", inv.name)
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	p, err := inv.findPolicy(c, pos[0])
	if err != nil {
		return err
	}
	typ, target, err := inv.resolveAssignTarget(c, t)
	if err != nil {
		return err
	}
	a, err := c.AssignPolicy(inv.ctx, p.ID, apiclient.AssignRequest{TargetType: typ, Target: target, Rank: *rank})
	if err != nil {
		return err
	}
	return inv.emit(g, a.JSON(), func(w io.Writer) {
		fmt.Fprintf(w, "Policy %s assigned to %s (rank %d, assignment %s).\n", p.Name, assignmentTarget(a), a.Rank, a.ID)
	})
}

// findAssignment finds an assignment of p by id (pos) or by target.
func (inv *invocation) findAssignment(c *apiclient.Client, p *apiclient.Policy, id string, t *assignTarget) (*apiclient.Assignment, error) {
	l, err := c.ListAssignments(inv.ctx, p.ID)
	if err != nil {
		return nil, err
	}
	if id != "" {
		for i := range l.Items {
			if l.Items[i].ID == id {
				return &l.Items[i], nil
			}
		}
		return nil, errcode.New(errcode.NotFound, "policy %s has no assignment %q", p.Name, id)
	}
	typ, target, err := inv.resolveAssignTarget(c, t)
	if err != nil {
		return nil, err
	}
	for i := range l.Items {
		a := &l.Items[i]
		if a.TargetType != typ {
			continue
		}
		if a.Target.ID == target || (typ == apiclient.TargetStatic && a.Target.Path == apiclient.NormalizeGroupPath(target)) {
			return a, nil
		}
	}
	what := map[string]string{apiclient.TargetStatic: "group " + t.group, apiclient.TargetDynamic: "dynamic group " + t.dynamic,
		apiclient.TargetComputer: "computer " + t.computer}[typ]
	return nil, errcode.New(errcode.NotFound, "policy %s is not assigned to %s", p.Name, what)
}

// assignmentArgs parses POLICY [ASSIGNMENT_ID] and the target flags.
func (inv *invocation) assignmentArgs(fs *flag.FlagSet, args []string, t *assignTarget) ([]string, error) {
	pos, err := inv.parse(fs, args, 1, 2)
	if err != nil {
		return nil, err
	}
	if (len(pos) == 2) == (t.count() > 0) || t.count() > 1 {
		fs.Usage()
		return nil, usagef("%s: give the assignment id, or one of --group, --dynamic-group or --computer", inv.name)
	}
	return pos, nil
}

func (inv *invocation) policiesUnassign(args []string) error {
	fs := inv.flags("ID_OR_NAME (ASSIGNMENT_ID | --group PATH | --dynamic-group ID_OR_NAME | --computer ID_OR_NAME)")
	g := inv.globalFlags(fs, true)
	t := newAssignTarget(fs)
	pos, err := inv.assignmentArgs(fs, args, t)
	if err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	p, err := inv.findPolicy(c, pos[0])
	if err != nil {
		return err
	}
	a, err := inv.findAssignment(c, p, strings.Join(pos[1:], ""), t)
	if err != nil {
		return err
	}
	if err := c.UnassignPolicy(inv.ctx, p.ID, a.ID, a.Version); err != nil {
		return err
	}
	inv.done(g, "Policy %s no longer assigned to %s.", p.Name, assignmentTarget(a))
	return nil
}

func (inv *invocation) policiesRank(args []string) error {
	fs := inv.flags("ID_OR_NAME (ASSIGNMENT_ID | --group PATH | --dynamic-group ID_OR_NAME | --computer ID_OR_NAME) --rank N\n\n" +
		"Among the policies assigned to one target, lower ranks apply first.")
	g := inv.globalFlags(fs, true)
	t := newAssignTarget(fs)
	rank := fs.Int("rank", 0, "the new rank, lower first (-1000000..1000000)")
	pos, err := inv.assignmentArgs(fs, args, t)
	if err != nil {
		return err
	}
	if !setFlags(fs)["rank"] {
		fs.Usage()
		return usagef("%s: --rank is required", inv.name)
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	p, err := inv.findPolicy(c, pos[0])
	if err != nil {
		return err
	}
	a, err := inv.findAssignment(c, p, strings.Join(pos[1:], ""), t)
	if err != nil {
		return err
	}
	a, err = c.RankAssignment(inv.ctx, p.ID, a.ID, *rank, a.Version)
	if err != nil {
		return err
	}
	return inv.emit(g, a.JSON(), func(w io.Writer) {
		fmt.Fprintf(w, "Policy %s on %s now has rank %d.\n", p.Name, assignmentTarget(a), a.Rank)
	})
}

// computersEffectiveConfig: mamori computers effective-config COMPUTER.
func (inv *invocation) computersEffectiveConfig(args []string) error {
	fs := inv.flags("ID_OR_NAME [--product P] [--set-only]\n\n" +
		"Shows every setting of the computer's configuration: its value, whether it is forced, and the policy\n" +
		"(and the target it is assigned to) that set it, or (default).")
	g := inv.globalFlags(fs, true)
	product := fs.String("product", "", "only the settings of this product")
	setOnly := fs.Bool("set-only", false, "only the settings a policy sets (no defaults)")
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	comp, err := inv.findComputer(c, pos[0])
	if err != nil {
		return err
	}
	e, err := c.EffectiveConfig(inv.ctx, comp.ID)
	if err != nil {
		return err
	}
	return inv.emit(g, e.JSON(), func(w io.Writer) {
		applied := orDash(e.AppliedVersion)
		switch {
		case e.AppliedVersion == "":
		case e.AppliedVersion == e.Version:
			applied += " (current)"
		default:
			applied += " (not yet the current one)"
		}
		fmt.Fprintf(w, "computer:\t%s\nversion:\t%s\napplied by the agent:\t%s\nreported:\t%s\n", comp.Name, e.Version, applied, ts(e.ReportedAt))
		if e.AgentError != "" {
			fmt.Fprintf(w, "agent error:\t%s\n", oneLine(e.AgentError))
		}
		fmt.Fprintf(w, "\nSETTING\tVALUE\tFORCED\tPOLICY\tTARGET\n")
		for _, s := range e.Settings {
			if (*product != "" && s.Product != *product) || (*setOnly && s.Default) {
				continue
			}
			policy, target := "(default)", "-"
			srcs := s.Sources
			if len(srcs) == 0 && s.Source != nil {
				srcs = []apiclient.SettingSource{*s.Source}
			}
			if len(srcs) > 0 && !s.Default {
				var ps, tgs []string
				for _, src := range srcs {
					ps = append(ps, orDefault(src.PolicyName, src.PolicyID))
					tgs = append(tgs, sourceTarget(src))
				}
				policy, target = strings.Join(ps, ", "), strings.Join(tgs, ", ")
			}
			fmt.Fprintf(w, "%s.%s\t%s\t%s\t%s\t%s\n", s.Product, s.Key, quoteIfBlank(jsonText(s.Value)), yes(s.Forced), policy, target)
		}
	})
}

func sourceTarget(s apiclient.SettingSource) string {
	name := orDefault(s.TargetName, s.TargetID)
	switch s.TargetType {
	case apiclient.TargetStatic:
		return "group " + name
	case apiclient.TargetDynamic:
		return "dynamic group " + name
	}
	return s.TargetType + " " + name
}
