//! The dispatcher: claims queued jobs from the store (FIFO per model, one running per model),
//! runs each on the engine, streams its events into the store and to watchers, evaluates the new
//! version on every task of its lineage and commits version + evaluation + forgetting in one
//! transaction. Training never runs inside an RPC.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

pub mod anchors;
mod data;
mod error;
mod events;
mod finish;
mod gate;
mod lease;
mod orphans;
mod preempt;

pub use crate::state::Running;
pub use error::RunError;
pub use lease::{identity, reap, Fence};
pub use orphans::{clean_orphans, sweep_forever, Sweep};

use crate::state::AppState;
use crate::store::{ClaimedJob, VersionRow};
use crate::task::{ReplaySettings, StoredEvent, TaskSettings};
use crate::trainer::{Control, ReplayPool, TrainOutcome, TrainRequest, VersionRef};
use data::{load_probe, load_split};

/// How often an idle dispatcher records that it is alive (well within `schedule::ALIVE`).
const SEEN_EVERY: Duration = Duration::from_secs(5);

/// Loop until shutdown: claim, run, repeat.
pub async fn run(state: Arc<AppState>) {
    let mut shutdown = state.hub.shutdown_signal();
    let mut seen: Option<std::time::Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Alive and idle, for other daemons' preemption decisions (`store::schedule`).
        if seen.is_none_or(|t| t.elapsed() >= SEEN_EVERY) {
            match state.store.worker_seen(&state.worker_id).await {
                Ok(()) => seen = Some(std::time::Instant::now()),
                Err(e) => {
                    tracing::warn!(error.message = %e, "Recording this dispatcher as alive failed")
                }
            }
        }
        let lease = Duration::from_secs(state.settings.lease_seconds);
        match state.store.claim_next_job(&state.worker_id, lease).await {
            Ok(Some(job)) => {
                let id = job.task.id.clone();
                tracing::info!(task_id = %id, model = %job.task.model, epoch = job.epoch, "Claimed task");
                let fence = Fence::new(state.clone(), &job, Control::new_flag());
                let heartbeat = lease::keep_alive(fence.clone());
                if let Err(e) = run_until_space(&state, job, &fence).await {
                    fail(&fence, e).await;
                }
                heartbeat.abort();
                state.metrics.refresh(&state.store).await;
            }
            Ok(None) => {
                tokio::select! {
                    _ = state.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error.message = %e, "Claiming a job failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Runs a claimed job; a run that fails for lack of disk space is not the task's fault, so it
/// waits (health NOT_SERVING meanwhile) and runs again from its last recorded checkpoint until
/// it gets through, instead of failing an accepted task.
async fn run_until_space(
    state: &Arc<AppState>,
    mut job: ClaimedJob,
    fence: &Fence,
) -> Result<(), RunError> {
    let mut wait = Duration::from_secs(2);
    let mut shutdown = state.hub.shutdown_signal();
    loop {
        let result = run_job(state, job.clone(), fence).await;
        let err = match result {
            Err(e) if e.is_out_of_space() && !state.is_draining() && !fence.lost() => e,
            other => {
                state.storage.set_starved(false);
                return other;
            }
        };
        state.storage.set_starved(true);
        tracing::error!(task_id = %job.task.id, error.message = %err.chain(), retry_in_s = wait.as_secs(), "Out of disk space; the task waits and retries");
        let msg = format!(
            "out of disk space ({}); retrying in {} s",
            err.chain(),
            wait.as_secs()
        );
        let _ = fence.emit(StoredEvent::Log { message: msg }).await;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {
                state.storage.set_starved(false);
                return Ok(fence.release().await?);
            }
        }
        wait = (wait * 2).min(Duration::from_secs(60));
        if fence.lost() {
            state.storage.set_starved(false);
            return Err(RunError::LeaseLost(
                "lease lost while waiting for disk space".into(),
            ));
        }
        // Resume from the newest checkpoint the failed run recorded, if any.
        if let Some(p) = fence.recorded() {
            job.resume_checkpoint = Some(state.data.to_stored(&p));
            job.resume_step = None;
        }
    }
}

/// Records a run's failure (task FAILED, terminal event), unless its lease was lost: then
/// the task belongs to another worker and nothing is written.
async fn fail(fence: &Fence, e: RunError) {
    let id = &fence.lease().task_id;
    let e = e.chain();
    if fence.lost() {
        tracing::warn!(task_id = %id, error.message = %e, "Run stopped after losing its lease");
        return;
    }
    tracing::error!(task_id = %id, error.message = %e, "Task failed");
    if fence.fail(&e).await.is_ok() {
        fence.drop_resume_point();
        let ev = StoredEvent::Terminal {
            state: "failed".into(),
            error: e,
            produced_version: None,
            rejection: None,
        };
        let _ = fence.emit(ev).await;
    }
}

async fn run_job(state: &Arc<AppState>, job: ClaimedJob, fence: &Fence) -> Result<(), RunError> {
    let task = job.task.clone();
    let settings: TaskSettings = serde_json::from_str(&task.settings_json)
        .map_err(|e| RunError::Data(format!("stored settings: {e}")))?;
    let model_cfg = settings.model_config();
    let size = model_cfg.image_size as u32;
    let parent = match task.base_version {
        Some(v) => Some(
            fence
                .call("reading the parent version", || {
                    state.store.get_version(&task.model, v)
                })
                .await?,
        ),
        None => None,
    };
    let lineage = match &parent {
        Some(p) => {
            fence
                .call("reading the lineage", || {
                    state.store.lineage(&task.model, p.version)
                })
                .await?
        }
        None => Vec::new(),
    };
    let samples = load_split(state, fence, &task.data_dir, false, size).await?;
    let probe = load_probe(state, fence, &task.data_dir, size).await?;
    let replay = replay_pools(
        state,
        fence,
        &settings.replay,
        &lineage,
        settings.batch_size,
        size,
    )
    .await?;
    // Files of this claim only (its epoch in the name): a stale worker never writes a file
    // another claim uses.
    let claim = format!("{}.{}", task.id, job.epoch);
    let resume_path = state.data.resume_checkpoint(&claim);
    lease::remove_earlier_scratch(&resume_path, &task.id, job.epoch);
    let resume = resume_point(state, fence, &job).await?;
    if let Some(step) = job.resume_step.filter(|_| resume.is_some()) {
        let msg = format!(
            "resuming from the step-{step} checkpoint (attempt {})",
            job.attempts
        );
        fence.emit(StoredEvent::Log { message: msg }).await?;
    }
    let control = fence.control().clone();
    if task.cancel_requested {
        control.store(Control::CANCEL, Ordering::SeqCst);
    }
    let preemption = preempt::watch(state, &task.id, control.clone());
    let req = TrainRequest {
        model: model_cfg.clone(),
        train: settings.train_config(),
        task_index: lineage.len() as i64,
        parent: match &parent {
            Some(p) => Some(version_ref(state, fence, p).await?),
            None => None,
        },
        resume,
        samples,
        replay,
        probe,
        out_version: state.data.version_checkpoint(&claim),
        resume_path: resume_path.clone(),
        control: control.clone(),
    };
    *state.running.task.lock().expect("running lock poisoned") =
        Some((task.id.clone(), control.clone()));
    let (tx, rx) = mpsc::unbounded_channel();
    let engine = state.engine.clone();
    let train = tokio::spawn(async move { engine.train(req, tx).await });
    let pumped = events::pump_events(state, fence, &settings, &task.submitted_by, rx).await;
    if pumped.is_err() {
        // Nothing more of this run can be recorded: stop training at the next step.
        control.store(Control::CANCEL, Ordering::SeqCst);
    }
    let outcome = train.await.map_err(|e| RunError::Panicked {
        what: "the engine call",
        why: e.to_string(),
    })?;
    *state.running.task.lock().expect("running lock poisoned") = None;
    let _ = std::fs::remove_file(&resume_path);
    if let (Err(_), Ok(TrainOutcome::Completed { version_path, .. })) = (&pumped, &outcome) {
        // A failed run leaves no version file behind.
        let _ = std::fs::remove_file(version_path);
    }
    pumped?;
    match outcome? {
        TrainOutcome::Completed {
            version_path,
            sha256,
            momentum_steps,
            syncs,
            ..
        } => {
            let v = VersionRef {
                path: version_path.clone(),
                sha256,
            };
            let finished = finish::finish(
                state,
                fence,
                &task,
                &settings,
                &lineage,
                parent.as_ref(),
                v,
                syncs.len() as i64,
                momentum_steps,
            )
            .await;
            if finished.is_err() && !fence.committed() {
                // Not committed: the file is nobody's.
                let _ = std::fs::remove_file(&version_path);
            }
            finished?;
            fence.drop_resume_point();
            Ok(())
        }
        // Stopped because another worker holds the task now: write nothing.
        TrainOutcome::Cancelled { step } if fence.lost() => Err(RunError::LeaseLost(format!(
            "lease lost; stopped at step {step}"
        ))),
        TrainOutcome::Cancelled { step } => {
            fence.cancelled().await?;
            fence.drop_resume_point();
            let ev = StoredEvent::Terminal {
                state: "cancelled".into(),
                error: format!("cancelled at step {step}"),
                produced_version: None,
                rejection: None,
            };
            fence.emit(ev).await?;
            Ok(())
        }
        TrainOutcome::Paused { step, .. } if preemption.by().is_some() => {
            let by = preemption.by().unwrap_or_default();
            preempt::yielded(state, fence, step, by, task.preemptions).await?;
            state.wake.notify_one();
            Ok(())
        }
        TrainOutcome::Paused { step, .. } => {
            // Graceful shutdown: the event pump recorded the checkpoint; the job goes back
            // to the queue, and this or another daemon resumes it there.
            let msg = format!("daemon stopping; checkpointed at step {step}, training resumes there after restart or on another daemon");
            fence.emit(StoredEvent::Log { message: msg }).await?;
            fence.release().await?;
            Ok(())
        }
    }
}

/// A verified local copy of a version's checkpoint (fetched into the cache from object
/// storage; the data dir's own file otherwise).
pub(super) async fn version_ref(
    state: &AppState,
    fence: &Fence,
    v: &VersionRow,
) -> Result<VersionRef, RunError> {
    let path = fence
        .objects("fetching a version checkpoint", || {
            state.objects.local(&v.checkpoint_path, &v.sha256)
        })
        .await?;
    Ok(VersionRef {
        path,
        sha256: v.sha256.clone(),
    })
}

/// The checkpoint an interrupted run recorded, as a local file: from the data dir, or (object
/// storage, recorded with its hash) fetched and verified, so a daemon on another host resumes
/// exactly where the dead one stopped. `None` = start from step 0 (nothing recorded, or the
/// file is gone).
async fn resume_point(
    state: &AppState,
    fence: &Fence,
    job: &ClaimedJob,
) -> Result<Option<std::path::PathBuf>, RunError> {
    let Some(stored) = job.resume_checkpoint.as_deref() else {
        return Ok(None);
    };
    match job.resume_sha256.as_deref() {
        Some(sha) if !state.objects.is_local() => {
            let fetched = fence
                .objects("fetching the resume checkpoint", || {
                    state.objects.local(stored, sha)
                })
                .await;
            match fetched {
                Ok(p) => Ok(Some(p)),
                Err(RunError::Objects(ctp_storage::StorageError::NotFound { .. })) => Ok(None),
                Err(e) => Err(e),
            }
        }
        _ => Ok(Some(state.data.resolve(stored)).filter(|p| p.exists())),
    }
}

/// The replay pools of a task whose parent has `lineage` (root first, parent last).
async fn replay_pools(
    state: &AppState,
    fence: &Fence,
    settings: &ReplaySettings,
    lineage: &[VersionRow],
    batch_size: u32,
    size: u32,
) -> Result<Vec<ReplayPool>, RunError> {
    let per_batch = settings.per_task(lineage.len(), batch_size);
    if per_batch == 0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(lineage.len());
    for v in lineage {
        let t = state.store.get_task(&v.task_id).await?;
        let samples = load_split(state, fence, &t.data_dir, false, size)
            .await
            .map_err(|e| RunError::Replay {
                task_id: t.id.clone(),
                name: t.name.clone(),
                source: Box::new(e),
            })?;
        out.push(ReplayPool { samples, per_batch });
    }
    Ok(out)
}
