//! SubmitTask: validate a streamed upload sample by sample, store it content-addressed, then
//! persist the task and its job in one transaction and wake the dispatcher. The reply comes
//! once the task is durable and queued; a rejected stream leaves nothing behind.
use std::collections::HashMap;

use tonic::Streaming;

use super::convert::TaskSettings;
use super::pb;
use super::status::ApiError;
use crate::app::AppState;
use crate::store::{new_task_id, NewTask, StoreError, TaskRow};
use crate::taskdata::{BundleWriter, StoredSample};
use crate::trainer::{ModelConfig, Preset};

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Deterministic eval membership for `eval_fraction` uploads: a hash of (seed, index).
fn in_eval(seed: u64, index: u64, fraction: f32) -> bool {
    let h = crate::trainer::data::mix(&[seed, index, 0xE7A1]);
    (h % 1_000_000) as f64 / 1e6 < fraction as f64
}

enum SplitMode {
    Fraction(f32),
    PerSample,
}

struct Header {
    model: String,
    preset: Preset,
    task_name: String,
    idempotency_key: Option<String>,
    settings: TaskSettings,
    split: SplitMode,
    expected: Option<u64>,
}

fn parse_header(state: &AppState, h: pb::TaskHeader) -> Result<Header, ApiError> {
    if !valid_name(&h.model) {
        return Err(ApiError::Invalid(format!(
            "header.model {:?}: use 1-64 characters from letters, digits, '.', '_', '-'",
            h.model
        )));
    }
    let preset_name = if h.preset.is_empty() {
        "small"
    } else {
        h.preset.as_str()
    };
    let preset = Preset::parse(preset_name).ok_or_else(|| {
        ApiError::Invalid(format!(
            "header.preset: unknown model preset {:?} (tiny, small, small-split, base)",
            h.preset
        ))
    })?;
    if h.task_name.trim().is_empty() || h.task_name.len() > 200 {
        return Err(ApiError::Invalid(
            "header.task_name must be 1-200 characters".into(),
        ));
    }
    if let Some(key) = &h.idempotency_key {
        super::limits::check("header.idempotency_key", key, super::limits::IDEMPOTENCY_KEY_BYTES)?;
    }
    let split = match h.eval_split.and_then(|e| e.kind) {
        None => SplitMode::Fraction(0.2),
        Some(pb::eval_split::Kind::EvalFraction(f)) if f > 0.0 && f < 1.0 => SplitMode::Fraction(f),
        Some(pb::eval_split::Kind::EvalFraction(f)) => {
            return Err(ApiError::Invalid(format!(
                "header.eval_split.eval_fraction must be in (0, 1) (got {f})"
            )))
        }
        Some(pb::eval_split::Kind::PerSample(_)) => SplitMode::PerSample,
    };
    Ok(Header {
        settings: TaskSettings::from_pb(h.settings, preset, h.seed, &state.settings.training)?,
        model: h.model,
        preset,
        task_name: h.task_name,
        idempotency_key: h.idempotency_key.filter(|k| !k.is_empty()),
        split,
        expected: h.expected_samples,
    })
}

/// Validates one sample; returns it ready to store.
fn check_sample(
    i: usize,
    s: pb::Sample,
    hdr: &Header,
    state: &AppState,
    size: u32,
) -> Result<StoredSample, ApiError> {
    let bad = |why: String| ApiError::Invalid(format!("sample {i}: {why}"));
    let caption = String::from_utf8(s.caption).map_err(|e| {
        bad(format!(
            "caption is not valid UTF-8 (byte {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let max = state.settings.limits.max_caption_bytes;
    if caption.trim().is_empty() {
        return Err(bad("caption is empty".into()));
    }
    if caption.len() > max {
        return Err(bad(format!(
            "caption is {} bytes; the limit is {max}",
            caption.len()
        )));
    }
    crate::images::decode_rgb(&s.image, &state.image_limits(), size)
        .map_err(|e| bad(e.to_string()))?;
    let eval = match (&hdr.split, pb::Split::try_from(s.split)) {
        (SplitMode::Fraction(f), Ok(pb::Split::Unspecified)) => {
            in_eval(hdr.settings.seed, i as u64, *f)
        }
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
    };
    super::limits::check("id", &s.id, super::limits::SAMPLE_ID_BYTES).map_err(|e| bad(e.to_string()))?;
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
fn stream_error(s: tonic::Status, n: usize) -> ApiError {
    if s.code() == tonic::Code::OutOfRange {
        ApiError::ResourceExhausted(format!(
            "upload message after sample {n} is too large ({}); send smaller SampleChunks (server limit: limits.max_message_bytes)",
            s.message()
        ))
    } else {
        ApiError::Invalid(format!("upload stream after sample {n}: {}", s.message()))
    }
}

pub async fn submit(
    state: &AppState,
    mut stream: Streaming<pb::SubmitTaskRequest>,
) -> Result<(TaskRow, bool), ApiError> {
    if !state.is_ready() {
        return Err(ApiError::Unavailable(
            "the daemon is still recovering (health is NOT_SERVING); retry shortly".into(),
        ));
    }
    if state.is_draining() {
        return Err(ApiError::Unavailable(
            "the daemon is shutting down; submit to another instance or retry later".into(),
        ));
    }
    let first = stream.message().await.map_err(|s| stream_error(s, 0))?;
    let hdr = match first.and_then(|m| m.msg) {
        Some(pb::submit_task_request::Msg::Header(h)) => parse_header(state, h)?,
        _ => {
            return Err(ApiError::Invalid(
                "the first SubmitTask message must be a header".into(),
            ))
        }
    };
    match state.store.get_model(&hdr.model).await {
        Ok(m) if m.preset != hdr.preset.as_str() => {
            return Err(ApiError::Invalid(format!(
                "header.preset {:?} does not match model {:?}, which is {:?}",
                hdr.preset.as_str(),
                hdr.model,
                m.preset
            )))
        }
        Ok(_) | Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let size = ModelConfig::preset(hdr.preset).image_size as u32;
    let dir = state.settings.data_dir.clone();
    let mut writer = tokio::task::spawn_blocking(move || BundleWriter::create(&dir))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("creating upload file: {e}")))?;
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut n = 0usize;
    let max_samples = state.settings.limits.max_samples_per_task;
    while let Some(msg) = stream.message().await.map_err(|s| stream_error(s, n))? {
        let chunk = match msg.msg {
            Some(pb::submit_task_request::Msg::Chunk(c)) => c,
            Some(pb::submit_task_request::Msg::Header(_)) => {
                return Err(ApiError::Invalid(format!(
                    "a second header arrived after sample {n}; send the header once"
                )))
            }
            None => continue,
        };
        for s in chunk.samples {
            if n >= max_samples {
                return Err(ApiError::Invalid(format!(
                    "sample {n}: the task exceeds the limit of {max_samples} samples"
                )));
            }
            let stored = check_sample(n, s, &hdr, state, size)?;
            if let Some(prev) = ids.insert(stored.id.clone(), n) {
                return Err(ApiError::Invalid(format!(
                    "sample {n}: id {:?} repeats sample {prev}",
                    stored.id
                )));
            }
            writer
                .append(&stored)
                .map_err(|e| ApiError::Internal(format!("writing upload: {e}")))?;
            n += 1;
        }
    }
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
    let (n_train, n_eval) = (writer.n_train as i64, writer.n_eval as i64);
    let (path, _sha) = tokio::task::spawn_blocking(move || writer.finish())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("storing upload: {e}")))?;
    state
        .store
        .create_model_if_absent(&hdr.model, hdr.preset.as_str())
        .await?;
    let new = NewTask {
        id: new_task_id(),
        model: hdr.model.clone(),
        name: hdr.task_name.clone(),
        idempotency_key: hdr.idempotency_key.clone(),
        settings_json: serde_json::to_string(&hdr.settings).expect("settings serialise"),
        data_dir: path.to_string_lossy().into_owned(),
        n_train,
        n_eval,
    };
    let submitted = state.store.submit_task(new).await?;
    if !submitted.existing {
        tracing::info!(task_id = %submitted.task.id, model = %hdr.model, n_train, n_eval, "Task queued");
        state.wake.notify_one();
    }
    Ok((submitted.task, submitted.existing))
}
