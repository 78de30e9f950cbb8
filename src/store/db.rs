//! A small backend-neutral layer over sqlx, so every store operation is written once.
//!
//! sqlx's own `Any` driver cannot carry `chrono` timestamps, and writing the store generic
//! over `sqlx::Database` needs a wall of higher-ranked bounds per function. Instead, SQL is
//! written in the dialect both backends accept (`$1` placeholders, `RETURNING`,
//! `ON CONFLICT`), parameters travel as [`Arg`] values, and an [`Exec`] dispatches each
//! call to the concrete SQLite or Postgres connection. Rows decode through
//! `#[derive(sqlx::FromRow)]`, whose impls are generic over the row type, so one row
//! struct serves both backends. The few places that differ (row locks in the queue claim,
//! how a write transaction starts) ask [`Backend`].

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{FromRow, Postgres, Sqlite, Transaction};

/// Which database a [`Db`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A single SQLite file (one daemon).
    Sqlite,
    /// A PostgreSQL server (one or several daemons).
    Postgres,
}

/// The connection pool of either backend; cheap to clone (pools are reference-counted).
#[derive(Clone, Debug)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A write transaction. Dropping it without [`Tx::commit`] rolls back.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// A pooled connection for reads outside a transaction.
pub(crate) enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

/// A borrowed connection of either backend: the one place that runs SQL.
pub(crate) enum Exec<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

/// One bind parameter. `None` binds a typed SQL `NULL`.
#[derive(Clone, Debug)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
    Time(Option<DateTime<Utc>>),
    Bool(bool),
}

/// Rows that decode from both backends (what `#[derive(sqlx::FromRow)]` gives).
pub(crate) trait FromBoth:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> FromBoth for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

/// Builds a `Vec<Arg>` from values with `Into<Arg>`: `args![id, 3_i64, None::<String>]`.
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        vec![$($crate::store::db::Arg::from($value)),*]
    };
}
pub(crate) use args;

/// Binds every [`Arg`] to a `query` or `query_as` of either backend.
macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Int(v) => query.bind(v),
                Arg::Real(v) => query.bind(v),
                Arg::Text(v) => query.bind(v),
                Arg::Time(v) => query.bind(v),
                Arg::Bool(v) => query.bind(v),
            };
        }
        query
    }};
}

/// The current time as stored: UTC, truncated to microseconds (Postgres' resolution), so
/// a value read back equals the value written on both backends.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// SQLite has no time type: sqlx would write variable-width text (`AutoSi`). A fixed
/// width (always six fraction digits, `+00:00`) makes text order equal time order, which
/// `ORDER BY created_at` and `lease_until < $now` rely on.
fn sqlite_args(args: Vec<Arg>) -> impl Iterator<Item = Arg> {
    args.into_iter().map(|arg| match arg {
        Arg::Time(t) => Arg::Text(t.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, false))),
        other => other,
    })
}

impl Db {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Starts a write transaction. On SQLite it is `BEGIN IMMEDIATE`: the write lock is
    /// taken up front, so a transaction that reads before it writes cannot fail with
    /// `SQLITE_BUSY` when upgrading (sqlx's plain `begin()` is `DEFERRED`). On Postgres
    /// it is a plain `READ COMMITTED` transaction; statements take row locks as needed.
    pub(crate) async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Takes a connection for reads that need no transaction.
    pub(crate) async fn acquire(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self {
            Db::Sqlite(pool) => Conn::Sqlite(pool.acquire().await?),
            Db::Postgres(pool) => Conn::Postgres(pool.acquire().await?),
        })
    }

    pub(crate) async fn close(&self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

impl Tx {
    pub(crate) fn exec(&mut self) -> Exec<'_> {
        match self {
            Tx::Sqlite(tx) => Exec::Sqlite(tx),
            Tx::Postgres(tx) => Exec::Postgres(tx),
        }
    }

    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }
}

impl Conn {
    pub(crate) fn exec(&mut self) -> Exec<'_> {
        match self {
            Conn::Sqlite(conn) => Exec::Sqlite(conn),
            Conn::Postgres(conn) => Exec::Postgres(conn),
        }
    }
}

impl Exec<'_> {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Exec::Sqlite(_) => Backend::Sqlite,
            Exec::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs a statement; returns the number of rows it changed.
    pub(crate) async fn execute(&mut self, sql: &str, args: Vec<Arg>) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Exec::Sqlite(c) => bind_all!(sqlx::query(sql), sqlite_args(args))
                .execute(&mut **c)
                .await?
                .rows_affected(),
            Exec::Postgres(c) => bind_all!(sqlx::query(sql), args)
                .execute(&mut **c)
                .await?
                .rows_affected(),
        })
    }

    /// Runs a query returning at most one row.
    pub(crate) async fn fetch_optional<T: FromBoth>(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Option<T>, sqlx::Error> {
        match self {
            Exec::Sqlite(c) => {
                bind_all!(sqlx::query_as::<Sqlite, T>(sql), sqlite_args(args))
                    .fetch_optional(&mut **c)
                    .await
            }
            Exec::Postgres(c) => {
                bind_all!(sqlx::query_as::<Postgres, T>(sql), args)
                    .fetch_optional(&mut **c)
                    .await
            }
        }
    }

    /// Runs a query returning exactly one row (`RowNotFound` otherwise).
    pub(crate) async fn fetch_one<T: FromBoth>(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<T, sqlx::Error> {
        self.fetch_optional(sql, args)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// Runs a query returning any number of rows.
    pub(crate) async fn fetch_all<T: FromBoth>(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Vec<T>, sqlx::Error> {
        match self {
            Exec::Sqlite(c) => {
                bind_all!(sqlx::query_as::<Sqlite, T>(sql), sqlite_args(args))
                    .fetch_all(&mut **c)
                    .await
            }
            Exec::Postgres(c) => {
                bind_all!(sqlx::query_as::<Postgres, T>(sql), args)
                    .fetch_all(&mut **c)
                    .await
            }
        }
    }
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl From<f64> for Arg {
    fn from(v: f64) -> Self {
        Arg::Real(Some(v))
    }
}

impl From<Option<f64>> for Arg {
    fn from(v: Option<f64>) -> Self {
        Arg::Real(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(Some(v.clone()))
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_owned))
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}

impl From<DateTime<Utc>> for Arg {
    fn from(v: DateTime<Utc>) -> Self {
        Arg::Time(Some(v))
    }
}

impl From<Option<DateTime<Utc>>> for Arg {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        Arg::Time(v)
    }
}

impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
