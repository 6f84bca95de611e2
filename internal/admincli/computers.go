package admincli

import (
	"fmt"
	"io"
	"strings"

	"github.com/mamori/mamori/internal/apiclient"
	"github.com/mamori/mamori/internal/errcode"
)

// computers: mamori computers list|show|move|revoke|tag|untag|effective-config.
func (inv *invocation) computers(args []string) error {
	return inv.group(args, map[string]func([]string) error{
		"list":             inv.computersList,
		"show":             inv.computersShow,
		"move":             inv.computersMove,
		"revoke":           inv.computersRevoke,
		"tag":              inv.computersTag,
		"untag":            inv.computersUntag,
		"effective-config": inv.computersEffectiveConfig,
	})
}

// computerCmd is a command acting on one computer: its global flags, the
// client, the computer and the command's arguments (the first names it).
type computerCmd struct {
	g    *globals
	c    *apiclient.Client
	x    *apiclient.Computer
	args []string
}

// onComputer parses a command that takes ID_OR_NAME and n-1 more arguments
// (and no flags of its own) and finds the computer.
func (inv *invocation) onComputer(usage string, args []string, n int) (*computerCmd, error) {
	fs := inv.flags(usage)
	g := inv.globalFlags(fs, true)
	pos, err := inv.parse(fs, args, n, n)
	if err != nil {
		return nil, err
	}
	c, err := inv.client(g)
	if err != nil {
		return nil, err
	}
	x, err := inv.findComputer(c, pos[0])
	if err != nil {
		return nil, err
	}
	return &computerCmd{g: g, c: c, x: x, args: pos}, nil
}

// findComputer resolves a computer id, else an exact computer name.
func (inv *invocation) findComputer(c *apiclient.Client, idOrName string) (*apiclient.Computer, error) {
	comp, err := c.GetComputer(inv.ctx, idOrName)
	if !errcode.Is(err, errcode.NotFound) {
		return comp, err
	}
	var ids []string
	for _, status := range []string{"", "revoked"} { // managed ones first; a revoked one is still shown
		l, lerr := c.ListComputers(inv.ctx, apiclient.ComputerQuery{Name: idOrName, Status: status, Page: apiclient.Page{Limit: 1000}})
		if lerr != nil {
			return nil, lerr
		}
		for _, x := range l.Items {
			if x.Name == idOrName {
				ids = append(ids, x.ID)
			}
		}
		if len(ids) > 0 {
			break
		}
	}
	switch len(ids) {
	case 0:
		return nil, errcode.New(errcode.NotFound, "computer %q not found", idOrName)
	case 1:
		return c.GetComputer(inv.ctx, ids[0])
	}
	return nil, errcode.New(errcode.Invalid, "%d computers are named %q; give the id", len(ids), idOrName)
}

func (inv *invocation) computersList(args []string) error {
	fs := inv.flags("[--name TEXT] [--status online|offline|revoked] [--group PATH] [--tag TAG] [--engine outdated] [--sort FIELD] [--limit N] [--offset N]")
	g := inv.globalFlags(fs, true)
	var q apiclient.ComputerQuery
	fs.StringVar(&q.Name, "name", "", "only computers whose name contains TEXT")
	fs.StringVar(&q.Status, "status", "", "only online, offline or revoked (no longer managed) computers")
	fs.StringVar(&q.Group, "group", "", "only computers in this static group and its subgroups")
	fs.StringVar(&q.Tag, "tag", "", "only computers with this tag")
	fs.StringVar(&q.Sort, "sort", "", "name, last_seen, status, enrolled_at, os_name or engine; a leading - descends")
	fs.StringVar(&q.Engine, "engine", "", `"outdated": only computers whose engine is behind the server's update mirror`)
	page := pageFlags(fs)
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	q.Page = *page
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	l, err := c.ListComputers(inv.ctx, q)
	if err != nil {
		return err
	}
	inv.moreNote(g, len(l.Items), l.Total, page.Offset)
	return inv.emit(g, l.JSON(), func(w io.Writer) { computerTable(w, l.Items) })
}

// computerTable prints computers as the list shows them.
func computerTable(w io.Writer, items []apiclient.Computer) {
	fmt.Fprintln(w, "NAME\tSTATUS\tGROUP\tOS\tENGINE\tLAST SEEN\tID")
	for _, x := range items {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.Name, computerStatus(x), x.Group.Path, orDash(strings.TrimSpace(x.OS.Name+" "+x.OS.Version)),
			engineCell(x.Engine), ts(x.LastSeen), x.ID)
	}
}

// engineCell is "12", "12 (outdated: 14)", "12 (failing)"; "-" when not reported.
func engineCell(e *apiclient.Engine) string {
	if e == nil {
		return "-"
	}
	s := fmt.Sprint(e.Version)
	var notes []string
	if e.Outdated {
		notes = append(notes, fmt.Sprintf("outdated: %d", e.Latest))
	}
	if e.UpdateState != "" && e.UpdateState != "idle" {
		notes = append(notes, strings.ReplaceAll(e.UpdateState, "_", " "))
	}
	if len(notes) > 0 {
		s += " (" + strings.Join(notes, ", ") + ")"
	}
	return s
}

func computerStatus(x apiclient.Computer) string {
	s := x.Status
	if x.Revoked {
		s += " (revoked)"
	} else if x.ConnectionWarning != "" && x.ConnectionWarning != "none" {
		s += " (" + x.ConnectionWarning + ")"
	}
	return s
}

func (inv *invocation) computersShow(args []string) error {
	cmd, err := inv.onComputer("ID_OR_NAME", args, 1)
	if err != nil {
		return err
	}
	g, x := cmd.g, cmd.x
	return inv.emit(g, x.JSON(), func(w io.Writer) {
		fmt.Fprintf(w, "name:\t%s\nid:\t%s\nhostname:\t%s\nstatus:\t%s\nlast seen:\t%s\ngroup:\t%s\n", x.Name, x.ID, orDash(x.Hostname), computerStatus(*x), ts(x.LastSeen), x.Group.Path)
		fmt.Fprintf(w, "os:\t%s\nplatform:\t%s\nagent version:\t%s\nenrolled:\t%s\ntags:\t%s\nunresolved detections:\t%d\n",
			orDash(strings.TrimSpace(x.OS.Name+" "+x.OS.Version)), orDash(x.Platform), orDash(x.AgentVersion), ts(x.EnrolledAt), orDash(strings.Join(x.Tags, ", ")), x.UnresolvedDetections)
		if x.CloneSuspected {
			fmt.Fprintf(w, "clone suspected:\t%s\n", orDash(x.CloneReason))
		}
		for _, s := range sortedKeys(x.Inventory) {
			fmt.Fprintf(w, "inventory %s:\tupdated %s\n", s, ts(x.InventoryUpdatedAt[s]))
		}
		if len(x.RecentEvents) > 0 {
			fmt.Fprintf(w, "\nTIME\tEVENT\n")
			for _, e := range x.RecentEvents {
				fmt.Fprintf(w, "%s\t%s\n", e.OccurredAt.Local().Format("2006-01-02 15:04:05"), e.Type)
			}
		}
	})
}

func (inv *invocation) computersMove(args []string) error {
	cmd, err := inv.onComputer("ID_OR_NAME GROUP", args, 2)
	if err != nil {
		return err
	}
	g := cmd.g
	moved, err := cmd.c.MoveComputer(inv.ctx, cmd.x.ID, cmd.args[1], cmd.x.Version)
	if err != nil {
		return err
	}
	return inv.emit(g, moved.JSON(), func(w io.Writer) {
		fmt.Fprintf(w, "Computer %s moved to %s.\n", moved.Name, moved.Group.Path)
	})
}

// computersRevoke revokes a computer's certificates (a lost or
// decommissioned computer): its agent is cut off and refused.
func (inv *invocation) computersRevoke(args []string) error {
	cmd, err := inv.onComputer("ID_OR_NAME\n\nRevokes the computer's certificates: its agent is disconnected and refused from then on.\n"+
		"The computer stays listed with --status revoked; it cannot be managed again (enroll it anew).", args, 1)
	if err != nil {
		return err
	}
	if err := cmd.c.RevokeComputer(inv.ctx, cmd.x.ID); err != nil {
		return err
	}
	inv.done(cmd.g, "Computer %s revoked; its agent is cut off.", cmd.x.Name)
	return nil
}

func (inv *invocation) computersTag(args []string) error {
	cmd, err := inv.onComputer("ID_OR_NAME TAG", args, 2)
	if err != nil {
		return err
	}
	tags, err := cmd.c.TagComputer(inv.ctx, cmd.x.ID, cmd.args[1])
	if err != nil {
		return err
	}
	return inv.emit(cmd.g, tags.JSON(), func(w io.Writer) {
		fmt.Fprintf(w, "Tags of %s: %s\n", cmd.x.Name, strings.Join(tags.Tags, ", "))
	})
}

func (inv *invocation) computersUntag(args []string) error {
	cmd, err := inv.onComputer("ID_OR_NAME TAG", args, 2)
	if err != nil {
		return err
	}
	if err := cmd.c.UntagComputer(inv.ctx, cmd.x.ID, cmd.args[1]); err != nil {
		return err
	}
	inv.done(cmd.g, "Tag %q removed from %s.", cmd.args[1], cmd.x.Name)
	return nil
}
