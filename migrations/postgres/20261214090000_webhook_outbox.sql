-- Webhook outbox (issue #26 §3). An event is recorded in the same transaction as the change
-- that caused it (a task that ended, a version the promotion gate refused, a head move), with
-- one delivery row per webhook subscribed to its type. The delivery loop of any daemon claims
-- due rows, sends them (HMAC-signed), and records the outcome; rows are never deleted by a
-- delivery. A webhook is identified by its configured URL.
CREATE TABLE webhook_events (
    -- "evt_<uuid>": the receiver's deduplication key, the same on every attempt.
    id          TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    -- The exact JSON body every attempt sends ({"id", "type", "created_at", "data"}).
    body        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE webhook_deliveries (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         TEXT NOT NULL REFERENCES webhook_events (id),
    endpoint         TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    -- Attempts started: a claim counts one, also when its daemon died while sending.
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    -- The daemon sending it now, until when, and the token its outcome must carry: a claim
    -- that expired and was taken over by another daemon records nothing.
    claimed_by       TEXT,
    claimed_until    TIMESTAMPTZ,
    claim_token      TEXT,
    last_attempt_at  TIMESTAMPTZ,
    -- HTTP status of the last attempt (NULL: no answer), and why it failed.
    last_status      BIGINT,
    last_error       TEXT,
    delivered_at     TIMESTAMPTZ,
    UNIQUE (event_id, endpoint)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
