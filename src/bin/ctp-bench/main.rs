//! `ctp-bench`: ctp's benchmarks (see bench/README.md).
//!
//! - `step`: training-step throughput per preset and batch size — steps/s, samples/s, peak RSS
//!   and milliseconds per part of the step; each (preset, batch) in its own child process so its
//!   peak RSS is its own. The measured step is a task ≥ 1 CTP step (all three models).
//! - `compare`: ctp's `small` step against the same step in eager PyTorch, in one invocation.
//! - `emojicl`: continual-learning quality through the daemon (module `emojicl`).
//! - `load` / `ingest`: the control plane under training load, and upload throughput.
mod cells;
mod emojicl;
mod emojicl_cli;
mod emojicl_rpc;
mod service;

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ctp::trainer::{
    Control, EngineConfig, ModelConfig, Preset, Sample, StepTimes, TrainConfig, TrainEvent,
    TrainOutcome, TrainRequest, TrainerHandle, VersionRef,
};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(about = "ctp benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Step throughput table (one child process per preset × batch).
    Step {
        #[arg(long, default_value = "tiny,small")]
        presets: String,
        #[arg(long, default_value = "32,64")]
        batches: String,
        /// Measured steps (after 2 warm-up steps).
        #[arg(long, default_value_t = 6)]
        steps: i64,
        /// Drift threshold (0 = the paper's sync every step).
        #[arg(long, default_value_t = 0.0)]
        threshold: f64,
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(long, default_value_t = 0)]
        threads: i32,
        /// Write the rows as JSON here too.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// ctp's `small` step against the same step in eager PyTorch (bench/pytorch_step.py), in
    /// one invocation, plus ctp with the drift-gated momentum sync.
    Compare {
        #[arg(long, default_value_t = 32)]
        batch: i64,
        #[arg(long, default_value_t = 6)]
        steps: i64,
        #[arg(long, default_value_t = 2)]
        threads: i32,
        /// Drift threshold for the gated run.
        #[arg(long, default_value_t = 0.02)]
        gated_threshold: f64,
        /// Python with torch 2.11 + safetensors + tokenizers.
        #[arg(long, env = "CTP_PYTHON", default_value = "python3")]
        python: String,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Continual-learning quality on EmojiCL through the daemon, one resumable cell per
    /// (method, seed): SeqFT, CTP (threshold 0), replay variants, drift-gated CTP, Joint, and
    /// the BatchNorm-policy ablation. Finished cells are skipped.
    Emojicl(emojicl_cli::EmojiclArgs),
    /// Control plane under load: GetTask latency and training throughput with N clients.
    Load {
        #[arg(long, default_value = "16,64")]
        clients: String,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Pause between a client's GetTask calls.
        #[arg(long, default_value_t = 250)]
        interval_ms: u64,
    },
    /// SubmitTask ingestion throughput (64 px PNGs, 224 px JPEGs).
    Ingest {
        #[arg(long, default_value_t = 2048)]
        png: usize,
        #[arg(long, default_value_t = 512)]
        jpeg: usize,
    },
    /// One measurement (used by `step`; prints one JSON row).
    StepOne {
        #[arg(long)]
        preset: String,
        #[arg(long)]
        batch: i64,
        #[arg(long)]
        steps: i64,
        #[arg(long)]
        threshold: f64,
        #[arg(long)]
        device: String,
        #[arg(long)]
        threads: i32,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Row {
    preset: String,
    batch: i64,
    device: String,
    threshold: f64,
    steps_per_sec: f64,
    samples_per_sec: f64,
    peak_rss_mib: f64,
    syncs: i64,
    measured_steps: i64,
    times: StepTimes,
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
fn samples(n: i64, size: i64) -> Vec<Sample> {
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

fn step_one(
    preset: &str,
    batch: i64,
    steps: i64,
    threshold: f64,
    device: &str,
    threads: i32,
) -> Result<Row> {
    let preset = Preset::parse(preset).context("unknown preset")?;
    let model = ModelConfig::preset(preset);
    let engine = TrainerHandle::start(EngineConfig {
        device: device.into(),
        threads,
        ..Default::default()
    })?;
    let dir = tempfile::tempdir()?;
    let mut train = TrainConfig {
        batch_size: batch,
        epochs: 1,
        ..Default::default()
    };
    train.momentum.threshold = threshold;
    let req = |n: i64, task_index: i64, parent: Option<VersionRef>, name: &str| TrainRequest {
        model: model.clone(),
        train: train.clone(),
        task_index,
        parent,
        resume: None,
        samples: samples(n, model.image_size),
        replay: Vec::new(),
        out_version: dir.path().join(format!("{name}.safetensors")),
        resume_path: dir.path().join(format!("{name}.resume")),
        control: Control::new_flag(),
    };
    // A one-step task 0 gives the parent θ_{t−1}, so the measured task runs every CTP term.
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let parent = match engine.train_blocking(req(batch, 0, None, "parent"), tx)? {
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
    let total = steps + 2;
    let outcome = engine.train_blocking(req(batch * total, 1, Some(parent), "measured"), tx)?;
    let syncs = match outcome {
        TrainOutcome::Completed { syncs, .. } => syncs.len() as i64,
        other => bail!("measured run did not complete: {other:?}"),
    };
    let mut times = StepTimes::default();
    let mut wall = 0.0;
    while let Ok(e) = rx.try_recv() {
        if let TrainEvent::Step(p) = e {
            if p.step > 2 {
                let t = &p.times;
                wall += t.forward_ms
                    + t.drift_ms
                    + t.sync_ms
                    + t.momentum_ms
                    + t.topology_ms
                    + t.backward_ms
                    + t.optimizer_ms;
                for (acc, v) in [
                    (&mut times.forward_ms, t.forward_ms),
                    (&mut times.drift_ms, t.drift_ms),
                    (&mut times.sync_ms, t.sync_ms),
                    (&mut times.momentum_ms, t.momentum_ms),
                    (&mut times.topology_ms, t.topology_ms),
                    (&mut times.backward_ms, t.backward_ms),
                    (&mut times.optimizer_ms, t.optimizer_ms),
                ] {
                    *acc += v / steps as f64;
                }
            }
        }
    }
    let sps = steps as f64 / (wall / 1e3);
    Ok(Row {
        preset: preset.as_str().into(),
        batch,
        device: engine.device.clone(),
        threshold,
        steps_per_sec: sps,
        samples_per_sec: sps * batch as f64,
        peak_rss_mib: peak_rss_mib(),
        syncs,
        measured_steps: steps,
        times,
    })
}

fn child_row(args: &[String]) -> Result<Row> {
    let out = Command::new(std::env::current_exe()?).args(args).output()?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(out.stdout.trim_ascii())?)
}

fn step_args(
    preset: &str,
    batch: i64,
    steps: i64,
    threshold: f64,
    device: &str,
    threads: i32,
) -> Vec<String> {
    [
        "step-one",
        "--preset",
        preset,
        "--batch",
        &batch.to_string(),
        "--steps",
        &steps.to_string(),
    ]
    .into_iter()
    .map(String::from)
    .chain([
        "--threshold".into(),
        threshold.to_string(),
        "--device".into(),
        device.into(),
        "--threads".into(),
        threads.to_string(),
    ])
    .collect()
}

fn compare(
    batch: i64,
    steps: i64,
    threads: i32,
    gated: f64,
    python: &str,
    json: Option<std::path::PathBuf>,
) -> Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/pytorch_step.py");
    let weights = ctp::trainer::EngineConfig::default().weights_dir;
    let out = Command::new(python)
        .args([
            script,
            &weights.to_string_lossy(),
            &batch.to_string(),
            &steps.to_string(),
            &threads.to_string(),
        ])
        .output()
        .context("running the PyTorch step")?;
    if !out.status.success() {
        bail!(
            "PyTorch step failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let torch: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii())?;
    let every = child_row(&step_args("small", batch, steps, 0.0, "cpu", threads))?;
    let gated_row = child_row(&step_args("small", batch, steps, gated, "cpu", threads))?;
    let torch_sps = torch["samples_per_sec"]
        .as_f64()
        .context("no samples_per_sec from PyTorch")?;
    println!("| implementation | momentum sync | samples/s | step ms | vs PyTorch | syncs |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| PyTorch eager {} | every step | {:.1} | {:.0} | 1.00x | - |",
        torch["torch"].as_str().unwrap_or(""),
        torch_sps,
        1e3 * batch as f64 / torch_sps
    );
    for (name, r) in [
        ("every step (threshold 0)", &every),
        (&*format!("drift-gated (threshold {gated})"), &gated_row),
    ] {
        println!(
            "| ctp | {name} | {:.1} | {:.0} | {:.2}x | {}/{} |",
            r.samples_per_sec,
            1e3 / r.steps_per_sec,
            r.samples_per_sec / torch_sps,
            r.syncs,
            r.measured_steps + 2
        );
    }
    if let Some(path) = json {
        let v =
            serde_json::json!({"pytorch": torch, "ctp_every_step": every, "ctp_gated": gated_row});
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!(
        "Machine: {cpu}, {cores} cores; date {}",
        chrono::Utc::now().format("%Y-%m-%d")
    )
}

#[allow(clippy::too_many_arguments)]
fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Load {
            clients,
            seconds,
            interval_ms,
        } => {
            let n: Vec<usize> = clients
                .split(',')
                .map(|x| x.parse())
                .collect::<Result<_, _>>()
                .context("clients")?;
            let table = tokio::runtime::Runtime::new()?.block_on(service::load(
                &n,
                seconds,
                interval_ms,
            ))?;
            println!("{}\n{table}", machine());
        }
        Cmd::Ingest { png, jpeg } => {
            let table = tokio::runtime::Runtime::new()?.block_on(service::ingest(png, jpeg))?;
            println!("{}\n{table}", machine());
        }
        Cmd::Emojicl(args) => {
            ctp::telemetry::init_tracing();
            emojicl_cli::run(&args)?;
        }
        Cmd::Compare {
            batch,
            steps,
            threads,
            gated_threshold,
            python,
            json,
        } => {
            compare(batch, steps, threads, gated_threshold, &python, json)?;
        }
        Cmd::StepOne {
            preset,
            batch,
            steps,
            threshold,
            device,
            threads,
        } => {
            let row = step_one(&preset, batch, steps, threshold, &device, threads)?;
            println!("{}", serde_json::to_string(&row)?);
        }
        Cmd::Step {
            presets,
            batches,
            steps,
            threshold,
            device,
            threads,
            json,
        } => {
            let exe = std::env::current_exe()?;
            let mut rows = Vec::new();
            println!(
                "| preset | batch | device | steps/s | samples/s | peak RSS MiB | fwd ms | bwd ms | momentum ms | TP ms | drift ms | sync ms | optim ms | syncs |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            for p in presets.split(',') {
                for b in batches.split(',') {
                    let out = Command::new(&exe)
                        .args([
                            "step-one",
                            "--preset",
                            p,
                            "--batch",
                            b,
                            "--steps",
                            &steps.to_string(),
                        ])
                        .args([
                            "--threshold",
                            &threshold.to_string(),
                            "--device",
                            &device,
                            "--threads",
                            &threads.to_string(),
                        ])
                        .output()?;
                    if !out.status.success() {
                        bail!("{p}/{b} failed: {}", String::from_utf8_lossy(&out.stderr));
                    }
                    let row: Row = serde_json::from_slice(out.stdout.trim_ascii())?;
                    let t = &row.times;
                    println!(
                        "| {} | {} | {} | {:.2} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {}/{} |",
                        row.preset, row.batch, row.device, row.steps_per_sec, row.samples_per_sec, row.peak_rss_mib,
                        t.forward_ms, t.backward_ms, t.momentum_ms, t.topology_ms, t.drift_ms, t.sync_ms, t.optimizer_ms,
                        row.syncs, row.measured_steps + 2
                    );
                    rows.push(row);
                }
            }
            if let Some(path) = json {
                std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
            }
        }
    }
    Ok(())
}
