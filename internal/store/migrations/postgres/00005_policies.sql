-- +goose Up
-- Policies configure one product each; assignments put them on static
-- groups, dynamic groups or single computers, ordered by rank within a
-- target. Computers record the configuration version they should have and
-- the one their agent reports as applied.
CREATE TABLE policies (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    product     TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    group_id    TEXT NOT NULL REFERENCES static_groups(id),
    settings    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    version     BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE policy_assignments (
    id          TEXT PRIMARY KEY,
    policy_id   TEXT NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
    target_type TEXT NOT NULL CHECK (target_type IN ('static', 'dynamic', 'computer')),
    target_id   TEXT NOT NULL,
    rank        BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    UNIQUE (policy_id, target_type, target_id)
);
CREATE INDEX policy_assignments_target ON policy_assignments(target_type, target_id);

ALTER TABLE computers ADD COLUMN config_version TEXT NOT NULL DEFAULT '';
ALTER TABLE computers ADD COLUMN config_applied_version TEXT NOT NULL DEFAULT '';
ALTER TABLE computers ADD COLUMN config_error TEXT NOT NULL DEFAULT '';
ALTER TABLE computers ADD COLUMN config_reported_at BIGINT NOT NULL DEFAULT 0;

-- +goose Down
DROP TABLE policy_assignments;
DROP TABLE policies;
