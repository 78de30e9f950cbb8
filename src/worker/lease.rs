//! Holding a job: the fence every write of a run goes through, the heartbeat that keeps
//! the lease, the reaper that takes jobs away from dead workers, and the worker's identity.
//!
//! - Every store call of a run goes through [`Fence::call`]: a connection error is retried
//!   with backoff while training holds at the next step boundary ([`Control::HOLD`]), and
//!   training continues when a call succeeds again.
//! - A write refused with `LeaseLost` (another worker took the job over) sets the run's
//!   control flag to stop at the next step boundary; from then on the fence refuses every
//!   write itself, so the run stores nothing more and cancels nothing.
//! - Files a run writes are its own: the engine's scratch resume file and the version file
//!   are named after the claim's epoch, and a recorded resume point is a hard link that is
//!   never written again, so the step recorded in the database is the step in the file.
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::RunError;
use crate::config::Settings;
use crate::state::AppState;
use crate::store::{ClaimedJob, Lease, StoreError, TaskRow, VersionRow};
use crate::task::StoredEvent;
use crate::trainer::Control;

/// Longest wait between two tries of a store call while the database is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The lease of one run and what it wrote; shared by the run, its event pump and its
/// heartbeat.
pub struct Fence {
    state: Arc<AppState>,
    lease: Lease,
    control: Arc<AtomicU8>,
    lost: AtomicBool,
    /// Set once the run's version is committed.
    committed: AtomicBool,
    /// The resume checkpoint the database points at (inherited from an earlier claim,
    /// then this run's newest); removed once superseded or once the job is finished.
    recorded: Mutex<Option<PathBuf>>,
}

impl Fence {
    /// A fence for a freshly claimed job, with the run's control flag.
    pub fn new(state: Arc<AppState>, job: &ClaimedJob, control: Arc<AtomicU8>) -> Arc<Fence> {
        Arc::new(Fence {
            lease: job.lease(),
            control,
            lost: AtomicBool::new(false),
            committed: AtomicBool::new(false),
            recorded: Mutex::new(
                job.resume_checkpoint
                    .as_deref()
                    .map(|p| state.data.resolve(p)),
            ),
            state,
        })
    }

    /// The resume checkpoint the database points at now, if any.
    pub fn recorded(&self) -> Option<PathBuf> {
        self.recorded.lock().expect("fence lock").clone()
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    pub fn control(&self) -> &Arc<AtomicU8> {
        &self.control
    }

    /// True once the job was found taken over: the run must write nothing more.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// True once the run's version is committed (its file is referenced).
    pub fn committed(&self) -> bool {
        self.committed.load(Ordering::SeqCst)
    }

    fn lose(&self) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            tracing::error!(task_id = %self.lease.task_id, epoch = self.lease.epoch,
                "Lease lost: another worker holds this task now; stopping without writing");
        }
        self.control.store(Control::CANCEL, Ordering::SeqCst);
    }

    /// Training waits at the next step boundary (unless it is stopping anyway).
    fn hold(&self) {
        let _ = self.control.compare_exchange(
            Control::RUN,
            Control::HOLD,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    fn unhold(&self) {
        let _ = self.control.compare_exchange(
            Control::HOLD,
            Control::RUN,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// Runs a store call of this run: retried with backoff while the database is
    /// unreachable (training holds meanwhile); refused without calling once the lease
    /// is lost.
    pub async fn call<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut delay = Duration::from_millis(100);
        loop {
            if self.lost() {
                return Err(StoreError::LeaseLost {
                    task_id: self.lease.task_id.clone(),
                });
            }
            match op().await {
                Ok(v) => {
                    self.unhold();
                    return Ok(v);
                }
                Err(e) if e.is_transient() => {
                    self.hold();
                    tracing::warn!(task_id = %self.lease.task_id, what,
                        error.message = %crate::errors::error_chain(&e), retry_in = ?delay,
                        "Database unavailable; training holds and the call is retried");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
                Err(e @ StoreError::LeaseLost { .. }) => {
                    self.lose();
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs an object storage call of this run: retried with backoff while the store is
    /// unreachable (training holds meanwhile, exactly as for a database outage); refused
    /// without calling once the lease is lost.
    pub async fn objects<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, RunError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ctp_storage::StorageError>>,
    {
        let mut delay = Duration::from_millis(100);
        loop {
            if self.lost() {
                return Err(RunError::LeaseLost(format!(
                    "lease on task {} lost while {what}",
                    self.lease.task_id
                )));
            }
            match op().await {
                Ok(v) => {
                    self.unhold();
                    return Ok(v);
                }
                Err(e) if e.is_unavailable() => {
                    self.hold();
                    tracing::warn!(task_id = %self.lease.task_id, what,
                        error.message = %crate::errors::error_chain(&e), retry_in = ?delay,
                        "Object storage unavailable; training holds and the call is retried");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Persists and publishes an event of the run.
    pub async fn emit(&self, ev: StoredEvent) -> Result<i64, StoreError> {
        let st = &self.state;
        self.call("appending an event", || {
            st.hub.emit_as(&st.store, &self.lease, ev.clone())
        })
        .await
    }

    /// Stores the run's progress (JSON) for `GetTask`.
    pub async fn progress(&self, json: &str) -> Result<(), StoreError> {
        let st = &self.state;
        self.call("storing progress", || {
            st.store.update_progress(&self.lease, json)
        })
        .await
    }

    /// Records the engine's checkpoint at `path` (sha256 `sha`, step `step`) as the resume
    /// point. The file is pinned first under a name of its own (a hard link that nothing
    /// writes again) and checked against `sha`, so the engine's next checkpoint cannot
    /// change what was recorded. The checkpoint it supersedes is removed.
    pub async fn checkpoint(&self, path: &Path, step: i64, sha: &str) -> Result<(), RunError> {
        let Some(pinned) = pin(path, step, sha).await else {
            return Ok(());
        };
        let text = self.state.data.to_stored(&pinned);
        let st = &self.state;
        // Where a daemon on another host can resume from it (object storage) before the row
        // names it; its name carries the claim's epoch and step, so no other claim writes it.
        let published = self
            .objects("storing the resume checkpoint", || {
                st.objects.publish(&pinned, sha)
            })
            .await;
        if let Err(e) = published {
            let _ = std::fs::remove_file(&pinned);
            return Err(e);
        }
        let recorded = self
            .call("recording the resume checkpoint", || {
                st.store
                    .set_resume_checkpoint(&self.lease, &text, step, sha)
            })
            .await;
        if let Err(e) = recorded {
            let _ = std::fs::remove_file(&pinned);
            return Err(e.into());
        }
        let old = self
            .recorded
            .lock()
            .expect("fence lock")
            .replace(pinned.clone());
        if let Some(old) = old.filter(|o| *o != pinned) {
            let _ = std::fs::remove_file(&old);
            self.delete_object(&old);
        }
        Ok(())
    }

    /// Deletes the object of a resume point this run superseded (object storage only).
    fn delete_object(&self, local: &Path) {
        if self.state.objects.is_local() {
            return;
        }
        let (objects, key) = (self.state.objects.clone(), self.state.data.to_stored(local));
        tokio::spawn(async move { objects.delete_superseded(&key).await });
    }

    /// Removes the recorded resume checkpoint: call once the job is finished, never
    /// after the lease was lost (the new holder may resume from it).
    pub fn drop_resume_point(&self) {
        if self.lost() {
            return;
        }
        let old = self.recorded.lock().expect("fence lock").take();
        if let Some(old) = old {
            let _ = std::fs::remove_file(&old);
            self.delete_object(&old);
        }
    }

    /// Commits the version; if the reply to a commit was lost (the database dropped the
    /// connection), the retry sees the job done and the commit is looked up instead.
    pub async fn finish(&self, new: crate::store::NewVersion) -> Result<VersionRow, StoreError> {
        let v = self.commit(new).await?;
        self.committed.store(true, Ordering::SeqCst);
        Ok(v)
    }

    async fn commit(&self, new: crate::store::NewVersion) -> Result<VersionRow, StoreError> {
        let st = &self.state;
        let mut tried = false;
        let first = self
            .call("committing the version", || {
                let again = std::mem::replace(&mut tried, true);
                let new = new.clone();
                async move {
                    match st.store.finish_task(&self.lease, new).await {
                        Err(StoreError::LeaseLost { .. }) if again => Ok(None),
                        other => other.map(Some),
                    }
                }
            })
            .await?;
        if let Some(v) = first {
            return Ok(v);
        }
        let task: TaskRow = self
            .call("reading the task", || {
                st.store.get_task(&self.lease.task_id)
            })
            .await?;
        if let Some(n) = task.produced_version {
            let v = self
                .call("reading the version", || {
                    st.store.get_version(&task.model, n)
                })
                .await?;
            if v.checkpoint_path == new.checkpoint_path {
                return Ok(v);
            }
        }
        self.lose();
        Err(StoreError::LeaseLost {
            task_id: self.lease.task_id.clone(),
        })
    }

    /// Records the cancel that stopped the run.
    pub async fn cancelled(&self) -> Result<TaskRow, StoreError> {
        let st = &self.state;
        self.call("marking the task cancelled", || {
            st.store.mark_cancelled(&self.lease)
        })
        .await
    }

    /// Marks the task failed with `error`, unless the lease is lost.
    pub async fn fail(&self, error: &str) -> Result<TaskRow, StoreError> {
        let st = &self.state;
        self.call("marking the task failed", || {
            st.store.fail_job(&self.lease, error)
        })
        .await
    }

    /// Gives the job back to the queue (graceful shutdown): another daemon, or this one
    /// after its restart, resumes it from the recorded checkpoint.
    pub async fn release(&self) -> Result<(), StoreError> {
        let st = &self.state;
        self.call("releasing the job", || st.store.release_job(&self.lease))
            .await
    }
}

/// Removes the scratch resume files of the task's earlier claims (`<task>.<epoch>.safetensors`
/// beside `scratch`, this claim's): a worker that died left its own behind. Recorded resume
/// points have names of their own (see [`Fence::checkpoint`]) and are kept.
pub fn remove_earlier_scratch(scratch: &Path, task_id: &str, epoch: i64) {
    for e in 1..epoch {
        let _ = std::fs::remove_file(scratch.with_file_name(format!("{task_id}.{e}.safetensors")));
    }
}

/// Links the checkpoint at `path` to `<stem>.<step>.safetensors` beside it and checks its
/// hash; `None` (logged) if the engine already replaced the file or the link failed.
async fn pin(path: &Path, step: i64, sha: &str) -> Option<PathBuf> {
    let stem = path.file_stem()?.to_string_lossy().into_owned();
    let pinned = path.with_file_name(format!("{stem}.{step}.safetensors"));
    let (src, dst, want) = (path.to_path_buf(), pinned.clone(), sha.to_owned());
    let ok = tokio::task::spawn_blocking(move || {
        if dst.exists() {
            // Pinned already: the same step was checkpointed twice (a pause right after a
            // periodic checkpoint).
            return Ok(());
        }
        std::fs::hard_link(&src, &dst)?;
        let got = crate::trainer::checkpoint::sha256_file(&dst).map_err(std::io::Error::other)?;
        if got != want {
            let _ = std::fs::remove_file(&dst);
            return Err(std::io::Error::other(
                "the file changed since it was written",
            ));
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    match ok {
        Ok(Ok(())) => Some(pinned),
        Ok(Err(e)) => {
            tracing::warn!(path = %path.display(), step, error.message = %e,
                "Checkpoint not recorded as resume point");
            None
        }
        Err(e) => {
            tracing::warn!(error.message = %e, "Pinning a checkpoint panicked");
            None
        }
    }
}

/// Renews the lease every third of its length until aborted; relays a cancel requested
/// through any daemon, holds training while the database is unreachable (retrying with
/// backoff, so training continues soon after it is back), and stops the run once the
/// lease is lost.
pub fn keep_alive(fence: Arc<Fence>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let lease = Duration::from_secs(fence.state.settings.lease_seconds);
        let period = lease / 3;
        let mut retry = Duration::from_millis(100);
        loop {
            let wait = match fence.state.store.heartbeat(&fence.lease, lease).await {
                Ok(cancel) => {
                    fence.unhold();
                    if cancel {
                        fence.control.store(Control::CANCEL, Ordering::SeqCst);
                    }
                    retry = Duration::from_millis(100);
                    period
                }
                Err(StoreError::LeaseLost { .. }) => {
                    fence.lose();
                    return;
                }
                Err(e) => {
                    if e.is_transient() {
                        fence.hold();
                    }
                    tracing::warn!(task_id = %fence.lease.task_id,
                        error.message = %crate::errors::error_chain(&e), "Heartbeat failed");
                    retry = (retry * 2).min(MAX_BACKOFF);
                    retry.min(period)
                }
            };
            tokio::time::sleep(wait).await;
        }
    })
}

/// How often the reaper looks for expired leases: `reap_seconds`, or half the lease.
pub fn reap_period(settings: &Settings) -> Duration {
    match settings.reap_seconds {
        0 => Duration::from_secs(settings.lease_seconds.max(1)) / 2,
        s => Duration::from_secs(s),
    }
}

/// The reaper, in every daemon: puts jobs whose lease expired back in the queue (same
/// position, resume checkpoint kept), so a dead daemon's task is taken over within the
/// lease plus one period.
pub async fn reap(state: Arc<AppState>) {
    let mut shutdown = state.hub.shutdown_signal();
    let mut tick = tokio::time::interval(reap_period(&state.settings));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match state.store.requeue_expired().await {
            Ok(ids) if ids.is_empty() => {}
            Ok(ids) => {
                tracing::warn!(tasks = ?ids, "Requeued tasks whose worker's lease expired");
                for id in &ids {
                    let message =
                        "requeued: the lease of the worker running it expired".to_string();
                    let _ = state
                        .hub
                        .emit(&state.store, id, StoredEvent::Log { message })
                        .await;
                }
                state.wake.notify_one();
            }
            Err(e) => tracing::warn!(error.message = %crate::errors::error_chain(&e),
                "Reaping expired leases failed"),
        }
    }
}

/// The worker identity in the job table: `worker_id` if configured, else host name and
/// gRPC port. It is stable across restarts of one daemon, so a restarted daemon reclaims
/// the jobs its previous process held at once; two live daemons must never share it.
pub fn identity(settings: &Settings, addr: std::net::SocketAddr) -> String {
    if !settings.worker_id.is_empty() {
        return settings.worker_id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_else(|_| "host".into());
    format!("{}:{}", host.trim(), addr.port())
}
