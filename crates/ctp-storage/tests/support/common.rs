//! Helpers shared by the ctp-storage integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ctp_storage::{Storage, StorageConfig};
use sha2::{Digest, Sha256};

/// `n` pseudo-random bytes (xorshift), different for each seed.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Writes `data` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// A config for `s3://<bucket>/ctp` at `endpoint`, with test credentials from a file in
/// `dir` (moto accepts any), short timeouts so outages surface quickly.
pub fn s3_config(endpoint: &str, bucket: &str, dir: &Path) -> StorageConfig {
    let creds = write(
        dir,
        "s3-credentials.toml",
        b"access_key_id = \"testing\"\nsecret_access_key = \"testing\"\n",
    );
    StorageConfig {
        url: Some(format!("s3://{bucket}/ctp")),
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        credentials_file: Some(creds),
        connect_timeout_secs: 2,
        request_timeout_secs: 30,
        retry_timeout_secs: 2,
        ..StorageConfig::default()
    }
}

/// A fresh temp dir with `data/` and `cache/` inside.
pub struct Dirs {
    pub tmp: tempfile::TempDir,
}

impl Dirs {
    pub fn new() -> Dirs {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["data", "cache", "src"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        Dirs { tmp }
    }
    pub fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }
    pub fn cache(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }
    /// Where test files are written before they are stored.
    pub fn src(&self) -> PathBuf {
        self.tmp.path().join("src")
    }
    pub fn open(&self, cfg: &StorageConfig) -> Storage {
        Storage::open(cfg, &self.data(), &self.cache()).unwrap()
    }
}

/// Every file under `root`, relative, sorted.
pub fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}
