//! The gRPC control plane: `ctp.v1.ContinualTrainer` plus health and reflection.
//!
//! - `pb`: generated code; `service`: the RPC handlers; `submit` / `watch`: the two streaming
//!   RPCs; `convert`: pb ↔ store ↔ engine types; `status`: the one error → status mapping;
//!   `auth`: bearer tokens and scopes; `json`: messages as JSON (ctpctl --json, dashboard);
//!   `health`: the database probe; `limits`: the length limits of every stored string.
pub mod auth;
pub mod codec;
pub mod convert;
mod gate;
pub mod json;
pub mod limits;
pub mod pb;
pub mod service;
pub mod status;
pub mod submit;
mod watch;
