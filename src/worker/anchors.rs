//! Anchor suites in the worker (issue #25 §2, docs/anchors.md): a new version is evaluated on
//! every suite of its model with the engine's Evaluate command (the metrics of task
//! evaluation, plus per-sample hits), and its parent too on any suite it has no result on, so
//! the gate always compares the two on the same samples.
use std::sync::Arc;

use super::lease::Fence;
use super::RunError;
use crate::metrics::anchor::encode_hits;
use crate::state::AppState;
use crate::store::{AnchorEval, AnchorSuite, VersionRow};
use crate::taskdata;
use crate::trainer::{EvalSet, ModelConfig, Sample, VersionRef};

/// A suite's samples (every one), decoded at the preset's image size. Fetched through object
/// storage; with a fence an outage holds the run until it is back.
async fn load_suite(
    state: &AppState,
    fence: Option<&Fence>,
    suite: &AnchorSuite,
    size: u32,
) -> Result<Vec<Sample>, RunError> {
    let fetch = || state.objects.local(&suite.bundle_path, &suite.sha256);
    let path = match fence {
        Some(f) => f.objects("fetching an anchor suite", fetch).await?,
        None => fetch().await?,
    };
    let limits = state.image_limits();
    let name = suite.name.clone();
    tokio::task::spawn_blocking(move || {
        let all = taskdata::read_bundle(&path)
            .map_err(|e| RunError::Data(format!("anchor suite {name:?}: {e}")))?;
        all.iter()
            .enumerate()
            .map(|(i, s)| {
                crate::images::decode_rgb(&s.image, &limits, size)
                    .map(|pixels| Sample {
                        pixels,
                        caption: s.caption.clone(),
                    })
                    .map_err(|e| {
                        RunError::Data(format!("anchor suite {name:?}: sample {i} ({}): {e}", s.id))
                    })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| RunError::Panicked {
        what: "decoding an anchor suite",
        why: e.to_string(),
    })?
}

/// Evaluates `version` on `suites` in one engine command; one result per suite, in order.
pub async fn evaluate(
    state: &AppState,
    fence: Option<&Fence>,
    cfg: &ModelConfig,
    version: &VersionRef,
    suites: &[AnchorSuite],
) -> Result<Vec<AnchorEval>, RunError> {
    if suites.is_empty() {
        return Ok(Vec::new());
    }
    let size = cfg.image_size as u32;
    let mut sets = Vec::new();
    for (i, s) in suites.iter().enumerate() {
        sets.push(EvalSet {
            task_id: i as i64,
            samples: load_suite(state, fence, s, size).await?,
        });
    }
    let report = state
        .engine
        .evaluate(cfg.clone(), version.clone(), sets)
        .await?;
    Ok(report
        .per_task
        .iter()
        .map(|e| {
            let r = &e.retrieval;
            AnchorEval {
                suite: suites[e.task_id as usize].name.clone(),
                samples: e.hits.len() as i64,
                tr1: r.tr1,
                tr5: r.tr5,
                tr10: r.tr10,
                ir1: r.ir1,
                ir5: r.ir5,
                ir10: r.ir10,
                rm: r.rm,
                hits: encode_hits(&e.hits),
            }
        })
        .collect())
}

/// The anchor results the gate compares: the new version's on every suite, and the parent's
/// on the same suites (evaluated now, and stored, where it had none).
pub(super) struct Compared {
    pub new: Vec<AnchorEval>,
    pub parent: Vec<AnchorEval>,
}

/// Evaluates the new version (and, where missing, its parent) on every suite of `model`.
pub(super) async fn for_new_version(
    state: &Arc<AppState>,
    fence: &Fence,
    model: &str,
    cfg: &ModelConfig,
    version: &VersionRef,
    parent: Option<&VersionRow>,
) -> Result<Compared, RunError> {
    let suites = fence
        .call("reading anchor suites", || state.store.anchor_suites(model))
        .await?;
    let new = evaluate(state, Some(fence), cfg, version, &suites).await?;
    let mut parent_results = Vec::new();
    if let Some(p) = parent {
        parent_results = p.anchors.clone();
        let missing: Vec<AnchorSuite> = suites
            .iter()
            .filter(|s| !p.anchors.iter().any(|a| a.suite == s.name))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let pv = super::version_ref(state, fence, p).await?;
            let got = evaluate(state, Some(fence), cfg, &pv, &missing).await?;
            fence
                .call("storing the parent's anchor results", || {
                    state.store.record_anchor_results(model, p.version, &got)
                })
                .await?;
            parent_results.extend(got);
        }
    }
    Ok(Compared {
        new,
        parent: parent_results,
    })
}

/// After a suite is registered: evaluates the model's head on it (in the background; the
/// engine runs one command at a time, so this waits for a running task) and stores the
/// result, the baseline the next version is compared with.
pub async fn evaluate_head(state: Arc<AppState>, suite: AnchorSuite, head: VersionRow) {
    let model = suite.model.clone();
    let result = async {
        let m = state.store.get_model(&model).await?;
        let preset = crate::trainer::Preset::parse(&m.preset)
            .ok_or_else(|| RunError::Data(format!("model {model:?}: unknown preset")))?;
        let cfg = ModelConfig::preset(preset);
        let path = state
            .objects
            .local(&head.checkpoint_path, &head.sha256)
            .await?;
        let v = VersionRef {
            path,
            sha256: head.sha256.clone(),
        };
        let got = evaluate(&state, None, &cfg, &v, std::slice::from_ref(&suite)).await?;
        state
            .store
            .record_anchor_results(&model, head.version, &got)
            .await?;
        Ok::<_, RunError>(got)
    }
    .await;
    match result {
        Ok(got) => {
            let rm = got.first().map_or(f64::NAN, |a| a.rm);
            tracing::info!(model = %model, suite = %suite.name, version = head.version, rm, "Anchor suite baseline evaluated");
        }
        Err(e) => tracing::warn!(model = %model, suite = %suite.name, version = head.version,
            error.message = %e.chain(),
            "Evaluating the head on a new anchor suite failed; the next version evaluates its parent instead"),
    }
}
