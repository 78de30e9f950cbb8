//! Pieces of a session: run options, frozen flat copies of a model, the step's single
//! read-back, the feature drift.
use tch::{Device, Kind, Tensor};

use crate::trainer::config::Precision;
use crate::trainer::flat;
use crate::trainer::model::CtpModel;
use crate::trainer::TrainerError;

/// How the engine runs every session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunOptions {
    pub precision: Precision,
    /// Device sync + timer after each part of a step (otherwise the host never waits for the
    /// device inside a step, except to read the step's losses once at its end).
    pub profile: bool,
    /// Skip loading pretrained weights (benchmarks: same shapes, random values).
    pub random_weights: bool,
    /// Cast copies of the weights, refreshed once per optimizer step (bf16 only;
    /// `engine.bf16_weight_cache`).
    pub bf16_weight_cache: bool,
    /// Channels-last convolutional tower (`engine.channels_last`).
    pub channels_last: bool,
}

/// Sets a model's precision, cast cache and memory format from the run's options.
pub(super) fn configure(m: &mut CtpModel, opts: &RunOptions) {
    if opts.bf16_weight_cache {
        m.set_precision_cached(opts.precision);
    } else {
        m.set_precision(opts.precision);
    }
    m.set_channels_last(opts.channels_last);
}

pub(super) fn named_params(m: &CtpModel, names: &[String]) -> Vec<Tensor> {
    let map = m.var_map();
    names.iter().map(|n| map[n].shallow_clone()).collect()
}

/// A frozen copy of `src` (momentum or reference model) whose trainable parameters live in one
/// flat buffer: the copy is one kernel over the parameters plus the few non-trainable buffers
/// (BatchNorm statistics). Under `bf16_weight_cache` the third value is the copy's cast
/// buffer ([`CtpModel::cache_flat`]): refresh it after the flat buffer changes.
pub(super) fn frozen_copy(
    src: &CtpModel,
    src_flat: &Tensor,
    names: &[String],
    vocab: i64,
    opts: &RunOptions,
) -> Result<(CtpModel, Tensor, Option<Tensor>), TrainerError> {
    let mut m = CtpModel::new(&src.cfg, vocab, src.device());
    configure(&mut m, opts);
    m.freeze();
    let params = named_params(&m, names);
    let mut buf = flat::flatten(&params);
    let _guard = tch::no_grad_guard();
    buf.copy_(src_flat);
    let trainable: std::collections::HashSet<&String> = names.iter().collect();
    let src_vars = src.var_map();
    for (name, mut t) in m.var_map() {
        if !trainable.contains(&name) {
            let from = src_vars.get(&name).ok_or_else(|| {
                TrainerError::Torch(format!("model copy: {name} missing in the source"))
            })?;
            t.copy_(from);
        }
    }
    let low = m.cache_flat(&params, &buf);
    Ok((m, buf, low))
}

pub(super) fn sync_device(d: Device) {
    if let Device::Cuda(i) = d {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Scalar tensors as f64, with one device-to-host copy.
pub(super) fn read_scalars<'a>(
    ts: impl Iterator<Item = &'a Tensor>,
) -> Result<Vec<f64>, TrainerError> {
    let flat: Vec<Tensor> = ts
        .map(|t| t.detach().to_kind(Kind::Double).view([1]))
        .collect();
    let all = Tensor::cat(&flat, 0).to_device(Device::Cpu);
    Ok(Vec::<f64>::try_from(&all)?)
}

/// 1 − mean cosine between online and momentum features on the probe batch (a scalar tensor).
pub(super) fn feature_drift(
    online: &CtpModel,
    mom: &CtpModel,
    images: &Tensor,
    ids: &Tensor,
    mask: &Tensor,
) -> Tensor {
    let a = online.features(images, ids, mask, false);
    let b = mom.features(images, ids, mask, false);
    let cos = ((&a.img * &b.img)
        .sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float)
        + (&a.txt * &b.txt)
            .sum_dim_intlist(-1, false, Kind::Float)
            .mean(Kind::Float))
        * 0.5;
    cos.neg() + 1.0
}
