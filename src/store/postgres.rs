//! PostgreSQL backend: pool and migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::db::Db;
use super::Result;

/// The PostgreSQL schema, embedded at compile time.
pub(super) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Server-side limit on a transaction left open without activity. ctpd's transactions
/// are short; one idle this long belongs to a process that was frozen (SIGSTOP, a VM
/// pause) or cut off, and the server ends its session so that the row locks it holds
/// (say, on a job) do not stop other daemons from taking over.
const IDLE_IN_TRANSACTION: &str = "5s";

/// Connects to a `postgres://` URL and migrates the database.
///
/// Migrations take sqlx's advisory lock, so several daemons starting together apply
/// them once. A short acquire timeout makes a dead database show up as an error
/// (`UNAVAILABLE` at the API) instead of hanging the caller.
pub(super) async fn connect(url: &str) -> Result<Db> {
    let options = PgConnectOptions::from_str(url)?
        .options([("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION)]);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    let db = Db::Postgres(pool.clone());
    super::schema::refuse_newer(&db, &MIGRATOR).await?;
    MIGRATOR.run(&pool).await?;
    Ok(db)
}
