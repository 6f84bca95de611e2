package admincli

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/mamori/mamori/internal/apiclient"
)

// dynamicGroups: mamori dynamic-groups list|show|create|update|delete|members|preview.
// A dynamic group is named by id or exact name.
func (inv *invocation) dynamicGroups(args []string) error {
	return inv.group(args, map[string]func([]string) error{
		"list":    inv.dynList,
		"show":    inv.dynShow,
		"create":  inv.dynCreate,
		"update":  inv.dynUpdate,
		"delete":  inv.dynDelete,
		"members": inv.dynMembers,
		"preview": inv.dynPreview,
	})
}

const templateHelp = `The template is JSON, inline or as @FILE (@- for stdin):
  {"op": "and", "rules": [{"field": "hostname", "operator": "prefix", "value": "web"}]}
op is and, or, nand or nor; GET /api/v1/dynamic-groups/fields lists the fields and operators.`

// findDynamicGroupID resolves a dynamic group id or exact name.
func (inv *invocation) findDynamicGroupID(c *apiclient.Client, idOrName string) (string, error) {
	l, err := c.ListDynamicGroups(inv.ctx)
	if err != nil {
		return "", err
	}
	return pickID("dynamic group", idOrName, l.Items,
		func(g *apiclient.DynamicGroup) string { return g.ID }, func(g *apiclient.DynamicGroup) string { return g.Name })
}

func (inv *invocation) findDynamicGroup(c *apiclient.Client, idOrName string) (*apiclient.DynamicGroup, error) {
	id, err := inv.findDynamicGroupID(c, idOrName)
	if err != nil {
		return nil, err
	}
	return c.GetDynamicGroup(inv.ctx, id)
}

// dynParent describes where a dynamic group sits.
func dynParent(g *apiclient.DynamicGroup, n *namer) string {
	switch {
	case g.Parent != nil:
		return orDefault(g.Parent.Path, g.Parent.ID)
	case g.ParentDynamic != nil:
		return "dynamic group " + n.dyn(*g.ParentDynamic)
	}
	return "-"
}

func (inv *invocation) dynList(args []string) error {
	fs := inv.flags("[flags]")
	g := inv.globalFlags(fs, true)
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	l, err := c.ListDynamicGroups(inv.ctx)
	if err != nil {
		return err
	}
	n := inv.newNamer(c)
	n.dynamic = map[string]string{}
	for _, x := range l.Items {
		n.dynamic[x.ID] = x.Name
	}
	return inv.emit(g, l.JSON(), func(w io.Writer) {
		fmt.Fprintln(w, "NAME\tPARENT\tMEMBERS\tEVALUATED\tID")
		for i := range l.Items {
			x := &l.Items[i]
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", x.Name, dynParent(x, n), x.Members, ts(x.EvaluatedAt), x.ID)
		}
	})
}

// template is the shape of a dynamic group template, for showing it.
type template struct {
	Op    string `json:"op"`
	Rules []struct {
		Field    string `json:"field"`
		Operator string `json:"operator"`
		Value    string `json:"value"`
	} `json:"rules"`
}

func (inv *invocation) printDynGroup(g *globals, c *apiclient.Client, x *apiclient.DynamicGroup) error {
	return inv.emit(g, x.JSON(), func(w io.Writer) {
		fmt.Fprintf(w, "name:\t%s\nid:\t%s\ndescription:\t%s\nparent:\t%s\naccess group:\t%s\n", x.Name, x.ID, orDash(x.Description),
			dynParent(x, inv.newNamer(c)), orDefault(x.AccessGroup.Path, x.AccessGroup.ID))
		fmt.Fprintf(w, "members:\t%d\nevaluated:\t%s\ncreated:\t%s\nupdated:\t%s\nversion:\t%d\n", x.Members, ts(x.EvaluatedAt), ts(x.CreatedAt), ts(x.UpdatedAt), x.Version)
		var t template
		if json.Unmarshal(x.Template, &t) != nil {
			fmt.Fprintf(w, "template:\t%s\n", x.Template)
			return
		}
		meaning := map[string]string{"and": "every rule holds", "or": "some rule holds", "nand": "some rule does not hold", "nor": "no rule holds"}[t.Op]
		fmt.Fprintf(w, "template:\t%s (%s)\n", t.Op, orDefault(meaning, "?"))
		fmt.Fprintf(w, "\nFIELD\tOPERATOR\tVALUE\n")
		for _, r := range t.Rules {
			fmt.Fprintf(w, "%s\t%s\t%s\n", r.Field, r.Operator, quoteIfBlank(r.Value))
		}
	})
}

func (inv *invocation) dynShow(args []string) error {
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
	x, err := inv.findDynamicGroup(c, pos[0])
	if err != nil {
		return err
	}
	return inv.printDynGroup(g, c, x)
}

func (inv *invocation) dynCreate(args []string) error {
	fs := inv.flags("NAME --template JSON|@FILE [--parent PATH | --parent-dynamic ID_OR_NAME] [--description TEXT]\n\n" + templateHelp +
		"\nThe group sits under the static group --parent (default All) or under the dynamic group --parent-dynamic,\n" +
		"whose members it narrows down.")
	g := inv.globalFlags(fs, true)
	tpl := fs.String("template", "", "the template: JSON, or @FILE")
	parent := fs.String("parent", "", "static group path the group sits under (default All)")
	parentDyn := fs.String("parent-dynamic", "", "dynamic group (id or name) the group sits under")
	desc := fs.String("description", "", "what the group is for")
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *tpl == "" {
		fs.Usage()
		return usagef("%s: --template is required", inv.name)
	}
	if *parent != "" && *parentDyn != "" {
		return usagef("give --parent or --parent-dynamic, not both")
	}
	raw, err := inv.jsonArg("template", *tpl)
	if err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	req := apiclient.DynamicGroupRequest{Name: pos[0], Description: *desc, Parent: *parent, Template: raw}
	if *parentDyn != "" {
		if req.ParentDynamic, err = inv.findDynamicGroupID(c, *parentDyn); err != nil {
			return err
		}
	}
	x, err := c.CreateDynamicGroup(inv.ctx, req)
	if err != nil {
		return err
	}
	return inv.printDynGroup(g, c, x)
}

func (inv *invocation) dynUpdate(args []string) error {
	fs := inv.flags("ID_OR_NAME [--name NAME] [--description TEXT] [--template JSON|@FILE]\n\n" + templateHelp +
		"\nA dynamic group cannot move: create a new one under the other parent.")
	g := inv.globalFlags(fs, true)
	name := fs.String("name", "", "new name")
	desc := fs.String("description", "", "new description")
	tpl := fs.String("template", "", "new template: JSON, or @FILE")
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	set := setFlags(fs)
	if !set["name"] && !set["description"] && !set["template"] {
		fs.Usage()
		return usagef("%s: nothing to change; give --name, --description or --template", inv.name)
	}
	var u apiclient.DynamicGroupUpdate
	if set["template"] {
		if u.Template, err = inv.jsonArg("template", *tpl); err != nil {
			return err
		}
	}
	if set["name"] {
		u.Name = name
	}
	if set["description"] {
		u.Description = desc
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	x, err := inv.findDynamicGroup(c, pos[0])
	if err != nil {
		return err
	}
	u.Version = x.Version
	if x, err = c.UpdateDynamicGroup(inv.ctx, x.ID, u); err != nil {
		return err
	}
	return inv.printDynGroup(g, c, x)
}

func (inv *invocation) dynDelete(args []string) error {
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
	x, err := inv.findDynamicGroup(c, pos[0])
	if err != nil {
		return err
	}
	if err := c.DeleteDynamicGroup(inv.ctx, x.ID, x.Version); err != nil {
		return err
	}
	inv.done(g, "Dynamic group %s deleted.", x.Name)
	return nil
}

func (inv *invocation) dynMembers(args []string) error {
	fs := inv.flags("ID_OR_NAME [--name TEXT] [--status online|offline] [--sort FIELD] [--limit N] [--offset N]")
	g := inv.globalFlags(fs, true)
	var q apiclient.ComputerQuery
	fs.StringVar(&q.Name, "name", "", "only computers whose name contains TEXT")
	fs.StringVar(&q.Status, "status", "", "only online or offline computers")
	fs.StringVar(&q.Sort, "sort", "", "name, last_seen, status, enrolled_at or os_name; a leading - descends")
	page := pageFlags(fs)
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	q.Page = *page
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	id, err := inv.findDynamicGroupID(c, pos[0])
	if err != nil {
		return err
	}
	l, err := c.DynamicGroupMembers(inv.ctx, id, q)
	if err != nil {
		return err
	}
	inv.moreNote(g, len(l.Items), l.Total, page.Offset)
	return inv.emit(g, l.JSON(), func(w io.Writer) { computerTable(w, l.Items) })
}

func (inv *invocation) dynPreview(args []string) error {
	fs := inv.flags("--template JSON|@FILE [--parent PATH | --parent-dynamic ID_OR_NAME]\n\n" +
		"Lists the computers a template would select, without saving anything.\n" + templateHelp)
	g := inv.globalFlags(fs, true)
	tpl := fs.String("template", "", "the template: JSON, or @FILE")
	parent := fs.String("parent", "", "static group path the group would sit under (default All)")
	parentDyn := fs.String("parent-dynamic", "", "dynamic group (id or name) the group would sit under")
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *tpl == "" {
		fs.Usage()
		return usagef("%s: --template is required", inv.name)
	}
	if *parent != "" && *parentDyn != "" {
		return usagef("give --parent or --parent-dynamic, not both")
	}
	raw, err := inv.jsonArg("template", *tpl)
	if err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	pd := ""
	if *parentDyn != "" {
		if pd, err = inv.findDynamicGroupID(c, *parentDyn); err != nil {
			return err
		}
	}
	l, err := c.PreviewDynamicGroup(inv.ctx, raw, *parent, pd)
	if err != nil {
		return err
	}
	if g.output == "text" && len(l.Items) < l.Total {
		fmt.Fprintf(inv.stderr, "(%d of %d shown)\n", len(l.Items), l.Total)
	}
	return inv.emit(g, l.JSON(), func(w io.Writer) {
		computerTable(w, l.Items)
		fmt.Fprintf(w, "\nmatching computers:\t%d\n", l.Total)
	})
}
