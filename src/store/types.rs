//! Plain rows and inputs of the store. The gRPC layer converts them to and from `pb`
//! messages; JSON columns (`settings_json`, `progress_json`, event payloads) are opaque
//! strings here, so the store never depends on the engine's or the API's types.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

/// Lifecycle of a task (stored as lowercase text).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Waiting in the queue.
    Queued,
    /// Claimed by a worker and training.
    Running,
    /// Produced a version.
    Succeeded,
    /// Stopped with an error.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl TaskState {
    /// The text stored in `tasks.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// True once the task can no longer change (and never runs again).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored enum column held a value this build does not know (a newer schema?).
#[derive(Debug, thiserror::Error)]
#[error("unknown {column} value {value:?}")]
pub struct UnknownValue {
    column: &'static str,
    value: String,
}

impl FromStr for TaskState {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => TaskState::Queued,
            "running" => TaskState::Running,
            "succeeded" => TaskState::Succeeded,
            "failed" => TaskState::Failed,
            "cancelled" => TaskState::Cancelled,
            _ => {
                return Err(UnknownValue {
                    column: "task state",
                    value: s.to_owned(),
                })
            }
        })
    }
}

impl TryFrom<String> for TaskState {
    type Error = UnknownValue;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A model: a named lineage of versions, all of one size preset.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct ModelRow {
    /// Unique name, chosen by the client.
    pub name: String,
    /// Size preset ("tiny" | "small" | "base"); fixed at creation because checkpoints of
    /// different presets are not interchangeable.
    pub preset: String,
    /// Version the next task trains from; `None` until the first task succeeds.
    pub head_version: Option<i64>,
    /// When the model was created.
    pub created_at: DateTime<Utc>,
}

/// Input of [`Store::submit_task`](super::Store::submit_task).
#[derive(Clone, Debug)]
pub struct NewTask {
    /// Task id, chosen by the caller (see [`new_task_id`]) because the caller stores the
    /// uploaded samples under it before submitting.
    pub id: String,
    /// Model the task trains; must exist (see `create_model_if_absent`).
    pub model: String,
    /// Human-readable name.
    pub name: String,
    /// Deduplication key, unique per model; `None` never deduplicates.
    pub idempotency_key: Option<String>,
    /// Digest of the submission's content (header and samples). A reused idempotency key
    /// whose stored digest differs is refused with `AlreadyExists`.
    pub request_digest: String,
    /// Effective training settings, serialized by the caller.
    pub settings_json: String,
    /// Where the uploaded samples live; reported by `referenced_files`.
    pub data_dir: String,
    /// Training samples.
    pub n_train: i64,
    /// Held-out evaluation samples.
    pub n_eval: i64,
    /// For a task submitted by reference: the JSON manifest of the shards read (URL, ETag,
    /// sha256, samples); `None` for a streamed upload.
    pub sources_json: Option<String>,
    /// Scheduling priority (see [`Priority`](crate::task::Priority)).
    pub priority: i64,
    /// The caller's name (its token's; `anonymous` without tokens).
    pub submitted_by: String,
    /// Size of the stored bundle (quota accounting).
    pub bundle_bytes: i64,
    /// The caller's quotas, checked in the submission's transaction (after deduplication:
    /// a retry of an accepted task is never refused).
    pub quota: crate::config::Quota,
}

/// A fresh random task id (UUID v4, hyphenated).
pub fn new_task_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A stored task.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct TaskRow {
    /// Task id (UUID).
    pub id: String,
    /// Model the task trains.
    pub model: String,
    /// Human-readable name.
    pub name: String,
    /// Lifecycle state.
    #[sqlx(try_from = "String")]
    pub state: TaskState,
    /// Deduplication key given at submit.
    pub idempotency_key: Option<String>,
    /// Effective settings (caller's JSON).
    pub settings_json: String,
    /// Where the uploaded samples live.
    pub data_dir: String,
    /// Training samples.
    pub n_train: i64,
    /// Held-out evaluation samples.
    pub n_eval: i64,
    /// Head the task trains from, fixed at its first claim (`None` = from scratch).
    pub base_version: Option<i64>,
    /// Version produced on success.
    pub produced_version: Option<i64>,
    /// Error message when failed.
    pub error: Option<String>,
    /// Latest progress (caller's JSON; `{}` before the first update).
    pub progress_json: String,
    /// A cancel was requested while running; the engine stops at a step boundary and
    /// then calls `mark_cancelled`.
    pub cancel_requested: bool,
    /// When the task was submitted.
    pub created_at: DateTime<Utc>,
    /// When it first started running (kept across requeues).
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Set when the task succeeded but the promotion gate refused its version.
    pub rejected_reason: Option<String>,
    /// The manifest of shards a task submitted by reference was read from (JSON).
    pub sources_json: Option<String>,
    /// Scheduling priority (see [`Priority`](crate::task::Priority)).
    pub priority: i64,
    /// How many times higher-priority work preempted it.
    pub preemptions: i64,
    /// Who submitted it (its token's name; `anonymous` without tokens).
    pub submitted_by: String,
    /// Size of its stored bundle (0 for tasks from before the column).
    pub bundle_bytes: i64,
}

/// Result of [`Store::submit_task`](super::Store::submit_task).
#[derive(Clone, Debug, PartialEq)]
pub struct Submitted {
    /// The stored task: the new one, or the earlier one with the same idempotency key.
    pub task: TaskRow,
    /// True when the key was already used: nothing was inserted and the caller should
    /// discard the samples it stored for this attempt.
    pub existing: bool,
}

/// A job handed to a worker by [`Store::claim_next_job`](super::Store::claim_next_job).
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedJob {
    /// The task, now RUNNING with `base_version` set.
    pub task: TaskRow,
    /// Worker that holds the lease.
    pub worker_id: String,
    /// The lease ends here unless renewed by `heartbeat`.
    pub lease_until: DateTime<Utc>,
    /// How many times the job has been claimed, this claim included (1 on a first run).
    pub attempts: i64,
    /// Mid-task checkpoint to resume from (set by an earlier, interrupted run).
    pub resume_checkpoint: Option<String>,
    /// Optimizer step stored in `resume_checkpoint`.
    pub resume_step: Option<i64>,
    /// sha256 of `resume_checkpoint` (recorded since issue #23).
    pub resume_sha256: Option<String>,
    /// Fencing token of this claim: the job's lease epoch, bumped at every claim.
    pub epoch: i64,
}

impl ClaimedJob {
    /// The lease this claim holds; every write of the worker carries it.
    pub fn lease(&self) -> Lease {
        Lease {
            task_id: self.task.id.clone(),
            worker_id: self.worker_id.clone(),
            epoch: self.epoch,
        }
    }
}

/// Proof of holding a job: its task, the worker and the claim's epoch (the fencing
/// token). A write made with a lease is refused with
/// [`StoreError::LeaseLost`](super::StoreError::LeaseLost) unless the job is still
/// running under exactly this worker and epoch — so a worker that was paused, cut off
/// or presumed dead can never overwrite the work of the worker that took over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The job's task.
    pub task_id: String,
    /// The worker that claimed it.
    pub worker_id: String,
    /// The claim's epoch.
    pub epoch: i64,
}

/// One persisted `WatchTask` event.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct EventRow {
    /// Task the event belongs to.
    pub task_id: String,
    /// Per-task sequence number: 1, 2, 3, … without gaps.
    pub seq: i64,
    /// Event kind chosen by the caller (e.g. "progress", "sync", "terminal", "log").
    pub kind: String,
    /// Event body (caller's JSON).
    pub payload_json: String,
    /// When it was appended.
    pub at: DateTime<Utc>,
}

/// One drift-gated momentum sync (`θ_c ← m^k θ_c + (1 − m^k) T`).
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct SyncRow {
    /// Step at which the sync ran.
    pub step: i64,
    /// Steps since the previous sync.
    pub k: i64,
    /// Drift that triggered it.
    pub drift: f64,
    /// Threshold in force.
    pub threshold: f64,
    /// Wall time of the sync.
    pub duration_ms: f64,
    /// When it ran.
    pub at: DateTime<Utc>,
}

/// Which evaluation set an [`EvalRow`] scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalScope {
    /// The eval split of one lineage task (one cell of the accuracy matrix).
    Task,
    /// The union of the eval splits of every lineage task (the paper's cumulative set).
    Union,
}

impl EvalScope {
    /// The text stored in `evaluations.scope`.
    pub fn as_str(self) -> &'static str {
        match self {
            EvalScope::Task => "task",
            EvalScope::Union => "union",
        }
    }
}

impl TryFrom<String> for EvalScope {
    type Error = UnknownValue;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "task" => Ok(EvalScope::Task),
            "union" => Ok(EvalScope::Union),
            _ => Err(UnknownValue {
                column: "evaluation scope",
                value: s,
            }),
        }
    }
}

/// Retrieval scores (percent) of a version on one evaluation set.
/// `rm = (tr1 + tr5 + tr10 + ir1 + ir5 + ir10) / 6`, computed by the engine.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct EvalRow {
    /// Per-task cell or cumulative union.
    #[sqlx(try_from = "String")]
    pub scope: EvalScope,
    /// The task whose eval split was used (for the union row: the version's own task).
    pub task_id: String,
    /// Its name, stored with the score so reports need no join.
    pub task_name: String,
    /// Image→text recall@1.
    pub tr1: f64,
    /// Image→text recall@5.
    pub tr5: f64,
    /// Image→text recall@10.
    pub tr10: f64,
    /// Text→image recall@1.
    pub ir1: f64,
    /// Text→image recall@5.
    pub ir5: f64,
    /// Text→image recall@10.
    pub ir10: f64,
    /// Mean of the six recalls.
    pub rm: f64,
}

/// Input of [`Store::finish_task`](super::Store::finish_task): the version a successful
/// task produced, with its evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct NewVersion {
    /// Version it was trained from (the task's `base_version`); must exist.
    pub parent: Option<i64>,
    /// Final checkpoint, already written and fsynced.
    pub checkpoint_path: String,
    /// Hex sha256 of the checkpoint file.
    pub sha256: String,
    /// Momentum syncs performed.
    pub momentum_syncs: i64,
    /// Steps at which a sync was possible.
    pub momentum_steps: i64,
    /// Paper BWT on cumulative sets (positive = forgetting); `None` for a root version.
    pub bwt: Option<f64>,
    /// Mean max-based forgetting over earlier lineage tasks; `None` for a root version.
    pub average_forgetting: Option<f64>,
    /// Why the model's promotion gate refused the version; `None` = accepted, the head
    /// moves to it.
    pub rejection: Option<String>,
    /// Task rows in lineage order (root first) and optionally one union row.
    pub evals: Vec<EvalRow>,
    /// Forgetting per earlier lineage task: `(task_id, F(v, j))`, not clipped.
    pub forgetting: Vec<(String, f64)>,
    /// The engine that trained it: device ("cpu", "cuda:0") and precision ("fp32", "bf16").
    pub device: String,
    pub precision: String,
}

/// A stored version with its evaluation.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct VersionRow {
    /// Model name.
    pub model: String,
    /// 1-based, increasing per model.
    pub version: i64,
    /// Version it was trained from.
    pub parent: Option<i64>,
    /// Task that produced it.
    pub task_id: String,
    /// That task's name.
    pub task_name: String,
    /// Final checkpoint file.
    pub checkpoint_path: String,
    /// Hex sha256 of the checkpoint.
    pub sha256: String,
    /// Commit time.
    pub created_at: DateTime<Utc>,
    /// Momentum syncs performed.
    pub momentum_syncs: i64,
    /// Steps at which a sync was possible.
    pub momentum_steps: i64,
    /// Paper BWT (positive = forgetting).
    pub bwt: Option<f64>,
    /// Mean forgetting over earlier lineage tasks.
    pub average_forgetting: Option<f64>,
    /// Why the promotion gate refused it; `None` = accepted.
    pub rejected_reason: Option<String>,
    /// Device it trained on ("" before this was recorded).
    pub device: String,
    /// Training precision ("" before this was recorded).
    pub precision: String,
    /// Evaluation rows in the order given to `finish_task`.
    #[sqlx(skip)]
    pub evals: Vec<EvalRow>,
    /// `(task_id, F(v, j))` in the order given to `finish_task`.
    #[sqlx(skip)]
    pub forgetting: Vec<(String, f64)>,
    /// True if this version is the model's head.
    #[sqlx(skip)]
    pub is_head: bool,
    /// Results on the model's anchor suites, by suite name (issue #25 §2).
    #[sqlx(skip)]
    pub anchors: Vec<super::AnchorEval>,
}

impl VersionRow {
    /// The per-task rows (one row of the accuracy matrix), root first.
    pub fn task_evals(&self) -> impl Iterator<Item = &EvalRow> {
        self.evals.iter().filter(|e| e.scope == EvalScope::Task)
    }

    /// The cumulative-union row, if the engine recorded one.
    pub fn union_eval(&self) -> Option<&EvalRow> {
        self.evals.iter().find(|e| e.scope == EvalScope::Union)
    }
}

/// One audited move of a model's head.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct HeadChange {
    /// Increasing id (order of the moves).
    pub id: i64,
    /// Model name.
    pub model: String,
    /// Previous head (`None` for the first version).
    pub from_version: Option<i64>,
    /// New head.
    pub to_version: i64,
    /// When it moved.
    pub at: DateTime<Utc>,
    /// "ctpd" for a task success, else the caller's identity.
    pub who: String,
    /// Why it moved.
    pub reason: String,
}
