-- ctpd storage schema (PostgreSQL). Mirrors migrations/sqlite; keep the two in step.
-- Times are TIMESTAMPTZ (UTC); JSON blobs are TEXT, opaque to the database.

-- A model is a named lineage of versions trained with one size preset.
CREATE TABLE models (
    name          TEXT PRIMARY KEY,
    preset        TEXT NOT NULL,
    -- Version the next task trains from; NULL until the first task succeeds.
    head_version  BIGINT,
    -- Highest version number handed out; bumped under the row lock so numbers never repeat.
    last_version  BIGINT NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE tasks (
    id                TEXT PRIMARY KEY,
    model             TEXT NOT NULL REFERENCES models (name),
    name              TEXT NOT NULL,
    state             TEXT NOT NULL
                      CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    idempotency_key   TEXT,
    settings_json     TEXT NOT NULL,
    -- Where the task's uploaded samples (manifest + images) live.
    data_dir          TEXT NOT NULL,
    n_train           BIGINT NOT NULL,
    n_eval            BIGINT NOT NULL,
    base_version      BIGINT,
    produced_version  BIGINT,
    error             TEXT,
    progress_json     TEXT NOT NULL DEFAULT '{}',
    cancel_requested  BOOLEAN NOT NULL DEFAULT FALSE,
    -- Last task_events.seq handed out; bumped under the row lock.
    last_event_seq    BIGINT NOT NULL DEFAULT 0,
    created_at        TIMESTAMPTZ NOT NULL,
    started_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    UNIQUE (model, idempotency_key)
);
CREATE INDEX tasks_by_created ON tasks (created_at, id);
CREATE INDEX tasks_by_model_state ON tasks (model, state);

-- The queue: one row per task; FIFO by enqueued_seq.
CREATE TABLE jobs (
    enqueued_seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id            TEXT NOT NULL UNIQUE REFERENCES tasks (id),
    model              TEXT NOT NULL REFERENCES models (name),
    state              TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done')),
    enqueued_at        TIMESTAMPTZ NOT NULL,
    worker_id          TEXT,
    lease_until        TIMESTAMPTZ,
    -- Times the job was claimed (1 on the first run).
    attempts           BIGINT NOT NULL DEFAULT 0,
    resume_checkpoint  TEXT,
    resume_step        BIGINT
);
CREATE INDEX jobs_by_state ON jobs (state, enqueued_seq);
-- Continual training builds each version on the previous one: never two running jobs
-- for one model, even if two claimers race.
CREATE UNIQUE INDEX jobs_one_running_per_model ON jobs (model) WHERE state = 'running';

CREATE TABLE versions (
    model               TEXT NOT NULL REFERENCES models (name),
    version             BIGINT NOT NULL,
    parent              BIGINT,
    task_id             TEXT NOT NULL REFERENCES tasks (id),
    checkpoint_path     TEXT NOT NULL,
    sha256              TEXT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    momentum_syncs      BIGINT NOT NULL,
    momentum_steps      BIGINT NOT NULL,
    bwt                 DOUBLE PRECISION,
    average_forgetting  DOUBLE PRECISION,
    PRIMARY KEY (model, version),
    FOREIGN KEY (model, parent) REFERENCES versions (model, version)
);

-- One row of the accuracy matrix per version: scope 'task' rows (one per lineage task)
-- and one 'union' row (the cumulative union of the lineage's eval splits).
CREATE TABLE evaluations (
    model      TEXT NOT NULL,
    version    BIGINT NOT NULL,
    scope      TEXT NOT NULL CHECK (scope IN ('task', 'union')),
    task_id    TEXT NOT NULL,
    task_name  TEXT NOT NULL,
    position   BIGINT NOT NULL,
    tr1        DOUBLE PRECISION NOT NULL,
    tr5        DOUBLE PRECISION NOT NULL,
    tr10       DOUBLE PRECISION NOT NULL,
    ir1        DOUBLE PRECISION NOT NULL,
    ir5        DOUBLE PRECISION NOT NULL,
    ir10       DOUBLE PRECISION NOT NULL,
    rm         DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (model, version, scope, task_id),
    FOREIGN KEY (model, version) REFERENCES versions (model, version)
);

CREATE TABLE forgetting (
    model     TEXT NOT NULL,
    version   BIGINT NOT NULL,
    task_id   TEXT NOT NULL,
    position  BIGINT NOT NULL,
    value     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (model, version, task_id),
    FOREIGN KEY (model, version) REFERENCES versions (model, version)
);

-- Drift-gated momentum syncs; a step replayed after a resume overwrites its row.
CREATE TABLE momentum_syncs (
    task_id      TEXT NOT NULL REFERENCES tasks (id),
    step         BIGINT NOT NULL,
    k            BIGINT NOT NULL,
    drift        DOUBLE PRECISION NOT NULL,
    threshold    DOUBLE PRECISION NOT NULL,
    duration_ms  DOUBLE PRECISION NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (task_id, step)
);

-- Append-only audit of head moves (task successes and rollbacks).
CREATE TABLE head_history (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model         TEXT NOT NULL REFERENCES models (name),
    from_version  BIGINT,
    to_version    BIGINT NOT NULL,
    at            TIMESTAMPTZ NOT NULL,
    who           TEXT NOT NULL,
    reason        TEXT NOT NULL
);
CREATE INDEX head_history_by_model ON head_history (model, id);

-- Persisted WatchTask events; seq is per task and strictly increasing.
CREATE TABLE task_events (
    task_id       TEXT NOT NULL REFERENCES tasks (id),
    seq           BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    payload_json  TEXT NOT NULL,
    at            TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (task_id, seq)
);
