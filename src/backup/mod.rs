//! Backups of a running daemon (`Backup` RPC, `ctpctl backup`) and their offline restore
//! (`ctpd restore`, [`restore`]).
//!
//! A backup is a directory **on the daemon's host**, named by the request: an absolute path
//! that does not exist yet or is an empty directory. Into it go
//! - `ctp.sqlite`: SQLite's consistent online copy of the database (`VACUUM INTO`, one read
//!   transaction; in WAL mode the worker keeps writing meanwhile, so training is not paused);
//! - every file the copy's rows reference (task bundles, version checkpoints, recorded resume
//!   checkpoints) at its data-dir-relative path, copied (not linked: a backup shares no
//!   blocks with the data dir), each hashed while copied and checked against the sha256 its
//!   row records (version and resume checkpoints);
//! - `manifest.json` (see [`manifest::Manifest`]), written last.
//!
//! Version checkpoints and task bundles are never rewritten once committed. A recorded resume
//! checkpoint is never rewritten either, but a newer one replaces (removes) it; so right after
//! the database copy every file is opened, and the open handles keep the content readable
//! whatever the worker does next. If a resume checkpoint was replaced in the moment between
//! the copy and the open, the database is copied again.
//!
//! Postgres is refused (`FAILED_PRECONDITION`): back it up with its own tools (pg_dump) and
//! copy the files (docs/operations.md). So is object storage other than the data dir itself
//! (`s3://`): its objects are copied with the storage's own tools.
use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::datadir::DataDir;
use crate::store::{snapshot_refs, Backend, SnapshotRefs, Store, StoreError};

pub mod manifest;
pub mod restore;

use manifest::{CopyError, FileEntry, Manifest, DATABASE, FORMAT, MANIFEST};

/// How often the database is copied again when a resume checkpoint it references was
/// replaced before it could be opened.
const ATTEMPTS: usize = 5;

/// Why a backup failed. Nothing of it is left in the target directory.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target path is unusable (relative, inside the data dir) (`INVALID_ARGUMENT`).
    #[error("{0}")]
    BadTarget(String),
    /// The target exists and is not an empty directory (`FAILED_PRECONDITION`).
    #[error("backup target {0} exists and is not an empty directory; name a new or empty one")]
    TargetNotEmpty(String),
    /// The daemon runs on Postgres (`FAILED_PRECONDITION`).
    #[error(
        "this daemon's database is Postgres; ctpd backs up SQLite only. Back up Postgres with \
         pg_dump (or pg_basebackup), then copy the data dir's tasks/, versions/ and resume/ \
         folders (with object storage: the bucket's objects); see docs/operations.md"
    )]
    Postgres,
    /// Task bundles and checkpoints live in object storage (`FAILED_PRECONDITION`).
    #[error(
        "this daemon keeps task bundles and checkpoints in {0}, which ctpd's backup does not \
         copy: copy the database with `sqlite3 ctp.sqlite \"VACUUM INTO '/backup/ctp.sqlite'\"`, \
         then the bucket's objects with your storage's tools; see docs/operations.md"
    )]
    ObjectStorage(String),
    /// A file the rows reference is not in the data dir (`FAILED_PRECONDITION`).
    #[error("{path} is referenced by the database but missing from the data dir {root}")]
    Missing { path: String, root: String },
    /// A referenced path lies outside the data dir (`FAILED_PRECONDITION`).
    #[error("{0} is referenced by the database but lies outside the data dir; not backed up")]
    Outside(String),
    /// A checkpoint does not match its recorded sha256 (`FAILED_PRECONDITION`).
    #[error("{path}: sha256 is {actual}, but the database records {expected} (the file is corrupt or was replaced)")]
    Corrupt {
        path: String,
        expected: String,
        actual: String,
    },
    /// Resume checkpoints kept being replaced (`UNAVAILABLE`: retry).
    #[error(
        "resume checkpoints were replaced during each of {0} database copies; retry the backup"
    )]
    Busy(usize),
    /// Writing the snapshot failed (`RESOURCE_EXHAUSTED` when the disk is full, else
    /// `FAILED_PRECONDITION`: the target is the caller's).
    #[error("writing the backup {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Reading the data dir failed (`INTERNAL`).
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The database (`api::status` maps it like every store error).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A finished backup.
#[derive(Debug, Clone)]
pub struct Backup {
    /// The snapshot directory.
    pub path: PathBuf,
    /// Its manifest (as written to `manifest.json`).
    pub manifest: Manifest,
    /// When the database copy was taken.
    pub created_at: DateTime<Utc>,
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Write {
        path: path.display().to_string(),
        source,
    }
}

/// Writes a consistent snapshot of `store` and the files of `data` its rows reference into
/// the new or empty directory `target` (absolute, outside the data dir). `remote` names the
/// object storage when files live there instead of the data dir (refused).
///
/// # Errors
/// See [`BackupError`]; on any error the target is left empty.
pub async fn backup(
    store: &Store,
    data: &DataDir,
    remote: Option<&str>,
    target: &Path,
) -> Result<Backup, BackupError> {
    if store.backend() == Backend::Postgres {
        return Err(BackupError::Postgres);
    }
    if let Some(remote) = remote {
        return Err(BackupError::ObjectStorage(remote.to_string()));
    }
    let target = prepare_target(data, target)?;
    let done = write_snapshot(store, data, &target).await;
    if done.is_err() {
        manifest::clear_dir(&target);
    }
    done
}

/// Checks the target and creates it; returns its canonical path.
fn prepare_target(data: &DataDir, target: &Path) -> Result<PathBuf, BackupError> {
    let shown = target.display().to_string();
    if !target.is_absolute() {
        return Err(BackupError::BadTarget(format!(
            "backup target {shown:?} is not an absolute path (it names a directory on the \
             daemon's host)"
        )));
    }
    if resolved(target).starts_with(data.root()) {
        return Err(BackupError::BadTarget(format!(
            "backup target {shown} is inside the data dir {}; choose a directory outside it",
            data.root().display()
        )));
    }
    match manifest::is_absent_or_empty(target) {
        Ok(true) => {}
        Ok(false) => return Err(BackupError::TargetNotEmpty(shown)),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(BackupError::TargetNotEmpty(shown))
        }
        Err(e) => return Err(write_err(target)(e)),
    }
    std::fs::create_dir_all(target).map_err(write_err(target))?;
    std::fs::canonicalize(target).map_err(write_err(target))
}

/// `path` with its longest existing ancestor canonicalized (symlinks and `..` resolved), the
/// rest appended as written.
fn resolved(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The database copy and an open handle on every file it references.
struct Copied {
    refs: SnapshotRefs,
    open: Vec<(String, File)>,
    at: DateTime<Utc>,
}

async fn write_snapshot(
    store: &Store,
    data: &DataDir,
    target: &Path,
) -> Result<Backup, BackupError> {
    let db_file = target.join(DATABASE);
    let copied = copy_database(store, data, &db_file).await?;
    let Copied { refs, open, at } = copied;
    let (data, target_owned) = (data.clone(), target.to_path_buf());
    let (files, refs) = tokio::task::spawn_blocking(move || {
        copy_files(&data, &target_owned, open, &refs).map(|files| (files, refs))
    })
    .await
    .map_err(|e| BackupError::Read {
        path: "the data dir".into(),
        source: std::io::Error::other(e.to_string()),
    })??;
    let (sha256, bytes) = manifest::hash_file(&db_file).map_err(write_err(&db_file))?;
    let manifest = Manifest {
        format: FORMAT,
        ctpd_version: env!("CARGO_PKG_VERSION").into(),
        backend: "sqlite".into(),
        schema_version: refs.schema_version,
        created_at: at.to_rfc3339_opts(SecondsFormat::Micros, true),
        database: FileEntry {
            path: DATABASE.into(),
            sha256,
            bytes,
        },
        files,
    };
    write_manifest(target, &manifest)?;
    Ok(Backup {
        path: target.to_path_buf(),
        manifest,
        created_at: at,
    })
}

/// Copies the database into `db_file` and opens every file the copy references, copying
/// again if a resume checkpoint was replaced in between.
async fn copy_database(
    store: &Store,
    data: &DataDir,
    db_file: &Path,
) -> Result<Copied, BackupError> {
    for _ in 0..ATTEMPTS {
        let _ = std::fs::remove_file(db_file);
        let at = Utc::now();
        store.vacuum_into(db_file).await?;
        let refs = snapshot_refs(db_file, |stored| relative(data, stored)).await?;
        match open_all(data, &refs)? {
            Some(open) => return Ok(Copied { refs, open, at }),
            None => tracing::info!(
                "A resume checkpoint was replaced during the backup; copying the database again"
            ),
        }
    }
    Err(BackupError::Busy(ATTEMPTS))
}

/// The data-dir-relative spelling of an absolute stored path (rows of older releases).
fn relative(data: &DataDir, stored: &str) -> Option<String> {
    if Path::new(stored).is_relative() {
        return None;
    }
    data.resolve(stored)
        .strip_prefix(data.root())
        .ok()
        .map(|rel| rel.to_string_lossy().into_owned())
}

/// Opens every referenced file; `None` if a resume checkpoint is gone (replaced since the
/// database copy).
fn open_all(
    data: &DataDir,
    refs: &SnapshotRefs,
) -> Result<Option<Vec<(String, File)>>, BackupError> {
    let mut open = Vec::with_capacity(refs.files.len());
    for path in refs.files.keys() {
        if !manifest::is_plain_relative(path) {
            return Err(BackupError::Outside(path.clone()));
        }
        let file = data.resolve(path);
        match File::open(&file) {
            Ok(f) => open.push((path.clone(), f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.starts_with("resume/") => {
                return Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackupError::Missing {
                    path: path.clone(),
                    root: data.root().display().to_string(),
                })
            }
            Err(source) => {
                return Err(BackupError::Read {
                    path: file.display().to_string(),
                    source,
                })
            }
        }
    }
    Ok(Some(open))
}

/// Copies each open file to its path under `target`, checking recorded sha256s.
fn copy_files(
    data: &DataDir,
    target: &Path,
    open: Vec<(String, File)>,
    refs: &SnapshotRefs,
) -> Result<Vec<FileEntry>, BackupError> {
    let mut entries = Vec::with_capacity(open.len());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, mut file) in open {
        let dest = target.join(&path);
        let (sha256, bytes) = manifest::copy_hashed(&mut file, &dest).map_err(|e| match e {
            CopyError::Write(e) => write_err(&dest)(e),
            CopyError::Read(source) => BackupError::Read {
                path: data.resolve(&path).display().to_string(),
                source,
            },
        })?;
        if let Some(Some(expected)) = refs.files.get(&path) {
            if *expected != sha256 {
                return Err(BackupError::Corrupt {
                    path: data.resolve(&path).display().to_string(),
                    expected: expected.clone(),
                    actual: sha256,
                });
            }
        }
        dirs.extend(dest.parent().map(Path::to_path_buf));
        entries.push(FileEntry {
            path,
            sha256,
            bytes,
        });
    }
    for dir in dirs {
        manifest::sync_dir(&dir).map_err(write_err(&dir))?;
    }
    Ok(entries)
}

/// Writes `manifest.json` atomically (temp file, rename, directory sync): the last step.
fn write_manifest(target: &Path, m: &Manifest) -> Result<(), BackupError> {
    let text = serde_json::to_string_pretty(m).expect("manifests serialize");
    let tmp = target.join(".manifest.json.tmp");
    let path = target.join(MANIFEST);
    manifest::copy_hashed(&mut text.as_bytes(), &tmp).map_err(|e| match e {
        CopyError::Read(e) | CopyError::Write(e) => write_err(&tmp)(e),
    })?;
    std::fs::rename(&tmp, &path).map_err(write_err(&path))?;
    manifest::sync_dir(target).map_err(write_err(target))
}

#[cfg(test)]
mod tests;
