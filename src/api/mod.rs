//! The gRPC control plane: `ctp.v1.ContinualTrainer` plus health and reflection.
//!
//! - `pb`, `codec`, `json`: the generated code, its codec and messages as JSON (ctpctl --json,
//!   the dashboard), re-exported from the `ctp-api` crate; `service`: the RPC handlers;
//!   `submit` / `watch`: the two streaming RPCs; `convert`: pb ↔ store ↔ engine types;
//!   `status`: the one error → status mapping; `auth`: bearer tokens and scopes; `health`: the
//!   database probe; `limits`: the length limits of every stored string.
pub use ctp_api::{codec, json, pb};

pub mod auth;
pub mod convert;
mod gate;
pub mod limits;
pub mod service;
pub mod status;
pub mod submit;
mod watch;
