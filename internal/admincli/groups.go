package admincli

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/mamori/mamori/internal/apiclient"
)

// groups: mamori groups list|show|create|rename|move|delete. Groups are
// addressed by path: "Servers", "/Servers" and "All/Servers" are the same.
func (inv *invocation) groups(args []string) error {
	return inv.group(args, map[string]func([]string) error{
		"list":   inv.groupsList,
		"show":   inv.groupsShow,
		"create": inv.groupsCreate,
		"rename": inv.groupsRename,
		"move":   inv.groupsMove,
		"delete": inv.groupsDelete,
	})
}

func (inv *invocation) groupsList(args []string) error {
	fs := inv.flags("[flags]")
	g := inv.globalFlags(fs, true)
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	l, err := c.ListGroups(inv.ctx)
	if err != nil {
		return err
	}
	return inv.emit(g, l.JSON(), func(w io.Writer) {
		fmt.Fprintln(w, "PATH\tID")
		for _, gr := range l.Items {
			fmt.Fprintf(w, "%s\t%s\n", gr.Path, gr.ID)
		}
	})
}

func (inv *invocation) printGroup(g *globals, gr *apiclient.Group) error {
	return inv.emit(g, gr.JSON(), func(w io.Writer) {
		fmt.Fprintf(w, "path:\t%s\nid:\t%s\ncreated:\t%s\n", gr.Path, gr.ID, ts(gr.CreatedAt))
		if m := gr.Members; m != nil {
			fmt.Fprintf(w, "subgroups:\t%d\ndynamic groups:\t%d\ncomputers:\t%d\nenrollment tokens:\t%d\npermission sets:\t%d\nusers:\t%d\npolicies:\t%d\ntasks:\t%d\n",
				m.Subgroups, m.DynamicGroups, m.Computers, m.EnrollmentTokens, m.PermissionSets, m.Users, m.Policies, m.Tasks)
		}
	})
}

// groupArg parses the global flags, the flags setup adds (if any) and n
// arguments, and returns a client and the group the first argument names.
func (inv *invocation) groupArg(args []string, synopsis string, n int, setup func(*flag.FlagSet)) (*globals, *apiclient.Client, *apiclient.Group, []string, error) {
	fs := inv.flags(synopsis)
	g := inv.globalFlags(fs, true)
	if setup != nil {
		setup(fs)
	}
	pos, err := inv.parse(fs, args, n, n)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	c, err := inv.client(g)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	gr, err := c.GroupByPath(inv.ctx, pos[0])
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return g, c, gr, pos, nil
}

func (inv *invocation) groupsShow(args []string) error {
	g, c, gr, _, err := inv.groupArg(args, "PATH", 1, nil)
	if err != nil {
		return err
	}
	gr, err = c.GetGroup(inv.ctx, gr.ID)
	if err != nil {
		return err
	}
	return inv.printGroup(g, gr)
}

func (inv *invocation) groupsCreate(args []string) error {
	fs := inv.flags("PATH\n\nCreates the last element of PATH (\"Servers/Web\") in the existing group before it.")
	g := inv.globalFlags(fs, true)
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	path := apiclient.NormalizeGroupPath(pos[0])
	if path == "All" {
		return usagef("the All group always exists; name a group under it, like Servers")
	}
	i := strings.LastIndex(path, "/")
	parent, name := path[:i], path[i+1:]
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	gr, err := c.CreateGroup(inv.ctx, parent, name)
	if err != nil {
		return err
	}
	return inv.printGroup(g, gr)
}

func (inv *invocation) groupsRename(args []string) error {
	g, c, gr, pos, err := inv.groupArg(args, "PATH NEWNAME", 2, nil)
	if err != nil {
		return err
	}
	gr, err = c.RenameGroup(inv.ctx, gr.ID, pos[1], gr.Version)
	if err != nil {
		return err
	}
	return inv.printGroup(g, gr)
}

func (inv *invocation) groupsMove(args []string) error {
	g, c, gr, pos, err := inv.groupArg(args, "PATH NEWPARENT", 2, nil)
	if err != nil {
		return err
	}
	gr, err = c.MoveGroup(inv.ctx, gr.ID, pos[1], gr.Version)
	if err != nil {
		return err
	}
	return inv.printGroup(g, gr)
}

func (inv *invocation) groupsDelete(args []string) error {
	var moveTo string
	g, c, gr, _, err := inv.groupArg(args, "PATH [--move-to PATH]\n\nDeletes an empty group, or first moves its contents to --move-to.", 1, func(fs *flag.FlagSet) {
		fs.StringVar(&moveTo, "move-to", "", "move the group's computers and other contents to this group")
	})
	if err != nil {
		return err
	}
	if err := c.DeleteGroup(inv.ctx, gr.ID, gr.Version, moveTo); err != nil {
		return err
	}
	inv.done(g, "Group %s deleted.", gr.Path)
	return nil
}
