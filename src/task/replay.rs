//! Replay settings of a task (issue #10): how many samples of the lineage's earlier tasks each
//! batch mixes in. The pools themselves are built by the worker (`worker::replay_pools`).
use serde::{Deserialize, Serialize};

use super::Invalid;

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
    /// Checks the settings against the batch size, naming the field at fault.
    pub fn validate(&self, batch_size: u32) -> Result<(), Invalid> {
        if self.samples_per_task > 0 && self.batch_fraction != 0.0 {
            return Err(Invalid(
                "settings.replay: set samples_per_task or batch_fraction, not both".into(),
            ));
        }
        if !(self.batch_fraction.is_finite() && (0.0..=1.0).contains(&self.batch_fraction)) {
            return Err(Invalid(format!(
                "settings.replay.batch_fraction: {} is outside (0, 1]",
                self.batch_fraction
            )));
        }
        if self.samples_per_task > batch_size {
            return Err(Invalid(format!(
                "settings.replay.samples_per_task: {} exceeds batch_size {batch_size}",
                self.samples_per_task
            )));
        }
        Ok(())
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
        let r = |n: u32, f: f64| ReplaySettings {
            samples_per_task: n,
            batch_fraction: f,
        };
        assert!(!ReplaySettings::default().is_enabled());
        assert!(r(4, 0.0).validate(32).is_ok());
        for (bad, field) in [
            (r(4, 0.5), "not both"),
            (r(0, 1.5), "batch_fraction"),
            (r(0, -0.1), "batch_fraction"),
            (r(0, f64::NAN), "batch_fraction"),
            (r(33, 0.0), "samples_per_task"),
        ] {
            let e = bad.validate(32).unwrap_err().to_string();
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
