//! The client side of `ctpd`, behind the `ctpctl` binary: no libtorch, no database driver.
//! Other Rust programs can use the same pieces (or just the `ctp-api` crate).
//!
//! - [`args`]: the command grammar (clap); [`error`]: one-line errors and exit codes.
//! - [`conn`]: connection, TLS and the bearer-token interceptor.
//! - [`submit`]: dataset upload; [`watch`] + [`view`]: following a task with reconnects.
//! - [`tasks`]: tasks/versions/rollback/cancel; [`embed`]: embed/search/health;
//!   [`export`]: a version downloaded to a folder, every file checked by sha256;
//!   [`backup`]: a snapshot written by the daemon on its host, and the online verify.
//!   [`fleet`]: priorities and quotas; [`anchors`]: anchor suites.
//! - [`report`]: the HTML + PNG report; [`emojicl`]: benchmark export (offline).
//!
//! Human-readable output goes to stdout (results) and stderr (progress, notes); `--json`
//! puts machine-readable JSON on stdout and keeps stderr for errors only.
use std::process::ExitCode;

pub mod anchors;
pub mod args;
pub mod backup;
pub mod conn;
pub mod embed;
pub mod emojicl;
pub mod error;
pub mod export;
pub mod fleet;
pub mod gate;
pub mod output;
pub mod report;
pub mod submit;
pub mod tasks;
pub mod view;
pub mod watch;

#[cfg(test)]
mod tests;

pub use args::Cli;

use args::Command;
use conn::Connection;
use error::{CliError, CliResult, EXIT_OK};
use output::{print_json, task_json};
use view::{Mode, View};

/// Parses `std::env::args`. Usage errors exit with code 1 (clap's default is 2, which
/// ctpctl reserves for "the daemon rejected the request"); `--help`/`--version` exit 0.
pub fn parse_args() -> Cli {
    use clap::Parser;
    Cli::try_parse().unwrap_or_else(|e| {
        let code = if e.use_stderr() {
            i32::from(error::EXIT_LOCAL)
        } else {
            0
        };
        let _ = e.print();
        std::process::exit(code)
    })
}

/// Runs a parsed command line and returns the process exit code; errors are printed as
/// `error: …` on stderr.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(error::EXIT_LOCAL);
        }
    };
    match runtime.block_on(execute(&cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Follows a task with the view chosen by `--json`/TTY; `Ok` only when it SUCCEEDED.
async fn follow_task(conn: &Connection, task_id: &str, retries: u32, json: bool) -> CliResult<u8> {
    let mut client = conn.client();
    let mut view = View::new(Mode::pick(json));
    let outcome = watch::follow(&mut client, task_id, 0, retries, &mut view).await;
    view.finish();
    let outcome = outcome?.into_result()?;
    if !json {
        if let Some(v) = outcome.produced_version {
            println!("{v}");
        }
    }
    Ok(EXIT_OK)
}

/// Dispatches one command.
pub async fn execute(cli: &Cli) -> CliResult<u8> {
    // Offline commands first: they must work without a daemon.
    if let Command::Emojicl { command } = &cli.command {
        let args::EmojiclCommand::Export(a) = command;
        emojicl::export(a, cli.json)?;
        return Ok(EXIT_OK);
    }
    if let Command::Submit(a) = &cli.command {
        // Validate the dataset before connecting: a bad path should not need a daemon.
        // A URL is read by the daemon, not here.
        if submit::data_url(&a.path).is_none() {
            ctp_datasets::detect(&a.path).map_err(CliError::from)?;
        }
    }
    let conn = Connection::open(cli).await?;
    let mut client = conn.client();
    let json = cli.json;
    match &cli.command {
        Command::Submit(a) => {
            let task = submit::submit(&mut client, a, json).await?;
            if json && !a.wait {
                print_json(&task_json(&task));
            } else if !json {
                println!("{}", task.id);
            }
            if a.wait {
                return follow_task(&conn, &task.id, 20, json).await;
            }
        }
        Command::Watch(a) => return follow_task(&conn, &a.task_id, a.max_retries, json).await,
        Command::Tasks(a) => tasks::tasks(&mut client, a, json).await?,
        Command::Versions(a) => tasks::versions(&mut client, &a.model, json).await?,
        Command::Rollback(a) => tasks::rollback(&mut client, a, json).await?,
        Command::Gate(a) => gate::gate(&mut client, a, json).await?,
        Command::Cancel(a) => tasks::cancel(&mut client, &a.task_id, json).await?,
        Command::Priority(a) => fleet::priority(&mut client, a, json).await?,
        Command::Quota => fleet::quota(&mut client, json).await?,
        Command::Backup(a) => backup::backup(&mut client, a, json).await?,
        Command::Verify(a) => return backup::verify(&mut client, a, json).await,
        Command::Embed(a) => embed::embed(&mut client, a, json).await?,
        Command::Export(a) => export::export(&mut client, a, json).await?,
        Command::Search(a) => embed::search(&mut client, a, json).await?,
        Command::Health(a) => return embed::health(&conn, a, json).await,
        Command::Report(a) => report::report(&mut client, a, json).await?,
        Command::Anchors { command } => anchors::anchors(&mut client, command, json).await?,
        Command::Emojicl { .. } => unreachable!("handled above"),
    }
    Ok(EXIT_OK)
}
