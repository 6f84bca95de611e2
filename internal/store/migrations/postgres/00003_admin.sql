-- +goose Up
-- Admin plane: users' security settings, permission sets over static
-- groups, API tokens, tags, the audit log, server settings, and versions for
-- optimistic concurrency.
ALTER TABLE static_groups ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

ALTER TABLE users ADD COLUMN home_group_id TEXT NOT NULL DEFAULT 'all' REFERENCES static_groups(id);
ALTER TABLE users ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN must_change_password BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN password_changed_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN totp_secret TEXT NOT NULL DEFAULT '';   -- sealed with the server's secret key
ALTER TABLE users ADD COLUMN totp_pending TEXT NOT NULL DEFAULT '';  -- sealed; set during enrollment
ALTER TABLE users ADD COLUMN totp_enabled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN totp_required BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN totp_last_step BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN failed_logins BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN locked_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN last_login_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

CREATE TABLE recovery_codes (
    user_id   TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at   BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

ALTER TABLE sessions ADD COLUMN second_factor BIGINT NOT NULL DEFAULT 1; -- 0: password checked, TOTP pending

CREATE TABLE permission_sets (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    group_id    TEXT NOT NULL REFERENCES static_groups(id), -- access group of the set itself
    builtin     BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    version     BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE permission_set_groups (
    set_id   TEXT NOT NULL REFERENCES permission_sets(id) ON DELETE CASCADE,
    group_id TEXT NOT NULL REFERENCES static_groups(id),
    PRIMARY KEY (set_id, group_id)
);

CREATE TABLE permission_set_grants (
    set_id        TEXT NOT NULL REFERENCES permission_sets(id) ON DELETE CASCADE,
    functionality TEXT NOT NULL,
    level         BIGINT NOT NULL, -- 1 read, 2 use, 3 write
    PRIMARY KEY (set_id, functionality)
);

CREATE TABLE user_permission_sets (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    set_id  TEXT NOT NULL REFERENCES permission_sets(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, set_id)
);

INSERT INTO permission_sets (id, name, description, group_id, builtin, created_at, updated_at)
    VALUES ('administrator', 'Administrator', 'Everything on All', 'all', 1, 0, 0);
INSERT INTO permission_sets (id, name, description, group_id, builtin, created_at, updated_at)
    VALUES ('reviewer', 'Reviewer', 'Read everything on All', 'all', 1, 0, 0);
INSERT INTO permission_set_groups (set_id, group_id) VALUES ('administrator', 'all'), ('reviewer', 'all');
INSERT INTO permission_set_grants (set_id, functionality, level) VALUES
    ('administrator', 'computers', 3), ('administrator', 'groups', 3), ('administrator', 'enrollment_tokens', 3),
    ('administrator', 'policies', 3), ('administrator', 'tasks', 3), ('administrator', 'detections', 3),
    ('administrator', 'quarantine', 3), ('administrator', 'reports', 3), ('administrator', 'notifications', 3),
    ('administrator', 'installers', 3), ('administrator', 'users', 3), ('administrator', 'audit_log', 3),
    ('administrator', 'server_settings', 3), ('administrator', 'engine_updates', 3),
    ('reviewer', 'computers', 1), ('reviewer', 'groups', 1), ('reviewer', 'enrollment_tokens', 1),
    ('reviewer', 'policies', 1), ('reviewer', 'tasks', 1), ('reviewer', 'detections', 1),
    ('reviewer', 'quarantine', 1), ('reviewer', 'reports', 1), ('reviewer', 'notifications', 1),
    ('reviewer', 'installers', 1), ('reviewer', 'users', 1), ('reviewer', 'audit_log', 1),
    ('reviewer', 'server_settings', 1), ('reviewer', 'engine_updates', 1);
-- The bootstrap admin (created before this migration on existing servers).
INSERT INTO user_permission_sets (user_id, set_id) SELECT id, 'administrator' FROM users WHERE username = 'admin';

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL DEFAULT 0,
    revoked_at   BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);

CREATE TABLE computer_tags (
    computer_id TEXT NOT NULL REFERENCES computers(id) ON DELETE CASCADE,
    tag         TEXT NOT NULL,
    PRIMARY KEY (computer_id, tag)
);
CREATE INDEX computer_tags_tag ON computer_tags(tag);

ALTER TABLE computers ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE enrollment_tokens ADD COLUMN access_group_id TEXT NOT NULL DEFAULT 'all' REFERENCES static_groups(id);

CREATE TABLE audit_log (
    seq         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    user_id     TEXT NOT NULL DEFAULT '',
    username    TEXT NOT NULL DEFAULT '',
    via         TEXT NOT NULL DEFAULT '',   -- session, api_token, cli, agent, system
    remote_addr TEXT NOT NULL DEFAULT '',
    domain      TEXT NOT NULL,
    action      TEXT NOT NULL,
    object_id   TEXT NOT NULL DEFAULT '',
    object_name TEXT NOT NULL DEFAULT '',
    diff        TEXT NOT NULL DEFAULT '',   -- compact JSON {"field":[before, after]}
    result      TEXT NOT NULL,              -- success, failure
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log(at);
CREATE INDEX audit_log_user ON audit_log(username, at);
CREATE INDEX audit_log_domain ON audit_log(domain, at);

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    version    BIGINT NOT NULL DEFAULT 1
);

-- +goose Down
DROP TABLE settings;
DROP TABLE audit_log;
DROP TABLE computer_tags;
DROP TABLE api_tokens;
DROP TABLE user_permission_sets;
DROP TABLE permission_set_grants;
DROP TABLE permission_set_groups;
DROP TABLE permission_sets;
DROP TABLE recovery_codes;
