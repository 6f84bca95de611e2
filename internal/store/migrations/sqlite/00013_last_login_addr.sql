-- +goose Up
-- The address of a user's last full login: an account locked by failed
-- logins from elsewhere still lets its owner in from there, so guessing
-- from other addresses cannot lock the owner out.
ALTER TABLE users ADD COLUMN last_login_addr TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE users DROP COLUMN last_login_addr;
