-- Anchor suites (issue #25 §2; Postgres, mirrors sqlite): held-out image-caption sets that
-- belong to no task, registered per model; every version is evaluated on each of them.
CREATE TABLE anchor_suites (
    model        TEXT NOT NULL REFERENCES models (name),
    name         TEXT NOT NULL,
    -- The content-addressed bundle (tasks/<sha256>.bundle, every sample in the eval split),
    -- data-dir-relative like tasks.data_dir; listed by the referenced-files query.
    bundle_path  TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    samples      BIGINT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    created_by   TEXT NOT NULL,
    PRIMARY KEY (model, name)
);
-- One version on one suite: the retrieval metrics, and the per-sample hits (one character
-- per suite sample, '0' + bits tr1 tr5 tr10 ir1 ir5 ir10) the gate's bootstrap resamples.
CREATE TABLE anchor_results (
    model    TEXT NOT NULL,
    version  BIGINT NOT NULL,
    suite    TEXT NOT NULL,
    samples  BIGINT NOT NULL,
    tr1      DOUBLE PRECISION NOT NULL,
    tr5      DOUBLE PRECISION NOT NULL,
    tr10     DOUBLE PRECISION NOT NULL,
    ir1      DOUBLE PRECISION NOT NULL,
    ir5      DOUBLE PRECISION NOT NULL,
    ir10     DOUBLE PRECISION NOT NULL,
    rm       DOUBLE PRECISION NOT NULL,
    hits     TEXT NOT NULL,
    PRIMARY KEY (model, version, suite),
    FOREIGN KEY (model, version) REFERENCES versions (model, version),
    FOREIGN KEY (model, suite) REFERENCES anchor_suites (model, name)
);
