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

pub use crate::compare::{compare, CompareSettings};
use crate::gpumem::GpuPeak;

/// Settings of one measurement (the `step-one` flags; `step` and `compare` pass them on).
#[derive(Args, Debug, Clone)]
pub struct StepSettings {
    #[arg(long)]
    pub preset: String,
    #[arg(long)]
    pub batch: i64,
    /// Measured steps (after the warm-up steps), per repetition.
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

/// How `compare-one` repeats a measurement (`step-one` uses the defaults).
#[derive(Args, Debug, Clone)]
pub struct Repeat {
    /// Unmeasured steps at the start of each measured task.
    #[arg(long, default_value_t = 2)]
    pub warmup: i64,
    /// Measured tasks in this process (each `warmup` + `steps` steps); the row's samples/s is
    /// their median.
    #[arg(long, default_value_t = 1)]
    pub reps: i64,
    /// Also measure this threshold in the same process, each repetition paired with one of
    /// `--threshold` (alternating which runs first); the result is the row's `paired`.
    #[arg(long)]
    pub paired_threshold: Option<f64>,
    /// Exact fp32 matmuls on CUDA (`engine.tf32 = false`; default: TF32 on, as ctpd).
    #[arg(long)]
    pub no_tf32: bool,
}

impl Default for Repeat {
    fn default() -> Self {
        Repeat {
            warmup: 2,
            reps: 1,
            paired_threshold: None,
            no_tf32: false,
        }
    }
}

impl Repeat {
    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--warmup".to_string(),
            self.warmup.to_string(),
            "--reps".into(),
            self.reps.to_string(),
        ];
        if self.no_tf32 {
            a.push("--no-tf32".into());
        }
        if let Some(t) = self.paired_threshold {
            a.extend(["--paired-threshold".into(), t.to_string()]);
        }
        a
    }
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
        self.run_child_repeated(None)
    }

    /// Runs this measurement in a child process (`compare-one` with `repeat`, else
    /// `step-one`) and returns its row.
    pub fn run_child_repeated(&self, repeat: Option<&Repeat>) -> Result<Row> {
        let mut args = self.args();
        if let Some(r) = repeat {
            args[0] = "compare-one".into();
            args.extend(r.args());
        }
        let out = Command::new(std::env::current_exe()?).args(args).output()?;
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
    /// Momentum syncs over every step of the measured tasks (warm-up included).
    pub syncs: i64,
    /// Measured steps per repetition.
    pub measured_steps: i64,
    /// Unmeasured steps at the start of each measured task.
    pub warmup_steps: i64,
    /// Every step of the measured tasks (reps × (warm-up + measured)): the denominator of `syncs`.
    pub total_steps: i64,
    /// Whether TF32 was allowed for fp32 matmuls (CUDA with `engine.tf32`; never on a CPU).
    pub tf32: bool,
    /// Samples/s of each repetition; `samples_per_sec` is their median.
    pub rep_samples_per_sec: Vec<f64>,
    /// Every measured step's wall time, in order.
    pub step_ms: Vec<f64>,
    /// Whether the parts were timed (`--profile`); else only `times.step_ms` is measured.
    pub profiled: bool,
    /// Mean times over the measured steps.
    pub times: StepTimes,
    /// The `--paired-threshold` measurement from the same process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired: Option<Box<Row>>,
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

/// What the measured tasks of one threshold gave (accumulated over repetitions).
#[derive(Default)]
struct Measured {
    syncs: i64,
    rep_sps: Vec<f64>,
    step_ms: Vec<f64>,
    times: StepTimes,
}

/// One measurement in this process: a one-step task 0 (the parent), then `reps` measured
/// tasks ≥ 1 per threshold (two thresholds with `paired_threshold`, alternating which runs
/// first in each repetition).
pub fn step_one(s: &StepSettings) -> Result<Row> {
    measure(s, &Repeat::default())
}

/// [`step_one`] with repetitions, a paired threshold and the TF32 setting of `r`.
pub fn measure(s: &StepSettings, r: &Repeat) -> Result<Row> {
    if s.steps < 1 || r.reps < 1 || r.warmup < 0 {
        bail!("--steps and --reps must be >= 1 and --warmup >= 0");
    }
    let preset = Preset::parse(&s.preset).context("unknown preset")?;
    let model = ModelConfig::preset(preset);
    let engine = TrainerHandle::start(EngineConfig {
        device: s.device.clone(),
        threads: s.threads,
        precision: s.precision.clone(),
        profile: s.profile,
        random_weights: s.random_weights,
        tf32: !r.no_tf32,
        ..Default::default()
    })?;
    let gpu = engine.device.starts_with("cuda").then(GpuPeak::start);
    let dir = tempfile::tempdir()?;
    let train = TrainConfig {
        batch_size: s.batch,
        epochs: 1,
        ..Default::default()
    };
    let req = |n: i64, task_index: i64, parent: Option<VersionRef>, threshold: f64, name: &str| {
        let mut train = train.clone();
        train.momentum.threshold = threshold;
        TrainRequest {
            model: model.clone(),
            train,
            task_index,
            parent,
            resume: None,
            samples: samples(n, model.image_size),
            out_version: dir.path().join(format!("{name}.safetensors")),
            replay: Vec::new(),
            probe: Vec::new(),
            resume_path: dir.path().join(format!("{name}.resume")),
            control: Control::new_flag(),
        }
    };
    // A one-step task 0 gives the parent θ_{t−1}, so the measured task runs every CTP term.
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let parent = match engine.train_blocking(req(s.batch, 0, None, 0.0, "parent"), tx)? {
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
    let total = r.warmup + s.steps;
    let thresholds: Vec<f64> = std::iter::once(s.threshold)
        .chain(r.paired_threshold)
        .collect();
    let mut measured: Vec<Measured> = thresholds.iter().map(|_| Measured::default()).collect();
    for rep in 0..r.reps {
        let mut order: Vec<usize> = (0..thresholds.len()).collect();
        if rep % 2 == 1 {
            order.reverse();
        }
        for k in order {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let name = format!("measured-{rep}-{k}");
            let task = req(
                s.batch * total,
                1,
                Some(parent.clone()),
                thresholds[k],
                &name,
            );
            let m = &mut measured[k];
            m.syncs += match engine.train_blocking(task, tx)? {
                TrainOutcome::Completed { syncs, .. } => syncs.len() as i64,
                other => bail!("measured run did not complete: {other:?}"),
            };
            let mut ms = Vec::new();
            while let Ok(e) = rx.try_recv() {
                if let TrainEvent::Step(p) = e {
                    if p.step > r.warmup {
                        add_times(&mut m.times, &p.times, 1.0 / (s.steps * r.reps) as f64);
                        ms.push(p.times.step_ms);
                    }
                }
            }
            if ms.len() as i64 != s.steps {
                bail!("expected {} measured steps, got {}", s.steps, ms.len());
            }
            m.rep_sps
                .push(1e3 * s.batch as f64 * ms.len() as f64 / ms.iter().sum::<f64>());
            m.step_ms.extend(ms);
        }
    }
    let peak_gpu_mib = gpu.and_then(GpuPeak::finish);
    let precision = engine.precision_for(preset.as_str());
    let tf32 = !r.no_tf32 && engine.device.starts_with("cuda") && precision == "fp32";
    let mut rows = thresholds.iter().zip(measured).map(|(&threshold, m)| {
        let samples_per_sec = crate::compare::Spread::of(&m.rep_sps).map_or(f64::NAN, |x| x.median);
        Row {
            preset: preset.as_str().into(),
            batch: s.batch,
            device: engine.device.clone(),
            precision: precision.clone(),
            threshold,
            steps_per_sec: samples_per_sec / s.batch as f64,
            samples_per_sec,
            peak_rss_mib: peak_rss_mib(),
            gpu_memory_source: peak_gpu_mib.map(|_| crate::gpumem::SOURCE.to_string()),
            peak_gpu_mib,
            syncs: m.syncs,
            measured_steps: s.steps,
            warmup_steps: r.warmup,
            total_steps: r.reps * total,
            tf32,
            rep_samples_per_sec: m.rep_sps,
            step_ms: m.step_ms,
            profiled: s.profile,
            times: m.times,
            paired: None,
        }
    });
    let mut first = rows.next().context("no measurement")?;
    first.paired = rows.next().map(Box::new);
    Ok(first)
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
        r.total_steps
    )
}
