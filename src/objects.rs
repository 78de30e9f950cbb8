//! Where task bundles and checkpoints live (issue #23): the daemon's one door to
//! `ctp-storage`.
//!
//! Rows store a file's *key*, the data-dir-relative path ctpd always stored
//! (`tasks/<sha256>.bundle`, `versions/<task>.<epoch>.safetensors`,
//! `resume/<task>.<epoch>.<step>.safetensors`). Every file is first written in the data dir,
//! exactly as on a single host; then:
//!
//! - with `file://` (the default) that file *is* the object: [`Objects::publish`] does nothing
//!   and [`Objects::local`] resolves the row's path in the data dir, as before;
//! - with `s3://` the file is uploaded create-only under its key before a row names it, the
//!   local copy is dropped once the row is durable, and readers get a verified copy from the
//!   bounded local cache (`<data dir>/cache`).
use std::path::{Path, PathBuf};
use std::time::Duration;

use ctp_storage::{Storage, StorageConfig, StorageError};

use crate::datadir::DataDir;

/// The storage of task bundles and checkpoints, shared by every daemon on one bucket.
#[derive(Clone, Debug)]
pub struct Objects {
    storage: Storage,
    data: DataDir,
}

/// What a bucket sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BucketCleanup {
    /// Unreferenced objects moved to `quarantine/…` in the bucket.
    pub quarantined: usize,
    /// Staging objects of interrupted large uploads removed.
    pub removed_staging: usize,
}

impl Objects {
    /// Opens the storage `cfg` selects, with the cache under `<data dir>/cache`.
    ///
    /// # Errors
    /// A bad setting (named) or a cache folder that cannot be created.
    pub fn open(cfg: &StorageConfig, data: &DataDir) -> Result<Objects, StorageError> {
        let storage = Storage::open(cfg, data.root(), &data.root().join("cache"))?;
        Ok(Objects {
            storage,
            data: data.clone(),
        })
    }

    /// True when objects are the data dir's own files (`file://`, the single-host default).
    pub fn is_local(&self) -> bool {
        self.storage.is_local()
    }

    /// `file:///srv/ctp` or `s3://bucket/prefix` (never credentials).
    pub fn describe(&self) -> &str {
        self.storage.describe()
    }

    /// The underlying storage (task data by reference uses its allow-list and fetcher).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Makes the finished file at `path` (in the data dir) durable under its key, before a
    /// row names it. Create-only: an object already stored under the key must have the same
    /// sha256, else [`StorageError::Conflict`].
    ///
    /// # Errors
    /// `Unavailable` while the store cannot be reached (callers hold and retry), `Conflict`,
    /// `Invalid` if `path` is not under the data dir.
    pub async fn publish(&self, path: &Path, sha256: &str) -> Result<(), StorageError> {
        if self.is_local() {
            return Ok(());
        }
        let key = self.key_of(path)?;
        self.storage
            .put_file_create_only(&key, path, sha256)
            .await
            .map(|_| ())
    }

    /// Moves the data dir's copy of a published file (sha256 `sha`) into the object cache
    /// once its row is durable, so this daemon reads it back without a download (object
    /// storage only; on `file://` the file is the object and stays). If the move fails the
    /// copy is removed: the bucket has it.
    pub fn drop_local_copy(&self, path: &Path, sha: &str) {
        if self.is_local() {
            return;
        }
        if let Err(e) = self.storage.adopt(path, sha) {
            tracing::debug!(path = %path.display(), error.message = %e, "Not kept in the object cache");
            let _ = std::fs::remove_file(path);
        }
    }

    /// A verified local file for the row-stored `stored` with hash `sha256`.
    ///
    /// # Errors
    /// `NotFound`, `Corrupt` (a bad download, refetched once), `Unavailable`.
    pub async fn local(&self, stored: &str, sha256: &str) -> Result<PathBuf, StorageError> {
        if self.is_local() {
            return Ok(self.data.resolve(stored));
        }
        self.storage.fetch(stored, sha256).await
    }

    /// Whether the object a row names exists.
    ///
    /// # Errors
    /// `Unavailable`, `Invalid`.
    pub async fn exists(&self, stored: &str) -> Result<bool, StorageError> {
        if self.is_local() {
            return Ok(self.data.resolve(stored).exists());
        }
        Ok(self.storage.head(stored).await?.is_some())
    }

    /// Deletes an object its own writer superseded (an older resume point), never one a row
    /// still references.
    pub async fn delete_superseded(&self, stored: &str) {
        if let Err(e) = self.storage.delete(stored).await {
            tracing::warn!(key = stored, error.message = %e, "Could not delete a superseded object; the orphan sweep will quarantine it");
        }
    }

    /// One cheap request: `Err` (health NOT_SERVING) while the store cannot serve.
    ///
    /// # Errors
    /// The reason, naming the storage.
    pub async fn probe(&self) -> Result<(), String> {
        if self.is_local() {
            // The data dir probe covers it.
            return Ok(());
        }
        self.storage
            .probe()
            .await
            .map_err(|e| format!("object storage {} is unavailable: {e}", self.describe()))
    }

    /// Quarantines bucket objects that no row references and that are older than `min_age`
    /// (a peer may be between its upload and its row), and removes stale staging objects.
    /// Nothing happens on `file://`: the data dir's own cleanup covers it.
    ///
    /// # Errors
    /// `Unavailable` (the sweep is retried later).
    pub async fn sweep_bucket(
        &self,
        referenced: &[String],
        min_age: Duration,
    ) -> Result<BucketCleanup, StorageError> {
        let mut done = BucketCleanup::default();
        if self.is_local() {
            return Ok(done);
        }
        let keep: std::collections::HashSet<&str> = referenced.iter().map(String::as_str).collect();
        for prefix in crate::datadir::SUBDIRS {
            for o in self.storage.list(prefix).await? {
                let young = o.last_modified.elapsed().map_or(true, |age| age < min_age);
                if keep.contains(o.key.as_str()) || young {
                    continue;
                }
                match self.storage.quarantine(&o.key).await {
                    Ok(to) => {
                        done.quarantined += 1;
                        tracing::warn!(key = %o.key, to = %to, "Quarantined unreferenced object");
                    }
                    Err(StorageError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        done.removed_staging = self.storage.remove_stale_staging(min_age).await?;
        Ok(done)
    }

    fn key_of(&self, path: &Path) -> Result<String, StorageError> {
        let key = self.data.to_stored(path);
        if Path::new(&key).is_absolute() {
            return Err(StorageError::Invalid(format!(
                "{} is not in the data dir {}",
                path.display(),
                self.data.root().display()
            )));
        }
        Ok(key)
    }
}
