//! Replay settings of a task and the pools the worker hands to the engine (issue #10).
//!
//! The pools are the training splits of the tasks on the lineage of the version the task
//! trains from (root → parent), so a rolled-back or rejected branch is never replayed. Each
//! bundle is read with `worker::load_split`, the same function that loads the task's own data
//! (`worker::replay_pools`; this file stays below the daemon state).
use serde::{Deserialize, Serialize};

use crate::api::pb;
use crate::api::status::ApiError;

/// How much to replay; both zero = no replay. At most one is non-zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplaySettings {
    /// Samples of each earlier task per batch.
    #[serde(default)]
    pub samples_per_task: u32,
    /// Replayed samples per batch as a fraction of the batch size, split over the tasks.
    #[serde(default)]
    pub batch_fraction: f64,
}

impl ReplaySettings {
    /// Validates `settings.replay` against the batch size.
    pub fn from_pb(r: Option<pb::Replay>, batch_size: u32) -> Result<ReplaySettings, ApiError> {
        let r = r.unwrap_or_default();
        let s = ReplaySettings {
            samples_per_task: r.samples_per_task.unwrap_or(0),
            batch_fraction: r.batch_fraction.unwrap_or(0.0),
        };
        if s.samples_per_task > 0 && s.batch_fraction != 0.0 {
            return Err(ApiError::Invalid(
                "settings.replay: set samples_per_task or batch_fraction, not both".into(),
            ));
        }
        if !(s.batch_fraction.is_finite() && (0.0..=1.0).contains(&s.batch_fraction)) {
            return Err(ApiError::Invalid(format!(
                "settings.replay.batch_fraction: {} is outside (0, 1]",
                s.batch_fraction
            )));
        }
        if s.samples_per_task > batch_size {
            return Err(ApiError::Invalid(format!(
                "settings.replay.samples_per_task: {} exceeds batch_size {batch_size}",
                s.samples_per_task
            )));
        }
        Ok(s)
    }

    pub fn to_pb(&self) -> Option<pb::Replay> {
        (self.is_enabled()).then(|| pb::Replay {
            samples_per_task: (self.samples_per_task > 0).then_some(self.samples_per_task),
            batch_fraction: (self.batch_fraction > 0.0).then_some(self.batch_fraction),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.samples_per_task > 0 || self.batch_fraction > 0.0
    }

    /// Replayed samples per batch from each of `n_tasks` earlier tasks.
    pub fn per_task(&self, n_tasks: usize, batch_size: u32) -> usize {
        if n_tasks == 0 {
            0
        } else if self.samples_per_task > 0 {
            self.samples_per_task as usize
        } else if self.batch_fraction > 0.0 {
            let total = (self.batch_fraction * f64::from(batch_size)).round() as usize;
            (total / n_tasks).max(1)
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let r = |n: Option<u32>, f: Option<f64>| pb::Replay {
            samples_per_task: n,
            batch_fraction: f,
        };
        assert!(!ReplaySettings::from_pb(None, 32).unwrap().is_enabled());
        let ok = ReplaySettings::from_pb(Some(r(Some(4), None)), 32).unwrap();
        assert_eq!(ok.to_pb(), Some(r(Some(4), None)));
        for (bad, field) in [
            (r(Some(4), Some(0.5)), "not both"),
            (r(None, Some(1.5)), "batch_fraction"),
            (r(None, Some(-0.1)), "batch_fraction"),
            (r(None, Some(f64::NAN)), "batch_fraction"),
            (r(Some(33), None), "samples_per_task"),
        ] {
            let e = ReplaySettings::from_pb(Some(bad), 32)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("settings.replay") && e.contains(field), "{e}");
        }
    }

    #[test]
    fn per_task_sizes() {
        let per = |n, f| ReplaySettings {
            samples_per_task: n,
            batch_fraction: f,
        };
        assert_eq!(per(3, 0.0).per_task(5, 32), 3);
        assert_eq!(per(3, 0.0).per_task(0, 32), 0);
        // 0.25 of 32 = 8 over 3 tasks -> 2 each; over 20 tasks -> at least 1 each.
        assert_eq!(per(0, 0.25).per_task(3, 32), 2);
        assert_eq!(per(0, 0.25).per_task(20, 32), 1);
        assert_eq!(per(0, 0.0).per_task(3, 32), 0);
    }
}
