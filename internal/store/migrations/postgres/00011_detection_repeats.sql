-- +goose Up
-- A detection found again while it is unresolved (the same file, signature
-- and content on the same computer: a scheduled scan that only reports)
-- counts on its row instead of making a new one.
ALTER TABLE detections ADD COLUMN occurrences BIGINT NOT NULL DEFAULT 1;
ALTER TABLE detections ADD COLUMN last_seen_at BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE detections DROP COLUMN last_seen_at;
ALTER TABLE detections DROP COLUMN occurrences;
