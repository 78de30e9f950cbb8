//! The schema version of a database, and the refusal to run on one newer than this binary.
//!
//! Migrations are forward-only: sqlx records each applied one in `_sqlx_migrations`, and
//! the schema version is the highest version recorded there. A database whose schema
//! version is above every migration this binary embeds was upgraded by a newer ctpd; this
//! one must not touch it (an older binary would write rows in an older shape, and its
//! orphan sweep would not know newer files). [`refuse_newer`] runs before the migrations
//! and stops the daemon with one line saying so.
use sqlx::migrate::Migrator;

use super::db::{args, Db, Exec};
use super::{Backend, Result, Store, StoreError};

/// The newest migration `migrator` embeds (0 if none).
pub(super) fn known_version(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The highest migration version recorded in the database, `None` for a database sqlx
/// never migrated (a new, empty file). Failed (dirty) rows count: they too were written by
/// whichever binary knew that migration.
pub(super) async fn applied_version(ex: &mut Exec<'_>) -> Result<Option<i64>> {
    let exists_sql = match ex.backend() {
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_name = '_sqlx_migrations' AND table_schema = current_schema()"
        }
    };
    let (tables,): (i64,) = ex.fetch_one(exists_sql, args![]).await?;
    if tables == 0 {
        return Ok(None);
    }
    let (max,): (Option<i64>,) = ex
        .fetch_one("SELECT MAX(version) FROM _sqlx_migrations", args![])
        .await?;
    Ok(max)
}

/// Fails with [`StoreError::SchemaTooNew`] when the database has a migration applied that
/// `migrator` does not know. Call before running the migrations.
pub(super) async fn refuse_newer(db: &Db, migrator: &Migrator) -> Result<()> {
    let mut conn = db.acquire().await?;
    let known = known_version(migrator);
    match applied_version(&mut conn.exec()).await? {
        Some(found) if found > known => Err(StoreError::SchemaTooNew { found, known }),
        _ => Ok(()),
    }
}

impl Store {
    /// The database's schema version: the highest migration applied (0 for none).
    pub async fn schema_version(&self) -> Result<i64> {
        let mut conn = self.db.acquire().await?;
        Ok(applied_version(&mut conn.exec()).await?.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database that a newer ctpd migrated is refused before anything runs, with the
    /// one-line message the daemon prints; a current one opens.
    #[tokio::test]
    async fn a_database_from_a_newer_ctpd_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("ctp.sqlite").display()
        );
        let store = Store::connect(&url).await.unwrap();
        let known = Store::known_schema_version(Backend::Sqlite);
        assert_eq!(store.schema_version().await.unwrap(), known);
        let future = known + 1;
        {
            let mut tx = store.db.begin_write().await.unwrap();
            tx.exec()
                .execute(
                    "INSERT INTO _sqlx_migrations \
                     (version, description, installed_on, success, checksum, execution_time) \
                     VALUES ($1, 'from a newer ctpd', CURRENT_TIMESTAMP, TRUE, x'00', 0)",
                    args![future],
                )
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        store.close().await;
        let err = Store::connect(&url).await.unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "database schema version {future} is newer than this ctpd (which knows up to \
                 {known}); use a newer ctpd"
            )
        );
    }
}
