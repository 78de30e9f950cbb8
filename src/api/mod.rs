//! The gRPC control plane: `ctp.v1.ContinualTrainer` plus health and reflection.
//!
//! - The generated code, its codec and messages as JSON are the `ctp-api` crate;
//!   `service`: the RPC handlers; `submit` / `watch`: the two streaming RPCs (`submit_ref`:
//!   tasks submitted by reference; `intake`: the sample checks both submit paths share);
//!   `export`: the ExportVersion stream (assembled by `crate::export`); `anchors`: anchor
//!   suites (RegisterAnchorSuite, a third streamed upload through `intake`);
//!   `convert`: every pb ↔ store/task-domain conversion;
//!   `status`: the one error → status mapping; `auth`: bearer tokens and scopes; `health`: the
//!   database probe; `limits`: the length limits of every stored string.
mod anchors;
pub mod auth;
pub mod convert;
mod export;
mod gate;
mod intake;
pub mod limits;
pub mod service;
pub mod status;
pub mod submit;
mod submit_ref;
mod watch;
