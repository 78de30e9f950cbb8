//! The database side of a backup: SQLite's consistent online copy (`VACUUM INTO`), and what
//! the rows of such a copy reference. The files themselves are `crate::backup`'s.
use std::collections::BTreeMap;
use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection};

use super::db::{args, Db, Exec};
use super::events::REFERENCED_FILES;
use super::{Result, Store, StoreError};

/// What the rows of a database copy reference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotRefs {
    /// The copy's schema version (its highest applied migration).
    pub schema_version: i64,
    /// Every referenced path as the rows store it, sorted, with the sha256 its row records
    /// (version checkpoints, and resume checkpoints recorded with one; `None` for task
    /// bundles, whose name is their sha256).
    pub files: BTreeMap<String, Option<String>>,
}

/// The columns that hold file paths.
const PATH_COLUMNS: [(&str, &str); 4] = [
    ("versions", "checkpoint_path"),
    ("tasks", "data_dir"),
    ("anchor_suites", "bundle_path"),
    ("jobs", "resume_checkpoint"),
];

impl Store {
    /// Writes a transactionally consistent copy of the whole database into the new file
    /// `dest` with SQLite's `VACUUM INTO`. The copy is made under one read transaction; in WAL
    /// mode writers (the training worker) are not blocked meanwhile.
    ///
    /// # Errors
    /// `FailedPrecondition` on Postgres (use its own tools); `Db` if SQLite cannot write
    /// `dest` (for instance, it exists).
    pub async fn vacuum_into(&self, dest: &Path) -> Result<()> {
        match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query("VACUUM INTO $1")
                    .bind(dest.to_string_lossy().into_owned())
                    .execute(pool)
                    .await?;
                Ok(())
            }
            Db::Postgres(_) => Err(StoreError::FailedPrecondition(
                "VACUUM INTO is SQLite's; back up a Postgres database with pg_dump".into(),
            )),
        }
    }
}

/// Opens the SQLite copy `file` (never a live database), rewrites each stored path for which
/// `relativize` gives another spelling (absolute rows of older releases become
/// data-dir-relative, so the copy works wherever it is restored), and lists what its rows
/// reference. The copy is left in rollback-journal mode: one self-contained file.
pub async fn snapshot_refs(
    file: &Path,
    relativize: impl Fn(&str) -> Option<String>,
) -> Result<SnapshotRefs> {
    let mut conn = SqliteConnectOptions::new()
        .filename(file)
        .journal_mode(SqliteJournalMode::Delete)
        .connect()
        .await?;
    let refs = read_refs(&mut Exec::Sqlite(&mut conn), relativize).await;
    conn.close().await?;
    refs
}

async fn read_refs(
    ex: &mut Exec<'_>,
    relativize: impl Fn(&str) -> Option<String>,
) -> Result<SnapshotRefs> {
    let stored: Vec<(String,)> = ex.fetch_all(REFERENCED_FILES, args![]).await?;
    for (path,) in &stored {
        let Some(rel) = relativize(path).filter(|rel| rel != path) else {
            continue;
        };
        for (table, column) in PATH_COLUMNS {
            let sql = format!("UPDATE {table} SET {column} = $1 WHERE {column} = $2");
            ex.execute(&sql, args![rel.clone(), path.clone()]).await?;
        }
    }
    let stored: Vec<(String,)> = ex.fetch_all(REFERENCED_FILES, args![]).await?;
    let mut files: BTreeMap<String, Option<String>> =
        stored.into_iter().map(|(p,)| (p, None)).collect();
    let shas: Vec<(String, String)> = ex
        .fetch_all("SELECT checkpoint_path, sha256 FROM versions", args![])
        .await?;
    let resume: Vec<(String, String)> = ex
        .fetch_all(
            "SELECT resume_checkpoint, resume_sha256 FROM jobs WHERE state <> 'done' \
             AND resume_checkpoint IS NOT NULL AND resume_sha256 IS NOT NULL",
            args![],
        )
        .await?;
    for (path, sha) in shas.into_iter().chain(resume) {
        files.insert(path, Some(sha));
    }
    let schema_version = super::schema::applied_version(ex).await?.unwrap_or(0);
    Ok(SnapshotRefs {
        schema_version,
        files,
    })
}
