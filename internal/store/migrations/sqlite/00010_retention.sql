-- +goose Up
-- Retention (internal/retention) deletes resolved detections and finished
-- task runs by age; these partial indexes find them without a scan. Events
-- are deleted from their oldest sequence number and need none.
CREATE INDEX detections_resolved ON detections(resolved_at) WHERE state = 'resolved';
CREATE INDEX task_runs_finished ON task_runs(finished_at) WHERE state IN ('succeeded', 'failed', 'expired', 'cancelled');

-- +goose Down
DROP INDEX task_runs_finished;
DROP INDEX detections_resolved;
