package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
	"github.com/mamori/mamori/internal/tasks"
)

// ServerStore is what server tasks read and write.
type ServerStore interface {
	Groups(ctx context.Context) (*store.GroupTree, error)
	ComputerIDs(ctx context.Context, groupIDs []string) ([]string, error)
	ComputerByID(ctx context.Context, id string) (*store.Computer, error)
	StaleComputers(ctx context.Context, groupIDs []string, before time.Time) ([]*store.Computer, error)
	RevokeComputer(ctx context.Context, id string, now time.Time) error
	RenameComputer(ctx context.Context, id, name string) error
	InventorySections(ctx context.Context, computerID string) ([]store.InventorySection, error)
	AppendAudit(ctx context.Context, e *store.AuditEntry) error
}

// ServerTasks runs server task runs against the store. Every change is
// audited as done by the system for the task.
type ServerTasks struct {
	Store ServerStore
	Now   func() time.Time
	// Disconnect, when set, closes the session of a removed computer.
	Disconnect func(computerID string)
}

// RunServerTask implements ServerRunner.
func (s *ServerTasks) RunServerTask(ctx context.Context, run *store.TaskRun) (string, error) {
	p, err := tasks.ParseParams(tasks.Type(run.Type), json.RawMessage(run.Params))
	if err != nil {
		return "", err
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	tree, err := s.Store.Groups(ctx)
	if err != nil {
		return "", err
	}
	group, _ := p["group"].(string)
	g, err := tree.Resolve(group)
	if err != nil {
		return "", err
	}
	groups := tree.Descendants(g.ID)
	audit := func(action, id, name, diff string) error {
		return s.Store.AppendAudit(ctx, &store.AuditEntry{At: now().UTC(), Via: "system", Username: "task:" + run.TaskID,
			Domain: "computers", Action: action, ObjectID: id, ObjectName: name, Diff: diff, Result: store.AuditSuccess,
			Detail: "task run " + run.ID})
	}
	var b strings.Builder
	switch tasks.Type(run.Type) {
	case tasks.DeleteNotConnecting:
		days := toInt(p["days"])
		cutoff := now().Add(-time.Duration(days) * 24 * time.Hour)
		stale, err := s.Store.StaleComputers(ctx, groups, cutoff)
		if err != nil {
			return "", err
		}
		for _, c := range stale {
			if err := s.Store.RevokeComputer(ctx, c.ID, now().UTC()); err != nil {
				if errcode.Is(err, errcode.NotFound) {
					continue
				}
				return b.String(), err
			}
			if s.Disconnect != nil {
				s.Disconnect(c.ID)
			}
			seen := "never"
			if !c.LastSeen.IsZero() {
				seen = c.LastSeen.UTC().Format(time.RFC3339)
			}
			if err := audit("revoke", c.ID, c.Name, ""); err != nil {
				return b.String(), err
			}
			fmt.Fprintf(&b, "removed %s (%s), last seen %s\n", c.Name, c.ID, seen)
		}
		fmt.Fprintf(&b, "%d computer(s) in %s not connected for %d day(s) removed\n", len(stale), g.Path, days)
	case tasks.RenameComputers:
		pattern, _ := p["pattern"].(string)
		ids, err := s.Store.ComputerIDs(ctx, groups)
		if err != nil {
			return "", err
		}
		renamed := 0
		for _, id := range ids {
			c, err := s.Store.ComputerByID(ctx, id)
			if err != nil {
				continue
			}
			fqdn := ""
			if secs, err := s.Store.InventorySections(ctx, id); err == nil {
				for _, sec := range secs {
					if sec.Section == "system" {
						var v struct {
							FQDN string `json:"fqdn"`
						}
						_ = json.Unmarshal([]byte(sec.Data), &v)
						fqdn = v.FQDN
					}
				}
			}
			name := ExpandName(pattern, c, fqdn)
			if name == "" || name == c.Name {
				continue
			}
			if err := s.Store.RenameComputer(ctx, id, name); err != nil {
				return b.String(), err
			}
			diff, _ := json.Marshal(map[string][2]string{"name": {c.Name, name}})
			if err := audit("rename", id, name, string(diff)); err != nil {
				return b.String(), err
			}
			renamed++
			fmt.Fprintf(&b, "%s -> %s\n", c.Name, name)
		}
		fmt.Fprintf(&b, "%d of %d computer(s) in %s renamed\n", renamed, len(ids), g.Path)
	default:
		return "", errcode.New(errcode.Invalid, "%s is not a server task", run.Type)
	}
	return b.String(), nil
}

// ExpandName fills a rename pattern; the result is trimmed to 128
// characters and "" when nothing usable remains.
func ExpandName(pattern string, c *store.Computer, fqdn string) string {
	if fqdn == "" {
		fqdn = c.Hostname
	}
	r := strings.NewReplacer("{hostname}", c.Hostname, "{fqdn}", fqdn, "{instance}", c.Instance, "{id}", c.ID)
	name := strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, r.Replace(pattern)))
	for len(name) > 128 {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	return strings.TrimSpace(name)
}

func toInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int:
		return int64(x)
	case float64:
		return int64(x)
	case json.Number:
		n, _ := x.Int64()
		return n
	}
	return 0
}
