//! `file://` storage: the object under key `k` is the file `<root>/k`, so the default
//! (`file://<data dir>`) keeps the data dir layout exactly as it was.
//!
//! Create-only writes: the bytes go to a temp sibling (`.<name>.<unique>.tmp`), which is
//! synced and then hard-linked to the final name. `link(2)` fails if the name exists, so an
//! existing file is never replaced and readers never see a partial file.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::error::{Result, StorageError};
use crate::hash::{copy_hashing, hash_file, sync_dir};
use crate::key::{is_listable, is_temp_name, temp_sibling};
use crate::{ObjectMeta, PutOutcome};

/// A folder of objects.
#[derive(Debug)]
pub(crate) struct LocalBackend {
    root: PathBuf,
    /// sha256 of files already hashed, by path, valid while size and mtime are unchanged.
    hashes: Mutex<HashMap<PathBuf, (u64, SystemTime, String)>>,
}

impl LocalBackend {
    pub fn open(root: &Path) -> Result<LocalBackend> {
        std::fs::create_dir_all(root).map_err(|e| StorageError::io(root, e))?;
        Ok(LocalBackend {
            root: root.to_path_buf(),
            hashes: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// The sha256 of the file at `path`, from the memo when size and mtime are unchanged.
    fn sha_of(&self, path: &Path) -> std::io::Result<String> {
        let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| Ok((m.len(), m.modified()?)));
        let (size, mtime) = stamp(path)?;
        if let Some((s, t, h)) = self.hashes.lock().unwrap().get(path) {
            if (*s, *t) == (size, mtime) {
                return Ok(h.clone());
            }
        }
        let (h, _) = hash_file(path)?;
        // Remember it only if the file did not change while it was read.
        if stamp(path)? == (size, mtime) {
            self.hashes
                .lock()
                .unwrap()
                .insert(path.to_path_buf(), (size, mtime, h.clone()));
        }
        Ok(h)
    }

    /// See [`crate::Storage::put_file_create_only`]. `consume`: `src` is a temp file of ours
    /// beside the final path, linked into place instead of copied.
    pub fn put(&self, key: &str, src: &Path, sha: &str, consume: bool) -> Result<PutOutcome> {
        let dst = self.path(key);
        let dir = dst.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
        if dst.exists() {
            return self.compare_existing(key, &dst, sha);
        }
        let tmp = if consume {
            let (got, _) = hash_file(src).map_err(|e| StorageError::io(src, e))?;
            if got != sha {
                return Err(claimed_mismatch(key, src, sha, &got));
            }
            let f = std::fs::File::open(src).map_err(|e| StorageError::io(src, e))?;
            f.sync_all().map_err(|e| StorageError::io(src, e))?;
            src.to_path_buf()
        } else {
            let tmp = temp_sibling(&dst);
            match copy_hashing(src, &tmp, None) {
                Ok((got, _)) if got == sha => tmp,
                Ok((got, _)) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(claimed_mismatch(key, src, sha, &got));
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            }
        };
        let linked = std::fs::hard_link(&tmp, &dst);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_dir(&dir);
                Ok(PutOutcome::Created)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                self.compare_existing(key, &dst, sha)
            }
            Err(e) => Err(StorageError::io(&dst, e)),
        }
    }

    fn compare_existing(&self, key: &str, dst: &Path, sha: &str) -> Result<PutOutcome> {
        let existing = self.sha_of(dst).map_err(|e| StorageError::io(dst, e))?;
        if existing == sha {
            Ok(PutOutcome::AlreadyPresent)
        } else {
            Err(StorageError::Conflict {
                key: key.to_string(),
                existing,
                attempted: sha.to_string(),
            })
        }
    }

    /// Verifies the file of `key` and returns its path.
    pub fn fetch(&self, key: &str, sha: &str) -> Result<PathBuf> {
        let path = self.path(key);
        match self.sha_of(&path) {
            Ok(h) if h == sha => Ok(path),
            Ok(h) => Err(StorageError::Corrupt {
                key: key.to_string(),
                expected: sha.to_string(),
                found: h,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::NotFound {
                key: key.to_string(),
            }),
            Err(e) => Err(StorageError::io(&path, e)),
        }
    }

    pub fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = self.path(key);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: m.len(),
                last_modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io(&path, e)),
        }
    }

    /// Every file under `prefix` (a validated prefix without a trailing slash), skipping temp
    /// files and other names that are not keys.
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let start = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.path(prefix)
        };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(StorageError::io(&dir, e)),
            };
            for entry in rd.flatten() {
                let p = entry.path();
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(p);
                    continue;
                }
                let Some(key) = p.strip_prefix(&self.root).ok().and_then(|r| r.to_str()) else {
                    continue;
                };
                if ft.is_file() && is_listable(key) {
                    if let Some(meta) = self.head(key)? {
                        out.push(meta);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Moves `key` to `to` without replacing anything there (link, then unlink).
    pub fn rename_no_replace(&self, key: &str, to: &str) -> Result<bool> {
        let (from, dst) = (self.path(key), self.path(to));
        if let Some(dir) = dst.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        }
        match std::fs::hard_link(&from, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !from.exists() => {
                return Err(StorageError::NotFound {
                    key: key.to_string(),
                })
            }
            Err(e) => return Err(StorageError::io(&dst, e)),
        }
        std::fs::remove_file(&from).map_err(|e| StorageError::io(&from, e))?;
        if let Some(dir) = dst.parent() {
            sync_dir(dir);
        }
        if let Some(dir) = from.parent() {
            sync_dir(dir);
        }
        Ok(true)
    }

    /// Whether `path` is a temp file of ours beside where `key` lives.
    pub fn is_own_temp(&self, key: &str, path: &Path) -> bool {
        let dst = self.path(key);
        path.parent() == dst.parent()
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_temp_name)
    }

    pub fn probe(&self) -> Result<()> {
        match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StorageError::io(
                &self.root,
                std::io::Error::other("not a directory"),
            )),
            Err(e) => Err(StorageError::io(&self.root, e)),
        }
    }
}

/// The file handed to a create-only write must hash to what the caller claims.
pub(crate) fn claimed_mismatch(key: &str, src: &Path, claimed: &str, got: &str) -> StorageError {
    StorageError::Invalid(format!(
        "put {key}: {} has sha256 {got}, not the {claimed} it was written under",
        src.display()
    ))
}
