//! A task's training settings: the wire's `TrainSettings` checked against documented bounds,
//! defaults filled in, stored as `settings_json`, and turned into the engine's `TrainConfig`.
use serde::{Deserialize, Serialize};

use crate::api::pb;
use crate::api::status::ApiError;
use crate::config::{TrainingDefaults, QUEUE_BATCHES};
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
        let batch_size = s.batch_size.unwrap_or(d.batch_size);
        let replay = ReplaySettings::from_pb(s.replay, batch_size)?;
        let w = s.loss_weights.unwrap_or_default();
        // The paper's weights, except topology preservation: the server's measured default,
        // which depends on whether the task replays earlier tasks.
        let tp = if replay.is_enabled() {
            d.tp_weight_replay
        } else {
            d.tp_weight
        };
        let d1 = LossWeights {
            tp_cross: tp,
            tp_intra: tp,
            ..LossWeights::default()
        };
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
            queue_size: s
                .queue_size
                .map(i64::from)
                .or(d.queue_size)
                .unwrap_or(QUEUE_BATCHES * i64::from(batch_size)),
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
        let c = t.train_config();
        assert_eq!(
            (c.weights.tp_cross, c.weights.tp_intra, c.weights.ita_queue),
            (d.tp_weight, d.tp_weight, LossWeights::default().ita_queue)
        );
        assert_eq!(t.queue_size, 8 * i64::from(d.batch_size), "8 batches");
        // A task that replays gets the replay default; its own weights still win.
        let replaying = |w: Option<pb::LossWeights>| pb::TrainSettings {
            replay: Some(pb::Replay {
                batch_fraction: Some(0.25),
                ..Default::default()
            }),
            loss_weights: w,
            ..Default::default()
        };
        let c = TaskSettings::from_pb(Some(replaying(None)), Preset::Tiny, 3, &d)
            .unwrap()
            .train_config();
        assert_eq!(
            (c.weights.tp_cross, c.weights.tp_intra),
            (d.tp_weight_replay, d.tp_weight_replay)
        );
        assert_ne!(d.tp_weight_replay, d.tp_weight, "the test tells them apart");
        let own = pb::LossWeights {
            tp_intra: Some(7.0),
            ..Default::default()
        };
        let c = TaskSettings::from_pb(Some(replaying(Some(own))), Preset::Tiny, 3, &d)
            .unwrap()
            .train_config();
        assert_eq!(
            (c.weights.tp_cross, c.weights.tp_intra),
            (d.tp_weight_replay, 7.0)
        );
        let paper = TrainingDefaults {
            queue_size: Some(1024),
            tp_weight: 1.0,
            ..TrainingDefaults::default()
        };
        let t = TaskSettings::from_pb(None, Preset::Tiny, 3, &paper).unwrap();
        assert_eq!(t.train_config().weights, LossWeights::default());
        assert_eq!(t.queue_size, 1024);
        let huge = pb::TrainSettings {
            batch_size: Some(bounds::MAX_BATCH),
            ..Default::default()
        };
        let t = TaskSettings::from_pb(Some(huge), Preset::Tiny, 3, &d).unwrap();
        assert_eq!(
            t.queue_size,
            8 * i64::from(bounds::MAX_BATCH),
            "within MAX_QUEUE_SIZE"
        );

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
            (0.1, 5.0, d.tp_weight)
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
