-- +goose Up
-- Retention (internal/retention) deletes events, resolved detections and
-- finished task runs by age; these indexes find them without a scan.
CREATE INDEX computer_events_received ON computer_events(received_at);
CREATE INDEX server_events_at ON server_events(at);
CREATE INDEX detections_resolved ON detections(resolved_at) WHERE state = 'resolved';
CREATE INDEX task_runs_finished ON task_runs(finished_at) WHERE finished_at > 0;

-- +goose Down
DROP INDEX task_runs_finished;
DROP INDEX detections_resolved;
DROP INDEX server_events_at;
DROP INDEX computer_events_received;
