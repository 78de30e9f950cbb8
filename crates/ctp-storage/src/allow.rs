//! Which URLs a task may name as its data (no server-side request forgery).
use std::path::PathBuf;

use crate::config::check_bucket;
use crate::error::{Result, StorageError};

/// URL prefixes that task data may come from (`storage.allow_urls`, plus the configured
/// bucket).
///
/// [`check`](Self::check) normalises a URL before it compares: `.`/`..` segments (also
/// percent-encoded) are resolved by URL parsing, a segment that still decodes to `.`/`..` or
/// holds an encoded `/` or `\` is refused, user info (`user:pass@host`) is refused, and host
/// names compare case-insensitively with default ports dropped. A URL then matches an entry
/// when scheme, host and port are equal and the entry's path segments are a prefix of the
/// URL's: `s3://b/emoji/` allows `s3://b/emoji/x.tar` but not `s3://b/emoji-private/x.tar`.
/// Schemes: `s3://`, `https://`, `file://` (local host only), and `http://` only where an entry
/// names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Target>,
}

/// A parsed, normalised URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub scheme: String,
    /// Bucket for s3, `host[:port]` for http(s), empty for file.
    pub host: String,
    /// Decoded path segments.
    pub segments: Vec<String>,
    /// The normalised URL (query kept for http(s)).
    pub url: url::Url,
}

impl Target {
    /// The local path of a file URL.
    pub fn path(&self) -> PathBuf {
        let mut p = PathBuf::from("/");
        p.extend(&self.segments);
        p
    }

    fn starts_with(&self, entry: &Target) -> bool {
        self.scheme == entry.scheme
            && self.host == entry.host
            && self.segments.len() >= entry.segments.len()
            && self
                .segments
                .iter()
                .zip(&entry.segments)
                .all(|(a, b)| a == b)
    }
}

impl AllowList {
    /// An allow-list of `prefixes` (the `storage.allow_urls` entries).
    ///
    /// # Errors
    /// [`StorageError::Invalid`] naming an entry that is not a usable URL prefix.
    pub fn new<S: AsRef<str>>(prefixes: &[S]) -> Result<AllowList> {
        let entries = prefixes
            .iter()
            .map(|p| {
                let p = p.as_ref();
                parse(p, true).map_err(|why| {
                    StorageError::Invalid(format!(
                        "storage.allow_urls entry {:?}: {why}",
                        crate::config::redact_userinfo(p)
                    ))
                })
            })
            .collect::<Result<_>>()?;
        Ok(AllowList { entries })
    }

    /// Also allows everything under `s3://<bucket>/<prefix>`.
    pub fn allow_bucket(&mut self, bucket: &str, prefix: &str) {
        if let Ok(t) = parse(&format!("s3://{bucket}/{prefix}"), true) {
            self.entries.push(t);
        }
    }

    /// Whether no URL at all is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks `url` and returns it normalised.
    ///
    /// # Errors
    /// [`StorageError::Invalid`] for a malformed or unsupported URL (with the reason), and
    /// [`StorageError::NotAllowed`] naming a well-formed URL outside the list.
    pub fn check(&self, url: &str) -> Result<String> {
        self.target(url).map(|t| t.url.to_string())
    }

    pub(crate) fn target(&self, url: &str) -> Result<Target> {
        let shown = crate::config::redact_userinfo(url);
        let t = parse(url, false)
            .map_err(|why| StorageError::Invalid(format!("task data URL {shown:?}: {why}")))?;
        if self.entries.iter().any(|e| t.starts_with(e)) {
            Ok(t)
        } else {
            Err(StorageError::NotAllowed { url: shown })
        }
    }
}

/// Parses and normalises `raw`; `prefix` allows a trailing `/` (an entry of the list).
fn parse(raw: &str, prefix: bool) -> std::result::Result<Target, String> {
    let mut url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    let scheme = url.scheme().to_string();
    if !matches!(scheme.as_str(), "s3" | "https" | "http" | "file") {
        return Err(format!(
            "scheme {scheme:?} is not supported (s3://, https://, file://, or an allow-listed http://)"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("user info (user:password@) is not allowed in a data URL".into());
    }
    url.set_fragment(None);
    if url.query().is_some() && (scheme == "s3" || scheme == "file" || prefix) {
        return Err("a query string is only allowed on http(s) data URLs".into());
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let host = match scheme.as_str() {
        "s3" => {
            check_bucket(&host).map_err(|why| format!("bucket {host:?} {why}"))?;
            host
        }
        "file" if host.is_empty() || host == "localhost" => String::new(),
        "file" => return Err("file:// URLs must name a local path (file:///path)".into()),
        _ if host.is_empty() => return Err("the URL has no host".into()),
        _ => match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        },
    };
    let mut segments = Vec::new();
    let raw_segments: Vec<&str> = url.path().split('/').skip(1).collect();
    let last = raw_segments.len().saturating_sub(1);
    for (i, seg) in raw_segments.iter().enumerate() {
        let decoded = percent_decode(seg).ok_or("the path has an invalid percent-encoding")?;
        if decoded.is_empty() {
            if i == last && (prefix || raw_segments.len() == 1) {
                continue;
            }
            return Err("the path has an empty segment ('//' or a trailing '/')".into());
        }
        if decoded == "." || decoded == ".." || decoded.contains(['/', '\\', '\0']) {
            return Err(format!(
                "path segment {seg:?} is not allowed ('.', '..', or an encoded '/', '\\\\' or NUL)"
            ));
        }
        segments.push(decoded);
    }
    if !prefix && segments.is_empty() {
        return Err("the URL names no object or file".into());
    }
    Ok(Target {
        scheme,
        host,
        segments,
        url,
    })
}

/// Percent-decodes one path segment (UTF-8); `None` for a bad escape or bad UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> AllowList {
        let mut l = AllowList::new(&[
            "s3://data/emoji/",
            "https://Files.Example:443/shards",
            "file:///srv/shards/",
            "http://10.0.0.5:8080/public/",
        ])
        .unwrap();
        l.allow_bucket("ctp", "prefix");
        l
    }

    #[test]
    fn urls_under_an_entry_pass_normalised() {
        let l = list();
        assert_eq!(
            l.check("s3://data/emoji/shard-000.tar").unwrap(),
            "s3://data/emoji/shard-000.tar"
        );
        assert_eq!(
            l.check("s3://data/emoji/a/../b.tar").unwrap(),
            "s3://data/emoji/b.tar"
        );
        assert_eq!(
            l.check("https://files.example/shards/x.tar?sig=1#frag")
                .unwrap(),
            "https://files.example/shards/x.tar?sig=1"
        );
        assert!(l.check("HTTPS://FILES.EXAMPLE/shards/x.tar").is_ok());
        assert!(l.check("file:///srv/shards/a.tar").is_ok());
        assert!(l.check("file://localhost/srv/shards/a.tar").is_ok());
        assert!(l.check("http://10.0.0.5:8080/public/a.tar").is_ok());
        assert!(l.check("s3://ctp/prefix/tasks/x.bundle").is_ok());
        assert_eq!(
            l.target("s3://data/emoji/a%20b.tar").unwrap().segments,
            ["emoji", "a b.tar"]
        );
    }

    #[test]
    fn escapes_and_lookalikes_are_refused_naming_the_url() {
        let l = list();
        for url in [
            "s3://data/emoji/../secret/x.tar",
            "s3://data/emoji/%2e%2e/secret/x.tar",
            "s3://data/emoji-private/x.tar",
            "s3://other/emoji/x.tar",
            "https://files.example.evil.com/shards/x.tar",
            "https://files.example:8443/shards/x.tar",
            "https://files.example/shardsX/x.tar",
            "http://files.example/shards/x.tar",
            "http://10.0.0.5:8081/public/a.tar",
            "file:///srv/shards/../../etc/passwd",
            "file:///etc/passwd",
            "s3://ctp/prefix2/x",
        ] {
            match l.check(url) {
                Err(StorageError::NotAllowed { url: u }) => assert_eq!(u, url),
                other => panic!("{url}: {other:?}"),
            }
        }
        let e = l.check("https://files.example/shards/x.tar").unwrap();
        assert!(e.starts_with("https://files.example/"));
    }

    #[test]
    fn malformed_urls_are_invalid_with_the_reason() {
        let l = list();
        let cases = [
            ("https://user:pw@files.example/shards/x.tar", "user info"),
            ("s3://data/emoji/..%2fsecret", "encoded"),
            ("s3://data/emoji/a%5c..%5cb", "encoded"),
            ("gopher://x/y", "not supported"),
            ("not a url", "not a URL"),
            ("file://server/share/x", "local path"),
            ("s3://data/emoji//x", "empty segment"),
            ("s3://data/emoji/x?versionId=1", "query"),
            ("s3://Data_X/emoji/x", "bucket"),
            ("s3://data/emoji/%zz", "percent"),
        ];
        for (url, want) in cases {
            let e = l.check(url).unwrap_err();
            assert!(matches!(e, StorageError::Invalid(_)), "{url}: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains(want), "{url}: {msg}");
            assert!(!msg.contains("pw@"), "{msg}");
        }
    }

    #[test]
    fn empty_list_allows_nothing_and_bad_entries_are_refused() {
        let l = AllowList::new::<&str>(&[]).unwrap();
        assert!(l.is_empty());
        assert!(matches!(
            l.check("s3://data/x"),
            Err(StorageError::NotAllowed { .. })
        ));
        let e = AllowList::new(&["ftp://x/"]).unwrap_err().to_string();
        assert!(e.contains("ftp://x/") && e.contains("not supported"), "{e}");
    }
}
