//! Durable state of ctpd: models, tasks and their queue, versions with their evaluation,
//! head history, task events and momentum-sync records.
//!
//! One [`Store`] serves two backends, chosen by the URL given to [`Store::connect`]:
//! - `sqlite://path/ctp.db?mode=rwc`: one file, for a single daemon (WAL mode, foreign
//!   keys on, a busy timeout, write transactions started with `BEGIN IMMEDIATE`);
//! - `postgres://user@host/db`: for one or several daemons (the queue claim uses
//!   `FOR UPDATE SKIP LOCKED`, and a partial unique index keeps one running job per
//!   model even when claimers race).
//!
//! Each operation is written once, in SQL both backends accept, through the small
//! dispatch layer in `db` (see there for why not `sqlx::Any` or a generic store).
//! Migrations are embedded per backend (`migrations/sqlite`, `migrations/postgres`) and
//! run at connect. Every multi-row change is one transaction: a submit inserts the task
//! and its job together; a finished task commits its version, evaluation, head move,
//! history row and task state together. Transactions that change several of `jobs`,
//! `models` and `tasks` lock rows in that order, so on Postgres they cannot deadlock.
//!
//! Operations live next to their tables: `tasks` (models, submit, list, cancel, fail),
//! `queue` (claim, requeue: the reaper), `fence` (the writes of a worker holding a
//! lease: heartbeat, progress, events, syncs, resume points), `versions` (finish,
//! versions, lineage, rollback), `events` (task events, file references), `outbox` (webhook
//! events, recorded in the transaction of the change that caused them) and `deliveries` (the
//! delivery loop's claims and outcomes). `schema` knows
//! the schema version and refuses a database a newer ctpd migrated (before migrating);
//! `snapshot` makes a backup's consistent copy (`VACUUM INTO`) and reads what it references.
//!
//! Fencing: every claim bumps the job's `lease_epoch`; a worker's writes carry its
//! [`Lease`] (task, worker, epoch) and are refused with [`StoreError::LeaseLost`] unless
//! the job still runs under exactly that lease.

mod anchors;
mod db;
mod deliveries;
mod events;
mod fence;
mod gate;
mod known;
mod outbox;
mod postgres;
mod queue;
mod rows;
mod schedule;
mod schema;
mod snapshot;
mod sqlite;
mod tasks;
mod types;
mod usage;
mod versions;

pub use anchors::{AnchorEval, AnchorSuite, NewAnchorSuite};
pub use db::Backend;
pub use deliveries::{DeliveryOutcome, WebhookDelivery, WebhookStats};
pub use gate::GatePolicy;
pub use outbox::{WebhookEvent, WebhookRoutes};
pub use schedule::Ranking;
pub use snapshot::{snapshot_refs, SnapshotRefs};
pub use types::{
    new_task_id, ClaimedJob, EvalRow, EvalScope, EventRow, HeadChange, Lease, ModelRow, NewTask,
    NewVersion, Submitted, SyncRow, TaskRow, TaskState, UnknownValue, VersionRow,
};

use std::sync::Arc;

use db::Db;

/// Errors of the store. The gRPC layer maps each variant to one status code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named task, model or version does not exist (`NOT_FOUND`).
    #[error("{what} not found")]
    NotFound {
        /// What was looked up, e.g. "task 3f…" or "version m@4".
        what: String,
    },
    /// Creating something that exists in an incompatible form (`ALREADY_EXISTS`).
    #[error("{what} already exists")]
    AlreadyExists {
        /// What collided.
        what: String,
    },
    /// A compare-and-set on a model's head lost: the head is not what the caller
    /// expected (`ABORTED`: re-read and decide again).
    #[error("head is {actual:?}, expected {expected:?}")]
    Aborted {
        /// Head the caller expected.
        expected: Option<i64>,
        /// Head found.
        actual: Option<i64>,
    },
    /// The operation does not fit the current state, e.g. cancelling a finished task
    /// (`FAILED_PRECONDITION`: do not retry until the state changes).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The worker no longer holds the job's lease (it expired and the job was requeued,
    /// or another worker claimed it): stop working on it and publish nothing.
    #[error("lease on task {task_id} lost")]
    LeaseLost {
        /// The job's task.
        task_id: String,
    },
    /// A submission over one of its caller's quotas (`RESOURCE_EXHAUSTED`).
    #[error(transparent)]
    Quota(#[from] crate::quota::Exceeded),
    /// Bad input: an unknown URL scheme, a bad page token, a preset mismatch
    /// (`INVALID_ARGUMENT`).
    #[error("{0}")]
    Invalid(String),
    /// The database was migrated by a newer ctpd: it has a migration applied that this
    /// binary does not know (at connect; nothing was changed).
    #[error(
        "database schema version {found} is newer than this ctpd (which knows up to {known}); \
         use a newer ctpd"
    )]
    SchemaTooNew {
        /// The database's schema version (its highest applied migration).
        found: i64,
        /// The newest migration this binary embeds.
        known: i64,
    },
    /// Applying the embedded migrations failed (at connect).
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database error (`INTERNAL` / `UNAVAILABLE`; log the source).
    #[error("database error")]
    Db(#[source] sqlx::Error),
}

impl StoreError {
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        StoreError::NotFound { what: what.into() }
    }

    /// True if the database could not be reached or dropped the connection (I/O error,
    /// no pooled connection within the acquire timeout, a server shutting down or not
    /// yet accepting connections): the operation may succeed later (`UNAVAILABLE`).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Db(e) => is_connection_error(e),
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => is_connection_error(e),
            _ => false,
        }
    }

    /// Like [`StoreError::is_unavailable`], but not when this daemon closed the pool
    /// itself (shutdown): worth retrying.
    pub fn is_transient(&self) -> bool {
        self.is_unavailable() && !matches!(self, StoreError::Db(sqlx::Error::PoolClosed))
    }
}

/// SQLSTATE classes and codes of a connection that is gone or not accepted yet:
/// class 08 (connection exception), 57P01-57P03 (admin/crash shutdown, cannot connect
/// now), 53300 (too many connections).
fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// `RowNotFound` becomes [`StoreError::NotFound`] here, in one place; everything else
/// stays a database error.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::not_found("row"),
            e => StoreError::Db(e),
        }
    }
}

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Handle to the database; cheap to clone and share between tasks.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    /// Which webhooks take which events: what the outbox records (empty: nothing).
    webhooks: Arc<WebhookRoutes>,
    /// How the dispatcher ranks queued and running work (config `[scheduler]`).
    ranking: Ranking,
}

/// Page size when a list request gives 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page a list returns, whatever is asked.
pub const MAX_PAGE_SIZE: u32 = 1000;

impl Store {
    /// Opens the database named by `url`, creating it if needed (SQLite), and applies
    /// the embedded migrations.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a scheme other than `sqlite:` / `postgres:` /
    /// `postgresql:`; `Db` if it cannot connect; [`StoreError::SchemaTooNew`] (before
    /// anything is changed) if a newer ctpd migrated the database; `Migrate` if the schema
    /// cannot be brought up to date.
    pub async fn connect(url: &str) -> Result<Store> {
        let db = if url.starts_with("sqlite:") {
            sqlite::connect(url).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            postgres::connect(url).await?
        } else {
            // Only the scheme is echoed: the rest may hold a password.
            let scheme = url.split(':').next().unwrap_or_default();
            return Err(StoreError::Invalid(format!(
                "unsupported database URL scheme {scheme:?}: use sqlite:// or postgres://"
            )));
        };
        Ok(Store {
            db,
            webhooks: Arc::default(),
            ranking: Ranking::default(),
        })
    }

    /// This store, recording webhook events for `routes` (the daemon's `[[webhooks]]`) in
    /// the transactions that cause them.
    pub fn with_webhooks(mut self, routes: WebhookRoutes) -> Store {
        self.webhooks = Arc::new(routes);
        self
    }

    /// This store, ranking work by `ranking` (the daemon's `[scheduler]`).
    pub fn with_ranking(mut self, ranking: Ranking) -> Store {
        self.ranking = ranking;
        self
    }

    /// How this store ranks work.
    pub fn ranking(&self) -> &Ranking {
        &self.ranking
    }

    /// Which backend this store uses.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// Closes the pool, waiting for connections in use to be returned (shutdown).
    pub async fn close(&self) {
        self.db.close().await;
    }
}

/// Clamps a requested page size: 0 means the default, and no page exceeds the maximum.
fn page_limit(page_size: u32) -> i64 {
    let size = if page_size == 0 {
        DEFAULT_PAGE_SIZE
    } else {
        page_size.min(MAX_PAGE_SIZE)
    };
    i64::from(size)
}

/// Encodes a page cursor. The prefix names the listing, so a token from one list is
/// rejected by another instead of silently paging wrong; clients treat it as opaque.
fn encode_token(kind: &str, cursor: i64) -> String {
    format!("{kind}.{cursor}")
}

/// Decodes a cursor from [`encode_token`]; an empty token is the first page.
fn decode_token(kind: &str, token: Option<&str>) -> Result<Option<i64>> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    token
        .strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .map(Some)
        .ok_or_else(|| StoreError::Invalid(format!("invalid page token {token:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_limit_defaults_and_caps() {
        assert_eq!(page_limit(0), 50);
        assert_eq!(page_limit(7), 7);
        assert_eq!(page_limit(1_000_000), 1000);
    }

    #[test]
    fn tokens_round_trip_and_reject_foreign_ones() {
        assert_eq!(decode_token("t1", None).unwrap(), None);
        assert_eq!(decode_token("t1", Some("")).unwrap(), None);
        let token = encode_token("t1", 40);
        assert_eq!(decode_token("t1", Some(&token)).unwrap(), Some(40));
        assert!(decode_token("v1", Some(&token)).is_err());
        assert!(decode_token("t1", Some("t1.-3")).is_err());
        assert!(decode_token("t1", Some("garbage")).is_err());
    }

    #[test]
    fn task_state_text_round_trips() {
        for s in [
            TaskState::Queued,
            TaskState::Running,
            TaskState::Succeeded,
            TaskState::Failed,
            TaskState::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), s);
        }
        assert!("paused".parse::<TaskState>().is_err());
    }
}
