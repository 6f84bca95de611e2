-- +goose Up
-- The detection engine each agent reports in its inventory (agent section),
-- copied onto the computer for listing, filtering and the "engine outdated"
-- flag. engine_version 0: not reported yet (an agent before engine updates).
ALTER TABLE computers ADD COLUMN engine_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE computers ADD COLUMN engine_update_state TEXT NOT NULL DEFAULT '';
ALTER TABLE computers ADD COLUMN engine_last_success BIGINT;
ALTER TABLE computers ADD COLUMN engine_last_error TEXT NOT NULL DEFAULT '';
CREATE INDEX computers_engine_version ON computers (engine_version);

-- +goose Down
DROP INDEX computers_engine_version;
ALTER TABLE computers DROP COLUMN engine_last_error;
ALTER TABLE computers DROP COLUMN engine_last_success;
ALTER TABLE computers DROP COLUMN engine_update_state;
ALTER TABLE computers DROP COLUMN engine_version;
