-- +goose Up
-- Tasks (what to do), their triggers (when, on which targets) and runs
-- (one per computer each time a trigger fires; computer_id is empty for
-- server tasks). A run keeps the task's type and parameters as they were
-- when it was planned.
CREATE TABLE tasks (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    type        TEXT NOT NULL,
    params      TEXT NOT NULL,
    group_id    TEXT NOT NULL REFERENCES static_groups(id),
    created_by  TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    version     BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE task_triggers (
    id             TEXT PRIMARY KEY,
    task_id        TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    spec           TEXT NOT NULL,
    targets        TEXT NOT NULL,
    enabled        BIGINT NOT NULL DEFAULT 1,
    created_by     TEXT NOT NULL DEFAULT '',
    created_at     BIGINT NOT NULL,
    next_fire_at   BIGINT NOT NULL DEFAULT 0, -- 0: not by the clock (events) or never again
    last_fired_at  BIGINT NOT NULL DEFAULT 0,
    throttle_state TEXT NOT NULL DEFAULT '{}',
    version        BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX task_triggers_due ON task_triggers(enabled, next_fire_at);

CREATE TABLE task_runs (
    id           TEXT PRIMARY KEY,
    task_id      TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    trigger_id   TEXT NOT NULL DEFAULT '',
    computer_id  TEXT NOT NULL DEFAULT '',
    type         TEXT NOT NULL,
    params       TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempt      BIGINT NOT NULL DEFAULT 1,
    created_at   BIGINT NOT NULL,
    not_before   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    delivered_at BIGINT NOT NULL DEFAULT 0,
    started_at   BIGINT NOT NULL DEFAULT 0,
    finished_at  BIGINT NOT NULL DEFAULT 0,
    exit_code    BIGINT,
    output       TEXT NOT NULL DEFAULT '',
    error        TEXT NOT NULL DEFAULT '',
    attachment   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX task_runs_pending ON task_runs(state, computer_id, not_before);
CREATE INDEX task_runs_task ON task_runs(task_id, created_at);
CREATE INDEX task_runs_computer ON task_runs(computer_id, created_at);

CREATE TABLE scheduler_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- +goose Down
DROP TABLE scheduler_state;
DROP TABLE task_runs;
DROP TABLE task_triggers;
DROP TABLE tasks;
