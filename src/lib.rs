//! ctp — continual vision-language pretraining (CTP, ICCV 2023) as a service.
//!
//! - [`trainer`]: the engine. Owns every libtorch tensor on one thread; models, CTP losses,
//!   drift-gated compatible momentum, feature queue, AdamW, checkpoints, evaluation.
//! - [`api`]: the gRPC control plane (`ctp.v1.ContinualTrainer`), auth, error mapping.
//! - [`app`]: wiring, startup recovery, graceful shutdown; [`state`]: the shared `AppState`
//!   (below api, worker, health and telemetry); [`worker`]: the job dispatcher;
//!   [`hub`]: task events (persist, then fan out).
//! - [`store`]: SQLite/Postgres persistence: tasks, queue, versions, evaluations, history.
//! - [`taskdata`]: content-addressed task data bundles; [`datadir`]: data-dir layout, stored paths.
//! - [`config`]: layered settings; [`telemetry`]: tracing and Prometheus metrics.
//! - [`metrics`]: pure continual-learning metrics (retrieval recall, forgetting, BWT).
//! - [`images`]: image decoding and preprocessing (no libtorch).
//! - [`dashboard`]: the live web dashboard (`--http-listen`); [`charts`]: the charts it
//!   shares with `ctpctl report` (the `ctp-charts` crate).
//! - [`datasets`]: WebDataset/JSONL readers, EmojiCL (re-exported from `ctp-datasets`).
//!
//! The gRPC code is the `ctp-api` crate (re-exported as [`api::pb`]); the CLI is `ctpctl` on
//! `ctp-client`, neither of which links libtorch (docs/architecture.md).
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub use ctp_charts as charts;
pub mod config;
pub mod dashboard;
pub mod datadir;
pub mod health;
pub mod hub;
pub mod images;
pub mod metrics;
pub mod state;
pub mod store;
pub mod taskdata;
pub mod telemetry;
pub mod trainer;
pub mod worker;

/// WebDataset/JSONL readers and the EmojiCL export (the `ctp-datasets` crate, shared with
/// `ctp-client`); ctp-bench and the tests use them through this path.
pub use ctp_datasets as datasets;
