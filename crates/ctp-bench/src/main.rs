//! `ctp-bench`: ctp's benchmarks (see bench/README.md).
//!
//! - `step`: training-step throughput per preset and batch size — steps/s, samples/s, peak RSS
//!   and milliseconds per part of the step; each (preset, batch) in its own child process so its
//!   peak RSS is its own. The measured step is a task ≥ 1 CTP step (all three models).
//! - `compare`: ctp's `small` step against the same step in eager PyTorch, in one invocation.
//! - `emojicl`: continual-learning quality through the daemon (module `emojicl`).
//! - `load` / `ingest`: the control plane under training load, and upload throughput.
//! - `export-load`: a version's export while a task trains: the task's steps/s with and
//!   without back-to-back `ExportVersion` streams, and the export's time vs idle (module `export_load`).
//! - `preempt`: what preemption costs (stop latency, start-up, lost work; module `preempt`).
//! - `storage`: what object storage costs: submission streamed vs by reference, and the start
//!   of a resumed task with a cold and a warm object cache (modules `storage`, `storage_resume`).
//! - `webhooks`: a webhook's delivery latency (p50/p90/p99 from the event's commit to its
//!   receipt) over 1,000 `head.moved` events, signatures checked, duplicates counted, with a
//!   receiver that accepts every attempt and one that fails each first attempt (module `webhooks`).
mod cells;
mod compare;
mod ctpd_child;
mod emojicl;
mod emojicl_cli;
mod emojicl_rpc;
mod export_load;
mod gpumem;
// The moto server the tests use (scripts/setup-moto.sh installs it).
#[path = "../../ctp-storage/tests/support/moto.rs"]
mod moto;
mod preempt;
mod protocol;
mod service;
mod step;
mod storage;
mod storage_resume;
mod summary;
mod sweep;
mod webhooks;

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
    /// ctp's step against its PyTorch peers (bench/pytorch_step.py: eager, eager + TF32,
    /// torch.compile), median of repetitions, plus ctp drift-gated in the same process.
    Compare(step::CompareSettings),
    /// Continual-learning quality on EmojiCL through the daemon, one resumable cell per
    /// (method, seed): SeqFT, CTP (threshold 0), replay variants, drift-gated CTP, Joint, and
    /// the BatchNorm-policy ablation. Finished cells are skipped.
    Emojicl(Box<emojicl_cli::EmojiclArgs>),
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
    /// What object storage costs (issue #23 §4): SubmitTask streamed vs by reference, and the
    /// start of a resumed `small` task with a cold and a warm object cache, against moto.
    Storage(Box<storage::StorageArgs>),
    /// What preemption costs: a high task submitted while a low one trains (stop latency in
    /// steps, the high task's start-up, steps trained twice, resume overhead).
    Preempt(preempt::PreemptArgs),
    /// A webhook's delivery latency: a local receiver, 1,000 head moves (Rollback RPCs), the
    /// latency from each event's commit to its receipt, duplicates, and the cost of a retry.
    Webhooks(webhooks::WebhooksArgs),
    /// Export while training: a task's steps/s in alternating quiet and export phases
    /// (back-to-back ExportVersion streams of another version), and each export's time.
    ExportLoad(export_load::ExportLoadArgs),
    /// One measurement (used by `step`; prints one JSON row).
    StepOne(step::StepSettings),
    /// ctp's repeated, paired measurement (used by `compare`; prints one JSON row).
    CompareOne(compare::CompareOne),
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
        Cmd::Storage(args) => storage::run(&args, machine())?,
        Cmd::Preempt(args) => {
            let table = tokio::runtime::Runtime::new()?.block_on(preempt::run(&args))?;
            println!("{}\n{table}", machine());
        }
        Cmd::Webhooks(args) => {
            let table = tokio::runtime::Runtime::new()?.block_on(webhooks::run(&args))?;
            println!("{}\n{table}", machine());
        }
        Cmd::ExportLoad(args) => {
            let (md, report) = tokio::runtime::Runtime::new()?.block_on(export_load::run(&args))?;
            if let Some(path) = &args.json {
                std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
            }
            println!("{}\n\n{md}", machine());
        }
        Cmd::Emojicl(args) => {
            ctp::telemetry::init_tracing();
            emojicl_cli::run(&args)?;
        }
        Cmd::Compare(c) => {
            let md = step::compare(&c)?;
            println!("{}\n\n{md}", machine());
        }
        Cmd::CompareOne(a) => {
            let row = step::measure(&a.step, &a.repeat)?;
            println!("{}", serde_json::to_string(&row)?);
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
