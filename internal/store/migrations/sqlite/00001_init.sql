-- +goose Up
-- Times are Unix milliseconds (INTEGER) so the same values work in SQLite and
-- PostgreSQL (BIGINT).
CREATE TABLE static_groups (
    id         TEXT PRIMARY KEY,
    parent_id  TEXT REFERENCES static_groups(id),
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX static_groups_sibling_name ON static_groups(COALESCE(parent_id, ''), name);

INSERT INTO static_groups (id, parent_id, name, created_at) VALUES ('all', NULL, 'All', 0);
INSERT INTO static_groups (id, parent_id, name, created_at) VALUES ('lost-found', 'all', 'Lost & Found', 0);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE sessions (
    token_hash   TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    remote_addr  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sessions_expiry ON sessions(expires_at);

CREATE TABLE enrollment_tokens (
    id           TEXT PRIMARY KEY,
    secret_hash  TEXT NOT NULL UNIQUE,
    group_id     TEXT NOT NULL REFERENCES static_groups(id),
    description  TEXT NOT NULL DEFAULT '',
    expires_at   INTEGER NOT NULL,
    uses_allowed INTEGER NOT NULL, -- 0: unlimited
    uses         INTEGER NOT NULL DEFAULT 0,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);

CREATE TABLE computers (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    hostname             TEXT NOT NULL,
    instance             TEXT NOT NULL DEFAULT '',
    group_id             TEXT NOT NULL REFERENCES static_groups(id),
    status               TEXT NOT NULL DEFAULT 'offline',
    last_seen            INTEGER,
    connected_since      INTEGER,
    platform             TEXT NOT NULL DEFAULT '',
    os_name              TEXT NOT NULL DEFAULT '',
    os_version           TEXT NOT NULL DEFAULT '',
    agent_version        TEXT NOT NULL DEFAULT '',
    hardware_fingerprint TEXT NOT NULL,
    clone_suspected      INTEGER NOT NULL DEFAULT 0,
    clone_reason         TEXT NOT NULL DEFAULT '',
    enrolled_at          INTEGER NOT NULL,
    enrollment_token_id  TEXT,
    revoked_at           INTEGER
);
CREATE INDEX computers_fingerprint ON computers(hardware_fingerprint);
CREATE INDEX computers_group ON computers(group_id);
CREATE INDEX computers_name ON computers(name);

CREATE TABLE agent_certificates (
    serial      TEXT PRIMARY KEY,
    computer_id TEXT NOT NULL REFERENCES computers(id),
    issued_at   INTEGER NOT NULL,
    not_after   INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX agent_certificates_computer ON agent_certificates(computer_id);

CREATE TABLE inventory_sections (
    computer_id TEXT NOT NULL REFERENCES computers(id) ON DELETE CASCADE,
    section     TEXT NOT NULL,
    hash        BLOB NOT NULL,
    data        TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (computer_id, section)
);

CREATE TABLE computer_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    computer_id TEXT NOT NULL REFERENCES computers(id) ON DELETE CASCADE,
    event_id    TEXT NOT NULL,
    type        TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    data        TEXT NOT NULL,
    UNIQUE (computer_id, event_id)
);
CREATE INDEX computer_events_time ON computer_events(computer_id, occurred_at);

-- +goose Down
DROP TABLE computer_events;
DROP TABLE inventory_sections;
DROP TABLE agent_certificates;
DROP TABLE computers;
DROP TABLE enrollment_tokens;
DROP TABLE sessions;
DROP TABLE users;
DROP TABLE static_groups;
