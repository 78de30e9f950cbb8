//! Task events: persisted first (the store assigns the per-task `seq`), then fanned out live to
//! WatchTask streams (as domain events; the API edge converts them). A watcher that reconnects replays from the store, so nothing is missed.
use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{broadcast, watch};

use crate::store::{Lease, Store, StoreError};
use crate::task::{StoredEvent, TaskEvent};

pub struct Hub {
    live: Mutex<HashMap<String, broadcast::Sender<TaskEvent>>>,
    shutdown: watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            live: Mutex::new(HashMap::new()),
            shutdown: watch::channel(false).0,
        }
    }
}

impl Hub {
    fn sender(&self, task_id: &str) -> broadcast::Sender<TaskEvent> {
        let mut live = self.live.lock().expect("hub lock poisoned");
        live.entry(task_id.to_string())
            .or_insert_with(|| broadcast::channel(1024).0)
            .clone()
    }

    /// Subscribe before reading the backlog from the store, so no event falls in between.
    pub fn subscribe(&self, task_id: &str) -> broadcast::Receiver<TaskEvent> {
        self.sender(task_id).subscribe()
    }

    /// Persists `ev` for `task_id`, then publishes it to live watchers. Returns its seq.
    pub async fn emit(
        &self,
        store: &Store,
        task_id: &str,
        ev: StoredEvent,
    ) -> Result<i64, StoreError> {
        let payload = serde_json::to_string(&ev).expect("events serialise");
        let seq = store.append_event(task_id, ev.kind(), &payload).await?;
        self.publish(task_id, seq, ev);
        Ok(seq)
    }

    /// Like [`Hub::emit`], for the worker holding `lease`: refused (nothing stored or
    /// published) once another worker holds the task.
    pub async fn emit_as(
        &self,
        store: &Store,
        lease: &Lease,
        ev: StoredEvent,
    ) -> Result<i64, StoreError> {
        let payload = serde_json::to_string(&ev).expect("events serialise");
        let seq = store.append_job_event(lease, ev.kind(), &payload).await?;
        self.publish(&lease.task_id, seq, ev);
        Ok(seq)
    }

    /// Sends a stored event to live watchers.
    fn publish(&self, task_id: &str, seq: i64, ev: StoredEvent) {
        let terminal = ev.is_terminal();
        let _ = self.sender(task_id).send(TaskEvent {
            seq,
            at: chrono::Utc::now(),
            event: ev,
        });
        if terminal {
            self.live.lock().expect("hub lock poisoned").remove(task_id);
        }
    }

    /// Flips when the daemon starts draining; open watch streams end.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}
