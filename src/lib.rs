//! ctp — continual vision-language pretraining (CTP, ICCV 2023) as a service.
//!
//! - [`trainer`]: the engine. Owns every libtorch tensor on one thread; models, CTP losses,
//!   drift-gated compatible momentum, feature queue, AdamW, checkpoints, evaluation.
//! - [`api`]: the gRPC control plane (`ctp.v1.ContinualTrainer`), auth, error mapping.
//! - [`app`]: wiring, startup recovery, graceful shutdown; [`state`]: the shared `AppState`
//!   (below api, worker, health and telemetry); [`worker`]: the job dispatcher;
//!   [`hub`]: task events (persist, then fan out).
//! - [`store`]: SQLite/Postgres persistence: tasks, queue, versions, evaluations, history.
//! - [`taskdata`]: content-addressed task data bundles; [`datadir`]: data-dir layout, stored
//!   paths, the data-dir lock; [`objects`]: bundles and checkpoints on the data dir or in
//!   S3-compatible storage (the `ctp-storage` crate), with a local cache.
//! - [`backup`]: consistent snapshots of a running daemon and their offline restore;
//!   [`export`]: a version with its config, model card and probe set, for use elsewhere.
//! - [`config`]: layered settings; [`telemetry`]: tracing and Prometheus metrics.
//! - [`metrics`]: pure continual-learning metrics (retrieval recall, forgetting, BWT).
//! - [`images`]: image decoding and preprocessing (no libtorch).
//! - [`task`]: the task domain (settings, replay, events) shared by api, worker and hub;
//!   [`errors`]: generic error helpers (cause chains, out-of-space detection).
//! - [`quota`]: per-caller limits on queued tasks, stored bytes and training seconds.
//! - [`webhooks`]: signed event POSTs delivered at least once from the store's outbox.
//! - [`dashboard`]: the live web dashboard (`--http-listen`); its charts are the `ctp-charts`
//!   crate, shared with `ctpctl report`.
//!
//! The gRPC code is the `ctp-api` crate, the dataset readers `ctp-datasets`; the CLI is
//! `ctpctl` on `ctp-client`, none of which links libtorch (docs/architecture.md).
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod backup;
pub mod config;
pub mod dashboard;
pub mod datadir;
pub mod errors;
pub mod export;
pub mod health;
pub mod hub;
pub mod images;
pub mod metrics;
pub mod objects;
pub mod quota;
pub mod state;
pub mod store;
pub mod task;
pub mod taskdata;
pub mod telemetry;
pub mod trainer;
pub mod verify;
pub mod webhooks;
pub mod worker;
