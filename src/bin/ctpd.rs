//! `ctpd`: the continual-training daemon.
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ctp::app::{shutdown_signal, Application};
use ctp::config::{Overrides, Settings};

#[derive(Parser)]
#[command(
    version,
    about = "ctp daemon: continual vision-language pretraining over gRPC"
)]
struct Cli {
    /// gRPC listen address [default: 127.0.0.1:50051]
    #[arg(long)]
    listen: Option<String>,
    /// Data directory (database, task data, checkpoints) [default: ./ctp-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Database URL; `postgres://…` selects Postgres [default: SQLite inside the data dir]
    #[arg(long)]
    database_url: Option<String>,
    /// TOML config file; `CTP__SECTION__KEY` environment variables override it
    #[arg(long)]
    config: Option<PathBuf>,
    /// Training device: auto, cpu, cuda, cuda:N [default: auto]
    #[arg(long)]
    device: Option<String>,
    /// Prometheus /metrics listen address [default: off]
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Dashboard (web UI) listen address, e.g. 127.0.0.1:8080 [default: off]
    #[arg(long)]
    http_listen: Option<String>,
    /// Training precision: auto (per preset on CUDA: base bf16, the others fp32 with TF32; fp32 on
    /// CPU), bf16, fp32 [default: auto]
    #[arg(long)]
    precision: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Offline commands (no daemon runs); without one, ctpd serves.
#[derive(Subcommand)]
enum Command {
    /// Check a stopped daemon's data dir and database (the same flags and config select
    /// them): every version's file exists, matches its sha256 and loads; every bundle
    /// decodes; chains, heads, evaluations and resume points are consistent; unreferenced
    /// and temp files are listed. Exits 1 on any problem.
    Verify {
        /// Quarantine unreferenced and temp files (never deletes, never changes a row).
        #[arg(long)]
        repair: bool,
    },
    /// Make a new data dir from a backup (`ctpctl backup`), checking every file's sha256.
    Restore {
        /// The backup directory (holds manifest.json).
        #[arg(long)]
        from: PathBuf,
        /// The new data dir; must not exist or be empty.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// Startup errors print as one line (`ctpd: context: cause`) and exit with status 1.
#[tokio::main]
async fn main() {
    ctp::telemetry::init_tracing();
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("ctpd: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Restore { from, data_dir }) = cli.command {
        let restored = ctp::backup::restore::restore(&from, &data_dir)?;
        println!("{}", restored.summary());
        return Ok(());
    }
    let flags = Overrides {
        listen: cli.listen,
        data_dir: cli.data_dir,
        database_url: cli.database_url,
        device: cli.device,
        metrics_listen: cli.metrics_listen,
        http_listen: cli.http_listen,
    };
    let mut settings = Settings::load(cli.config.as_deref(), std::env::vars(), &flags)
        .map_err(anyhow::Error::msg)?;
    if let Some(p) = cli.precision {
        settings.engine.precision = p;
    }
    if let Some(Command::Verify { repair }) = cli.command {
        let report = ctp::app::verify_offline(settings, repair).await?;
        print!("{}", report.summary());
        if !report.is_sound() {
            std::process::exit(1);
        }
        return Ok(());
    }
    let app = Application::build(settings).await?;
    app.run_until_stopped(shutdown_signal()).await
}
