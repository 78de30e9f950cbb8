//! Forwarding a run's engine events into the store, the watchers and the metrics; every
//! write goes through the run's [`Fence`].
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::lease::Fence;
use super::RunError;
use crate::state::AppState;
use crate::store::SyncRow;
use crate::task::{ProgressInfo, StoredEvent, TaskSettings};
use crate::trainer::TrainEvent;

/// Forwards engine events to the store and watchers until the engine's channel closes.
/// On an error the rest of the run's events are dropped: the caller stops the engine.
pub(super) async fn pump_events(
    state: &Arc<AppState>,
    fence: &Fence,
    settings: &TaskSettings,
    caller: &str,
    mut rx: mpsc::UnboundedReceiver<TrainEvent>,
) -> Result<(), RunError> {
    let mut charge = Charge::new(state, caller, &fence.lease().task_id);
    let mut progress = ProgressInfo {
        total_epochs: settings.epochs,
        ..Default::default()
    };
    let mut last_write = Instant::now() - Duration::from_secs(10);
    while let Some(ev) = rx.recv().await {
        match ev {
            TrainEvent::Started {
                total_steps,
                resumed_from,
            } => {
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
                progress.drift = p.drift;
                state.metrics.observe_step(&p);
                charge.add(p.times.step_ms / 1000.0).await;
                fence.emit(StoredEvent::Progress(progress.clone())).await?;
                if last_write.elapsed() > Duration::from_millis(500) || p.step == p.total_steps {
                    let json = serde_json::to_string(&progress).expect("progress serialises");
                    fence.progress(&json).await?;
                    last_write = Instant::now();
                }
            }
            TrainEvent::Sync(s) => {
                state.metrics.observe_sync(s.drift);
                let row = SyncRow {
                    step: s.step,
                    k: s.k,
                    drift: s.drift,
                    threshold: s.threshold,
                    duration_ms: s.duration_ms,
                    at: chrono::Utc::now(),
                };
                let st = state.as_ref();
                fence
                    .call("recording a sync", || {
                        st.store.record_sync(fence.lease(), &row)
                    })
                    .await?;
                let ev = StoredEvent::Sync {
                    step: s.step as u64,
                    k: s.k as u64,
                    drift: s.drift,
                    threshold: s.threshold,
                    duration_ms: s.duration_ms,
                };
                fence.emit(ev).await?;
            }
            TrainEvent::Checkpoint { step, path, sha256 } => {
                let started = Instant::now();
                fence.checkpoint(&path, step, &sha256).await?;
                state
                    .metrics
                    .observe_checkpoint(started.elapsed().as_secs_f64());
            }
        }
    }
    charge.flush().await;
    let json = serde_json::to_string(&progress).expect("progress serialises");
    Ok(fence.progress(&json).await?)
}

/// Training seconds of a run, charged to its submitter's quota from the engine's own step
/// times, in batches (so a preempted, failed or killed run is charged for what ran, within
/// one batch).
struct Charge<'a> {
    state: &'a AppState,
    caller: &'a str,
    task_id: &'a str,
    pending: f64,
    since: Instant,
}

impl<'a> Charge<'a> {
    const EVERY: Duration = Duration::from_secs(10);

    fn new(state: &'a AppState, caller: &'a str, task_id: &'a str) -> Charge<'a> {
        Charge {
            state,
            caller,
            task_id,
            pending: 0.0,
            since: Instant::now(),
        }
    }

    async fn add(&mut self, seconds: f64) {
        self.pending += seconds.max(0.0);
        if self.since.elapsed() >= Self::EVERY {
            self.flush().await;
        }
    }

    /// A failed charge is logged and kept for the next one; it never stops training.
    async fn flush(&mut self) {
        let store = &self.state.store;
        match store
            .charge_training(self.caller, self.task_id, self.pending)
            .await
        {
            Ok(()) => self.pending = 0.0,
            Err(e) => {
                tracing::warn!(task_id = %self.task_id, error.message = %e, "Charging training seconds failed; retrying with the next charge")
            }
        }
        self.since = Instant::now();
    }
}
