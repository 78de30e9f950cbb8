//! Webhooks (issue #26 §3): signed HTTP POSTs of task, version and head events to the URLs
//! of `[[webhooks]]`, delivered at least once through an outbox (docs/webhooks.md).
//!
//! - [`config`]: the `[[webhooks]]` entries, their validation and retry schedule;
//! - [`sign`]: the `ctp-signature` header (HMAC-SHA256 over the timestamp and the body);
//! - [`run`]: the delivery loop (claim, send, record; retries with backoff and jitter).
//!
//! The outbox itself is the store's (`store::outbox`, `store::deliveries`): an event is
//! recorded in the transaction of the change that caused it, so a crash or a takeover by
//! another daemon loses none.
pub mod config;
mod deliver;
pub mod sign;

pub use config::{routes, validate, Webhook};
pub use deliver::run;
