//! Task events (the durable log behind `WatchTask`), momentum-sync records, and the file
//! references that orphan cleanup must keep.

use super::db::{args, now, Exec};
use super::{EventRow, Result, Store, StoreError, SyncRow};

/// Appends an event inside the caller's transaction and returns its seq.
///
/// The seq comes from a counter on the task row, bumped in the same transaction as
/// the insert: the row lock makes concurrent appends take distinct, gap-free numbers
/// on both backends, so a watcher resuming after seq n misses nothing.
pub(super) async fn insert_event(
    ex: &mut Exec<'_>,
    task_id: &str,
    kind: &str,
    payload_json: &str,
) -> Result<i64> {
    let (seq,): (i64,) = ex
        .fetch_optional(
            "UPDATE tasks SET last_event_seq = last_event_seq + 1 WHERE id = $1 \
             RETURNING last_event_seq",
            args![task_id],
        )
        .await?
        .ok_or_else(|| StoreError::not_found(format!("task {task_id}")))?;
    ex.execute(
        "INSERT INTO task_events (task_id, seq, kind, payload_json, at) \
         VALUES ($1, $2, $3, $4, $5)",
        args![task_id, seq, kind, payload_json, now()],
    )
    .await?;
    Ok(seq)
}

/// Every path the rows refer to (see [`Store::referenced_files`]); also what a backup copies.
pub(super) const REFERENCED_FILES: &str = "SELECT checkpoint_path AS path FROM versions \
     UNION SELECT data_dir FROM tasks \
     UNION SELECT bundle_path FROM anchor_suites \
     UNION SELECT resume_checkpoint FROM jobs \
           WHERE state <> 'done' AND resume_checkpoint IS NOT NULL \
     ORDER BY 1";

impl Store {
    /// Appends an event to a task's log and returns its seq (1, 2, 3, … per task); see
    /// `insert_event`. Workers use the fenced [`Store::append_job_event`].
    ///
    /// # Errors
    /// `NotFound` if the task does not exist.
    pub async fn append_event(&self, task_id: &str, kind: &str, payload_json: &str) -> Result<i64> {
        let mut tx = self.db.begin_write().await?;
        let seq = insert_event(&mut tx.exec(), task_id, kind, payload_json).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Up to `limit` events of the task with seq > `after_seq`, in seq order.
    pub async fn events_after(
        &self,
        task_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let mut conn = self.db.acquire().await?;
        Ok(conn
            .exec()
            .fetch_all(
                "SELECT task_id, seq, kind, payload_json, at FROM task_events \
                 WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                args![task_id, after_seq, limit.max(0)],
            )
            .await?)
    }

    /// The seq of the task's newest event (0 if none): what a snapshot reports.
    ///
    /// # Errors
    /// `NotFound` if the task does not exist.
    pub async fn last_event_seq(&self, task_id: &str) -> Result<i64> {
        let mut conn = self.db.acquire().await?;
        let row: Option<(i64,)> = conn
            .exec()
            .fetch_optional(
                "SELECT last_event_seq FROM tasks WHERE id = $1",
                args![task_id],
            )
            .await?;
        row.map(|(seq,)| seq)
            .ok_or_else(|| StoreError::not_found(format!("task {task_id}")))
    }

    /// The task's momentum syncs in step order.
    pub async fn syncs(&self, task_id: &str) -> Result<Vec<SyncRow>> {
        let mut conn = self.db.acquire().await?;
        Ok(conn
            .exec()
            .fetch_all(
                "SELECT step, k, drift, threshold, duration_ms, at FROM momentum_syncs \
                 WHERE task_id = $1 ORDER BY step",
                args![task_id],
            )
            .await?)
    }

    /// Every path the database refers to — version checkpoints, task data directories,
    /// resume checkpoints of unfinished jobs — sorted and deduplicated. Files under the
    /// data root that are not listed (and not being written) are orphans, e.g. uploads
    /// of a submit that turned out to be a duplicate, or resume checkpoints of finished
    /// tasks.
    pub async fn referenced_files(&self) -> Result<Vec<String>> {
        let mut conn = self.db.acquire().await?;
        let rows: Vec<(String,)> = conn.exec().fetch_all(REFERENCED_FILES, args![]).await?;
        Ok(rows.into_iter().map(|(path,)| path).collect())
    }
}
