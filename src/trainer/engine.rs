//! The engine thread: owns the device, the tokenizer and every tensor; serves one command at a
//! time. A panic while serving a command fails that command only.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc::Receiver;

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::config::PrecisionSetting;
use super::data::{TaskTensors, TextTokenizer};
use super::model::CtpModel;
use super::probe::ProbeSet;
use super::session::{RunOptions, Session};
use super::{
    eval, Command, Embeddings, EvalSet, ModelConfig, Sample, TrainerError, TrainerHandle,
    VersionRef,
};

/// Engine settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N".
    pub device: String,
    /// libtorch intra-op CPU threads (0 = libtorch's default).
    pub threads: i32,
    /// Folder with `minilm/{tokenizer.json,model.safetensors}` and `efficientnet-lite0.safetensors`.
    pub weights_dir: PathBuf,
    /// "auto", "bf16" or "fp32". "auto" is per preset: on CUDA fp32 (TF32 matmuls when
    /// `tf32` is on) for `tiny`, `small` and `small-split`, bf16 for `base`; fp32 on a CPU
    /// ([`PrecisionSetting`]). Each version records the precision it trained in.
    #[serde(default = "auto")]
    pub precision: String,
    /// Time each part of every step (a device sync after each part; slows a GPU down).
    #[serde(default)]
    pub profile: bool,
    /// Initialise the `small` preset randomly instead of loading its pretrained weights (same
    /// shapes; benchmarks on machines without the weight files).
    #[serde(default)]
    pub random_weights: bool,
    /// Let fp32 matmuls use TF32 tensor cores on CUDA (cuDNN convolutions already may, as in
    /// PyTorch). Off = exact fp32 matmuls.
    #[serde(default = "yes")]
    pub tf32: bool,
    /// Under bf16: keep each weight's bf16 copy for a whole optimizer step instead of casting
    /// it at every use (the online model's copies are cast once per step, tracked by autograd;
    /// the momentum and reference models' copies live in one bf16 buffer refreshed by one
    /// kernel after each sync). No effect under fp32. Off by default until measured on a GPU
    /// (issue #27, bench/results/levers.md). Its default is `CTP__ENGINE__BF16_WEIGHT_CACHE`
    /// when that is `true` or `false` ([`lever_default`]).
    #[serde(default = "bf16_weight_cache_default")]
    pub bf16_weight_cache: bool,
    /// Run the convolutional tower (`small`'s EfficientNet-Lite0) in channels-last memory
    /// format. Same values up to summation order. No effect on ViT presets. Its default is
    /// `CTP__ENGINE__CHANNELS_LAST` when that is `true` or `false`.
    #[serde(default = "channels_last_default")]
    pub channels_last: bool,
}

/// The default of a speed lever: off, unless the environment variable `var` (the name ctpd's
/// settings read, `CTP__ENGINE__<KEY>`) says `true`. Programs that build an [`EngineConfig`] in
/// code from `..Default::default()` (ctp-bench's `step-one` children) so follow the same
/// variables as ctpd, and a benchmark sweep sets a lever by its environment alone.
pub fn lever_default(var: &str) -> bool {
    parse_lever(std::env::var(var).ok().as_deref())
}

/// `Some("true")` is on; anything else (unset, `false`, a typo) is off. ctpd itself rejects a
/// value that is not a boolean when it loads its settings.
fn parse_lever(v: Option<&str>) -> bool {
    v.map(str::trim) == Some("true")
}

fn bf16_weight_cache_default() -> bool {
    lever_default("CTP__ENGINE__BF16_WEIGHT_CACHE")
}

fn channels_last_default() -> bool {
    lever_default("CTP__ENGINE__CHANNELS_LAST")
}

fn yes() -> bool {
    true
}

fn auto() -> String {
    "auto".into()
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            device: "auto".into(),
            threads: 0,
            weights_dir: default_weights_dir(),
            precision: auto(),
            profile: false,
            random_weights: false,
            tf32: true,
            bf16_weight_cache: bf16_weight_cache_default(),
            channels_last: channels_last_default(),
        }
    }
}

/// `$CTP_ASSETS/weights`, else `~/.cache/ctp/assets/weights` (where scripts/setup-data.sh installs).
pub fn default_weights_dir() -> PathBuf {
    if let Ok(a) = std::env::var("CTP_ASSETS") {
        return PathBuf::from(a).join("weights");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".cache/ctp/assets/weights")
}

fn parse_device(s: &str) -> Result<Device, TrainerError> {
    match s {
        "auto" | "" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| {
                TrainerError::Input(format!(
                    "device must be auto, cpu, cuda or cuda:N (got {other:?})"
                ))
            }),
    }
}

/// Whether this process has libtorch's CUDA backend loaded (it registers CUDA at load time).
fn cuda_backend_loaded() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.contains("libtorch_cuda.so"))
        .unwrap_or(false)
}

/// Fails with one line naming the cause when a CUDA device was asked for and cannot be used.
fn check_cuda(d: Device, asked: &str) -> Result<(), TrainerError> {
    let Device::Cuda(i) = d else { return Ok(()) };
    let count = tch::Cuda::device_count();
    let cause = if !cuda_backend_loaded() {
        "this binary runs a torch without its CUDA backend (libtorch_cuda.so is not loaded); \
         build against a CUDA torch"
            .to_string()
    } else if count == 0 || !tch::Cuda::is_available() {
        "CUDA is unavailable: no NVIDIA driver or GPU is visible to this process (check \
         nvidia-smi and CUDA_VISIBLE_DEVICES)"
            .to_string()
    } else if i >= count as usize {
        format!("only {count} CUDA device(s) are visible")
    } else {
        return Ok(());
    };
    Err(TrainerError::Input(format!("device {asked:?}: {cause}")))
}

fn device_name(d: Device) -> String {
    match d {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

struct Engine {
    device: Device,
    /// `engine.precision`, resolved per task (its preset) into `opts.precision`.
    precision: PrecisionSetting,
    tok: TextTokenizer,
    weights: PathBuf,
    /// The last version loaded for evaluation/embedding (reloading a model per call is wasteful).
    cached: Option<(VersionRef, ModelConfig, CtpModel)>,
    opts: RunOptions,
}

pub(super) fn spawn(cfg: EngineConfig) -> Result<TrainerHandle, TrainerError> {
    if cfg.tf32 {
        // libtorch reads this once, at the first cuBLAS matmul (tch has no setter for
        // `allow_tf32`); the engine has not touched CUDA yet.
        std::env::set_var("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "1");
    }
    let device = parse_device(&cfg.device)?;
    check_cuda(device, &cfg.device)?;
    let setting = PrecisionSetting::parse(&cfg.precision).map_err(TrainerError::Input)?;
    let cuda = device.is_cuda();
    let tok = TextTokenizer::load(&cfg.weights_dir)?;
    let (tx, rx) = std::sync::mpsc::channel::<Command>();
    let name = device_name(device);
    let opts = RunOptions {
        // Replaced per task by the preset's precision.
        precision: setting.resolve(super::Preset::Tiny, cuda),
        profile: cfg.profile,
        random_weights: cfg.random_weights,
        bf16_weight_cache: cfg.bf16_weight_cache,
        channels_last: cfg.channels_last,
    };
    std::thread::Builder::new()
        .name("ctp-engine".into())
        .spawn(move || {
            if cfg.threads > 0 {
                tch::set_num_threads(cfg.threads);
            }
            let mut engine = Engine {
                device,
                precision: setting,
                tok,
                weights: cfg.weights_dir,
                cached: None,
                opts,
            };
            engine.serve(rx);
        })
        .map_err(|e| TrainerError::Torch(format!("cannot start the engine thread: {e}")))?;
    Ok(TrainerHandle {
        tx,
        device: name,
        precision: setting
            .uniform(cuda)
            .map_or("auto", |p| p.as_str())
            .to_string(),
        precision_rule: setting.rule(cuda, cfg.tf32),
        setting,
    })
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs `f`, turning a panic into `TrainerError::Panic`.
fn guarded<T>(f: impl FnOnce() -> Result<T, TrainerError>) -> Result<T, TrainerError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(TrainerError::Panic(panic_message(p))))
}

/// libtorch's default CPU generator is process-wide, so two engines in one process (tests,
/// benchmarks) would interleave their seeded random streams. Engines therefore take turns, one
/// command at a time; the daemon runs a single engine, which never waits here.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Engine {
    fn serve(&mut self, rx: Receiver<Command>) {
        while let Ok(cmd) = rx.recv() {
            let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match cmd {
                Command::Train { req, events, reply } => {
                    let emit = |e| {
                        let _ = events.send(e); // a gone listener never stops training
                    };
                    let r = guarded(|| {
                        let all = super::replay::combine(&req.samples, &req.replay);
                        let data = self.tensors(&all, &req.model)?;
                        let probe = if req.probe.is_empty() {
                            None
                        } else {
                            Some(ProbeSet {
                                data: self
                                    .tensors(&req.probe, &req.model)
                                    .map_err(|e| TrainerError::Input(format!("probe set: {e}")))?,
                                captions: req.probe.iter().map(|s| s.caption.clone()).collect(),
                            })
                        };
                        let opts = RunOptions {
                            precision: self
                                .precision
                                .resolve(req.model.preset, self.device.is_cuda()),
                            ..self.opts
                        };
                        let mut s = Session::start(
                            &req,
                            data,
                            self.tok.vocab,
                            self.device,
                            &self.weights,
                            &opts,
                        )?;
                        s.run(&req, probe.as_ref(), &emit)
                    });
                    let _ = reply.send(r);
                }
                Command::Evaluate {
                    model,
                    version,
                    sets,
                    reply,
                } => {
                    let _ = reply.send(guarded(|| self.evaluate(&model, &version, &sets)));
                }
                Command::Embed {
                    model,
                    version,
                    images,
                    texts,
                    reply,
                } => {
                    let _ = reply.send(guarded(|| self.embed(&model, &version, &images, &texts)));
                }
                Command::Verify {
                    model,
                    version,
                    reply,
                } => {
                    let _ = reply.send(guarded(|| {
                        eval::load_online(&model, &version, self.tok.vocab, self.device).map(|_| ())
                    }));
                }
            }
        }
    }

    fn tensors(&self, samples: &[Sample], cfg: &ModelConfig) -> Result<TaskTensors, TrainerError> {
        if samples.is_empty() {
            return Err(TrainerError::Input("no samples".into()));
        }
        TaskTensors::build(
            samples,
            cfg.image_size,
            cfg.max_tokens,
            &self.tok,
            self.device,
        )
    }

    fn model(&mut self, cfg: &ModelConfig, v: &VersionRef) -> Result<&CtpModel, TrainerError> {
        let hit = matches!(&self.cached, Some((cv, cc, _)) if cv == v && cc == cfg);
        if !hit {
            let m = eval::load_online(cfg, v, self.tok.vocab, self.device)?;
            self.cached = Some((v.clone(), cfg.clone(), m));
        }
        Ok(&self.cached.as_ref().expect("filled above").2)
    }

    fn evaluate(
        &mut self,
        cfg: &ModelConfig,
        v: &VersionRef,
        sets: &[EvalSet],
    ) -> Result<super::EvalReport, TrainerError> {
        let data = sets
            .iter()
            .map(|s| {
                self.tensors(&s.samples, cfg)
                    .map(|t| (s.task_id, t))
                    .map_err(|e| {
                        TrainerError::Input(format!("eval set of task {}: {e}", s.task_id))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let m = self.model(cfg, v)?;
        eval::evaluate(m, &data)
    }

    fn embed(
        &mut self,
        cfg: &ModelConfig,
        v: &VersionRef,
        images: &[Vec<u8>],
        texts: &[String],
    ) -> Result<Embeddings, TrainerError> {
        let size = cfg.image_size;
        let px = (size * size * 3) as usize;
        if let Some(i) = images.iter().position(|p| p.len() != px) {
            return Err(TrainerError::Input(format!(
                "image {i}: expected {size}x{size}x3 pixels"
            )));
        }
        let (ids, mask) = self.tok.encode(texts, cfg.max_tokens)?;
        let device = self.device;
        let m = self.model(cfg, v)?;
        let rows = |t: Tensor| -> Result<Vec<Vec<f32>>, TrainerError> {
            let t = t.to_device(Device::Cpu).contiguous();
            let dim = t.size()[1] as usize;
            let flat = Vec::<f32>::try_from(t.view([-1]))?;
            Ok(flat.chunks(dim).map(|c| c.to_vec()).collect())
        };
        tch::no_grad(|| {
            let images_out = if images.is_empty() {
                Vec::new()
            } else {
                let flat: Vec<u8> = images.concat();
                let x = super::model::images_to_tensor(&flat, images.len() as i64, size, device);
                rows(m.image_feature(&x))?
            };
            let texts_out = if texts.is_empty() {
                Vec::new()
            } else {
                rows(m.text_feature(&ids.to_device(device), &mask.to_device(device), false))?
            };
            Ok(Embeddings {
                images: images_out,
                texts: texts_out,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_fails_the_command_not_the_engine() {
        let r: Result<(), TrainerError> = guarded(|| panic!("boom in a step"));
        assert!(matches!(r, Err(TrainerError::Panic(m)) if m.contains("boom in a step")));
        assert_eq!(guarded(|| Ok::<_, TrainerError>(7)).unwrap(), 7);
    }

    #[test]
    fn levers_are_on_only_when_their_variable_says_true() {
        assert!(parse_lever(Some("true")) && parse_lever(Some(" true\n")));
        for off in [None, Some("false"), Some(""), Some("1"), Some("yes")] {
            assert!(!parse_lever(off), "{off:?}");
        }
    }

    #[test]
    fn devices_parse_with_precise_errors() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device("cuda:1").unwrap(), Device::Cuda(1));
        assert!(parse_device("tpu")
            .unwrap_err()
            .to_string()
            .contains("auto, cpu, cuda or cuda:N"));
    }

    #[test]
    fn cpu_needs_no_cuda_and_a_missing_gpu_is_named() {
        assert!(check_cuda(Device::Cpu, "cpu").is_ok());
        if !tch::Cuda::is_available() {
            let e = check_cuda(Device::Cuda(0), "cuda").unwrap_err().to_string();
            assert!(e.starts_with("device \"cuda\": "), "{e}");
            assert!(e.contains("CUDA") && !e.contains('\n'), "{e}");
        }
    }
}
