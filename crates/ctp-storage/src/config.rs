//! `[storage]` settings, where credentials come from, and where objects live.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};

/// The `[storage]` section of ctpd's configuration (`CTP__STORAGE__URL=…` and so on).
///
/// Every field has a default, so an absent section means the data dir itself
/// (`file://<data dir>`), laid out exactly as before object storage existed.
///
/// `Debug` is written by hand: user info in `url`/`endpoint` is redacted. Secrets never live
/// in this struct: they come from `credentials_file` or the environment (see
/// [`Credentials`]), and are never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `s3://bucket[/prefix]` for S3-compatible storage, or `file:///path` for a folder (an
    /// NFS or RWX volume). Unset: `file://<data dir>`.
    pub url: Option<String>,
    /// The S3 endpoint, such as `https://minio.example:9000`. An explicit `http://` endpoint is
    /// allowed (on-premises servers, tests); plain HTTP is never used otherwise. Unset: AWS.
    /// With `file://` storage it still serves `s3://` task data URLs.
    pub endpoint: Option<String>,
    /// The S3 region. Unset: `AWS_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`https://endpoint/bucket/key`), the default: every
    /// S3-compatible server (MinIO, Ceph, moto) understands it and it needs no wildcard DNS;
    /// AWS accepts it too. `false` selects virtual-hosted style (`https://bucket.endpoint/key`).
    pub path_style: bool,
    /// A file holding `access_key_id` and `secret_access_key` (optionally `session_token`), as
    /// TOML (`key = "value"`) or as an AWS credentials file (`[default]`,
    /// `aws_access_key_id = …`). When unset: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and
    /// `AWS_SESSION_TOKEN`) from the environment; when those are unset too, the instance
    /// metadata service. The file's contents are never logged.
    pub credentials_file: Option<PathBuf>,
    /// Size limit of the local cache of objects fetched from S3 (least recently used files are
    /// evicted beyond it). Default 10 GiB. Unused with `file://`.
    pub cache_max_bytes: u64,
    /// URL prefixes that tasks may name as their data (`s3://bucket/datasets/`,
    /// `https://data.example/`, `file:///srv/shards/`). Matching is by whole path segments.
    /// `http://` works only where listed here. Empty: only the configured bucket.
    pub allow_urls: Vec<String>,
    /// Files up to this size are uploaded in one create-only PUT; larger ones by a multipart
    /// upload to a staging key, then published by a create-only copy. Default 64 MiB.
    pub multipart_threshold_bytes: u64,
    /// How long to wait for a TCP connection to the store. Default 5 s.
    pub connect_timeout_secs: u64,
    /// Longest time for one request, body included. Default 300 s.
    pub request_timeout_secs: u64,
    /// How long one operation retries transient errors (connection refused, 5xx) before
    /// it fails with [`StorageError::Unavailable`]. Default 15 s.
    pub retry_timeout_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: None,
            endpoint: None,
            region: None,
            path_style: true,
            credentials_file: None,
            cache_max_bytes: 10 << 30,
            allow_urls: Vec::new(),
            multipart_threshold_bytes: 64 << 20,
            connect_timeout_secs: 5,
            request_timeout_secs: 300,
            retry_timeout_secs: 15,
        }
    }
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("url", &self.url.as_deref().map(redact_userinfo))
            .field("endpoint", &self.endpoint.as_deref().map(redact_userinfo))
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("credentials_file", &self.credentials_file)
            .field("cache_max_bytes", &self.cache_max_bytes)
            .field(
                "allow_urls",
                &self
                    .allow_urls
                    .iter()
                    .map(|u| redact_userinfo(u))
                    .collect::<Vec<_>>(),
            )
            .field("multipart_threshold_bytes", &self.multipart_threshold_bytes)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("retry_timeout_secs", &self.retry_timeout_secs)
            .finish()
    }
}

/// `scheme://user:pass@host/…` → `scheme://<redacted>@host/…`.
pub(crate) fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let auth_end = rest.find('/').unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

impl StorageConfig {
    /// Whether plain HTTP may be used: only for an explicit `http://` endpoint.
    pub fn allow_http(&self) -> bool {
        self.endpoint
            .as_deref()
            .is_some_and(|e| e.trim().to_ascii_lowercase().starts_with("http://"))
    }

    /// The region to use: `region`, else `AWS_REGION`, else `us-east-1`.
    pub fn effective_region(&self) -> String {
        self.region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
            .unwrap_or_else(|| "us-east-1".to_string())
    }

    /// Where objects live, with every field checked.
    pub(crate) fn location(&self, data_dir: &Path) -> Result<Location> {
        let bad = |m: String| Err(StorageError::Invalid(m));
        // The endpoint also serves s3:// task URLs when objects stay on file://.
        if let Some(ep) = &self.endpoint {
            check_endpoint(ep)?;
        }
        let Some(url) = self.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(Location::File(data_dir.to_path_buf()));
        };
        let shown = redact_userinfo(url);
        let dots = url.split('/').skip(3).any(|s| {
            matches!(
                s.to_ascii_lowercase().as_str(),
                "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
            )
        });
        if dots {
            return bad(format!(
                "storage.url {shown:?}: '.' and '..' segments are not allowed"
            ));
        }
        let parsed = url::Url::parse(url).map_err(|e| {
            StorageError::Invalid(format!("storage.url {shown:?} is not a URL: {e}"))
        })?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return bad(format!("storage.url {shown:?} must not hold credentials; use storage.credentials_file or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"));
        }
        match parsed.scheme() {
            "file" => {
                let path = parsed
                    .to_file_path()
                    .ok()
                    .filter(|p| p.is_absolute())
                    .ok_or_else(|| StorageError::Invalid(format!("storage.url {url:?}: a file:// URL needs an absolute local path, as file:///srv/ctp")))?;
                Ok(Location::File(path))
            }
            "s3" => {
                let bucket = parsed.host_str().unwrap_or_default().to_string();
                check_bucket(&bucket).map_err(|why| {
                    StorageError::Invalid(format!("storage.url {url:?}: bucket {bucket:?} {why}"))
                })?;
                let prefix = parsed.path().trim_matches('/').to_string();
                if !prefix.is_empty() {
                    crate::key::validate_key(&prefix).map_err(|e| {
                        StorageError::Invalid(format!("storage.url {url:?}: prefix: {e}"))
                    })?;
                }
                if parsed.query().is_some() || parsed.fragment().is_some() {
                    return bad(format!("storage.url {url:?}: no query or fragment allowed"));
                }
                Ok(Location::S3 { bucket, prefix })
            }
            other => bad(format!(
                "storage.url {shown:?}: unsupported scheme {other:?}; use s3://bucket[/prefix] or file:///path"
            )),
        }
    }
}

fn check_endpoint(ep: &str) -> Result<()> {
    let shown = redact_userinfo(ep);
    let u = url::Url::parse(ep).map_err(|e| {
        StorageError::Invalid(format!("storage.endpoint {shown:?} is not a URL: {e}"))
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(StorageError::Invalid(format!(
            "storage.endpoint {shown:?} must be an http:// or https:// URL with a host"
        )));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(StorageError::Invalid(format!(
            "storage.endpoint {shown:?} must not hold credentials; use storage.credentials_file"
        )));
    }
    Ok(())
}

/// S3 bucket naming rules (3–63 of a-z, 0-9, '.', '-', starting and ending alphanumeric).
pub(crate) fn check_bucket(b: &str) -> std::result::Result<(), &'static str> {
    let ok_chars = b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
    let ends = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&b.len())
        || !ok_chars
        || !ends(b.bytes().next())
        || !ends(b.bytes().last())
    {
        return Err("is not a valid bucket name (3-63 of a-z, 0-9, '.', '-')");
    }
    Ok(())
}

/// Where objects live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Location {
    /// A folder; the object under key `k` is the file `<folder>/k`.
    File(PathBuf),
    /// A bucket and a key prefix ("" or "a/b", without slashes around it).
    S3 { bucket: String, prefix: String },
}

/// S3 credentials. `Debug` shows none of them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A session token for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &"<redacted>")
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Credentials {
    /// The credentials `cfg` selects: its `credentials_file`, else the environment, else
    /// `None` (the store then asks the instance metadata service).
    ///
    /// # Errors
    /// [`StorageError::Invalid`] if the file cannot be read or lacks a key, or if only one of
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` is set. Messages never quote the file.
    pub fn resolve(cfg: &StorageConfig) -> Result<Option<Credentials>> {
        if let Some(path) = &cfg.credentials_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                StorageError::Invalid(format!("storage.credentials_file {}: {e}", path.display()))
            })?;
            return Credentials::parse(&text).map(Some).map_err(|why| {
                StorageError::Invalid(format!(
                    "storage.credentials_file {}: {why}",
                    path.display()
                ))
            });
        }
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Credentials {
                access_key_id,
                secret_access_key,
                session_token: var("AWS_SESSION_TOKEN"),
            })),
            (None, None) => Ok(None),
            _ => Err(StorageError::Invalid(
                "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither".into(),
            )),
        }
    }

    /// Parses `key = value` lines outside any section or in `[default]`; `#`/`;` comments,
    /// quotes around values, and an `aws_` prefix on keys are allowed. Errors name a line
    /// number, never its text (it may hold a secret).
    pub fn parse(text: &str) -> std::result::Result<Credentials, String> {
        let (mut id, mut secret, mut token) = (None, None, None);
        let mut in_default = true;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                in_default = section.trim() == "default";
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!("line {}: expected key = value", i + 1));
            };
            if !in_default {
                continue;
            }
            let k = k.trim();
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v)
                .to_string();
            match k.strip_prefix("aws_").unwrap_or(k) {
                "access_key_id" => id = Some(v),
                "secret_access_key" => secret = Some(v),
                "session_token" => token = Some(v),
                _ => {}
            }
        }
        match (id, secret) {
            (Some(access_key_id), Some(secret_access_key))
                if !access_key_id.is_empty() && !secret_access_key.is_empty() =>
            {
                Ok(Credentials {
                    access_key_id,
                    secret_access_key,
                    session_token: token.filter(|t| !t.is_empty()),
                })
            }
            _ => Err(
                "needs access_key_id and secret_access_key (outside any section or in [default])"
                    .into(),
            ),
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
