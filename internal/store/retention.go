package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// Retention: what outlived the retention administrators set is deleted
// in batches of at most limit rows, one short transaction each, so the
// store's other writers (check-ins) take their turns in between. Each
// method reports how many rows it deleted; fewer than limit means nothing
// older is left.

// DeleteComputerEventsBefore deletes computer events received before t.
func (db *DB) DeleteComputerEventsBefore(ctx context.Context, t time.Time, limit int) (n int64, err error) {
	defer db.track("delete_computer_events_before", time.Now(), &err)
	return db.deleteOldestBySeq(ctx, "computer_events", "received_at", t, limit)
}

// DeleteServerEventsBefore deletes server events recorded before t. The
// latest event is kept, whatever its age: consumers of the event feed
// (ServerEventSeq) start from it.
func (db *DB) DeleteServerEventsBefore(ctx context.Context, t time.Time, limit int) (n int64, err error) {
	defer db.track("delete_server_events_before", time.Now(), &err)
	return db.deleteOldestBySeq(ctx, "server_events", "at", t, limit)
}

// deleteOldestBySeq deletes rows of table older than t (by timeCol) among
// the limit rows with the lowest seq, and never the row with the highest
// seq. Rows are appended in time order, so the oldest are at the start of
// the primary key and nothing is scanned to find them: the walk stops at
// the first row that is young enough.
func (db *DB) deleteOldestBySeq(ctx context.Context, table, timeCol string, t time.Time, limit int) (n int64, err error) {
	err = db.tx(ctx, func(tx *sql.Tx) error {
		var first, last int64
		var at int64
		err := tx.QueryRowContext(ctx, `SELECT seq, `+timeCol+` FROM `+table+` ORDER BY seq LIMIT 1`).Scan(&first, &at)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && at >= ms(t)) {
			return nil
		} else if err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT MAX(seq) FROM `+table).Scan(&last); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE seq >= ? AND seq < ? AND seq < ? AND `+timeCol+` < ?`,
			first, first+int64(limit), last, ms(t))
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
	err = db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM detections WHERE id IN (
			SELECT id FROM detections WHERE state = 'resolved' AND resolved_at < ? ORDER BY resolved_at LIMIT ?)`, ms(t), limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// DeleteFinishedRunsBefore deletes task runs that finished (succeeded,
// failed, expired, cancelled) before t, and returns the names of the files
// they had uploaded (in the attachment directory) for the caller to
// remove. Runs still planned, delivered or running are never deleted.
func (db *DB) DeleteFinishedRunsBefore(ctx context.Context, t time.Time, limit int) (n int64, attachments []string, err error) {
	defer db.track("delete_finished_runs_before", time.Now(), &err)
	err = db.tx(ctx, func(tx *sql.Tx) error {
		attachments = attachments[:0]
		rows, err := tx.QueryContext(ctx, `SELECT id, attachment FROM task_runs
			WHERE state IN ('succeeded', 'failed', 'expired', 'cancelled') AND finished_at < ? AND created_at < ?
			ORDER BY finished_at LIMIT ?`, ms(t), ms(t), limit)
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
	return n, attachments, err
}
