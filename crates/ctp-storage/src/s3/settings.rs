//! How to reach S3: one client per bucket, all with create-only writes switched on.
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut, S3CopyIfNotExists};
use object_store::{ClientOptions, RetryConfig};

use crate::config::{Credentials, StorageConfig};
use crate::error::{Result, StorageError};

/// How to reach S3 (shared by the configured bucket and buckets named by task URLs).
#[derive(Clone, Debug)]
pub(crate) struct S3Settings {
    endpoint: Option<String>,
    region: String,
    path_style: bool,
    allow_http: bool,
    /// Resolved at open; an error is reported when a client is built (so a stray
    /// `AWS_ACCESS_KEY_ID` does not stop a `file://` daemon that never uses S3).
    credentials: std::result::Result<Option<Credentials>, String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    retry_timeout: Duration,
}

impl S3Settings {
    pub fn new(cfg: &StorageConfig) -> Result<S3Settings> {
        Ok(S3Settings {
            endpoint: cfg
                .endpoint
                .as_deref()
                .map(|e| e.trim().trim_end_matches('/').to_string()),
            region: cfg.effective_region(),
            path_style: cfg.path_style,
            allow_http: cfg.allow_http(),
            credentials: Credentials::resolve(cfg).map_err(|e| e.to_string()),
            connect_timeout: Duration::from_secs(cfg.connect_timeout_secs.max(1)),
            request_timeout: Duration::from_secs(cfg.request_timeout_secs.max(1)),
            retry_timeout: Duration::from_secs(cfg.retry_timeout_secs),
        })
    }

    /// A client for `bucket`; `quick`: no retries and short timeouts (health probes).
    pub fn build(&self, bucket: &str, quick: bool) -> Result<AmazonS3> {
        let (connect, request) = if quick {
            (
                self.connect_timeout.min(Duration::from_secs(2)),
                self.request_timeout.min(Duration::from_secs(5)),
            )
        } else {
            (self.connect_timeout, self.request_timeout)
        };
        let retry = RetryConfig {
            max_retries: if quick { 0 } else { 10 },
            retry_timeout: self.retry_timeout,
            ..RetryConfig::default()
        };
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&self.region)
            .with_virtual_hosted_style_request(!self.path_style)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(self.allow_http)
                    .with_connect_timeout(connect)
                    .with_timeout(request),
            )
            .with_retry(retry);
        if let Some(ep) = &self.endpoint {
            // Virtual-hosted style against a custom endpoint: the bucket goes into the host.
            let ep = match url::Url::parse(ep) {
                Ok(mut u) if !self.path_style => {
                    let host = format!("{bucket}.{}", u.host_str().unwrap_or_default());
                    let _ = u.set_host(Some(&host));
                    u.to_string().trim_end_matches('/').to_string()
                }
                _ => ep.clone(),
            };
            b = b.with_endpoint(ep);
        }
        let credentials = self
            .credentials
            .as_ref()
            .map_err(|e| StorageError::Invalid(e.clone()))?;
        if let Some(c) = credentials {
            b = b
                .with_access_key_id(&c.access_key_id)
                .with_secret_access_key(&c.secret_access_key);
            if let Some(t) = &c.session_token {
                b = b.with_token(t);
            }
        }
        b.build().map_err(|e| {
            StorageError::Invalid(format!("storage: S3 client for bucket {bucket:?}: {e}"))
        })
    }
}
