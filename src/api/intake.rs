//! The samples of one submission, streamed (`submit`) or read from shards (`submit_ref`):
//! numbered, checked with [`check_sample`] and written to the bundle in one place, so both
//! paths apply exactly the same rules and messages. Below both (imports neither).
use std::collections::HashMap;
use std::sync::Arc;

use ctp_api::pb;

use super::auth::Caller;
use super::status::ApiError;
use crate::quota::{check_bytes, Usage};
use crate::state::AppState;
use crate::task::TaskSettings;
use crate::taskdata::{BundleWriter, StoredSample};

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
    /// The caller's byte quota, checked as samples arrive: (caller, quota, use before).
    quota: Option<(Caller, Usage)>,
    /// Bytes of sample data accepted so far (ids, captions, images).
    bytes: u64,
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
            quota: None,
            bytes: 0,
        }
    }

    /// Refuses the sample that would bring `caller` over its byte quota (`usage` is its use
    /// before this upload).
    pub(super) fn limit_bytes(&mut self, caller: &Caller, usage: Usage) {
        if caller.quota.max_stored_bytes.is_some() {
            self.quota = Some((caller.clone(), usage));
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
        self.bytes += (stored.id.len() + stored.caption.len() + stored.image.len()) as u64;
        if let Some((caller, usage)) = &self.quota {
            check_bytes(&caller.name, &caller.quota, usage, self.bytes, Some(n))?;
        }
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

    /// The checks on a whole anchor suite once every sample is in (at least one sample, the
    /// expected count); the bundle, ready to commit.
    pub(super) fn finish_suite(self, expected: Option<u64>) -> Result<BundleWriter, ApiError> {
        let n = self.n;
        if n == 0 {
            return Err(ApiError::Invalid("the upload has zero samples".into()));
        }
        if let Some(want) = expected.filter(|&w| w != n as u64) {
            return Err(ApiError::Invalid(format!(
                "header.expected_samples is {want} but {n} samples arrived"
            )));
        }
        Ok(self.writer)
    }

    /// The checks on the whole task once every sample is in; the bundle, ready to commit.
    pub(super) fn finish(
        self,
        expected: Option<u64>,
        settings: &TaskSettings,
    ) -> Result<BundleWriter, ApiError> {
        let (n, writer) = (self.n, self.writer);
        if n == 0 {
            return Err(ApiError::Invalid("the upload has zero samples".into()));
        }
        if let Some(want) = expected {
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
        let steps = settings.total_steps(writer.n_train as u64);
        let max_steps = self.state.settings.limits.max_steps_per_task;
        if steps > max_steps {
            return Err(ApiError::Invalid(format!(
                "settings: {} epochs over {} training samples at batch_size {} is {steps} steps; the limit is {max_steps} (limits.max_steps_per_task)",
                settings.epochs, writer.n_train, settings.batch_size
            )));
        }
        Ok(writer)
    }
}

/// Deterministic eval membership for `eval_fraction` uploads: a hash of (seed, index).
fn in_eval(seed: u64, index: u64, fraction: f32) -> bool {
    let h = crate::trainer::data::mix(&[seed, index, 0xE7A1]);
    (h % 1_000_000) as f64 / 1e6 < fraction as f64
}

/// How an upload marks its eval samples.
#[derive(Clone, Copy, Debug)]
pub enum SplitMode {
    /// A deterministic fraction, chosen from the seed; samples leave `split` unset.
    Fraction(f32),
    /// Each sample says SPLIT_TRAIN or SPLIT_EVAL.
    PerSample,
    /// Every sample is evaluated (an anchor suite): `split` unset or SPLIT_EVAL.
    AllEval,
}

/// Everything [`check_sample`] checks a sample against.
#[derive(Clone, Debug)]
pub struct SampleRules {
    pub split: SplitMode,
    pub seed: u64,
    pub max_caption_bytes: usize,
    pub image: crate::images::ImageLimits,
    /// The preset's image side, which every image must decode and resize to.
    pub size: u32,
}

/// Validates sample `i` of an upload; returns it ready to store, or INVALID_ARGUMENT naming
/// the sample and the reason.
pub fn check_sample(
    i: usize,
    s: pb::Sample,
    rules: &SampleRules,
) -> Result<StoredSample, ApiError> {
    let bad = |why: String| ApiError::Invalid(format!("sample {i}: {why}"));
    let caption = String::from_utf8(s.caption).map_err(|e| {
        bad(format!(
            "caption is not valid UTF-8 (byte {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let max = rules.max_caption_bytes;
    if caption.trim().is_empty() {
        return Err(bad("caption is empty".into()));
    }
    if caption.len() > max {
        return Err(bad(format!(
            "caption is {} bytes; the limit is {max}",
            caption.len()
        )));
    }
    crate::images::decode_rgb(&s.image, &rules.image, rules.size)
        .map_err(|e| bad(e.to_string()))?;
    let eval = match (rules.split, pb::Split::try_from(s.split)) {
        (SplitMode::Fraction(f), Ok(pb::Split::Unspecified)) => in_eval(rules.seed, i as u64, f),
        (SplitMode::Fraction(_), _) => {
            return Err(bad(
                "split must be unset when the header gives eval_fraction".into(),
            ))
        }
        (SplitMode::PerSample, Ok(pb::Split::Train)) => false,
        (SplitMode::PerSample, Ok(pb::Split::Eval)) => true,
        (SplitMode::PerSample, _) => {
            return Err(bad(
                "split must be SPLIT_TRAIN or SPLIT_EVAL (per-sample eval split)".into(),
            ))
        }
        (SplitMode::AllEval, Ok(pb::Split::Unspecified | pb::Split::Eval)) => true,
        (SplitMode::AllEval, _) => {
            return Err(bad(
                "split must be unset or SPLIT_EVAL: every sample of an anchor suite is evaluated"
                    .into(),
            ))
        }
    };
    super::limits::check("id", &s.id, super::limits::SAMPLE_ID_BYTES)
        .map_err(|e| bad(e.to_string()))?;
    let id = if s.id.is_empty() { i.to_string() } else { s.id };
    Ok(StoredSample {
        id,
        caption,
        eval,
        image: s.image,
    })
}

/// An error reading the upload stream. tonic reports an over-limit message as OUT_OF_RANGE;
/// ctp answers RESOURCE_EXHAUSTED (as gRPC C++/Java/Go do) with the limit and the remedy.
pub(super) fn stream_error(s: tonic::Status, n: usize) -> ApiError {
    if s.code() == tonic::Code::OutOfRange {
        ApiError::ResourceExhausted(format!(
            "upload message after sample {n} is too large ({}); send smaller SampleChunks (server limit: limits.max_message_bytes)",
            s.message()
        ))
    } else {
        ApiError::Invalid(format!("upload stream after sample {n}: {}", s.message()))
    }
}

/// An I/O error while writing under the data dir: a full disk or quota is
/// `RESOURCE_EXHAUSTED` naming the data dir; anything else is internal.
pub(super) fn disk_error(state: &AppState, doing: &str, e: std::io::Error) -> ApiError {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => ApiError::ResourceExhausted(format!(
            "{doing}: the data dir {} is out of space ({e}); free space there and retry",
            state.data.root().display()
        )),
        _ => ApiError::Internal(format!("{doing}: {e}")),
    }
}
