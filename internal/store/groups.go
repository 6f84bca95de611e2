package store

import (
	"cmp"
	"context"
	"database/sql"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/mamori/mamori/internal/errcode"
)

// Well-known static groups created by the first migration.
const (
	GroupAll        = "all"
	GroupLostFound  = "lost-found"
	PathSeparator   = "/"
	maxGroupNameLen = 128
)

// Group is a static group.
type Group struct {
	ID        string
	ParentID  string // "" for All
	Name      string
	Path      string // "All/Servers/Web"
	CreatedAt time.Time
}

// GroupTree is a snapshot of all static groups, indexed for path lookups.
type GroupTree struct {
	byID   map[string]*Group
	byPath map[string]*Group
	list   []*Group
}

// Get returns the group with id.
func (t *GroupTree) Get(id string) (*Group, bool) { g, ok := t.byID[id]; return g, ok }

// List returns the groups in path order.
func (t *GroupTree) List() []*Group { return t.list }

// Resolve finds a group by path. "All/Servers", "Servers" (relative to All)
// and "/Servers" all name the same group; matching is exact on names.
func (t *GroupTree) Resolve(path string) (*Group, error) {
	p := NormalizeGroupPath(path)
	if g, ok := t.byPath[p]; ok {
		return g, nil
	}
	return nil, errcode.New(errcode.NotFound, "static group %q not found", path)
}

// Descendants returns id and the ids of all groups below it.
func (t *GroupTree) Descendants(id string) []string {
	g, ok := t.byID[id]
	if !ok {
		return nil
	}
	var out []string
	prefix := g.Path + PathSeparator
	for _, o := range t.list {
		if o.ID == id || strings.HasPrefix(o.Path, prefix) {
			out = append(out, o.ID)
		}
	}
	return out
}

// NormalizeGroupPath turns user input into the canonical "All/..." form.
func NormalizeGroupPath(path string) string {
	p := strings.Trim(strings.TrimSpace(path), PathSeparator)
	if p == "" {
		return "All"
	}
	if p != "All" && !strings.HasPrefix(p, "All"+PathSeparator) {
		p = "All" + PathSeparator + p
	}
	return p
}

// Groups loads the static group tree.
func (db *DB) Groups(ctx context.Context) (_ *GroupTree, err error) {
	defer db.track("groups", time.Now(), &err)
	rows, err := db.ro.QueryContext(ctx, `SELECT id, COALESCE(parent_id, ''), name, created_at FROM static_groups`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	t := &GroupTree{byID: map[string]*Group{}, byPath: map[string]*Group{}}
	for rows.Next() {
		g := &Group{}
		var created int64
		if err := rows.Scan(&g.ID, &g.ParentID, &g.Name, &created); err != nil {
			return nil, err
		}
		g.CreatedAt = fromMS(created)
		t.byID[g.ID] = g
		t.list = append(t.list, g)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, g := range t.list {
		g.Path = t.pathOf(g, 0)
		t.byPath[g.Path] = g
	}
	sortGroups(t.list)
	return t, nil
}

func (t *GroupTree) pathOf(g *Group, depth int) string {
	if g.ParentID == "" || depth > 64 {
		return g.Name
	}
	p, ok := t.byID[g.ParentID]
	if !ok {
		return g.Name
	}
	return t.pathOf(p, depth+1) + PathSeparator + g.Name
}

func sortGroups(gs []*Group) {
	slices.SortFunc(gs, func(a, b *Group) int { return cmp.Compare(a.Path, b.Path) })
}

// ValidateGroupName returns invalid for names that cannot be a path segment.
func ValidateGroupName(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return errcode.New(errcode.Invalid, "group name must not be empty")
	case len(name) > maxGroupNameLen:
		return errcode.New(errcode.Invalid, "group name longer than %d bytes", maxGroupNameLen)
	case strings.Contains(name, PathSeparator):
		return errcode.New(errcode.Invalid, "group name must not contain %q", PathSeparator)
	case strings.TrimSpace(name) != name:
		return errcode.New(errcode.Invalid, "group name must not start or end with spaces")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return errcode.New(errcode.Invalid, "group name must not contain control characters")
		}
	}
	return nil
}

// CreateGroup creates a static group under parentID. Returns not_found if the
// parent does not exist, conflict if a sibling has the same name, invalid for
// a bad name.
func (db *DB) CreateGroup(ctx context.Context, parentID, name string) (_ *Group, err error) {
	defer db.track("create_group", time.Now(), &err)
	if err := ValidateGroupName(name); err != nil {
		return nil, err
	}
	g := &Group{ID: uuid.NewString(), ParentID: parentID, Name: name, CreatedAt: time.Now().UTC().Truncate(time.Millisecond)}
	err = db.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM static_groups WHERE id = ?`, parentID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errcode.New(errcode.NotFound, "parent group not found")
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO static_groups (id, parent_id, name, created_at) VALUES (?, ?, ?, ?)`,
			g.ID, parentID, name, ms(g.CreatedAt))
		if isUniqueViolation(err) {
			return errcode.New(errcode.Conflict, "a group named %q already exists there", name)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}
