//! The CTP dual encoder + fusion encoder over one `VarStore`.
//!
//! Top-level variable paths (the checkpoint schema — never rename): `visual.*` (EfficientNet or
//! ViT), `vision_proj.*`, `text_proj.*`, `bert.*` (text layers, fusion layers, MLM head).
pub mod bert;
pub mod efficientnet;
pub mod mixed;
pub mod vit;

use std::collections::HashMap;
use std::path::Path;

use tch::{nn, Device, Kind, Tensor};

use super::config::{BnPolicy, ModelConfig, Precision, Preset, TextPool};
use bert::{Bert, BertShape};

// One value per model, built once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Vision {
    EfficientNet(efficientnet::EfficientNetLite0),
    Vit(vit::Vit),
}

/// L2-normalised features of a batch plus the image tokens the fusion encoder reads.
pub struct Features {
    pub img: Tensor,
    pub txt: Tensor,
    pub img_tokens: Tensor,
}

/// One CTP model (online, momentum or reference: the same structure, separate stores).
#[derive(Debug)]
pub struct CtpModel {
    pub vs: nn::VarStore,
    pub cfg: ModelConfig,
    vision: Vision,
    vision_proj: nn::Linear,
    text_proj: nn::Linear,
    pub bert: Bert,
    /// Compute kind of matmuls/convs/attention (set by [`CtpModel::set_precision`]).
    compute: Kind,
}

impl CtpModel {
    pub fn new(cfg: &ModelConfig, vocab: i64, device: Device) -> CtpModel {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let (vision, width) = match cfg.preset {
            Preset::Small | Preset::SmallSplit => (
                Vision::EfficientNet(efficientnet::EfficientNetLite0::new(&(&root / "visual"))),
                efficientnet::FEATURE_DIM,
            ),
            Preset::Tiny | Preset::Base => {
                let shape = vit::VitShape {
                    image: cfg.image_size,
                    patch: cfg.vit_patch,
                    width: cfg.vit_width,
                    layers: cfg.vit_layers,
                    heads: cfg.vit_heads,
                };
                (
                    Vision::Vit(vit::Vit::new(&(&root / "visual"), shape)),
                    cfg.vit_width,
                )
            }
        };
        let shape = BertShape {
            vocab,
            hidden: cfg.hidden,
            heads: cfg.heads,
            intermediate: cfg.intermediate,
            layers: cfg.layers,
            fusion_layers: cfg.fusion_layers,
            image_width: width,
        };
        let bert = Bert::new(&(&root / "bert"), shape);
        CtpModel {
            vision_proj: nn::linear(
                &root / "vision_proj",
                width,
                cfg.embed_dim,
                Default::default(),
            ),
            text_proj: nn::linear(
                &root / "text_proj",
                cfg.hidden,
                cfg.embed_dim,
                Default::default(),
            ),
            bert,
            vision,
            cfg: cfg.clone(),
            vs,
            compute: Kind::Float,
        }
    }

    /// Runs matmuls, convolutions and attention in bf16 (weights stay float32) or fp32.
    pub fn set_precision(&mut self, p: Precision) {
        let k = match p {
            Precision::Fp32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        };
        self.compute = k;
        self.bert.compute = k;
        match &mut self.vision {
            Vision::EfficientNet(net) => net.compute = k,
            Vision::Vit(net) => net.compute = k,
        }
    }

    /// A projection head in the compute kind, its output back in float32.
    fn project(&self, x: &Tensor, l: &nn::Linear) -> Tensor {
        mixed::fp32(mixed::linear(x, l, self.compute))
    }

    /// Image tokens [B, S, D] and the pooled image representation [B, D].
    pub fn image(&self, images: &Tensor, train: bool) -> (Tensor, Tensor) {
        match &self.vision {
            Vision::EfficientNet(net) => {
                let bn_train = train && self.cfg.bn_policy == BnPolicy::Train;
                efficientnet::tokens_and_pooled(&net.feature_map(images, bn_train))
            }
            Vision::Vit(net) => {
                let tokens = net.forward(images);
                let cls = tokens.select(1, 0);
                (tokens, cls)
            }
        }
    }

    fn dropout(&self, train: bool) -> f64 {
        if train {
            self.cfg.dropout
        } else {
            0.0
        }
    }

    /// Normalised text feature [B, E].
    pub fn text_feature(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let h = self.bert.encode_text(ids, mask, self.dropout(train));
        let pooled = match self.cfg.text_pool {
            TextPool::Cls => h.select(1, 0),
            TextPool::Mean => bert::masked_mean(&h, mask),
        };
        normalize(&self.project(&pooled, &self.text_proj))
    }

    /// Features of an image–text batch (`get_feature` in the paper's code).
    pub fn features(&self, images: &Tensor, ids: &Tensor, mask: &Tensor, train: bool) -> Features {
        let (img_tokens, pooled) = self.image(images, train);
        Features {
            img: normalize(&self.project(&pooled, &self.vision_proj)),
            txt: self.text_feature(ids, mask, train),
            img_tokens,
        }
    }

    /// Normalised image feature only.
    pub fn image_feature(&self, images: &Tensor) -> Tensor {
        let (_, pooled) = self.image(images, false);
        normalize(&self.project(&pooled, &self.vision_proj))
    }

    /// MLM logits at the flat positions `positions` (indices into B·L) of the fused encoder run
    /// on masked ids. Only masked positions reach the vocabulary projection.
    pub fn mlm_logits(
        &self,
        masked_ids: &Tensor,
        mask: &Tensor,
        img_tokens: &Tensor,
        positions: &Tensor,
        train: bool,
    ) -> Tensor {
        let h = self
            .bert
            .encode_fused(masked_ids, mask, img_tokens, self.dropout(train));
        let hsz = h.size()[2];
        let picked = h.reshape([-1, hsz]).index_select(0, positions);
        self.bert.mlm_logits(&picked)
    }

    /// Trainable parameters in sorted-name order (the order EMA, drift, AdamW and checkpoints use).
    pub fn trainable(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Every variable (including BatchNorm running statistics) in sorted-name order.
    pub fn named(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Copies `tensors` whose name (after `prefix`) matches a variable of the same shape.
    /// Returns the model variables under `prefix` that were not filled.
    pub fn load_named(
        &mut self,
        tensors: &[(String, Tensor)],
        prefix: &str,
    ) -> Result<Vec<String>, String> {
        let vars = self.vs.variables();
        let mut filled = std::collections::HashSet::new();
        let _guard = tch::no_grad_guard();
        for (name, t) in tensors {
            let full = format!("{prefix}{name}");
            if let Some(var) = vars.get(&full) {
                if var.size() != t.size() {
                    return Err(format!(
                        "{full}: shape {:?} in file, {:?} in model",
                        t.size(),
                        var.size()
                    ));
                }
                let mut var = var.shallow_clone();
                var.copy_(&t.to_kind(var.kind()).to_device(var.device()));
                filled.insert(full);
            }
        }
        let mut missing: Vec<String> = vars
            .keys()
            .filter(|k| k.starts_with(prefix) && !filled.contains(*k))
            .cloned()
            .collect();
        missing.sort();
        Ok(missing)
    }

    /// Loads the preset's pretrained weights (small: EfficientNet-Lite0 + MiniLM) from `weights_dir`.
    pub fn load_pretrained(&mut self, weights_dir: &Path) -> Result<(), String> {
        if !matches!(self.cfg.preset, Preset::Small | Preset::SmallSplit) {
            return Ok(());
        }
        let read = |p: &Path| {
            Tensor::read_safetensors(p).map_err(|e| {
                format!(
                    "cannot read {} ({e}); run scripts/setup-data.sh",
                    p.display()
                )
            })
        };
        let eff = read(&weights_dir.join("efficientnet-lite0.safetensors"))?;
        let missing = self.load_named(&eff, "visual.")?;
        if !missing.is_empty() {
            return Err(format!("EfficientNet weights lack {missing:?}"));
        }
        let minilm = read(&weights_dir.join("minilm").join("model.safetensors"))?;
        let missing = self.load_named(&minilm, "bert.")?;
        // Only the new fusion layers (cross-attention + layers past MiniLM's 6) and the MLM head
        // may stay random.
        let text_layers = 6;
        if let Some(bad) = missing.iter().find(|n| {
            !(n.contains("crossattention")
                || n.starts_with("bert.cls.")
                || layer_index(n).is_some_and(|i| i >= text_layers))
        }) {
            return Err(format!("MiniLM weights lack {bad}"));
        }
        Ok(())
    }

    /// Copies every variable of `other` (same structure) into this model.
    pub fn copy_from(&mut self, other: &CtpModel) -> Result<(), String> {
        self.vs.copy(&other.vs).map_err(|e| e.to_string())
    }

    /// Turns off gradients (momentum and reference models).
    pub fn freeze(&mut self) {
        self.vs.freeze();
    }

    pub fn var_map(&self) -> HashMap<String, Tensor> {
        self.vs.variables()
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }
}

fn layer_index(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("bert.encoder.layer.")?;
    rest.split('.').next()?.parse().ok()
}

/// Row-wise L2 normalisation (F.normalize, eps 1e-12).
pub fn normalize(x: &Tensor) -> Tensor {
    let n = x
        .norm_scalaropt_dim(2.0, &[-1i64][..], true)
        .clamp_min(1e-12);
    x / n
}

/// Converts HWC u8 images (N·S·S·3) to the model's input tensor [N, 3, S, S].
pub fn images_to_tensor(pixels: &[u8], n: i64, size: i64, device: Device) -> Tensor {
    Tensor::from_slice(pixels)
        .view([n, size, size, 3])
        .permute([0, 3, 1, 2])
        .to_device(device)
        .to_kind(Kind::Float)
        .g_sub_scalar(127.0)
        .g_div_scalar(128.0)
}
