//! The samples of one submission, streamed (`submit`) or read from shards (`submit_ref`):
//! numbered, checked with [`check_sample`] and written to the bundle in one place, so both
//! paths apply exactly the same rules and messages.
use std::collections::HashMap;
use std::sync::Arc;

use ctp_api::pb;

use super::status::ApiError;
use super::submit::{check_sample, disk_error, Header, SampleRules};
use crate::state::AppState;
use crate::taskdata::BundleWriter;

/// Checks and stores the samples of one submission, streamed or read from shards: the one
/// place that numbers samples, applies `limits.max_samples_per_task` and [`check_sample`],
/// refuses repeated ids and writes the bundle.
pub(super) struct Intake {
    state: Arc<AppState>,
    pub(super) rules: SampleRules,
    writer: BundleWriter,
    ids: HashMap<String, usize>,
    /// Samples accepted so far (the next sample's number).
    pub(super) n: usize,
    max_samples: usize,
}

impl Intake {
    /// An intake writing to `writer` under `rules`.
    pub(super) fn new(state: Arc<AppState>, rules: SampleRules, writer: BundleWriter) -> Intake {
        let max_samples = state.settings.limits.max_samples_per_task;
        Intake {
            state,
            rules,
            writer,
            ids: HashMap::new(),
            n: 0,
            max_samples,
        }
    }

    /// Checks sample number `self.n` and appends it to the bundle.
    pub(super) fn add(&mut self, s: pb::Sample) -> Result<(), ApiError> {
        let (n, max_samples) = (self.n, self.max_samples);
        if n >= max_samples {
            return Err(ApiError::Invalid(format!(
                "sample {n}: the task exceeds the limit of {max_samples} samples"
            )));
        }
        let stored = check_sample(n, s, &self.rules)?;
        if let Some(prev) = self.ids.insert(stored.id.clone(), n) {
            return Err(ApiError::Invalid(format!(
                "sample {n}: id {:?} repeats sample {prev}",
                stored.id
            )));
        }
        self.writer
            .append(&stored)
            .map_err(|e| disk_error(&self.state, &format!("writing sample {n}"), e))?;
        self.n += 1;
        Ok(())
    }

    /// The checks on the whole task once every sample is in; the bundle, ready to commit.
    pub(super) fn finish(self, hdr: &Header) -> Result<BundleWriter, ApiError> {
        let (n, writer) = (self.n, self.writer);
        if n == 0 {
            return Err(ApiError::Invalid("the upload has zero samples".into()));
        }
        if let Some(want) = hdr.expected {
            if want != n as u64 {
                return Err(ApiError::Invalid(format!(
                    "header.expected_samples is {want} but {n} samples arrived"
                )));
            }
        }
        if writer.n_eval == 0 {
            return Err(ApiError::Invalid(format!(
                "no eval samples among {n}: mark some SPLIT_EVAL or raise eval_fraction"
            )));
        }
        if writer.n_train == 0 {
            return Err(ApiError::Invalid(format!(
                "no training samples among {n}: every sample is in the eval split"
            )));
        }
        let steps = hdr.settings.total_steps(writer.n_train as u64);
        let max_steps = self.state.settings.limits.max_steps_per_task;
        if steps > max_steps {
            return Err(ApiError::Invalid(format!(
                "settings: {} epochs over {} training samples at batch_size {} is {steps} steps; the limit is {max_steps} (limits.max_steps_per_task)",
                hdr.settings.epochs, writer.n_train, hdr.settings.batch_size
            )));
        }
        Ok(writer)
    }
}
