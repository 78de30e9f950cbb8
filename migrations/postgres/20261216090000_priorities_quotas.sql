-- Priorities, preemption and quotas (issue #26 §1–§2).
-- tasks.priority: 1 low, 2 normal (the default, also for every task from before), 3 high.
ALTER TABLE tasks ADD COLUMN priority BIGINT NOT NULL DEFAULT 2;
-- How many times higher-priority work preempted the task.
ALTER TABLE tasks ADD COLUMN preemptions BIGINT NOT NULL DEFAULT 0;
-- The token name that submitted it; quotas count per name. Older tasks: anonymous.
ALTER TABLE tasks ADD COLUMN submitted_by TEXT NOT NULL DEFAULT 'anonymous';
-- Bytes of the task's stored bundle (0 for tasks from before this column).
ALTER TABLE tasks ADD COLUMN bundle_bytes BIGINT NOT NULL DEFAULT 0;
-- When the job's current claim started: a preempted task runs at least
-- scheduler.min_run_seconds after it resumes before it can be preempted again.
ALTER TABLE jobs ADD COLUMN claimed_at TIMESTAMPTZ;
-- Daemons that share this database, with the time each was last seen (its dispatcher's
-- heartbeat). "Every engine is busy" = no daemon seen within its lease is without a job.
CREATE TABLE workers (
    worker_id  TEXT PRIMARY KEY,
    seen_at    TIMESTAMPTZ NOT NULL
);
-- Training seconds charged per caller, from the engine's own step timing: one row per
-- progress report of a run, so a preempted or failed run is charged only for what ran.
CREATE TABLE training_usage (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    caller   TEXT NOT NULL,
    task_id  TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    seconds  DOUBLE PRECISION NOT NULL
);
CREATE INDEX training_usage_caller_at ON training_usage (caller, at);
CREATE INDEX tasks_submitted_by ON tasks (submitted_by, state);
