package admincli

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/apiclient"
)

// audit: mamori audit list|export.
func (inv *invocation) audit(args []string) error {
	return inv.group(args, map[string]func([]string) error{
		"list":   inv.auditList,
		"export": inv.auditExport,
	})
}

type auditFlags struct {
	user, domain, action, result, since, until *string
}

func newAuditFlags(fs *flag.FlagSet) *auditFlags {
	return &auditFlags{
		user:   fs.String("user", "", "only entries of this user name"),
		domain: fs.String("domain", "", "only this domain (users, groups, session, api_tokens, ...)"),
		action: fs.String("action", "", "only this action (create, delete, login, ...)"),
		result: fs.String("result", "", "only success or failure"),
		since:  fs.String("since", "", "only entries at or after this RFC 3339 time, like 2026-01-31T00:00:00Z"),
		until:  fs.String("until", "", "only entries before this RFC 3339 time"),
	}
}

func (f *auditFlags) query() (apiclient.AuditQuery, error) {
	q := apiclient.AuditQuery{User: *f.user, Domain: *f.domain, Action: *f.action, Result: *f.result}
	for _, t := range []struct {
		name string
		s    string
		to   *time.Time
	}{{"since", *f.since, &q.Since}, {"until", *f.until, &q.Until}} {
		if t.s == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339, t.s)
		if err != nil {
			return q, usagef("--%s must be an RFC 3339 time like 2026-01-31T12:00:00Z", t.name)
		}
		*t.to = v
	}
	return q, nil
}

func (inv *invocation) auditList(args []string) error {
	fs := inv.flags("[--user U] [--domain D] [--action A] [--result R] [--since RFC3339] [--until RFC3339] [--limit N] [--offset N]")
	g := inv.globalFlags(fs, true)
	af := newAuditFlags(fs)
	page := pageFlags(fs)
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	q, err := af.query()
	if err != nil {
		return err
	}
	q.Page = *page
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	l, err := c.ListAudit(inv.ctx, q)
	if err != nil {
		return err
	}
	inv.moreNote(g, len(l.Items), l.Total, page.Offset)
	return inv.emit(g, l.JSON(), func(w io.Writer) {
		fmt.Fprintln(w, "TIME\tUSER\tACTION\tOBJECT\tRESULT\tDETAIL")
		for _, e := range l.Items {
			obj := orDefault(e.ObjectName, e.ObjectID)
			fmt.Fprintf(w, "%s\t%s\t%s.%s\t%s\t%s\t%s\n", e.At.Local().Format("2006-01-02 15:04:05"), orDash(e.Username), e.Domain, e.Action,
				orDash(oneLine(obj)), e.Result, orDash(oneLine(e.Detail)))
		}
	})
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func (inv *invocation) auditExport(args []string) error {
	fs := inv.flags("[--user U] [--domain D] [--action A] [--result R] [--since RFC3339] [--until RFC3339] > audit.csv\n\n" +
		"Writes every matching entry as CSV to stdout.")
	g := inv.globalFlags(fs, true)
	af := newAuditFlags(fs)
	if _, err := inv.parse(fs, args, 0, 0); err != nil {
		return err
	}
	q, err := af.query()
	if err != nil {
		return err
	}
	c, err := inv.client(g)
	if err != nil {
		return err
	}
	_, err = c.ExportAudit(inv.ctx, q, inv.stdout)
	return err
}
