//! BERT encoder with optional cross-attention layers (the CTP text + fusion encoder).
//!
//! Variable names follow Hugging Face's `BertModel` (`embeddings.word_embeddings.weight`,
//! `encoder.layer.N.attention.self.query.weight`, …) so all-MiniLM-L6-v2's safetensors load
//! directly; cross-attention adds `encoder.layer.N.crossattention.*` (ALBEF's naming). These
//! names are the checkpoint schema: do not rename them.
use tch::nn;
use tch::{Kind, Tensor};

use super::mixed::{self, Compute};

fn init_linear(p: nn::Path, i: i64, o: i64) -> nn::Linear {
    // BERT init: N(0, 0.02) weights, zero bias.
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

fn ln(p: nn::Path, d: i64) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![d],
        nn::LayerNormConfig {
            eps: 1e-12,
            ..Default::default()
        },
    )
}

/// Multi-head attention + output projection + residual LayerNorm (`BertAttention`).
#[derive(Debug)]
struct Attention {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    out: nn::Linear,
    norm: nn::LayerNorm,
    heads: i64,
}

impl Attention {
    fn new(p: nn::Path, hidden: i64, kv_dim: i64, heads: i64) -> Self {
        let s = &p / "self";
        let o = &p / "output";
        Attention {
            query: init_linear(&s / "query", hidden, hidden),
            key: init_linear(&s / "key", kv_dim, hidden),
            value: init_linear(&s / "value", kv_dim, hidden),
            out: init_linear(&o / "dense", hidden, hidden),
            norm: ln(&o / "LayerNorm", hidden),
            heads,
        }
    }

    /// `x` [B, L, H]; `kv` [B, S, D]; `mask` optional bool [B, 1, 1, S] (true = attend).
    /// Projections and attention run in `c`; the residual LayerNorm in float32.
    fn forward(
        &self,
        x: &Tensor,
        kv: &Tensor,
        mask: Option<&Tensor>,
        dropout: f64,
        c: &Compute,
    ) -> Tensor {
        let (b, l, h) = x.size3().expect("attention input must be [B, L, H]");
        let s = kv.size()[1];
        let d = h / self.heads;
        let split = |t: Tensor, n: i64| t.view([b, n, self.heads, d]).transpose(1, 2);
        let q = split(mixed::linear(x, &self.query, c), l);
        let k = split(mixed::linear(kv, &self.key, c), s);
        let v = split(mixed::linear(kv, &self.value, c), s);
        let ctx =
            Tensor::scaled_dot_product_attention(&q, &k, &v, mask, dropout, false, None, false);
        let ctx = ctx.transpose(1, 2).contiguous().view([b, l, h]);
        let y = mixed::linear(&ctx, &self.out, c).dropout(dropout, dropout > 0.0);
        mixed::layer_norm(&(y + x), &self.norm)
    }
}

/// One transformer layer; `cross` is present for fusion layers.
#[derive(Debug)]
struct Layer {
    attn: Attention,
    cross: Option<Attention>,
    inter: nn::Linear,
    out: nn::Linear,
    norm: nn::LayerNorm,
}

impl Layer {
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        image: Option<&Tensor>,
        dropout: f64,
        c: &Compute,
    ) -> Tensor {
        let mut h = self.attn.forward(x, x, Some(mask), dropout, c);
        if let (Some(cross), Some(img)) = (&self.cross, image) {
            h = cross.forward(&h, img, None, dropout, c);
        }
        let y = mixed::linear(
            &mixed::linear(&h, &self.inter, c).gelu("none"),
            &self.out,
            c,
        )
        .dropout(dropout, dropout > 0.0);
        mixed::layer_norm(&(y + h), &self.norm)
    }
}

/// Shape of a BERT.
#[derive(Debug, Clone, Copy)]
pub struct BertShape {
    pub vocab: i64,
    pub hidden: i64,
    pub heads: i64,
    pub intermediate: i64,
    pub layers: i64,
    pub fusion_layers: i64,
    /// Width of the image tokens that cross-attention reads.
    pub image_width: i64,
}

/// The shared BERT: layers `0..layers−fusion_layers` encode text, the rest fuse image tokens.
#[derive(Debug)]
pub struct Bert {
    pub word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    emb_norm: nn::LayerNorm,
    layers: Vec<Layer>,
    text_layers: usize,
    // MLM head (`cls.predictions`): transform + decoder tied to `word`.
    mlm_dense: nn::Linear,
    mlm_norm: nn::LayerNorm,
    mlm_bias: Tensor,
    /// Compute kind of matmuls and attention (Float, or BFloat16 under bf16 precision), and
    /// the model's cache of cast weights.
    pub compute: Compute,
}

impl Bert {
    pub fn new(p: &nn::Path, s: BertShape) -> Bert {
        let emb = p / "embeddings";
        let ecfg = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            ..Default::default()
        };
        let text_layers = (s.layers - s.fusion_layers) as usize;
        let layers = (0..s.layers as usize)
            .map(|i| {
                let lp = p / "encoder" / "layer" / i;
                Layer {
                    attn: Attention::new(&lp / "attention", s.hidden, s.hidden, s.heads),
                    cross: (i >= text_layers).then(|| {
                        Attention::new(&lp / "crossattention", s.hidden, s.image_width, s.heads)
                    }),
                    inter: init_linear(&lp / "intermediate" / "dense", s.hidden, s.intermediate),
                    out: init_linear(&lp / "output" / "dense", s.intermediate, s.hidden),
                    norm: ln(&lp / "output" / "LayerNorm", s.hidden),
                }
            })
            .collect();
        let cls = p / "cls" / "predictions";
        Bert {
            word: nn::embedding(&emb / "word_embeddings", s.vocab, s.hidden, ecfg),
            position: nn::embedding(&emb / "position_embeddings", 512, s.hidden, ecfg),
            token_type: nn::embedding(&emb / "token_type_embeddings", 2, s.hidden, ecfg),
            emb_norm: ln(&emb / "LayerNorm", s.hidden),
            layers,
            text_layers,
            mlm_dense: init_linear(&cls / "transform" / "dense", s.hidden, s.hidden),
            mlm_norm: ln(&cls / "transform" / "LayerNorm", s.hidden),
            mlm_bias: cls.zeros("bias", &[s.vocab]),
            compute: Compute::new(Kind::Float),
        }
    }

    fn embed(&self, ids: &Tensor, dropout: f64) -> Tensor {
        let l = ids.size()[1];
        let pos = Tensor::arange(l, (Kind::Int64, ids.device())).unsqueeze(0);
        let x = ids.apply(&self.word)
            + pos.apply(&self.position)
            + ids.zeros_like().apply(&self.token_type);
        x.apply(&self.emb_norm).dropout(dropout, dropout > 0.0)
    }

    fn attn_mask(mask: &Tensor) -> Tensor {
        mask.to_kind(Kind::Bool).unsqueeze(1).unsqueeze(1)
    }

    /// Text-only encoder (`mode='text'`): last hidden state of the text layers, [B, L, H].
    pub fn encode_text(&self, ids: &Tensor, mask: &Tensor, dropout: f64) -> Tensor {
        let m = Self::attn_mask(mask);
        let mut x = self.embed(ids, dropout);
        for layer in &self.layers[..self.text_layers] {
            x = layer.forward(&x, &m, None, dropout, &self.compute);
        }
        x
    }

    /// Full model on (masked) ids with cross-attention to `image` [B, S, D] (`mode='multi_modal'`).
    pub fn encode_fused(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        image: &Tensor,
        dropout: f64,
    ) -> Tensor {
        let m = Self::attn_mask(mask);
        let mut x = self.embed(ids, dropout);
        for layer in &self.layers {
            x = layer.forward(&x, &m, Some(image), dropout, &self.compute);
        }
        x
    }

    /// Appends every tensor the mixed-precision helpers cast (see `CtpModel::cast_weights`).
    pub fn cast_weights(&self, out: &mut Vec<Tensor>) {
        for layer in &self.layers {
            for a in std::iter::once(&layer.attn).chain(layer.cross.as_ref()) {
                for l in [&a.query, &a.key, &a.value, &a.out] {
                    mixed::push_linear(out, l);
                }
            }
            mixed::push_linear(out, &layer.inter);
            mixed::push_linear(out, &layer.out);
        }
        mixed::push_linear(out, &self.mlm_dense);
        out.push(self.word.ws.shallow_clone());
    }

    /// MLM logits for selected hidden states [M, H] → [M, vocab] (decoder tied to word
    /// embeddings), float32.
    pub fn mlm_logits(&self, hidden: &Tensor) -> Tensor {
        let c = &self.compute;
        let h = mixed::layer_norm(
            &mixed::linear(hidden, &self.mlm_dense, c).gelu("none"),
            &self.mlm_norm,
        );
        mixed::fp32(mixed::matmul(&h, &c.weight(&self.word.ws).tr(), c.kind) + &self.mlm_bias)
    }
}

/// Mean of `x` [B, L, H] over positions where `mask` [B, L] is 1.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.to_kind(x.kind()).unsqueeze(-1);
    (x * &m).sum_dim_intlist(1, false, x.kind())
        / m.sum_dim_intlist(1, false, x.kind()).clamp_min(1e-9)
}
