//! The task domain: what a task is trained with and what happens to it. These types are shared
//! by the API edge (`api/`), the dispatcher (`worker/`) and the event hub; they name no
//! protobuf type (conversions live in `api::convert`).
//!
//! - [`settings`]: [`TaskSettings`], the effective settings of a task, and their [`bounds`];
//! - [`replay`]: [`ReplaySettings`], experience replay from earlier tasks;
//! - [`events`]: [`StoredEvent`], [`ProgressInfo`] and [`TaskEvent`], the task's history;
//! - [`priority`]: [`Priority`], how urgent a task is, and aging.
pub mod events;
pub mod priority;
pub mod replay;
pub mod settings;

pub use events::{ProgressInfo, StoredEvent, TaskEvent};
pub use priority::Priority;
pub use replay::ReplaySettings;
pub use settings::{bounds, TaskSettings};

/// A setting out of its documented range; the message names the field (`settings.epochs …`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);
