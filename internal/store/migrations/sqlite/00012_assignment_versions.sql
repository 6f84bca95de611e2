-- +goose Up
-- Assignments carry a version like every other object an administrator
-- edits: a rank change or an unassignment names the version it was based
-- on, so two administrators do not overwrite each other unknowingly.
ALTER TABLE policy_assignments ADD COLUMN version INTEGER NOT NULL DEFAULT 1;

-- +goose Down
ALTER TABLE policy_assignments DROP COLUMN version;
