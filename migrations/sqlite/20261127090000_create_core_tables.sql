-- ctpd storage schema (SQLite). Mirrors migrations/postgres; keep the two in step.
-- Times are fixed-width RFC 3339 UTC text (micro-seconds), so text order is time order;
-- JSON blobs are TEXT, opaque to the database.

-- A model is a named lineage of versions trained with one size preset.
CREATE TABLE models (
    name          TEXT PRIMARY KEY,
    preset        TEXT NOT NULL,
    -- Version the next task trains from; NULL until the first task succeeds.
    head_version  INTEGER,
    -- Highest version number handed out; bumped under the row lock so numbers never repeat.
    last_version  INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL
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
    n_train           INTEGER NOT NULL,
    n_eval            INTEGER NOT NULL,
    base_version      INTEGER,
    produced_version  INTEGER,
    error             TEXT,
    progress_json     TEXT NOT NULL DEFAULT '{}',
    cancel_requested  BOOLEAN NOT NULL DEFAULT FALSE,
    -- Last task_events.seq handed out; bumped under the row lock.
    last_event_seq    INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    started_at        TEXT,
    finished_at       TEXT,
    UNIQUE (model, idempotency_key)
);
CREATE INDEX tasks_by_created ON tasks (created_at, id);
CREATE INDEX tasks_by_model_state ON tasks (model, state);

-- The queue: one row per task; FIFO by enqueued_seq.
CREATE TABLE jobs (
    enqueued_seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id            TEXT NOT NULL UNIQUE REFERENCES tasks (id),
    model              TEXT NOT NULL REFERENCES models (name),
    state              TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done')),
    enqueued_at        TEXT NOT NULL,
    worker_id          TEXT,
    lease_until        TEXT,
    -- Times the job was claimed (1 on the first run).
    attempts           INTEGER NOT NULL DEFAULT 0,
    resume_checkpoint  TEXT,
    resume_step        INTEGER
);
CREATE INDEX jobs_by_state ON jobs (state, enqueued_seq);
-- Continual training builds each version on the previous one: never two running jobs
-- for one model, even if two claimers race.
CREATE UNIQUE INDEX jobs_one_running_per_model ON jobs (model) WHERE state = 'running';

CREATE TABLE versions (
    model               TEXT NOT NULL REFERENCES models (name),
    version             INTEGER NOT NULL,
    parent              INTEGER,
    task_id             TEXT NOT NULL REFERENCES tasks (id),
    checkpoint_path     TEXT NOT NULL,
    sha256              TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    momentum_syncs      INTEGER NOT NULL,
    momentum_steps      INTEGER NOT NULL,
    bwt                 REAL,
    average_forgetting  REAL,
    PRIMARY KEY (model, version),
    FOREIGN KEY (model, parent) REFERENCES versions (model, version)
);

-- One row of the accuracy matrix per version: scope 'task' rows (one per lineage task)
-- and one 'union' row (the cumulative union of the lineage's eval splits).
CREATE TABLE evaluations (
    model      TEXT NOT NULL,
    version    INTEGER NOT NULL,
    scope      TEXT NOT NULL CHECK (scope IN ('task', 'union')),
    task_id    TEXT NOT NULL,
    task_name  TEXT NOT NULL,
    position   INTEGER NOT NULL,
    tr1        REAL NOT NULL,
    tr5        REAL NOT NULL,
    tr10       REAL NOT NULL,
    ir1        REAL NOT NULL,
    ir5        REAL NOT NULL,
    ir10       REAL NOT NULL,
    rm         REAL NOT NULL,
    PRIMARY KEY (model, version, scope, task_id),
    FOREIGN KEY (model, version) REFERENCES versions (model, version)
);

CREATE TABLE forgetting (
    model     TEXT NOT NULL,
    version   INTEGER NOT NULL,
    task_id   TEXT NOT NULL,
    position  INTEGER NOT NULL,
    value     REAL NOT NULL,
    PRIMARY KEY (model, version, task_id),
    FOREIGN KEY (model, version) REFERENCES versions (model, version)
);

-- Drift-gated momentum syncs; a step replayed after a resume overwrites its row.
CREATE TABLE momentum_syncs (
    task_id      TEXT NOT NULL REFERENCES tasks (id),
    step         INTEGER NOT NULL,
    k            INTEGER NOT NULL,
    drift        REAL NOT NULL,
    threshold    REAL NOT NULL,
    duration_ms  REAL NOT NULL,
    at           TEXT NOT NULL,
    PRIMARY KEY (task_id, step)
);

-- Append-only audit of head moves (task successes and rollbacks).
CREATE TABLE head_history (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    model         TEXT NOT NULL REFERENCES models (name),
    from_version  INTEGER,
    to_version    INTEGER NOT NULL,
    at            TEXT NOT NULL,
    who           TEXT NOT NULL,
    reason        TEXT NOT NULL
);
CREATE INDEX head_history_by_model ON head_history (model, id);

-- Persisted WatchTask events; seq is per task and strictly increasing.
CREATE TABLE task_events (
    task_id       TEXT NOT NULL REFERENCES tasks (id),
    seq           INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    payload_json  TEXT NOT NULL,
    at            TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
);
