//! Reading a task's stored samples for a run: a split decoded at the preset's image size, and
//! the probe set its version stores for verified export.
use super::lease::Fence;
use super::RunError;
use crate::images::ImageLimits;
use crate::state::AppState;
use crate::taskdata::{self, StoredSample};
use crate::trainer::probe::PROBE_SAMPLES;
use crate::trainer::Sample;

pub(super) fn decode(
    samples: &[StoredSample],
    size: u32,
    limits: &ImageLimits,
) -> Result<Vec<Sample>, RunError> {
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            crate::images::decode_rgb(&s.image, limits, size)
                .map(|pixels| Sample {
                    pixels,
                    caption: s.caption.clone(),
                })
                .map_err(|e| RunError::Data(format!("sample {i} ({}): {e}", s.id)))
        })
        .collect()
}

/// Reads a task's bundle (`stored`: its row's path) and decodes one split (`eval` or train)
/// at the preset's image size, its first `limit` samples at most. From object storage it is
/// fetched into the local cache and verified against the hash its name carries; an outage
/// holds the run until it is back.
async fn load(
    state: &AppState,
    fence: &Fence,
    stored: &str,
    eval: bool,
    size: u32,
    limit: usize,
) -> Result<Vec<Sample>, RunError> {
    let sha = crate::taskdata::bundle_sha(stored).unwrap_or_default();
    let path = fence
        .objects("fetching task data", || state.objects.local(stored, &sha))
        .await?;
    let limits = state.image_limits();
    tokio::task::spawn_blocking(move || {
        let all =
            taskdata::read_bundle(&path).map_err(|e| RunError::Data(format!("task data: {e}")))?;
        let split: Vec<StoredSample> = all
            .into_iter()
            .filter(|s| s.eval == eval)
            .take(limit)
            .collect();
        decode(&split, size, &limits)
    })
    .await
    .map_err(|e| RunError::Panicked {
        what: "decoding task data",
        why: e.to_string(),
    })?
}

/// One split of a task, every sample.
pub(crate) async fn load_split(
    state: &AppState,
    fence: &Fence,
    stored: &str,
    eval: bool,
    size: u32,
) -> Result<Vec<Sample>, RunError> {
    load(state, fence, stored, eval, size, usize::MAX).await
}

/// The probe set of the version a task produces (`trainer::probe`): the first
/// [`PROBE_SAMPLES`] samples of its eval split, in bundle order (deterministic: the bundle
/// is content-addressed and its order is the upload's).
pub(super) async fn load_probe(
    state: &AppState,
    fence: &Fence,
    stored: &str,
    size: u32,
) -> Result<Vec<Sample>, RunError> {
    load(state, fence, stored, true, size, PROBE_SAMPLES).await
}
