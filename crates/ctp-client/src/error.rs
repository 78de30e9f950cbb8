//! How `ctpctl` fails: one line on stderr and a documented exit code (see `ctpctl --help`),
//! so scripts can tell "fix your input" (1, 2) from "retry later" (3) from "the training
//! itself failed" (4).
use std::fmt;

use tonic::Code;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: usage or local error.
pub const EXIT_LOCAL: u8 = 1;
/// Exit code: the daemon rejected the request.
pub const EXIT_REJECTED: u8 = 2;
/// Exit code: daemon unavailable or connection failed.
pub const EXIT_UNAVAILABLE: u8 = 3;
/// Exit code: the task ended FAILED or CANCELLED.
pub const EXIT_TASK_FAILED: u8 = 4;
/// Exit code: the task succeeded but the promotion gate rejected its version.
pub const EXIT_GATE_REJECTED: u8 = 5;
/// Exit code: `verify` found problems.
pub const EXIT_UNSOUND: u8 = 6;

/// A failed command.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments or a local problem (dataset, files).
    Local(String),
    /// The daemon answered with an error status.
    Status(tonic::Status),
    /// Could not reach the daemon at all.
    Connect(String),
    /// The watched task ended without success; the message says how.
    TaskEnded(String),
    /// The watched task's version was refused by the promotion gate; the message says why.
    GateRejected(String),
}

impl CliError {
    /// A local error from anything displayable.
    pub fn local(msg: impl fmt::Display) -> CliError {
        CliError::Local(msg.to_string())
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Local(_) => EXIT_LOCAL,
            CliError::Connect(_) => EXIT_UNAVAILABLE,
            CliError::TaskEnded(_) => EXIT_TASK_FAILED,
            CliError::GateRejected(_) => EXIT_GATE_REJECTED,
            CliError::Status(s) if is_unavailable(s.code()) => EXIT_UNAVAILABLE,
            CliError::Status(_) => EXIT_REJECTED,
        }
    }
}

/// Codes that mean "could not talk to a working daemon" rather than "the daemon said no".
pub fn is_unavailable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
    )
}

/// The canonical gRPC name of a code (`NOT_FOUND`), which is what users search for.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Collapses a possibly multi-line message into one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Local(m) | CliError::TaskEnded(m) | CliError::GateRejected(m) => {
                write!(f, "{}", one_line(m))
            }
            CliError::Connect(m) => write!(f, "UNAVAILABLE: {}", one_line(m)),
            CliError::Status(s) => {
                let msg = if s.message().is_empty() {
                    "(no message)".to_string()
                } else {
                    one_line(s.message())
                };
                write!(f, "{}: {msg}", code_name(s.code()))
            }
        }
    }
}

impl std::error::Error for CliError {}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError::Status(s)
    }
}

impl From<ctp_datasets::DatasetError> for CliError {
    fn from(e: ctp_datasets::DatasetError) -> Self {
        CliError::Local(e.to_string())
    }
}

/// Result of a command.
pub type CliResult<T = ()> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_one_line_messages() {
        let rejected = CliError::from(tonic::Status::not_found("task x\nnot found"));
        assert_eq!(rejected.exit_code(), EXIT_REJECTED);
        assert_eq!(rejected.to_string(), "NOT_FOUND: task x not found");
        let aborted = CliError::from(tonic::Status::aborted("head moved"));
        assert_eq!(aborted.exit_code(), EXIT_REJECTED);
        let down = CliError::from(tonic::Status::unavailable("draining"));
        assert_eq!(down.exit_code(), EXIT_UNAVAILABLE);
        assert_eq!(
            CliError::Connect("refused".into()).exit_code(),
            EXIT_UNAVAILABLE
        );
        assert_eq!(CliError::local("bad").exit_code(), EXIT_LOCAL);
        assert_eq!(
            CliError::TaskEnded("FAILED".into()).exit_code(),
            EXIT_TASK_FAILED
        );
        assert_eq!(
            CliError::from(tonic::Status::internal("")).to_string(),
            "INTERNAL: (no message)"
        );
    }
}
