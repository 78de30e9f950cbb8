//! `ctp-bench`: ctp's benchmarks (see bench/README.md).
//!
//! - `step`: training-step throughput per preset and batch size — steps/s, samples/s, peak RSS
//!   and milliseconds per part of the step; each (preset, batch) in its own child process so its
//!   peak RSS is its own. The measured step is a task ≥ 1 CTP step (all three models).
//! - `compare`: ctp's `small` step against the same step in eager PyTorch, in one invocation.
//! - `emojicl`: continual-learning quality through the daemon (module `emojicl`).
//! - `load` / `ingest`: the control plane under training load, and upload throughput.
mod emojicl;
mod gpumem;
mod service;
mod step;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "ctp benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Step throughput table (one child process per preset × batch × precision).
    Step {
        #[arg(long, default_value = "tiny,small")]
        presets: String,
        #[arg(long, default_value = "32,64")]
        batches: String,
        /// Comma-separated precisions: auto, bf16, fp32.
        #[arg(long, default_value = "auto")]
        precisions: String,
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
        /// Random weights with the real shapes (no weight files needed).
        #[arg(long)]
        random_weights: bool,
        /// Time each part of the step (a device sync after each part; slows a GPU).
        #[arg(long)]
        profile: bool,
        /// Write the rows as JSON here too.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// ctp's step against the same step in eager PyTorch (bench/pytorch_step.py), in one
    /// invocation, plus ctp with the drift-gated momentum sync.
    Compare(step::CompareSettings),
    /// Continual-learning quality on EmojiCL through the daemon: SeqFT, CTP (threshold 0),
    /// drift-gated CTP at several thresholds, Joint, and the BatchNorm-policy ablation.
    Emojicl {
        #[arg(long, default_value_t = 96)]
        max_train: usize,
        #[arg(long, default_value_t = 64)]
        max_eval: usize,
        #[arg(long, default_value_t = 8)]
        epochs: u32,
        #[arg(long, default_value_t = 32)]
        batch: u32,
        #[arg(long, default_value_t = 3e-4)]
        lr: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Drift thresholds of the gated runs.
        #[arg(long, default_value = "0.01,0.02,0.05")]
        thresholds: String,
        #[arg(long, default_value_t = 1)]
        drift_check_every: u32,
        /// Comma-separated subset of: seqft, ctp, gated, joint, bn-train (default all).
        #[arg(long, default_value = "seqft,ctp,gated,joint,bn-train")]
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
        /// EmojiCL task indices (default all nine).
        #[arg(long, default_value = "0,1,2,3,4,5,6,7,8")]
        tasks: String,
        #[arg(long, default_value = "auto")]
        device: String,
        /// Folder for results (JSON, Markdown, reports).
        #[arg(long, default_value = "bench/results")]
        out: std::path::PathBuf,
    },
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
    StepOne(step::StepSettings),
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
fn run_emojicl(
    preset: &str,
    (tp_weight, mlm_weight, momentum_weight): (f64, f64, f64),
    max_train: usize,
    max_eval: usize,
    epochs: u32,
    batch: u32,
    lr: f64,
    seed: u64,
    thresholds: &str,
    check_every: u32,
    methods: &str,
    tasks: &str,
    device: &str,
    out: &std::path::Path,
) -> Result<()> {
    use ctp::api::pb::{BnPolicy, Method as M};
    let pick: Vec<&str> = methods.split(',').collect();
    let mk = |name: String, method: M, bn: BnPolicy, threshold: f64, joint: bool| emojicl::Method {
        name,
        method,
        bn,
        threshold,
        joint,
        tp_weight,
        mlm_weight,
        momentum_weight,
    };
    let mut list = Vec::new();
    if pick.contains(&"seqft") {
        list.push(mk("SeqFT".into(), M::Seqft, BnPolicy::Frozen, 0.0, false));
    }
    if pick.contains(&"ctp") {
        list.push(mk(
            "CTP (sync every step)".into(),
            M::Ctp,
            BnPolicy::Frozen,
            0.0,
            false,
        ));
    }
    if pick.contains(&"gated") {
        for t in thresholds.split(',') {
            let t: f64 = t.parse().context("thresholds")?;
            list.push(mk(
                format!("CTP drift-gated {t}"),
                M::Ctp,
                BnPolicy::Frozen,
                t,
                false,
            ));
        }
    }
    if pick.contains(&"joint") {
        list.push(mk("Joint".into(), M::Seqft, BnPolicy::Frozen, 0.0, true));
    }
    if pick.contains(&"bn-train") {
        list.push(mk(
            "SeqFT, BN train".into(),
            M::Seqft,
            BnPolicy::Train,
            0.0,
            false,
        ));
        list.push(mk(
            "CTP, BN train".into(),
            M::Ctp,
            BnPolicy::Train,
            0.0,
            false,
        ));
    }
    let protocol = emojicl::Protocol {
        preset: preset.into(),
        max_train,
        max_eval,
        epochs,
        batch,
        lr,
        seed,
        tasks: tasks
            .split(',')
            .map(|t| t.parse())
            .collect::<Result<_, _>>()
            .context("tasks")?,
        device: device.into(),
        check_every,
    };
    let desc = format!(
        "`{preset}` preset, tasks {tasks}, ≤{max_train} train (Noto) / ≤{max_eval} eval (Twemoji) samples per task, {epochs} epochs, batch {batch}, AdamW lr {lr} cosine per task, seed {seed}, drift check every {check_every} step(s)"
    );
    std::fs::create_dir_all(out)?;
    let ctpctl = std::env::current_exe()?.with_file_name("ctpctl");
    let rt = tokio::runtime::Runtime::new()?;
    let results = rt.block_on(emojicl::run(
        list,
        protocol,
        out,
        ctpctl.exists().then_some(ctpctl),
    ))?;
    let md = emojicl::markdown(&results, &machine(), &desc);
    std::fs::write(out.join("emojicl.md"), &md)?;
    std::fs::write(
        out.join("emojicl.json"),
        serde_json::to_string_pretty(
            &serde_json::json!({"machine": machine(), "protocol": desc, "results": results}),
        )?,
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
        Cmd::Emojicl {
            max_train,
            max_eval,
            epochs,
            batch,
            lr,
            seed,
            thresholds,
            drift_check_every,
            methods,
            tasks,
            device,
            out,
            tp_weight,
            mlm_weight,
            momentum_weight,
            preset,
        } => {
            ctp::telemetry::init_tracing();
            run_emojicl(
                &preset,
                (tp_weight, mlm_weight, momentum_weight),
                max_train,
                max_eval,
                epochs,
                batch,
                lr,
                seed,
                &thresholds,
                drift_check_every,
                &methods,
                &tasks,
                &device,
                &out,
            )?;
        }
        Cmd::Compare(c) => {
            let md = step::compare(&c)?;
            println!("{}\n\n{md}", machine());
        }
        Cmd::StepOne(s) => {
            let row = step::step_one(&s)?;
            println!("{}", serde_json::to_string(&row)?);
        }
        Cmd::Step {
            presets,
            batches,
            precisions,
            steps,
            threshold,
            device,
            threads,
            random_weights,
            profile,
            json,
        } => {
            let mut rows = Vec::new();
            println!("{}\n\n{}", machine(), step::TABLE_HEAD);
            for preset in presets.split(',') {
                for precision in precisions.split(',') {
                    for b in batches.split(',') {
                        let row = step::StepSettings {
                            preset: preset.into(),
                            batch: b.parse().context("batches")?,
                            steps,
                            threshold,
                            device: device.clone(),
                            threads,
                            precision: precision.into(),
                            random_weights,
                            profile,
                        }
                        .run_child()?;
                        println!("{}", step::table_row(&row));
                        rows.push(row);
                    }
                }
            }
            if let Some(path) = json {
                std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
            }
        }
    }
    Ok(())
}
