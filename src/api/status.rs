//! The one place where errors become gRPC status codes.
use tonic::{Code, Status};

use crate::store::StoreError;
use crate::trainer::TrainerError;

/// Errors of the API layer, each mapped to exactly one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// Logged with its cause chain; the client sees an opaque message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what } => ApiError::NotFound(format!("{what} not found")),
            StoreError::AlreadyExists { what } => {
                ApiError::FailedPrecondition(format!("{what} already exists"))
            }
            StoreError::Aborted { expected, actual } => ApiError::Aborted(format!(
                "head moved: expected {}, actual {}",
                expected.map_or("none".into(), |v| v.to_string()),
                actual.map_or("none".into(), |v| v.to_string())
            )),
            StoreError::FailedPrecondition(m) => ApiError::FailedPrecondition(m),
            StoreError::LeaseLost { task_id } => {
                ApiError::Aborted(format!("lease on task {task_id} lost"))
            }
            StoreError::Invalid(m) => ApiError::Invalid(m),
            e @ StoreError::Db(_) if is_out_of_space(&error_chain(&e)) => {
                ApiError::ResourceExhausted(format!(
                    "the database is out of disk space ({}); free space and retry",
                    error_chain(&e)
                ))
            }
            e if e.is_unavailable() => {
                tracing::warn!(error.cause_chain = %error_chain(&e), "Database unavailable");
                ApiError::Unavailable("the database is unavailable; retry later".into())
            }
            e @ (StoreError::Migrate(_) | StoreError::Db(_)) => ApiError::Internal(error_chain(&e)),
        }
    }
}

impl From<TrainerError> for ApiError {
    fn from(e: TrainerError) -> Self {
        match e {
            TrainerError::Input(m) => ApiError::Invalid(m),
            TrainerError::Checkpoint(m) => ApiError::FailedPrecondition(m),
            TrainerError::Stopped => {
                ApiError::Unavailable("the training engine is not running".into())
            }
            e => ApiError::Internal(error_chain(&e)),
        }
    }
}

/// "outer: inner: …" for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::Invalid(m) => Status::new(Code::InvalidArgument, m),
            ApiError::NotFound(m) => Status::new(Code::NotFound, m),
            ApiError::FailedPrecondition(m) => Status::new(Code::FailedPrecondition, m),
            ApiError::Aborted(m) => Status::new(Code::Aborted, m),
            ApiError::Unavailable(m) => Status::new(Code::Unavailable, m),
            ApiError::Unauthenticated(m) => Status::new(Code::Unauthenticated, m),
            ApiError::PermissionDenied(m) => Status::new(Code::PermissionDenied, m),
            ApiError::ResourceExhausted(m) => Status::new(Code::ResourceExhausted, m),
            ApiError::Internal(m) => {
                tracing::error!(error.cause_chain = %m, "Internal error");
                Status::new(Code::Internal, "internal error (see the daemon log)")
            }
        }
    }
}
/// True if `message` (an error chain as text) says a disk or quota is full.
pub fn is_out_of_space(message: &str) -> bool {
    const SIGNS: [&str; 4] = [
        "No space left on device",
        "os error 28",
        "Disk quota exceeded",
        "database or disk is full",
    ];
    SIGNS.iter().any(|s| message.contains(s))
}
