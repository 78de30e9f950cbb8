//! A task's training settings: defaults filled in, checked against documented bounds, stored as
//! `settings_json`, and turned into the engine's `TrainConfig`. The wire form and its
//! conversion live at the API edge (`api::convert::settings`).
use serde::{Deserialize, Serialize};

use super::replay::ReplaySettings;
use super::Invalid;
use crate::config::{TrainingDefaults, QUEUE_BATCHES};
use crate::trainer::{BnPolicy, LossWeights, Method, ModelConfig, Preset, TrainConfig};

/// Documented upper bounds of the numeric training settings (see `TrainSettings` in the
/// proto); a value outside its range is refused with the field's name.
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
    /// Each loss weight in [0, MAX_LOSS_WEIGHT] (also the bound of `training.tp_weight`).
    pub const MAX_LOSS_WEIGHT: f64 = crate::config::MAX_LOSS_WEIGHT;
}

// The default queue of the largest batch is a valid queue size.
const _: () = assert!(QUEUE_BATCHES * bounds::MAX_BATCH as i64 <= bounds::MAX_QUEUE_SIZE as i64);

/// Checks that `value` is at most `max`, naming the field.
fn at_most<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    max: T,
) -> Result<(), Invalid> {
    if value > max {
        return Err(Invalid(format!(
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
    /// The loss weights a task gets when it names none: the paper's, except topology
    /// preservation, the server's measured default, which depends on whether the task replays
    /// earlier tasks.
    pub fn default_weights(d: &TrainingDefaults, replays: bool) -> LossWeights {
        let tp = if replays {
            d.tp_weight_replay
        } else {
            d.tp_weight
        };
        LossWeights {
            tp_cross: tp,
            tp_intra: tp,
            ..LossWeights::default()
        }
    }

    /// The feature queue a task gets when it names none: the server's, else 8 batches.
    pub fn default_queue_size(d: &TrainingDefaults, batch_size: u32) -> i64 {
        d.queue_size
            .unwrap_or(QUEUE_BATCHES * i64::from(batch_size))
    }

    /// Checks every value against its documented bound, naming the first field out of range.
    pub fn validate(&self) -> Result<(), Invalid> {
        let w = &self.weights;
        let ws = [
            w.ita,
            w.ita_queue,
            w.mlm,
            w.mlm_distill,
            w.tp_cross,
            w.tp_intra,
        ];
        if ws
            .iter()
            .any(|x| !x.is_finite() || *x < 0.0 || *x > bounds::MAX_LOSS_WEIGHT)
        {
            return Err(Invalid(format!(
                "settings.loss_weights must be in [0, {}] (got {ws:?})",
                bounds::MAX_LOSS_WEIGHT
            )));
        }
        self.replay.validate(self.batch_size)?;
        at_most("epochs", self.epochs, bounds::MAX_EPOCHS)?;
        at_most("batch_size", self.batch_size, bounds::MAX_BATCH)?;
        at_most(
            "drift_check_every",
            self.drift_check_every,
            bounds::MAX_DRIFT_CHECK_EVERY,
        )?;
        at_most(
            "learning_rate",
            self.learning_rate,
            bounds::MAX_LEARNING_RATE,
        )?;
        at_most(
            "momentum_reference_steps",
            self.momentum_reference_steps,
            bounds::MAX_MOMENTUM_REFERENCE_STEPS,
        )?;
        at_most(
            "queue_size",
            self.queue_size,
            i64::from(bounds::MAX_QUEUE_SIZE),
        )?;
        at_most(
            "drift_threshold",
            self.drift_threshold,
            bounds::MAX_DRIFT_THRESHOLD,
        )?;
        self.train_config()
            .validate()
            .map_err(|m| Invalid(format!("settings: {m}")))
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
