//! `config.json` (architecture, preprocessing, tokenisation: everything a reimplementation
//! must match, docs/export.md) and `probe.json` (the probe set with the daemon's embeddings).
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::store::{TaskRow, VersionRow};
use crate::trainer::probe::{Extras, Probe};
use crate::trainer::{ModelConfig, Preset, TextPool};

/// Version of the export layout; a reader refuses a newer major.
pub const FORMAT: &str = "ctp-export/1";

pub(super) fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Standard base64 with padding (RFC 4648), for the probe's pixels.
pub(super) fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() {
                A[((n >> shift) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// What the two files are built from.
pub(super) struct Context<'a> {
    pub version: &'a VersionRow,
    pub cfg: &'a ModelConfig,
    pub extras: &'a Extras,
    pub tokenizer_sha256: &'a str,
    pub task: &'a TaskRow,
    pub probe: &'a Probe,
    pub probe_source: &'a str,
}

impl Context<'_> {
    pub fn config(&self) -> Value {
        let c = self.cfg;
        let v = self.version;
        let vocab = self
            .extras
            .shapes
            .get("online.bert.embeddings.word_embeddings.weight")
            .and_then(|s| s.first().copied());
        let efficientnet = matches!(c.preset, Preset::Small | Preset::SmallSplit);
        let vision = if efficientnet {
            json!({
                "kind": "efficientnet-lite0",
                "feature_dim": 1280,
                "batch_norm_eps": 1e-3,
                "activation": "relu6",
                "padding": "TensorFlow SAME (the extra pixel right/bottom)",
                "squeeze_excite": false,
                "pool": "mean over the final 1280-channel feature map",
                "names": "lukemelas/EfficientNet-PyTorch (_conv_stem, _blocks.N._depthwise_conv, ...)",
            })
        } else {
            json!({
                "kind": "vit",
                "patch": c.vit_patch,
                "width": c.vit_width,
                "layers": c.vit_layers,
                "heads": c.vit_heads,
                "mlp_ratio": 4,
                "layer_norm_eps": 1e-6,
                "activation": "gelu (erf)",
                "pool": "the [CLS] token after the final LayerNorm",
                "names": "timm (patch_embed.proj, cls_token, pos_embed, blocks.N.attn.qkv, ...)",
            })
        };
        json!({
            "format": FORMAT,
            "model": v.model,
            "version": v.version,
            "preset": c.preset.as_str(),
            "architecture": c,
            "vocab_size": vocab,
            "embed_dim": c.embed_dim,
            "vision": vision,
            "text": {
                "kind": "bert",
                "names": "Hugging Face BertModel (embeddings.word_embeddings, encoder.layer.N.attention.self.query, ...)",
                "text_layers": c.layers - c.fusion_layers,
                "hidden": c.hidden,
                "heads": c.heads,
                "intermediate": c.intermediate,
                "layer_norm_eps": 1e-12,
                "activation": "gelu (erf)",
                "position_embeddings": 512,
                "token_type_ids": "all 0",
                "pool": match c.text_pool {
                    TextPool::Cls => "cls: the first token's last hidden state",
                    TextPool::Mean => "mean: the mean of the last hidden states over attention-mask positions",
                },
                "note": "the fusion layers (cross-attention, MLM head) are not part of the embeddings",
            },
            "projection": {
                "image": "online.vision_proj (Linear) on the pooled image feature",
                "text": "online.text_proj (Linear) on the pooled text feature",
                "normalize": "x / max(||x||_2, 1e-12), per row",
            },
            "preprocessing": {
                "image_size": c.image_size,
                "decode": "PNG or JPEG to RGB; transparency composited onto white",
                "resize": {
                    "method": "stretch to image_size x image_size (the aspect ratio is not kept)",
                    "filter": "triangle (bilinear), as the Rust image crate's imageops::resize",
                },
                "layout": "NCHW float32",
                "scale": "(x - 127) / 128 on 0..255 values, every channel",
                "mean": [127.0, 127.0, 127.0],
                "std": [128.0, 128.0, 128.0],
            },
            "tokenizer": {
                "file": "tokenizer.json",
                "sha256": self.tokenizer_sha256,
                "kind": "WordPiece, uncased (all-MiniLM-L6-v2's), with [CLS] ... [SEP]",
                "max_tokens": c.max_tokens,
                "truncation": "to max_tokens, the last kept token replaced by [SEP]",
                "padding": "id 0 with attention mask 0",
            },
            "weights": {
                "file": super::WEIGHTS,
                "sha256": v.sha256,
                "prefix": "online.",
                "dtype": "float32",
                "other_tensors": "momentum.*, queue.* (training state), probe.* (the probe), __meta__ (JSON metadata, u8)",
            },
            "training_precision": self.extras.meta["precision"].as_str().unwrap_or(&v.precision),
            "embedding_precision": "fp32",
        })
    }

    pub fn probe_json(&self) -> Value {
        let p = self.probe;
        let samples: Vec<Value> = (0..p.captions.len())
            .map(|i| {
                json!({
                    "caption": p.captions[i],
                    "pixels_base64": base64(&p.pixels[i]),
                    "image_embedding": p.image_embeddings[i],
                    "text_embedding": p.text_embeddings[i],
                })
            })
            .collect();
        json!({
            "format": "ctp-probe/1",
            "model": self.version.model,
            "version": self.version.version,
            "source": self.probe_source,
            "task_id": self.task.id,
            "task_name": self.task.name,
            "selection": "the first samples of the version's own task's eval split, in upload order",
            "image_size": p.image_size,
            "pixels": "image_size x image_size x 3 RGB bytes, HWC, after decoding and resizing, before scaling",
            "embedding_precision": "fp32",
            "dim": self.cfg.embed_dim,
            "samples": samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
        assert_eq!(base64(&[0xFF, 0xFE, 0x00]), "//4A");
    }
}
