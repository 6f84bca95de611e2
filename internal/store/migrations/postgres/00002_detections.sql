-- +goose Up
-- Detections reported by agents (events of type detection.found), indexed
-- for the console: state, who resolved them.
CREATE TABLE detections (
    id             TEXT PRIMARY KEY,           -- the event id chosen by the agent
    computer_id    TEXT NOT NULL REFERENCES computers(id) ON DELETE CASCADE,
    occurred_at    BIGINT NOT NULL,
    received_at    BIGINT NOT NULL,
    signature      TEXT NOT NULL,
    path           TEXT NOT NULL,
    kind           TEXT NOT NULL DEFAULT '',
    action         TEXT NOT NULL DEFAULT '',
    sha256         TEXT NOT NULL DEFAULT '',
    engine_version BIGINT NOT NULL DEFAULT 0,
    data           TEXT NOT NULL,
    state          TEXT NOT NULL DEFAULT 'unresolved',
    resolved_by    TEXT NOT NULL DEFAULT '',
    resolved_at    BIGINT
);
CREATE INDEX detections_computer_state ON detections(computer_id, state);
CREATE INDEX detections_time ON detections(occurred_at);
CREATE INDEX detections_signature ON detections(signature);

-- +goose Down
DROP TABLE detections;
