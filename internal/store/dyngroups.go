package store

import (
	"context"
	"database/sql"
	"strings"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

// DynamicGroup is a group whose members a template selects.
type DynamicGroup struct {
	ID              string
	Name            string
	Description     string
	StaticParentID  string // set for a group under a static group
	DynamicParentID string // set for a group under a dynamic group
	Template        string // JSON (see internal/dyngroup)
	CreatedAt       time.Time
	UpdatedAt       time.Time
	EvaluatedAt     time.Time
	Version         int64
	Members         int // filled by DynamicGroups and DynamicGroupByID
}

const dynColumns = `d.id, d.name, d.description, COALESCE(d.static_parent_id, ''), COALESCE(d.dynamic_parent_id, ''), d.template,
	d.created_at, d.updated_at, d.evaluated_at, d.version, (SELECT COUNT(*) FROM dynamic_group_members m WHERE m.group_id = d.id)`

func scanDyn(row interface{ Scan(...any) error }) (*DynamicGroup, error) {
	g := &DynamicGroup{}
	var c, u, e int64
	if err := row.Scan(&g.ID, &g.Name, &g.Description, &g.StaticParentID, &g.DynamicParentID, &g.Template, &c, &u, &e, &g.Version, &g.Members); err != nil {
		return nil, err
	}
	g.CreatedAt, g.UpdatedAt, g.EvaluatedAt = fromMS(c), fromMS(u), fromMS(e)
	return g, nil
}

// DynamicGroups returns every dynamic group (they are few), by name.
func (db *DB) DynamicGroups(ctx context.Context) (_ []*DynamicGroup, err error) {
	defer db.track("dynamic_groups", time.Now(), &err)
	rows, err := db.ro.QueryContext(ctx, `SELECT `+dynColumns+` FROM dynamic_groups d ORDER BY d.name, d.id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*DynamicGroup
	for rows.Next() {
		g, err := scanDyn(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// DynamicGroupDefinitions is DynamicGroups without member counts (Members
// is 0): what the evaluator reads on every pass, which must not count every
// membership row each time.
func (db *DB) DynamicGroupDefinitions(ctx context.Context) (_ []*DynamicGroup, err error) {
	defer db.track("dynamic_group_definitions", time.Now(), &err)
	cols := strings.Replace(dynColumns, `(SELECT COUNT(*) FROM dynamic_group_members m WHERE m.group_id = d.id)`, `0`, 1)
	rows, err := db.ro.QueryContext(ctx, `SELECT `+cols+` FROM dynamic_groups d ORDER BY d.name, d.id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*DynamicGroup
	for rows.Next() {
		g, err := scanDyn(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// DynamicGroupByID returns not_found for an unknown id.
func (db *DB) DynamicGroupByID(ctx context.Context, id string) (_ *DynamicGroup, err error) {
	defer db.track("dynamic_group", time.Now(), &err)
	g, err := scanDyn(db.ro.QueryRowContext(ctx, `SELECT `+dynColumns+` FROM dynamic_groups d WHERE d.id = ?`, id))
	return g, notFound(err, "dynamic group not found")
}

// CreateDynamicGroup stores g. Returns conflict for a sibling with the same
// name, not_found for an unknown parent.
func (db *DB) CreateDynamicGroup(ctx context.Context, g *DynamicGroup) (err error) {
	defer db.track("create_dynamic_group", time.Now(), &err)
	now := time.Now().UTC().Truncate(time.Millisecond)
	g.CreatedAt, g.UpdatedAt, g.Version = now, now, 1
	return db.tx(ctx, func(tx *sql.Tx) error {
		if g.StaticParentID != "" {
			if err := groupExists(ctx, tx, g.StaticParentID); err != nil {
				return err
			}
		} else {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM dynamic_groups WHERE id = ?`, g.DynamicParentID).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return errcode.New(errcode.NotFound, "parent dynamic group not found")
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO dynamic_groups (id, name, description, static_parent_id, dynamic_parent_id, template, created_at, updated_at, version)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)`, g.ID, g.Name, g.Description, nullStr(g.StaticParentID), nullStr(g.DynamicParentID), g.Template, ms(now), ms(now))
		if isUniqueViolation(err) {
			return errcode.New(errcode.Conflict, "a dynamic group named %q already exists there", g.Name)
		}
		return err
	})
}

func nullStr(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// UpdateDynamicGroup writes name, description and template if the version
// is still g.Version.
func (db *DB) UpdateDynamicGroup(ctx context.Context, g *DynamicGroup) (err error) {
	defer db.track("update_dynamic_group", time.Now(), &err)
	now := time.Now().UTC().Truncate(time.Millisecond)
	if err := db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE dynamic_groups SET name = ?, description = ?, template = ?, updated_at = ?, version = version + 1
			WHERE id = ? AND version = ?`, g.Name, g.Description, g.Template, ms(now), g.ID, g.Version)
		if isUniqueViolation(err) {
			return errcode.New(errcode.Conflict, "a dynamic group named %q already exists there", g.Name)
		}
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return versionConflict(ctx, tx, "dynamic_groups", g.ID, "dynamic group")
		}
		return nil
	}); err != nil {
		return err
	}
	// After the commit, not in fn, which may run twice (see runTx).
	g.Version++
	g.UpdatedAt = now
	return nil
}

// DeleteDynamicGroup deletes a dynamic group without child dynamic groups.
func (db *DB) DeleteDynamicGroup(ctx context.Context, id string, version int64) (err error) {
	defer db.track("delete_dynamic_group", time.Now(), &err)
	return db.tx(ctx, func(tx *sql.Tx) error {
		var v int64
		if err := tx.QueryRowContext(ctx, `SELECT version FROM dynamic_groups WHERE id = ?`, id).Scan(&v); err != nil {
			return notFound(err, "dynamic group not found")
		}
		if v != version {
			return errcode.New(errcode.Conflict, "the dynamic group was changed by someone else; reload it and try again")
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM dynamic_groups WHERE dynamic_parent_id = ?`, id).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return errcode.New(errcode.Conflict, "the dynamic group has %d dynamic subgroups; delete them first", n)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM policy_assignments WHERE target_type = 'dynamic' AND target_id = ?`, id); err != nil {
			return err
		}
		if err := dropTriggerTargets(ctx, tx, "dynamic_group", id); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM dynamic_groups WHERE id = ?`, id)
		return err
	})
}

// DynamicGroupMembers returns the ids of a group's members.
func (db *DB) DynamicGroupMembers(ctx context.Context, groupID string) (_ []string, err error) {
	defer db.track("dynamic_group_members", time.Now(), &err)
	return db.strings(ctx, `SELECT computer_id FROM dynamic_group_members WHERE group_id = ? ORDER BY computer_id`, groupID)
}

// ComputerDynamicGroups returns the ids of the dynamic groups a computer is in.
func (db *DB) ComputerDynamicGroups(ctx context.Context, computerID string) (_ []string, err error) {
	defer db.track("computer_dynamic_groups", time.Now(), &err)
	return db.strings(ctx, `SELECT group_id FROM dynamic_group_members WHERE computer_id = ? ORDER BY group_id`, computerID)
}

func (db *DB) strings(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := db.ro.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// Membership server events.
const (
	EventJoinedDynamicGroup = "dynamic_group.joined"
	EventLeftDynamicGroup   = "dynamic_group.left"
)

// ApplyMembership adds and removes members of a dynamic group and records a
// server event for each change, in one transaction. Computers that no
// longer exist are skipped.
func (db *DB) ApplyMembership(ctx context.Context, groupID string, added, removed []string, now time.Time) (err error) {
	defer db.track("apply_membership", time.Now(), &err)
	return db.tx(ctx, func(tx *sql.Tx) error {
		// Statements are prepared once per transaction: a template change
		// can move thousands of members.
		var ins, del, ev *sql.Stmt
		prep := func(st **sql.Stmt, q string) error {
			if *st != nil {
				return nil
			}
			var err error
			*st, err = tx.PrepareContext(ctx, q)
			return err
		}
		defer func() {
			for _, st := range []*sql.Stmt{ins, del, ev} {
				if st != nil {
					st.Close()
				}
			}
		}()
		event := func(typ, id string) error {
			if err := prep(&ev, `INSERT INTO server_events (at, type, computer_id, subject_id) VALUES (?, ?, ?, ?)`); err != nil {
				return err
			}
			_, err := ev.ExecContext(ctx, ms(now), typ, id, groupID)
			return err
		}
		for _, id := range added {
			if err := prep(&ins, `INSERT INTO dynamic_group_members (group_id, computer_id, since)
				SELECT ?, id, ? FROM computers WHERE id = ? ON CONFLICT DO NOTHING`); err != nil {
				return err
			}
			res, err := ins.ExecContext(ctx, groupID, ms(now), id)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 1 {
				if err := event(EventJoinedDynamicGroup, id); err != nil {
					return err
				}
			}
		}
		for _, id := range removed {
			if err := prep(&del, `DELETE FROM dynamic_group_members WHERE group_id = ? AND computer_id = ?`); err != nil {
				return err
			}
			res, err := del.ExecContext(ctx, groupID, id)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 1 {
				if err := event(EventLeftDynamicGroup, id); err != nil {
					return err
				}
			}
		}
		_, err := tx.ExecContext(ctx, `UPDATE dynamic_groups SET evaluated_at = ? WHERE id = ?`, ms(now), groupID)
		return err
	})
}

func addEvent(ctx context.Context, tx *sql.Tx, at time.Time, typ, computerID, subjectID string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO server_events (at, type, computer_id, subject_id) VALUES (?, ?, ?, ?)`, ms(at), typ, computerID, subjectID)
	return err
}

// ServerEvent is a server-side event.
type ServerEvent struct {
	Seq        int64
	At         time.Time
	Type       string
	ComputerID string
	SubjectID  string
	Data       string
}

// AddServerEvent records an event.
func (db *DB) AddServerEvent(ctx context.Context, e *ServerEvent) (err error) {
	defer db.track("add_server_event", time.Now(), &err)
	data := e.Data
	if data == "" {
		data = "{}"
	}
	return db.tx(ctx, func(tx *sql.Tx) error { // in turn with other writers: events commit in sequence order
		_, err := tx.ExecContext(ctx, `INSERT INTO server_events (at, type, computer_id, subject_id, data) VALUES (?, ?, ?, ?, ?)`,
			ms(e.At), e.Type, e.ComputerID, e.SubjectID, data)
		return err
	})
}

// ServerEventsAfter returns up to limit events with seq > after, oldest
// first, optionally of the given types.
func (db *DB) ServerEventsAfter(ctx context.Context, after int64, types []string, limit int) (_ []ServerEvent, err error) {
	defer db.track("server_events_after", time.Now(), &err)
	q, args := `SELECT seq, at, type, computer_id, subject_id, data FROM server_events WHERE seq > ?`, []any{after}
	if len(types) > 0 {
		q += " AND type IN (" + placeholders(len(types)) + ")"
		for _, t := range types {
			args = append(args, t)
		}
	}
	rows, err := db.ro.QueryContext(ctx, q+` ORDER BY seq LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ServerEvent
	for rows.Next() {
		var e ServerEvent
		var at int64
		if err := rows.Scan(&e.Seq, &at, &e.Type, &e.ComputerID, &e.SubjectID, &e.Data); err != nil {
			return nil, err
		}
		e.At = fromMS(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// bumpChange marks a computer as changed for the dynamic group evaluator.
func bumpChange(ctx context.Context, ex interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, computerID string) error {
	_, err := ex.ExecContext(ctx, `UPDATE computers SET change_seq = (SELECT COALESCE(MAX(change_seq), 0) + 1 FROM computers) WHERE id = ?`, computerID)
	return err
}

// ChangedComputers returns the ids of computers changed after seq and the
// highest seq seen (seq when nothing changed).
func (db *DB) ChangedComputers(ctx context.Context, seq int64, limit int) (_ []string, maxSeq int64, err error) {
	defer db.track("changed_computers", time.Now(), &err)
	rows, err := db.ro.QueryContext(ctx, `SELECT id, change_seq FROM computers WHERE change_seq > ? ORDER BY change_seq LIMIT ?`, seq, limit)
	if err != nil {
		return nil, seq, err
	}
	defer rows.Close()
	maxSeq = seq
	var out []string
	for rows.Next() {
		var id string
		var s int64
		if err := rows.Scan(&id, &s); err != nil {
			return nil, seq, err
		}
		out = append(out, id)
		maxSeq = max(maxSeq, s)
	}
	return out, maxSeq, rows.Err()
}

// EvalRow is what the dynamic group evaluator reads about a computer.
type EvalRow struct {
	Computer *Computer
	Tags     []string
	Sections map[string]string // section -> JSON, only those asked for
}

// ComputersForEvaluation returns the computers after afterID (by id) with
// their tags and the given inventory sections, limit at a time; ids
// restricts to those computers when non-nil. Revoked computers are left out.
func (db *DB) ComputersForEvaluation(ctx context.Context, afterID string, limit int, ids []string, sections []string) (_ []EvalRow, err error) {
	defer db.track("computers_for_evaluation", time.Now(), &err)
	q, args := `SELECT `+computerColumns+` FROM computers WHERE revoked_at IS NULL AND id > ?`, []any{afterID}
	if ids != nil {
		if len(ids) == 0 {
			return nil, nil
		}
		q += " AND id IN (" + placeholders(len(ids)) + ")"
		for _, id := range ids {
			args = append(args, id)
		}
	}
	rows, err := db.ro.QueryContext(ctx, q+` ORDER BY id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, err
	}
	var out []EvalRow
	byID := map[string]*EvalRow{}
	for rows.Next() {
		c, err := scanComputer(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, EvalRow{Computer: c, Sections: map[string]string{}})
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(out) == 0 {
		return out, err
	}
	ph := placeholders(len(out))
	idArgs := make([]any, len(out))
	for i := range out {
		byID[out[i].Computer.ID] = &out[i]
		idArgs[i] = out[i].Computer.ID
	}
	trows, err := db.ro.QueryContext(ctx, `SELECT computer_id, tag FROM computer_tags WHERE computer_id IN (`+ph+`) ORDER BY tag`, idArgs...)
	if err != nil {
		return nil, err
	}
	for trows.Next() {
		var id, tag string
		if err := trows.Scan(&id, &tag); err != nil {
			trows.Close()
			return nil, err
		}
		byID[id].Tags = append(byID[id].Tags, tag)
	}
	trows.Close()
	if len(sections) > 0 {
		sargs := append(append([]any{}, idArgs...), toAny(sections)...)
		srows, err := db.ro.QueryContext(ctx, `SELECT computer_id, section, data FROM inventory_sections WHERE computer_id IN (`+ph+`)
			AND section IN (`+placeholders(len(sections))+`)`, sargs...)
		if err != nil {
			return nil, err
		}
		for srows.Next() {
			var id, sec, data string
			if err := srows.Scan(&id, &sec, &data); err != nil {
				srows.Close()
				return nil, err
			}
			byID[id].Sections[sec] = data
		}
		srows.Close()
	}
	return out, nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// DynamicMembershipsOf returns, for the given computers, the dynamic groups
// each belongs to (group id -> computer ids).
func (db *DB) DynamicMembershipsOf(ctx context.Context, computerIDs []string) (_ map[string][]string, err error) {
	defer db.track("dynamic_memberships_of", time.Now(), &err)
	out := map[string][]string{}
	if len(computerIDs) == 0 {
		return out, nil
	}
	rows, err := db.ro.QueryContext(ctx, `SELECT group_id, computer_id FROM dynamic_group_members WHERE computer_id IN (`+placeholders(len(computerIDs))+`)`,
		toAny(computerIDs)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var g, c string
		if err := rows.Scan(&g, &c); err != nil {
			return nil, err
		}
		out[g] = append(out[g], c)
	}
	return out, rows.Err()
}
