//! A snapshot's `manifest.json`, and copying a file while hashing it.
//!
//! A snapshot directory holds the database copy (`ctp.sqlite`), every file its rows reference
//! at the same data-dir-relative path (`tasks/…`, `versions/…`, `resume/…`), and
//! `manifest.json`, written last: a directory without it is an unfinished backup.
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name in a snapshot directory.
pub const MANIFEST: &str = "manifest.json";
/// The database copy's file name in a snapshot directory (and in a restored data dir: the
/// default SQLite location).
pub const DATABASE: &str = "ctp.sqlite";
/// The manifest format this ctpd writes and reads.
pub const FORMAT: u32 = 1;

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The version of the ctpd that wrote the snapshot.
    pub ctpd_version: String,
    /// The store backend the database copy is for ("sqlite").
    pub backend: String,
    /// The database's schema version (its highest applied migration).
    pub schema_version: i64,
    /// When the database copy was taken (RFC 3339, UTC).
    pub created_at: String,
    /// The database copy.
    pub database: FileEntry,
    /// Every file the database's rows reference, sorted by path.
    pub files: Vec<FileEntry>,
}

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the snapshot directory (and to the data dir it restores into).
    pub path: String,
    /// Hex sha256 of the content.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

impl Manifest {
    /// Bytes of the database and every file.
    pub fn total_bytes(&self) -> u64 {
        self.database.bytes + self.files.iter().map(|f| f.bytes).sum::<u64>()
    }
}

/// True for a relative path of plain components only (no `..`, no root): safe to join
/// under a snapshot or data dir.
pub fn is_plain_relative(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Which side of a copy failed.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the source.
    Read(std::io::Error),
    /// Creating or writing the destination (it exists, the disk is full, …).
    Write(std::io::Error),
}

/// Copies everything `src` reads into the new file `dest` (parents created; an existing
/// file is an error), flushed to disk; returns the content's hex sha256 and length.
pub fn copy_hashed(src: &mut impl Read, dest: &Path) -> Result<(String, u64), CopyError> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(CopyError::Write)?;
    }
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(CopyError::Write)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(CopyError::Read)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
        bytes += n as u64;
    }
    out.sync_all().map_err(CopyError::Write)?;
    Ok((hex::encode(hasher.finalize()), bytes))
}

/// The hex sha256 and length of the file at `path`.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let bytes = std::io::copy(&mut f, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), bytes))
}

/// Flushes a directory's entries (new names) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// True if `dir` does not exist or is an empty directory; an error if it is a file.
pub fn is_absent_or_empty(dir: &Path) -> std::io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// Removes everything inside `dir`, keeping `dir` (undoing an unfinished backup or restore
/// into a directory that was empty before).
pub fn clear_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
                _ => std::fs::remove_file(&p),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_hash_the_content_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a/b/c.bin");
        let (sha, n) = copy_hashed(&mut &b"abc"[..], &dest).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash_file(&dest).unwrap(), (sha, 3));
        assert!(copy_hashed(&mut &b"x"[..], &dest).is_err(), "create_new");
    }

    #[test]
    fn only_plain_relative_paths_are_accepted() {
        assert!(is_plain_relative("versions/t1.safetensors"));
        assert!(is_plain_relative("versions/m/t1.safetensors"));
        for bad in ["", "/etc/passwd", "../x", "tasks/../../x", "./x/../y"] {
            assert!(!is_plain_relative(bad), "{bad}");
        }
    }
}
