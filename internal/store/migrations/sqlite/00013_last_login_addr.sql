-- +goose Up
-- The address of a user's last full login. Failed logins from it count
-- apart and lock apart: guesses from elsewhere cannot lock the owner out of
-- their usual address, and guesses from that address (a shared NAT) still
-- lock it after as many failures as anywhere else.
ALTER TABLE users ADD COLUMN last_login_addr TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN addr_failed_logins INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN addr_locked_until INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE users DROP COLUMN addr_locked_until;
ALTER TABLE users DROP COLUMN addr_failed_logins;
ALTER TABLE users DROP COLUMN last_login_addr;
