//! `ctp.v1.TrainSettings` ↔ the task domain's [`TaskSettings`]: unset fields take the server's
//! defaults, enums are checked, and the domain validates every bound.
use ctp_api::pb;

use crate::api::status::ApiError;
use crate::config::TrainingDefaults;
use crate::task::{ReplaySettings, TaskSettings};
use crate::trainer::{BnPolicy, LossWeights, Method, Preset};

impl From<crate::task::Invalid> for ApiError {
    fn from(e: crate::task::Invalid) -> Self {
        ApiError::Invalid(e.0)
    }
}

/// The effective settings of a new task: `s` with unset fields filled from the server
/// defaults `d`, validated (`INVALID_ARGUMENT` names the field).
pub fn settings_from_pb(
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
    let replay = replay_from_pb(s.replay);
    replay.validate(batch_size)?;
    let w = s.loss_weights.unwrap_or_default();
    let d1 = TaskSettings::default_weights(d, replay.is_enabled());
    let weights = LossWeights {
        ita: w.itc.unwrap_or(d1.ita),
        ita_queue: w.itc_queue.unwrap_or(d1.ita_queue),
        mlm: w.mlm.unwrap_or(d1.mlm),
        mlm_distill: w.mlm_distill.unwrap_or(d1.mlm_distill),
        tp_cross: w.tp_cross.unwrap_or(d1.tp_cross),
        tp_intra: w.tp_intra.unwrap_or(d1.tp_intra),
    };
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
            .unwrap_or_else(|| TaskSettings::default_queue_size(d, batch_size)),
        checkpoint_every: d.checkpoint_every,
        momentum_reference_steps: s.momentum_reference_steps.unwrap_or(0),
    };
    t.validate()?;
    Ok(t)
}

pub fn settings_to_pb(t: &TaskSettings) -> pb::TrainSettings {
    pb::TrainSettings {
        epochs: Some(t.epochs),
        batch_size: Some(t.batch_size),
        learning_rate: Some(t.learning_rate),
        drift_threshold: Some(t.drift_threshold),
        drift_check_every: Some(t.drift_check_every),
        method: match t.method {
            Method::Ctp => pb::Method::Ctp,
            Method::SeqFt => pb::Method::Seqft,
        } as i32,
        bn_policy: Some(match t.bn_policy {
            BnPolicy::Frozen => pb::BnPolicy::Frozen,
            BnPolicy::Train => pb::BnPolicy::Train,
        } as i32),
        loss_weights: Some(pb::LossWeights {
            itc: Some(t.weights.ita),
            itc_queue: Some(t.weights.ita_queue),
            mlm: Some(t.weights.mlm),
            mlm_distill: Some(t.weights.mlm_distill),
            tp_cross: Some(t.weights.tp_cross),
            tp_intra: Some(t.weights.tp_intra),
        }),
        replay: replay_to_pb(&t.replay),
        momentum_reference_steps: Some(t.momentum_reference_steps),
        queue_size: Some(u32::try_from(t.queue_size).unwrap_or(u32::MAX)),
    }
}

fn replay_from_pb(r: Option<pb::Replay>) -> ReplaySettings {
    let r = r.unwrap_or_default();
    ReplaySettings {
        samples_per_task: r.samples_per_task.unwrap_or(0),
        batch_fraction: r.batch_fraction.unwrap_or(0.0),
    }
}

fn replay_to_pb(r: &ReplaySettings) -> Option<pb::Replay> {
    r.is_enabled().then(|| pb::Replay {
        samples_per_task: (r.samples_per_task > 0).then_some(r.samples_per_task),
        batch_fraction: (r.batch_fraction > 0.0).then_some(r.batch_fraction),
    })
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::task::bounds;

    #[test]
    fn settings_fill_defaults_carry_loss_weights_and_name_bad_fields() {
        let d = TrainingDefaults::default();
        let t = settings_from_pb(None, Preset::Tiny, 3, &d).unwrap();
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
        let c = settings_from_pb(Some(replaying(None)), Preset::Tiny, 3, &d)
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
        let c = settings_from_pb(Some(replaying(Some(own))), Preset::Tiny, 3, &d)
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
        let t = settings_from_pb(None, Preset::Tiny, 3, &paper).unwrap();
        assert_eq!(t.train_config().weights, LossWeights::default());
        assert_eq!(t.queue_size, 1024);
        let huge = pb::TrainSettings {
            batch_size: Some(bounds::MAX_BATCH),
            ..Default::default()
        };
        let t = settings_from_pb(Some(huge), Preset::Tiny, 3, &d).unwrap();
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
        let c = settings_from_pb(Some(pb_settings), Preset::Tiny, 0, &d)
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
        let e = settings_from_pb(Some(bad), Preset::Tiny, 0, &d)
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
        assert!(settings_from_pb(Some(bad), Preset::Tiny, 0, &d)
            .unwrap_err()
            .to_string()
            .contains("loss_weights"));
    }
}

#[cfg(test)]
mod replay_tests {
    use super::*;

    #[test]
    fn replay_round_trips_and_bad_values_name_the_field() {
        let r = |n: Option<u32>, f: Option<f64>| pb::Replay {
            samples_per_task: n,
            batch_fraction: f,
        };
        assert!(!replay_from_pb(None).is_enabled());
        let ok = replay_from_pb(Some(r(Some(4), None)));
        assert_eq!(replay_to_pb(&ok), Some(r(Some(4), None)));
        let bad = pb::TrainSettings {
            replay: Some(r(Some(4), Some(0.5))),
            ..Default::default()
        };
        let e = settings_from_pb(Some(bad), Preset::Tiny, 0, &TrainingDefaults::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("settings.replay") && e.contains("not both"),
            "{e}"
        );
    }
}
