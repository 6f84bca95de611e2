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
	Version   int64
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
	rows, err := db.ro.QueryContext(ctx, `SELECT id, COALESCE(parent_id, ''), name, created_at, version FROM static_groups`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	t := &GroupTree{byID: map[string]*Group{}, byPath: map[string]*Group{}}
	for rows.Next() {
		g := &Group{}
		var created int64
		if err := rows.Scan(&g.ID, &g.ParentID, &g.Name, &created, &g.Version); err != nil {
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
	g := &Group{ID: uuid.NewString(), ParentID: parentID, Name: name, CreatedAt: time.Now().UTC().Truncate(time.Millisecond), Version: 1}
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

// IsWithin reports whether group id is ancestor or a descendant of it
// (ancestor included).
func (t *GroupTree) IsWithin(id, ancestor string) bool {
	for depth := 0; id != "" && depth < 256; depth++ {
		if id == ancestor {
			return true
		}
		g, ok := t.byID[id]
		if !ok {
			return false
		}
		id = g.ParentID
	}
	return false
}

// RenameGroup renames a group if its version is still version. All cannot
// be renamed (invalid). Returns conflict for a sibling with the name or a
// concurrent change, not_found for an unknown group.
func (db *DB) RenameGroup(ctx context.Context, id, name string, version int64) (err error) {
	defer db.track("rename_group", time.Now(), &err)
	if id == GroupAll {
		return errcode.New(errcode.Invalid, "the All group cannot be renamed")
	}
	if err := ValidateGroupName(name); err != nil {
		return err
	}
	return db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE static_groups SET name = ?, version = version + 1 WHERE id = ? AND version = ?`, name, id, version)
		if isUniqueViolation(err) {
			return errcode.New(errcode.Conflict, "a group named %q already exists there", name)
		}
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return versionConflict(ctx, tx, "static_groups", id, "group")
		}
		return nil
	})
}

// MoveGroup moves a group under newParent if its version is still version.
// Moving All, or moving a group into itself or its own subtree (a cycle),
// is invalid.
func (db *DB) MoveGroup(ctx context.Context, id, newParent string, version int64) (err error) {
	defer db.track("move_group", time.Now(), &err)
	if id == GroupAll {
		return errcode.New(errcode.Invalid, "the All group cannot be moved")
	}
	return db.tx(ctx, func(tx *sql.Tx) error {
		if err := groupExists(ctx, tx, newParent); err != nil {
			return err
		}
		// Walk up from the new parent: meeting the group itself is a cycle.
		for cur, depth := newParent, 0; cur != ""; depth++ {
			if cur == id {
				return errcode.New(errcode.Invalid, "a group cannot be moved into itself or one of its subgroups")
			}
			if depth > 256 {
				return errcode.New(errcode.Invalid, "group tree too deep")
			}
			var parent sql.NullString
			if err := tx.QueryRowContext(ctx, `SELECT parent_id FROM static_groups WHERE id = ?`, cur).Scan(&parent); err != nil {
				return err
			}
			cur = parent.String
		}
		res, err := tx.ExecContext(ctx, `UPDATE static_groups SET parent_id = ?, version = version + 1 WHERE id = ? AND version = ?`, newParent, id, version)
		if isUniqueViolation(err) {
			return errcode.New(errcode.Conflict, "the destination already has a group with that name")
		}
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return versionConflict(ctx, tx, "static_groups", id, "group")
		}
		return nil
	})
}

// GroupMembers counts what lives in a group (not its subgroups' members).
type GroupMembers struct {
	Subgroups, Computers, EnrollmentTokens, PermissionSets, Users int
	DynamicGroups, Policies, Tasks                                int
}

// Empty reports whether nothing lives in the group.
func (m GroupMembers) Empty() bool { return m == GroupMembers{} }

func groupMembers(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, id string) (GroupMembers, error) {
	var m GroupMembers
	err := q.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM static_groups WHERE parent_id = ?),
		(SELECT COUNT(*) FROM computers WHERE group_id = ? AND revoked_at IS NULL),
		(SELECT COUNT(*) FROM enrollment_tokens WHERE group_id = ? OR access_group_id = ?),
		(SELECT COUNT(*) FROM permission_sets WHERE group_id = ?),
		(SELECT COUNT(*) FROM users WHERE home_group_id = ?),
		(SELECT COUNT(*) FROM dynamic_groups WHERE static_parent_id = ?),
		(SELECT COUNT(*) FROM policies WHERE group_id = ?),
		(SELECT COUNT(*) FROM tasks WHERE group_id = ?)`, id, id, id, id, id, id, id, id, id).
		Scan(&m.Subgroups, &m.Computers, &m.EnrollmentTokens, &m.PermissionSets, &m.Users, &m.DynamicGroups, &m.Policies, &m.Tasks)
	return m, err
}

// GroupMembersOf counts what lives in a group.
func (db *DB) GroupMembersOf(ctx context.Context, id string) (_ GroupMembers, err error) {
	defer db.track("group_members", time.Now(), &err)
	return groupMembers(ctx, db.ro, id)
}

// DeleteGroup deletes a group. It must have no subgroups and no dynamic
// groups (moving those would change what they select). Its computers and
// objects (tokens, permission sets, users' home group, policies, tasks)
// move to moveTo when given; without moveTo the group must be empty
// (conflict otherwise).
// Permission sets whose scope names the group lose it (never re-scoped to
// the destination, which could widen what they grant). All and Lost &
// Found cannot be deleted.
func (db *DB) DeleteGroup(ctx context.Context, id, moveTo string, version int64) (err error) {
	defer db.track("delete_group", time.Now(), &err)
	if id == GroupAll || id == GroupLostFound {
		return errcode.New(errcode.Invalid, "the All and Lost & Found groups cannot be deleted")
	}
	return db.tx(ctx, func(tx *sql.Tx) error {
		var v int64
		if err := tx.QueryRowContext(ctx, `SELECT version FROM static_groups WHERE id = ?`, id).Scan(&v); err != nil {
			return notFound(err, "group not found")
		}
		if v != version {
			return errcode.New(errcode.Conflict, "the group was changed by someone else; reload it and try again")
		}
		m, err := groupMembers(ctx, tx, id)
		if err != nil {
			return err
		}
		if m.Subgroups > 0 {
			return errcode.New(errcode.Conflict, "the group has %d subgroups; delete or move them first", m.Subgroups)
		}
		if m.DynamicGroups > 0 {
			return errcode.New(errcode.Conflict, "the group holds %d dynamic groups; delete them or move them to another group first", m.DynamicGroups)
		}
		if moveTo == "" {
			if !m.Empty() {
				return errcode.New(errcode.Conflict, "the group is not empty (%d computers, %d enrollment tokens, %d permission sets, %d users, %d policies, %d tasks); give a group to move them to",
					m.Computers, m.EnrollmentTokens, m.PermissionSets, m.Users, m.Policies, m.Tasks)
			}
		} else {
			if moveTo == id {
				return errcode.New(errcode.Invalid, "cannot move members into the group being deleted")
			}
			if err := groupExists(ctx, tx, moveTo); err != nil {
				return err
			}
			for _, q := range []string{
				`UPDATE computers SET group_id = ? WHERE group_id = ?`,
				`UPDATE enrollment_tokens SET group_id = ? WHERE group_id = ?`,
				`UPDATE enrollment_tokens SET access_group_id = ? WHERE access_group_id = ?`,
				`UPDATE permission_sets SET group_id = ? WHERE group_id = ?`,
				`UPDATE users SET home_group_id = ? WHERE home_group_id = ?`,
				`UPDATE policies SET group_id = ? WHERE group_id = ?`,
				`UPDATE tasks SET group_id = ? WHERE group_id = ?`,
			} {
				if _, err := tx.ExecContext(ctx, q, moveTo, id); err != nil {
					return err
				}
			}
		}
		// Revoked computers keep no place; they move with the rest or to Lost & Found.
		dest := moveTo
		if dest == "" {
			dest = GroupLostFound
		}
		if _, err := tx.ExecContext(ctx, `UPDATE computers SET group_id = ? WHERE group_id = ?`, dest, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM permission_set_groups WHERE group_id = ?`, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM policy_assignments WHERE target_type = 'static' AND target_id = ?`, id); err != nil {
			return err
		}
		if err := dropTriggerTargets(ctx, tx, "static_group", id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM static_groups WHERE id = ?`, id)
		return err
	})
}
