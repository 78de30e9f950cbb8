//! The bounded local cache of objects fetched from S3, for libtorch, which needs a path.
//!
//! Files are named by their sha256 (`<cache dir>/objects/<sha256>`), so two keys with the same
//! bytes share one file. A fill streams the object to a temp file while hashing it and renames
//! it into place only when size and sha256 match; a bad download is deleted and fetched once
//! more, then reported as [`StorageError::Corrupt`]. Beyond `cache_max_bytes` the least
//! recently used files are deleted, never the one just fetched nor one being fetched.
//!
//! The cache survives a restart: `open` scans the folder (recency from file mtimes, which each
//! hit refreshes), deletes leftover temp files, and re-hashes each file once, on its first use,
//! before trusting it. One process per cache dir.
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use crate::error::{Result, StorageError};
use crate::hash::hash_file_async;
use crate::key::unique;

/// How full the cache is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheUsage {
    /// Bytes of cached files.
    pub bytes: u64,
    /// Number of cached files.
    pub files: usize,
    /// The configured limit.
    pub max_bytes: u64,
}

#[derive(Debug)]
struct Entry {
    size: u64,
    tick: u64,
    verified: bool,
}

/// Which files are cached, their sizes and recency; pure bookkeeping (no I/O).
#[derive(Debug)]
pub(crate) struct CacheIndex {
    max: u64,
    total: u64,
    clock: u64,
    entries: HashMap<String, Entry>,
}

impl CacheIndex {
    pub fn new(max: u64) -> CacheIndex {
        CacheIndex {
            max,
            total: 0,
            clock: 0,
            entries: HashMap::new(),
        }
    }

    /// Marks `sha` used now; returns whether it was verified, or `None` if absent.
    pub fn touch(&mut self, sha: &str) -> Option<bool> {
        self.clock += 1;
        let e = self.entries.get_mut(sha)?;
        e.tick = self.clock;
        Some(e.verified)
    }

    pub fn set_verified(&mut self, sha: &str) {
        if let Some(e) = self.entries.get_mut(sha) {
            e.verified = true;
        }
    }

    /// Adds (or refreshes) `sha` as the most recently used entry.
    pub fn insert(&mut self, sha: &str, size: u64, verified: bool) {
        self.remove(sha);
        self.clock += 1;
        self.total += size;
        self.entries.insert(
            sha.to_string(),
            Entry {
                size,
                tick: self.clock,
                verified,
            },
        );
    }

    pub fn remove(&mut self, sha: &str) {
        if let Some(e) = self.entries.remove(sha) {
            self.total -= e.size;
        }
    }

    /// Removes least recently used entries until the total fits the limit, skipping `keep`
    /// and every entry `busy` names; returns the removed ones (their files are the caller's
    /// to delete).
    pub fn evict(&mut self, keep: Option<&str>, busy: impl Fn(&str) -> bool) -> Vec<String> {
        let mut gone = Vec::new();
        while self.total > self.max {
            let victim = self
                .entries
                .iter()
                .filter(|(k, _)| Some(k.as_str()) != keep && !busy(k))
                .min_by_key(|(_, e)| e.tick)
                .map(|(k, _)| k.clone());
            let Some(v) = victim else { break };
            self.remove(&v);
            gone.push(v);
        }
        gone
    }

    pub fn usage(&self) -> CacheUsage {
        CacheUsage {
            bytes: self.total,
            files: self.entries.len(),
            max_bytes: self.max,
        }
    }
}

/// What one download into a temp file produced: its sha256, its size, and the size the
/// store announced.
pub(crate) struct Filled {
    pub sha256: String,
    pub size: u64,
    pub expected_size: u64,
}

/// The cache folder and its index.
#[derive(Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
    index: Mutex<CacheIndex>,
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl Cache {
    /// Opens (creates) `<cache_dir>/objects`, indexing the files a previous run left.
    pub fn open(cache_dir: &Path, max_bytes: u64) -> Result<Cache> {
        let dir = cache_dir.join("objects");
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir)
            .map_err(|e| StorageError::io(&dir, e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata().ok().filter(|m| m.is_file());
            let is_sha = name.len() == 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            match meta {
                Some(m) if is_sha => found.push((
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    name,
                    m.len(),
                )),
                // Temp files of an interrupted fill, and anything else that is not ours.
                Some(_) => {
                    let _ = std::fs::remove_file(entry.path());
                }
                None => {}
            }
        }
        found.sort();
        let mut index = CacheIndex::new(max_bytes);
        for (_, sha, size) in &found {
            index.insert(sha, *size, false);
        }
        // Staging files of a previous run were never consumed: no put is in flight at open.
        let staging = dir.with_file_name("staging");
        for entry in std::fs::read_dir(&staging).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if crate::key::is_temp_name(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let cache = Cache {
            dir,
            index: Mutex::new(index),
            locks: Mutex::new(HashMap::new()),
        };
        cache.evict(None);
        Ok(cache)
    }

    /// `<cache_dir>/staging`: where [`crate::Storage::staging_path`] puts files bound for S3.
    pub fn staging_dir(&self) -> PathBuf {
        self.dir.with_file_name("staging")
    }

    pub fn path(&self, sha: &str) -> PathBuf {
        self.dir.join(sha)
    }

    pub fn usage(&self) -> CacheUsage {
        self.index.lock().unwrap().usage()
    }

    /// Takes `file`, whose sha256 the caller computed as it wrote it, into the cache as the
    /// copy of its object: a rename (same file system), never a copy. On an error the file
    /// is left where it was.
    pub fn adopt(&self, file: &Path, sha: &str) -> Result<PathBuf> {
        let size = std::fs::metadata(file)
            .map_err(|e| StorageError::io(file, e))?
            .len();
        let dst = self.path(sha);
        std::fs::rename(file, &dst).map_err(|e| StorageError::io(&dst, e))?;
        self.index.lock().unwrap().insert(sha, size, true);
        self.evict(Some(sha));
        Ok(dst)
    }

    /// The per-hash lock: one fill at a time per sha256, and no eviction while it is held.
    fn lock_for(&self, sha: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap();
        locks.retain(|_, w| w.strong_count() > 0);
        if let Some(l) = locks.get(sha).and_then(Weak::upgrade) {
            return l;
        }
        let l = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(sha.to_string(), Arc::downgrade(&l));
        l
    }

    fn evict(&self, keep: Option<&str>) {
        let gone = {
            let locks = self.locks.lock().unwrap();
            let busy = |sha: &str| locks.get(sha).is_some_and(|w| w.strong_count() > 0);
            self.index.lock().unwrap().evict(keep, busy)
        };
        for sha in gone {
            tracing::debug!(sha256 = %sha, "evicting from the object cache");
            let _ = std::fs::remove_file(self.path(&sha));
        }
    }

    /// The cached file of `sha`, verified, or `None` (a bad or missing file is forgotten).
    async fn hit(&self, sha: &str) -> Result<Option<PathBuf>> {
        let path = self.path(sha);
        let Some(verified) = self.index.lock().unwrap().touch(sha) else {
            return Ok(None);
        };
        if !verified {
            match hash_file_async(&path).await {
                Ok((h, _)) if h == sha => self.index.lock().unwrap().set_verified(sha),
                other => {
                    tracing::warn!(path = %path.display(), found = ?other.map(|(h, _)| h).ok(), "cached file does not match its sha256; refetching");
                    self.index.lock().unwrap().remove(sha);
                    let _ = std::fs::remove_file(&path);
                    return Ok(None);
                }
            }
        } else if !path.is_file() {
            self.index.lock().unwrap().remove(sha);
            return Ok(None);
        }
        // Recency survives a restart through the mtime.
        if let Ok(f) = std::fs::File::open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Ok(Some(path))
    }

    /// Returns the cached file of `sha`, filling it with `fill(temp path)` if needed: a fill
    /// whose size or sha256 is wrong is deleted and tried once more, as is one that failed
    /// with [`StorageError::Unavailable`] (a cut connection). Concurrent calls for one hash
    /// wait for a single fill.
    pub async fn get_or_fill<F, Fut>(&self, key: &str, sha: &str, fill: F) -> Result<PathBuf>
    where
        F: Fn(PathBuf) -> Fut,
        Fut: Future<Output = Result<Filled>>,
    {
        let lock = self.lock_for(sha);
        let _held = lock.lock().await;
        if let Some(p) = self.hit(sha).await? {
            return Ok(p);
        }
        let mut last = None;
        for attempt in 1..=2 {
            let tmp = self.dir.join(format!(".{sha}.{}.tmp", unique()));
            let res = fill(tmp.clone()).await;
            let bad = match res {
                Ok(f) if f.sha256 == sha && f.size == f.expected_size => {
                    let dst = self.path(sha);
                    std::fs::rename(&tmp, &dst).map_err(|e| StorageError::io(&dst, e))?;
                    self.index.lock().unwrap().insert(sha, f.size, true);
                    self.evict(Some(sha));
                    return Ok(dst);
                }
                Ok(f) => StorageError::Corrupt {
                    key: key.to_string(),
                    expected: sha.to_string(),
                    found: if f.size != f.expected_size {
                        format!(
                            "a truncated download ({} of {} bytes)",
                            f.size, f.expected_size
                        )
                    } else {
                        f.sha256
                    },
                },
                Err(e) if e.is_unavailable() => e,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(key, attempt, error.message = %bad, "bad download deleted");
            last = Some(bad);
        }
        Err(last.expect("two attempts"))
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
