//! The one place where errors become gRPC status codes.
use tonic::{Code, Status};

use crate::backup::BackupError;
use crate::errors::{error_chain, is_out_of_space};
use crate::export::ExportError;
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
    /// A name already taken by something that is never replaced (an anchor suite).
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// A caller's quota (`RESOURCE_EXHAUSTED`, naming the quota, the use and the limit).
    #[error(transparent)]
    Quota(#[from] crate::quota::Exceeded),
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
            StoreError::Quota(q) => ApiError::Quota(q),
            StoreError::LeaseLost { task_id } => {
                ApiError::Aborted(format!("lease on task {task_id} lost"))
            }
            StoreError::Invalid(m) => ApiError::Invalid(m),
            e @ StoreError::SchemaTooNew { .. } => ApiError::FailedPrecondition(e.to_string()),
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

/// A store error while creating something whose name must be new (RegisterAnchorSuite): a
/// taken name is ALREADY_EXISTS. (Through `From`, `AlreadyExists` stays FAILED_PRECONDITION:
/// an idempotency key reused with other content is a precondition of that request.)
pub fn creating(e: StoreError) -> ApiError {
    match e {
        StoreError::AlreadyExists { what } => {
            ApiError::AlreadyExists(format!("{what} already exists"))
        }
        e => e.into(),
    }
}

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::Store(e) => e.into(),
            BackupError::BadTarget(_) => ApiError::Invalid(e.to_string()),
            BackupError::Busy(_) => ApiError::Unavailable(e.to_string()),
            BackupError::Write { .. } if is_out_of_space(&error_chain(&e)) => {
                ApiError::ResourceExhausted(error_chain(&e))
            }
            BackupError::Write { .. } => ApiError::FailedPrecondition(error_chain(&e)),
            BackupError::Read { .. } => ApiError::Internal(error_chain(&e)),
            BackupError::TargetNotEmpty(_)
            | BackupError::Postgres
            | BackupError::ObjectStorage(_)
            | BackupError::Missing { .. }
            | BackupError::Outside(_)
            | BackupError::Corrupt { .. } => ApiError::FailedPrecondition(e.to_string()),
        }
    }
}

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::Store(e) => e.into(),
            ExportError::Objects(e) => e.into(),
            ExportError::Engine(e) => e.into(),
            ExportError::NoVersion(m) => ApiError::NotFound(m),
            ExportError::Unreadable(m) => ApiError::FailedPrecondition(m),
        }
    }
}

impl From<ctp_storage::StorageError> for ApiError {
    fn from(e: ctp_storage::StorageError) -> Self {
        use ctp_storage::StorageError as S;
        match e {
            e if e.is_unavailable() => {
                tracing::warn!(error.cause_chain = %error_chain(&e), "Object storage unavailable");
                ApiError::Unavailable(format!("object storage is unavailable ({e}); retry later"))
            }
            S::NotFound { key } => ApiError::NotFound(format!("object {key} not found")),
            S::NotAllowed { .. } | S::Invalid(_) => ApiError::Invalid(e.to_string()),
            S::TooLarge { .. } => ApiError::ResourceExhausted(e.to_string()),
            S::Denied { .. } | S::Corrupt { .. } | S::Conflict { .. } => {
                ApiError::FailedPrecondition(e.to_string())
            }
            e => ApiError::Internal(error_chain(&e)),
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

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::Invalid(m) => Status::new(Code::InvalidArgument, m),
            ApiError::NotFound(m) => Status::new(Code::NotFound, m),
            ApiError::FailedPrecondition(m) => Status::new(Code::FailedPrecondition, m),
            ApiError::Aborted(m) => Status::new(Code::Aborted, m),
            ApiError::AlreadyExists(m) => Status::new(Code::AlreadyExists, m),
            ApiError::Unavailable(m) => Status::new(Code::Unavailable, m),
            ApiError::Unauthenticated(m) => Status::new(Code::Unauthenticated, m),
            ApiError::PermissionDenied(m) => Status::new(Code::PermissionDenied, m),
            ApiError::ResourceExhausted(m) => Status::new(Code::ResourceExhausted, m),
            ApiError::Quota(q) => Status::new(Code::ResourceExhausted, q.to_string()),
            ApiError::Internal(m) => {
                tracing::error!(error.cause_chain = %m, "Internal error");
                Status::new(Code::Internal, "internal error (see the daemon log)")
            }
        }
    }
}
