//! Models and tasks: creating, submitting, reading, listing, cancelling and failing.

use chrono::{DateTime, Utc};

use super::db::{args, now, Backend, Exec};
use super::outbox;
use super::rows::{lease_lost, load_model, load_task, HELD, TASK_COLUMNS};
use super::{
    page_limit, Lease, ModelRow, NewTask, Result, Store, StoreError, Submitted, TaskRow, TaskState,
};

/// Reads one model and, on Postgres, row-locks it until the transaction ends. Submits to
/// one model hold this lock while they stamp `created_at` and take their queue position,
/// so per model, submission time order = queue order = commit order (SQLite's write
/// transactions are exclusive, so there the lock is implicit).
async fn lock_model(ex: &mut Exec<'_>, name: &str) -> Result<ModelRow> {
    let lock = match ex.backend() {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    let sql =
        format!("SELECT name, preset, head_version, created_at FROM models WHERE name = $1{lock}");
    ex.fetch_optional(&sql, args![name])
        .await?
        .ok_or_else(|| StoreError::not_found(format!("model {name:?}")))
}

/// The error for an operation that needs a live task but found a finished one.
fn already_terminal(task: &TaskRow) -> StoreError {
    StoreError::FailedPrecondition(format!("task {} is already {}", task.id, task.state))
}

impl Store {
    /// Returns the model `name`, creating it with `preset` if it does not exist.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if the model exists with another preset: its checkpoints
    /// could not be loaded by a model of a different size.
    pub async fn create_model_if_absent(&self, name: &str, preset: &str) -> Result<ModelRow> {
        let mut tx = self.db.begin_write().await?;
        tx.exec()
            .execute(
                "INSERT INTO models (name, preset, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
                args![name, preset, now()],
            )
            .await?;
        let model = load_model(&mut tx.exec(), name).await?;
        tx.commit().await?;
        if model.preset != preset {
            return Err(StoreError::Invalid(format!(
                "model {name:?} uses preset {:?}, not {preset:?}",
                model.preset
            )));
        }
        Ok(model)
    }

    /// Reads one model.
    pub async fn get_model(&self, name: &str) -> Result<ModelRow> {
        load_model(&mut self.db.acquire().await?.exec(), name).await
    }

    /// All models, by name.
    pub async fn list_models(&self) -> Result<Vec<ModelRow>> {
        let mut conn = self.db.acquire().await?;
        Ok(conn
            .exec()
            .fetch_all(
                "SELECT name, preset, head_version, created_at FROM models ORDER BY name",
                args![],
            )
            .await?)
    }

    /// Stores a task (QUEUED) and its queue entry in one transaction.
    ///
    /// If the model already has a task with the same idempotency key, nothing is stored
    /// and that task is returned with `existing = true` — also when two submits race
    /// (the loser's insert conflicts and it reads the winner's task). `base_version` is
    /// left unset: it is the head when the task is claimed, not when it is submitted.
    ///
    /// # Errors
    /// `NotFound` if the model does not exist; `AlreadyExists` if the task id is taken.
    pub async fn submit_task(&self, new: NewTask) -> Result<Submitted> {
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        lock_model(&mut ex, &new.model).await?;
        if let Some(task) = find_by_key(&mut ex, &new.model, new.idempotency_key.as_deref()).await?
        {
            same_content(&mut ex, &task, &new).await?;
            return Ok(Submitted {
                task,
                existing: true,
            });
        }
        let usage = super::usage::usage_of(&mut ex, &new.submitted_by).await?;
        crate::quota::check_submit(
            &new.submitted_by,
            &new.quota,
            &usage,
            new.bundle_bytes.max(0) as u64,
        )?;
        if ex
            .fetch_optional::<(String,)>("SELECT id FROM tasks WHERE id = $1", args![&new.id])
            .await?
            .is_some()
        {
            return Err(StoreError::AlreadyExists {
                what: format!("task {}", new.id),
            });
        }
        // Strictly after the model's newest task even if this daemon's clock is behind
        // another's: submission time order must stay queue order.
        let newest: Option<(DateTime<Utc>,)> = ex
            .fetch_optional(
                "SELECT created_at FROM tasks WHERE model = $1 ORDER BY created_at DESC LIMIT 1",
                args![&new.model],
            )
            .await?;
        let at = match newest {
            Some((t,)) if t >= now() => t + chrono::Duration::microseconds(1),
            _ => now(),
        };
        let inserted = ex
            .execute(
                "INSERT INTO tasks (id, model, name, state, idempotency_key, settings_json, \
                 data_dir, n_train, n_eval, created_at, request_digest, sources_json, \
                 priority, submitted_by, bundle_bytes) \
                 VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                 ON CONFLICT (model, idempotency_key) DO NOTHING",
                args![
                    &new.id,
                    &new.model,
                    &new.name,
                    new.idempotency_key.clone(),
                    &new.settings_json,
                    &new.data_dir,
                    new.n_train,
                    new.n_eval,
                    at,
                    &new.request_digest,
                    new.sources_json.clone(),
                    new.priority,
                    &new.submitted_by,
                    new.bundle_bytes,
                ],
            )
            .await?;
        if inserted == 0 {
            // A concurrent submit with the same key committed first (Postgres).
            drop(tx);
            let mut conn = self.db.acquire().await?;
            let mut ex = conn.exec();
            let task = find_by_key(&mut ex, &new.model, new.idempotency_key.as_deref())
                .await?
                .ok_or_else(|| StoreError::not_found("task for the idempotency key"))?;
            same_content(&mut ex, &task, &new).await?;
            return Ok(Submitted {
                task,
                existing: true,
            });
        }
        ex.execute(
            "INSERT INTO jobs (task_id, model, state, enqueued_at) VALUES ($1, $2, 'queued', $3)",
            args![&new.id, &new.model, at],
        )
        .await?;
        let task = load_task(&mut ex, &new.id).await?;
        tx.commit().await?;
        Ok(Submitted {
            task,
            existing: false,
        })
    }

    /// Reads one task.
    pub async fn get_task(&self, id: &str) -> Result<TaskRow> {
        load_task(&mut self.db.acquire().await?.exec(), id).await
    }

    /// Lists tasks in submission order (`created_at`, then id), optionally filtered.
    /// Returns the page and the token of the next one (`None` on the last page).
    ///
    /// The token is an offset: new tasks sort after existing ones and tasks are never
    /// deleted, so pages stay stable while tasks are being submitted.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed token.
    pub async fn list_tasks(
        &self,
        model: Option<&str>,
        state: Option<TaskState>,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<(Vec<TaskRow>, Option<String>)> {
        // Keyset paging on (created_at, id): rows that change state or disappear between
        // pages never shift the next page, so no row is skipped or repeated.
        let after = decode_task_cursor(page_token)?;
        let limit = page_limit(page_size);
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks \
             WHERE ($1 IS NULL OR model = $1) AND ($2 IS NULL OR state = $2) \
               AND ($3 IS NULL OR created_at > $3 OR (created_at = $3 AND id > $4)) \
             ORDER BY created_at, id LIMIT $5"
        );
        let (at, id) = match after {
            Some((at, id)) => (Some(at), Some(id)),
            None => (None, None),
        };
        let mut conn = self.db.acquire().await?;
        // One extra row tells whether another page exists.
        let mut tasks: Vec<TaskRow> = conn
            .exec()
            .fetch_all(
                &sql,
                args![model, state.map(TaskState::as_str), at, id, limit + 1],
            )
            .await?;
        let next = (tasks.len() as i64 > limit).then(|| {
            tasks.truncate(limit as usize);
            let last = tasks.last().expect("a full page has a last row");
            format!("t2.{}.{}", last.created_at.timestamp_micros(), last.id)
        });
        Ok((tasks, next))
    }

    /// Cancels a task.
    ///
    /// - QUEUED: becomes CANCELLED at once and leaves the queue.
    /// - RUNNING: stays RUNNING with `cancel_requested = true`; the caller tells the
    ///   engine, which stops at a step boundary and calls [`Store::mark_cancelled`].
    ///   (A daemon that restarts before that cancels it in `requeue_*`.)
    ///
    /// # Errors
    /// `NotFound`; `FailedPrecondition` if the task already finished.
    pub async fn cancel_task(&self, id: &str) -> Result<TaskRow> {
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        let at = now();
        // Taking the job out of the queue first means a concurrent claim (Postgres) either
        // got it before us (0 rows: handle it as running) or never will.
        let dequeued = ex
            .execute(
                "UPDATE jobs SET state = 'done' WHERE task_id = $1 AND state = 'queued'",
                args![id],
            )
            .await?;
        if dequeued == 1 {
            ex.execute(
                "UPDATE tasks SET state = 'cancelled', finished_at = $2 WHERE id = $1",
                args![id, at],
            )
            .await?;
        } else {
            let task = load_task(&mut ex, id).await?;
            if task.state.is_terminal() {
                return Err(already_terminal(&task));
            }
            ex.execute(
                "UPDATE tasks SET cancel_requested = TRUE WHERE id = $1",
                args![id],
            )
            .await?;
        }
        let task = load_task(&mut ex, id).await?;
        if dequeued == 1 {
            outbox::task_ended(&mut ex, &self.webhooks, &task, None).await?;
        }
        tx.commit().await?;
        Ok(task)
    }

    /// Records that the engine stopped the job's task because of a cancel: CANCELLED,
    /// finished, out of the queue.
    ///
    /// # Errors
    /// `LeaseLost` if `lease` no longer holds the job (nothing changes).
    pub async fn mark_cancelled(&self, lease: &Lease) -> Result<TaskRow> {
        self.finish_without_version(&lease.task_id, TaskState::Cancelled, None, Some(lease))
            .await
    }

    /// Marks a queued or running task FAILED with `error` and takes it out of the queue
    /// (an operator's or the daemon's decision; a worker uses [`Store::fail_job`]).
    ///
    /// # Errors
    /// `NotFound`; `FailedPrecondition` if the task already finished.
    pub async fn fail_task(&self, id: &str, error: &str) -> Result<TaskRow> {
        self.finish_without_version(id, TaskState::Failed, Some(error), None)
            .await
    }

    /// Marks the job's task FAILED with `error` if `lease` still holds the job.
    ///
    /// # Errors
    /// `LeaseLost` if it does not (nothing changes).
    pub async fn fail_job(&self, lease: &Lease, error: &str) -> Result<TaskRow> {
        self.finish_without_version(&lease.task_id, TaskState::Failed, Some(error), Some(lease))
            .await
    }

    /// Shared by cancel and fail: a terminal state that produces no version; only while
    /// `lease` holds the job, if given.
    async fn finish_without_version(
        &self,
        id: &str,
        state: TaskState,
        error: Option<&str>,
        lease: Option<&Lease>,
    ) -> Result<TaskRow> {
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        // Job first, then task: every transaction touching both locks them in this order
        // (jobs, models, tasks), so concurrent ones cannot deadlock on Postgres. A job is
        // done exactly when its task is terminal.
        // A worker's own close keeps its worker and epoch on the job, so that it may still
        // append the terminal event; anyone else's close takes the job from its worker.
        let closed = match lease {
            None => {
                let sql = "UPDATE jobs SET state = 'done', worker_id = NULL, lease_until = NULL \
                           WHERE task_id = $1 AND state <> 'done'";
                ex.execute(sql, args![id]).await?
            }
            Some(l) => {
                let sql =
                    format!("UPDATE jobs SET state = 'done', lease_until = NULL WHERE {HELD}");
                ex.execute(&sql, args![id, &l.worker_id, l.epoch]).await?
            }
        };
        match lease {
            Some(l) if closed == 0 => return Err(lease_lost(l)),
            None if closed == 0 => return Err(already_terminal(&load_task(&mut ex, id).await?)),
            _ => {}
        }
        ex.execute(
            "UPDATE tasks SET state = $2, error = $3, finished_at = $4 WHERE id = $1",
            args![id, state.as_str(), error, now()],
        )
        .await?;
        let task = load_task(&mut ex, id).await?;
        outbox::task_ended(&mut ex, &self.webhooks, &task, None).await?;
        tx.commit().await?;
        Ok(task)
    }
}

/// Decodes a ListTasks page token `t2.<created_at µs>.<task id>` (empty: the first page).
fn decode_task_cursor(token: Option<&str>) -> Result<Option<(DateTime<Utc>, String)>> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    token
        .strip_prefix("t2.")
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(micros, id)| {
            let at = DateTime::<Utc>::from_timestamp_micros(micros.parse().ok()?)?;
            (!id.is_empty()).then(|| (at, id.to_string()))
        })
        .map(Some)
        .ok_or_else(|| StoreError::Invalid(format!("invalid page token {token:?}")))
}

/// Refuses a reused idempotency key whose first task was submitted with other content.
async fn same_content(ex: &mut Exec<'_>, task: &TaskRow, new: &NewTask) -> Result<()> {
    let (stored,): (Option<String>,) = ex
        .fetch_one(
            "SELECT request_digest FROM tasks WHERE id = $1",
            args![&task.id],
        )
        .await?;
    match stored {
        Some(d) if d != new.request_digest => Err(StoreError::AlreadyExists {
            what: format!(
                "idempotency key {:?} of model {:?} was used for different content (task {}; use a new key for a new upload), and that task",
                new.idempotency_key.as_deref().unwrap_or_default(),
                new.model,
                task.id
            ),
        }),
        _ => Ok(()),
    }
}

/// The model's task with this idempotency key, if any (`None` key: never a match).
impl Store {
    /// Whether `model` has a task submitted with idempotency `key` (`None`: no).
    pub async fn has_key(&self, model: &str, key: Option<&str>) -> Result<bool> {
        let mut conn = self.db.acquire().await?;
        Ok(find_by_key(&mut conn.exec(), model, key).await?.is_some())
    }
}

async fn find_by_key(ex: &mut Exec<'_>, model: &str, key: Option<&str>) -> Result<Option<TaskRow>> {
    let Some(key) = key else {
        return Ok(None);
    };
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE model = $1 AND idempotency_key = $2");
    Ok(ex.fetch_optional(&sql, args![model, key]).await?)
}
