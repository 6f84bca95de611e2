package store

import (
	"context"
	"database/sql"
	"slices"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

// Built-in permission sets.
const (
	PermSetAdministrator = "administrator"
	PermSetReviewer      = "reviewer"
)

// PermissionSet grants, over its static groups (each with its subgroups),
// a level per functionality.
type PermissionSet struct {
	ID          string
	Name        string
	Description string
	GroupID     string // access group of the set itself
	Builtin     bool
	Groups      []string       // scope: static group ids
	Grants      map[string]int // functionality -> level (1 read, 2 use, 3 write)
	CreatedAt   time.Time
	UpdatedAt   time.Time
	Version     int64
}

func (db *DB) loadSetDetails(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, ps *PermissionSet) error {
	rows, err := q.QueryContext(ctx, `SELECT group_id FROM permission_set_groups WHERE set_id = ? ORDER BY group_id`, ps.ID)
	if err != nil {
		return err
	}
	ps.Groups = nil
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			rows.Close()
			return err
		}
		ps.Groups = append(ps.Groups, g)
	}
	rows.Close()
	rows, err = q.QueryContext(ctx, `SELECT functionality, level FROM permission_set_grants WHERE set_id = ?`, ps.ID)
	if err != nil {
		return err
	}
	defer rows.Close()
	ps.Grants = map[string]int{}
	for rows.Next() {
		var f string
		var l int
		if err := rows.Scan(&f, &l); err != nil {
			return err
		}
		ps.Grants[f] = l
	}
	return rows.Err()
}

const permSetColumns = `id, name, description, group_id, builtin, created_at, updated_at, version`

func scanPermSet(row interface{ Scan(...any) error }) (*PermissionSet, error) {
	ps := &PermissionSet{}
	var c, u int64
	if err := row.Scan(&ps.ID, &ps.Name, &ps.Description, &ps.GroupID, &ps.Builtin, &c, &u, &ps.Version); err != nil {
		return nil, err
	}
	ps.CreatedAt, ps.UpdatedAt = fromMS(c), fromMS(u)
	return ps, nil
}

// PermissionSets returns every set with its groups and grants (they are few).
func (db *DB) PermissionSets(ctx context.Context) (_ []*PermissionSet, err error) {
	defer db.track("permission_sets", time.Now(), &err)
	rows, err := db.ro.QueryContext(ctx, `SELECT `+permSetColumns+` FROM permission_sets ORDER BY name`)
	if err != nil {
		return nil, err
	}
	var out []*PermissionSet
	for rows.Next() {
		ps, err := scanPermSet(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, ps)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, ps := range out {
		if err := db.loadSetDetails(ctx, db.ro, ps); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// PermissionSetByID returns not_found for an unknown id.
func (db *DB) PermissionSetByID(ctx context.Context, id string) (_ *PermissionSet, err error) {
	defer db.track("permission_set", time.Now(), &err)
	ps, err := scanPermSet(db.ro.QueryRowContext(ctx, `SELECT `+permSetColumns+` FROM permission_sets WHERE id = ?`, id))
	if err != nil {
		return nil, notFound(err, "permission set not found")
	}
	return ps, db.loadSetDetails(ctx, db.ro, ps)
}

// UserPermissionSets returns the sets held by a user.
func (db *DB) UserPermissionSets(ctx context.Context, userID string) (_ []*PermissionSet, err error) {
	defer db.track("user_permission_sets", time.Now(), &err)
	rows, err := db.ro.QueryContext(ctx, `SELECT `+permSetColumns+` FROM permission_sets WHERE id IN
		(SELECT set_id FROM user_permission_sets WHERE user_id = ?) ORDER BY name`, userID)
	if err != nil {
		return nil, err
	}
	var out []*PermissionSet
	for rows.Next() {
		ps, err := scanPermSet(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, ps)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, ps := range out {
		if err := db.loadSetDetails(ctx, db.ro, ps); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func writeSetDetails(ctx context.Context, tx *sql.Tx, ps *PermissionSet) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM permission_set_groups WHERE set_id = ?`, ps.ID); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM permission_set_grants WHERE set_id = ?`, ps.ID); err != nil {
		return err
	}
	groups := slices.Clone(ps.Groups)
	slices.Sort(groups)
	for _, g := range slices.Compact(groups) {
		if err := groupExists(ctx, tx, g); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO permission_set_groups (set_id, group_id) VALUES (?, ?)`, ps.ID, g); err != nil {
			return err
		}
	}
	for f, l := range ps.Grants {
		if _, err := tx.ExecContext(ctx, `INSERT INTO permission_set_grants (set_id, functionality, level) VALUES (?, ?, ?)`, ps.ID, f, l); err != nil {
			return err
		}
	}
	return nil
}

// CreatePermissionSet stores ps. Returns conflict for a taken name,
// not_found for an unknown group.
func (db *DB) CreatePermissionSet(ctx context.Context, ps *PermissionSet) (err error) {
	defer db.track("create_permission_set", time.Now(), &err)
	now := time.Now().UTC().Truncate(time.Millisecond)
	ps.CreatedAt, ps.UpdatedAt, ps.Version = now, now, 1
	return db.tx(ctx, func(tx *sql.Tx) error {
		if err := groupExists(ctx, tx, ps.GroupID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO permission_sets (id, name, description, group_id, builtin, created_at, updated_at, version)
			VALUES (?, ?, ?, ?, 0, ?, ?, 1)`, ps.ID, ps.Name, ps.Description, ps.GroupID, ms(now), ms(now))
		if isUniqueViolation(err) {
			return errcode.New(errcode.Conflict, "a permission set named %q already exists", ps.Name)
		}
		if err != nil {
			return err
		}
		return writeSetDetails(ctx, tx, ps)
	})
}

// UpdatePermissionSet writes ps if its version is still ps.Version. Built-in
// sets cannot change (conflict).
func (db *DB) UpdatePermissionSet(ctx context.Context, ps *PermissionSet) (err error) {
	defer db.track("update_permission_set", time.Now(), &err)
	now := time.Now().UTC().Truncate(time.Millisecond)
	if err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := groupExists(ctx, tx, ps.GroupID); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE permission_sets SET name = ?, description = ?, group_id = ?, updated_at = ?, version = version + 1
			WHERE id = ? AND version = ? AND builtin = 0`, ps.Name, ps.Description, ps.GroupID, ms(now), ps.ID, ps.Version)
		if isUniqueViolation(err) {
			return errcode.New(errcode.Conflict, "a permission set named %q already exists", ps.Name)
		}
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var builtin bool
			if err := tx.QueryRowContext(ctx, `SELECT builtin FROM permission_sets WHERE id = ?`, ps.ID).Scan(&builtin); err == nil && builtin {
				return errcode.New(errcode.Conflict, "built-in permission sets cannot be changed")
			}
			return versionConflict(ctx, tx, "permission_sets", ps.ID, "permission set")
		}
		if err := writeSetDetails(ctx, tx, ps); err != nil {
			return err // rolled back: the caller's version stays what is stored
		}
		return nil
	}); err != nil {
		return err
	}
	// After the commit, not in fn, which may run twice (see runTx).
	ps.Version++
	ps.UpdatedAt = now
	return nil
}

// DeletePermissionSet removes a set (and its assignments). Built-in sets
// cannot be deleted (conflict).
func (db *DB) DeletePermissionSet(ctx context.Context, id string) (err error) {
	defer db.track("delete_permission_set", time.Now(), &err)
	return db.tx(ctx, func(tx *sql.Tx) error {
		var builtin bool
		if err := tx.QueryRowContext(ctx, `SELECT builtin FROM permission_sets WHERE id = ?`, id).Scan(&builtin); err != nil {
			return notFound(err, "permission set not found")
		}
		if builtin {
			return errcode.New(errcode.Conflict, "built-in permission sets cannot be deleted")
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM permission_sets WHERE id = ?`, id)
		return err
	})
}
