package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/mamori/mamori/internal/errcode"
)

// PolicyRow is a stored policy; Settings is its JSON object of settings.
type PolicyRow struct {
	ID          string
	Name        string
	Product     string
	Description string
	GroupID     string
	Settings    string
	CreatedAt   time.Time
	UpdatedAt   time.Time
	Version     int64
}

// PolicyAssignment puts a policy on a target.
type PolicyAssignment struct {
	ID         string
	PolicyID   string
	TargetType string // static, dynamic, computer
	TargetID   string
	Rank       int
	CreatedAt  time.Time
	Version    int64
}

const policyColumns = `id, name, product, description, group_id, settings, created_at, updated_at, version`

func scanPolicy(row interface{ Scan(...any) error }) (*PolicyRow, error) {
	p := &PolicyRow{}
	var c, u int64
	if err := row.Scan(&p.ID, &p.Name, &p.Product, &p.Description, &p.GroupID, &p.Settings, &c, &u, &p.Version); err != nil {
		return nil, err
	}
	p.CreatedAt, p.UpdatedAt = fromMS(c), fromMS(u)
	return p, nil
}

// Policies returns every policy, by name.
func (db *DB) Policies(ctx context.Context) (_ []*PolicyRow, err error) {
	defer db.track("policies", time.Now(), &err)
	rows, err := db.ro.QueryContext(ctx, `SELECT `+policyColumns+` FROM policies ORDER BY name, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*PolicyRow
	for rows.Next() {
		p, err := scanPolicy(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// PolicyByID returns not_found for an unknown id.
func (db *DB) PolicyByID(ctx context.Context, id string) (_ *PolicyRow, err error) {
	defer db.track("policy", time.Now(), &err)
	p, err := scanPolicy(db.ro.QueryRowContext(ctx, `SELECT `+policyColumns+` FROM policies WHERE id = ?`, id))
	return p, notFound(err, "policy not found")
}

// CreatePolicy stores p. Returns conflict for a taken name.
func (db *DB) CreatePolicy(ctx context.Context, p *PolicyRow) (err error) {
	defer db.track("create_policy", time.Now(), &err)
	now := time.Now().UTC().Truncate(time.Millisecond)
	p.CreatedAt, p.UpdatedAt, p.Version = now, now, 1
	return db.tx(ctx, func(tx *sql.Tx) error {
		if err := groupExists(ctx, tx, p.GroupID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO policies (id, name, product, description, group_id, settings, created_at, updated_at, version)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)`, p.ID, p.Name, p.Product, p.Description, p.GroupID, p.Settings, ms(now), ms(now))
		if isUniqueViolation(err) {
			return errcode.New(errcode.Conflict, "a policy named %q already exists", p.Name)
		}
		return err
	})
}

// UpdatePolicy writes name, description, group and settings if the version
// is still p.Version. The product never changes.
func (db *DB) UpdatePolicy(ctx context.Context, p *PolicyRow) (err error) {
	defer db.track("update_policy", time.Now(), &err)
	now := time.Now().UTC().Truncate(time.Millisecond)
	if err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := groupExists(ctx, tx, p.GroupID); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE policies SET name = ?, description = ?, group_id = ?, settings = ?, updated_at = ?, version = version + 1
			WHERE id = ? AND version = ?`, p.Name, p.Description, p.GroupID, p.Settings, ms(now), p.ID, p.Version)
		if isUniqueViolation(err) {
			return errcode.New(errcode.Conflict, "a policy named %q already exists", p.Name)
		}
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return versionConflict(ctx, tx, "policies", p.ID, "policy")
		}
		return nil
	}); err != nil {
		return err
	}
	// After the commit, not in fn, which may run twice (see runTx).
	p.Version++
	p.UpdatedAt = now
	return nil
}

// DeletePolicy deletes a policy and its assignments.
func (db *DB) DeletePolicy(ctx context.Context, id string, version int64) (err error) {
	defer db.track("delete_policy", time.Now(), &err)
	return db.deleteVersioned(ctx, "policies", "policy", id, version)
}

const assignmentColumns = `id, policy_id, target_type, target_id, rank, created_at, version`

func scanAssignment(row interface{ Scan(...any) error }) (*PolicyAssignment, error) {
	a := &PolicyAssignment{}
	var c int64
	if err := row.Scan(&a.ID, &a.PolicyID, &a.TargetType, &a.TargetID, &a.Rank, &c, &a.Version); err != nil {
		return nil, err
	}
	a.CreatedAt = fromMS(c)
	return a, nil
}

// PolicyAssignments returns every assignment (policyID "" for all).
func (db *DB) PolicyAssignments(ctx context.Context, policyID string) (_ []*PolicyAssignment, err error) {
	defer db.track("policy_assignments", time.Now(), &err)
	q, args := `SELECT `+assignmentColumns+` FROM policy_assignments`, []any{}
	if policyID != "" {
		q, args = q+` WHERE policy_id = ?`, append(args, policyID)
	}
	rows, err := db.ro.QueryContext(ctx, q+` ORDER BY target_type, target_id, rank, created_at`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*PolicyAssignment
	for rows.Next() {
		a, err := scanAssignment(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// PolicyAssignmentByID returns not_found for an unknown id.
func (db *DB) PolicyAssignmentByID(ctx context.Context, id string) (_ *PolicyAssignment, err error) {
	defer db.track("policy_assignment", time.Now(), &err)
	a, err := scanAssignment(db.ro.QueryRowContext(ctx, `SELECT `+assignmentColumns+` FROM policy_assignments WHERE id = ?`, id))
	return a, notFound(err, "assignment not found")
}

// AssignPolicy adds an assignment. Returns conflict when the policy is
// already on that target, not_found when the policy or the target does not
// exist.
func (db *DB) AssignPolicy(ctx context.Context, a *PolicyAssignment) (err error) {
	defer db.track("assign_policy", time.Now(), &err)
	now := time.Now().UTC().Truncate(time.Millisecond)
	a.CreatedAt, a.Version = now, 1
	return db.tx(ctx, func(tx *sql.Tx) error {
		table := map[string]string{"static": "static_groups", "dynamic": "dynamic_groups", "computer": "computers"}[a.TargetType]
		if table == "" {
			return errcode.New(errcode.Invalid, "target type must be static, dynamic or computer")
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM policies WHERE id = ?`, a.PolicyID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errcode.New(errcode.NotFound, "policy not found")
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table+` WHERE id = ?`, a.TargetID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errcode.New(errcode.NotFound, "target not found")
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO policy_assignments (id, policy_id, target_type, target_id, rank, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
			a.ID, a.PolicyID, a.TargetType, a.TargetID, a.Rank, ms(now))
		if isUniqueViolation(err) {
			return errcode.New(errcode.Conflict, "the policy is already assigned to that target")
		}
		return err
	})
}

// SetAssignmentRank changes an assignment's order within its target if it
// is still at version (conflict otherwise).
func (db *DB) SetAssignmentRank(ctx context.Context, id string, rank int, version int64) (err error) {
	defer db.track("set_assignment_rank", time.Now(), &err)
	return db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE policy_assignments SET rank = ?, version = version + 1 WHERE id = ? AND version = ?`, rank, id, version)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return versionConflict(ctx, tx, "policy_assignments", id, "assignment")
		}
		return nil
	})
}

// Unassign removes an assignment if it is still at version.
func (db *DB) Unassign(ctx context.Context, id string, version int64) (err error) {
	defer db.track("unassign_policy", time.Now(), &err)
	return db.deleteVersioned(ctx, "policy_assignments", "assignment", id, version)
}

// ConfigState is what is known about a computer's configuration.
type ConfigState struct {
	Desired    string // version the server computed
	Applied    string // version the agent reported applied
	Error      string // the agent's reason for refusing the desired one
	ReportedAt time.Time
}

// ComputerConfigState returns a computer's configuration versions.
func (db *DB) ComputerConfigState(ctx context.Context, id string) (_ *ConfigState, err error) {
	defer db.track("config_state", time.Now(), &err)
	s := &ConfigState{}
	var at int64
	err = db.ro.QueryRowContext(ctx, `SELECT config_version, config_applied_version, config_error, config_reported_at FROM computers WHERE id = ?`, id).
		Scan(&s.Desired, &s.Applied, &s.Error, &at)
	if err != nil {
		return nil, notFound(err, "computer not found")
	}
	s.ReportedAt = fromMS(at)
	return s, nil
}

// ConfigVersion is the configuration version recorded for a computer
// (SetDesiredConfig); "" when none was.
func (db *DB) ConfigVersion(ctx context.Context, computerID string) (_ string, err error) {
	defer db.track("config_version", time.Now(), &err)
	var v string
	err = db.queryRowRO(ctx, `SELECT config_version FROM computers WHERE id = ?`, computerID).Scan(&v)
	return v, notFound(err, "computer not found")
}

// SetDesiredConfig records the configuration versions computed for
// computers (id -> version).
func (db *DB) SetDesiredConfig(ctx context.Context, versions map[string]string) (err error) {
	if len(versions) == 0 {
		return nil
	}
	defer db.track("set_desired_config", time.Now(), &err)
	return db.tx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE computers SET config_version = ? WHERE id = ?`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for id, v := range versions {
			if _, err := stmt.ExecContext(ctx, v, id); err != nil {
				return err
			}
		}
		return nil
	})
}

// ReportConfig records what an agent applied (or why it refused).
func (db *DB) ReportConfig(ctx context.Context, id, applied, reason string, at time.Time) (err error) {
	defer db.track("report_config", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `UPDATE computers SET config_applied_version = ?, config_error = ?, config_reported_at = ? WHERE id = ?`,
		applied, reason, ms(at), id)
	return err
}
