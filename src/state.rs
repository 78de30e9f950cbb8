//! The daemon's shared state, one `Arc<AppState>` reached from every handler, the dispatcher,
//! the health loop and the metrics endpoint.
//!
//! It sits below `api`, `worker`, `health` and `telemetry`: they import it, it imports none of
//! them (only the store, engine handle, hub, data dir, settings and the metrics registry), and
//! `app` only wires them together.
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::config::Settings;
use crate::datadir::DataDir;
use crate::hub::Hub;
use crate::images::ImageLimits;
use crate::objects::Objects;
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::trainer::TrainerHandle;

/// Shared state of the daemon (cheap to reach from every handler through an `Arc`).
pub struct AppState {
    pub settings: Settings,
    /// The data dir (absolute); maps stored paths to files.
    pub data: DataDir,
    /// Task bundles and checkpoints: the data dir itself, or object storage.
    pub objects: Objects,
    pub store: Store,
    pub engine: TrainerHandle,
    pub hub: Hub,
    /// Wakes the dispatcher after a submission is durable.
    pub wake: Notify,
    /// Wakes a running task's preemption check at once when this daemon queues work or
    /// changes a priority (other daemons' submissions are seen at the next periodic check).
    pub queue_changed: Notify,
    pub running: Running,
    pub metrics: Metrics,
    /// Whether the data dir can be written (probed; see `health`).
    pub storage: StorageHealth,
    pub worker_id: String,
    draining: AtomicBool,
    /// False until startup recovery (requeue, orphan cleanup) is done; submissions wait for it.
    ready: AtomicBool,
}

impl AppState {
    /// Fresh state: nothing running, not ready (startup recovery has not run), not draining.
    pub fn new(
        settings: Settings,
        data: DataDir,
        objects: Objects,
        store: Store,
        engine: TrainerHandle,
        metrics: Metrics,
        worker_id: String,
    ) -> AppState {
        AppState {
            settings,
            data,
            objects,
            store,
            engine,
            hub: Hub::default(),
            wake: Notify::new(),
            queue_changed: Notify::new(),
            running: Running::default(),
            metrics,
            storage: StorageHealth::default(),
            worker_id,
            draining: AtomicBool::new(false),
            ready: AtomicBool::new(false),
        }
    }

    pub fn image_limits(&self) -> ImageLimits {
        let l = &self.settings.limits;
        ImageLimits {
            max_bytes: l.max_image_bytes,
            max_width: l.max_image_side,
            max_height: l.max_image_side,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Startup recovery is done: submissions are accepted from now on.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Shutdown has begun: health goes NOT_SERVING and submissions are refused.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}

/// The running job's control flag, so CancelTask and shutdown reach it.
#[derive(Default)]
pub struct Running {
    pub task: Mutex<Option<(String, Arc<AtomicU8>)>>,
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

/// Storage health, shared by the prober, the worker and the metrics.
#[derive(Default)]
pub struct StorageHealth {
    /// Why the data dir cannot be written now (`None`: it can).
    problem: Mutex<Option<String>>,
    /// Why the database does not answer now (`None`: it does).
    database: Mutex<Option<String>>,
    /// Why object storage does not answer now (`None`: it does, or there is none).
    objects: Mutex<Option<String>>,
    /// Training hit "no space" and waits for a retry to get through.
    starved: AtomicBool,
}

impl StorageHealth {
    /// The current problem, if any.
    pub fn problem(&self) -> Option<String> {
        if self.starved.load(Ordering::SeqCst) {
            return Some("training is waiting for space in the data dir".into());
        }
        let data = self.problem.lock().expect("health lock").clone();
        data.or_else(|| self.database.lock().expect("health lock").clone())
            .or_else(|| self.objects.lock().expect("health lock").clone())
    }

    /// Records the latest database ping.
    pub fn set_database(&self, result: Result<(), String>) {
        *self.database.lock().expect("health lock") = result.err();
    }

    /// Records the latest object storage probe.
    pub fn set_objects(&self, result: Result<(), String>) {
        *self.objects.lock().expect("health lock") = result.err();
    }

    /// Records the latest probe result.
    pub fn set_probe(&self, result: Result<(), String>) {
        *self.problem.lock().expect("health lock") = result.err();
    }

    /// Marks training as held back for space (true) or running again (false).
    pub fn set_starved(&self, starved: bool) {
        self.starved.store(starved, Ordering::SeqCst);
    }
}
