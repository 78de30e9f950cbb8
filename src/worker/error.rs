//! Why a run failed. The dispatcher passes these up unchanged; the task's stored error is the
//! run error's cause chain (`errors::error_chain`), and nothing else turns them into words.
use crate::store::StoreError;
use crate::trainer::TrainerError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Reading or writing the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Object storage refused or failed (an outage is retried before it gets here).
    #[error(transparent)]
    Objects(#[from] ctp_storage::StorageError),
    /// The engine refused or failed the job.
    #[error(transparent)]
    Engine(#[from] TrainerError),
    /// The task's stored data could not be read or decoded.
    #[error("{0}")]
    Data(String),
    /// The data of an earlier task, needed for replay, could not be read.
    #[error("replay of task {task_id} ({name}): {source}")]
    Replay {
        task_id: String,
        name: String,
        #[source]
        source: Box<RunError>,
    },
    /// Another worker holds the task now; nothing more is written.
    #[error("{0}")]
    LeaseLost(String),
    /// A blocking helper or the engine call panicked.
    #[error("{what} panicked: {why}")]
    Panicked { what: &'static str, why: String },
}

impl RunError {
    /// The error with its causes, as the task's `error` field stores it.
    pub fn chain(&self) -> String {
        crate::errors::error_chain(self)
    }

    /// Whether the run failed for lack of disk space (not the task's fault: it waits and
    /// retries).
    pub fn is_out_of_space(&self) -> bool {
        crate::errors::is_out_of_space(&self.chain())
    }
}
