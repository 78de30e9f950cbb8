//! `step`, `step-one` and `compare`: training-step throughput of a task ≥ 1 CTP step (all three
//! models), one child process per measurement so its peak memory is its own.
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use ctp::trainer::{
    Control, EngineConfig, ModelConfig, Preset, Sample, StepTimes, TrainConfig, TrainEvent,
    TrainOutcome, TrainRequest, TrainerHandle, VersionRef,
};
use serde::{Deserialize, Serialize};

use crate::gpumem::GpuPeak;

/// Settings of one measurement (the `step-one` flags; `step` and `compare` pass them on).
#[derive(Args, Debug, Clone)]
pub struct StepSettings {
    #[arg(long)]
    pub preset: String,
    #[arg(long)]
    pub batch: i64,
    /// Measured steps (after 2 warm-up steps).
    #[arg(long)]
    pub steps: i64,
    /// Drift threshold (0 = the paper's sync every step).
    #[arg(long)]
    pub threshold: f64,
    #[arg(long)]
    pub device: String,
    #[arg(long)]
    pub threads: i32,
    /// auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32.
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// Random weights with the real shapes (no weight files needed; throughput is the same).
    #[arg(long)]
    pub random_weights: bool,
    /// Time each part of the step (a device sync after each part).
    #[arg(long)]
    pub profile: bool,
}

impl StepSettings {
    fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "step-one",
            "--preset",
            &self.preset,
            "--batch",
            &self.batch.to_string(),
            "--steps",
            &self.steps.to_string(),
            "--threshold",
            &self.threshold.to_string(),
            "--device",
            &self.device,
            "--threads",
            &self.threads.to_string(),
            "--precision",
            &self.precision,
        ]
        .into_iter()
        .map(String::from)
        .collect();
        if self.random_weights {
            a.push("--random-weights".into());
        }
        if self.profile {
            a.push("--profile".into());
        }
        a
    }

    /// Runs this measurement in a child process and returns its row.
    pub fn run_child(&self) -> Result<Row> {
        let out = Command::new(std::env::current_exe()?)
            .args(self.args())
            .output()?;
        if !out.status.success() {
            bail!(
                "{} / batch {} failed: {}",
                self.preset,
                self.batch,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(out.stdout.trim_ascii())?)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Row {
    pub preset: String,
    pub batch: i64,
    pub device: String,
    pub precision: String,
    pub threshold: f64,
    pub steps_per_sec: f64,
    pub samples_per_sec: f64,
    pub peak_rss_mib: f64,
    /// Peak GPU memory of this process (CUDA only), and where it was read.
    pub peak_gpu_mib: Option<f64>,
    pub gpu_memory_source: Option<String>,
    pub syncs: i64,
    pub measured_steps: i64,
    /// Whether the parts were timed (`--profile`); else only `times.step_ms` is measured.
    pub profiled: bool,
    pub times: StepTimes,
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Deterministic noise images with varied captions (throughput does not depend on content).
pub fn samples(n: i64, size: i64) -> Vec<Sample> {
    let words = [
        "red", "smiling", "face", "dog", "flag", "blue", "car", "music", "heart", "tree",
    ];
    let mut x: u32 = 12345;
    (0..n)
        .map(|i| {
            let pixels = (0..size * size * 3)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let caption = (0..6)
                .map(|j| words[((i * 7 + j * 3) % 10) as usize])
                .collect::<Vec<_>>()
                .join(" ");
            Sample { pixels, caption }
        })
        .collect()
}

fn add_times(acc: &mut StepTimes, t: &StepTimes, w: f64) {
    for (a, v) in [
        (&mut acc.step_ms, t.step_ms),
        (&mut acc.forward_ms, t.forward_ms),
        (&mut acc.drift_ms, t.drift_ms),
        (&mut acc.sync_ms, t.sync_ms),
        (&mut acc.momentum_ms, t.momentum_ms),
        (&mut acc.topology_ms, t.topology_ms),
        (&mut acc.backward_ms, t.backward_ms),
        (&mut acc.optimizer_ms, t.optimizer_ms),
    ] {
        *a += v * w;
    }
}

/// One measurement in this process.
pub fn step_one(s: &StepSettings) -> Result<Row> {
    let preset = Preset::parse(&s.preset).context("unknown preset")?;
    let model = ModelConfig::preset(preset);
    let engine = TrainerHandle::start(EngineConfig {
        device: s.device.clone(),
        threads: s.threads,
        precision: s.precision.clone(),
        profile: s.profile,
        random_weights: s.random_weights,
        ..Default::default()
    })?;
    let gpu = engine.device.starts_with("cuda").then(GpuPeak::start);
    let dir = tempfile::tempdir()?;
    let mut train = TrainConfig {
        batch_size: s.batch,
        epochs: 1,
        ..Default::default()
    };
    train.momentum.threshold = s.threshold;
    let req = |n: i64, task_index: i64, parent: Option<VersionRef>, name: &str| TrainRequest {
        model: model.clone(),
        train: train.clone(),
        task_index,
        parent,
        resume: None,
        samples: samples(n, model.image_size),
        out_version: dir.path().join(format!("{name}.safetensors")),
        replay: Vec::new(),
        probe: Vec::new(),
        resume_path: dir.path().join(format!("{name}.resume")),
        control: Control::new_flag(),
    };
    // A one-step task 0 gives the parent θ_{t−1}, so the measured task runs every CTP term.
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let parent = match engine.train_blocking(req(s.batch, 0, None, "parent"), tx)? {
        TrainOutcome::Completed {
            version_path,
            sha256,
            ..
        } => VersionRef {
            path: version_path,
            sha256,
        },
        other => bail!("parent run did not complete: {other:?}"),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let total = s.steps + 2;
    let outcome = engine.train_blocking(req(s.batch * total, 1, Some(parent), "measured"), tx)?;
    let syncs = match outcome {
        TrainOutcome::Completed { syncs, .. } => syncs.len() as i64,
        other => bail!("measured run did not complete: {other:?}"),
    };
    let mut times = StepTimes::default();
    while let Ok(e) = rx.try_recv() {
        if let TrainEvent::Step(p) = e {
            if p.step > 2 {
                add_times(&mut times, &p.times, 1.0 / s.steps as f64);
            }
        }
    }
    let sps = 1e3 / times.step_ms;
    let peak_gpu_mib = gpu.and_then(GpuPeak::finish);
    Ok(Row {
        preset: preset.as_str().into(),
        batch: s.batch,
        device: engine.device.clone(),
        precision: engine.precision.clone(),
        threshold: s.threshold,
        steps_per_sec: sps,
        samples_per_sec: sps * s.batch as f64,
        peak_rss_mib: peak_rss_mib(),
        gpu_memory_source: peak_gpu_mib.map(|_| crate::gpumem::SOURCE.to_string()),
        peak_gpu_mib,
        syncs,
        measured_steps: s.steps,
        profiled: s.profile,
        times,
    })
}

/// Markdown header of [`table_row`].
pub const TABLE_HEAD: &str = "| preset | batch | device | precision | steps/s | samples/s | peak RSS MiB | peak GPU MiB | fwd ms | bwd ms | momentum ms | TP ms | drift ms | sync ms | optim ms | drift+sync % | syncs |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

/// One Markdown row; part columns are `-` unless the row was profiled.
pub fn table_row(r: &Row) -> String {
    let t = &r.times;
    let part = |v: f64, digits: usize| {
        if r.profiled {
            format!("{v:.digits$}")
        } else {
            "-".into()
        }
    };
    let share = 100.0 * (t.drift_ms + t.sync_ms) / t.step_ms;
    format!(
        "| {} | {} | {} | {} | {:.2} | {:.1} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
        r.preset,
        r.batch,
        r.device,
        r.precision,
        r.steps_per_sec,
        r.samples_per_sec,
        r.peak_rss_mib,
        r.peak_gpu_mib.map_or("-".into(), |m| format!("{m:.0}")),
        part(t.forward_ms, 0),
        part(t.backward_ms, 0),
        part(t.momentum_ms, 0),
        part(t.topology_ms, 0),
        part(t.drift_ms, 1),
        part(t.sync_ms, 1),
        part(t.optimizer_ms, 0),
        part(share, 1),
        r.syncs,
        r.measured_steps + 2
    )
}

/// Settings of `compare`.
#[derive(Args, Debug)]
pub struct CompareSettings {
    /// small or base.
    #[arg(long, default_value = "small")]
    pub preset: String,
    #[arg(long, default_value_t = 32)]
    pub batch: i64,
    #[arg(long, default_value_t = 6)]
    pub steps: i64,
    #[arg(long, default_value_t = 2)]
    pub threads: i32,
    /// cpu, cuda or cuda:N (both implementations run there).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// auto (bf16 on CUDA, fp32 on CPU), bf16 (PyTorch: bf16 autocast) or fp32.
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// Random weights with the real shapes, in both implementations.
    #[arg(long)]
    pub random_weights: bool,
    /// Drift threshold for the gated run.
    #[arg(long = "gated-threshold", default_value_t = 0.02)]
    pub gated: f64,
    /// Python with torch 2.11 + safetensors + tokenizers.
    #[arg(long, env = "CTP_PYTHON", default_value = "python3")]
    pub python: String,
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// ctp's step against the same step in eager PyTorch (bench/pytorch_step.py), in one
/// invocation, plus ctp with the drift-gated momentum sync. Prints a Markdown table.
pub fn compare(c: &CompareSettings) -> Result<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/pytorch_step.py");
    let script = std::env::var("CTP_PYTORCH_STEP").unwrap_or_else(|_| script.into());
    let weights = EngineConfig::default().weights_dir;
    if c.device == "auto" {
        bail!("compare needs an explicit --device (cpu, cuda or cuda:N)");
    }
    let precision = match c.precision.as_str() {
        "auto" if c.device.starts_with("cuda") => "bf16",
        "auto" => "fp32",
        p => p,
    };
    let mut cmd = Command::new(&c.python);
    cmd.arg(&script)
        .arg(&weights)
        .args([
            c.batch.to_string(),
            c.steps.to_string(),
            c.threads.to_string(),
        ])
        .args(["--preset", &c.preset, "--precision", precision])
        .args(["--device", &c.device]);
    if c.random_weights {
        cmd.arg("--random-weights");
    }
    let out = cmd.output().context("running the PyTorch step")?;
    if !out.status.success() {
        bail!(
            "PyTorch step failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let torch: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii())?;
    let base = StepSettings {
        preset: c.preset.clone(),
        batch: c.batch,
        steps: c.steps,
        threshold: 0.0,
        device: c.device.clone(),
        threads: c.threads,
        precision: precision.into(),
        random_weights: c.random_weights,
        profile: false,
    };
    let every = base.run_child()?;
    let gated_row = StepSettings {
        threshold: c.gated,
        ..base
    }
    .run_child()?;
    let torch_sps = torch["samples_per_sec"]
        .as_f64()
        .context("no samples_per_sec from PyTorch")?;
    let mut md = format!(
        "`{}` preset, batch {}, {} {}, {} measured steps\n\n| implementation | momentum sync | samples/s | step ms | vs PyTorch | syncs |\n|---|---|---|---|---|---|\n",
        c.preset, c.batch, every.device, precision, c.steps
    );
    md += &format!(
        "| PyTorch eager {} | every step | {:.1} | {:.0} | 1.00x | - |\n",
        torch["torch"].as_str().unwrap_or(""),
        torch_sps,
        1e3 * c.batch as f64 / torch_sps
    );
    for (name, r) in [
        ("every step (threshold 0)".to_string(), &every),
        (format!("drift-gated (threshold {})", c.gated), &gated_row),
    ] {
        md += &format!(
            "| ctp | {name} | {:.1} | {:.0} | {:.2}x | {}/{} |\n",
            r.samples_per_sec,
            1e3 / r.steps_per_sec,
            r.samples_per_sec / torch_sps,
            r.syncs,
            r.measured_steps + 2
        );
    }
    if let Some(path) = &c.json {
        let v =
            serde_json::json!({"pytorch": torch, "ctp_every_step": every, "ctp_gated": gated_row});
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(md)
}
