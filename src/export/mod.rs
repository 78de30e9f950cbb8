//! Verified export of a version (issue #25, docs/export.md): everything a client needs to use
//! a version outside ctpd, assembled from the store, the version's checkpoint and the engine's
//! tokenizer. `api/export.rs` streams it; `ctpctl export` writes it to a folder, and the Python
//! client's `ctp_client.export` converts it (ONNX or safetensors) and checks the conversion
//! against `probe.json`.
//!
//! The probe's embeddings are normally **stored**: the engine computed them when it wrote the
//! version (`trainer::probe`), so an export takes no engine time. A version from before that has
//! none; its export **computes** them on demand with the engine (like `Embed`, it waits for the
//! engine), from the same samples: the first eval samples of the version's own task.
pub mod card;
mod files;

use std::path::PathBuf;

use crate::state::AppState;
use crate::store::{StoreError, TaskRow, VersionRow};
use crate::trainer::probe::{self, Probe, PROBE_SAMPLES};
use crate::trainer::{ModelConfig, Preset, TrainerError, VersionRef};

/// Why an export could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Objects(#[from] ctp_storage::StorageError),
    #[error(transparent)]
    Engine(#[from] TrainerError),
    /// The model exists but has no version to export by default.
    #[error("{0}")]
    NoVersion(String),
    /// A file the export needs is missing or unreadable (checkpoint, bundle, tokenizer).
    #[error("{0}")]
    Unreadable(String),
}

/// Where a file's bytes come from.
#[derive(Debug)]
pub enum Content {
    Bytes(Vec<u8>),
    /// A file on this host, sent as it is (the checkpoint).
    File(PathBuf),
}

/// One file of an export.
#[derive(Debug)]
pub struct ExportFile {
    pub name: &'static str,
    pub description: &'static str,
    pub size: u64,
    pub sha256: String,
    pub content: Content,
}

/// A version's export, ready to stream (only the checkpoint stays on disk).
#[derive(Debug)]
pub struct Export {
    pub model: String,
    pub version: i64,
    pub preset: String,
    /// "stored" or "computed" (see the module docs).
    pub probe_source: &'static str,
    pub files: Vec<ExportFile>,
}

/// The name of the checkpoint in an export.
pub const WEIGHTS: &str = "weights.safetensors";

/// Assembles the export of `model`'s `version` (the head when `None`).
pub async fn prepare(
    state: &AppState,
    model: &str,
    version: Option<i64>,
) -> Result<Export, ExportError> {
    let m = state.store.get_model(model).await?;
    let v = match version {
        Some(n) => state.store.get_version(model, n).await?,
        None => state.store.head(model).await?.ok_or_else(|| {
            ExportError::NoVersion(format!("model {model:?} has no versions yet"))
        })?,
    };
    let path = state.objects.local(&v.checkpoint_path, &v.sha256).await?;
    let weights_size = std::fs::metadata(&path)
        .map_err(|e| {
            ExportError::Unreadable(format!(
                "version {model}/{}: checkpoint {}: {e}",
                v.version,
                path.display()
            ))
        })?
        .len();
    let p = path.clone();
    let extras = tokio::task::spawn_blocking(move || probe::read_extras(&p))
        .await
        .map_err(|e| ExportError::Unreadable(format!("reading the checkpoint panicked: {e}")))??;
    let preset = Preset::parse(&m.preset).unwrap_or(Preset::Tiny);
    // The architecture the version was trained with, as its checkpoint records it.
    let cfg: ModelConfig = serde_json::from_value(extras.meta["model"].clone())
        .unwrap_or_else(|_| ModelConfig::preset(preset));
    let task = state.store.get_task(&v.task_id).await?;
    let (probe, probe_source) = match extras.probe.clone() {
        Some(p) => (p, "stored"),
        None => {
            let vref = VersionRef {
                path: path.clone(),
                sha256: v.sha256.clone(),
            };
            (on_demand(state, &task, &cfg, vref).await?, "computed")
        }
    };
    let lineage = state.store.lineage(model, v.version).await?;
    let mut tasks: Vec<TaskRow> = Vec::with_capacity(lineage.len());
    for lv in &lineage {
        tasks.push(state.store.get_task(&lv.task_id).await?);
    }
    let gate = state.store.gate(model).await?;
    let tok_path = state
        .settings
        .engine
        .weights_dir
        .join("minilm")
        .join("tokenizer.json");
    let tokenizer = tokio::fs::read(&tok_path)
        .await
        .map_err(|e| ExportError::Unreadable(format!("tokenizer {}: {e}", tok_path.display())))?;
    let tokenizer_sha = files::sha256(&tokenizer);
    let ctx = files::Context {
        version: &v,
        cfg: &cfg,
        extras: &extras,
        tokenizer_sha256: &tokenizer_sha,
        task: &task,
        probe: &probe,
        probe_source,
    };
    let card = card::Card {
        version: &v,
        lineage: &lineage,
        tasks: &tasks,
        gate: &gate,
        cfg: &cfg,
        probe_source,
        probe_samples: probe.captions.len(),
    };
    let card_json = card.json();
    let mut out = vec![ExportFile {
        name: WEIGHTS,
        description: "the version's checkpoint as stored (model weights under online.*)",
        size: weights_size,
        sha256: v.sha256.clone(),
        content: Content::File(path),
    }];
    let bytes = |name, description, data: Vec<u8>| ExportFile {
        name,
        description,
        size: data.len() as u64,
        sha256: files::sha256(&data),
        content: Content::Bytes(data),
    };
    out.push(bytes(
        "config.json",
        "architecture, preprocessing and tokenisation",
        pretty(&ctx.config()),
    ));
    out.push(bytes(
        "tokenizer.json",
        "the WordPiece tokenizer the engine encodes captions with",
        tokenizer,
    ));
    out.push(bytes(
        "model_card.md",
        "model card",
        card.markdown(&card_json).into_bytes(),
    ));
    out.push(bytes(
        "model_card.json",
        "model card, machine-readable",
        pretty(&card_json),
    ));
    out.push(bytes(
        "probe.json",
        "probe images and captions with this daemon's embeddings of them",
        pretty(&ctx.probe_json()),
    ));
    Ok(Export {
        model: v.model.clone(),
        version: v.version,
        preset: m.preset,
        probe_source,
        files: out,
    })
}

fn pretty(v: &serde_json::Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("JSON values always serialise");
    b.push(b'\n');
    b
}

/// The probe of a version whose checkpoint has none: the same samples, embedded now.
async fn on_demand(
    state: &AppState,
    task: &TaskRow,
    cfg: &ModelConfig,
    version: VersionRef,
) -> Result<Probe, ExportError> {
    let sha = crate::taskdata::bundle_sha(&task.data_dir).unwrap_or_default();
    let bundle = state.objects.local(&task.data_dir, &sha).await?;
    let limits = state.image_limits();
    let size = cfg.image_size as u32;
    let id = task.id.clone();
    let samples = tokio::task::spawn_blocking(move || -> Result<_, ExportError> {
        let all = crate::taskdata::read_bundle(&bundle)
            .map_err(|e| ExportError::Unreadable(format!("task {id}'s data: {e}")))?;
        all.into_iter()
            .filter(|s| s.eval)
            .take(PROBE_SAMPLES)
            .map(|s| {
                crate::images::decode_rgb(&s.image, &limits, size)
                    .map(|px| (px, s.caption))
                    .map_err(|e| {
                        ExportError::Unreadable(format!("task {id}, sample {}: {e}", s.id))
                    })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ExportError::Unreadable(format!("decoding the probe panicked: {e}")))??;
    let (pixels, captions): (Vec<Vec<u8>>, Vec<String>) = samples.into_iter().unzip();
    let e = state
        .engine
        .embed(cfg.clone(), version, pixels.clone(), captions.clone())
        .await?;
    Ok(Probe {
        image_size: cfg.image_size,
        pixels,
        captions,
        image_embeddings: e.images,
        text_embeddings: e.texts,
    })
}

/// Which of a version row's states the card reports.
pub(crate) fn decision(v: &VersionRow) -> &'static str {
    if v.rejected_reason.is_some() {
        "rejected"
    } else {
        "accepted"
    }
}
