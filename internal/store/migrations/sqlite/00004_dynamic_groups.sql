-- +goose Up
-- Dynamic groups: a template over inventory, evaluated on the server. A
-- dynamic group sits under a static group (filtering its subtree) or under
-- another dynamic group (filtering its members).
CREATE TABLE dynamic_groups (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    static_parent_id  TEXT REFERENCES static_groups(id),
    dynamic_parent_id TEXT REFERENCES dynamic_groups(id),
    template          TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    evaluated_at      INTEGER NOT NULL DEFAULT 0,
    version           INTEGER NOT NULL DEFAULT 1,
    CHECK ((static_parent_id IS NULL) <> (dynamic_parent_id IS NULL))
);
CREATE UNIQUE INDEX dynamic_groups_sibling_name ON dynamic_groups(COALESCE(static_parent_id, ''), COALESCE(dynamic_parent_id, ''), name);

CREATE TABLE dynamic_group_members (
    group_id    TEXT NOT NULL REFERENCES dynamic_groups(id) ON DELETE CASCADE,
    computer_id TEXT NOT NULL REFERENCES computers(id) ON DELETE CASCADE,
    since       INTEGER NOT NULL,
    PRIMARY KEY (group_id, computer_id)
);
CREATE INDEX dynamic_group_members_computer ON dynamic_group_members(computer_id);

-- Every change that can move a computer in or out of a dynamic group bumps
-- its change_seq; the evaluator re-evaluates computers past the last seq it
-- saw.
ALTER TABLE computers ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX computers_change_seq ON computers(change_seq);

-- Server-side events (dynamic group membership changes, later task and
-- notification triggers), consumed by sequence number.
CREATE TABLE server_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    type        TEXT NOT NULL,
    computer_id TEXT NOT NULL DEFAULT '',
    subject_id  TEXT NOT NULL DEFAULT '',
    data        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX server_events_type ON server_events(type, seq);

-- +goose Down
DROP TABLE server_events;
DROP TABLE dynamic_group_members;
DROP TABLE dynamic_groups;
