//! S3-compatible storage through `object_store`'s `AmazonS3`.
//!
//! Create-only writes (`If-None-Match: *`, switched on with `S3ConditionalPut::ETagMatch`):
//! - files up to `multipart_threshold_bytes`: one `PutMode::Create` PUT, with the sha256 as
//!   user metadata (`x-amz-meta-sha256`);
//! - larger files: `object_store` cannot complete a multipart upload create-only, so the
//!   file is uploaded (multipart, streamed) to a unique staging key
//!   `<prefix>/.staging/<unique>`, then published with a create-only copy
//!   (`S3CopyIfNotExists::Multipart`: UploadPartCopy, then CompleteMultipartUpload with
//!   `If-None-Match: *`), and the staging object is deleted. Readers never see a partial
//!   object and nothing is ever replaced. Limit: 5 GiB (one copy part).
//!
//! When the key exists already, the stored sha256 is read from the metadata, or (objects
//! published by copy carry none) by streaming and hashing the object.
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::path::Path as StorePath;
use object_store::{
    Attribute, Attributes, CopyMode, CopyOptions, GetOptions, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, WriteMultipart,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::cache::{Cache, Filled};
use crate::config::StorageConfig;
use crate::error::{Result, StorageError};
use crate::hash::{stream_to_file, StreamError};
use crate::key::{is_listable, unique};
use crate::local::claimed_mismatch;
use crate::{ObjectMeta, PutOutcome};

mod settings;
pub(crate) use settings::S3Settings;

/// The largest object one create-only copy can publish (S3's part size limit).
pub const MAX_OBJECT_BYTES: u64 = 5 << 30;
const PART_BYTES: usize = 8 << 20;
const META_SHA: &str = "sha256";

/// One bucket (and key prefix) of the store.
#[derive(Debug)]
pub(crate) struct S3Backend {
    pub store: Arc<AmazonS3>,
    probe_store: AmazonS3,
    pub bucket: String,
    /// "" or "a/b".
    pub prefix: String,
    multipart_threshold: u64,
}

/// Whether an `object_store` error says the key exists (412 on a conditional write).
fn is_exists(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
    )
}

impl S3Backend {
    pub fn new(
        s: &S3Settings,
        bucket: &str,
        prefix: &str,
        cfg: &StorageConfig,
    ) -> Result<S3Backend> {
        Ok(S3Backend {
            store: Arc::new(s.build(bucket, false)?),
            probe_store: s.build(bucket, true)?,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            multipart_threshold: cfg.multipart_threshold_bytes,
        })
    }

    pub fn path(&self, key: &str) -> StorePath {
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        StorePath::from_iter(full.split('/'))
    }

    fn key_of(&self, p: &StorePath) -> Option<String> {
        let s = p.as_ref();
        let key = if self.prefix.is_empty() {
            s
        } else {
            s.strip_prefix(&self.prefix)?.strip_prefix('/')?
        };
        Some(key.to_string())
    }

    pub async fn put(&self, key: &str, src: &std::path::Path, sha: &str) -> Result<PutOutcome> {
        let size = tokio::fs::metadata(src)
            .await
            .map_err(|e| StorageError::io(src, e))?
            .len();
        if size > MAX_OBJECT_BYTES {
            return Err(StorageError::TooLarge {
                what: format!("put {key}: {}", src.display()),
                limit: MAX_OBJECT_BYTES,
            });
        }
        for _ in 0..2 {
            let created = if size <= self.multipart_threshold {
                self.put_single(key, src, sha).await?
            } else {
                self.put_staged(key, src, sha).await?
            };
            if created {
                return Ok(PutOutcome::Created);
            }
            if let Some(outcome) = self.compare_existing(key, sha).await? {
                return Ok(outcome);
            }
            // The object vanished between the refused write and the comparison: write again.
        }
        Err(StorageError::Unavailable {
            op: "put",
            key: key.into(),
            message: "the object kept appearing and vanishing".into(),
        })
    }

    /// One create-only PUT; `false` if the key exists.
    async fn put_single(&self, key: &str, src: &std::path::Path, sha: &str) -> Result<bool> {
        let data = tokio::fs::read(src)
            .await
            .map_err(|e| StorageError::io(src, e))?;
        let got = crate::hash::hash_bytes(&data);
        if got != sha {
            return Err(claimed_mismatch(key, src, sha, &got));
        }
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::Metadata(META_SHA.into()), sha.to_string().into());
        let opts = PutOptions {
            mode: PutMode::Create,
            attributes,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.path(key), PutPayload::from(data), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_exists(&e) => Ok(false),
            Err(e) => Err(StorageError::from_store("put", key, e)),
        }
    }

    /// Multipart upload to a staging key, then a create-only copy; `false` if the key exists.
    async fn put_staged(&self, key: &str, src: &std::path::Path, sha: &str) -> Result<bool> {
        let staging = self.path(&format!(".staging/{}", unique()));
        let upload = self
            .store
            .put_multipart(&staging)
            .await
            .map_err(|e| StorageError::from_store("put", key, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut f = tokio::fs::File::open(src)
            .await
            .map_err(|e| StorageError::io(src, e))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match f.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(StorageError::io(src, e));
                }
            };
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            w.write(&buf[..n]);
            if let Err(e) = w.wait_for_capacity(4).await {
                let _ = w.abort().await;
                return Err(StorageError::from_store("put", key, e));
            }
        }
        let got = hex::encode(h.finalize());
        if got != sha {
            let _ = w.abort().await;
            return Err(claimed_mismatch(key, src, sha, &got));
        }
        w.finish()
            .await
            .map_err(|e| StorageError::from_store("put", key, e))?;
        let copied = self
            .store
            .copy_opts(
                &staging,
                &self.path(key),
                CopyOptions::new().with_mode(CopyMode::Create),
            )
            .await;
        if let Err(e) = self.store.delete(&staging).await {
            tracing::warn!(key, staging = %staging, error.message = %e, "could not delete a staging object");
        }
        match copied {
            Ok(()) => Ok(true),
            Err(e) if is_exists(&e) => Ok(false),
            Err(e) => Err(StorageError::from_store("put", key, e)),
        }
    }

    /// The outcome of a create-only write that found `key` present; `None` if it is gone.
    async fn compare_existing(&self, key: &str, sha: &str) -> Result<Option<PutOutcome>> {
        let path = self.path(key);
        let existing = match self
            .store
            .get_opts(&path, GetOptions::new().with_head(true))
            .await
        {
            Ok(r) => r
                .attributes
                .get(&Attribute::Metadata(META_SHA.into()))
                .map(|v| v.to_string()),
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(StorageError::from_store("head", key, e)),
        };
        let existing = match existing {
            Some(h) => h,
            None => match self.hash_object(key).await {
                Ok(h) => h,
                Err(StorageError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        if existing == sha {
            Ok(Some(PutOutcome::AlreadyPresent))
        } else {
            Err(StorageError::Conflict {
                key: key.into(),
                existing,
                attempted: sha.into(),
            })
        }
    }

    /// Streams the object and returns its sha256.
    async fn hash_object(&self, key: &str) -> Result<String> {
        let r = self
            .store
            .get(&self.path(key))
            .await
            .map_err(|e| StorageError::from_store("get", key, e))?;
        let mut stream = r.into_stream();
        let mut h = Sha256::new();
        while let Some(chunk) = stream.next().await {
            h.update(chunk.map_err(|e| StorageError::from_store("get", key, e))?);
        }
        Ok(hex::encode(h.finalize()))
    }

    /// The object of `key`, verified, through the cache.
    pub async fn fetch(&self, cache: &Cache, key: &str, sha: &str) -> Result<std::path::PathBuf> {
        let path = self.path(key);
        cache
            .get_or_fill(key, sha, |tmp| {
                let path = path.clone();
                async move {
                    let r = self
                        .store
                        .get(&path)
                        .await
                        .map_err(|e| StorageError::from_store("get", key, e))?;
                    let expected_size = r.meta.size;
                    match stream_to_file(r.into_stream(), &tmp, None).await {
                        Ok((sha256, size)) => Ok(Filled {
                            sha256,
                            size,
                            expected_size,
                        }),
                        Err(StreamError::Source(e)) => Err(StorageError::from_store("get", key, e)),
                        Err(StreamError::Local(e)) => Err(e),
                    }
                }
            })
            .await
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        match self.store.head(&self.path(key)).await {
            Ok(m) => Ok(Some(ObjectMeta {
                key: key.into(),
                size: m.size,
                last_modified: m.last_modified.into(),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StorageError::from_store("head", key, e)),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let full = match (self.prefix.is_empty(), prefix.is_empty()) {
            (true, true) => None,
            (true, false) => Some(prefix.to_string()),
            (false, true) => Some(self.prefix.clone()),
            (false, false) => Some(format!("{}/{prefix}", self.prefix)),
        };
        let p = full.map(|f| StorePath::from_iter(f.split('/')));
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(p.as_ref())
            .try_collect()
            .await
            .map_err(|e| StorageError::from_store("list", prefix, e))?;
        let mut out: Vec<ObjectMeta> = metas
            .into_iter()
            .filter_map(|m| {
                let key = self.key_of(&m.location).filter(|k| is_listable(k))?;
                Some(ObjectMeta {
                    key,
                    size: m.size,
                    last_modified: m.last_modified.into(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes `key` (a missing object is not an error).
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StorageError::from_store("delete", key, e)),
        }
    }

    /// Copies `key` to `to` create-only, then deletes `key`; `false` if `to` exists.
    pub async fn rename_no_replace(&self, key: &str, to: &str) -> Result<bool> {
        let (from, dst) = (self.path(key), self.path(to));
        match self
            .store
            .copy_opts(&from, &dst, CopyOptions::new().with_mode(CopyMode::Create))
            .await
        {
            Ok(()) => {}
            Err(e) if is_exists(&e) => return Ok(false),
            Err(e) => return Err(StorageError::from_store("copy", key, e)),
        }
        self.store
            .delete(&from)
            .await
            .map_err(|e| StorageError::from_store("delete", key, e))?;
        Ok(true)
    }

    /// One small LIST without retries: the bucket exists and answers.
    pub async fn probe(&self) -> Result<()> {
        let shown = format!("s3://{}", self.bucket);
        self.probe_store
            .list_with_delimiter(Some(&self.path("ctp-probe")))
            .await
            .map(|_| ())
            .map_err(|e| StorageError::from_store("probe", &shown, e))
    }

    /// Deletes staging objects (of interrupted large uploads) older than `min_age`.
    pub async fn remove_stale_staging(&self, min_age: Duration) -> Result<usize> {
        let p = self.path(".staging");
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&p))
            .try_collect()
            .await
            .map_err(|e| StorageError::from_store("list", ".staging", e))?;
        let mut n = 0;
        for m in metas {
            let age = std::time::SystemTime::from(m.last_modified)
                .elapsed()
                .unwrap_or_default();
            if age >= min_age && self.store.delete(&m.location).await.is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}
