//! SQLite backend: connection options and migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Connection;

use super::db::Db;
use super::Result;

/// The SQLite schema, embedded at compile time.
pub(super) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection's write lock before failing with
/// `SQLITE_BUSY`. Write transactions are short, so this only absorbs contention.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens (creating if missing) the database at a `sqlite:` URL and migrates it.
///
/// - WAL lets readers (e.g. `WatchTask` polls) run while a write is in progress.
/// - `synchronous = NORMAL` is durable across process crashes in WAL mode; only a power
///   loss may drop the last commits, which a restart then redoes from the queue.
/// - Foreign keys are off by default in SQLite; the schema relies on them.
/// - An in-memory database exists per connection, so it gets a single connection.
pub(super) async fn connect(url: &str) -> Result<Db> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    let in_memory = options.get_filename().as_os_str() == ":memory:";
    let mut pool_options = SqlitePoolOptions::new().max_connections(if in_memory { 1 } else { 4 });
    if !in_memory {
        // A COMMIT that fails (e.g. SQLITE_FULL on a full disk) may leave sqlx's transaction
        // depth of that connection at 1 after SQLite itself rolled back; every later
        // `BEGIN` on it would fail ("begin_with at non-zero transaction depth"). Such a
        // connection is closed instead of being handed out again.
        pool_options = pool_options
            .before_acquire(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }));
    }
    let pool = pool_options.connect_with(options).await?;
    let db = Db::Sqlite(pool.clone());
    super::schema::refuse_newer(&db, &MIGRATOR).await?;
    MIGRATOR.run(&pool).await?;
    Ok(db)
}
