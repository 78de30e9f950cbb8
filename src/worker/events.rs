//! Forwarding a run's engine events into the store, the watchers and the metrics.
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::store_err;
use crate::api::convert::{ProgressInfo, StoredEvent, TaskSettings};
use crate::app::AppState;
use crate::store::{StoreError, SyncRow, TaskRow};
use crate::trainer::{Control, TrainEvent};

/// Forwards engine events to the store and watchers; heartbeats the lease meanwhile.
pub(super) async fn pump_events(
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
                        state.store.set_resume_checkpoint(&task.id, &state.data.to_stored(&path), step).await.map_err(store_err)?;
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
