//! Quarantine, health, staging cleanup, and accessors.
use std::time::Duration;

use crate::cache::{Cache, CacheUsage};
use crate::error::{Result, StorageError};
use crate::key::validate_key;
use crate::{AllowList, Backend, Storage};

impl Storage {
    /// Moves the object of `key` to `quarantine/<key>` (or `quarantine/<key>.<n>` if that is
    /// taken) instead of deleting it, and returns the new key. On S3: a create-only copy,
    /// then a delete.
    ///
    /// # Errors
    /// `NotFound`, `Invalid`, `Unavailable`, `Denied`, `Io`.
    pub async fn quarantine(&self, key: &str) -> Result<String> {
        validate_key(key)?;
        for n in 0..100 {
            let to = if n == 0 {
                format!("quarantine/{key}")
            } else {
                format!("quarantine/{key}.{n}")
            };
            if validate_key(&to).is_err() {
                return Err(StorageError::Invalid(format!(
                    "quarantine {key}: the key is too long to quarantine"
                )));
            }
            let moved = match &self.inner.backend {
                Backend::Local(l) => l.rename_no_replace(key, &to)?,
                Backend::S3(b) => b.rename_no_replace(key, &to).await?,
            };
            if moved {
                tracing::info!(key, to = %to, "quarantined");
                return Ok(to);
            }
        }
        Err(StorageError::Invalid(format!(
            "quarantine {key}: 100 quarantined copies exist already"
        )))
    }

    /// Deletes the object of `key`, for objects that their writer itself superseded (a
    /// task's older resume checkpoint once a newer one is recorded). Orphans are never
    /// deleted: see [`quarantine`](Self::quarantine). A missing object is not an error.
    ///
    /// # Errors
    /// `Invalid`, `Unavailable`, `Denied`, `Io`.
    pub async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        match &self.inner.backend {
            Backend::Local(l) => match std::fs::remove_file(l.path(key)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(StorageError::io(&l.path(key), e))
                }
                _ => Ok(()),
            },
            Backend::S3(b) => b.delete(key).await,
        }
    }

    /// A cheap health check: one request without retries (S3), or a look at the folder.
    /// `Err` means NOT_SERVING until it passes again.
    ///
    /// # Errors
    /// `Unavailable` (or `Denied`, `Io`) while the store cannot serve.
    pub async fn probe(&self) -> Result<()> {
        match &self.inner.backend {
            Backend::Local(l) => l.probe(),
            Backend::S3(b) => b.probe().await,
        }
    }

    /// Deletes the staging objects of interrupted large uploads older than `min_age` (take
    /// the same grace period as for orphans: a peer may still be uploading). Returns how
    /// many. Nothing to do on `file://` (ctpd's startup cleanup removes temp files there).
    ///
    /// # Errors
    /// `Unavailable`, `Denied`.
    pub async fn remove_stale_staging(&self, min_age: Duration) -> Result<usize> {
        match &self.inner.backend {
            Backend::Local(_) => Ok(0),
            Backend::S3(b) => b.remove_stale_staging(min_age).await,
        }
    }

    /// The URLs task data may come from: `storage.allow_urls` plus the configured bucket.
    pub fn allow_list(&self) -> &AllowList {
        &self.inner.allow
    }

    /// How full the local cache is (`None` on `file://`, which has none).
    pub fn cache_usage(&self) -> Option<CacheUsage> {
        self.inner.cache.as_ref().map(Cache::usage)
    }
}
