//! The dispatcher: claims queued jobs from the store (FIFO per model, one running per model),
//! runs each on the engine, streams its events into the store and to watchers, evaluates the new
//! version on every task of its lineage and commits version + evaluation + forgetting in one
//! transaction. Training never runs inside an RPC.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

mod events;
mod finish;
mod gate;
mod lease;
mod orphans;
pub mod replay;

pub use crate::state::Running;
pub use lease::{identity, reap, Fence};
pub use orphans::clean_orphans;

use crate::api::convert::{StoredEvent, TaskSettings};
use crate::images::ImageLimits;
use crate::state::AppState;
use crate::store::{ClaimedJob, StoreError, VersionRow};
use crate::taskdata::{self, StoredSample};
use crate::trainer::{Control, ReplayPool, Sample, TrainOutcome, TrainRequest, VersionRef};
use replay::ReplaySettings;

/// Loop until shutdown: claim, run, repeat.
pub async fn run(state: Arc<AppState>) {
    let mut shutdown = state.hub.shutdown_signal();
    loop {
        if *shutdown.borrow() {
            break;
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
) -> Result<(), String> {
    let mut wait = Duration::from_secs(2);
    let mut shutdown = state.hub.shutdown_signal();
    loop {
        let result = run_job(state, job.clone(), fence).await;
        let err = match result {
            Err(e)
                if crate::api::status::is_out_of_space(&e)
                    && !state.is_draining()
                    && !fence.lost() =>
            {
                e
            }
            other => {
                state.storage.set_starved(false);
                return other;
            }
        };
        state.storage.set_starved(true);
        tracing::error!(task_id = %job.task.id, error.message = %err, retry_in_s = wait.as_secs(), "Out of disk space; the task waits and retries");
        let msg = format!(
            "out of disk space ({err}); retrying in {} s",
            wait.as_secs()
        );
        let _ = fence.emit(StoredEvent::Log { message: msg }).await;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {
                state.storage.set_starved(false);
                return fence.release().await.map_err(store_err);
            }
        }
        wait = (wait * 2).min(Duration::from_secs(60));
        if fence.lost() {
            state.storage.set_starved(false);
            return Err("lease lost while waiting for disk space".into());
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
async fn fail(fence: &Fence, e: String) {
    let id = &fence.lease().task_id;
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

fn decode(
    samples: &[StoredSample],
    size: u32,
    limits: &ImageLimits,
) -> Result<Vec<Sample>, String> {
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            crate::images::decode_rgb(&s.image, limits, size)
                .map(|pixels| Sample {
                    pixels,
                    caption: s.caption.clone(),
                })
                .map_err(|e| format!("sample {i} ({}): {e}", s.id))
        })
        .collect()
}

/// Reads a task's bundle (`stored`: its row's path) and decodes one split (`eval` or train)
/// at the preset's image size.
pub(super) async fn load_split(
    state: &AppState,
    stored: &str,
    eval: bool,
    size: u32,
) -> Result<Vec<Sample>, String> {
    let path = state.data.resolve(stored);
    let limits = state.image_limits();
    tokio::task::spawn_blocking(move || {
        let all = taskdata::read_bundle(&path).map_err(|e| format!("task data: {e}"))?;
        let split: Vec<StoredSample> = all.into_iter().filter(|s| s.eval == eval).collect();
        decode(&split, size, &limits)
    })
    .await
    .map_err(|e| format!("decoding task data panicked: {e}"))?
}

pub(super) fn store_err(e: StoreError) -> String {
    crate::api::status::error_chain(&e)
}

/// Where a version's checkpoint is, in this data dir.
pub fn version_ref(state: &AppState, v: &VersionRow) -> VersionRef {
    VersionRef {
        path: state.data.resolve(&v.checkpoint_path),
        sha256: v.sha256.clone(),
    }
}

async fn run_job(state: &Arc<AppState>, job: ClaimedJob, fence: &Fence) -> Result<(), String> {
    let task = job.task.clone();
    let settings: TaskSettings =
        serde_json::from_str(&task.settings_json).map_err(|e| format!("stored settings: {e}"))?;
    let model_cfg = settings.model_config();
    let size = model_cfg.image_size as u32;
    let parent = match task.base_version {
        Some(v) => Some(
            fence
                .call("reading the parent version", || {
                    state.store.get_version(&task.model, v)
                })
                .await
                .map_err(store_err)?,
        ),
        None => None,
    };
    let lineage = match &parent {
        Some(p) => fence
            .call("reading the lineage", || {
                state.store.lineage(&task.model, p.version)
            })
            .await
            .map_err(store_err)?,
        None => Vec::new(),
    };
    let samples = load_split(state, &task.data_dir, false, size).await?;
    let replay = replay_pools(state, &settings.replay, &lineage, settings.batch_size, size).await?;
    // Files of this claim only (its epoch in the name): a stale worker never writes a file
    // another claim uses.
    let claim = format!("{}.{}", task.id, job.epoch);
    let resume_path = state.data.resume_checkpoint(&claim);
    lease::remove_earlier_scratch(&resume_path, &task.id, job.epoch);
    let resume = job
        .resume_checkpoint
        .as_deref()
        .map(|p| state.data.resolve(p))
        .filter(|p| p.exists());
    if let Some(step) = job.resume_step.filter(|_| resume.is_some()) {
        let msg = format!(
            "resuming from the step-{step} checkpoint (attempt {})",
            job.attempts
        );
        fence
            .emit(StoredEvent::Log { message: msg })
            .await
            .map_err(store_err)?;
    }
    let control = fence.control().clone();
    if task.cancel_requested {
        control.store(Control::CANCEL, Ordering::SeqCst);
    }
    let req = TrainRequest {
        model: model_cfg.clone(),
        train: settings.train_config(),
        task_index: lineage.len() as i64,
        parent: parent.as_ref().map(|p| version_ref(state, p)),
        resume,
        samples,
        replay,
        out_version: state.data.version_checkpoint(&claim),
        resume_path: resume_path.clone(),
        control: control.clone(),
    };
    *state.running.task.lock().expect("running lock poisoned") =
        Some((task.id.clone(), control.clone()));
    let (tx, rx) = mpsc::unbounded_channel();
    let engine = state.engine.clone();
    let train = tokio::spawn(async move { engine.train(req, tx).await });
    let pumped = events::pump_events(state, fence, &settings, rx).await;
    if pumped.is_err() {
        // Nothing more of this run can be recorded: stop training at the next step.
        control.store(Control::CANCEL, Ordering::SeqCst);
    }
    let outcome = train
        .await
        .map_err(|e| format!("engine call panicked: {e}"))?;
    *state.running.task.lock().expect("running lock poisoned") = None;
    let _ = std::fs::remove_file(&resume_path);
    if let (Err(_), Ok(TrainOutcome::Completed { version_path, .. })) = (&pumped, &outcome) {
        // A failed run leaves no version file behind.
        let _ = std::fs::remove_file(version_path);
    }
    pumped?;
    match outcome.map_err(|e| e.to_string())? {
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
        TrainOutcome::Cancelled { step } if fence.lost() => {
            Err(format!("lease lost; stopped at step {step}"))
        }
        TrainOutcome::Cancelled { step } => {
            fence.cancelled().await.map_err(store_err)?;
            fence.drop_resume_point();
            let ev = StoredEvent::Terminal {
                state: "cancelled".into(),
                error: format!("cancelled at step {step}"),
                produced_version: None,
                rejection: None,
            };
            fence.emit(ev).await.map_err(store_err)?;
            Ok(())
        }
        TrainOutcome::Paused { step, .. } => {
            // Graceful shutdown: the event pump recorded the checkpoint; the job goes back
            // to the queue, and this or another daemon resumes it there.
            let msg = format!("daemon stopping; checkpointed at step {step}, training resumes there after restart or on another daemon");
            fence
                .emit(StoredEvent::Log { message: msg })
                .await
                .map_err(store_err)?;
            fence.release().await.map_err(store_err)?;
            Ok(())
        }
    }
}

/// The replay pools of a task whose parent has `lineage` (root first, parent last).
async fn replay_pools(
    state: &AppState,
    settings: &ReplaySettings,
    lineage: &[VersionRow],
    batch_size: u32,
    size: u32,
) -> Result<Vec<ReplayPool>, String> {
    let per_batch = settings.per_task(lineage.len(), batch_size);
    if per_batch == 0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(lineage.len());
    for v in lineage {
        let t = state.store.get_task(&v.task_id).await.map_err(store_err)?;
        let samples = load_split(state, &t.data_dir, false, size)
            .await
            .map_err(|e| format!("replay of task {} ({}): {e}", t.id, t.name))?;
        out.push(ReplayPool { samples, per_batch });
    }
    Ok(out)
}
