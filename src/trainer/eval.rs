//! Evaluation and embeddings of a version: cross-modal retrieval per task and on the union.
use tch::{Device, Kind, Tensor};

use super::checkpoint;
use super::config::ModelConfig;
use super::data::TaskTensors;
use super::model::CtpModel;
use super::{EvalReport, TaskEval, TrainerError, VersionRef};
use crate::metrics;

/// Loads a version's online weights into a fresh model.
pub(crate) fn load_online(
    cfg: &ModelConfig,
    v: &VersionRef,
    vocab: i64,
    device: Device,
) -> Result<CtpModel, TrainerError> {
    let ck = checkpoint::load(&v.path, Some(&v.sha256))?;
    let mut m = CtpModel::new(cfg, vocab, device);
    let missing = m
        .load_named(&ck.with_prefix("online."), "")
        .map_err(TrainerError::Checkpoint)?;
    if !missing.is_empty() {
        return Err(TrainerError::Checkpoint(format!(
            "{}: lacks {missing:?}",
            v.path.display()
        )));
    }
    m.freeze();
    Ok(m)
}

const EVAL_BATCH: i64 = 128;

/// L2-normalised image and text features of every sample, [N, E] each, in eval mode.
pub(crate) fn encode(m: &CtpModel, data: &TaskTensors) -> (Tensor, Tensor) {
    tch::no_grad(|| {
        let n = data.len();
        let (mut imgs, mut txts) = (Vec::new(), Vec::new());
        let mut start = 0;
        while start < n {
            let len = EVAL_BATCH.min(n - start);
            let idx = Tensor::arange_start(start, start + len, (Kind::Int64, Device::Cpu));
            let b = data.batch(&idx);
            let f = m.features(&b.images, &b.ids, &b.mask, false);
            imgs.push(f.img);
            txts.push(f.txt);
            start += len;
        }
        (Tensor::cat(&imgs, 0), Tensor::cat(&txts, 0))
    })
}

fn similarities(img: &Tensor, txt: &Tensor) -> Result<(Vec<f32>, usize), TrainerError> {
    let n = img.size()[0] as usize;
    let sim = img
        .matmul(&txt.tr())
        .to_device(Device::Cpu)
        .contiguous()
        .view([-1]);
    let sim = Vec::<f32>::try_from(&sim).map_err(|e| TrainerError::Torch(e.to_string()))?;
    Ok((sim, n))
}

fn retrieval(img: &Tensor, txt: &Tensor) -> Result<metrics::Retrieval, TrainerError> {
    let (sim, n) = similarities(img, txt)?;
    metrics::retrieval(&sim, n).map_err(|e| TrainerError::Input(e.to_string()))
}

/// Retrieval and the per-sample hits of one set.
fn retrieval_hits(
    img: &Tensor,
    txt: &Tensor,
) -> Result<(metrics::Retrieval, Vec<u8>), TrainerError> {
    let (sim, n) = similarities(img, txt)?;
    let bad = |e: metrics::MetricsError| TrainerError::Input(e.to_string());
    let r = metrics::retrieval(&sim, n).map_err(bad)?;
    let hits = metrics::anchor::sample_hits(&sim, n).map_err(bad)?;
    Ok((r, hits))
}

/// Retrieval on each task's eval split (candidates: that task's samples) and on their union.
pub(crate) fn evaluate(
    m: &CtpModel,
    sets: &[(i64, TaskTensors)],
) -> Result<EvalReport, TrainerError> {
    let mut per_task = Vec::new();
    let (mut all_i, mut all_t) = (Vec::new(), Vec::new());
    for (task_id, data) in sets {
        let (i, t) = encode(m, data);
        let (retrieval, hits) = retrieval_hits(&i, &t)?;
        per_task.push(TaskEval {
            task_id: *task_id,
            retrieval,
            hits,
        });
        all_i.push(i);
        all_t.push(t);
    }
    let union = if sets.is_empty() {
        None
    } else {
        Some(retrieval(&Tensor::cat(&all_i, 0), &Tensor::cat(&all_t, 0))?)
    };
    Ok(EvalReport { per_task, union })
}
