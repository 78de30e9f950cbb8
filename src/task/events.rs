//! What happens to a task, as the store keeps it (`task_events.kind` + `payload_json`) and the
//! hub fans it out. The API edge turns these into `ctp.v1.TaskEvent`s.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Latest progress of a task, stored as `progress_json` and sent in events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgressInfo {
    pub epoch: u32,
    pub total_epochs: u32,
    pub step: u64,
    pub total_steps: u64,
    pub eta_seconds: Option<f64>,
    pub losses: BTreeMap<String, f64>,
    pub samples_per_second: f64,
    pub momentum_syncs: u64,
    pub resumed_from_step: Option<u64>,
    /// Drift at the latest drift check (rows written before it existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<f64>,
}

impl ProgressInfo {
    /// Percent of the task's steps done (0 before the step count is known).
    pub fn percent(&self) -> f64 {
        if self.total_steps == 0 {
            0.0
        } else {
            100.0 * self.step as f64 / self.total_steps as f64
        }
    }
}

/// What a persisted task event holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoredEvent {
    Progress(ProgressInfo),
    Sync {
        step: u64,
        k: u64,
        drift: f64,
        threshold: f64,
        duration_ms: f64,
    },
    Terminal {
        state: String,
        error: String,
        produced_version: Option<i64>,
        /// Why the promotion gate refused the produced version (absent = accepted).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rejection: Option<String>,
    },
    Log {
        message: String,
    },
    /// Higher-priority work took the engine: the task checkpointed at `step` and went back
    /// to its place in the queue (the `count`-th time), yielding to `by_task_id`.
    Preempted {
        count: u32,
        step: u64,
        by_task_id: String,
    },
}

impl StoredEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            StoredEvent::Progress(_) => "progress",
            StoredEvent::Sync { .. } => "sync",
            StoredEvent::Terminal { .. } => "terminal",
            StoredEvent::Log { .. } => "log",
            StoredEvent::Preempted { .. } => "preempted",
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, StoredEvent::Terminal { .. })
    }
}

/// A stored event with its per-task sequence number and time, as watchers receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEvent {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub event: StoredEvent,
}
