//! Versions: committing a task's result, reading versions and lineages, moving the head.

use super::db::{args, now, Exec};
use super::outbox;
use super::rows::{lease_lost, load_model, load_task, HELD};
use super::{
    decode_token, encode_token, page_limit, EvalRow, HeadChange, Lease, NewVersion, Result, Store,
    StoreError, TaskState, VersionRow, WebhookEvent,
};

/// Columns of [`VersionRow`] (its task name joined from `tasks`).
const VERSION_COLUMNS: &str = "v.model, v.version, v.parent, v.task_id, t.name AS task_name, \
     v.checkpoint_path, v.sha256, v.created_at, v.momentum_syncs, v.momentum_steps, v.bwt, \
     v.average_forgetting, v.rejected_reason, v.device, v.precision";

/// Columns of [`HeadChange`].
const HEAD_CHANGE_COLUMNS: &str = "id, model, from_version, to_version, at, who, reason";

/// A forgetting score with the version it belongs to, for bulk loading.
#[derive(sqlx::FromRow)]
struct ForgettingRow {
    version: i64,
    task_id: String,
    value: f64,
}

/// An evaluation row with the version it belongs to, for bulk loading.
#[derive(sqlx::FromRow)]
struct VersionEval {
    version: i64,
    #[sqlx(flatten)]
    eval: EvalRow,
}

/// Fills `evals`, `forgetting`, `anchors` and `is_head` of versions of one model, with three
/// queries over the versions' range instead of three per version.
async fn attach_details(ex: &mut Exec<'_>, model: &str, versions: &mut [VersionRow]) -> Result<()> {
    let (Some(lo), Some(hi)) = (
        versions.iter().map(|v| v.version).min(),
        versions.iter().map(|v| v.version).max(),
    ) else {
        return Ok(());
    };
    let head = load_model(ex, model).await?.head_version;
    let evals: Vec<VersionEval> = ex
        .fetch_all(
            "SELECT version, scope, task_id, task_name, tr1, tr5, tr10, ir1, ir5, ir10, rm \
             FROM evaluations WHERE model = $1 AND version BETWEEN $2 AND $3 \
             ORDER BY version, position",
            args![model, lo, hi],
        )
        .await?;
    let forgetting: Vec<ForgettingRow> = ex
        .fetch_all(
            "SELECT version, task_id, value FROM forgetting \
             WHERE model = $1 AND version BETWEEN $2 AND $3 ORDER BY version, position",
            args![model, lo, hi],
        )
        .await?;
    let anchors = super::anchors::load_range(ex, model, lo, hi).await?;
    for v in versions.iter_mut() {
        v.is_head = head == Some(v.version);
        v.anchors = anchors
            .iter()
            .filter(|(version, _)| *version == v.version)
            .map(|(_, a)| a.clone())
            .collect();
        v.evals = evals
            .iter()
            .filter(|e| e.version == v.version)
            .map(|e| e.eval.clone())
            .collect();
        v.forgetting = forgetting
            .iter()
            .filter(|f| f.version == v.version)
            .map(|f| (f.task_id.clone(), f.value))
            .collect();
    }
    Ok(())
}

/// Reads one version with its details, or `NotFound`.
async fn load_version(ex: &mut Exec<'_>, model: &str, version: i64) -> Result<VersionRow> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM versions v JOIN tasks t ON t.id = v.task_id \
         WHERE v.model = $1 AND v.version = $2"
    );
    let row: VersionRow = ex
        .fetch_optional(&sql, args![model, version])
        .await?
        .ok_or_else(|| StoreError::not_found(format!("version {model}@{version}")))?;
    let mut rows = [row];
    attach_details(ex, model, &mut rows).await?;
    let [row] = rows;
    Ok(row)
}

/// Appends a head move to the audit history.
async fn record_head_change(
    ex: &mut Exec<'_>,
    model: &str,
    from: Option<i64>,
    to: i64,
    who: &str,
    reason: &str,
) -> Result<HeadChange> {
    let sql = format!(
        "INSERT INTO head_history (model, from_version, to_version, at, who, reason) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {HEAD_CHANGE_COLUMNS}"
    );
    Ok(ex
        .fetch_one(&sql, args![model, from, to, now(), who, reason])
        .await?)
}

impl Store {
    /// Commits the result of a successful task in one transaction: the next version
    /// number of the model (never reused, also after rollbacks), the version row, its
    /// evaluation and forgetting rows, the head moved to it (with a history row by
    /// "ctpd"), the task SUCCEEDED with `produced_version`, and the job done. A version
    /// with `new.rejection` (refused by the promotion gate) is stored the same way, but the
    /// head stays where it is and the task records the reason.
    ///
    /// The head moves to the new version even if it was rolled back while the task
    /// trained: the newest result wins, and the history shows both moves.
    ///
    /// # Errors
    /// `NotFound` for an unknown parent; [`StoreError::LeaseLost`] if `lease` no longer
    /// holds the job (requeued after its lease expired, claimed again, or finished):
    /// nothing is committed.
    pub async fn finish_task(&self, lease: &Lease, new: NewVersion) -> Result<VersionRow> {
        let task_id = lease.task_id.as_str();
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        // Closing the job first row-locks it (Postgres) — jobs, models, tasks is the lock
        // order of every transaction — so a racing cancel, requeue or claim sees it done,
        // and a worker whose claim is no longer current changes nothing. The job keeps the
        // worker and epoch that finished it, so that claim may still append the terminal
        // event (see `append_job_event`).
        let closed = ex
            .execute(
                &format!("UPDATE jobs SET state = 'done', lease_until = NULL WHERE {HELD}"),
                args![task_id, &lease.worker_id, lease.epoch],
            )
            .await?;
        if closed == 0 {
            return Err(lease_lost(lease));
        }
        let task = load_task(&mut ex, task_id).await?;
        if task.state != TaskState::Running {
            return Err(StoreError::FailedPrecondition(format!(
                "task {task_id} is {}, not running",
                task.state
            )));
        }
        let model = task.model.as_str();
        if let Some(parent) = new.parent {
            ex.fetch_optional::<(i64,)>(
                "SELECT version FROM versions WHERE model = $1 AND version = $2",
                args![model, parent],
            )
            .await?
            .ok_or_else(|| StoreError::not_found(format!("parent version {model}@{parent}")))?;
        }
        // Bumping the counter row-locks the model, serializing version commits and
        // rollbacks of one model.
        let (version,): (i64,) = ex
            .fetch_one(
                "UPDATE models SET last_version = last_version + 1 WHERE name = $1 \
                 RETURNING last_version",
                args![model],
            )
            .await?;
        let previous_head = load_model(&mut ex, model).await?.head_version;
        let at = now();
        ex.execute(
            "INSERT INTO versions (model, version, parent, task_id, checkpoint_path, sha256, \
             created_at, momentum_syncs, momentum_steps, bwt, average_forgetting, \
             rejected_reason, device, precision) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            args![
                model,
                version,
                new.parent,
                task_id,
                &new.checkpoint_path,
                &new.sha256,
                at,
                new.momentum_syncs,
                new.momentum_steps,
                new.bwt,
                new.average_forgetting,
                new.rejection.as_deref(),
                &new.device,
                &new.precision,
            ],
        )
        .await?;
        for (position, e) in new.evals.iter().enumerate() {
            ex.execute(
                "INSERT INTO evaluations (model, version, scope, task_id, task_name, position, \
                 tr1, tr5, tr10, ir1, ir5, ir10, rm) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                args![
                    model,
                    version,
                    e.scope.as_str(),
                    &e.task_id,
                    &e.task_name,
                    position as i64,
                    e.tr1,
                    e.tr5,
                    e.tr10,
                    e.ir1,
                    e.ir5,
                    e.ir10,
                    e.rm,
                ],
            )
            .await?;
        }
        for (position, (forgotten_task, value)) in new.forgetting.iter().enumerate() {
            ex.execute(
                "INSERT INTO forgetting (model, version, task_id, position, value) \
                 VALUES ($1, $2, $3, $4, $5)",
                args![model, version, forgotten_task, position as i64, *value],
            )
            .await?;
        }
        let mut change = None;
        if new.rejection.is_none() {
            ex.execute(
                "UPDATE models SET head_version = $2 WHERE name = $1",
                args![model, version],
            )
            .await?;
            let reason = format!("task {task_id} succeeded");
            change = Some(
                record_head_change(&mut ex, model, previous_head, version, "ctpd", &reason).await?,
            );
        }
        ex.execute(
            "UPDATE tasks SET state = 'succeeded', produced_version = $2, finished_at = $3, \
             rejected_reason = $4 WHERE id = $1",
            args![task_id, version, at, new.rejection.as_deref()],
        )
        .await?;
        let row = load_version(&mut ex, model, version).await?;
        outbox::version_committed(&mut ex, &self.webhooks, &row, change.as_ref()).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Reads one version with its evaluation and forgetting rows.
    pub async fn get_version(&self, model: &str, version: i64) -> Result<VersionRow> {
        load_version(&mut self.db.acquire().await?.exec(), model, version).await
    }

    /// Lists a model's versions in increasing order; returns the page and the next
    /// page's token (`None` on the last page).
    ///
    /// # Errors
    /// `NotFound` for an unknown model; `Invalid` for a malformed token.
    pub async fn list_versions(
        &self,
        model: &str,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<(Vec<VersionRow>, Option<String>)> {
        let after = decode_token("v1", page_token)?.unwrap_or(0);
        let limit = page_limit(page_size);
        let mut conn = self.db.acquire().await?;
        let mut ex = conn.exec();
        load_model(&mut ex, model).await?;
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM versions v JOIN tasks t ON t.id = v.task_id \
             WHERE v.model = $1 AND v.version > $2 ORDER BY v.version LIMIT $3"
        );
        let mut rows: Vec<VersionRow> = ex.fetch_all(&sql, args![model, after, limit + 1]).await?;
        let next = (rows.len() as i64 > limit).then(|| {
            rows.truncate(limit as usize);
            encode_token("v1", rows.last().map_or(after, |v| v.version))
        });
        attach_details(&mut ex, model, &mut rows).await?;
        Ok((rows, next))
    }

    /// The model's head version, or `None` if no task has succeeded yet.
    ///
    /// # Errors
    /// `NotFound` for an unknown model.
    pub async fn head(&self, model: &str) -> Result<Option<VersionRow>> {
        let mut conn = self.db.acquire().await?;
        let mut ex = conn.exec();
        match load_model(&mut ex, model).await?.head_version {
            Some(head) => Ok(Some(load_version(&mut ex, model, head).await?)),
            None => Ok(None),
        }
    }

    /// The chain of versions from the root to `version` (inclusive), following parent
    /// links: the tasks this version has seen, in training order.
    ///
    /// # Errors
    /// `NotFound` if the version does not exist.
    pub async fn lineage(&self, model: &str, version: i64) -> Result<Vec<VersionRow>> {
        let mut conn = self.db.acquire().await?;
        let mut ex = conn.exec();
        load_version(&mut ex, model, version).await?;
        let sql = format!(
            "WITH RECURSIVE chain (version, parent, depth) AS ( \
                 SELECT version, parent, 0 FROM versions WHERE model = $1 AND version = $2 \
               UNION ALL \
                 SELECT p.version, p.parent, c.depth + 1 FROM versions p \
                 JOIN chain c ON p.model = $1 AND p.version = c.parent) \
             SELECT {VERSION_COLUMNS} FROM chain c \
             JOIN versions v ON v.model = $1 AND v.version = c.version \
             JOIN tasks t ON t.id = v.task_id \
             ORDER BY c.depth DESC"
        );
        let mut rows: Vec<VersionRow> = ex.fetch_all(&sql, args![model, version]).await?;
        attach_details(&mut ex, model, &mut rows).await?;
        Ok(rows)
    }

    /// Makes `to` the model's head (compare-and-set) and records who did it and why.
    /// The next task trains from `to`; later versions stay readable.
    ///
    /// # Errors
    /// - `NotFound` for an unknown model or version;
    /// - [`StoreError::Aborted`] if `expected_head` is given and the head differs, or
    ///   the head moved concurrently; nothing changes.
    pub async fn rollback(
        &self,
        model: &str,
        to: i64,
        expected_head: Option<i64>,
        who: &str,
        reason: &str,
    ) -> Result<HeadChange> {
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        let current = load_model(&mut ex, model).await?.head_version;
        ex.fetch_optional::<(i64,)>(
            "SELECT version FROM versions WHERE model = $1 AND version = $2",
            args![model, to],
        )
        .await?
        .ok_or_else(|| StoreError::not_found(format!("version {model}@{to}")))?;
        if let Some(expected) = expected_head {
            if current != Some(expected) {
                return Err(StoreError::Aborted {
                    expected: Some(expected),
                    actual: current,
                });
            }
        }
        // The head read above is not locked on Postgres; moving it only if it is still
        // the same makes a concurrent commit or rollback abort this one, not be lost.
        let moved = ex
            .execute(
                "UPDATE models SET head_version = $2 \
                 WHERE name = $1 AND COALESCE(head_version, 0) = $3",
                args![model, to, current.unwrap_or(0)],
            )
            .await?;
        if moved == 0 {
            drop(tx);
            let actual = self.get_model(model).await?.head_version;
            return Err(StoreError::Aborted {
                expected: expected_head.or(current),
                actual,
            });
        }
        let change = record_head_change(&mut ex, model, current, to, who, reason).await?;
        if self.webhooks.wants(WebhookEvent::HeadMoved) {
            let head = load_version(&mut ex, model, to).await?;
            outbox::head_moved(&mut ex, &self.webhooks, &change, &head).await?;
        }
        tx.commit().await?;
        Ok(change)
    }

    /// Every head move of the model, oldest first.
    pub async fn head_history(&self, model: &str) -> Result<Vec<HeadChange>> {
        let mut conn = self.db.acquire().await?;
        let mut ex = conn.exec();
        load_model(&mut ex, model).await?;
        let sql =
            format!("SELECT {HEAD_CHANGE_COLUMNS} FROM head_history WHERE model = $1 ORDER BY id");
        Ok(ex.fetch_all(&sql, args![model]).await?)
    }
}
