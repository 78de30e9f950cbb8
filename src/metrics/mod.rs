//! Continual-learning metrics as pure functions over plain numbers.
//!
//! Nothing here touches libtorch: the engine turns embeddings into a similarity matrix
//! and per-task scores, and these functions turn those numbers into the figures that are
//! stored and reported. Keeping them pure makes them cheap to test against values worked
//! out by hand, and lets the store and the CLI recompute them without a model.
//!
//! - [`retrieval()`]: cross-modal recall@K and their mean `Rm` from a similarity matrix.
//! - [`forgetting_max`], [`bwt_paper`], [`bwt_gem`], [`average_accuracy`]: the accuracy
//!   matrix of a lineage of model versions, read as forgetting and backward transfer.
//! - [`anchor`]: per-sample hits on an anchor suite and the paired bootstrap of the gate.

pub mod anchor;
mod lineage;
mod retrieval;

pub use lineage::{average_accuracy, bwt_gem, bwt_paper, forgetting_max, Forgetting, LineageRow};
pub use retrieval::{retrieval, Retrieval};

/// Why a metric could not be computed from its input.
///
/// Bad input is reported rather than panicked on because the numbers come from a model
/// that may have diverged (NaN scores) or from an empty evaluation split, and a daemon
/// must record the failure and carry on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// There are no pairs to rank, so no recall is defined.
    #[error("cannot compute retrieval over 0 image-text pairs")]
    Empty,
    /// The similarity matrix does not have `n * n` entries.
    #[error("similarity matrix has {len} entries; {n} pairs need {n}x{n}")]
    ShapeMismatch {
        /// Entries received.
        len: usize,
        /// Number of pairs claimed.
        n: usize,
    },
    /// A similarity is NaN, so the ranking is undefined (usually a diverged model).
    #[error("similarity of image {row} and text {col} is NaN")]
    NotANumber {
        /// Image index.
        row: usize,
        /// Text index.
        col: usize,
    },
}
