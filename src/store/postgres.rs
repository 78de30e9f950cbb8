//! PostgreSQL backend: pool and migrations.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use super::db::Db;
use super::Result;

/// The PostgreSQL schema, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Connects to a `postgres://` URL and migrates the database.
///
/// Migrations take sqlx's advisory lock, so several daemons starting together apply
/// them once. A short acquire timeout makes a dead database show up as an error
/// (`UNAVAILABLE` at the API) instead of hanging the caller.
pub(super) async fn connect(url: &str) -> Result<Db> {
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(Db::Postgres(pool))
}
