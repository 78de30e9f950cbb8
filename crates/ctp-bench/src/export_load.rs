//! `export-load`: does exporting a version while a task trains slow the task down, or wait for
//! it? (issue #25 §3). An in-process daemon (SQLite, CPU) trains a short task to make a
//! version; that version is exported `--idle-exports` times with nothing training (the idle
//! export time). Then a long task of the same model trains, and the benchmark alternates
//! phases of `--phase-seconds`: *quiet* (nothing else runs) and *export* (`ExportVersion`
//! streams of the first version, back to back, each drained to its end as `ctpctl export`
//! reads it), `--reps` pairs, the order flipped every pair (quiet/export, export/quiet, …) so
//! drift in the machine's load does not favour one side.
//!
//! The training rate of a phase is measured from the task's `WatchTask` progress events
//! (one per optimizer step, timestamped as they arrive): steps between the first and the last
//! event inside the phase over the time between them. The slowdown of a pair is
//! `1 − export rate / quiet rate`; the result is the median over the pairs (and of the rates).
//! Each export's duration while training is compared with the idle ones: an export that
//! waited for the engine would take about as long as the task has left.
//!
//! The client runs in the same process as the daemon, so its share of the CPU (receiving
//! the stream) counts against training here; `ctpctl` on another host would not.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ctp_api::pb;
use ctp_api::pb::continual_trainer_client::ContinualTrainerClient;
use pb::task_event::Event;
use serde::Serialize;
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::emojicl_rpc::submit_and_wait;
use crate::service::{client, header, samples, submit, Daemon};

#[derive(clap::Args)]
pub struct ExportLoadArgs {
    /// Model preset of both tasks (`small`, or `tiny` where `small` is too slow).
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Batch size of the trained task.
    #[arg(long, default_value_t = 32)]
    pub batch: u32,
    /// Quiet/export phase pairs.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Seconds of each phase.
    #[arg(long, default_value_t = 30)]
    pub phase_seconds: u64,
    /// Seconds of training before the first phase (model load, first steps).
    #[arg(long, default_value_t = 20)]
    pub warmup_seconds: u64,
    /// Exports timed with nothing training.
    #[arg(long, default_value_t = 5)]
    pub idle_exports: usize,
    /// Pause between two exports of an export phase (0 = back to back, the worst case).
    #[arg(long, default_value_t = 0)]
    pub export_gap_ms: u64,
    /// libtorch intra-op threads of the daemon (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// One export: seconds from the request to the stream's end, bytes received.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ExportRun {
    pub seconds: f64,
    pub bytes: u64,
}

/// One phase of the training task.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub rep: usize,
    /// "quiet" or "export".
    pub kind: &'static str,
    pub steps: u64,
    pub steps_per_s: f64,
    /// Exports that finished in the phase (export phases).
    pub exports: Vec<ExportRun>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub preset: String,
    pub batch: u32,
    pub phase_seconds: u64,
    pub export_gap_ms: u64,
    pub threads: i32,
    pub idle_exports: Vec<ExportRun>,
    pub phases: Vec<Phase>,
    /// Per pair: 1 − export rate / quiet rate, in percent.
    pub slowdown_pct: Vec<f64>,
    pub median_slowdown_pct: f64,
    pub median_quiet_steps_per_s: f64,
    pub median_export_steps_per_s: f64,
    pub median_idle_export_s: f64,
    pub median_training_export_s: f64,
    pub max_training_export_s: f64,
    /// Seconds of one training step (1 / median quiet rate), for scale.
    pub step_seconds: f64,
    /// The task's steps in all (what an export that waited for it would wait for).
    pub task_total_steps: u64,
    /// /proc/loadavg before and after.
    pub loadavg_before: String,
    pub loadavg_after: String,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub(crate) fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Steps per second inside `[t0, t1]` from timestamped step events: steps between the first
/// and the last event in the window over the time between them (`None` with fewer than two).
pub(crate) fn rate(events: &[(Instant, u64)], t0: Instant, t1: Instant) -> Option<(u64, f64)> {
    let inside: Vec<&(Instant, u64)> = events
        .iter()
        .filter(|(t, _)| *t >= t0 && *t <= t1)
        .collect();
    let (first, last) = (inside.first()?, inside.last()?);
    let dt = last.0.duration_since(first.0).as_secs_f64();
    (last.1 > first.1 && dt > 0.0).then(|| (last.1 - first.1, (last.1 - first.1) as f64 / dt))
}

/// Steps finished in `[t0, t1]` over its length: for a phase with fewer than two step events
/// (training starved).
pub(crate) fn coarse_rate(events: &[(Instant, u64)], t0: Instant, t1: Instant) -> (u64, f64) {
    let at = |t: Instant| events.iter().rfind(|(e, _)| *e <= t).map_or(0, |e| e.1);
    let n = at(t1).saturating_sub(at(t0));
    (n, n as f64 / t1.duration_since(t0).as_secs_f64())
}

async fn export_once(
    c: &mut ContinualTrainerClient<Channel>,
    model: &str,
    version: i64,
) -> Result<ExportRun> {
    let t = Instant::now();
    let mut s = c
        .export_version(pb::ExportVersionRequest {
            model: model.into(),
            version: Some(version),
        })
        .await?
        .into_inner();
    let mut bytes = 0u64;
    let mut manifest = false;
    while let Some(m) = s.message().await? {
        match m.part {
            Some(pb::export_version_chunk::Part::Manifest(man)) => {
                manifest = true;
                if man.probe_source != "stored" {
                    bail!("the probe was {:?}, not stored", man.probe_source);
                }
            }
            Some(pb::export_version_chunk::Part::Chunk(ch)) => bytes += ch.data.len() as u64,
            None => {}
        }
    }
    if !manifest {
        bail!("export stream without a manifest");
    }
    Ok(ExportRun {
        seconds: t.elapsed().as_secs_f64(),
        bytes,
    })
}

pub async fn run(a: &ExportLoadArgs) -> Result<(String, Report)> {
    let loadavg_before = loadavg();
    let mut env = vec![("CTP__ENGINE__DEVICE".to_string(), "cpu".to_string())];
    if a.threads > 0 {
        env.push(("CTP__ENGINE__THREADS".into(), a.threads.to_string()));
    }
    let dir = tempfile::tempdir()?;
    let d = Daemon::start_in(dir.path(), env).await?;
    let mut c = client(&d.addr).await?;
    let model = "export-load";

    // 1. A version to export (its probe is stored at commit, so exporting needs no engine).
    let mut h = header(model, 1);
    h.preset = a.preset.clone();
    h.task_name = "first".into();
    if let Some(s) = h.settings.as_mut() {
        s.batch_size = Some(a.batch);
    }
    let (version, _, _) = submit_and_wait(&mut c, h.clone(), samples(64, 64, false)).await?;
    eprintln!("version {version} committed; exporting it while idle");

    // 2. Idle exports.
    let mut idle = Vec::new();
    for _ in 0..a.idle_exports {
        idle.push(export_once(&mut c, model, version).await?);
    }

    // 3. A long task of the same model; follow its steps.
    h.task_name = "long".into();
    if let Some(s) = h.settings.as_mut() {
        s.epochs = Some(10_000);
    }
    let task = submit(&mut c, h, samples(256, 64, false), 64).await?;
    let steps: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let total_steps = Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let (mut wc, steps, total, id) = (
            client(&d.addr).await?,
            steps.clone(),
            total_steps.clone(),
            task.id.clone(),
        );
        tokio::spawn(async move {
            let req = pb::WatchTaskRequest {
                task_id: id,
                after_seq: 0,
            };
            let Ok(s) = wc.watch_task(req).await else {
                return;
            };
            let mut s = s.into_inner();
            while let Ok(Some(ev)) = s.message().await {
                if let Some(Event::Progress(p)) = ev.event {
                    if !p.losses.is_empty() {
                        total.store(p.total_steps, Ordering::Relaxed);
                        steps.lock().await.push((Instant::now(), p.step));
                    }
                }
            }
        });
    }
    let warm = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = steps.lock().await.len();
        if n >= 3 && warm.elapsed() >= Duration::from_secs(a.warmup_seconds) {
            break;
        }
        if warm.elapsed() > Duration::from_secs(600) {
            bail!("the task made {n} steps in 10 minutes");
        }
    }
    eprintln!("training; {} pairs of {} s phases", a.reps, a.phase_seconds);

    // 4. Alternating phases.
    let phase = Duration::from_secs(a.phase_seconds);
    let mut phases = Vec::new();
    let mut slowdown = Vec::new();
    for rep in 0..a.reps {
        let order: [&'static str; 2] = if rep % 2 == 0 {
            ["quiet", "export"]
        } else {
            ["export", "quiet"]
        };
        let mut pair = [0.0f64; 2];
        for kind in order {
            let t0 = Instant::now();
            let mut exports = Vec::new();
            if kind == "export" {
                let stop = Arc::new(AtomicBool::new(false));
                let (mut ec, stop2) = (client(&d.addr).await?, stop.clone());
                let gap = Duration::from_millis(a.export_gap_ms);
                let looper = tokio::spawn(async move {
                    let mut runs = Vec::new();
                    while !stop2.load(Ordering::Relaxed) {
                        runs.push(export_once(&mut ec, model, version).await?);
                        if !gap.is_zero() {
                            tokio::time::sleep(gap).await;
                        }
                    }
                    anyhow::Ok(runs)
                });
                tokio::time::sleep(phase).await;
                stop.store(true, Ordering::Relaxed);
                // The export in flight finishes inside this phase: the next starts after it.
                exports = looper.await??;
            } else {
                tokio::time::sleep(phase).await;
            }
            let t1 = Instant::now();
            let (n, r) = {
                let ev = steps.lock().await;
                rate(&ev, t0, t1).unwrap_or_else(|| coarse_rate(&ev, t0, t1))
            };
            eprintln!(
                "rep {rep} {kind:>6}: {n} steps, {r:.3} steps/s, {} exports",
                exports.len()
            );
            pair[usize::from(kind == "export")] = r;
            phases.push(Phase {
                rep,
                kind,
                steps: n,
                steps_per_s: r,
                exports,
            });
        }
        slowdown.push(100.0 * (1.0 - pair[1] / pair[0]));
    }
    c.cancel_task(pb::CancelTaskRequest {
        task_id: task.id.clone(),
    })
    .await?;
    d.stop().await?;

    let rates = |k: &str| -> Vec<f64> {
        phases
            .iter()
            .filter(|p| p.kind == k)
            .map(|p| p.steps_per_s)
            .collect()
    };
    let during: Vec<f64> = phases
        .iter()
        .flat_map(|p| p.exports.iter().map(|e| e.seconds))
        .collect();
    let idle_s: Vec<f64> = idle.iter().map(|e| e.seconds).collect();
    let quiet = median(&rates("quiet"));
    let report = Report {
        preset: a.preset.clone(),
        batch: a.batch,
        phase_seconds: a.phase_seconds,
        export_gap_ms: a.export_gap_ms,
        threads: a.threads,
        median_slowdown_pct: median(&slowdown),
        median_quiet_steps_per_s: quiet,
        median_export_steps_per_s: median(&rates("export")),
        median_idle_export_s: median(&idle_s),
        median_training_export_s: median(&during),
        max_training_export_s: during.iter().copied().fold(0.0, f64::max),
        step_seconds: 1.0 / quiet,
        task_total_steps: total_steps.load(Ordering::Relaxed),
        idle_exports: idle,
        phases,
        slowdown_pct: slowdown,
        loadavg_before,
        loadavg_after: loadavg(),
    };
    Ok((markdown(&report), report))
}

fn markdown(r: &Report) -> String {
    let mb = r.idle_exports.first().map_or(0.0, |e| e.bytes as f64 / 1e6);
    let n_during: usize = r.phases.iter().map(|p| p.exports.len()).sum();
    let mut out = format!(
        "`{}` preset, batch {}, engine threads {}, {} pairs of {} s phases (quiet / exports {}, order flipped every pair); one export = {mb:.1} MB. Load average before {}, after {}.\n\n",
        r.preset,
        r.batch,
        match r.threads {
            0 => "libtorch's default".to_string(),
            n => n.to_string(),
        },
        r.slowdown_pct.len(),
        r.phase_seconds,
        match r.export_gap_ms {
            0 => "back to back".to_string(),
            g => format!("with {g} ms between them"),
        },
        r.loadavg_before,
        r.loadavg_after
    );
    out.push_str(
        "| pair | quiet steps/s | export steps/s | exports | slowdown % |\n|---|---|---|---|---|\n",
    );
    for (i, s) in r.slowdown_pct.iter().enumerate() {
        let get = |k: &str| r.phases.iter().find(|p| p.rep == i && p.kind == k);
        let (q, e) = (get("quiet"), get("export"));
        out.push_str(&format!(
            "| {i} | {:.3} | {:.3} | {} | {s:.1} |\n",
            q.map_or(f64::NAN, |p| p.steps_per_s),
            e.map_or(f64::NAN, |p| p.steps_per_s),
            e.map_or(0, |p| p.exports.len()),
        ));
    }
    out.push_str(&format!(
        "| **median** | {:.3} | {:.3} | {n_during} | **{:.1}** |\n\n",
        r.median_quiet_steps_per_s, r.median_export_steps_per_s, r.median_slowdown_pct
    ));
    out.push_str(&format!(
        "| export | n | median s | max s |\n|---|---|---|---|\n| idle (nothing training) | {} | {:.3} | {:.3} |\n| while the task trains | {n_during} | {:.3} | {:.3} |\n\n",
        r.idle_exports.len(),
        r.median_idle_export_s,
        r.idle_exports.iter().map(|e| e.seconds).fold(0.0, f64::max),
        r.median_training_export_s,
        r.max_training_export_s,
    ));
    out.push_str(&format!(
        "One training step takes {:.2} s. The task ({} steps) was still training at the end of every phase, so an export that waited for it would not have finished inside its phase.\n",
        r.step_seconds, r.task_total_steps,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_uses_the_events_inside_the_window() {
        let t0 = Instant::now();
        let at = |ms: u64, step: u64| (t0 + Duration::from_millis(ms), step);
        let ev = [at(0, 1), at(500, 2), at(1500, 4), at(2500, 6), at(4000, 7)];
        // Events at 0.5 s (step 2) and 2.5 s (step 6) are inside [0.2 s, 3 s]: 4 steps in 2 s.
        let (n, r) = rate(
            &ev,
            t0 + Duration::from_millis(200),
            t0 + Duration::from_millis(3000),
        )
        .unwrap();
        assert_eq!(n, 4);
        assert!((r - 2.0).abs() < 1e-9, "{r}");
        // One event: no rate.
        assert!(rate(
            &ev,
            t0 + Duration::from_millis(3000),
            t0 + Duration::from_secs(5)
        )
        .is_none());
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
