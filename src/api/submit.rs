//! SubmitTask: validate a streamed upload sample by sample, store it content-addressed, then
//! persist the task and its job in one transaction and wake the dispatcher. The reply comes
//! once the task is durable and queued; a rejected stream leaves nothing behind.
//!
//! A header with `data_urls` names its data instead (`submit_ref`): the shards are fetched
//! and fed through the same [`Intake`] as streamed samples, so both paths check, number and
//! store samples identically.
use std::sync::Arc;

use tonic::Streaming;

use super::auth::{Caller, Scope};
use super::convert::{priority_from_pb, settings_from_pb};
pub use super::intake::{check_sample, SampleRules, SplitMode};
use super::intake::{disk_error, stream_error, Intake};
use super::status::ApiError;
use crate::state::AppState;
use crate::store::{new_task_id, NewTask, StoreError, TaskRow};
use crate::task::{Priority, TaskSettings};
use crate::taskdata::BundleWriter;
use crate::trainer::{ModelConfig, Preset};
use ctp_api::pb;

/// Model names: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}` (so never `.`, `..` or a path). Names
/// are never joined into file paths; the pattern keeps them safe to show and to type.
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

struct Header {
    model: String,
    preset: Preset,
    task_name: String,
    idempotency_key: Option<String>,
    settings: TaskSettings,
    split: SplitMode,
    /// Whether the header chose the split (`eval_split` set); by reference, an unset one
    /// follows the shards' own splits (see `submit_ref`).
    split_given: bool,
    expected: Option<u64>,
    /// Task data by reference (URLs or brace patterns), empty for a streamed upload.
    data_urls: Vec<String>,
    priority: Priority,
}

fn parse_header(state: &AppState, caller: &Caller, h: pb::TaskHeader) -> Result<Header, ApiError> {
    let priority = priority_from_pb("header.priority", h.priority)?;
    if priority > Priority::Normal && caller.scope < Scope::Admin {
        return Err(ApiError::PermissionDenied(format!(
            "header.priority {priority} needs the admin scope; token {:?} may submit low or normal",
            caller.name
        )));
    }
    if !valid_name(&h.model) {
        return Err(ApiError::Invalid(format!(
            "header.model {:?}: must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}} (a letter or digit, then up to 127 letters, digits, '.', '_', '-')",
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
        super::limits::check(
            "header.idempotency_key",
            key,
            super::limits::IDEMPOTENCY_KEY_BYTES,
        )?;
    }
    let split_given = h.eval_split.is_some_and(|e| e.kind.is_some());
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
        settings: settings_from_pb(h.settings, preset, h.seed, &state.settings.training)?,
        model: h.model,
        preset,
        task_name: h.task_name,
        idempotency_key: h.idempotency_key.filter(|k| !k.is_empty()),
        split,
        split_given,
        expected: h.expected_samples,
        data_urls: h.data_urls,
        priority,
    })
}

pub async fn submit(
    state: &Arc<AppState>,
    caller: Caller,
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
        Some(pb::submit_task_request::Msg::Header(h)) => parse_header(state, &caller, h)?,
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
    let rules = SampleRules {
        split: hdr.split,
        seed: hdr.settings.seed,
        max_caption_bytes: state.settings.limits.max_caption_bytes,
        image: state.image_limits(),
        size: ModelConfig::preset(hdr.preset).image_size as u32,
    };
    let dir = state.data.root().to_path_buf();
    let writer = tokio::task::spawn_blocking(move || BundleWriter::create(&dir))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| disk_error(state, "creating the upload file", e))?;
    let mut intake = Intake::new(state.clone(), rules, writer);
    // Quotas before a byte is read; the byte quota again as the upload streams, and all of
    // them once more in the transaction that stores the task. A retry of a task already
    // accepted (its idempotency key) is never refused.
    if !state
        .store
        .has_key(&hdr.model, hdr.idempotency_key.as_deref())
        .await?
    {
        let usage = state.store.usage(&caller.name).await?;
        crate::quota::check_submit(&caller.name, &caller.quota, &usage, 0)?;
        intake.limit_bytes(&caller, usage);
    }
    let mut sources = None;
    if hdr.data_urls.is_empty() {
        while let Some(msg) = stream
            .message()
            .await
            .map_err(|s| stream_error(s, intake.n))?
        {
            match msg.msg {
                Some(pb::submit_task_request::Msg::Chunk(c)) => {
                    for s in c.samples {
                        intake.add(s)?;
                    }
                }
                Some(pb::submit_task_request::Msg::Header(_)) => {
                    return Err(ApiError::Invalid(format!(
                        "a second header arrived after sample {}; send the header once",
                        intake.n
                    )))
                }
                None => {}
            }
        }
    } else {
        super::submit_ref::expect_no_samples(&mut stream).await?;
        let (done, read) =
            super::submit_ref::read_shards(state, &hdr.data_urls, hdr.split_given, intake).await?;
        intake = done;
        sources = Some(read);
    }
    let writer = intake.finish(hdr.expected, &hdr.settings)?;
    // A client that cancels its call ends the request body as if it had finished (hyper reads
    // RST_STREAM(CANCEL) as end of body), and tonic then drops this future at its next await.
    // Yield once so that happens here, before anything is kept; past this point the upload was
    // complete, and committing it runs detached so that no later drop can leave half of it.
    tokio::task::yield_now().await;
    let sources_json = sources.map(|v| serde_json::to_string(&v).expect("the manifest serialises"));
    let commit = tokio::spawn(commit_upload(
        state.clone(),
        caller,
        hdr,
        writer,
        sources_json,
    ));
    commit
        .await
        .map_err(|e| ApiError::Internal(format!("storing the upload panicked: {e}")))?
}

/// Serialises the end of uploads in this daemon: a bundle shared by identical uploads is
/// never removed while another upload is about to reference it.
pub(super) static COMMIT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Makes the bundle durable, then stores the task and its job. A duplicate (same idempotency
/// key) or a failed commit keeps nothing new: the bundle is removed unless a row refers to it.
async fn commit_upload(
    state: Arc<AppState>,
    caller: Caller,
    hdr: Header,
    writer: BundleWriter,
    sources_json: Option<String>,
) -> Result<(TaskRow, bool), ApiError> {
    let (n_train, n_eval) = (writer.n_train as i64, writer.n_eval as i64);
    let _serial = COMMIT.lock().await;
    let (path, sha) = tokio::task::spawn_blocking(move || writer.finish())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| disk_error(&state, "storing the upload", e))?;
    let stored_path = state.data.to_stored(&path);
    // Durable where every daemon can read it before any row names it (object storage); on
    // the data dir the file already is the object.
    if let Err(e) = state.objects.publish(&path, &sha).await {
        let referenced = state.store.referenced_files().await;
        if referenced.is_ok_and(|refs| !refs.contains(&stored_path)) {
            let _ = std::fs::remove_file(&path);
        }
        return Err(e.into());
    }
    let new = NewTask {
        id: new_task_id(),
        model: hdr.model.clone(),
        name: hdr.task_name.clone(),
        idempotency_key: hdr.idempotency_key.clone(),
        settings_json: serde_json::to_string(&hdr.settings).expect("settings serialise"),
        request_digest: request_digest(&hdr, &sha),
        data_dir: stored_path.clone(),
        n_train,
        n_eval,
        sources_json,
        priority: hdr.priority.stored(),
        submitted_by: caller.name.clone(),
        bundle_bytes: std::fs::metadata(&path).map_or(0, |m| m.len() as i64),
        quota: caller.quota.clone(),
    };
    let result = async {
        state
            .store
            .create_model_if_absent(&hdr.model, hdr.preset.as_str())
            .await?;
        state.store.submit_task(new).await
    }
    .await;
    let keep = matches!(&result, Ok(s) if !s.existing)
        || state.store.referenced_files().await.map_or(true, |refs| {
            refs.iter().any(|r| state.data.resolve(r) == path)
        });
    if !keep {
        let _ = std::fs::remove_file(&path);
    } else if result.is_ok() {
        // The bucket has it and a row names it: readers fetch it from there.
        state.objects.drop_local_copy(&path, &sha);
    }
    let submitted = result?;
    if !submitted.existing {
        tracing::info!(task_id = %submitted.task.id, model = %hdr.model, n_train, n_eval, "Task queued");
        state.wake.notify_one();
        state.queue_changed.notify_one();
    }
    Ok((submitted.task, submitted.existing))
}

/// What an idempotent retry must repeat exactly: the header's fields and the samples (whose
/// bundle hash covers ids, captions, splits and image bytes).
fn request_digest(hdr: &Header, bundle_sha: &str) -> String {
    use sha2::{Digest, Sha256};
    let settings = serde_json::to_string(&hdr.settings).expect("settings serialise");
    let mut h = Sha256::new();
    for part in [
        hdr.model.as_str(),
        hdr.preset.as_str(),
        hdr.task_name.as_str(),
        settings.as_str(),
        bundle_sha,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A submission refused for a quota: logged, counted in `/metrics`
/// (`ctp_quota_exceeded_total`), and announced to `quota.exceeded` webhooks.
pub async fn quota_refused(state: &AppState, q: &crate::quota::Exceeded) {
    tracing::warn!(caller = %q.caller, quota = q.quota, used = q.used, limit = q.limit, "Submission refused: quota exceeded");
    state.metrics.observe_quota_exceeded(&q.caller, q.quota);
    if let Err(e) = state.store.record_quota_exceeded(q).await {
        tracing::warn!(error.message = %e, "Recording the quota.exceeded webhook event failed");
    }
}
