//! EfficientNet-Lite0 (MBConv, no squeeze-excite, ReLU6, BN eps 1e-3, TF "SAME" padding).
//!
//! Names follow lukemelas/EfficientNet-PyTorch (`_conv_stem`, `_blocks.N._depthwise_conv`, …) so
//! the converted ImageNet checkpoint loads directly. Input is RGB scaled as (x − 127) / 128.
use tch::nn;
use tch::{Kind, Tensor};

use super::mixed::{self, Compute};

/// (repeats, kernel, stride, expand, in, out) per stage.
const STAGES: [(i64, i64, i64, i64, i64, i64); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// Width of the head feature (and of the image tokens).
pub const FEATURE_DIM: i64 = 1280;

fn conv(p: nn::Path, i: i64, o: i64, k: i64, stride: i64, groups: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding: 0,
        bias: false,
        groups,
        ..Default::default()
    };
    nn::conv2d(p, i, o, k, cfg)
}

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        p,
        c,
        nn::BatchNormConfig {
            eps: 1e-3,
            momentum: 0.01,
            ..Default::default()
        },
    )
}

/// TensorFlow "SAME" padding: total max((ceil(i/s)−1)·s + k − i, 0), the extra pixel right/bottom.
fn same_pad(x: &Tensor, k: i64, s: i64) -> Tensor {
    let size = x.size();
    let pad = |i: i64| (((i + s - 1) / s - 1) * s + k - i).max(0);
    let (ph, pw) = (pad(size[2]), pad(size[3]));
    if ph == 0 && pw == 0 {
        return x.shallow_clone();
    }
    x.constant_pad_nd([pw / 2, pw - pw / 2, ph / 2, ph - ph / 2])
}

#[derive(Debug)]
struct Block {
    expand: Option<(nn::Conv2D, nn::BatchNorm)>,
    dw: nn::Conv2D,
    bn1: nn::BatchNorm,
    project: nn::Conv2D,
    bn2: nn::BatchNorm,
    kernel: i64,
    stride: i64,
    residual: bool,
}

impl Block {
    fn forward(&self, x: &Tensor, bn_train: bool, k: &Compute) -> Tensor {
        let mut h = x.shallow_clone();
        if let Some((c, b)) = &self.expand {
            h = mixed::conv2d(&h, c, 1, k).apply_t(b, bn_train).relu6();
        }
        h = mixed::conv2d(
            &same_pad(&h, self.kernel, self.stride),
            &self.dw,
            self.stride,
            k,
        )
        .apply_t(&self.bn1, bn_train)
        .relu6();
        h = mixed::conv2d(&h, &self.project, 1, k).apply_t(&self.bn2, bn_train);
        if self.residual {
            h + x
        } else {
            h
        }
    }
}

#[derive(Debug)]
pub struct EfficientNetLite0 {
    stem: nn::Conv2D,
    bn0: nn::BatchNorm,
    blocks: Vec<Block>,
    head: nn::Conv2D,
    bn1: nn::BatchNorm,
    /// Compute kind of the convolutions (BatchNorm keeps float32 parameters).
    pub compute: Compute,
    /// Run the tower in channels-last memory format (`engine.channels_last`).
    pub channels_last: bool,
}

impl EfficientNetLite0 {
    pub fn new(p: &nn::Path) -> Self {
        let mut blocks = Vec::new();
        for &(repeats, k, stride, e, cin, cout) in &STAGES {
            for r in 0..repeats {
                let bp = p / "_blocks" / blocks.len();
                let (i, s) = if r == 0 { (cin, stride) } else { (cout, 1) };
                let mid = i * e;
                blocks.push(Block {
                    expand: (e != 1).then(|| {
                        (
                            conv(&bp / "_expand_conv", i, mid, 1, 1, 1),
                            bn(&bp / "_bn0", mid),
                        )
                    }),
                    dw: conv(&bp / "_depthwise_conv", mid, mid, k, s, mid),
                    bn1: bn(&bp / "_bn1", mid),
                    project: conv(&bp / "_project_conv", mid, cout, 1, 1, 1),
                    bn2: bn(&bp / "_bn2", cout),
                    kernel: k,
                    stride: s,
                    residual: s == 1 && i == cout,
                });
            }
        }
        EfficientNetLite0 {
            stem: conv(p / "_conv_stem", 3, 32, 3, 2, 1),
            bn0: bn(p / "_bn0", 32),
            blocks,
            head: conv(p / "_conv_head", 320, FEATURE_DIM, 1, 1, 1),
            bn1: bn(p / "_bn1", FEATURE_DIM),
            compute: Compute::new(Kind::Float),
            channels_last: false,
        }
    }

    /// Appends every tensor the mixed-precision helpers cast (see `CtpModel::cast_weights`).
    pub fn cast_weights(&self, out: &mut Vec<Tensor>) {
        mixed::push_conv(out, &self.stem);
        for b in &self.blocks {
            if let Some((c, _)) = &b.expand {
                mixed::push_conv(out, c);
            }
            mixed::push_conv(out, &b.dw);
            mixed::push_conv(out, &b.project);
        }
        mixed::push_conv(out, &self.head);
    }

    /// Head feature map [B, 1280, h, w]. `bn_train` selects batch statistics (BN train mode).
    /// Channels-last input makes libtorch run every convolution, BatchNorm and activation of
    /// the tower in NHWC (the map comes out channels-last; values are the same up to
    /// summation order).
    pub fn feature_map(&self, x: &Tensor, bn_train: bool) -> Tensor {
        let k = &self.compute;
        let x = if self.channels_last {
            mixed::channels_last(x)
        } else {
            x.shallow_clone()
        };
        let x = &x;
        let mut h = mixed::conv2d(&same_pad(x, 3, 2), &self.stem, 2, k)
            .apply_t(&self.bn0, bn_train)
            .relu6();
        for b in &self.blocks {
            h = b.forward(&h, bn_train, k);
        }
        mixed::conv2d(&h, &self.head, 1, k)
            .apply_t(&self.bn1, bn_train)
            .relu6()
    }
}

/// Image tokens for cross-attention: [pooled; spatial positions] → [B, 1 + h·w, 1280], and
/// the pooled 1280-d feature.
pub fn tokens_and_pooled(map: &Tensor) -> (Tensor, Tensor) {
    let pooled = map.mean_dim(&[2i64, 3][..], false, map.kind());
    let spatial = map.flatten(2, 3).transpose(1, 2);
    (Tensor::cat(&[pooled.unsqueeze(1), spatial], 1), pooled)
}
