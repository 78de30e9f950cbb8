//! Object keys, expected hashes, and the names of temp files.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, StorageError};

/// Longest key accepted, in bytes (S3's own limit is 1,024).
pub const MAX_KEY_BYTES: usize = 1024;

/// Checks that `key` is a relative object key such as `tasks/<sha256>.bundle`.
///
/// A key is one or more `/`-separated segments of ASCII letters, digits and `-_.+=@,`; no
/// segment is empty or starts with `.` (so there is no `.`, no `..`, and no hidden or temp
/// name, which this crate reserves for its own files). Keys are the same on every backend:
/// on `file://` the key is the path under the data dir.
///
/// # Errors
/// [`StorageError::Invalid`] naming the key and the rule it breaks.
pub fn validate_key(key: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(StorageError::Invalid(format!(
            "invalid storage key {key:?}: {why}"
        )))
    };
    if key.is_empty() {
        return bad("it is empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return bad(&format!("it is longer than {MAX_KEY_BYTES} bytes"));
    }
    if key.starts_with('/') {
        return bad("keys are relative (no leading '/')");
    }
    for seg in key.split('/') {
        check_segment(seg).or_else(|why| bad(&why))?;
    }
    Ok(())
}

/// Checks a listing prefix: empty (everything), or a key with an optional trailing `/`.
/// The prefix matches whole segments: `tasks` lists `tasks/…`, never `tasks2/…`.
pub(crate) fn validate_prefix(prefix: &str) -> Result<String> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    validate_key(trimmed)?;
    Ok(trimmed.to_string())
}

fn check_segment(seg: &str) -> std::result::Result<(), String> {
    if seg.is_empty() {
        return Err("it has an empty segment ('//' or a trailing '/')".into());
    }
    if seg.starts_with('.') {
        return Err(format!(
            "segment {seg:?} starts with '.' ('.', '..' and hidden names are not keys)"
        ));
    }
    if let Some(c) = seg
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.+=@,".contains(*c)))
    {
        return Err(format!(
            "character {c:?} is not allowed (letters, digits and -_.+=@, only)"
        ));
    }
    Ok(())
}

/// Whether every segment of `key` would pass [`validate_key`]; listings skip other names
/// (temp files, staging objects).
pub(crate) fn is_listable(key: &str) -> bool {
    validate_key(key).is_ok()
}

/// Checks and normalises an expected sha256: 64 hex digits, returned in lower case.
///
/// # Errors
/// [`StorageError::Invalid`] naming what was given.
pub fn validate_sha256(sha256: &str) -> Result<String> {
    if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sha256.to_ascii_lowercase())
    } else {
        Err(StorageError::Invalid(format!(
            "{sha256:?} is not a sha256 (64 hex digits)"
        )))
    }
}

/// A process-unique token for temp names: pid, a counter and the clock.
pub(crate) fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}-{n}-{nanos:08x}", std::process::id())
}

/// A fresh temp path beside `path`: `.<name>.<unique>.tmp`, the pattern ctpd's startup
/// cleanup deletes (hidden and ending in `.tmp`).
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", unique()))
}

/// Whether `name` is a temp file name of this crate (or of ctpd): hidden and ending `.tmp`.
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_dir_layout_is_valid() {
        for k in [
            "tasks/0123abcd.bundle",
            "versions/t-1.3.safetensors",
            "resume/t_1.3.120.safetensors",
            "quarantine/tasks/x.bundle",
            "a",
        ] {
            validate_key(k).unwrap();
        }
    }

    #[test]
    fn escapes_and_odd_names_are_refused_with_the_reason() {
        let cases = [
            ("", "empty"),
            ("/etc/passwd", "relative"),
            ("tasks/../x", "'..'"),
            ("..", "'..'"),
            ("./x", "'.'"),
            ("tasks/.x.tmp", "hidden"),
            ("tasks//x", "empty segment"),
            ("tasks/", "empty segment"),
            ("tasks\\..\\x", "'\\\\'"),
            ("tasks/a b", "' '"),
            ("tasks/%2e%2e", "'%'"),
            ("tasks/é", "'é'"),
            ("a\0b", "'\\0'"),
        ];
        for (k, why) in cases {
            let e = validate_key(k).unwrap_err().to_string();
            assert!(e.contains(&format!("{k:?}")), "{e}");
            assert!(e.contains(why), "{k:?}: {e} lacks {why}");
        }
        let long = "a".repeat(MAX_KEY_BYTES + 1);
        assert!(validate_key(&long)
            .unwrap_err()
            .to_string()
            .contains("longer"));
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert_eq!(validate_prefix("").unwrap(), "");
        assert_eq!(validate_prefix("tasks/").unwrap(), "tasks");
        assert_eq!(validate_prefix("tasks").unwrap(), "tasks");
        assert!(validate_prefix("../").is_err());
    }

    #[test]
    fn hashes_are_normalised_and_checked() {
        let h = "AB".repeat(32);
        assert_eq!(validate_sha256(&h).unwrap(), "ab".repeat(32));
        assert!(validate_sha256("abc").is_err());
        assert!(validate_sha256(&"g".repeat(64)).is_err());
    }

    #[test]
    fn temp_names_are_hidden_unique_and_recognised() {
        let p = Path::new("/d/versions/t.1.safetensors");
        let (a, b) = (temp_sibling(p), temp_sibling(p));
        assert_ne!(a, b);
        assert_eq!(a.parent(), p.parent());
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(is_temp_name(name), "{name}");
        assert!(!is_listable(&format!("versions/{name}")));
    }
}
