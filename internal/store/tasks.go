package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mamori/mamori/internal/errcode"
)

// TaskRow is a stored task.
type TaskRow struct {
	ID          string
	Name        string
	Description string
	Type        string
	Params      string // JSON object
	GroupID     string
	CreatedBy   string
	CreatedAt   time.Time
	UpdatedAt   time.Time
	Version     int64
}

// TriggerRow is a stored trigger.
type TriggerRow struct {
	ID            string
	TaskID        string
	Spec          string // JSON of tasks.Trigger
	Targets       string // JSON list of {"type","id"}
	Enabled       bool
	CreatedBy     string
	CreatedAt     time.Time
	NextFireAt    time.Time // zero: not by the clock, or never again
	LastFiredAt   time.Time
	ThrottleState string
	Version       int64
}

// Run states.
const (
	RunPlanned   = "planned"
	RunDelivered = "delivered"
	RunRunning   = "running"
	RunSucceeded = "succeeded"
	RunFailed    = "failed"
	RunExpired   = "expired"
	RunCancelled = "cancelled"
)

// TaskRun is one execution on one computer (or on the server).
type TaskRun struct {
	ID          string
	TaskID      string
	TriggerID   string
	ComputerID  string
	Type        string
	Params      string
	State       string
	Attempt     int
	CreatedAt   time.Time
	NotBefore   time.Time
	ExpiresAt   time.Time
	DeliveredAt time.Time
	StartedAt   time.Time
	FinishedAt  time.Time
	ExitCode    *int
	Output      string
	Error       string
	Attachment  string
}

const taskColumns = `id, name, description, type, params, group_id, created_by, created_at, updated_at, version`

func scanTask(row interface{ Scan(...any) error }) (*TaskRow, error) {
	t := &TaskRow{}
	var c, u int64
	if err := row.Scan(&t.ID, &t.Name, &t.Description, &t.Type, &t.Params, &t.GroupID, &t.CreatedBy, &c, &u, &t.Version); err != nil {
		return nil, err
	}
	t.CreatedAt, t.UpdatedAt = fromMS(c), fromMS(u)
	return t, nil
}

// Tasks returns every task, by name.
func (db *DB) Tasks(ctx context.Context) (_ []*TaskRow, err error) {
	defer db.track("tasks", time.Now(), &err)
	rows, err := db.ro.QueryContext(ctx, `SELECT `+taskColumns+` FROM tasks ORDER BY name, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*TaskRow
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// TaskByID returns not_found for an unknown id.
func (db *DB) TaskByID(ctx context.Context, id string) (_ *TaskRow, err error) {
	defer db.track("task", time.Now(), &err)
	t, err := scanTask(db.ro.QueryRowContext(ctx, `SELECT `+taskColumns+` FROM tasks WHERE id = ?`, id))
	return t, notFound(err, "task not found")
}

// CreateTask stores t.
func (db *DB) CreateTask(ctx context.Context, t *TaskRow) (err error) {
	defer db.track("create_task", time.Now(), &err)
	now := time.Now().UTC().Truncate(time.Millisecond)
	t.CreatedAt, t.UpdatedAt, t.Version = now, now, 1
	return db.tx(ctx, func(tx *sql.Tx) error {
		if err := groupExists(ctx, tx, t.GroupID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO tasks (id, name, description, type, params, group_id, created_by, created_at, updated_at, version)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`, t.ID, t.Name, t.Description, t.Type, t.Params, t.GroupID, t.CreatedBy, ms(now), ms(now))
		return err
	})
}

// UpdateTask writes name, description, params and group if the version is
// still t.Version; runs already planned keep the parameters they had.
func (db *DB) UpdateTask(ctx context.Context, t *TaskRow) (err error) {
	defer db.track("update_task", time.Now(), &err)
	now := time.Now().UTC().Truncate(time.Millisecond)
	if err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := groupExists(ctx, tx, t.GroupID); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE tasks SET name = ?, description = ?, params = ?, group_id = ?, updated_at = ?, version = version + 1
			WHERE id = ? AND version = ?`, t.Name, t.Description, t.Params, t.GroupID, ms(now), t.ID, t.Version)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return versionConflict(ctx, tx, "tasks", t.ID, "task")
		}
		return nil
	}); err != nil {
		return err
	}
	// After the commit, not in fn, which may run twice (see runTx).
	t.Version++
	t.UpdatedAt = now
	return nil
}

// DeleteTask deletes a task with its triggers and runs.
func (db *DB) DeleteTask(ctx context.Context, id string, version int64) (err error) {
	defer db.track("delete_task", time.Now(), &err)
	return db.deleteVersioned(ctx, "tasks", "task", id, version)
}

const triggerColumns = `id, task_id, spec, targets, enabled, created_by, created_at, next_fire_at, last_fired_at, throttle_state, version`

func scanTrigger(row interface{ Scan(...any) error }) (*TriggerRow, error) {
	t := &TriggerRow{}
	var c, n, l int64
	if err := row.Scan(&t.ID, &t.TaskID, &t.Spec, &t.Targets, &t.Enabled, &t.CreatedBy, &c, &n, &l, &t.ThrottleState, &t.Version); err != nil {
		return nil, err
	}
	t.CreatedAt, t.NextFireAt, t.LastFiredAt = fromMS(c), fromMS(n), fromMS(l)
	return t, nil
}

func (db *DB) triggers(ctx context.Context, where string, args ...any) ([]*TriggerRow, error) {
	rows, err := db.ro.QueryContext(ctx, `SELECT `+triggerColumns+` FROM task_triggers `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*TriggerRow
	for rows.Next() {
		t, err := scanTrigger(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// TaskTriggers returns a task's triggers (taskID "": every trigger).
func (db *DB) TaskTriggers(ctx context.Context, taskID string) (_ []*TriggerRow, err error) {
	defer db.track("task_triggers", time.Now(), &err)
	if taskID == "" {
		return db.triggers(ctx, `ORDER BY created_at, id`)
	}
	return db.triggers(ctx, `WHERE task_id = ? ORDER BY created_at, id`, taskID)
}

// TriggerByID returns not_found for an unknown id.
func (db *DB) TriggerByID(ctx context.Context, id string) (_ *TriggerRow, err error) {
	defer db.track("trigger", time.Now(), &err)
	t, err := scanTrigger(db.ro.QueryRowContext(ctx, `SELECT `+triggerColumns+` FROM task_triggers WHERE id = ?`, id))
	return t, notFound(err, "trigger not found")
}

// DueTriggers returns the enabled triggers due by the clock at now.
func (db *DB) DueTriggers(ctx context.Context, now time.Time) (_ []*TriggerRow, err error) {
	defer db.track("due_triggers", time.Now(), &err)
	return db.triggers(ctx, `WHERE enabled = 1 AND next_fire_at > 0 AND next_fire_at <= ? ORDER BY next_fire_at`, ms(now))
}

// CreateTrigger stores t.
func (db *DB) CreateTrigger(ctx context.Context, t *TriggerRow) (err error) {
	defer db.track("create_trigger", time.Now(), &err)
	now := time.Now().UTC().Truncate(time.Millisecond)
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now
	}
	t.Version = 1
	if t.ThrottleState == "" {
		t.ThrottleState = "{}"
	}
	_, err = db.rw.ExecContext(ctx, `INSERT INTO task_triggers (id, task_id, spec, targets, enabled, created_by, created_at, next_fire_at, throttle_state, version)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`, t.ID, t.TaskID, t.Spec, t.Targets, t.Enabled, t.CreatedBy, ms(t.CreatedAt), ms(t.NextFireAt), t.ThrottleState)
	if err != nil && strings.Contains(err.Error(), "FOREIGN KEY") {
		return errcode.New(errcode.NotFound, "task not found")
	}
	return err
}

// UpdateTrigger writes spec, targets, enabled and the schedule if the
// version is still t.Version; throttling counters start over.
func (db *DB) UpdateTrigger(ctx context.Context, t *TriggerRow) (err error) {
	defer db.track("update_trigger", time.Now(), &err)
	if err := db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE task_triggers SET spec = ?, targets = ?, enabled = ?, next_fire_at = ?, throttle_state = '{}', version = version + 1
			WHERE id = ? AND version = ?`, t.Spec, t.Targets, t.Enabled, ms(t.NextFireAt), t.ID, t.Version)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return versionConflict(ctx, tx, "task_triggers", t.ID, "trigger")
		}
		return nil
	}); err != nil {
		return err
	}
	// After the commit, not in fn, which may run twice (see runTx).
	t.Version++
	t.ThrottleState = "{}"
	return nil
}

// DeleteTrigger removes a trigger.
func (db *DB) DeleteTrigger(ctx context.Context, id string, version int64) (err error) {
	defer db.track("delete_trigger", time.Now(), &err)
	return db.deleteVersioned(ctx, "task_triggers", "trigger", id, version)
}

// FireTrigger records that a trigger fired (or was throttled) at at: the
// next firing time and the throttle state; the runs it planned are created
// in the same transaction.
func (db *DB) FireTrigger(ctx context.Context, triggerID string, next, at time.Time, fired bool, throttleState string, runs []*TaskRun) (err error) {
	defer db.track("fire_trigger", time.Now(), &err)
	return db.tx(ctx, func(tx *sql.Tx) error {
		q := `UPDATE task_triggers SET next_fire_at = ?, throttle_state = ? WHERE id = ?`
		args := []any{ms(next), throttleState, triggerID}
		if fired {
			q = `UPDATE task_triggers SET next_fire_at = ?, throttle_state = ?, last_fired_at = ? WHERE id = ?`
			args = []any{ms(next), throttleState, ms(at), triggerID}
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return err
		}
		return insertRuns(ctx, tx, runs)
	})
}

// ResetThrottles clears every trigger's throttling counters (at start).
func (db *DB) ResetThrottles(ctx context.Context) (err error) {
	defer db.track("reset_throttles", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `UPDATE task_triggers SET throttle_state = '{}' WHERE throttle_state <> '{}'`)
	return err
}

func insertRuns(ctx context.Context, tx *sql.Tx, runs []*TaskRun) error {
	if len(runs) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO task_runs (id, task_id, trigger_id, computer_id, type, params, state, attempt, created_at, not_before, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, r := range runs {
		if r.State == "" {
			r.State = RunPlanned
		}
		if r.Attempt == 0 {
			r.Attempt = 1
		}
		if _, err := stmt.ExecContext(ctx, r.ID, r.TaskID, r.TriggerID, r.ComputerID, r.Type, r.Params, r.State, r.Attempt,
			ms(r.CreatedAt), ms(r.NotBefore), ms(r.ExpiresAt)); err != nil {
			return err
		}
	}
	return nil
}

// CreateRuns stores planned runs.
func (db *DB) CreateRuns(ctx context.Context, runs []*TaskRun) (err error) {
	defer db.track("create_runs", time.Now(), &err)
	return db.tx(ctx, func(tx *sql.Tx) error { return insertRuns(ctx, tx, runs) })
}

const runColumns = `id, task_id, trigger_id, computer_id, type, params, state, attempt, created_at, not_before, expires_at, delivered_at,
	started_at, finished_at, exit_code, output, error, attachment`

func scanRun(row interface{ Scan(...any) error }) (*TaskRun, error) {
	r := &TaskRun{}
	var c, nb, ex, d, s, f int64
	var code sql.NullInt64
	if err := row.Scan(&r.ID, &r.TaskID, &r.TriggerID, &r.ComputerID, &r.Type, &r.Params, &r.State, &r.Attempt, &c, &nb, &ex, &d, &s, &f,
		&code, &r.Output, &r.Error, &r.Attachment); err != nil {
		return nil, err
	}
	r.CreatedAt, r.NotBefore, r.ExpiresAt, r.DeliveredAt, r.StartedAt, r.FinishedAt = fromMS(c), fromMS(nb), fromMS(ex), fromMS(d), fromMS(s), fromMS(f)
	if code.Valid {
		v := int(code.Int64)
		r.ExitCode = &v
	}
	return r, nil
}

// runs selects task runs by condition q.
func (db *DB) runs(ctx context.Context, q string, args ...any) ([]*TaskRun, error) {
	rows, err := db.ro.QueryContext(ctx, `SELECT `+runColumns+` FROM task_runs `+q, args...)
	if err != nil {
		return nil, err
	}
	return scanRuns(rows)
}

// scanRuns reads rows of runColumns and closes them.
func scanRuns(rows *sql.Rows) ([]*TaskRun, error) {
	defer rows.Close()
	var out []*TaskRun
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// RunByID returns not_found for an unknown id.
func (db *DB) RunByID(ctx context.Context, id string) (_ *TaskRun, err error) {
	defer db.track("run", time.Now(), &err)
	r, err := scanRun(db.ro.QueryRowContext(ctx, `SELECT `+runColumns+` FROM task_runs WHERE id = ?`, id))
	return r, notFound(err, "task run not found")
}

// RunFilter selects runs, newest first.
type RunFilter struct {
	TaskID     string
	ComputerID string
	State      string
	// TaskGroupIDs, when not nil, keeps the runs of tasks in these groups;
	// ComputerGroupIDs, when not nil, leaves out the runs on computers in
	// other groups (runs without a computer stay). Both are what a caller
	// may read, so that the total counts only the runs it may see.
	TaskGroupIDs, ComputerGroupIDs []string
	Limit                          int
	Offset                         int
}

// ListRuns returns a page of runs and the total matching.
func (db *DB) ListRuns(ctx context.Context, f RunFilter) (_ []*TaskRun, total int, err error) {
	defer db.track("list_runs", time.Now(), &err)
	var where []string
	var args []any
	if f.TaskID != "" {
		where, args = append(where, "task_id = ?"), append(args, f.TaskID)
	}
	if f.ComputerID != "" {
		where, args = append(where, "computer_id = ?"), append(args, f.ComputerID)
	}
	if f.State != "" {
		switch f.State {
		case RunPlanned, RunDelivered, RunRunning, RunSucceeded, RunFailed, RunExpired, RunCancelled:
		default:
			return nil, 0, errcode.New(errcode.Invalid, "state must be planned, delivered, running, succeeded, failed, expired or cancelled")
		}
		where, args = append(where, "state = ?"), append(args, f.State)
	}
	if f.TaskGroupIDs != nil && len(f.TaskGroupIDs) == 0 {
		return []*TaskRun{}, 0, nil
	}
	if f.TaskGroupIDs != nil {
		where = append(where, "task_id IN (SELECT id FROM tasks WHERE group_id IN ("+placeholders(len(f.TaskGroupIDs))+"))")
		for _, g := range f.TaskGroupIDs {
			args = append(args, g)
		}
	}
	if f.ComputerGroupIDs != nil {
		cond := "NOT EXISTS (SELECT 1 FROM computers c WHERE c.id = task_runs.computer_id"
		if len(f.ComputerGroupIDs) > 0 {
			cond += " AND c.group_id NOT IN (" + placeholders(len(f.ComputerGroupIDs)) + ")"
		}
		where = append(where, cond+")")
		for _, g := range f.ComputerGroupIDs {
			args = append(args, g)
		}
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	if err := db.ro.QueryRowContext(ctx, `SELECT COUNT(*) FROM task_runs`+cond, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	limit, offset := pageBounds(f.Limit, f.Offset)
	out, err := db.runs(ctx, cond+` ORDER BY created_at DESC, id LIMIT ? OFFSET ?`, append(args, limit, offset)...)
	return out, total, err
}

// RunCounts counts a task's runs by state.
func (db *DB) RunCounts(ctx context.Context, taskID string) (_ map[string]int, err error) {
	defer db.track("run_counts", time.Now(), &err)
	rows, err := db.ro.QueryContext(ctx, `SELECT state, COUNT(*) FROM task_runs WHERE task_id = ? GROUP BY state`, taskID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			return nil, err
		}
		out[s] = n
	}
	return out, rows.Err()
}

// DeliverableRuns returns planned runs due at now for computers (nil: any
// computer online on serverID, the server asking), oldest first, at most
// limit; server runs are not included.
func (db *DB) DeliverableRuns(ctx context.Context, now time.Time, serverID string, computerIDs []string, limit int) (_ []*TaskRun, err error) {
	defer db.track("deliverable_runs", time.Now(), &err)
	if computerIDs != nil && len(computerIDs) == 0 {
		return nil, nil
	}
	q, args := deliverableQuery(now, serverID, computerIDs)
	return db.runs(ctx, q+` ORDER BY not_before, id LIMIT ?`, append(args, limit)...)
}

// deliverableQuery is DeliverableRuns' condition.
func deliverableQuery(now time.Time, serverID string, computerIDs []string) (string, []any) {
	q, args := `WHERE state = 'planned' AND computer_id <> '' AND not_before <= ? AND expires_at > ?`, []any{ms(now), ms(now)}
	if computerIDs != nil {
		q += " AND computer_id IN (" + placeholders(len(computerIDs)) + ")"
		args = append(args, toAny(computerIDs)...)
	} else {
		// Only computers believed connected: runs waiting for offline ones
		// must not fill every page. A correlated EXISTS keeps the planner on
		// the planned runs (task_runs_pending) with one primary-key look-up
		// per run; "IN (SELECT id FROM computers ...)" made it scan every
		// computer at every scheduler step, even with no run planned.
		q += " AND EXISTS (SELECT 1 FROM computers c WHERE c.id = task_runs.computer_id AND c.status = 'online' AND c.server_id = ?)"
		args = append(args, serverID)
	}
	return q, args
}

// PendingRuns returns, by computer, the runs due at now that the given
// computers have not started (planned, or delivered but never reported
// started: a reconnecting agent gets them again and ignores the ones it
// already has), at most perComputer each, earliest first. One query per
// 500 computers: agents connect by the thousand after a restart.
func (db *DB) PendingRuns(ctx context.Context, computerIDs []string, now time.Time, perComputer int) (_ map[string][]*TaskRun, err error) {
	defer db.track("pending_runs", time.Now(), &err)
	out := map[string][]*TaskRun{}
	for chunk := range slices.Chunk(computerIDs, 500) {
		args := append(toAny(chunk), ms(now), ms(now), perComputer)
		rows, err := db.ro.QueryContext(ctx, `SELECT `+runColumns+` FROM (
			SELECT *, ROW_NUMBER() OVER (PARTITION BY computer_id ORDER BY not_before, id) AS nth FROM task_runs
			WHERE state IN ('planned', 'delivered') AND computer_id IN (`+placeholders(len(chunk))+`) AND not_before <= ? AND expires_at > ?
		) p WHERE nth <= ? ORDER BY computer_id, not_before, id`, args...)
		if err != nil {
			return nil, err
		}
		runs, err := scanRuns(rows)
		if err != nil {
			return nil, err
		}
		for _, r := range runs {
			out[r.ComputerID] = append(out[r.ComputerID], r)
		}
	}
	return out, nil
}

// NextRunDue returns the earliest not_before of planned computer runs after
// now (zero if none): when the dispatcher has work next.
func (db *DB) NextRunDue(ctx context.Context, now time.Time) (_ time.Time, err error) {
	defer db.track("next_run_due", time.Now(), &err)
	var v sql.NullInt64
	err = db.ro.QueryRowContext(ctx, `SELECT MIN(not_before) FROM task_runs WHERE state = 'planned' AND not_before > ?`, ms(now)).Scan(&v)
	if err != nil || !v.Valid {
		return time.Time{}, err
	}
	return fromMS(v.Int64), nil
}

// StaleComputers returns the computers of the given static groups not seen
// since before (never-seen ones enrolled before it included), revoked ones
// excluded.
func (db *DB) StaleComputers(ctx context.Context, groupIDs []string, before time.Time) (_ []*Computer, err error) {
	defer db.track("stale_computers", time.Now(), &err)
	if len(groupIDs) == 0 {
		return nil, nil
	}
	args := append(toAny(groupIDs), ms(before), ms(before))
	rows, err := db.ro.QueryContext(ctx, `SELECT `+computerColumns+` FROM computers WHERE revoked_at IS NULL AND group_id IN (`+placeholders(len(groupIDs))+`)
		AND status <> 'online' AND COALESCE(last_seen, 0) < ? AND enrolled_at < ? ORDER BY name, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Computer
	for rows.Next() {
		c, err := scanComputer(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// ServerEventSeq returns the sequence number of the latest server event.
func (db *DB) ServerEventSeq(ctx context.Context) (seq int64, err error) {
	defer db.track("server_event_seq", time.Now(), &err)
	err = db.ro.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM server_events`).Scan(&seq)
	return seq, err
}

// DueServerRuns returns planned server runs due at now.
func (db *DB) DueServerRuns(ctx context.Context, now time.Time) (_ []*TaskRun, err error) {
	defer db.track("due_server_runs", time.Now(), &err)
	return db.runs(ctx, `WHERE state = 'planned' AND computer_id = '' AND not_before <= ? ORDER BY not_before, id`, ms(now))
}

// MarkDelivered moves planned runs to delivered.
func (db *DB) MarkDelivered(ctx context.Context, ids []string, at time.Time) (err error) {
	if len(ids) == 0 {
		return nil
	}
	defer db.track("mark_delivered", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `UPDATE task_runs SET state = 'delivered', delivered_at = ? WHERE state = 'planned' AND id IN (`+placeholders(len(ids))+`)`,
		append([]any{ms(at)}, toAny(ids)...)...)
	return err
}

// ExpireRuns marks runs not started by their expiry as expired and returns
// how many.
func (db *DB) ExpireRuns(ctx context.Context, now time.Time) (n int64, err error) {
	defer db.track("expire_runs", time.Now(), &err)
	res, err := db.rw.ExecContext(ctx, `UPDATE task_runs SET state = 'expired', finished_at = ? WHERE state IN ('planned', 'delivered') AND expires_at <= ?`, ms(now), ms(now))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// CancelRun cancels a run that has not finished. Returns conflict for a
// finished run.
func (db *DB) CancelRun(ctx context.Context, id string, now time.Time) (err error) {
	defer db.track("cancel_run", time.Now(), &err)
	return db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE task_runs SET state = 'cancelled', finished_at = ? WHERE id = ? AND state IN ('planned', 'delivered', 'running')`, ms(now), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var st string
			if err := tx.QueryRowContext(ctx, `SELECT state FROM task_runs WHERE id = ?`, id).Scan(&st); err != nil {
				return notFound(err, "task run not found")
			}
			return errcode.New(errcode.Conflict, "the run is already %s", st)
		}
		return nil
	})
}

// FinishServerRun records the result of a server task run.
func (db *DB) FinishServerRun(ctx context.Context, id string, ok bool, output, errText string, started, now time.Time) (err error) {
	defer db.track("finish_server_run", time.Now(), &err)
	state := RunSucceeded
	if !ok {
		state = RunFailed
	}
	return db.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE task_runs SET state = ?, started_at = ?, finished_at = ?, output = ?, error = ? WHERE id = ?`,
			state, ms(started), ms(now), clip(output, 1<<20), clip(errText, 4096), id); err != nil {
			return err
		}
		if !ok {
			return addEventData(ctx, tx, now, "task.failed", "", id, "{}")
		}
		return nil
	})
}

// SetRunAttachment records the file of a run's upload (diagnostics).
func (db *DB) SetRunAttachment(ctx context.Context, id, path string) (err error) {
	defer db.track("set_run_attachment", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `UPDATE task_runs SET attachment = ? WHERE id = ?`, path, id)
	return err
}

func addEventData(ctx context.Context, tx *sql.Tx, at time.Time, typ, computerID, subjectID, data string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO server_events (at, type, computer_id, subject_id, data) VALUES (?, ?, ?, ?, ?)`, ms(at), typ, computerID, subjectID, data)
	return err
}

// Task run events agents send through their outbox.
const (
	EventTaskStarted  = "task.started"
	EventTaskFinished = "task.finished"
)

type taskEvent struct {
	RunID    string `json:"run_id"`
	State    string `json:"state"` // succeeded, failed (task.finished)
	ExitCode *int   `json:"exit_code"`
	Output   string `json:"output"`
	Error    string `json:"error"`
}

// applyTaskEvent moves a run of the computer by an agent event (in the
// check-in's transaction). Unknown runs, other computers' runs and moves
// backwards (a finished run started again) are ignored.
func applyTaskEvent(ctx context.Context, tx *sql.Tx, c *CheckIn, e *Event) error {
	var te taskEvent
	if json.Unmarshal([]byte(e.Data), &te) != nil || te.RunID == "" {
		return nil
	}
	at := e.OccurredAt
	if at.IsZero() {
		at = c.Now // a finished run always has a finish time (retention finds it by it)
	}
	switch e.Type {
	case EventTaskStarted:
		_, err := tx.ExecContext(ctx, `UPDATE task_runs SET state = 'running', started_at = ? WHERE id = ? AND computer_id = ? AND state IN ('planned', 'delivered')`,
			ms(at), te.RunID, c.ComputerID)
		return err
	case EventTaskFinished:
		state := RunSucceeded
		if te.State == RunFailed {
			state = RunFailed
		}
		var code sql.NullInt64
		if te.ExitCode != nil {
			code = sql.NullInt64{Int64: int64(*te.ExitCode), Valid: true}
		}
		out := te.Output
		if !utf8.ValidString(out) {
			out = strings.ToValidUTF8(out, "\uFFFD")
		}
		res, err := tx.ExecContext(ctx, `UPDATE task_runs SET state = ?, finished_at = ?, exit_code = ?, output = ?, error = ?,
			started_at = CASE WHEN started_at = 0 THEN ? ELSE started_at END
			WHERE id = ? AND computer_id = ? AND state IN ('planned', 'delivered', 'running')`,
			state, ms(at), code, clip(out, 1<<20), clip(te.Error, 4096), ms(at), te.RunID, c.ComputerID)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		if n == 1 && state == RunFailed {
			return addEventData(ctx, tx, c.Now, "task.failed", c.ComputerID, te.RunID, "{}")
		}
		if n == 1 && state == RunSucceeded {
			var typ string
			if err := tx.QueryRowContext(ctx, `SELECT type FROM task_runs WHERE id = ?`, te.RunID).Scan(&typ); err != nil {
				return err
			}
			if typ == "stop_managing" {
				// The agent unenrolled: the computer is no longer managed and
				// its certificates must not connect again.
				return markUnmanaged(ctx, tx, c.ComputerID, c.Now)
			}
		}
	}
	return nil
}

// SchedulerState reads a value the scheduler keeps ("" when unset).
func (db *DB) SchedulerState(ctx context.Context, key string) (v string, err error) {
	defer db.track("scheduler_state", time.Now(), &err)
	err = db.ro.QueryRowContext(ctx, `SELECT value FROM scheduler_state WHERE key = ?`, key).Scan(&v)
	if err == sql.ErrNoRows {
		return "", nil
	}
	return v, err
}

// SetSchedulerState writes a value the scheduler keeps.
func (db *DB) SetSchedulerState(ctx context.Context, key, value string) (err error) {
	defer db.track("set_scheduler_state", time.Now(), &err)
	_, err = db.rw.ExecContext(ctx, `INSERT INTO scheduler_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	return err
}

// RenameComputer changes a computer's display name.
func (db *DB) RenameComputer(ctx context.Context, id, name string) (err error) {
	defer db.track("rename_computer", time.Now(), &err)
	res, err := db.rw.ExecContext(ctx, `UPDATE computers SET name = ?, version = version + 1 WHERE id = ?`, name, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errcode.New(errcode.NotFound, "computer not found")
	}
	return nil
}

// markUnmanaged revokes a computer whose agent unenrolled itself.
func markUnmanaged(ctx context.Context, tx *sql.Tx, id string, now time.Time) error {
	if _, err := tx.ExecContext(ctx, `UPDATE computers SET revoked_at = COALESCE(revoked_at, ?), status = 'offline' WHERE id = ?`, ms(now), id); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE agent_certificates SET revoked_at = COALESCE(revoked_at, ?) WHERE computer_id = ?`, ms(now), id); err != nil {
		return err
	}
	if err := addEventData(ctx, tx, now, "computer.unmanaged", id, "", "{}"); err != nil {
		return err
	}
	return bumpChange(ctx, tx, id)
}

// dropTriggerTargets takes a deleted group (targetType static_group or
// dynamic_group) out of the triggers aimed at it, in the deletion's
// transaction: a trigger left with no target, or following the joins of a
// deleted dynamic group, is disabled rather than kept firing at nothing.
func dropTriggerTargets(ctx context.Context, tx *sql.Tx, targetType, id string) error {
	pat := "%" + escapeLike(id) + "%"
	rows, err := tx.QueryContext(ctx, `SELECT id, targets, spec FROM task_triggers WHERE targets LIKE ? ESCAPE '\' OR spec LIKE ? ESCAPE '\'`, pat, pat)
	if err != nil {
		return err
	}
	type change struct {
		id, targets string
		enabled     bool
	}
	var changes []change
	for rows.Next() {
		var tid, raw, spec string
		if err := rows.Scan(&tid, &raw, &spec); err != nil {
			rows.Close()
			return err
		}
		var targets []struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		}
		if json.Unmarshal([]byte(raw), &targets) != nil {
			continue
		}
		kept := targets[:0]
		for _, t := range targets {
			if t.Type != targetType || t.ID != id {
				kept = append(kept, t)
			}
		}
		var s struct {
			Kind           string `json:"kind"`
			DynamicGroupID string `json:"dynamic_group_id"`
		}
		_ = json.Unmarshal([]byte(spec), &s)
		follows := targetType == "dynamic_group" && s.DynamicGroupID == id
		if len(kept) == len(targets) && !follows {
			continue // the id only appeared elsewhere in the text
		}
		b, _ := json.Marshal(kept)
		changes = append(changes, change{id: tid, targets: string(b), enabled: len(kept) > 0 && !follows})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, c := range changes {
		q := `UPDATE task_triggers SET targets = ?, version = version + 1 WHERE id = ?`
		args := []any{c.targets, c.id}
		if !c.enabled {
			q = `UPDATE task_triggers SET targets = ?, enabled = 0, next_fire_at = 0, version = version + 1 WHERE id = ?`
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return err
		}
	}
	return nil
}
