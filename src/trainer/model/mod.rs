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
    /// Compute kind of matmuls/convs/attention (set by [`CtpModel::set_precision`]) and the
    /// cache of cast weights, shared with `bert` and `vision`.
    compute: mixed::Compute,
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
            compute: mixed::Compute::new(Kind::Float),
        }
    }

    /// Runs matmuls, convolutions and attention in bf16 (weights stay float32) or fp32, casting
    /// weights at every use.
    pub fn set_precision(&mut self, p: Precision) {
        self.set_compute(mixed::Compute::new(compute_kind(p)));
    }

    /// As [`set_precision`](Self::set_precision), with a cache of cast weights
    /// (`engine.bf16_weight_cache`) that [`refresh_casts`](Self::refresh_casts) or
    /// [`cache_flat`](Self::cache_flat) fill; under fp32 the cache stays unused.
    pub fn set_precision_cached(&mut self, p: Precision) {
        self.set_compute(mixed::Compute::cached_kind(compute_kind(p)));
    }

    fn set_compute(&mut self, c: mixed::Compute) {
        self.bert.compute = c.clone();
        match &mut self.vision {
            Vision::EfficientNet(net) => net.compute = c.clone(),
            Vision::Vit(net) => net.compute = c.clone(),
        }
        self.compute = c;
    }

    /// Channels-last memory format for the convolutional tower (`engine.channels_last`;
    /// EfficientNet only, a ViT's one patch convolution is left as it is).
    pub fn set_channels_last(&mut self, on: bool) {
        if let Vision::EfficientNet(net) = &mut self.vision {
            net.channels_last = on;
        }
    }

    /// The compute settings (kind and cast cache) this model runs with.
    pub fn compute(&self) -> &mixed::Compute {
        &self.compute
    }

    /// Every weight the mixed-precision helpers cast: linear and convolution weights and
    /// biases, and the word embeddings (the tied MLM decoder).
    pub fn cast_weights(&self) -> Vec<Tensor> {
        let mut out = Vec::new();
        match &self.vision {
            Vision::EfficientNet(net) => net.cast_weights(&mut out),
            Vision::Vit(net) => net.cast_weights(&mut out),
        }
        for l in [&self.vision_proj, &self.text_proj] {
            mixed::push_linear(&mut out, l);
        }
        self.bert.cast_weights(&mut out);
        out
    }

    /// Fills the cache with each cast weight cast once, tracked by autograd (the online
    /// model, at the start of a step: every use in the step shares one cast, and backward
    /// sums their gradients before the one cast back). No-op without a cache or under fp32.
    pub fn refresh_casts(&self) {
        if !self.compute.caches() {
            return;
        }
        let k = self.compute.kind;
        self.compute.fill(self.cast_weights().into_iter().map(|w| {
            let c = w.to_kind(k);
            (w, c)
        }));
    }

    /// Empties the cache (after the optimizer step; uses outside a step cast again).
    pub fn clear_casts(&self) {
        self.compute.clear();
    }

    /// For a frozen model whose trainable parameters `params` are views into `flat`: a
    /// buffer of `flat` in the compute kind whose views the cache serves for those
    /// parameters. After `flat` changes, `low.copy_(flat)` refreshes every copy in one
    /// kernel. `None` without a cache or under fp32.
    pub fn cache_flat(&self, params: &[Tensor], flat: &Tensor) -> Option<Tensor> {
        if !self.compute.caches() {
            return None;
        }
        let _guard = tch::no_grad_guard();
        let low = flat.to_kind(self.compute.kind);
        let views = super::flat::views(&low, params);
        let wanted: std::collections::HashSet<usize> = self
            .cast_weights()
            .iter()
            .map(|w| w.data_ptr() as usize)
            .collect();
        self.compute.fill(
            params
                .iter()
                .zip(views)
                .filter(|(p, _)| wanted.contains(&(p.data_ptr() as usize)))
                .map(|(p, v)| (p.shallow_clone(), v)),
        );
        Some(low)
    }

    /// A projection head in the compute kind, its output back in float32.
    fn project(&self, x: &Tensor, l: &nn::Linear) -> Tensor {
        mixed::fp32(mixed::linear(x, l, &self.compute))
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

fn compute_kind(p: Precision) -> Kind {
    match p {
        Precision::Fp32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
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

#[cfg(test)]
mod tests;
