//! Row helpers shared by the store's modules (tasks, queue, fence, versions, gate): reading a
//! task or model row, the lease condition and its error. They import no sibling module but
//! `db`, so the store's files form no import cycle.
use std::time::Duration;

use super::db::{args, Exec};
use super::{Lease, ModelRow, Result, StoreError, TaskRow};

/// Columns of [`TaskRow`], in one place for every task query.
pub(super) const TASK_COLUMNS: &str = "id, model, name, state, idempotency_key, settings_json, \
     data_dir, n_train, n_eval, base_version, produced_version, error, progress_json, \
     cancel_requested, created_at, started_at, finished_at, rejected_reason, sources_json, \
     priority, preemptions, submitted_by, bundle_bytes";

/// Reads one task, or `NotFound`.
pub(super) async fn load_task(ex: &mut Exec<'_>, id: &str) -> Result<TaskRow> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
    ex.fetch_optional(&sql, args![id])
        .await?
        .ok_or_else(|| StoreError::not_found(format!("task {id}")))
}

/// Reads one model, or `NotFound`.
pub(super) async fn load_model(ex: &mut Exec<'_>, name: &str) -> Result<ModelRow> {
    ex.fetch_optional(
        "SELECT name, preset, head_version, created_at FROM models WHERE name = $1",
        args![name],
    )
    .await?
    .ok_or_else(|| StoreError::not_found(format!("model {name:?}")))
}

/// The error for a write by a worker that no longer holds the job.
pub(super) fn lease_lost(lease: &Lease) -> StoreError {
    StoreError::LeaseLost {
        task_id: lease.task_id.clone(),
    }
}

/// The `WHERE` condition on `jobs` that holds exactly while `$1..$3` = (task, worker,
/// epoch) own the job; for statements that change the job row themselves.
pub(super) const HELD: &str =
    "task_id = $1 AND state = 'running' AND worker_id = $2 AND lease_epoch = $3";

/// Converts a lease length for time arithmetic.
pub(super) fn lease_delta(lease: Duration) -> Result<chrono::Duration> {
    chrono::Duration::from_std(lease)
        .map_err(|_| StoreError::Invalid(format!("lease {lease:?} is too long")))
}
