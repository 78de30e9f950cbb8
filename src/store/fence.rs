//! Fenced writes: everything a worker writes about the job it runs carries the job's
//! [`Lease`] and is refused with [`StoreError::LeaseLost`] once the job is no longer
//! running under that worker and epoch (the fencing token bumped by every claim).
//!
//! Each write checks the lease and writes in one transaction. On Postgres the check
//! share-locks the job row, so a requeue or claim that races the write waits for it and
//! the write is either fully before the lease is lost or refused; on SQLite every write
//! transaction is exclusive anyway.

use std::time::Duration;

use super::db::{args, now, Backend, Exec};
use super::events::insert_event;
use super::rows::{lease_delta, lease_lost, HELD};
use super::{Lease, Result, Store, SyncRow};

/// Succeeds if `lease` still holds its job, share-locking the job row until the end of
/// the transaction (Postgres); `LeaseLost` otherwise.
pub(super) async fn check_lease(ex: &mut Exec<'_>, lease: &Lease) -> Result<()> {
    check_lease_in(ex, lease, "state = 'running'").await
}

/// [`check_lease`] with another condition on the job's state.
async fn check_lease_in(ex: &mut Exec<'_>, lease: &Lease, state: &str) -> Result<()> {
    let lock = match ex.backend() {
        Backend::Postgres => " FOR SHARE",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "SELECT task_id FROM jobs WHERE task_id = $1 AND ({state}) \
         AND worker_id = $2 AND lease_epoch = $3{lock}"
    );
    ex.fetch_optional::<(String,)>(&sql, args![&lease.task_id, &lease.worker_id, lease.epoch])
        .await?
        .map(|_| ())
        .ok_or_else(|| lease_lost(lease))
}

impl Store {
    /// Extends the lease to now + `lease`. Returns whether a cancel was requested for
    /// the task, so the worker learns about cancels made through any daemon.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] if the job was requeued or claimed again: the worker
    /// must stop and write nothing more.
    pub async fn heartbeat(&self, held: &Lease, lease: Duration) -> Result<bool> {
        let lease_until = now() + lease_delta(lease)?;
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        let renewed = ex
            .execute(
                &format!("UPDATE jobs SET lease_until = $4 WHERE {HELD}"),
                args![&held.task_id, &held.worker_id, held.epoch, lease_until],
            )
            .await?;
        if renewed == 0 {
            return Err(lease_lost(held));
        }
        let (cancel,): (bool,) = ex
            .fetch_one(
                "SELECT cancel_requested FROM tasks WHERE id = $1",
                args![&held.task_id],
            )
            .await?;
        tx.commit().await?;
        Ok(cancel)
    }

    /// Records the newest verified mid-task checkpoint of the job; a later claim resumes
    /// from it. Write the file (and fsync) before calling this, and never change it
    /// afterwards: the step recorded here is the step a resume starts from.
    pub async fn set_resume_checkpoint(
        &self,
        lease: &Lease,
        path: &str,
        step: i64,
        sha256: &str,
    ) -> Result<()> {
        let mut conn = self.db.acquire().await?;
        let changed = conn
            .exec()
            .execute(
                &format!(
                    "UPDATE jobs SET resume_checkpoint = $4, resume_step = $5, \
                     resume_sha256 = $6 WHERE {HELD}"
                ),
                args![
                    &lease.task_id,
                    &lease.worker_id,
                    lease.epoch,
                    path,
                    step,
                    sha256
                ],
            )
            .await?;
        if changed == 0 {
            return Err(lease_lost(lease));
        }
        Ok(())
    }

    /// Stores the task's latest progress (caller's JSON), read back by `GetTask`.
    pub async fn update_progress(&self, lease: &Lease, progress_json: &str) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        check_lease(&mut ex, lease).await?;
        ex.execute(
            "UPDATE tasks SET progress_json = $2 WHERE id = $1",
            args![&lease.task_id, progress_json],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends an event to the log of the job's task, like [`Store::append_event`], if
    /// `lease` still holds the job — or, for the `terminal` event, if this lease is the
    /// one that finished it (the job is done and still names this worker and epoch).
    pub async fn append_job_event(
        &self,
        lease: &Lease,
        kind: &str,
        payload_json: &str,
    ) -> Result<i64> {
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        let state = if kind == "terminal" {
            "state IN ('running', 'done')"
        } else {
            "state = 'running'"
        };
        check_lease_in(&mut ex, lease, state).await?;
        let seq = insert_event(&mut ex, &lease.task_id, kind, payload_json).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Records a momentum sync. A step replayed after a resume replaces its earlier
    /// record, so each step is counted once.
    pub async fn record_sync(&self, lease: &Lease, sync: &SyncRow) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        check_lease(&mut ex, lease).await?;
        ex.execute(
            "INSERT INTO momentum_syncs (task_id, step, k, drift, threshold, duration_ms, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (task_id, step) DO UPDATE SET k = excluded.k, \
             drift = excluded.drift, threshold = excluded.threshold, \
             duration_ms = excluded.duration_ms, at = excluded.at",
            args![
                &lease.task_id,
                sync.step,
                sync.k,
                sync.drift,
                sync.threshold,
                sync.duration_ms,
                sync.at,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives the job back to the queue (same position, resume checkpoint kept) without
    /// finishing it, e.g. when the worker cannot go on but the task is not at fault.
    pub async fn release_job(&self, lease: &Lease) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        let released = ex
            .execute(
                &format!(
                    "UPDATE jobs SET state = 'queued', worker_id = NULL, lease_until = NULL \
                     WHERE {HELD}"
                ),
                args![&lease.task_id, &lease.worker_id, lease.epoch],
            )
            .await?;
        if released == 0 {
            return Err(lease_lost(lease));
        }
        ex.execute(
            "UPDATE tasks SET state = 'queued' WHERE id = $1 AND state = 'running'",
            args![&lease.task_id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Cheap round trip to the database: the health probe.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.db.acquire().await?;
        conn.exec()
            .fetch_one::<(i64,)>("SELECT CAST(1 AS BIGINT)", args![])
            .await?;
        Ok(())
    }
}
