package admincli

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mamori/mamori/internal/apiclient"
	"github.com/mamori/mamori/internal/errcode"
)

// jsonArg reads the JSON value of a flag given inline ('{"op":"and",...}')
// or as @FILE (@- for stdin) and returns it compacted.
func (inv *invocation) jsonArg(flagName, v string) (json.RawMessage, error) {
	b := []byte(v)
	if name, ok := strings.CutPrefix(v, "@"); ok {
		var err error
		if name == "-" {
			b, err = io.ReadAll(io.LimitReader(inv.in, apiclient.MaxRequestBytes+1))
		} else {
			b, err = readFileLimited(name, apiclient.MaxRequestBytes+1)
		}
		if err != nil {
			return nil, usagef("--%s: %v", flagName, err)
		}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, bytes.TrimSpace(b)); err != nil || buf.Len() == 0 {
		return nil, usagef("--%s is not valid JSON (give it inline or as @FILE)", flagName)
	}
	return buf.Bytes(), nil
}

func readFileLimited(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// pickID finds the id of the one item whose id is want, else whose name is
// exactly want; kind names the items in errors ("task").
func pickID[T any](kind, want string, items []T, id, name func(*T) string) (string, error) {
	var byName []string
	for i := range items {
		if id(&items[i]) == want {
			return want, nil
		}
		if name(&items[i]) == want {
			byName = append(byName, id(&items[i]))
		}
	}
	switch len(byName) {
	case 0:
		return "", errcode.New(errcode.NotFound, "%s %q not found", kind, want)
	case 1:
		return byName[0], nil
	}
	return "", errcode.New(errcode.Invalid, "%d %ss are named %q; give the id", len(byName), kind, want)
}

// targetFlags are the repeatable --computer, --group and --dynamic-group
// flags naming what a task runs on.
type targetFlags struct {
	computers, groups, dynamic stringList
}

func newTargetFlags(fs *flag.FlagSet) *targetFlags {
	t := &targetFlags{}
	fs.Var(&t.computers, "computer", "run on this computer, id or name (repeatable)")
	fs.Var(&t.groups, "group", "run on the computers of this static group and its subgroups, by path (repeatable)")
	fs.Var(&t.dynamic, "dynamic-group", "run on the members of this dynamic group, id or name (repeatable)")
	return t
}

func (t *targetFlags) given() bool {
	return len(t.computers)+len(t.groups)+len(t.dynamic) > 0
}

// resolveTargets turns the flags into API targets, looking up computers and
// dynamic groups by name.
func (inv *invocation) resolveTargets(c *apiclient.Client, t *targetFlags) ([]apiclient.Target, error) {
	out := []apiclient.Target{}
	for _, x := range t.computers {
		comp, err := inv.findComputer(c, x)
		if err != nil {
			return nil, err
		}
		out = append(out, apiclient.Target{Type: apiclient.TaskTargetComputer, ID: comp.ID})
	}
	for _, p := range t.groups {
		out = append(out, apiclient.Target{Type: apiclient.TaskTargetStaticGroup, Path: p})
	}
	for _, x := range t.dynamic {
		dg, err := inv.findDynamicGroupID(c, x)
		if err != nil {
			return nil, err
		}
		out = append(out, apiclient.Target{Type: apiclient.TaskTargetDynamicGroup, ID: dg})
	}
	return out, nil
}

// namer names the targets of triggers and assignments (the API gives ids),
// loading each kind of object once.
type namer struct {
	inv       *invocation
	c         *apiclient.Client
	groups    map[string]string // static group id -> path
	dynamic   map[string]string // dynamic group id -> name
	computers map[string]string // computer id -> name
}

func (inv *invocation) newNamer(c *apiclient.Client) *namer {
	return &namer{inv: inv, c: c, computers: map[string]string{}}
}

func (n *namer) static(id string) string {
	if n.groups == nil {
		n.groups = map[string]string{}
		if l, err := n.c.ListGroups(n.inv.ctx); err == nil {
			for _, g := range l.Items {
				n.groups[g.ID] = g.Path
			}
		}
	}
	return orDefault(n.groups[id], id)
}

func (n *namer) dyn(id string) string {
	if n.dynamic == nil {
		n.dynamic = map[string]string{}
		if l, err := n.c.ListDynamicGroups(n.inv.ctx); err == nil {
			for _, g := range l.Items {
				n.dynamic[g.ID] = g.Name
			}
		}
	}
	return orDefault(n.dynamic[id], id)
}

func (n *namer) computer(id string) string {
	name, ok := n.computers[id]
	if !ok {
		if comp, err := n.c.GetComputer(n.inv.ctx, id); err == nil {
			name = comp.Name
		}
		n.computers[id] = name
	}
	return orDefault(name, id)
}

// target describes a task target: "group All/Servers".
func (n *namer) target(t apiclient.Target) string {
	switch t.Type {
	case apiclient.TaskTargetComputer:
		return "computer " + n.computer(t.ID)
	case apiclient.TaskTargetStaticGroup:
		return "group " + n.static(t.ID)
	case apiclient.TaskTargetDynamicGroup:
		return "dynamic group " + n.dyn(t.ID)
	}
	return t.Type + " " + t.ID
}

func (n *namer) targets(ts []apiclient.Target) string {
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		out = append(out, n.target(t))
	}
	return orDash(strings.Join(out, ", "))
}

// jsonText shows a JSON value compactly: strings bare, the rest as JSON.
func jsonText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return string(raw)
	}
	return buf.String()
}

// quoteIfBlank keeps empty and space-padded text visible in tables.
func quoteIfBlank(s string) string {
	if s == "" || strings.TrimSpace(s) != s {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// setFlags returns the names of the flags given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}
