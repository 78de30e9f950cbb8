//! The one error type of this crate, and how `object_store`'s errors map onto it.
use std::path::{Path, PathBuf};

/// What went wrong, in the classes the daemon acts on.
///
/// | variant | daemon's answer |
/// |---|---|
/// | [`Unavailable`](Self::Unavailable) | gRPC `UNAVAILABLE`, health `NOT_SERVING`, training holds until [`probe`](crate::Storage::probe) succeeds again |
/// | [`NotFound`](Self::NotFound) | `NOT_FOUND` (or an internal error, when a row names the object) |
/// | [`Conflict`](Self::Conflict) | a create-only write found other content under the key |
/// | [`Corrupt`](Self::Corrupt) | the object's bytes do not match the hash its row records; never used |
/// | [`Invalid`](Self::Invalid), [`NotAllowed`](Self::NotAllowed), [`TooLarge`](Self::TooLarge) | `INVALID_ARGUMENT` / `PERMISSION_DENIED` with the message as is |
/// | [`Denied`](Self::Denied) | the store refused our credentials: a configuration error, also `NOT_SERVING` |
/// | [`Io`](Self::Io) | the local disk (data dir, cache dir) failed |
///
/// Messages name the key or URL they are about and never contain credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The store could not be reached, timed out, or answered with a server error (5xx, 429)
    /// after the retries of `storage.retry_timeout_secs`. Transient.
    #[error("object storage is unavailable ({op} {key}): {message}")]
    Unavailable {
        /// What was being done: "get", "put", "list", …
        op: &'static str,
        /// The key or URL concerned.
        key: String,
        /// The underlying error, for the log.
        message: String,
    },
    /// No object under this key (or URL).
    #[error("{key}: no such object")]
    NotFound {
        /// The key or URL.
        key: String,
    },
    /// A create-only write found a different object already stored under the key.
    #[error(
        "{key} already exists with sha256 {existing}, not {attempted}: \
         a create-only write never replaces an object"
    )]
    Conflict {
        /// The key.
        key: String,
        /// The sha256 of what is stored.
        existing: String,
        /// The sha256 of what this write carried.
        attempted: String,
    },
    /// The object's bytes do not match the expected sha256, even after a refetch. The bad
    /// download was deleted; nothing was returned.
    #[error("{key} is corrupt: expected sha256 {expected}, found {found}")]
    Corrupt {
        /// The key.
        key: String,
        /// The sha256 the caller expected.
        expected: String,
        /// The sha256 of what was read, or what was wrong with it (for example a short read).
        found: String,
    },
    /// A bad key, URL, pattern, hash or configuration value; the message says which and why.
    #[error("{0}")]
    Invalid(String),
    /// A task data URL outside `storage.allow_urls`.
    #[error(
        "{url} is not allowed: task data URLs must start with one of storage.allow_urls \
         (or name the configured bucket)"
    )]
    NotAllowed {
        /// The URL as given.
        url: String,
    },
    /// A download would cross its size limit; it was stopped before it did.
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The URL or key.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// The store refused the request (HTTP 401/403): wrong or missing credentials, or a
    /// bucket policy.
    #[error("object storage refused access to {key}: {message}")]
    Denied {
        /// The key or URL.
        key: String,
        /// The store's answer.
        message: String,
    },
    /// A local file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The local path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// This crate's result type.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    /// Whether this is a transient outage of the store (the daemon holds and retries).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StorageError::Unavailable { .. })
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> StorageError {
        StorageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Maps an `object_store` error of operation `op` on `key`.
    ///
    /// `AlreadyExists`/`Precondition` are handled by the create-only code before this is
    /// called; reaching here with them is reported as `Invalid`.
    pub(crate) fn from_store(op: &'static str, key: &str, e: object_store::Error) -> StorageError {
        use object_store::Error as E;
        let key = key.to_string();
        match e {
            E::NotFound { .. } => StorageError::NotFound { key },
            E::PermissionDenied { source, .. } | E::Unauthenticated { source, .. } => {
                StorageError::Denied {
                    key,
                    message: source.to_string(),
                }
            }
            E::InvalidPath { source } => StorageError::Invalid(format!("{key}: {source}")),
            e @ (E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::UnknownConfigurationKey { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }) => StorageError::Invalid(format!("{op} {key}: {e}")),
            // Listing errors arrive as `Generic` whatever the status.
            e => match http_status(&e) {
                Some(404) => StorageError::NotFound { key },
                Some(401 | 403) => StorageError::Denied {
                    key,
                    message: e.to_string(),
                },
                Some(s) if (400..500).contains(&s) && s != 408 && s != 429 => {
                    StorageError::Invalid(format!(
                        "{op} {key}: the store rejected the request: {e}"
                    ))
                }
                _ => StorageError::Unavailable {
                    op,
                    key,
                    message: e.to_string(),
                },
            },
        }
    }
}

/// The HTTP status in an error chain, if one of its messages states it. `object_store` does
/// not export the error type that carries the status, so its message is read instead
/// ("... non-2xx status code: 503 Service Unavailable ...").
fn http_status(e: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if let Some(at) = text.find("status code: ") {
            let digits: String = text[at + 13..].chars().take(3).collect();
            if let Ok(s) = digits.parse() {
                return Some(s);
            }
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(msg: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: msg.to_string().into(),
        }
    }

    #[test]
    fn server_errors_and_connection_errors_are_unavailable_client_errors_are_not() {
        let e = StorageError::from_store(
            "get",
            "k",
            generic("Server returned non-2xx status code: 503 Service Unavailable: slow down"),
        );
        assert!(e.is_unavailable(), "{e}");
        let e = StorageError::from_store(
            "get",
            "k",
            generic("error sending request: connection refused"),
        );
        assert!(e.is_unavailable(), "{e}");
        let e = StorageError::from_store(
            "get",
            "k",
            generic("Server returned non-2xx status code: 400 Bad Request: no"),
        );
        assert!(matches!(e, StorageError::Invalid(_)), "{e}");
        let e = StorageError::from_store(
            "get",
            "k",
            generic("Server returned non-2xx status code: 429 Too Many Requests"),
        );
        assert!(e.is_unavailable(), "{e}");
        let nf = object_store::Error::NotFound {
            path: "p".into(),
            source: "gone".to_string().into(),
        };
        assert!(matches!(
            StorageError::from_store("get", "tasks/a.bundle", nf),
            StorageError::NotFound { key } if key == "tasks/a.bundle"
        ));
    }
}
