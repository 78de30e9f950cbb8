//! Conversions between `pb` messages, the store's rows and the engine's settings, plus the
//! JSON shapes persisted in the store's opaque columns (task settings, progress, events).
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::pb;
use super::status::ApiError;
use crate::config::TrainingDefaults;
use crate::store::{EvalRow, HeadChange, TaskRow, TaskState, VersionRow};
use crate::trainer::{BnPolicy, LossWeights, Method, ModelConfig, Preset, TrainConfig};
use crate::worker::replay::ReplaySettings;

/// Documented upper bounds of the numeric training settings (see `TrainSettings` in the
/// proto); a value outside its range is `INVALID_ARGUMENT`.
pub mod bounds {
    /// `epochs` in 1..=MAX_EPOCHS.
    pub const MAX_EPOCHS: u32 = 10_000;
    /// `batch_size` in 2..=MAX_BATCH.
    pub const MAX_BATCH: u32 = 65_536;
    /// `drift_check_every` in 1..=MAX_DRIFT_CHECK_EVERY.
    pub const MAX_DRIFT_CHECK_EVERY: u32 = 1_000_000;
    /// `learning_rate` in (0, MAX_LEARNING_RATE].
    pub const MAX_LEARNING_RATE: f64 = 10.0;
    /// `momentum_reference_steps` in 0..=MAX_MOMENTUM_REFERENCE_STEPS.
    pub const MAX_MOMENTUM_REFERENCE_STEPS: u32 = 1_000_000;
    /// `queue_size` in 1..=MAX_QUEUE_SIZE (also the bound of `training.queue_size`).
    pub const MAX_QUEUE_SIZE: u32 = crate::config::MAX_QUEUE_SIZE;
    /// `drift_threshold` in [0, MAX_DRIFT_THRESHOLD].
    pub const MAX_DRIFT_THRESHOLD: f64 = 1e3;
    /// Each loss weight in [0, MAX_LOSS_WEIGHT].
    pub const MAX_LOSS_WEIGHT: f64 = 1e4;
}

/// Checks that `value` is at most `max`, naming the field.
fn at_most<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    max: T,
) -> Result<(), ApiError> {
    if value > max {
        return Err(ApiError::Invalid(format!(
            "settings.{field} is {value}; the maximum is {max}"
        )));
    }
    Ok(())
}

/// A task's effective training settings (defaults filled in), stored as `settings_json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSettings {
    pub preset: Preset,
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub drift_threshold: f64,
    pub drift_check_every: u32,
    pub method: Method,
    pub bn_policy: BnPolicy,
    pub seed: u64,
    pub queue_size: i64,
    pub checkpoint_every: i64,
    #[serde(default)]
    pub weights: LossWeights,
    /// Experience replay from the lineage's earlier tasks (default: none).
    #[serde(default)]
    pub replay: ReplaySettings,
    /// Task-0 momentum scaled to the task's length (0 = fixed, the paper).
    #[serde(default)]
    pub momentum_reference_steps: u32,
}

impl TaskSettings {
    /// Fills unset fields from the server defaults and validates every value.
    pub fn from_pb(
        s: Option<pb::TrainSettings>,
        preset: Preset,
        seed: u64,
        d: &TrainingDefaults,
    ) -> Result<TaskSettings, ApiError> {
        let s = s.unwrap_or_default();
        let method = match pb::Method::try_from(s.method) {
            Ok(pb::Method::Unspecified) | Ok(pb::Method::Ctp) => Method::Ctp,
            Ok(pb::Method::Seqft) => Method::SeqFt,
            Err(_) => {
                return Err(ApiError::Invalid(format!(
                    "settings.method: unknown value {}",
                    s.method
                )))
            }
        };
        let bn_policy = match s.bn_policy.map(pb::BnPolicy::try_from) {
            None | Some(Ok(pb::BnPolicy::Unspecified)) | Some(Ok(pb::BnPolicy::Frozen)) => {
                BnPolicy::Frozen
            }
            Some(Ok(pb::BnPolicy::Train)) => BnPolicy::Train,
            Some(Err(_)) => {
                return Err(ApiError::Invalid(
                    "settings.bn_policy: unknown value".into(),
                ))
            }
        };
        let w = s.loss_weights.unwrap_or_default();
        let d1 = LossWeights::default();
        let weights = LossWeights {
            ita: w.itc.unwrap_or(d1.ita),
            ita_queue: w.itc_queue.unwrap_or(d1.ita_queue),
            mlm: w.mlm.unwrap_or(d1.mlm),
            mlm_distill: w.mlm_distill.unwrap_or(d1.mlm_distill),
            tp_cross: w.tp_cross.unwrap_or(d1.tp_cross),
            tp_intra: w.tp_intra.unwrap_or(d1.tp_intra),
        };
        let ws = [
            weights.ita,
            weights.ita_queue,
            weights.mlm,
            weights.mlm_distill,
            weights.tp_cross,
            weights.tp_intra,
        ];
        if ws
            .iter()
            .any(|x| !x.is_finite() || *x < 0.0 || *x > bounds::MAX_LOSS_WEIGHT)
        {
            return Err(ApiError::Invalid(format!(
                "settings.loss_weights must be in [0, {}] (got {ws:?})",
                bounds::MAX_LOSS_WEIGHT
            )));
        }
        let batch_size = s.batch_size.unwrap_or(d.batch_size);
        let replay = ReplaySettings::from_pb(s.replay, batch_size)?;
        let t = TaskSettings {
            replay,
            weights,
            preset,
            epochs: s.epochs.unwrap_or(d.epochs),
            batch_size,
            learning_rate: s.learning_rate.unwrap_or(d.learning_rate),
            drift_threshold: s.drift_threshold.unwrap_or(d.drift_threshold),
            drift_check_every: s.drift_check_every.unwrap_or(d.drift_check_every),
            method,
            bn_policy,
            seed,
            queue_size: s.queue_size.map_or(d.queue_size, i64::from),
            checkpoint_every: d.checkpoint_every,
            momentum_reference_steps: s.momentum_reference_steps.unwrap_or(0),
        };
        at_most("epochs", t.epochs, bounds::MAX_EPOCHS)?;
        at_most("batch_size", t.batch_size, bounds::MAX_BATCH)?;
        at_most(
            "drift_check_every",
            t.drift_check_every,
            bounds::MAX_DRIFT_CHECK_EVERY,
        )?;
        at_most("learning_rate", t.learning_rate, bounds::MAX_LEARNING_RATE)?;
        at_most(
            "momentum_reference_steps",
            t.momentum_reference_steps,
            bounds::MAX_MOMENTUM_REFERENCE_STEPS,
        )?;
        at_most(
            "queue_size",
            t.queue_size,
            i64::from(bounds::MAX_QUEUE_SIZE),
        )?;
        at_most(
            "drift_threshold",
            t.drift_threshold,
            bounds::MAX_DRIFT_THRESHOLD,
        )?;
        t.train_config()
            .validate()
            .map_err(|m| ApiError::Invalid(format!("settings: {m}")))?;
        Ok(t)
    }

    pub fn to_pb(&self) -> pb::TrainSettings {
        pb::TrainSettings {
            epochs: Some(self.epochs),
            batch_size: Some(self.batch_size),
            learning_rate: Some(self.learning_rate),
            drift_threshold: Some(self.drift_threshold),
            drift_check_every: Some(self.drift_check_every),
            method: match self.method {
                Method::Ctp => pb::Method::Ctp,
                Method::SeqFt => pb::Method::Seqft,
            } as i32,
            bn_policy: Some(match self.bn_policy {
                BnPolicy::Frozen => pb::BnPolicy::Frozen,
                BnPolicy::Train => pb::BnPolicy::Train,
            } as i32),
            loss_weights: Some(pb::LossWeights {
                itc: Some(self.weights.ita),
                itc_queue: Some(self.weights.ita_queue),
                mlm: Some(self.weights.mlm),
                mlm_distill: Some(self.weights.mlm_distill),
                tp_cross: Some(self.weights.tp_cross),
                tp_intra: Some(self.weights.tp_intra),
            }),
            replay: self.replay.to_pb(),
            momentum_reference_steps: Some(self.momentum_reference_steps),
            queue_size: Some(u32::try_from(self.queue_size).unwrap_or(u32::MAX)),
        }
    }

    /// Optimizer steps this task takes over `n_train` training samples (full batches only,
    /// at least one per epoch, as the engine counts them).
    pub fn total_steps(&self, n_train: u64) -> u64 {
        u64::from(self.epochs) * (n_train / u64::from(self.batch_size.max(1))).max(1)
    }

    pub fn model_config(&self) -> ModelConfig {
        ModelConfig {
            bn_policy: self.bn_policy,
            ..ModelConfig::preset(self.preset)
        }
    }

    pub fn train_config(&self) -> TrainConfig {
        let mut c = TrainConfig {
            method: self.method,
            epochs: self.epochs as i64,
            batch_size: self.batch_size as i64,
            lr: self.learning_rate,
            queue_size: self.queue_size,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            weights: self.weights.clone(),
            ..TrainConfig::default()
        };
        c.momentum.threshold = self.drift_threshold;
        c.momentum.check_every = self.drift_check_every as i64;
        c.momentum.reference_steps = i64::from(self.momentum_reference_steps);
        c
    }
}

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
}

impl ProgressInfo {
    pub fn to_pb(&self) -> pb::Progress {
        pb::Progress {
            epoch: self.epoch,
            total_epochs: self.total_epochs,
            step: self.step,
            total_steps: self.total_steps,
            percent: if self.total_steps == 0 {
                0.0
            } else {
                100.0 * self.step as f64 / self.total_steps as f64
            },
            eta_seconds: self.eta_seconds,
            losses: self.losses.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            samples_per_second: self.samples_per_second,
            momentum_syncs: self.momentum_syncs,
            resumed_from_step: self.resumed_from_step,
        }
    }
}

/// What a persisted task event holds (`task_events.kind` + `payload_json`).
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
}

impl StoredEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            StoredEvent::Progress(_) => "progress",
            StoredEvent::Sync { .. } => "sync",
            StoredEvent::Terminal { .. } => "terminal",
            StoredEvent::Log { .. } => "log",
        }
    }

    pub fn to_pb(&self, seq: i64, at: DateTime<Utc>) -> pb::TaskEvent {
        use pb::task_event::Event;
        let event = match self {
            StoredEvent::Progress(p) => Event::Progress(p.to_pb()),
            StoredEvent::Sync {
                step,
                k,
                drift,
                threshold,
                duration_ms,
            } => Event::Sync(pb::MomentumSync {
                step: *step,
                k: *k,
                drift: *drift,
                threshold: *threshold,
                duration_ms: *duration_ms,
            }),
            StoredEvent::Terminal {
                state,
                error,
                produced_version,
                rejection,
            } => Event::Terminal(pb::Terminal {
                state: state_to_pb(state.parse().unwrap_or(TaskState::Failed)) as i32,
                error: error.clone(),
                produced_version: *produced_version,
                rejection_reason: rejection.clone(),
            }),
            StoredEvent::Log { message } => Event::Log(pb::Log {
                message: message.clone(),
            }),
        };
        pb::TaskEvent {
            seq: seq as u64,
            time: Some(timestamp(at)),
            event: Some(event),
        }
    }
}

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn state_to_pb(s: TaskState) -> pb::TaskState {
    match s {
        TaskState::Queued => pb::TaskState::Queued,
        TaskState::Running => pb::TaskState::Running,
        TaskState::Succeeded => pb::TaskState::Succeeded,
        TaskState::Failed => pb::TaskState::Failed,
        TaskState::Cancelled => pb::TaskState::Cancelled,
    }
}

pub fn state_from_pb(v: i32) -> Result<Option<TaskState>, ApiError> {
    Ok(match pb::TaskState::try_from(v) {
        Ok(pb::TaskState::Unspecified) => None,
        Ok(pb::TaskState::Queued) => Some(TaskState::Queued),
        Ok(pb::TaskState::Running) => Some(TaskState::Running),
        Ok(pb::TaskState::Succeeded) => Some(TaskState::Succeeded),
        Ok(pb::TaskState::Failed) => Some(TaskState::Failed),
        Ok(pb::TaskState::Cancelled) => Some(TaskState::Cancelled),
        Err(_) => return Err(ApiError::Invalid(format!("state: unknown value {v}"))),
    })
}

pub fn task_to_pb(t: &TaskRow) -> pb::Task {
    let settings: Option<TaskSettings> = serde_json::from_str(&t.settings_json).ok();
    let progress: ProgressInfo = serde_json::from_str(&t.progress_json).unwrap_or_default();
    pb::Task {
        id: t.id.clone(),
        model: t.model.clone(),
        name: t.name.clone(),
        state: state_to_pb(t.state) as i32,
        progress: Some(progress.to_pb()),
        created_at: Some(timestamp(t.created_at)),
        started_at: t.started_at.map(timestamp),
        finished_at: t.finished_at.map(timestamp),
        error: t.error.clone().unwrap_or_default(),
        produced_version: t.produced_version,
        base_version: t.base_version,
        n_train: t.n_train as u64,
        n_eval: t.n_eval as u64,
        seed: settings.as_ref().map_or(0, |s| s.seed),
        settings: settings.map(|s| s.to_pb()),
        idempotency_key: t.idempotency_key.clone(),
        cancel_requested: t.cancel_requested,
        rejection_reason: t.rejected_reason.clone(),
    }
}

fn eval_to_pb(e: &EvalRow) -> pb::TaskEval {
    pb::TaskEval {
        task_id: e.task_id.clone(),
        task_name: e.task_name.clone(),
        tr1: e.tr1,
        tr5: e.tr5,
        tr10: e.tr10,
        ir1: e.ir1,
        ir5: e.ir5,
        ir10: e.ir10,
        rm: e.rm,
    }
}

pub fn version_to_pb(v: &VersionRow) -> pb::Version {
    pb::Version {
        model: v.model.clone(),
        version: v.version,
        parent: v.parent,
        task_id: v.task_id.clone(),
        task_name: v.task_name.clone(),
        checkpoint_sha256: v.sha256.clone(),
        created_at: Some(timestamp(v.created_at)),
        evals: v.task_evals().map(eval_to_pb).collect(),
        union_eval: v.union_eval().map(eval_to_pb),
        average_forgetting: v.average_forgetting,
        forgetting: v
            .forgetting
            .iter()
            .map(|(t, f)| pb::TaskForgetting {
                task_id: t.clone(),
                forgetting: *f,
            })
            .collect(),
        bwt: v.bwt,
        momentum_syncs: v.momentum_syncs as u64,
        momentum_steps: v.momentum_steps as u64,
        is_head: v.is_head,
        state: if v.rejected_reason.is_some() {
            pb::VersionState::Rejected
        } else {
            pb::VersionState::Accepted
        } as i32,
        rejection_reason: v.rejected_reason.clone().unwrap_or_default(),
        device: v.device.clone(),
        precision: v.precision.clone(),
    }
}

pub fn head_change_to_pb(h: &HeadChange) -> pb::HeadChange {
    pb::HeadChange {
        from: h.from_version,
        to: h.to_version,
        at: Some(timestamp(h.at)),
        who: h.who.clone(),
        reason: h.reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_fill_defaults_carry_loss_weights_and_name_bad_fields() {
        let d = TrainingDefaults::default();
        let t = TaskSettings::from_pb(None, Preset::Tiny, 3, &d).unwrap();
        assert_eq!(
            (t.epochs, t.batch_size, t.seed),
            (d.epochs, d.batch_size, 3)
        );
        assert_eq!(t.train_config().weights, LossWeights::default());

        let pb_settings = pb::TrainSettings {
            loss_weights: Some(pb::LossWeights {
                mlm: Some(0.1),
                tp_cross: Some(5.0),
                ..Default::default()
            }),
            drift_threshold: Some(0.02),
            method: pb::Method::Seqft as i32,
            ..Default::default()
        };
        let c = TaskSettings::from_pb(Some(pb_settings), Preset::Tiny, 0, &d)
            .unwrap()
            .train_config();
        assert_eq!(
            (c.weights.mlm, c.weights.tp_cross, c.weights.tp_intra),
            (0.1, 5.0, 1.0)
        );
        assert_eq!((c.momentum.threshold, c.method), (0.02, Method::SeqFt));

        let bad = pb::TrainSettings {
            batch_size: Some(1),
            ..Default::default()
        };
        let e = TaskSettings::from_pb(Some(bad), Preset::Tiny, 0, &d)
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch_size"), "{e}");
        let bad = pb::TrainSettings {
            loss_weights: Some(pb::LossWeights {
                itc: Some(-1.0),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(TaskSettings::from_pb(Some(bad), Preset::Tiny, 0, &d)
            .unwrap_err()
            .to_string()
            .contains("loss_weights"));
    }
}
