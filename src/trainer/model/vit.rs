//! Vision Transformer (pre-norm blocks, LayerNorm eps 1e-6, final norm on all tokens), timm/DeiT
//! naming (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.attn.qkv`, …) so DeiT weights
//! converted to safetensors load into the `base` preset.
use tch::nn;
use tch::{Kind, Tensor};

use super::mixed::{self, Compute};

#[derive(Debug, Clone, Copy)]
pub struct VitShape {
    pub image: i64,
    pub patch: i64,
    pub width: i64,
    pub layers: i64,
    pub heads: i64,
}

#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    heads: i64,
}

fn ln(p: nn::Path, d: i64) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![d],
        nn::LayerNormConfig {
            eps: 1e-6,
            ..Default::default()
        },
    )
}

fn lin(p: nn::Path, i: i64, o: i64) -> nn::Linear {
    let cfg = nn::LinearConfig {
        ws_init: nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        },
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    nn::linear(p, i, o, cfg)
}

impl Block {
    fn forward(&self, x: &Tensor, c: &Compute) -> Tensor {
        let (b, l, w) = x.size3().expect("ViT tokens must be [B, L, W]");
        let d = w / self.heads;
        let qkv = mixed::linear(&mixed::layer_norm(x, &self.norm1), &self.qkv, c)
            .view([b, l, 3, self.heads, d])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let a = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let x = x + mixed::linear(
            &a.transpose(1, 2).contiguous().view([b, l, w]),
            &self.proj,
            c,
        );
        let h = mixed::linear(
            &mixed::linear(&mixed::layer_norm(&x, &self.norm2), &self.fc1, c).gelu("none"),
            &self.fc2,
            c,
        );
        x + h
    }
}

#[derive(Debug)]
pub struct Vit {
    patch: nn::Conv2D,
    cls: Tensor,
    pos: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    stride: i64,
    /// Compute kind of the patch conv, matmuls and attention.
    pub compute: Compute,
}

impl Vit {
    pub fn new(p: &nn::Path, s: VitShape) -> Vit {
        let n = (s.image / s.patch) * (s.image / s.patch);
        let cfg = nn::ConvConfig {
            stride: s.patch,
            ..Default::default()
        };
        let blocks = (0..s.layers)
            .map(|i| {
                let bp = p / "blocks" / i;
                Block {
                    norm1: ln(&bp / "norm1", s.width),
                    qkv: lin(&bp / "attn" / "qkv", s.width, 3 * s.width),
                    proj: lin(&bp / "attn" / "proj", s.width, s.width),
                    norm2: ln(&bp / "norm2", s.width),
                    fc1: lin(&bp / "mlp" / "fc1", s.width, 4 * s.width),
                    fc2: lin(&bp / "mlp" / "fc2", 4 * s.width, s.width),
                    heads: s.heads,
                }
            })
            .collect();
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        Vit {
            patch: nn::conv2d(p / "patch_embed" / "proj", 3, s.width, s.patch, cfg),
            cls: p.var("cls_token", &[1, 1, s.width], init),
            pos: p.var("pos_embed", &[1, n + 1, s.width], init),
            blocks,
            norm: ln(p / "norm", s.width),
            stride: s.patch,
            compute: Compute::new(Kind::Float),
        }
    }

    /// Appends every tensor the mixed-precision helpers cast (see `CtpModel::cast_weights`).
    pub fn cast_weights(&self, out: &mut Vec<Tensor>) {
        mixed::push_conv(out, &self.patch);
        for b in &self.blocks {
            for l in [&b.qkv, &b.proj, &b.fc1, &b.fc2] {
                mixed::push_linear(out, l);
            }
        }
    }

    /// All tokens after the final norm, [B, 1 + patches, W]; token 0 is [CLS].
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let b = x.size()[0];
        let c = &self.compute;
        let patches = mixed::fp32(mixed::conv2d(x, &self.patch, self.stride, c))
            .flatten(2, 3)
            .transpose(1, 2);
        let cls = self.cls.expand([b, -1, -1], false);
        let mut h = Tensor::cat(&[cls, patches], 1) + &self.pos;
        for blk in &self.blocks {
            h = blk.forward(&h, c);
        }
        mixed::layer_norm(&h, &self.norm)
    }
}
