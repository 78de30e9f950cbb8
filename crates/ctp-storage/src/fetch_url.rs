//! Task data named by URL (`s3://`, `https://`, `file://`), checked against the allow-list and
//! streamed to a local file under a size limit.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::allow::{AllowList, Target};
use crate::error::{Result, StorageError};
use crate::hash::{copy_hashing, stream_to_file, StreamError};
use crate::key::unique;
use crate::{Backend, Storage};

/// A file fetched by [`Storage::fetch_url`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedShard {
    /// The URL, normalised (what the allow-list checked; record this in the task manifest).
    pub url: String,
    /// The local copy, in the `dest_dir` given.
    pub local_path: PathBuf,
    /// The sha256 of the local copy.
    pub sha256: String,
    /// The server's ETag (S3, HTTP), if it sent one; `None` for `file://`.
    pub etag: Option<String>,
    /// Bytes.
    pub size: u64,
}

/// The HTTP client for `https://` task URLs: redirects are followed only within the
/// allow-list (at most 5), no proxy is taken from the environment.
pub(crate) fn http_client(
    allow: &AllowList,
    connect_secs: u64,
    request_secs: u64,
) -> Result<reqwest::Client> {
    let allow = allow.clone();
    let policy = reqwest::redirect::Policy::custom(move |a| {
        if a.previous().len() >= 5 {
            a.error("more than 5 redirects")
        } else if allow.target(a.url().as_str()).is_ok() {
            a.follow()
        } else {
            let to = crate::config::redact_userinfo(a.url().as_str());
            a.error(format!("a redirect to {to} is outside storage.allow_urls"))
        }
    });
    reqwest::Client::builder()
        .redirect(policy)
        .connect_timeout(std::time::Duration::from_secs(connect_secs.max(1)))
        .timeout(std::time::Duration::from_secs(request_secs.max(1)))
        .build()
        .map_err(|e| StorageError::Invalid(format!("storage: HTTP client: {e}")))
}

/// The local name of a fetched URL: a hash of the URL (unique per URL in one folder), then
/// its last segment made safe.
fn local_name(t: &Target) -> String {
    let id = crate::hash::hash_bytes(t.url.as_str().as_bytes());
    let last: String = t
        .segments
        .last()
        .map(String::as_str)
        .unwrap_or("data")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    format!("{}-{last}", &id[..16])
}

fn http_error(url: &str, e: reqwest::Error) -> StorageError {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    if e.is_redirect() || e.is_builder() {
        StorageError::Invalid(format!("{url}: {msg}"))
    } else {
        StorageError::Unavailable {
            op: "fetch",
            key: url.into(),
            message: msg,
        }
    }
}

impl Storage {
    /// Fetches the task data file at `url` into `dest_dir` (which must exist), hashing it.
    ///
    /// The URL must pass [`Storage::allow_list`] (a `file://` URL is checked again after
    /// symlinks are resolved). The download goes to a temp file, which becomes
    /// `local_path` only when complete; it stops with [`StorageError::TooLarge`] as soon as
    /// it would cross `max_bytes` (at once when the announced size is larger).
    ///
    /// # Errors
    /// `Invalid`/`NotAllowed` for the URL, `NotFound`, `Denied`, `TooLarge`, `Unavailable`
    /// (network, 5xx), `Io` for the local disk.
    pub async fn fetch_url(
        &self,
        url: &str,
        dest_dir: &Path,
        max_bytes: u64,
    ) -> Result<FetchedShard> {
        let t = self.inner.allow.target(url)?;
        let shown = t.url.to_string();
        let dst = dest_dir.join(local_name(&t));
        let tmp = dest_dir.join(format!(".{}.{}.tmp", local_name(&t), unique()));
        let res = match t.scheme.as_str() {
            "s3" => self.fetch_s3(&t, &tmp, max_bytes).await,
            "file" => self.fetch_file(url, &t, &tmp, max_bytes).await,
            _ => self.fetch_http(&t, &tmp, max_bytes).await,
        };
        let (sha256, size, etag) = match res {
            Ok(r) => r,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        tokio::fs::rename(&tmp, &dst)
            .await
            .map_err(|e| StorageError::io(&dst, e))?;
        Ok(FetchedShard {
            url: shown,
            local_path: dst,
            sha256,
            etag,
            size,
        })
    }

    async fn fetch_s3(
        &self,
        t: &Target,
        tmp: &Path,
        max: u64,
    ) -> Result<(String, u64, Option<String>)> {
        let store = self.bucket_store(&t.host)?;
        let shown = t.url.to_string();
        let key = object_store::path::Path::from_iter(t.segments.iter().map(String::as_str));
        let r = store
            .get(&key)
            .await
            .map_err(|e| StorageError::from_store("get", &shown, e))?;
        if r.meta.size > max {
            return Err(StorageError::TooLarge {
                what: shown,
                limit: max,
            });
        }
        let etag = r.meta.e_tag.clone();
        match stream_to_file(r.into_stream(), tmp, Some((max, &shown))).await {
            Ok((sha, n)) => Ok((sha, n, etag)),
            Err(StreamError::Source(e)) => Err(StorageError::from_store("get", &shown, e)),
            Err(StreamError::Local(e)) => Err(e),
        }
    }

    /// The client for `bucket`: the configured one, or one built (once) with the same
    /// endpoint and credentials.
    fn bucket_store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        if let Backend::S3(b) = &self.inner.backend {
            if b.bucket == bucket {
                return Ok(b.store.clone());
            }
        }
        let mut stores = self.inner.url_stores.lock().unwrap();
        if let Some(s) = stores.get(bucket) {
            return Ok(s.clone());
        }
        let s: Arc<dyn ObjectStore> = Arc::new(self.inner.s3.build(bucket, false)?);
        stores.insert(bucket.to_string(), s.clone());
        Ok(s)
    }

    async fn fetch_file(
        &self,
        raw: &str,
        t: &Target,
        tmp: &Path,
        max: u64,
    ) -> Result<(String, u64, Option<String>)> {
        let path = t.path();
        let shown = t.url.to_string();
        let real = tokio::fs::canonicalize(&path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => StorageError::NotFound { key: shown.clone() },
                _ => StorageError::io(&path, e),
            })?;
        let real_url = url::Url::from_file_path(&real)
            .map_err(|()| StorageError::Invalid(format!("{shown}: not a local path")))?;
        if self.inner.allow.target(real_url.as_str()).is_err() {
            return Err(StorageError::NotAllowed {
                url: raw.to_string(),
            });
        }
        let meta = tokio::fs::metadata(&real)
            .await
            .map_err(|e| StorageError::io(&real, e))?;
        if !meta.is_file() {
            return Err(StorageError::Invalid(format!("{shown} is not a file")));
        }
        if meta.len() > max {
            return Err(StorageError::TooLarge {
                what: shown,
                limit: max,
            });
        }
        let tmp = tmp.to_path_buf();
        let (sha, n) =
            tokio::task::spawn_blocking(move || copy_hashing(&real, &tmp, Some((max, &shown))))
                .await
                .map_err(|e| StorageError::io(&path, std::io::Error::other(e)))??;
        Ok((sha, n, None))
    }

    async fn fetch_http(
        &self,
        t: &Target,
        tmp: &Path,
        max: u64,
    ) -> Result<(String, u64, Option<String>)> {
        let shown = t.url.to_string();
        let resp = self
            .inner
            .http
            .get(t.url.clone())
            .send()
            .await
            .map_err(|e| http_error(&shown, e))?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => {}
            404 | 410 => return Err(StorageError::NotFound { key: shown }),
            401 | 403 => {
                return Err(StorageError::Denied {
                    key: shown,
                    message: resp.status().to_string(),
                })
            }
            408 | 429 | 500..=599 => {
                return Err(StorageError::Unavailable {
                    op: "fetch",
                    key: shown,
                    message: resp.status().to_string(),
                })
            }
            _ => {
                return Err(StorageError::Invalid(format!(
                    "{shown}: the server answered {}",
                    resp.status()
                )))
            }
        }
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(StorageError::TooLarge {
                what: shown,
                limit: max,
            });
        }
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let stream = resp.bytes_stream().boxed();
        match stream_to_file(stream, tmp, Some((max, &shown))).await {
            Ok((sha, n)) => Ok((sha, n, etag)),
            Err(StreamError::Source(e)) => Err(http_error(&shown, e)),
            Err(StreamError::Local(e)) => Err(e),
        }
    }
}
