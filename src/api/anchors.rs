//! RegisterAnchorSuite / ListAnchorSuites (issue #25 §2, docs/anchors.md): a model's named
//! held-out suites. An upload is checked by the same [`Intake`] and [`check_sample`] rules as a
//! task's, and stored as a content-addressed bundle (every sample in the eval split) through
//! `crate::objects`, like task data.
use std::sync::Arc;

use tonic::Streaming;

use super::auth::Caller;
use super::convert::anchor_suite_to_pb;
use super::intake::{disk_error, stream_error, Intake, SampleRules, SplitMode};
use super::status::{creating, ApiError};
use super::submit::{valid_name, COMMIT};
use crate::state::AppState;
use crate::store::{NewAnchorSuite, StoreError};
use crate::taskdata::BundleWriter;
use crate::trainer::{ModelConfig, Preset};
use ctp_api::pb;

struct Header {
    model: String,
    name: String,
    expected: Option<u64>,
    preset: Preset,
    /// The model does not exist yet; it is created with `preset` when the suite commits.
    create: bool,
}

async fn parse_header(state: &AppState, h: pb::AnchorSuiteHeader) -> Result<Header, ApiError> {
    let pattern = "must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}";
    if !valid_name(&h.model) {
        return Err(ApiError::Invalid(format!(
            "header.model {:?}: {pattern}",
            h.model
        )));
    }
    if !valid_name(&h.name) {
        return Err(ApiError::Invalid(format!(
            "header.name {:?}: {pattern}",
            h.name
        )));
    }
    let given = (!h.preset.is_empty())
        .then(|| {
            Preset::parse(&h.preset).ok_or_else(|| {
                ApiError::Invalid(format!(
                    "header.preset: unknown model preset {:?} (tiny, small, small-split, base)",
                    h.preset
                ))
            })
        })
        .transpose()?;
    let (preset, create) = match (state.store.get_model(&h.model).await, given) {
        (Ok(m), Some(p)) if m.preset != p.as_str() => {
            return Err(ApiError::Invalid(format!(
                "header.preset {:?} does not match model {:?}, which is {:?}",
                p.as_str(),
                h.model,
                m.preset
            )))
        }
        (Ok(m), _) => (
            Preset::parse(&m.preset).ok_or_else(|| {
                ApiError::Internal(format!("model {:?} has preset {:?}", h.model, m.preset))
            })?,
            false,
        ),
        (Err(StoreError::NotFound { .. }), Some(p)) => (p, true),
        (Err(StoreError::NotFound { .. }), None) => {
            return Err(ApiError::NotFound(format!(
                "model {:?} does not exist; submit a task first or give header.preset to create it",
                h.model
            )))
        }
        (Err(e), _) => return Err(e.into()),
    };
    if !create {
        let suites = state.store.anchor_suites(&h.model).await?;
        if suites.iter().any(|s| s.name == h.name) {
            return Err(creating(StoreError::AlreadyExists {
                what: format!(
                    "anchor suite {:?} of model {:?} (suites are immutable: register the new samples under another name)",
                    h.name, h.model
                ),
            }));
        }
    }
    Ok(Header {
        model: h.model,
        name: h.name,
        expected: h.expected_samples,
        preset,
        create,
    })
}

/// Reads, checks and stores one suite; then starts the head's evaluation on it.
pub async fn register(
    state: &Arc<AppState>,
    caller: Caller,
    mut stream: Streaming<pb::RegisterAnchorSuiteRequest>,
) -> Result<pb::AnchorSuite, ApiError> {
    if !state.is_ready() || state.is_draining() {
        return Err(ApiError::Unavailable(
            "the daemon is recovering or shutting down; retry shortly".into(),
        ));
    }
    use pb::register_anchor_suite_request::Msg;
    let first = stream.message().await.map_err(|s| stream_error(s, 0))?;
    let hdr = match first.and_then(|m| m.msg) {
        Some(Msg::Header(h)) => parse_header(state, h).await?,
        _ => {
            return Err(ApiError::Invalid(
                "the first RegisterAnchorSuite message must be a header".into(),
            ))
        }
    };
    let rules = SampleRules {
        split: SplitMode::AllEval,
        seed: 0,
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
    while let Some(msg) = stream
        .message()
        .await
        .map_err(|s| stream_error(s, intake.n))?
    {
        match msg.msg {
            Some(Msg::Chunk(c)) => {
                for s in c.samples {
                    intake.add(s)?;
                }
            }
            Some(Msg::Header(_)) => {
                return Err(ApiError::Invalid(format!(
                    "a second header arrived after sample {}; send the header once",
                    intake.n
                )))
            }
            None => {}
        }
    }
    let writer = intake.finish_suite(hdr.expected)?;
    // As SubmitTask: a cancelled call is dropped here, before anything is kept; the commit
    // then runs detached.
    tokio::task::yield_now().await;
    tokio::spawn(commit(state.clone(), caller, hdr, writer))
        .await
        .map_err(|e| ApiError::Internal(format!("storing the suite panicked: {e}")))?
}

async fn commit(
    state: Arc<AppState>,
    caller: Caller,
    hdr: Header,
    writer: BundleWriter,
) -> Result<pb::AnchorSuite, ApiError> {
    let samples = writer.n_eval as i64;
    let _serial = COMMIT.lock().await;
    let (path, sha) = tokio::task::spawn_blocking(move || writer.finish())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| disk_error(&state, "storing the suite", e))?;
    let stored = state.data.to_stored(&path);
    let result = async {
        state.objects.publish(&path, &sha).await?;
        if hdr.create {
            state
                .store
                .create_model_if_absent(&hdr.model, hdr.preset.as_str())
                .await?;
        }
        let new = NewAnchorSuite {
            model: hdr.model.clone(),
            name: hdr.name.clone(),
            bundle_path: stored.clone(),
            sha256: sha.clone(),
            samples,
            created_by: caller.name.clone(),
        };
        state
            .store
            .register_anchor_suite(new)
            .await
            .map_err(creating)
    }
    .await;
    if result.is_ok() {
        state.objects.drop_local_copy(&path, &sha);
    } else if state
        .store
        .referenced_files()
        .await
        .is_ok_and(|refs| !refs.contains(&stored))
    {
        // Nothing refers to the bundle (it is no task's either): keep nothing.
        let _ = std::fs::remove_file(&path);
    }
    let suite = result?;
    drop(_serial);
    let head = state.store.head(&hdr.model).await?;
    let baseline = head.as_ref().map(|h| h.version);
    tracing::info!(model = %suite.model, suite = %suite.name, samples, who = %caller.name,
        baseline = ?baseline, "Anchor suite registered");
    if let Some(head) = head {
        tokio::spawn(crate::worker::anchors::evaluate_head(
            state.clone(),
            suite.clone(),
            head,
        ));
    }
    Ok(anchor_suite_to_pb(&suite, baseline))
}

pub async fn list(
    state: &AppState,
    r: pb::ListAnchorSuitesRequest,
) -> Result<pb::ListAnchorSuitesResponse, ApiError> {
    let suites = state.store.anchor_suites(&r.model).await?;
    Ok(pb::ListAnchorSuitesResponse {
        suites: suites.iter().map(|s| anchor_suite_to_pb(s, None)).collect(),
    })
}
