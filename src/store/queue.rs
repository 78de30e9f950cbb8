//! The job queue: claiming work under a lease, and putting jobs back whose worker died or
//! was restarted (the reaper). Writes made while holding a lease are in `fence`.
//!
//! Order: the model with the highest effective priority first, then FIFO by `enqueued_seq`
//! (see `schedule`); only the oldest queued job of a model is eligible, and never while that
//! model has a running job — each version is trained from the previous one, so one model's
//! tasks run strictly one after another while different models may run side by side.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::db::{args, now, Backend};
use super::outbox;
use super::rows::{lease_delta, load_task};
use super::schedule;
use super::{ClaimedJob, Result, Store};

/// The queue state of a claimed job.
#[derive(sqlx::FromRow)]
struct JobLease {
    attempts: i64,
    lease_epoch: i64,
    resume_checkpoint: Option<String>,
    resume_step: Option<i64>,
    resume_sha256: Option<String>,
}

/// True if the error is a unique-index violation (a lost race on Postgres).
fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

impl Store {
    /// Claims the next eligible job for `worker_id` with a lease of `lease`: the job
    /// becomes running, its task RUNNING (`started_at` set on the first run) with
    /// `base_version` = the model's current head. A job resumed from a mid-task
    /// checkpoint keeps the base it started from, since the checkpoint was trained on it.
    ///
    /// Returns `None` when nothing is eligible. On Postgres the candidate row is locked
    /// with `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on each other; if
    /// two still pick jobs of one model, the partial unique index stops the second, which
    /// returns `None` and simply polls again. On SQLite the write transaction serializes
    /// claimers.
    pub async fn claim_next_job(
        &self,
        worker_id: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedJob>> {
        let lease = lease_delta(lease)?;
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        let lock = match ex.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let at = now();
        let jobs = schedule::weighed(&mut ex).await?;
        let Some(next) = schedule::Board::new(&jobs, at, self.ranking.aging_s).next() else {
            return Ok(None);
        };
        let (task_id, model) = (next.task_id.clone(), next.model.clone());
        // Postgres: lock the row; a concurrent claimer of the same job skips it and polls
        // again. SQLite: the write transaction already serializes claimers.
        if !lock.is_empty() {
            let sql =
                format!("SELECT task_id FROM jobs WHERE task_id = $1 AND state = 'queued'{lock}");
            let locked: Option<(String,)> = ex.fetch_optional(&sql, args![&task_id]).await?;
            if locked.is_none() {
                return Ok(None);
            }
        }
        let lease_until = at + lease;
        let claimed = ex
            .execute(
                "UPDATE jobs SET state = 'running', worker_id = $2, lease_until = $3, \
                 attempts = attempts + 1, lease_epoch = lease_epoch + 1, claimed_at = $4 \
                 WHERE task_id = $1 AND state = 'queued'",
                args![&task_id, worker_id, lease_until, at],
            )
            .await;
        match claimed {
            Err(e) if is_unique_violation(&e) => return Ok(None),
            other => other?,
        };
        let job: JobLease = ex
            .fetch_one(
                "SELECT attempts, lease_epoch, resume_checkpoint, resume_step, resume_sha256 FROM jobs \
                 WHERE task_id = $1",
                args![&task_id],
            )
            .await?;
        let (head,): (Option<i64>,) = ex
            .fetch_one(
                "SELECT head_version FROM models WHERE name = $1",
                args![&model],
            )
            .await?;
        let previous = load_task(&mut ex, &task_id).await?;
        let base = match (&job.resume_checkpoint, previous.base_version) {
            (Some(_), Some(base)) => Some(base),
            _ => head,
        };
        ex.execute(
            "UPDATE tasks SET state = 'running', started_at = COALESCE(started_at, $2), \
             base_version = $3 WHERE id = $1",
            args![&task_id, at, base],
        )
        .await?;
        let task = load_task(&mut ex, &task_id).await?;
        tx.commit().await?;
        Ok(Some(ClaimedJob {
            task,
            worker_id: worker_id.to_owned(),
            lease_until,
            attempts: job.attempts,
            resume_checkpoint: job.resume_checkpoint,
            resume_step: job.resume_step,
            resume_sha256: job.resume_sha256,
            epoch: job.lease_epoch,
        }))
    }

    /// Startup recovery of a single daemon: every running job was interrupted, so each
    /// goes back to the queue (task QUEUED, resume checkpoint and base kept, same queue
    /// position); a task whose cancel was requested becomes CANCELLED instead.
    /// Returns the requeued task ids.
    pub async fn requeue_all_running(&self) -> Result<Vec<String>> {
        self.requeue(None, None).await
    }

    /// The reaper's sweep: requeues the running jobs whose lease has expired (their
    /// worker died, hung, or lost the database for longer than the lease).
    pub async fn requeue_expired(&self) -> Result<Vec<String>> {
        self.requeue(Some(now()), None).await
    }

    /// Startup recovery of a daemon sharing the database: requeues expired jobs and,
    /// whatever their lease, the jobs held under this daemon's own `worker_id`: the
    /// previous process with this identity is gone, so nothing can be running them.
    pub async fn requeue_expired_or_held_by(&self, worker_id: &str) -> Result<Vec<String>> {
        self.requeue(Some(now()), Some(worker_id)).await
    }

    /// Requeues running jobs: all of them (`expired_before` = `None`), or those whose
    /// lease ended before `expired_before` or that `held_by` holds.
    async fn requeue(
        &self,
        expired_before: Option<DateTime<Utc>>,
        held_by: Option<&str>,
    ) -> Result<Vec<String>> {
        const STALE: &str =
            "state = 'running' AND ($1 IS NULL OR lease_until < $1 OR worker_id = $2)";
        let at = now();
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        // Jobs before tasks, the lock order of every transaction (see `finish_task`).
        ex.execute(
            &format!(
                "UPDATE jobs SET state = 'done', worker_id = NULL, lease_until = NULL \
                 WHERE {STALE} AND task_id IN (SELECT id FROM tasks WHERE cancel_requested)"
            ),
            args![expired_before, held_by],
        )
        .await?;
        let cancelled: Vec<(String,)> = ex
            .fetch_all(
                "UPDATE tasks SET state = 'cancelled', finished_at = $1 \
                 WHERE state = 'running' AND cancel_requested \
                   AND id IN (SELECT task_id FROM jobs WHERE state = 'done') RETURNING id",
                args![at],
            )
            .await?;
        for (id,) in &cancelled {
            let task = load_task(&mut ex, id).await?;
            outbox::task_ended(&mut ex, &self.webhooks, &task, None).await?;
        }
        let mut requeued: Vec<(String,)> = ex
            .fetch_all(
                &format!(
                    "UPDATE jobs SET state = 'queued', worker_id = NULL, lease_until = NULL \
                     WHERE {STALE} RETURNING task_id"
                ),
                args![expired_before, held_by],
            )
            .await?;
        ex.execute(
            "UPDATE tasks SET state = 'queued' WHERE state = 'running' \
             AND id IN (SELECT task_id FROM jobs WHERE state = 'queued')",
            args![],
        )
        .await?;
        tx.commit().await?;
        requeued.sort();
        Ok(requeued.into_iter().map(|(id,)| id).collect())
    }
}
