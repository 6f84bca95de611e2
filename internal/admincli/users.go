package admincli

import (
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/mamori/mamori/internal/apiclient"
	"github.com/mamori/mamori/internal/errcode"
)

// users: mamori users list|show|create|disable|enable|unlock|reset-password|delete|remove-totp|set-permission-sets
func (inv *invocation) users(args []string) error {
	return inv.group(args, map[string]func([]string) error{
		"list":                inv.usersList,
		"show":                inv.usersShow,
		"create":              inv.usersCreate,
		"disable":             func(a []string) error { return inv.usersSetDisabled(a, true) },
		"enable":              func(a []string) error { return inv.usersSetDisabled(a, false) },
		"unlock":              inv.usersUnlock,
		"reset-password":      inv.usersResetPassword,
		"delete":              inv.usersDelete,
		"remove-totp":         inv.usersRemoveTOTP,
		"set-permission-sets": inv.usersSetPermissionSets,
	})
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// findUser resolves a user id or name.
func (inv *invocation) findUser(c *apiclient.Client, idOrName string) (*apiclient.User, error) {
	if uuidRE.MatchString(idOrName) {
		u, err := c.GetUser(inv.ctx, idOrName)
		if !errcode.Is(err, errcode.NotFound) {
			return u, err
		}
	}
	return c.UserByName(inv.ctx, idOrName)
}

// findPermissionSet resolves a permission set id or name.
func (inv *invocation) findPermissionSets(c *apiclient.Client, idsOrNames []string) ([]string, error) {
	if len(idsOrNames) == 0 {
		return nil, nil
	}
	l, err := c.ListPermissionSets(inv.ctx)
	if err != nil {
		return nil, err
	}
	var out []string
next:
	for _, want := range idsOrNames {
		for _, ps := range l.Items {
			if ps.ID == want {
				out = append(out, ps.ID)
				continue next
			}
		}
		var byName []string
		for _, ps := range l.Items {
			if strings.EqualFold(ps.Name, want) {
				byName = append(byName, ps.ID)
			}
		}
		switch len(byName) {
		case 1:
			out = append(out, byName[0])
		case 0:
			return nil, errcode.New(errcode.NotFound, "permission set %q not found", want)
		default:
			return nil, errcode.New(errcode.Invalid, "%d permission sets are named %q; give the id", len(byName), want)
		}
	}
	return out, nil
}

func (inv *invocation) usersList(args []string) error {
	fs := inv.flags("[--name TEXT] [--sort FIELD] [--limit N] [--offset N]")
	g := inv.globalFlags(fs, true)
	name := fs.String("name", "", "only users whose name contains TEXT (case-insensitive)")
	sort := fs.String("sort", "", "username, created_at or last_login_at; a leading - descends")
	page := pageFlags(fs)
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	l, err := c.ListUsers(inv.ctx, apiclient.UserQuery{Name: *name, Sort: *sort, Page: *page})
	if err != nil {
		return err
	}
	inv.moreNote(g, len(l.Items), l.Total, page.Offset)
	return inv.emit(g, l.JSON(), func(w io.Writer) {
		fmt.Fprintln(w, "USERNAME\tHOME GROUP\tDISABLED\t2FA\tLAST LOGIN\tID")
		for _, u := range l.Items {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", u.Username, u.HomeGroup.Path, yes(u.Disabled), twoFA(u), ts(u.LastLoginAt), u.ID)
		}
	})
}

func twoFA(u apiclient.User) string {
	switch {
	case u.TOTPEnabled:
		return "on"
	case u.TOTPRequired:
		return "required"
	}
	return "off"
}

func pageFlags(fs *flag.FlagSet) *apiclient.Page {
	p := &apiclient.Page{}
	fs.IntVar(&p.Limit, "limit", 0, "at most N entries (server default 100, at most 1000)")
	fs.IntVar(&p.Offset, "offset", 0, "skip the first N entries")
	return p
}

func (inv *invocation) printUser(g *globals, u *apiclient.User) error {
	return inv.emit(g, u.JSON(), func(w io.Writer) {
		fmt.Fprintf(w, "username:\t%s\nid:\t%s\ndescription:\t%s\nhome group:\t%s\ndisabled:\t%s\n", u.Username, u.ID, orDash(u.Description), u.HomeGroup.Path, yes(u.Disabled))
		fmt.Fprintf(w, "second factor:\t%s\nmust change password:\t%s\npermission sets:\t%s\n", twoFA(*u), yes(u.MustChangePassword), orDash(strings.Join(u.PermissionSets, ", ")))
		fmt.Fprintf(w, "created:\t%s\nlast login:\t%s\n", ts(u.CreatedAt), ts(u.LastLoginAt))
		if u.LastLoginAddr != "" {
			fmt.Fprintf(w, "last login from:\t%s\n", u.LastLoginAddr)
		}
		if !u.LockedUntil.IsZero() {
			fmt.Fprintf(w, "locked until:\t%s\n", ts(u.LockedUntil))
		}
	})
}

func (inv *invocation) usersShow(args []string) error {
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
	u, err := inv.findUser(c, pos[0])
	if err != nil {
		return err
	}
	return inv.printUser(g, u)
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func (inv *invocation) usersCreate(args []string) error {
	fs := inv.flags("NAME [--password-stdin] [--home-group PATH] [--permission-set ID]... [--totp-required] [--description TEXT]\n\n" +
		"The password is read from the first line of stdin (--password-stdin) or asked twice at a terminal.")
	g := inv.globalFlags(fs, true)
	pwStdin := fs.Bool("password-stdin", false, "read the password from the first line of stdin")
	home := fs.String("home-group", "", "static group path the user belongs to (default your home group)")
	var sets stringList
	fs.Var(&sets, "permission-set", "permission set id or name (repeatable)")
	totp := fs.Bool("totp-required", false, "the user must set up a second factor at first login")
	desc := fs.String("description", "", "what the account is for")
	mustChange := fs.Bool("must-change-password", true, "the user must change the password at first login")
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	pw, err := inv.newPassword(*pwStdin, pos[0])
	if err != nil {
		return err
	}
	ids, err := inv.findPermissionSets(c, sets)
	if err != nil {
		return err
	}
	u, err := c.CreateUser(inv.ctx, apiclient.UserRequest{Username: pos[0], Password: pw, Description: *desc, HomeGroup: *home,
		PermissionSets: ids, TOTPRequired: *totp, MustChangePassword: mustChange})
	if err != nil {
		return err
	}
	return inv.printUser(g, u)
}

func (inv *invocation) usersSetDisabled(args []string, disabled bool) error {
	return inv.usersUpdate(args, "ID_OR_NAME", func(up *apiclient.UserUpdate) { up.Disabled = &disabled })
}

// usersUnlock clears a lockout after repeated failed logins.
func (inv *invocation) usersUnlock(args []string) error {
	return inv.usersUpdate(args, "ID_OR_NAME\n\nClears the user's failed logins and a lockout they caused (a password reset does too).",
		func(up *apiclient.UserUpdate) { up.Unlock = true })
}

// usersUpdate finds the user its one argument names, applies edit to an
// update at the user's version and prints the user as the server returns it.
func (inv *invocation) usersUpdate(args []string, synopsis string, edit func(*apiclient.UserUpdate)) error {
	fs := inv.flags(synopsis)
	g := inv.globalFlags(fs, true)
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	u, err := inv.findUser(c, pos[0])
	if err != nil {
		return err
	}
	up := apiclient.UserUpdate{Version: u.Version}
	edit(&up)
	if u, err = c.UpdateUser(inv.ctx, u.ID, up); err != nil {
		return err
	}
	return inv.printUser(g, u)
}

func (inv *invocation) usersResetPassword(args []string) error {
	fs := inv.flags("ID_OR_NAME [--password-stdin] [--must-change=false]")
	g := inv.globalFlags(fs, true)
	pwStdin := fs.Bool("password-stdin", false, "read the password from the first line of stdin")
	mustChange := fs.Bool("must-change", true, "the user must change the password at next login")
	pos, err := inv.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	u, err := inv.findUser(c, pos[0])
	if err != nil {
		return err
	}
	pw, err := inv.newPassword(*pwStdin, u.Username)
	if err != nil {
		return err
	}
	if err := c.ResetPassword(inv.ctx, u.ID, pw, mustChange); err != nil {
		return err
	}
	inv.done(g, "Password of %s reset; their sessions have ended and their API tokens are revoked.", u.Username)
	return nil
}

func (inv *invocation) usersDelete(args []string) error {
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
	u, err := inv.findUser(c, pos[0])
	if err != nil {
		return err
	}
	if err := c.DeleteUser(inv.ctx, u.ID); err != nil {
		return err
	}
	inv.done(g, "User %s deleted.", u.Username)
	return nil
}

func (inv *invocation) usersRemoveTOTP(args []string) error {
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
	u, err := inv.findUser(c, pos[0])
	if err != nil {
		return err
	}
	if err := c.RemoveTOTP(inv.ctx, u.ID); err != nil {
		return err
	}
	inv.done(g, "Second factor of %s removed; their sessions have ended.", u.Username)
	return nil
}

func (inv *invocation) usersSetPermissionSets(args []string) error {
	fs := inv.flags("ID_OR_NAME (PERMISSION_SET_ID_OR_NAME... | --none)\n\nReplaces the user's permission sets.")
	g := inv.globalFlags(fs, true)
	none := fs.Bool("none", false, "remove every permission set")
	pos, err := inv.parse(fs, args, 1, -1)
	if err != nil {
		return err
	}
	if *none == (len(pos) > 1) {
		fs.Usage()
		return usagef("give the permission sets, or --none to remove them all")
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	u, err := inv.findUser(c, pos[0])
	if err != nil {
		return err
	}
	ids, err := inv.findPermissionSets(c, pos[1:])
	if err != nil {
		return err
	}
	if ids == nil {
		ids = []string{}
	}
	u, err = c.UpdateUser(inv.ctx, u.ID, apiclient.UserUpdate{PermissionSets: &ids, Version: u.Version})
	if err != nil {
		return err
	}
	return inv.printUser(g, u)
}
