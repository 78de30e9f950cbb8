-- Webhook outbox (issue #26 §3; SQLite, mirrors postgres). An event is recorded in the same
-- transaction as the change that caused it (a task that ended, a version the promotion gate
-- refused, a head move), with one delivery row per webhook subscribed to its type. The
-- delivery loop claims due rows, sends them (HMAC-signed), and records the outcome; rows are
-- never deleted by a delivery. A webhook is identified by its configured URL.
CREATE TABLE webhook_events (
    -- "evt_<uuid>": the receiver's deduplication key, the same on every attempt.
    id          TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    -- The exact JSON body every attempt sends ({"id", "type", "created_at", "data"}).
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL REFERENCES webhook_events (id),
    endpoint         TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    -- Attempts started: a claim counts one, also when its daemon died while sending.
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    -- The daemon sending it now, until when, and the token its outcome must carry: a claim
    -- that expired and was taken over records nothing.
    claimed_by       TEXT,
    claimed_until    TEXT,
    claim_token      TEXT,
    last_attempt_at  TEXT,
    -- HTTP status of the last attempt (NULL: no answer), and why it failed.
    last_status      INTEGER,
    last_error       TEXT,
    delivered_at     TEXT,
    UNIQUE (event_id, endpoint)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
