-- Anchor suites (issue #25 §2; SQLite, mirrors postgres): held-out image-caption sets that
-- belong to no task, registered per model; every version is evaluated on each of them.
CREATE TABLE anchor_suites (
    model        TEXT NOT NULL REFERENCES models (name),
    name         TEXT NOT NULL,
    -- The content-addressed bundle (tasks/<sha256>.bundle, every sample in the eval split),
    -- data-dir-relative like tasks.data_dir; listed by the referenced-files query.
    bundle_path  TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    samples      INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    PRIMARY KEY (model, name)
);
-- One version on one suite: the retrieval metrics, and the per-sample hits (one character
-- per suite sample, '0' + bits tr1 tr5 tr10 ir1 ir5 ir10) the gate's bootstrap resamples.
CREATE TABLE anchor_results (
    model    TEXT NOT NULL,
    version  INTEGER NOT NULL,
    suite    TEXT NOT NULL,
    samples  INTEGER NOT NULL,
    tr1      REAL NOT NULL,
    tr5      REAL NOT NULL,
    tr10     REAL NOT NULL,
    ir1      REAL NOT NULL,
    ir5      REAL NOT NULL,
    ir10     REAL NOT NULL,
    rm       REAL NOT NULL,
    hits     TEXT NOT NULL,
    PRIMARY KEY (model, version, suite),
    FOREIGN KEY (model, version) REFERENCES versions (model, version),
    FOREIGN KEY (model, suite) REFERENCES anchor_suites (model, name)
);
