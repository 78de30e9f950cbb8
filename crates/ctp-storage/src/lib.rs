//! Where ctpd keeps task bundles, resume checkpoints and version checkpoints: the data dir
//! (`file://`, the default, laid out exactly as before), or S3-compatible object storage
//! shared by daemons on different hosts (issue #23).
//!
//! - [`Storage::open`] reads a [`StorageConfig`] (`[storage]` in ctpd's config).
//! - Objects are named by relative keys that mirror the data dir layout
//!   (`tasks/<sha256>.bundle`, `versions/<task>.<epoch>.safetensors`,
//!   `resume/<task>.<epoch>.<step>.safetensors`; see [`validate_key`]).
//! - Every write is create-only ([`Storage::put_file_create_only`]): a stale worker can
//!   never replace what another wrote, and a write that finds the same bytes succeeds.
//! - Every read is verified against the sha256 its row records ([`Storage::fetch`]); from S3
//!   through a bounded, least-recently-used local cache, since libtorch needs a path.
//! - Errors say whether the store is unreachable ([`StorageError::Unavailable`]: the daemon
//!   answers `UNAVAILABLE` and holds training), and [`Storage::probe`] feeds health.
//! - Task data by reference: [`expand_braces`], [`AllowList`], [`Storage::fetch_url`].
//!
//! S3 goes through the `object_store` crate; this crate adds the keys, the create-only
//! protocol, the cache and the error classes. It does not use libtorch or a database.
//!
//! ```no_run
//! # async fn demo(sha256: &str) -> ctp_storage::Result<()> {
//! use ctp_storage::{Storage, StorageConfig, StorageError};
//! use std::path::Path;
//!
//! let cfg = StorageConfig::default(); // [storage] of ctpd's config: the data dir itself
//! let storage = Storage::open(&cfg, Path::new("/srv/ctp"), Path::new("/srv/ctp/cache"))?;
//! let key = "versions/t1.3.safetensors";
//! let tmp = storage.staging_path(key)?; // libtorch saves the checkpoint here
//! match storage.put_file_create_only(key, &tmp, sha256).await {
//!     Ok(_) => {}                                   // Created or AlreadyPresent
//!     Err(StorageError::Conflict { .. }) => {}      // another worker stored other bytes
//!     Err(e) if e.is_unavailable() => {}            // hold, retry after probe() passes
//!     Err(e) => return Err(e),
//! }
//! let path = storage.fetch(key, sha256).await?; // a verified local file for libtorch
//! # let _ = path; Ok(()) }
//! ```
//!
//! # Create-only writes
//!
//! - `file://`: the bytes go to a hidden temp file beside the target (`.<name>.<id>.tmp`,
//!   the pattern ctpd's startup cleanup removes), are synced, then hard-linked to the key's
//!   path; `link(2)` fails if the path exists, so nothing is replaced and no reader sees a
//!   partial file.
//! - S3, files up to `multipart_threshold_bytes` (64 MiB): one PUT with `If-None-Match: *`
//!   (`object_store`'s `PutMode::Create`, enabled by `S3ConditionalPut::ETagMatch`), carrying
//!   the sha256 as user metadata.
//! - S3, larger files (up to [`MAX_OBJECT_BYTES`], 5 GiB): `object_store` cannot complete a
//!   multipart upload create-only, so the file is streamed as a multipart upload to a unique
//!   staging key (`<prefix>/.staging/<id>`), published by a create-only server-side copy
//!   (`S3CopyIfNotExists::Multipart`: UploadPartCopy, then CompleteMultipartUpload with
//!   `If-None-Match: *`), and the staging object is deleted. Staging objects of a crash are
//!   removed by [`Storage::remove_stale_staging`].
//!
//! A write refused because the key exists reads the stored sha256 (metadata, else by
//! streaming and hashing the object) and succeeds only if it matches.
//!
//! # The cache (S3)
//!
//! `<cache_dir>/objects/<sha256>`: filled by streaming to a temp file while hashing, renamed
//! into place only when size and hash match (a bad download is deleted and fetched once
//! more, then [`StorageError::Corrupt`]). One download per hash at a time; least recently
//! used files are deleted beyond `cache_max_bytes` (never the one just fetched, nor one being
//! fetched). A restart rescans the folder, ordering by mtime (each hit refreshes it), and
//! re-hashes each file once before its first use.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod allow;
mod braces;
mod cache;
mod config;
mod error;
mod fetch_url;
mod hash;
mod key;
mod local;
mod maintenance;
mod s3;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub use allow::AllowList;
pub use braces::{expand_braces, MAX_EXPANSION};
pub use cache::CacheUsage;
pub use config::{Credentials, StorageConfig};
pub use error::{Result, StorageError};
pub use fetch_url::FetchedShard;
pub use key::{validate_key, validate_sha256, MAX_KEY_BYTES};
pub use s3::MAX_OBJECT_BYTES;

use cache::Cache;
use config::Location;
use local::LocalBackend;
use s3::{S3Backend, S3Settings};

/// What a create-only write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object is new.
    Created,
    /// The key held the same bytes (same sha256) already; nothing was written.
    AlreadyPresent,
}

/// One stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its key.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// When it was written (for grace periods: a peer's upload in flight is young).
    pub last_modified: SystemTime,
}

/// Where objects live: cheap to clone, safe to share between tasks.
///
/// `Debug` shows where (`s3://bucket/prefix` or the folder) and the cache usage, never
/// credentials.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("location", &self.inner.description)
            .field("cache", &self.cache_usage())
            .finish_non_exhaustive()
    }
}

struct Inner {
    backend: Backend,
    cache: Option<Cache>,
    allow: AllowList,
    http: reqwest::Client,
    s3: S3Settings,
    url_stores: Mutex<HashMap<String, Arc<dyn object_store::ObjectStore>>>,
    description: String,
}

enum Backend {
    Local(LocalBackend),
    S3(S3Backend),
}

impl Storage {
    /// Opens the storage `cfg` selects. `data_dir` is the default `file://` root; `cache_dir`
    /// holds the local copies of S3 objects (`<cache_dir>/objects`, created; one daemon per
    /// cache dir). Nothing is contacted: see [`probe`](Self::probe).
    ///
    /// Installs rustls' ring provider as the process default if none is installed yet
    /// (object_store's and the `https://` client's TLS).
    ///
    /// # Errors
    /// [`StorageError::Invalid`] for a bad setting (named), [`StorageError::Io`] if a folder
    /// cannot be created.
    pub fn open(cfg: &StorageConfig, data_dir: &Path, cache_dir: &Path) -> Result<Storage> {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let location = cfg.location(data_dir)?;
        let s3 = S3Settings::new(cfg)?;
        let mut allow = AllowList::new(&cfg.allow_urls)?;
        let (backend, cache, description) = match &location {
            Location::File(root) => (
                Backend::Local(LocalBackend::open(root)?),
                None,
                format!("file://{}", root.display()),
            ),
            Location::S3 { bucket, prefix } => {
                allow.allow_bucket(bucket, prefix);
                let cache = Cache::open(cache_dir, cfg.cache_max_bytes)?;
                let backend = S3Backend::new(&s3, bucket, prefix, cfg)?;
                let shown = if prefix.is_empty() {
                    format!("s3://{bucket}")
                } else {
                    format!("s3://{bucket}/{prefix}")
                };
                (Backend::S3(backend), Some(cache), shown)
            }
        };
        let http =
            fetch_url::http_client(&allow, cfg.connect_timeout_secs, cfg.request_timeout_secs)?;
        tracing::debug!(storage = %description, "opened storage");
        Ok(Storage {
            inner: Arc::new(Inner {
                backend,
                cache,
                allow,
                http,
                s3,
                url_stores: Mutex::new(HashMap::new()),
                description,
            }),
        })
    }

    /// `file:///…` or `s3://bucket/prefix`, for logs (holds no credentials).
    pub fn describe(&self) -> &str {
        &self.inner.description
    }

    /// Whether objects are files of a local folder (`file://`).
    pub fn is_local(&self) -> bool {
        matches!(self.inner.backend, Backend::Local(_))
    }

    /// The file that *is* the object of `key` on `file://` storage (no copy, not verified;
    /// use [`fetch`](Self::fetch) to verify), or `None` on S3.
    ///
    /// # Errors
    /// [`StorageError::Invalid`] for a bad key.
    pub fn local_path(&self, key: &str) -> Result<Option<PathBuf>> {
        validate_key(key)?;
        Ok(match &self.inner.backend {
            Backend::Local(l) => Some(l.path(key)),
            Backend::S3(_) => None,
        })
    }

    /// A fresh temp path to write the file for `key` to before
    /// [`put_file_create_only`](Self::put_file_create_only): on `file://` it lies beside the
    /// final file (same filesystem), so the put links it into place instead of copying; on S3
    /// it lies under the cache dir. Its parent folder exists. Either way the put consumes it
    /// (removes it) when it succeeds; after a failure it is the caller's to remove.
    ///
    /// # Errors
    /// `Invalid` for a bad key; `Io` if the folder cannot be created.
    pub fn staging_path(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        let beside = match (&self.inner.backend, &self.inner.cache) {
            (Backend::Local(l), _) => l.path(key),
            (Backend::S3(_), Some(c)) => c.staging_dir().join(key.replace('/', "_")),
            (Backend::S3(_), None) => unreachable!("S3 storage always has a cache"),
        };
        let p = key::temp_sibling(&beside);
        let dir = p.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        Ok(p)
    }

    /// Stores the file at `local_path` as `key`, create-only: if `key` exists already, this
    /// succeeds ([`PutOutcome::AlreadyPresent`]) only when the stored sha256 equals `sha256`,
    /// and fails with [`StorageError::Conflict`] naming both hashes otherwise. An existing
    /// object is never replaced, on any backend, even by racing writers.
    ///
    /// The file is hashed while it is read, and must match `sha256` (else `Invalid`).
    /// `local_path` is left alone unless it came from [`staging_path`](Self::staging_path),
    /// which is consumed on success. On S3, files above `multipart_threshold_bytes` are
    /// streamed as a multipart upload (see "Create-only writes" in the crate docs for how
    /// that stays create-only); at most [`MAX_OBJECT_BYTES`].
    ///
    /// # Errors
    /// `Conflict`, `Invalid` (key, hash), `Unavailable`, `Denied`, `TooLarge`, `Io`.
    pub async fn put_file_create_only(
        &self,
        key: &str,
        local_path: &Path,
        sha256: &str,
    ) -> Result<PutOutcome> {
        validate_key(key)?;
        let sha = validate_sha256(sha256)?;
        let staged = self.is_staging_path(key, local_path);
        let out = match &self.inner.backend {
            Backend::Local(_) => {
                let (this, key, src) = (self.clone(), key.to_string(), local_path.to_path_buf());
                tokio::task::spawn_blocking(move || match &this.inner.backend {
                    Backend::Local(l) => l.put(&key, &src, &sha, staged),
                    Backend::S3(_) => unreachable!(),
                })
                .await
                .map_err(|e| StorageError::io(local_path, std::io::Error::other(e)))??
            }
            Backend::S3(b) => b.put(key, local_path, &sha).await?,
        };
        if staged {
            // Linked into place (file://) or uploaded (S3): the staging file is done.
            let _ = tokio::fs::remove_file(local_path).await;
        }
        Ok(out)
    }

    fn is_staging_path(&self, key: &str, path: &Path) -> bool {
        match (&self.inner.backend, &self.inner.cache) {
            (Backend::Local(l), _) => l.is_own_temp(key, path),
            (Backend::S3(_), Some(c)) => {
                path.parent() == Some(c.staging_dir().as_path())
                    && path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(key::is_temp_name)
            }
            _ => false,
        }
    }

    /// A local path holding the object of `key`, verified to hash to `sha256`; never a
    /// partial or corrupt file.
    ///
    /// On `file://` this is the data dir's file (hashes are memoised by size and mtime). On
    /// S3 it is a file of the local cache: filled by streaming to a temp file while hashing,
    /// then renamed; a wrong or short download is deleted and fetched once more, then
    /// reported as [`StorageError::Corrupt`]. Concurrent fetches of one key share one
    /// download. The path stays valid until the cache needs the room: use it at once (an
    /// open file survives eviction).
    ///
    /// # Errors
    /// `NotFound`, `Corrupt`, `Unavailable`, `Denied`, `Invalid` (key, hash), `Io`.
    pub async fn fetch(&self, key: &str, sha256: &str) -> Result<PathBuf> {
        validate_key(key)?;
        let sha = validate_sha256(sha256)?;
        match &self.inner.backend {
            Backend::Local(_) => {
                let (this, key) = (self.clone(), key.to_string());
                tokio::task::spawn_blocking(move || match &this.inner.backend {
                    Backend::Local(l) => l.fetch(&key, &sha),
                    Backend::S3(_) => unreachable!(),
                })
                .await
                .map_err(|e| StorageError::Invalid(format!("fetch: {e}")))?
            }
            Backend::S3(b) => {
                let cache = self
                    .inner
                    .cache
                    .as_ref()
                    .expect("S3 storage always has a cache");
                b.fetch(cache, key, &sha).await
            }
        }
    }

    /// After a put from `file` (S3): keeps the file as the cached copy of its object, so
    /// this daemon reads the object back without a download. Returns whether it did; with
    /// `file://` storage the file is the object and nothing happens.
    ///
    /// # Errors
    /// `Invalid` (not a sha256), `Io` (the move failed; the file is left in place).
    pub fn adopt(&self, file: &Path, sha256: &str) -> Result<bool> {
        let sha = validate_sha256(sha256)?;
        match &self.inner.cache {
            Some(cache) => cache.adopt(file, &sha).map(|_| true),
            None => Ok(false),
        }
    }

    /// The object of `key`, if there is one.
    ///
    /// # Errors
    /// `Invalid`, `Unavailable`, `Denied`, `Io`.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        validate_key(key)?;
        match &self.inner.backend {
            Backend::Local(l) => l.head(key),
            Backend::S3(b) => b.head(key).await,
        }
    }

    /// Every object under `prefix` (`""` for all, `tasks` or `tasks/` for `tasks/…`), sorted
    /// by key. Temp files and staging objects are not listed. On `file://` with the data dir,
    /// `""` also lists the daemon's other files (its database): pass a prefix.
    ///
    /// # Errors
    /// `Invalid` (prefix), `Unavailable`, `Denied`, `Io`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = key::validate_prefix(prefix)?;
        match &self.inner.backend {
            Backend::Local(l) => {
                let (this, p) = (self.clone(), prefix.clone());
                tokio::task::spawn_blocking(move || match &this.inner.backend {
                    Backend::Local(l) => l.list(&p),
                    Backend::S3(_) => unreachable!(),
                })
                .await
                .map_err(|e| StorageError::io(l.root(), std::io::Error::other(e)))?
            }
            Backend::S3(b) => b.list(&prefix).await,
        }
    }
}
