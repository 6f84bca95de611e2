-- +goose Up
-- On PostgreSQL every write transaction locks this table first (LOCK TABLE,
-- before its snapshot is taken), so the writers of servers sharing the
-- store take turns as SQLite's single writer does: sequence numbers
-- (change_seq, server_events) commit in order and SERIALIZABLE
-- transactions do not fail against each other. Unused on SQLite.
CREATE TABLE write_lock (
    id INTEGER PRIMARY KEY
);

-- +goose Down
DROP TABLE write_lock;
