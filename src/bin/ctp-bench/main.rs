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
    Emojicl(EmojiclArgs),
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

#[derive(clap::Args)]
struct EmojiclArgs {
    /// Training samples per task (0 = every emoji of the category).
    #[arg(long, default_value_t = 1000)]
    max_train: usize,
    /// Evaluation samples per task (0 = every base emoji of the category).
    #[arg(long, default_value_t = 0)]
    max_eval: usize,
    #[arg(long, default_value_t = 10)]
    epochs: u32,
    #[arg(long, default_value_t = 32)]
    batch: u32,
    #[arg(long, default_value_t = 3e-4)]
    lr: f64,
    /// Seeds (data subset, caption templates, data order, init of the heads).
    #[arg(long, default_value = "0,1,2")]
    seeds: String,
    /// Drift thresholds of the gated runs.
    #[arg(long, default_value = "0.01,0.02,0.05")]
    thresholds: String,
    #[arg(long, default_value_t = 1)]
    drift_check_every: u32,
    /// Gated runs: also these drift-check intervals (rows "CTP gated <t> every <n>").
    #[arg(long, default_value = "")]
    gated_check_every: String,
    /// Comma-separated, in run order, from: seqft, ctp, joint, seqft-replay, ctp-replay,
    /// gated, fidelity (issue #10 item 2 variants of CTP), bn-train.
    #[arg(long, default_value = "ctp,seqft,joint,seqft-replay,ctp-replay")]
    methods: String,
    /// Model preset (small, or small-split for the fusion-layout study).
    #[arg(long, default_value = "small")]
    preset: String,
    /// Weight of both topology-preservation terms for CTP runs.
    #[arg(long, default_value_t = 1.0)]
    tp_weight: f64,
    /// Weight of the MLM and MLM-distillation terms (all methods).
    #[arg(long, default_value_t = 1.0)]
    mlm_weight: f64,
    /// Weight of CTP's momentum terms (queue ITC, MLM distillation).
    #[arg(long, default_value_t = 1.0)]
    momentum_weight: f64,
    /// Replay methods: samples of each earlier task per batch.
    #[arg(long, default_value_t = 0)]
    replay_per_task: u32,
    /// Replay methods: replayed samples as a fraction of the batch.
    #[arg(long, default_value_t = 0.25)]
    replay_fraction: f64,
    /// EmojiCL task indices (default all nine).
    #[arg(long, default_value = "0,1,2,3,4,5,6,7,8")]
    tasks: String,
    #[arg(long, default_value = "auto")]
    device: String,
    /// libtorch intra-op threads of the daemon (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// Only rebuild emojicl.{json,md} from the finished cells.
    #[arg(long)]
    summarize_only: bool,
    /// Also write a `ctpctl report` per cell under `<out>/emojicl/reports` (about 1 MB each).
    #[arg(long)]
    reports: bool,
    /// Folder for results (summary, reports); cells go to `<out>/emojicl/cells`.
    #[arg(long, default_value = "bench/results")]
    out: std::path::PathBuf,
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
fn emojicl_methods(a: &EmojiclArgs) -> Result<Vec<emojicl::Method>> {
    let mk = |name: &str, method: &str, bn: &str, threshold: f64| emojicl::Method {
        name: name.into(),
        method: method.into(),
        bn: bn.into(),
        threshold,
        joint: false,
        tp_weight: if method == "ctp" { a.tp_weight } else { 1.0 },
        mlm_weight: a.mlm_weight,
        momentum_weight: if method == "ctp" {
            a.momentum_weight
        } else {
            1.0
        },
        replay_per_task: 0,
        replay_fraction: 0.0,
        check_every: None,
        task0_plain: false,
        queue_size: None,
    };
    let replay = |mut m: emojicl::Method| {
        m.replay_per_task = a.replay_per_task;
        m.replay_fraction = if a.replay_per_task > 0 {
            0.0
        } else {
            a.replay_fraction
        };
        m
    };
    let mut list = Vec::new();
    for pick in a.methods.split(',') {
        match pick {
            "seqft" => list.push(mk("SeqFT", "seqft", "frozen", 0.0)),
            "ctp" => list.push(mk("CTP", "ctp", "frozen", 0.0)),
            "seqft-replay" => list.push(replay(mk("SeqFT+replay", "seqft", "frozen", 0.0))),
            "ctp-replay" => list.push(replay(mk("CTP+replay", "ctp", "frozen", 0.0))),
            "joint" => list.push(emojicl::Method {
                joint: true,
                ..mk("Joint", "seqft", "frozen", 0.0)
            }),
            "gated" => {
                for t in a.thresholds.split(',') {
                    let v: f64 = t.parse().context("thresholds")?;
                    list.push(mk(&format!("CTP gated {t}"), "ctp", "frozen", v));
                    for n in a.gated_check_every.split(',').filter(|n| !n.is_empty()) {
                        let every: u32 = n.parse().context("gated-check-every")?;
                        list.push(emojicl::Method {
                            check_every: Some(every),
                            ..mk(&format!("CTP gated {t} every {n}"), "ctp", "frozen", v)
                        });
                    }
                }
            }
            "fidelity" => {
                // Issue #10 item 2: one change from `CTP` each.
                list.push(emojicl::Method {
                    task0_plain: true,
                    ..mk("CTP, paper-era task 0", "ctp", "frozen", 0.0)
                });
                list.push(emojicl::Method {
                    queue_size: Some(i64::from(a.batch) * 8),
                    ..mk(&format!("CTP, queue {}", a.batch * 8), "ctp", "frozen", 0.0)
                });
                for w in [0.1, 0.3] {
                    list.push(emojicl::Method {
                        tp_weight: w,
                        ..mk(&format!("CTP, TP weight {w}"), "ctp", "frozen", 0.0)
                    });
                    list.push(emojicl::Method {
                        momentum_weight: w,
                        ..mk(&format!("CTP, momentum weight {w}"), "ctp", "frozen", 0.0)
                    });
                }
            }
            "bn-train" => {
                list.push(mk("SeqFT, BN train", "seqft", "train", 0.0));
                list.push(mk("CTP, BN train", "ctp", "train", 0.0));
            }
            other => bail!("--methods: unknown method {other:?}"),
        }
    }
    Ok(list)
}

fn run_emojicl(a: &EmojiclArgs) -> Result<()> {
    let methods = emojicl_methods(a)?;
    let protocol = emojicl::Protocol {
        preset: a.preset.clone(),
        max_train: (a.max_train > 0).then_some(a.max_train),
        max_eval: (a.max_eval > 0).then_some(a.max_eval),
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        tasks: a
            .tasks
            .split(',')
            .map(|t| t.parse())
            .collect::<Result<_, _>>()
            .context("tasks")?,
        check_every: a.drift_check_every,
    };
    let seeds: Vec<u64> = a
        .seeds
        .split(',')
        .map(|t| t.parse())
        .collect::<Result<_, _>>()
        .context("seeds")?;
    let cap = |v: usize| {
        if v == 0 {
            "all".to_string()
        } else {
            format!("≤{v}")
        }
    };
    let desc = format!(
        "`{}` preset, tasks {}, {} train (Noto) / {} eval (Twemoji) samples per task, {} epochs, batch {}, AdamW lr {} cosine per task, BN frozen unless stated, seeds {}, drift check every {} step(s)",
        a.preset, a.tasks, cap(a.max_train), cap(a.max_eval), a.epochs, a.batch, a.lr, a.seeds, a.drift_check_every
    );
    let cells_dir = a.out.join("emojicl").join("cells");
    std::fs::create_dir_all(&cells_dir)?;
    if !a.summarize_only {
        let ctpctl = std::env::current_exe()?.with_file_name("ctpctl");
        let rt = emojicl::Runtime {
            device: a.device.clone(),
            threads: a.threads,
            seeds: seeds.clone(),
            ctpctl: (a.reports && ctpctl.exists()).then_some(ctpctl),
        };
        let runtime = tokio::runtime::Runtime::new()?;
        let reports = a.out.join("emojicl");
        let ran = runtime.block_on(emojicl::run(&methods, &protocol, &rt, &cells_dir, &reports))?;
        eprintln!("{ran} cell(s) ran");
    }
    let all = cells::load_all(&cells_dir)?;
    // Table order: the five rows, then this run's others (gated, ablations), then
    // any other finished cells by name.
    let mut order: Vec<String> = ["SeqFT", "CTP", "SeqFT+replay", "CTP+replay", "Joint"]
        .map(String::from)
        .to_vec();
    let extra: Vec<String> = methods
        .iter()
        .map(|m| m.name.clone())
        .filter(|n| !order.contains(n))
        .collect();
    order.extend(extra);
    let md = cells::markdown(&all, &protocol, &seeds, &order, &desc);
    let mut json = cells::summary_json(&all, &protocol, &seeds, &order);
    json["protocol"]["description"] = serde_json::json!(desc);
    std::fs::write(a.out.join("emojicl.md"), &md)?;
    std::fs::write(
        a.out.join("emojicl.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("{md}");
    Ok(())
}

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
            run_emojicl(&args)?;
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
