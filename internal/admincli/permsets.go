package admincli

import (
	"fmt"
	"io"
	"strings"
)

// permissionSets: mamori permission-sets list|show.
func (inv *invocation) permissionSets(args []string) error {
	return inv.group(args, map[string]func([]string) error{
		"list": inv.permissionSetsList,
		"show": inv.permissionSetsShow,
	})
}

func (inv *invocation) permissionSetsList(args []string) error {
	fs := inv.flags("[flags]")
	g := inv.globalFlags(fs, true)
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	l, err := c.ListPermissionSets(inv.ctx)
	if err != nil {
		return err
	}
	return inv.emit(g, l.JSON(), func(w io.Writer) {
		fmt.Fprintln(w, "NAME\tID\tGROUP\tBUILT-IN\tDESCRIPTION")
		for _, ps := range l.Items {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", ps.Name, ps.ID, ps.Group.Path, yes(ps.Builtin), orDash(ps.Description))
		}
	})
}

func (inv *invocation) permissionSetsShow(args []string) error {
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
	ids, err := inv.findPermissionSets(c, pos)
	if err != nil {
		return err
	}
	ps, err := c.GetPermissionSet(inv.ctx, ids[0])
	if err != nil {
		return err
	}
	return inv.emit(g, ps.JSON(), func(w io.Writer) {
		groups := make([]string, 0, len(ps.Groups))
		for _, gr := range ps.Groups {
			groups = append(groups, orDefault(gr.Path, gr.ID))
		}
		fmt.Fprintf(w, "name:\t%s\nid:\t%s\ndescription:\t%s\ngroup:\t%s\nbuilt-in:\t%s\ngrants over:\t%s\n",
			ps.Name, ps.ID, orDash(ps.Description), ps.Group.Path, yes(ps.Builtin), orDash(strings.Join(groups, ", ")))
		fmt.Fprintf(w, "\nFUNCTIONALITY\tLEVEL\n")
		for _, f := range sortedKeys(ps.Grants) {
			fmt.Fprintf(w, "%s\t%s\n", f, ps.Grants[f])
		}
	})
}
