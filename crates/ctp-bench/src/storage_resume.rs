//! `ctp-bench storage`, part 2: the start of a resumed `small` task with a cold and a warm
//! object cache (issue #23 §4: cold ≤ 2 × warm).
//!
//! Setup (not timed): `ctpd` as a child process (`--device cpu`, SQLite in its data dir,
//! bundles and checkpoints in the bucket, `training.checkpoint_every = 0` so that only a
//! stop writes a resume point). A parent task trains to version 1, so the resumed task is a
//! second task and needs the parent's checkpoint, as every task after the first does. A
//! second task trains two steps; SIGTERM then checkpoints it (the resume point is uploaded
//! and the daemon drops its local copy) and releases it.
//!
//! Each start is timed from spawning `ctpd` to (1) grpc.health.v1 SERVING (polled every
//! 20 ms); (2) the task's log event "resuming from the step-N checkpoint", emitted once the
//! bundle is decoded and the resume checkpoint is a local file (fetched, or found in the
//! cache); (3) the first training step's start, its end less its duration (the first step's
//! samples/s is its batch over its own time): the parent's checkpoint fetched or found, the
//! three models built and the resume point loaded; (4) the first step's end, the task's first
//! progress event after the start. (2)–(4) are the daemon's event times (`TaskEvent.time`), on
//! the same machine's clock. Files that appear in `<data dir>/cache/objects` during the start
//! are what it fetched.
//!
//! One repetition:
//! - **cold**: `<data dir>/cache` deleted first: bundle, parent and resume point come from the
//!   bucket. SIGKILL after the first step, so the resume point stays the same.
//! - **warm, after SIGKILL**: the same resume point; everything is in the cache (each cached
//!   file is hashed once, since the daemon restarted). SIGTERM after the first step: a new
//!   resume point goes to the bucket and not into the cache.
//! - **warm, after SIGTERM**: bundle and parent cached, the daemon's own latest resume point
//!   fetched: the restart an operator's `systemctl restart` gives. SIGKILL.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use ctp_api::pb::{self, task_event::Event};
use serde::Serialize;

use crate::ctpd_child::{serving, until, Ctpd};
use crate::moto::Moto;
use crate::service;
use crate::storage::{storage_env, Stat, StorageArgs};

const COLD: &str = "cold: cache emptied";
const WARM: &str = "warm: restart after SIGKILL";
const DRAINED: &str = "warm: restart after SIGTERM (own resume point not cached)";
const LOCAL: &str = "restart after SIGKILL";
/// The batch size of `service::header`.
const BATCH: f64 = 32.0;

/// One kind of start, over its repetitions.
#[derive(Debug, Serialize)]
pub struct ResumeRow {
    /// `s3 (moto)` or `data dir`.
    pub storage: String,
    pub start: String,
    /// Objects fetched from the bucket into the cache during the start.
    pub fetched_objects: Stat,
    pub fetched_mb: Stat,
    /// Seconds from spawning ctpd.
    pub serving_s: Stat,
    pub inputs_local_s: Stat,
    /// The first step's end less its duration (from its samples/s): the models built and the
    /// parent and resume point loaded.
    pub engine_ready_s: Stat,
    pub first_step_s: Stat,
    pub resumed_from_steps: Vec<u64>,
}

/// One measured start.
struct Start {
    serving: f64,
    inputs: f64,
    ready: f64,
    first_step: f64,
    fetched: usize,
    fetched_bytes: u64,
    resumed_from: u64,
}

fn row(storage: &str, start: &str, runs: &[Start]) -> ResumeRow {
    let stat = |f: &dyn Fn(&Start) -> f64| Stat::of(runs.iter().map(f).collect());
    ResumeRow {
        storage: storage.into(),
        start: start.into(),
        fetched_objects: stat(&|s| s.fetched as f64),
        fetched_mb: stat(&|s| s.fetched_bytes as f64 / 1e6),
        serving_s: stat(&|s| s.serving),
        inputs_local_s: stat(&|s| s.inputs),
        engine_ready_s: stat(&|s| s.ready),
        first_step_s: stat(&|s| s.first_step),
        resumed_from_steps: runs.iter().map(|s| s.resumed_from).collect(),
    }
}

/// Cached objects (`<data dir>/cache/objects/<sha256>`) and their sizes.
fn cached(data: &Path) -> HashMap<String, u64> {
    std::fs::read_dir(data.join("cache/objects"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            Some((
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().ok()?.len(),
            ))
        })
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A parent task to version 1, then a second task two steps in and checkpointed by SIGTERM;
/// the second task's id.
async fn prepare(
    bin: &Path,
    data: &Path,
    env: &[(String, String)],
    log: &Path,
    n: usize,
) -> Result<String> {
    let d = Ctpd::spawn(bin, data, env, log)?;
    let mut c = serving(&d.addr).await?;
    let parent = service::submit(
        &mut c,
        service::header("resume", 1),
        service::samples(64, 64, false),
        64,
    )
    .await?;
    let end = until(&d.addr, &parent.id, |e| {
        matches!(e.event, Some(Event::Terminal(_)))
    })
    .await?;
    if let Some(Event::Terminal(t)) = &end.event {
        ensure!(
            t.state == pb::TaskState::Succeeded as i32,
            "the parent task ended {:?}: {}",
            pb::TaskState::try_from(t.state),
            t.error
        );
    }
    let task = service::submit(
        &mut c,
        service::header("resume", 100),
        service::samples(n, 64, false),
        64,
    )
    .await?;
    until(
        &d.addr,
        &task.id,
        |e| matches!(&e.event, Some(Event::Progress(p)) if p.step >= 2),
    )
    .await?;
    d.terminate().await?;
    Ok(task.id)
}

/// Spawns `ctpd` and times the start until the task's first step.
async fn start(
    bin: &Path,
    data: &Path,
    env: &[(String, String)],
    log: &Path,
    task: &str,
) -> Result<(Ctpd, Start)> {
    let before = cached(data);
    let t0 = unix_now();
    let clock = Instant::now();
    let d = Ctpd::spawn(bin, data, env, log)?;
    let mut c = serving(&d.addr).await?;
    let serving = clock.elapsed().as_secs_f64();
    let mut w = c
        .watch_task(pb::WatchTaskRequest {
            task_id: task.into(),
            after_seq: 0,
        })
        .await?
        .into_inner();
    let mut inputs = None;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(900), w.message())
            .await
            .context("no training step within 900 s of the start")??
            .context("the watch stream ended")?;
        let at = ev
            .time
            .as_ref()
            .map_or(-1.0, |t| t.seconds as f64 + t.nanos as f64 * 1e-9 - t0);
        if at < 0.0 {
            continue; // an event of an earlier run
        }
        match ev.event {
            Some(Event::Log(l)) if l.message.starts_with("resuming from the step-") => {
                inputs = Some(at)
            }
            Some(Event::Progress(p)) => {
                let after = cached(data);
                let new: Vec<u64> = after
                    .iter()
                    .filter(|(k, _)| !before.contains_key(*k))
                    .map(|(_, v)| *v)
                    .collect();
                let s = Start {
                    serving,
                    inputs: inputs.context("no 'resuming from …' event before the first step")?,
                    // The first step's samples/s is its batch over its own duration.
                    ready: at - BATCH / p.samples_per_second.max(1e-9),
                    first_step: at,
                    fetched: new.len(),
                    fetched_bytes: new.iter().sum(),
                    resumed_from: p
                        .resumed_from_step
                        .context("the first step after the start did not resume")?,
                };
                return Ok((d, s));
            }
            Some(Event::Terminal(t)) => bail!("task {task} ended: {}", t.error),
            _ => {}
        }
    }
}

/// Resume starts on the bucket (cold, warm, after a drain) and, with `--local-resume`, on
/// the data dir.
pub async fn run(args: &StorageArgs, moto: &Moto) -> Result<Vec<ResumeRow>> {
    let bin = match &args.ctpd {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("ctpd"),
    };
    ensure!(
        bin.is_file(),
        "{} not found: build it (cargo build --bins) or pass --ctpd",
        bin.display()
    );
    if let Some(dir) = &args.work_dir {
        std::fs::create_dir_all(dir)?;
        return measure(args, moto, &bin, dir).await;
    }
    let work = tempfile::Builder::new()
        .prefix("ctp-bench-storage-")
        .tempdir()?;
    let result = measure(args, moto, &bin, work.path()).await;
    if result.is_err() {
        let kept: PathBuf = work.keep();
        eprintln!("kept {} (ctpd logs: */ctpd.log)", kept.display());
    }
    result
}

async fn measure(
    args: &StorageArgs,
    moto: &Moto,
    bin: &Path,
    work: &Path,
) -> Result<Vec<ResumeRow>> {
    let mut rows = Vec::new();
    let bucket = moto.bucket();
    let mut env = storage_env(&moto.endpoint(), &bucket, true);
    for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        env.push((k.into(), "testing".into()));
    }
    env.push(("AWS_REGION".into(), "us-east-1".into()));
    // Only a stop writes a resume point, so a SIGKILL after the first step leaves it as it was.
    env.push(("CTP__TRAINING__CHECKPOINT_EVERY".into(), "0".into()));
    let (data, log) = (work.join("s3/data"), work.join("s3/ctpd.log"));
    std::fs::create_dir_all(&data)?;
    eprintln!(
        "s3: training the parent task and two steps of the task to resume (log {})",
        log.display()
    );
    let task = prepare(bin, &data, &env, &log, args.resume_samples).await?;
    let (mut cold, mut warm, mut drained) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..args.resume_reps {
        let _ = std::fs::remove_dir_all(data.join("cache"));
        let (d, s) = start(bin, &data, &env, &log, &task).await?;
        d.kill();
        cold.push(s);
        let (d, s) = start(bin, &data, &env, &log, &task).await?;
        d.terminate().await?;
        warm.push(s);
        let (d, s) = start(bin, &data, &env, &log, &task).await?;
        d.kill();
        drained.push(s);
        eprintln!(
            "s3 rep {rep}: first step at {:.1} s cold, {:.1} s warm, {:.1} s after a drain",
            cold[rep].first_step, warm[rep].first_step, drained[rep].first_step
        );
    }
    for (name, runs) in [(COLD, cold), (WARM, warm), (DRAINED, drained)] {
        rows.push(row("s3 (moto)", name, &runs));
    }
    if args.local_resume {
        let mut env = storage_env(&moto.endpoint(), &bucket, false);
        env.push(("CTP__TRAINING__CHECKPOINT_EVERY".into(), "0".into()));
        let (data, log) = (work.join("local/data"), work.join("local/ctpd.log"));
        std::fs::create_dir_all(&data)?;
        eprintln!("data dir: training the parent task and two steps of the task to resume");
        let task = prepare(bin, &data, &env, &log, args.resume_samples).await?;
        let mut runs = Vec::new();
        for rep in 0..args.resume_reps {
            let (d, s) = start(bin, &data, &env, &log, &task).await?;
            d.kill();
            eprintln!("data dir rep {rep}: first step at {:.1} s", s.first_step);
            runs.push(s);
        }
        rows.push(row("data dir", LOCAL, &runs));
    }
    Ok(rows)
}

/// Median time to the first step, cold ÷ warm (after SIGKILL), when both were measured.
pub fn cold_over_warm(rows: &[ResumeRow]) -> Option<f64> {
    let median = |name: &str| {
        rows.iter()
            .find(|r| r.start == name)
            .map(|r| r.first_step_s.median)
    };
    Some(median(COLD)? / median(WARM)?)
}

pub fn markdown(rows: &[ResumeRow]) -> String {
    let warm = rows
        .iter()
        .find(|r| r.start == WARM)
        .map(|r| r.first_step_s.median);
    let mut s = format!(
        "Start of a resumed `small` task (a second task: parent version, resume point, bundle), seconds from spawning ctpd; median (min) of {} starts:\n\n",
        rows.first().map_or(0, |r| r.first_step_s.runs.len())
    );
    s.push_str("| storage | start | fetched from the bucket | serving gRPC | bundle + resume point local | models loaded | first step done | ÷ warm |\n|---|---|---|---|---|---|---|---|\n");
    let pair = |x: &Stat| format!("{:.1} ({:.1})", x.median, x.min);
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {:.0} objects, {:.0} MB | {} | {} | {} | {} | {} |\n",
            r.storage,
            r.start,
            r.fetched_objects.median,
            r.fetched_mb.median,
            pair(&r.serving_s),
            pair(&r.inputs_local_s),
            pair(&r.engine_ready_s),
            pair(&r.first_step_s),
            warm.map_or("-".into(), |w| format!("{:.2}", r.first_step_s.median / w))
        ));
    }
    s
}
