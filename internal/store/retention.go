package store

import (
	"context"
	"database/sql"
	"time"
)

// Retention: what outlived the retention administrators set is deleted
// in batches of at most limit rows, one short transaction each, so the
// store's other writers (check-ins) take their turns in between. Each
// method reports how many rows it deleted; fewer than limit means nothing
// older is left.

// The retention statements; each is driven by an index on its time column
// (migration 00010), so a pass that finds nothing to delete costs nothing.
const (
	deleteComputerEventsQuery = `DELETE FROM computer_events WHERE seq IN (
		SELECT seq FROM computer_events WHERE received_at < ? ORDER BY received_at LIMIT ?)`
	deleteServerEventsQuery = `DELETE FROM server_events WHERE seq IN (
		SELECT seq FROM server_events WHERE at < ? AND seq < (SELECT MAX(seq) FROM server_events) ORDER BY at LIMIT ?)`
	deleteDetectionsQuery = `DELETE FROM detections WHERE id IN (
		SELECT id FROM detections WHERE state = 'resolved' AND resolved_at < ? ORDER BY resolved_at LIMIT ?)`
	// A run has a finish time once it succeeded, failed, expired or was
	// cancelled, and only then (applyTaskEvent, ExpireRuns, CancelRun,
	// FinishServerRun).
	finishedRunsQuery = `SELECT id, attachment FROM task_runs
		WHERE finished_at > 0 AND finished_at < ? AND created_at < ? ORDER BY finished_at LIMIT ?`
)

// DeleteComputerEventsBefore deletes computer events received before t.
func (db *DB) DeleteComputerEventsBefore(ctx context.Context, t time.Time, limit int) (n int64, err error) {
	defer db.track("delete_computer_events_before", time.Now(), &err)
	return db.deleteOlder(ctx, deleteComputerEventsQuery, ms(t), limit)
}

// DeleteServerEventsBefore deletes server events recorded before t. The
// latest event is kept, whatever its age: consumers of the event feed
// (ServerEventSeq) start from it.
func (db *DB) DeleteServerEventsBefore(ctx context.Context, t time.Time, limit int) (n int64, err error) {
	defer db.track("delete_server_events_before", time.Now(), &err)
	return db.deleteOlder(ctx, deleteServerEventsQuery, ms(t), limit)
}

// deleteOlder runs one retention statement in a transaction.
func (db *DB) deleteOlder(ctx context.Context, q string, args ...any) (n int64, err error) {
	err = db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// DeleteResolvedDetectionsBefore deletes detections resolved before t.
// Unresolved detections are never deleted: they wait for an administrator.
func (db *DB) DeleteResolvedDetectionsBefore(ctx context.Context, t time.Time, limit int) (n int64, err error) {
	defer db.track("delete_resolved_detections_before", time.Now(), &err)
	return db.deleteOlder(ctx, deleteDetectionsQuery, ms(t), limit)
}

// DeleteFinishedRunsBefore deletes task runs that finished (succeeded,
// failed, expired, cancelled) before t, and returns the names of the files
// they had uploaded (in the attachment directory) for the caller to
// remove. Runs still planned, delivered or running are never deleted.
func (db *DB) DeleteFinishedRunsBefore(ctx context.Context, t time.Time, limit int) (n int64, attachments []string, err error) {
	defer db.track("delete_finished_runs_before", time.Now(), &err)
	err = db.tx(ctx, func(tx *sql.Tx) error {
		attachments = attachments[:0]
		rows, err := tx.QueryContext(ctx, finishedRunsQuery, ms(t), ms(t), limit)
		if err != nil {
			return err
		}
		var ids []any
		for rows.Next() {
			var id, att string
			if err := rows.Scan(&id, &att); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
			if att != "" {
				attachments = append(attachments, att)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil || len(ids) == 0 {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM task_runs WHERE id IN (`+placeholders(len(ids))+`)`, ids...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, nil, err // nothing deleted: no file may go
	}
	return n, attachments, nil
}
