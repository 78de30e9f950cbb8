//! The levers of issue #27 that change how a model computes, not what: channels-last
//! convolutions and cached bf16 weight copies, each against the default path on the same
//! weights and inputs (no random stream is shared between the runs compared).
use tch::{Device, Kind, Tensor};

use super::{mixed, CtpModel};
use crate::trainer::config::{ModelConfig, Precision, Preset};
use crate::trainer::{flat, losses};

const VOCAB: i64 = 1000;

struct Batch {
    images: Tensor,
    ids: Tensor,
    mask: Tensor,
    positions: Tensor,
}

fn batch(cfg: &ModelConfig, n: i64) -> Batch {
    let s = cfg.image_size;
    let l = cfg.max_tokens;
    let opts = (Kind::Float, Device::Cpu);
    let ids = Tensor::randint_low(1, VOCAB, [n, l], (Kind::Int64, Device::Cpu));
    // The last quarter of every row is padding.
    let mask = Tensor::ones([n, l], (Kind::Int64, Device::Cpu));
    let _ = mask.narrow(1, l - l / 4, l / 4).fill_(0);
    Batch {
        images: Tensor::rand([n, 3, s, s], opts) * 2.0 - 1.0,
        ids,
        mask,
        positions: Tensor::arange_start_step(0, n * l, 3, (Kind::Int64, Device::Cpu)),
    }
}

fn model(preset: Preset) -> CtpModel {
    let mut cfg = ModelConfig::preset(preset);
    cfg.dropout = 0.0;
    CtpModel::new(&cfg, VOCAB, Device::Cpu)
}

/// ITC + mean MLM logit: a scalar that reaches every weight the helpers cast.
fn loss(m: &CtpModel, b: &Batch) -> Tensor {
    let f = m.features(&b.images, &b.ids, &b.mask, true);
    let z = m.mlm_logits(&b.ids, &b.mask, &f.img_tokens, &b.positions, true);
    losses::itc(&f.img, &f.txt, 0.07) + z.square().mean(Kind::Float)
}

/// The loss and the flat gradient of every trainable parameter.
fn loss_and_grad(m: &CtpModel, b: &Batch) -> (f64, Tensor) {
    let params: Vec<Tensor> = m.trainable().into_iter().map(|(_, t)| t).collect();
    for p in &params {
        let mut p = p.shallow_clone();
        p.zero_grad();
    }
    let l = loss(m, b);
    l.backward();
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| {
            let g = p.grad();
            if g.defined() {
                g.reshape([-1]).copy()
            } else {
                p.zeros_like().reshape([-1])
            }
        })
        .collect();
    (l.double_value(&[]), Tensor::cat(&grads, 0))
}

/// max |a − b| / max |b|.
fn rel_max(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).abs().max().double_value(&[]);
    d / b.abs().max().double_value(&[]).max(1e-30)
}

/// `engine.channels_last`: the EfficientNet tower runs NHWC (the feature map comes out
/// channels-last) and the loss and every gradient of `small` match the default layout: loss
/// within 1e-5 relative, gradients within 1e-4 of the largest gradient (fp32; only the
/// summation order of the convolutions differs).
#[test]
fn channels_last_small_matches_the_default_layout() {
    tch::manual_seed(11);
    let mut m = model(Preset::Small);
    let b = batch(&m.cfg, 4);
    let (l0, g0) = loss_and_grad(&m, &b);
    let (tokens, _) = m.image(&b.images, false);
    m.set_channels_last(true);
    let (l1, g1) = loss_and_grad(&m, &b);
    let (tokens_cl, _) = m.image(&b.images, false);
    assert!(l0.is_finite() && g0.abs().max().double_value(&[]) > 0.0);
    assert!(
        (l1 - l0).abs() <= 1e-5 * l0.abs(),
        "loss {l1} (channels-last) vs {l0}"
    );
    let dg = rel_max(&g1, &g0);
    eprintln!("channels-last: loss {l1} vs {l0}, gradients differ by {dg} of the largest");
    assert!(dg <= 1e-4, "gradients differ by {dg} of the largest");
    assert!(rel_max(&tokens_cl, &tokens) <= 1e-5);
    if let super::Vision::EfficientNet(net) = &m.vision {
        let map = tch::no_grad(|| net.feature_map(&b.images, false));
        assert!(mixed::is_channels_last(&map), "strides {:?}", map.stride());
        assert!(!mixed::is_channels_last(
            &mixed::channels_last(&map).contiguous()
        ));
    } else {
        panic!("small has an EfficientNet tower");
    }
}

/// `engine.bf16_weight_cache` on the online model: with every weight cast once
/// (`refresh_casts`) the forward pass is the per-use-cast one bit for bit, gradients differ
/// only by summing the two uses of a text layer in bf16 (≤ 0.1 % of the largest), and clearing
/// empties the cache. Under fp32 nothing is cached.
#[test]
fn cached_bf16_casts_match_per_use_casts() {
    tch::manual_seed(12);
    let mut m = model(Preset::Tiny);
    let b = batch(&m.cfg, 8);
    m.set_precision(Precision::Bf16);
    let (l0, g0) = loss_and_grad(&m, &b);
    m.set_precision_cached(Precision::Bf16);
    m.refresh_casts();
    let n = m.compute().cached();
    assert_eq!(n, m.cast_weights().len());
    let (l1, g1) = loss_and_grad(&m, &b);
    assert_eq!(l1, l0, "the cached forward pass differs");
    let dg = rel_max(&g1, &g0);
    eprintln!("cached casts: gradients differ by {dg} of the largest");
    assert!(dg <= 1e-3, "gradients differ by {dg} of the largest");
    m.clear_casts();
    assert_eq!(m.compute().cached(), 0);
    m.set_precision_cached(Precision::Fp32);
    m.refresh_casts();
    assert_eq!(m.compute().cached(), 0, "fp32 caches nothing");
}

/// The frozen models' cache: one bf16 buffer whose views the cache serves. The forward pass
/// reads it (halving the buffer alone changes the features), and after the weights change,
/// `low.copy_(flat)` makes the forward pass equal the per-use-cast one bit for bit.
#[test]
fn frozen_flat_cache_serves_views_and_refreshes_in_one_copy() {
    tch::manual_seed(13);
    let mut m = model(Preset::Tiny);
    m.freeze();
    let b = batch(&m.cfg, 8);
    let params: Vec<Tensor> = m
        .named()
        .into_iter()
        .filter(|(_, t)| t.kind() == Kind::Float)
        .map(|(_, t)| t)
        .collect();
    let mut buf = flat::flatten(&params);
    let feats = |m: &CtpModel| tch::no_grad(|| m.features(&b.images, &b.ids, &b.mask, false).img);
    m.set_precision(Precision::Bf16);
    let per_use = feats(&m);
    m.set_precision_cached(Precision::Bf16);
    let mut low = m.cache_flat(&params, &buf).expect("bf16 with a cache");
    assert_eq!(m.compute().cached(), m.cast_weights().len());
    assert!(
        feats(&m).equal(&per_use),
        "cached copies differ from per-use casts"
    );
    tch::no_grad(|| {
        let _ = low.g_mul_scalar_(0.5);
    });
    assert!(!feats(&m).equal(&per_use), "the cache was not used");
    tch::no_grad(|| {
        let _ = buf.g_mul_scalar_(0.5);
        low.copy_(&buf);
    });
    let fresh = feats(&m);
    m.set_precision(Precision::Bf16);
    assert!(
        fresh.equal(&feats(&m)),
        "refreshed cache differs from per-use casts"
    );
    assert!(!fresh.equal(&per_use));
}
