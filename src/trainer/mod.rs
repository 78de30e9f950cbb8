//! The training engine. Every `tch::` import in the crate lives under this module.
//!
//! One engine thread owns all libtorch state (tensors are `Send` but not `Sync`). Async code
//! talks to it through [`TrainerHandle`], a cloneable handle that sends [`Command`]s with reply
//! channels; training progress flows back as [`TrainEvent`]s. Only plain data (pixels, strings,
//! paths, numbers) crosses the boundary.
pub mod checkpoint;
pub mod config;
pub mod data;
mod engine;
mod eval;
pub mod flat;
pub mod losses;
pub mod model;
pub mod momentum;
pub mod optim;
pub mod probe;
pub mod queue;
pub mod replay;
mod session;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU8;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use config::{
    BnPolicy, DriftMetric, LossWeights, Method, ModelConfig, MomentumConfig, Precision,
    PrecisionSetting, Preset, TextPool, TrainConfig,
};
pub use engine::EngineConfig;
pub use momentum::SyncRecord;
pub use replay::ReplayPool;

/// Errors of the engine boundary.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// The request's data or settings are unusable; the message names the field or sample.
    #[error("{0}")]
    Input(String),
    /// Pretrained weights or tokenizer are missing.
    #[error("{0}")]
    Assets(String),
    /// A checkpoint is missing, corrupt or does not fit the model.
    #[error("{0}")]
    Checkpoint(String),
    #[error("I/O error on {path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error("libtorch error: {0}")]
    Torch(String),
    /// A panic inside the engine while serving one command; the engine keeps running.
    #[error("engine panicked: {0}")]
    Panic(String),
    /// The engine thread has exited.
    #[error("the training engine is not running")]
    Stopped,
}

impl TrainerError {
    pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> TrainerError {
        TrainerError::Io {
            path: path.to_path_buf(),
            msg: e.to_string(),
        }
    }
}

impl From<tch::TchError> for TrainerError {
    fn from(e: tch::TchError) -> Self {
        TrainerError::Torch(e.to_string())
    }
}

/// One image–text pair, image already resized to the preset's size (S×S×3 RGB, HWC).
#[derive(Debug, Clone)]
pub struct Sample {
    pub pixels: Vec<u8>,
    pub caption: String,
}

/// A version checkpoint on disk, identified by its content hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRef {
    pub path: PathBuf,
    pub sha256: String,
}

/// Values of a run's control flag; the loop reads it at every step boundary.
pub struct Control;

impl Control {
    pub const RUN: u8 = 0;
    /// Stop at the next step boundary without saving.
    pub const CANCEL: u8 = 1;
    /// Write a resume checkpoint at the next step boundary, then stop (graceful shutdown).
    pub const PAUSE: u8 = 2;
    /// Wait at the next step boundary, writing nothing, until the flag changes (the
    /// database is unreachable: training continues once it is back).
    pub const HOLD: u8 = 3;

    pub fn new_flag() -> Arc<AtomicU8> {
        Arc::new(AtomicU8::new(Control::RUN))
    }
}

/// Train one task.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// 0 for the first task of a lineage (no parent), ≥ 1 afterwards.
    pub task_index: i64,
    /// θ_{t−1}: the version this task trains from.
    pub parent: Option<VersionRef>,
    /// A mid-task checkpoint of this same task to continue from.
    pub resume: Option<PathBuf>,
    pub samples: Vec<Sample>,
    /// Earlier tasks' samples replayed in every batch (empty = no replay).
    pub replay: Vec<ReplayPool>,
    /// The probe set (the first eval samples of the task, [`probe::PROBE_SAMPLES`] at most):
    /// the finished version's checkpoint stores its embeddings of them for verified export.
    /// Empty = the checkpoint stores no probe.
    pub probe: Vec<Sample>,
    /// Where the finished version's checkpoint goes.
    pub out_version: PathBuf,
    /// Where mid-task checkpoints go (overwritten atomically).
    pub resume_path: PathBuf,
    pub control: Arc<AtomicU8>,
}

/// Milliseconds spent in each part of one step. The parts are measured only when the engine
/// profiles (`EngineConfig::profile`: a device sync after each part); otherwise they are 0 and
/// only `step_ms` is filled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTimes {
    /// Wall time of the whole step, up to the read-back of its loss values.
    #[serde(default)]
    pub step_ms: f64,
    pub forward_ms: f64,
    pub drift_ms: f64,
    pub sync_ms: f64,
    pub momentum_ms: f64,
    pub topology_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
}

/// Progress after a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepProgress {
    /// Steps completed in this task.
    pub step: i64,
    pub total_steps: i64,
    pub epoch: i64,
    /// Loss terms of the step (`itc`, `mlm`, `itc_queue`, `mlm_distill`, `tp_cross`,
    /// `tp_intra`, `total`) and the learning rate (`lr`).
    pub losses: BTreeMap<String, f64>,
    pub samples_per_sec: f64,
    pub eta_seconds: f64,
    pub syncs: i64,
    /// Drift at the latest drift check (`None` before the first one, and without a momentum
    /// model).
    pub drift: Option<f64>,
    pub times: StepTimes,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TrainEvent {
    Started {
        total_steps: i64,
        resumed_from: Option<i64>,
    },
    Step(StepProgress),
    Sync(SyncRecord),
    Checkpoint {
        step: i64,
        path: PathBuf,
        sha256: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TrainOutcome {
    Completed {
        version_path: PathBuf,
        sha256: String,
        steps: i64,
        /// Steps at which the paper would have updated the momentum model.
        momentum_steps: i64,
        syncs: Vec<SyncRecord>,
        resumed_from: Option<i64>,
        /// The precision the task trained in ("fp32" or "bf16"; with `engine.precision =
        /// "auto"` it depends on the preset): also in the version checkpoint's metadata.
        precision: String,
    },
    Cancelled {
        step: i64,
    },
    Paused {
        step: i64,
        resume_path: PathBuf,
    },
}

/// One task's evaluation split.
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub task_id: i64,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEval {
    pub task_id: i64,
    pub retrieval: crate::metrics::Retrieval,
    /// Per-sample hits (`metrics::anchor::sample_hits`), in the set's sample order: what the
    /// anchor gate's bootstrap resamples.
    #[serde(default)]
    pub hits: Vec<u8>,
}

/// Retrieval per task (candidates: that task's eval samples) and on the cumulative union.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub per_task: Vec<TaskEval>,
    pub union: Option<crate::metrics::Retrieval>,
}

/// L2-normalised embeddings, one `Vec<f32>` per input.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub images: Vec<Vec<f32>>,
    pub texts: Vec<Vec<f32>>,
}

pub(crate) enum Command {
    Train {
        req: Box<TrainRequest>,
        events: mpsc::UnboundedSender<TrainEvent>,
        reply: oneshot::Sender<Result<TrainOutcome, TrainerError>>,
    },
    Evaluate {
        model: ModelConfig,
        version: VersionRef,
        sets: Vec<EvalSet>,
        reply: oneshot::Sender<Result<EvalReport, TrainerError>>,
    },
    Embed {
        model: ModelConfig,
        version: VersionRef,
        images: Vec<Vec<u8>>,
        texts: Vec<String>,
        reply: oneshot::Sender<Result<Embeddings, TrainerError>>,
    },
    Verify {
        model: ModelConfig,
        version: VersionRef,
        reply: oneshot::Sender<Result<(), TrainerError>>,
    },
}

/// Cloneable async face of the engine thread.
#[derive(Clone)]
pub struct TrainerHandle {
    tx: std::sync::mpsc::Sender<Command>,
    /// "cpu" or "cuda:N".
    pub device: String,
    /// Training precision: "fp32" or "bf16" when every preset trains in it, "auto" when it
    /// depends on the preset (`engine.precision = "auto"` on CUDA; see
    /// [`precision_for`](Self::precision_for)).
    pub precision: String,
    /// The precision rule in words (GetServerInfo), e.g. "auto: tiny=fp32+tf32,
    /// small=fp32+tf32, small-split=fp32+tf32, base=bf16 on cuda; fp32 on cpu".
    pub precision_rule: String,
    setting: PrecisionSetting,
}

impl TrainerHandle {
    /// Starts the engine thread (loads the tokenizer, picks the device).
    pub fn start(cfg: EngineConfig) -> Result<TrainerHandle, TrainerError> {
        engine::spawn(cfg)
    }

    /// The precision a task of `preset` (a preset name, e.g. "small") trains in on this
    /// engine: "fp32" or "bf16". What a version of that preset records. An unknown name
    /// gets [`precision`](Self::precision).
    pub fn precision_for(&self, preset: &str) -> String {
        match Preset::parse(preset) {
            Some(p) => self
                .setting
                .resolve(p, self.device.starts_with("cuda"))
                .as_str()
                .to_string(),
            None => self.precision.clone(),
        }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, TrainerError>>) -> Command,
    ) -> Result<T, TrainerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| TrainerError::Stopped)?;
        rx.await.map_err(|_| TrainerError::Stopped)?
    }

    fn call_blocking<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, TrainerError>>) -> Command,
    ) -> Result<T, TrainerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| TrainerError::Stopped)?;
        rx.blocking_recv().map_err(|_| TrainerError::Stopped)?
    }

    /// Trains one task; events stream on `events` while it runs. Cancel or pause through
    /// `req.control`. Training continues if `events`' receiver is dropped.
    pub async fn train(
        &self,
        req: TrainRequest,
        events: mpsc::UnboundedSender<TrainEvent>,
    ) -> Result<TrainOutcome, TrainerError> {
        self.call(|reply| Command::Train {
            req: Box::new(req),
            events,
            reply,
        })
        .await
    }

    /// Blocking form of [`train`](Self::train) for threads outside a runtime (tests, bench).
    pub fn train_blocking(
        &self,
        req: TrainRequest,
        events: mpsc::UnboundedSender<TrainEvent>,
    ) -> Result<TrainOutcome, TrainerError> {
        self.call_blocking(|reply| Command::Train {
            req: Box::new(req),
            events,
            reply,
        })
    }

    pub async fn evaluate(
        &self,
        model: ModelConfig,
        version: VersionRef,
        sets: Vec<EvalSet>,
    ) -> Result<EvalReport, TrainerError> {
        self.call(|reply| Command::Evaluate {
            model,
            version,
            sets,
            reply,
        })
        .await
    }

    pub fn evaluate_blocking(
        &self,
        model: ModelConfig,
        version: VersionRef,
        sets: Vec<EvalSet>,
    ) -> Result<EvalReport, TrainerError> {
        self.call_blocking(|reply| Command::Evaluate {
            model,
            version,
            sets,
            reply,
        })
    }

    /// Embeddings of preprocessed images (S×S×3 each) and texts from a version.
    pub async fn embed(
        &self,
        model: ModelConfig,
        version: VersionRef,
        images: Vec<Vec<u8>>,
        texts: Vec<String>,
    ) -> Result<Embeddings, TrainerError> {
        self.call(|reply| Command::Embed {
            model,
            version,
            images,
            texts,
            reply,
        })
        .await
    }

    /// Checks that a version's checkpoint matches its hash and loads into the model.
    pub async fn verify(
        &self,
        model: ModelConfig,
        version: VersionRef,
    ) -> Result<(), TrainerError> {
        self.call(|reply| Command::Verify {
            model,
            version,
            reply,
        })
        .await
    }
}
