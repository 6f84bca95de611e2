-- +goose Up
-- Several servers can share one PostgreSQL store. Each records itself in
-- servers (its heartbeat in seen_at) and owns the computers connected to it
-- (computers.server_id): a server that stops or dies takes only its own
-- computers offline. server_signals carries what one server asks of the
-- others (wake-ups, configuration changes, disconnections).
CREATE TABLE servers (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL DEFAULT '',
    started_at INTEGER NOT NULL,
    seen_at    INTEGER NOT NULL
);

ALTER TABLE computers ADD COLUMN server_id TEXT NOT NULL DEFAULT '';
CREATE INDEX computers_server ON computers(server_id, status);

CREATE TABLE server_signals (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    origin TEXT NOT NULL,
    kind   TEXT NOT NULL,
    data   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX server_signals_at ON server_signals(at);

-- +goose Down
DROP TABLE server_signals;
DROP INDEX computers_server;
ALTER TABLE computers DROP COLUMN server_id;
DROP TABLE servers;
