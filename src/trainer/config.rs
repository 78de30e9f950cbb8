//! Engine configuration: plain serde data, no libtorch. Every knob of the CTP method is here so
//! a version's checkpoint records exactly how it was trained.
use serde::{Deserialize, Serialize};

/// Model size presets (docs/method.md, "Model presets").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Random-init ViT (patch 8, width 64) + 2-layer BERT + 1 fusion layer at 32 px. Tests.
    Tiny,
    /// EfficientNet-Lite0 (ImageNet) + all-MiniLM-L6-v2 + 2 fusion layers at 64 px. Demo/CPU.
    Small,
    /// `small` with the paper's split instead: MiniLM layers 0–2 encode text, layers 3–5 get
    /// cross-attention and form the fusion encoder (no extra layers). Kept for the layout
    /// measurement in docs/decisions.md.
    #[serde(rename = "small-split")]
    SmallSplit,
    /// ViT-B/16 + BERT-base shape (6 text + 6 fusion layers) at 224 px, as the paper. GPU.
    Base,
}

impl Preset {
    pub fn parse(s: &str) -> Option<Preset> {
        match s {
            "tiny" => Some(Preset::Tiny),
            "small" => Some(Preset::Small),
            "small-split" => Some(Preset::SmallSplit),
            "base" => Some(Preset::Base),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Small => "small",
            Preset::SmallSplit => "small-split",
            Preset::Base => "base",
        }
    }
}

/// What BatchNorm layers do during training (only EfficientNet has BN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BnPolicy {
    /// Running statistics stay at their pretrained values in online, momentum and reference
    /// models alike (affine weights still train). The pilot (docs/method.md, "BatchNorm policy") found this makes topology
    /// preservation compare like with like; it is the default.
    Frozen,
    /// The online model normalises with batch statistics and updates running statistics.
    Train,
}

/// Which training objective runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Full CTP: ITC + MLM + compatible momentum contrast + MLM distillation + topology preservation.
    Ctp,
    /// Sequential fine-tuning lower bound: ITC + MLM only (no momentum model, no reference model).
    /// Joint training is SeqFT on the union of all tasks.
    SeqFt,
}

/// How the text feature is pooled from the text encoder's last hidden state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextPool {
    /// [CLS] token, as the paper.
    Cls,
    /// Mean over non-padding tokens, as all-MiniLM-L6-v2 was trained.
    Mean,
}

/// How drift between the online and the momentum model is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftMetric {
    /// ‖θ − θc‖₂ / ‖θc‖₂ over every synced parameter (one fused pass, deterministic).
    Param,
    /// 1 − mean cosine between online and momentum features on a fixed probe batch (the task's
    /// first training batch), images and texts averaged.
    Feature,
}

/// Arithmetic precision of the training step (engine setting, recorded in every version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in float32.
    Fp32,
    /// Matmuls, convolutions and attention in bfloat16; losses, softmax/log-softmax/KL, the
    /// feature queue, master weights, AdamW moments and the momentum/reference weights in
    /// float32.
    Bf16,
}

impl Precision {
    /// Parses `auto`, `bf16` or `fp32` for one preset on a device (see [`PrecisionSetting`]).
    pub fn parse(s: &str, preset: Preset, cuda: bool) -> Result<Precision, String> {
        Ok(PrecisionSetting::parse(s)?.resolve(preset, cuda))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// `engine.precision` as set: one precision for every preset, or the per-preset `auto` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrecisionSetting {
    /// fp32 on a CPU. On CUDA: fp32 (with TF32 matmuls when `engine.tf32` is on) for `tiny`,
    /// `small` and `small-split`, whose small matmuls and depthwise convolutions gain little
    /// from bf16 and lose to its casts; bf16 for `base` (issue #27, docs/method.md,
    /// "Precision").
    Auto,
    Fixed(Precision),
}

impl PrecisionSetting {
    pub fn parse(s: &str) -> Result<PrecisionSetting, String> {
        match s {
            "auto" | "" => Ok(PrecisionSetting::Auto),
            "bf16" => Ok(PrecisionSetting::Fixed(Precision::Bf16)),
            "fp32" => Ok(PrecisionSetting::Fixed(Precision::Fp32)),
            other => Err(format!(
                "engine.precision must be auto, bf16 or fp32 (got {other:?})"
            )),
        }
    }

    /// The precision a task of `preset` trains in.
    pub fn resolve(self, preset: Preset, cuda: bool) -> Precision {
        match self {
            PrecisionSetting::Fixed(p) => p,
            PrecisionSetting::Auto if !cuda => Precision::Fp32,
            PrecisionSetting::Auto => match preset {
                Preset::Base => Precision::Bf16,
                Preset::Tiny | Preset::Small | Preset::SmallSplit => Precision::Fp32,
            },
        }
    }

    /// The precision every preset trains in on this device, if it is one (`None`: it
    /// depends on the preset).
    pub fn uniform(self, cuda: bool) -> Option<Precision> {
        match self {
            PrecisionSetting::Fixed(p) => Some(p),
            PrecisionSetting::Auto if !cuda => Some(Precision::Fp32),
            PrecisionSetting::Auto => None,
        }
    }

    /// The rule in words, as GetServerInfo reports it: e.g. `"auto: tiny=fp32+tf32,
    /// small=fp32+tf32, small-split=fp32+tf32, base=bf16 on cuda"`, `"auto: fp32 on cpu"`,
    /// `"bf16"`. `+tf32` marks fp32 whose CUDA matmuls may use TF32 (`engine.tf32`).
    pub fn rule(self, cuda: bool, tf32: bool) -> String {
        let name = |p: Precision| match p {
            Precision::Fp32 if cuda && tf32 => "fp32+tf32",
            p => p.as_str(),
        };
        match self {
            PrecisionSetting::Fixed(p) => name(p).to_string(),
            PrecisionSetting::Auto if !cuda => "auto: fp32 on cpu".to_string(),
            PrecisionSetting::Auto => {
                let each: Vec<String> = [
                    Preset::Tiny,
                    Preset::Small,
                    Preset::SmallSplit,
                    Preset::Base,
                ]
                .iter()
                .map(|&p| format!("{}={}", p.as_str(), name(self.resolve(p, cuda))))
                .collect();
                format!("auto: {} on cuda; fp32 on cpu", each.join(", "))
            }
        }
    }
}

/// Architecture of one preset. Serialised into every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub preset: Preset,
    pub image_size: i64,
    /// Shared embedding space of the two projections (paper: 256).
    pub embed_dim: i64,
    /// BERT hidden size / heads / intermediate size / total layers.
    pub hidden: i64,
    pub heads: i64,
    pub intermediate: i64,
    pub layers: i64,
    /// The last `fusion_layers` of `layers` get cross-attention to image tokens and form the
    /// fusion encoder; the first `layers − fusion_layers` encode text alone.
    pub fusion_layers: i64,
    pub max_tokens: i64,
    pub text_pool: TextPool,
    pub bn_policy: BnPolicy,
    /// Dropout in the online BERT (attention and hidden). Momentum/reference run without it.
    pub dropout: f64,
    /// ViT settings (tiny/base).
    pub vit_patch: i64,
    pub vit_width: i64,
    pub vit_layers: i64,
    pub vit_heads: i64,
}

impl ModelConfig {
    pub fn preset(p: Preset) -> ModelConfig {
        match p {
            Preset::Tiny => ModelConfig {
                preset: p,
                image_size: 32,
                embed_dim: 64,
                hidden: 64,
                heads: 4,
                intermediate: 256,
                layers: 3,
                fusion_layers: 1,
                max_tokens: 16,
                text_pool: TextPool::Cls,
                bn_policy: BnPolicy::Frozen,
                dropout: 0.0,
                vit_patch: 8,
                vit_width: 64,
                vit_layers: 2,
                vit_heads: 4,
            },
            // MiniLM's 6 pretrained layers all stay text-only and 2 new fusion layers sit on top
            // (the pilot's layout); see docs/decisions.md for the 3+3 split measurement.
            Preset::Small => ModelConfig {
                preset: p,
                image_size: 64,
                embed_dim: 256,
                hidden: 384,
                heads: 12,
                intermediate: 1536,
                layers: 8,
                fusion_layers: 2,
                max_tokens: 16,
                text_pool: TextPool::Mean,
                bn_policy: BnPolicy::Frozen,
                dropout: 0.1,
                vit_patch: 0,
                vit_width: 0,
                vit_layers: 0,
                vit_heads: 0,
            },
            Preset::SmallSplit => ModelConfig {
                preset: p,
                layers: 6,
                fusion_layers: 3,
                ..ModelConfig::preset(Preset::Small)
            },
            Preset::Base => ModelConfig {
                preset: p,
                image_size: 224,
                embed_dim: 256,
                hidden: 768,
                heads: 12,
                intermediate: 3072,
                layers: 12,
                fusion_layers: 6,
                max_tokens: 30,
                text_pool: TextPool::Cls,
                bn_policy: BnPolicy::Frozen,
                dropout: 0.1,
                vit_patch: 16,
                vit_width: 768,
                vit_layers: 12,
                vit_heads: 12,
            },
        }
    }
}

/// Loss weights (all 1 in the paper's code).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossWeights {
    pub ita: f64,
    pub ita_queue: f64,
    pub mlm: f64,
    pub mlm_distill: f64,
    pub tp_cross: f64,
    pub tp_intra: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        LossWeights {
            ita: 1.0,
            ita_queue: 1.0,
            mlm: 1.0,
            mlm_distill: 1.0,
            tp_cross: 1.0,
            tp_intra: 1.0,
        }
    }
}

/// Drift-gated compatible momentum (docs/method.md, "Drift-gated momentum sync").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MomentumConfig {
    /// Task-0 momentum (paper: 0.995), target θ.
    pub m0: f64,
    /// Task ≥ 1 momentum (paper: 0.9), target α·θ_{t−1} + (1−α)·θ.
    pub m: f64,
    pub alpha: f64,
    /// Sync when drift ≥ threshold. 0 with `check_every` 1 is the paper's per-step update.
    pub threshold: f64,
    pub check_every: i64,
    pub metric: DriftMetric,
    /// 0: fixed coefficients (the paper). N > 0: the task-0 coefficient becomes
    /// `m0^(N / steps)`, so that over a task of `steps` steps the momentum model moves as far
    /// toward the online model as over N steps at `m0` (short tasks otherwise leave it near
    /// its initial weights). Task ≥ 1 keeps `m`, whose horizon (~10 steps) is already short.
    #[serde(default)]
    pub reference_steps: i64,
}

impl MomentumConfig {
    /// The task-0 coefficient for a task of `steps` optimizer steps.
    pub fn task0_coefficient(&self, steps: i64) -> f64 {
        if self.reference_steps > 0 && steps > 0 {
            self.m0.powf(self.reference_steps as f64 / steps as f64)
        } else {
            self.m0
        }
    }
}

impl Default for MomentumConfig {
    fn default() -> Self {
        MomentumConfig {
            m0: 0.995,
            m: 0.9,
            alpha: 0.5,
            threshold: 0.0,
            check_every: 1,
            metric: DriftMetric::Param,
            reference_steps: 0,
        }
    }
}

/// Everything that shapes one task's training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub method: Method,
    pub epochs: i64,
    pub batch_size: i64,
    pub lr: f64,
    pub min_lr: f64,
    pub weight_decay: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub queue_size: i64,
    /// Fixed contrastive temperature τ (not learned).
    pub temp: f64,
    pub distill_temp: f64,
    pub mlm_prob: f64,
    pub weights: LossWeights,
    pub momentum: MomentumConfig,
    pub seed: u64,
    /// Write a mid-task resume checkpoint every this many steps (0 = never).
    pub checkpoint_every: i64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            method: Method::Ctp,
            epochs: 5,
            batch_size: 32,
            lr: 1e-4,
            min_lr: 1e-6,
            weight_decay: 0.05,
            betas: (0.9, 0.999),
            eps: 1e-8,
            queue_size: 1024,
            temp: 0.07,
            distill_temp: 1.0,
            mlm_prob: 0.15,
            weights: LossWeights::default(),
            momentum: MomentumConfig::default(),
            seed: 42,
            checkpoint_every: 0,
        }
    }
}

impl TrainConfig {
    /// Checks values a user can send; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let pos = |name: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(format!("{name} must be > 0 (got {v})"))
            }
        };
        if self.epochs < 1 {
            return Err(format!("epochs must be >= 1 (got {})", self.epochs));
        }
        if self.batch_size < 2 {
            return Err(format!(
                "batch_size must be >= 2 for a contrastive loss (got {})",
                self.batch_size
            ));
        }
        pos("learning_rate", self.lr)?;
        if self.queue_size < 1 {
            return Err(format!("queue_size must be >= 1 (got {})", self.queue_size));
        }
        if !(self.momentum.threshold >= 0.0 && self.momentum.threshold.is_finite()) {
            return Err(format!(
                "drift_threshold must be >= 0 (got {})",
                self.momentum.threshold
            ));
        }
        if self.momentum.check_every < 1 {
            return Err(format!(
                "drift_check_every must be >= 1 (got {})",
                self.momentum.check_every
            ));
        }
        if !(0.0..1.0).contains(&self.mlm_prob) {
            return Err(format!(
                "mlm_prob must be in [0, 1) (got {})",
                self.mlm_prob
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_precision_is_per_preset_on_cuda_and_fp32_on_cpu() {
        let auto = PrecisionSetting::parse("auto").unwrap();
        for p in [
            Preset::Tiny,
            Preset::Small,
            Preset::SmallSplit,
            Preset::Base,
        ] {
            assert_eq!(auto.resolve(p, false), Precision::Fp32, "{p:?} on cpu");
        }
        assert_eq!(auto.resolve(Preset::Small, true), Precision::Fp32);
        assert_eq!(auto.resolve(Preset::Base, true), Precision::Bf16);
        assert_eq!(auto.uniform(false), Some(Precision::Fp32));
        assert_eq!(auto.uniform(true), None);
        let bf16 = PrecisionSetting::parse("bf16").unwrap();
        assert_eq!(bf16.resolve(Preset::Small, false), Precision::Bf16);
        assert_eq!(bf16.uniform(true), Some(Precision::Bf16));
        assert_eq!(auto.rule(false, true), "auto: fp32 on cpu");
        assert_eq!(
            auto.rule(true, true),
            "auto: tiny=fp32+tf32, small=fp32+tf32, small-split=fp32+tf32, base=bf16 on cuda; \
             fp32 on cpu"
        );
        assert!(auto.rule(true, false).contains("small=fp32,"));
        assert_eq!(
            PrecisionSetting::parse("fp32").unwrap().rule(true, true),
            "fp32+tf32"
        );
        assert_eq!(
            PrecisionSetting::parse("fp32").unwrap().rule(false, true),
            "fp32"
        );
        assert!(PrecisionSetting::parse("fp16")
            .unwrap_err()
            .contains("auto, bf16 or fp32"));
    }

    #[test]
    fn task0_momentum_scales_to_the_task_length() {
        let mut m = MomentumConfig::default();
        assert_eq!(
            m.task0_coefficient(50),
            0.995,
            "off by default: the paper's m0"
        );
        m.reference_steps = 1000;
        let m50 = m.task0_coefficient(50);
        // Over 50 steps the momentum model moves as far as over 1,000 steps at 0.995.
        assert!((m50.powi(50) - 0.995f64.powi(1000)).abs() < 1e-12);
        assert!((m.task0_coefficient(1000) - 0.995).abs() < 1e-15);
        assert!(
            m.task0_coefficient(5000) > 0.995,
            "longer tasks move more slowly"
        );
    }
}
