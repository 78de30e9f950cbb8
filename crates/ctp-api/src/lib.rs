//! The gRPC API of ctpd, package `ctp.v1` (`proto/ctp/v1/ctp.proto`), for any Rust program:
//! messages, the `ContinualTrainer` client and server, and the encoded descriptor set.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use ctp_api::pb::{continual_trainer_client::ContinualTrainerClient, ListTasksRequest};
//! let mut c = ContinualTrainerClient::connect("http://127.0.0.1:50051").await?;
//! let tasks = c.list_tasks(ListTasksRequest::default()).await?.into_inner().tasks;
//! # Ok(()) }
//! ```
//!
//! No libtorch, no database: this crate is what `ctp-client`, `ctpctl` and the daemon share.
//! Versioning: the crate follows semver of the proto package; a breaking change to `ctp.v1`
//! would be a new package (`ctp.v2`) next to it, never an edit of v1.
#![forbid(unsafe_code)]

pub mod codec;
pub mod json;
pub mod pb;

pub use codec::StrictCodec;
