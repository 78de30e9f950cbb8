//! Preemption of a running task by higher-priority work (issue #26 §1). While a run trains,
//! [`watch`] asks the store every `scheduler.preempt_check_seconds` whether this job must
//! yield (see `store::schedule`). If so it asks the engine to pause at its next step
//! boundary: the engine writes a resume checkpoint and stops, exactly as for a graceful
//! shutdown, and the run then puts the job back in its place in the queue with a PREEMPTED
//! event ([`yielded`]). Resuming from that checkpoint is bitwise the uninterrupted run on
//! CPU, as for a crash.
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::lease::Fence;
use super::RunError;
use crate::state::AppState;
use crate::task::StoredEvent;
use crate::trainer::Control;

/// A running watcher; aborted when dropped.
pub(super) struct Watch {
    handle: Option<tokio::task::JoinHandle<()>>,
    /// The waiting task this run yielded to, once it decided to.
    by: Arc<OnceLock<String>>,
}

impl Watch {
    /// The task this run yields to, if it was preempted.
    pub fn by(&self) -> Option<&str> {
        self.by.get().map(String::as_str)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// Watches the run of `task_id` (controlled by `control`) for preemption; a no-op with
/// `scheduler.preemption = false`.
pub(super) fn watch(state: &Arc<AppState>, task_id: &str, control: Arc<AtomicU8>) -> Watch {
    let by = Arc::new(OnceLock::new());
    let sched = &state.settings.scheduler;
    if !sched.preemption {
        return Watch { handle: None, by };
    }
    let every = Duration::from_secs(sched.preempt_check_seconds.max(1));
    let (state, task_id, decided) = (state.clone(), task_id.to_owned(), by.clone());
    let handle = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = state.queue_changed.notified() => {}
            }
            let ranking = *state.store.ranking();
            match state.store.preempted_by(&task_id, &ranking).await {
                Ok(Some(waiting)) => {
                    // Only a running engine pauses: a cancel, a hold or a shutdown wins.
                    if control
                        .compare_exchange(
                            Control::RUN,
                            Control::PAUSE,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        )
                        .is_ok()
                    {
                        tracing::info!(task_id = %task_id, by = %waiting, "Preempting: pausing at the next step boundary");
                        let _ = decided.set(waiting);
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(task_id = %task_id, error.message = %e, "Preemption check failed; retrying")
                }
            }
        }
    });
    Watch {
        handle: Some(handle),
        by,
    }
}

/// After a run paused for preemption at `step`: a PREEMPTED event (the `before + 1`-th),
/// then the job goes back to its place in the queue, counted (with the `task.preempted`
/// webhook in the same transaction).
pub(super) async fn yielded(
    state: &AppState,
    fence: &Fence,
    step: i64,
    by: &str,
    before: i64,
) -> Result<(), RunError> {
    let ev = StoredEvent::Preempted {
        count: (before + 1) as u32,
        step: step as u64,
        by_task_id: by.to_owned(),
    };
    fence.emit(ev).await?;
    let count = fence
        .call("putting the preempted job back", || {
            state.store.preempt_job(fence.lease(), by, step)
        })
        .await?;
    state.metrics.observe_preemption();
    tracing::info!(task_id = %fence.lease().task_id, step, by, count, "Preempted; queued again");
    Ok(())
}
