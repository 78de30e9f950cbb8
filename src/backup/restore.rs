//! `ctpd restore --from SNAPSHOT --data-dir NEW`: makes a new data dir from a backup, offline.
//!
//! The target must not exist or be an empty directory. Every file, the database included, is
//! copied and hashed in one pass and compared with the manifest's sha256 and size; on the first
//! difference the target is emptied again and nothing is restored. The restored database sits
//! at the default SQLite location (`<data dir>/ctp.sqlite`); the next `ctpd --data-dir NEW`
//! opens it, and a task that was running when the backup was taken resumes from its recorded
//! checkpoint (or from the start, if it had none).
use std::fs::File;
use std::path::{Path, PathBuf};

use super::manifest::{self, CopyError, FileEntry, Manifest, DATABASE, FORMAT, MANIFEST};
use crate::store::{Backend, Store};

/// Why a restore failed. The target is left as empty as it was found.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// No readable `manifest.json` (an unfinished backup, or not a backup at all).
    #[error("{snapshot} is not a finished ctpd backup: {why}")]
    NotABackup { snapshot: String, why: String },
    /// Written by a ctpd with a manifest format this one does not read.
    #[error(
        "{snapshot} has manifest format {found}; this ctpd reads format {FORMAT}; use a newer ctpd"
    )]
    Format { snapshot: String, found: u32 },
    /// The backup's database is newer than this binary.
    #[error("the backup's database schema version {found} is newer than this ctpd (which knows up to {known}); use a newer ctpd")]
    SchemaTooNew { found: i64, known: i64 },
    /// The target exists and is not an empty directory.
    #[error(
        "restore target {0} exists and is not an empty directory; restore into a new or empty one"
    )]
    TargetNotEmpty(String),
    /// A file of the backup differs from its manifest entry.
    #[error("{path}: sha256 {actual} ({actual_bytes} bytes), but the manifest records {expected} ({expected_bytes} bytes); the backup is damaged, nothing was restored")]
    Mismatch {
        path: String,
        expected: String,
        expected_bytes: u64,
        actual: String,
        actual_bytes: u64,
    },
    /// Reading a file of the backup failed (for instance, it is missing).
    #[error("reading {path}: {source}; nothing was restored")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Writing the target failed.
    #[error("writing {path}: {source}; nothing was restored")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A finished restore.
#[derive(Debug)]
pub struct Restored {
    /// The new data dir.
    pub data_dir: PathBuf,
    /// The backup's manifest.
    pub manifest: Manifest,
}

impl Restored {
    /// The line `ctpd restore` prints.
    pub fn summary(&self) -> String {
        let m = &self.manifest;
        format!(
            "restored {} files and the database ({} bytes in all, schema version {}, backup of \
             {} by ctpd {}) into {}; every sha256 matched the manifest. Start it with \
             `ctpd --data-dir {}`",
            m.files.len(),
            m.total_bytes(),
            m.schema_version,
            m.created_at,
            m.ctpd_version,
            self.data_dir.display(),
            self.data_dir.display()
        )
    }
}

/// Reads and checks the manifest of the backup in `snapshot`.
///
/// # Errors
/// `NotABackup`, `Format`, `SchemaTooNew`.
pub fn read_manifest(snapshot: &Path) -> Result<Manifest, RestoreError> {
    let not = |why: String| RestoreError::NotABackup {
        snapshot: snapshot.display().to_string(),
        why,
    };
    let path = snapshot.join(MANIFEST);
    let text =
        std::fs::read_to_string(&path).map_err(|e| not(format!("{}: {e}", path.display())))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| not(format!("{}: {e}", path.display())))?;
    let found = value.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
    if found != u64::from(FORMAT) {
        return Err(RestoreError::Format {
            snapshot: snapshot.display().to_string(),
            found: u32::try_from(found).unwrap_or(u32::MAX),
        });
    }
    let m: Manifest =
        serde_json::from_value(value).map_err(|e| not(format!("{}: {e}", path.display())))?;
    if m.backend != "sqlite" {
        return Err(not(format!(
            "its backend is {:?}, not \"sqlite\"",
            m.backend
        )));
    }
    let known = Store::known_schema_version(Backend::Sqlite);
    if m.schema_version > known {
        return Err(RestoreError::SchemaTooNew {
            found: m.schema_version,
            known,
        });
    }
    let bad = std::iter::once(&m.database)
        .chain(&m.files)
        .find(|f| !manifest::is_plain_relative(&f.path));
    if let Some(f) = bad {
        return Err(not(format!("it lists the unsafe path {:?}", f.path)));
    }
    Ok(m)
}

/// Restores the backup in `snapshot` into the new or empty directory `data_dir`.
///
/// # Errors
/// See [`RestoreError`]; on any error `data_dir` is left empty.
pub fn restore(snapshot: &Path, data_dir: &Path) -> Result<Restored, RestoreError> {
    let m = read_manifest(snapshot)?;
    let write = |path: &Path| {
        let path = path.display().to_string();
        move |source| RestoreError::Write { path, source }
    };
    match manifest::is_absent_or_empty(data_dir) {
        Ok(true) => {}
        Ok(false) => return Err(RestoreError::TargetNotEmpty(data_dir.display().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(RestoreError::TargetNotEmpty(data_dir.display().to_string()))
        }
        Err(e) => return Err(write(data_dir)(e)),
    }
    std::fs::create_dir_all(data_dir).map_err(write(data_dir))?;
    let copied = copy_all(snapshot, data_dir, &m);
    if let Err(e) = copied {
        manifest::clear_dir(data_dir);
        return Err(e);
    }
    Ok(Restored {
        data_dir: data_dir.to_path_buf(),
        manifest: m,
    })
}

/// Copies and checks the database and every file, then flushes the directories.
fn copy_all(snapshot: &Path, data_dir: &Path, m: &Manifest) -> Result<(), RestoreError> {
    let mut dirs = std::collections::BTreeSet::from([data_dir.to_path_buf()]);
    for entry in std::iter::once(&m.database).chain(&m.files) {
        let to = if entry.path == m.database.path {
            data_dir.join(DATABASE)
        } else {
            data_dir.join(&entry.path)
        };
        copy_checked(&snapshot.join(&entry.path), &to, entry)?;
        dirs.extend(to.parent().map(Path::to_path_buf));
    }
    for dir in dirs {
        manifest::sync_dir(&dir).map_err(|source| RestoreError::Write {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

fn copy_checked(from: &Path, to: &Path, want: &FileEntry) -> Result<(), RestoreError> {
    let read = |source| RestoreError::Read {
        path: from.display().to_string(),
        source,
    };
    let mut src = File::open(from).map_err(read)?;
    let (sha256, bytes) = manifest::copy_hashed(&mut src, to).map_err(|e| match e {
        CopyError::Read(source) => read(source),
        CopyError::Write(source) => RestoreError::Write {
            path: to.display().to_string(),
            source,
        },
    })?;
    if sha256 != want.sha256 || bytes != want.bytes {
        return Err(RestoreError::Mismatch {
            path: from.display().to_string(),
            expected: want.sha256.clone(),
            expected_bytes: want.bytes,
            actual: sha256,
            actual_bytes: bytes,
        });
    }
    Ok(())
}
