//! The dispatcher: claims queued jobs from the store (FIFO per model, one running per model),
//! runs each on the engine, streams its events into the store and to watchers, evaluates the new
//! version on every task of its lineage and commits version + evaluation + forgetting in one
//! transaction. Training never runs inside an RPC.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::api::convert::{ProgressInfo, StoredEvent, TaskSettings};
use crate::app::AppState;
use crate::images::ImageLimits;
use crate::metrics::{self, LineageRow};
use crate::store::{
    ClaimedJob, EvalRow, EvalScope, NewVersion, StoreError, SyncRow, TaskRow, TaskState, VersionRow,
};
use crate::taskdata::{self, StoredSample};
use crate::trainer::{
    Control, EvalSet, Sample, TrainEvent, TrainOutcome, TrainRequest, TrainerError, VersionRef,
};

/// The running job's control flag, so CancelTask and shutdown reach it.
#[derive(Default)]
pub struct Running {
    pub task: std::sync::Mutex<Option<(String, Arc<AtomicU8>)>>,
}

impl Running {
    /// Sets the control flag if `task_id` is the running task; true if it was.
    pub fn signal(&self, task_id: Option<&str>, value: u8) -> bool {
        let guard = self.task.lock().expect("running lock poisoned");
        match guard.as_ref() {
            Some((id, flag)) if task_id.is_none_or(|t| t == id) => {
                flag.store(value, Ordering::SeqCst);
                true
            }
            _ => false,
        }
    }
}

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
                tracing::info!(task_id = %id, model = %job.task.model, "Claimed task");
                if let Err(e) = run_job(&state, job).await {
                    tracing::error!(task_id = %id, error.message = %e, "Task failed");
                    let _ = state.store.fail_task(&id, &e).await;
                    let ev = StoredEvent::Terminal {
                        state: "failed".into(),
                        error: e,
                        produced_version: None,
                    };
                    let _ = state.hub.emit(&state.store, &id, ev).await;
                }
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

/// Reads a task's bundle and decodes one split (`eval` or train) at the preset's image size.
async fn load_split(
    path: &str,
    eval: bool,
    size: u32,
    limits: ImageLimits,
) -> Result<Vec<Sample>, String> {
    let path = PathBuf::from(path);
    tokio::task::spawn_blocking(move || {
        let all = taskdata::read_bundle(&path).map_err(|e| format!("task data: {e}"))?;
        let split: Vec<StoredSample> = all.into_iter().filter(|s| s.eval == eval).collect();
        decode(&split, size, &limits)
    })
    .await
    .map_err(|e| format!("decoding task data panicked: {e}"))?
}

fn store_err(e: StoreError) -> String {
    crate::api::status::error_chain(&e)
}

fn version_ref(v: &VersionRow) -> VersionRef {
    VersionRef {
        path: PathBuf::from(&v.checkpoint_path),
        sha256: v.sha256.clone(),
    }
}

async fn run_job(state: &Arc<AppState>, job: ClaimedJob) -> Result<(), String> {
    let task = job.task.clone();
    let settings: TaskSettings =
        serde_json::from_str(&task.settings_json).map_err(|e| format!("stored settings: {e}"))?;
    let model_cfg = settings.model_config();
    let limits = state.image_limits();
    let size = model_cfg.image_size as u32;
    let parent = match task.base_version {
        Some(v) => Some(
            state
                .store
                .get_version(&task.model, v)
                .await
                .map_err(store_err)?,
        ),
        None => None,
    };
    let lineage = match &parent {
        Some(p) => state
            .store
            .lineage(&task.model, p.version)
            .await
            .map_err(store_err)?,
        None => Vec::new(),
    };
    let samples = load_split(&task.data_dir, false, size, limits.clone()).await?;
    let dir = &state.settings.data_dir;
    let resume_path = dir.join("resume").join(format!("{}.safetensors", task.id));
    let resume = job
        .resume_checkpoint
        .as_ref()
        .map(PathBuf::from)
        .filter(|p| p.exists());
    if let Some(step) = job.resume_step.filter(|_| resume.is_some()) {
        let msg = format!(
            "resuming from the step-{step} checkpoint (attempt {})",
            job.attempts
        );
        state
            .hub
            .emit(&state.store, &task.id, StoredEvent::Log { message: msg })
            .await
            .map_err(store_err)?;
    }
    let control = Control::new_flag();
    if task.cancel_requested {
        control.store(Control::CANCEL, Ordering::SeqCst);
    }
    let req = TrainRequest {
        model: model_cfg.clone(),
        train: settings.train_config(),
        task_index: lineage.len() as i64,
        parent: parent.as_ref().map(version_ref),
        resume,
        samples,
        out_version: dir
            .join("versions")
            .join(&task.model)
            .join(format!("{}.safetensors", task.id)),
        resume_path: resume_path.clone(),
        control: control.clone(),
    };
    *state.running.task.lock().expect("running lock poisoned") =
        Some((task.id.clone(), control.clone()));
    let (tx, rx) = mpsc::unbounded_channel();
    let engine = state.engine.clone();
    let train = tokio::spawn(async move { engine.train(req, tx).await });
    let pumped = pump_events(state, &task, &settings, rx, &control).await;
    let outcome = train
        .await
        .map_err(|e| format!("engine call panicked: {e}"))?;
    *state.running.task.lock().expect("running lock poisoned") = None;
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
                path: version_path,
                sha256,
            };
            finish(
                state,
                &task,
                &settings,
                &lineage,
                parent.as_ref(),
                v,
                syncs.len() as i64,
                momentum_steps,
            )
            .await?;
            let _ = std::fs::remove_file(&resume_path);
            Ok(())
        }
        TrainOutcome::Cancelled { step } => {
            state
                .store
                .mark_cancelled(&task.id)
                .await
                .map_err(store_err)?;
            let ev = StoredEvent::Terminal {
                state: "cancelled".into(),
                error: format!("cancelled at step {step}"),
                produced_version: None,
            };
            state
                .hub
                .emit(&state.store, &task.id, ev)
                .await
                .map_err(store_err)?;
            let _ = std::fs::remove_file(&resume_path);
            Ok(())
        }
        TrainOutcome::Paused { step, resume_path } => {
            // Graceful shutdown: the job stays claimed; the next start requeues it and resumes here.
            state
                .store
                .set_resume_checkpoint(&task.id, &resume_path.to_string_lossy(), step)
                .await
                .map_err(store_err)?;
            let msg = format!("daemon stopping; checkpointed at step {step}, training resumes there after restart");
            state
                .hub
                .emit(&state.store, &task.id, StoredEvent::Log { message: msg })
                .await
                .map_err(store_err)?;
            Ok(())
        }
    }
}

/// Forwards engine events to the store and watchers; heartbeats the lease meanwhile.
async fn pump_events(
    state: &Arc<AppState>,
    task: &TaskRow,
    settings: &TaskSettings,
    mut rx: mpsc::UnboundedReceiver<TrainEvent>,
    control: &Arc<AtomicU8>,
) -> Result<(), String> {
    let lease = Duration::from_secs(state.settings.lease_seconds);
    let mut beat = tokio::time::interval(lease / 3);
    let mut progress = ProgressInfo {
        total_epochs: settings.epochs,
        ..Default::default()
    };
    let mut last_write = Instant::now() - Duration::from_secs(10);
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                match ev {
                    TrainEvent::Started { total_steps, resumed_from } => {
                        progress.total_steps = total_steps as u64;
                        progress.resumed_from_step = resumed_from.map(|s| s as u64);
                        progress.step = resumed_from.unwrap_or(0) as u64;
                    }
                    TrainEvent::Step(p) => {
                        progress.step = p.step as u64;
                        progress.epoch = p.epoch as u32;
                        progress.losses = p.losses.clone();
                        progress.samples_per_second = p.samples_per_sec;
                        progress.eta_seconds = Some(p.eta_seconds);
                        progress.momentum_syncs = p.syncs as u64;
                        state.metrics.observe_step(&p);
                        state.hub.emit(&state.store, &task.id, StoredEvent::Progress(progress.clone())).await.map_err(store_err)?;
                        if last_write.elapsed() > Duration::from_millis(500) || p.step == p.total_steps {
                            let json = serde_json::to_string(&progress).expect("progress serialises");
                            state.store.update_progress(&task.id, &json).await.map_err(store_err)?;
                            last_write = Instant::now();
                        }
                    }
                    TrainEvent::Sync(s) => {
                        state.metrics.observe_sync(s.drift);
                        let row = SyncRow { step: s.step, k: s.k, drift: s.drift, threshold: s.threshold, duration_ms: s.duration_ms, at: chrono::Utc::now() };
                        state.store.record_sync(&task.id, &row).await.map_err(store_err)?;
                        let ev = StoredEvent::Sync { step: s.step as u64, k: s.k as u64, drift: s.drift, threshold: s.threshold, duration_ms: s.duration_ms };
                        state.hub.emit(&state.store, &task.id, ev).await.map_err(store_err)?;
                    }
                    TrainEvent::Checkpoint { step, path, .. } => {
                        let started = Instant::now();
                        state.store.set_resume_checkpoint(&task.id, &path.to_string_lossy(), step).await.map_err(store_err)?;
                        state.metrics.observe_checkpoint(started.elapsed().as_secs_f64());
                    }
                }
            }
            _ = beat.tick() => {
                match state.store.heartbeat(&task.id, &state.worker_id, lease).await {
                    Ok(true) => control.store(Control::CANCEL, Ordering::SeqCst),
                    Ok(false) => {}
                    Err(StoreError::LeaseLost { .. }) => {
                        tracing::error!(task_id = %task.id, "Lease lost; stopping this run");
                        control.store(Control::CANCEL, Ordering::SeqCst);
                    }
                    Err(e) => tracing::warn!(error.message = %e, "Heartbeat failed"),
                }
            }
        }
    }
    let json = serde_json::to_string(&progress).expect("progress serialises");
    state
        .store
        .update_progress(&task.id, &json)
        .await
        .map_err(store_err)
}

fn eval_row(scope: EvalScope, task_id: &str, task_name: &str, r: &metrics::Retrieval) -> EvalRow {
    EvalRow {
        scope,
        task_id: task_id.into(),
        task_name: task_name.into(),
        tr1: r.tr1,
        tr5: r.tr5,
        tr10: r.tr10,
        ir1: r.ir1,
        ir5: r.ir5,
        ir10: r.ir10,
        rm: r.rm,
    }
}

/// Evaluates the new version on every task of its lineage, computes forgetting and BWT against
/// the ancestors' rows, and commits the version.
#[allow(clippy::too_many_arguments)]
async fn finish(
    state: &Arc<AppState>,
    task: &TaskRow,
    settings: &TaskSettings,
    lineage: &[VersionRow],
    parent: Option<&VersionRow>,
    version: VersionRef,
    syncs: i64,
    momentum_steps: i64,
) -> Result<(), String> {
    let model_cfg = settings.model_config();
    let size = model_cfg.image_size as u32;
    // Tasks seen by the new version: each ancestor's task in order, then this one.
    let mut seen: Vec<(String, String, String)> = Vec::new(); // (task id, name, bundle path)
    for v in lineage {
        let t = state.store.get_task(&v.task_id).await.map_err(store_err)?;
        seen.push((t.id, t.name, t.data_dir));
    }
    seen.push((task.id.clone(), task.name.clone(), task.data_dir.clone()));
    let mut sets = Vec::new();
    for (i, (_, _, path)) in seen.iter().enumerate() {
        let samples = load_split(path, true, size, state.image_limits()).await?;
        sets.push(EvalSet {
            task_id: i as i64,
            samples,
        });
    }
    let report = state
        .engine
        .evaluate(model_cfg, version.clone(), sets)
        .await
        .map_err(|e: TrainerError| e.to_string())?;
    let mut evals: Vec<EvalRow> = report
        .per_task
        .iter()
        .map(|e| {
            let (id, name, _) = &seen[e.task_id as usize];
            eval_row(EvalScope::Task, id, name, &e.retrieval)
        })
        .collect();
    if let Some(u) = &report.union {
        evals.push(eval_row(EvalScope::Union, "", "union of seen tasks", u));
    }
    // Accuracy-matrix rows of the lineage, tasks indexed by their position in `seen`.
    let index: BTreeMap<&str, i64> = seen
        .iter()
        .enumerate()
        .map(|(i, (id, _, _))| (id.as_str(), i as i64))
        .collect();
    let row_of = |v: i64, t: i64, ev: &mut dyn Iterator<Item = &EvalRow>| LineageRow {
        version: v,
        task: t,
        rm: ev
            .filter_map(|e| index.get(e.task_id.as_str()).map(|&i| (i, e.rm)))
            .collect(),
    };
    let mut rows: Vec<LineageRow> = lineage
        .iter()
        .enumerate()
        .map(|(i, v)| row_of(v.version, i as i64, &mut v.task_evals()))
        .collect();
    rows.push(row_of(
        i64::MAX,
        seen.len() as i64 - 1,
        &mut evals.iter().filter(|e| e.scope == EvalScope::Task),
    ));
    let f = metrics::forgetting_max(&rows);
    let forgetting = f
        .per_task
        .iter()
        .map(|(i, v)| (seen[*i as usize].0.clone(), *v))
        .collect();
    let new = NewVersion {
        parent: parent.map(|p| p.version),
        checkpoint_path: version.path.to_string_lossy().into_owned(),
        sha256: version.sha256,
        momentum_syncs: syncs,
        momentum_steps,
        bwt: metrics::bwt_paper(&rows),
        average_forgetting: f.average,
        evals,
        forgetting,
    };
    let v = state
        .store
        .finish_task(&task.id, new)
        .await
        .map_err(store_err)?;
    if let Some(avg) = v.average_forgetting {
        state.metrics.observe_forgetting(avg);
    }
    let ev = StoredEvent::Terminal {
        state: TaskState::Succeeded.as_str().into(),
        error: String::new(),
        produced_version: Some(v.version),
    };
    state
        .hub
        .emit(&state.store, &task.id, ev)
        .await
        .map_err(store_err)?;
    tracing::info!(task_id = %task.id, version = v.version, "Task succeeded");
    Ok(())
}

/// Deletes files under the data dir that no row references (left by a crash), and temp files.
pub async fn clean_orphans(state: &AppState) -> Result<usize, StoreError> {
    let referenced: std::collections::HashSet<PathBuf> = state
        .store
        .referenced_files()
        .await?
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let mut removed = 0;
    for sub in ["tasks", "versions", "resume"] {
        let root = state.settings.data_dir.join(sub);
        for path in walk(&root) {
            let is_tmp = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"));
            if is_tmp || !referenced.contains(&path) {
                if std::fs::remove_file(&path).is_ok() {
                    removed += 1;
                    tracing::info!(path = %path.display(), "Removed orphaned file");
                }
            }
        }
    }
    Ok(removed)
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
