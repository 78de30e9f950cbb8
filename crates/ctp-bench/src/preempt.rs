//! `preempt`: what preemption costs (issue #26 §4). An in-process daemon trains a `low`
//! task; once it is past its first steps a `high` task of another model is submitted. From
//! the two tasks' WatchTask events (timestamped as they arrive here) it measures:
//!
//! - **stop**: from the high task's acceptance (SubmitTask returned) to the low task's
//!   PREEMPTED event, and how many low steps ran meanwhile; the target is at most 2 of its
//!   steps plus its checkpoint write;
//! - **high start**: from the PREEMPTED event to the high task's first step (its claim,
//!   model and data load, first step: its own start-up, not preemption's);
//! - **submit → first step**: the two above together, as the submitter sees it;
//! - **lost work**: steps trained twice (the low task resumes from the step it paused at, so
//!   0 is expected), and the resume overhead: from the high task's end to the low task's
//!   first step after it, less one step time.
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ctp_api::pb;
use pb::task_event::Event;
use tokio::sync::mpsc;

use crate::service::{client, header, samples, submit, Daemon};

#[derive(clap::Args)]
pub struct PreemptArgs {
    /// Model preset of both tasks.
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Repetitions (each on a fresh daemon).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Batch size of both tasks.
    #[arg(long, default_value_t = 32)]
    pub batch: u32,
    /// Also write the rows as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// One repetition's measurements (seconds unless named otherwise).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub step_s: f64,
    pub stop_s: f64,
    pub steps_after_submit: u64,
    pub high_start_s: f64,
    pub submit_to_first_step_s: f64,
    pub steps_trained_twice: i64,
    pub resume_overhead_s: f64,
}

type Timed = (Instant, pb::TaskEvent);

fn watch(addr: String, task: String) -> mpsc::UnboundedReceiver<Timed> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let Ok(mut c) = client(&addr).await else {
            return;
        };
        let req = pb::WatchTaskRequest {
            task_id: task,
            after_seq: 0,
        };
        let Ok(s) = c.watch_task(req).await else {
            return;
        };
        let mut s = s.into_inner();
        while let Ok(Some(ev)) = s.message().await {
            if tx.send((Instant::now(), ev)).is_err() {
                return;
            }
        }
    });
    rx
}

/// Events until `pick` holds (at most `limit`); returns the matching one.
async fn until(
    rx: &mut mpsc::UnboundedReceiver<Timed>,
    seen: &mut Vec<Timed>,
    limit: Duration,
    pick: impl Fn(&Event) -> bool,
) -> Result<Timed> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let got = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .context("timed out waiting for an event")?
            .context("the stream ended")?;
        seen.push(got.clone());
        match &got.1.event {
            Some(e) if pick(e) => return Ok(got),
            Some(Event::Terminal(t)) => bail!("the task ended first: {t:?}"),
            _ => {}
        }
    }
}

fn progress_step(e: &Event) -> Option<u64> {
    match e {
        Event::Progress(p) if !p.losses.is_empty() => Some(p.step),
        _ => None,
    }
}

fn with(mut h: pb::TaskHeader, preset: &str, batch: u32, p: pb::TaskPriority) -> pb::TaskHeader {
    h.preset = preset.into();
    h.priority = p as i32;
    if let Some(s) = h.settings.as_mut() {
        s.batch_size = Some(batch);
    }
    h
}

async fn once(a: &PreemptArgs, rep: usize) -> Result<Row> {
    let env = [
        ("CTP__ENGINE__DEVICE", "\"cpu\""),
        ("CTP__SCHEDULER__PREEMPT_CHECK_SECONDS", "1"),
        ("CTP__SCHEDULER__MIN_RUN_SECONDS", "1"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    let dir = tempfile::tempdir()?;
    let d = Daemon::start_in(dir.path(), env).await?;
    let mut c = client(&d.addr).await?;
    let low_h = with(
        header(&format!("low-{rep}"), 1000),
        &a.preset,
        a.batch,
        pb::TaskPriority::Low,
    );
    let low = submit(&mut c, low_h, samples(160, 64, false), 64).await?;
    let mut low_rx = watch(d.addr.clone(), low.id.clone());
    let mut low_seen = Vec::new();
    let warm = Duration::from_secs(900);
    until(&mut low_rx, &mut low_seen, warm, |e| {
        progress_step(e).is_some_and(|s| s >= 4)
    })
    .await?;
    // Step time: the low task's recent steps.
    let steps: Vec<(Instant, u64)> = low_seen
        .iter()
        .filter_map(|(t, ev)| ev.event.as_ref().and_then(progress_step).map(|s| (*t, s)))
        .collect();
    let (t_a, s_a) = steps[steps.len() - 3];
    let (t_b, s_b) = steps[steps.len() - 1];
    let step_s = (t_b - t_a).as_secs_f64() / (s_b - s_a).max(1) as f64;

    let high_h = with(
        header(&format!("high-{rep}"), 1),
        &a.preset,
        a.batch,
        pb::TaskPriority::High,
    );
    let submitted_at = Instant::now();
    let high = submit(&mut c, high_h, samples(64, 64, false), 64).await?;
    let accepted = Instant::now();
    while let Ok(ev) = low_rx.try_recv() {
        low_seen.push(ev);
    }
    let step_at_accept = low_seen
        .iter()
        .filter_map(|(_, ev)| ev.event.as_ref().and_then(progress_step))
        .max()
        .unwrap_or(0);
    let mut high_rx = watch(d.addr.clone(), high.id.clone());
    let mut high_seen = Vec::new();
    let (t_pre, pre) = until(&mut low_rx, &mut low_seen, warm, |e| {
        matches!(e, Event::Preempted(_))
    })
    .await?;
    let Some(Event::Preempted(pre)) = pre.event else {
        unreachable!()
    };
    let (t_first, _) = until(&mut high_rx, &mut high_seen, warm, |e| {
        progress_step(e).is_some()
    })
    .await?;
    let (t_high_end, _) = until(&mut high_rx, &mut high_seen, warm, |e| {
        matches!(e, Event::Terminal(_))
    })
    .await?;
    let (t_resumed, resumed) = until(&mut low_rx, &mut low_seen, warm, |e| {
        matches!(e, Event::Progress(p) if p.resumed_from_step.is_some() && !p.losses.is_empty())
    })
    .await?;
    let Some(Event::Progress(resumed)) = resumed.event else {
        unreachable!()
    };
    let from = resumed.resumed_from_step.unwrap_or(0);
    c.cancel_task(pb::CancelTaskRequest {
        task_id: low.id.clone(),
    })
    .await?;
    d.stop().await?;
    Ok(Row {
        step_s,
        stop_s: (t_pre - accepted).as_secs_f64(),
        steps_after_submit: pre.step.saturating_sub(step_at_accept),
        high_start_s: (t_first - t_pre).as_secs_f64(),
        submit_to_first_step_s: (t_first - submitted_at).as_secs_f64(),
        steps_trained_twice: pre.step as i64 - from as i64,
        resume_overhead_s: ((t_resumed - t_high_end).as_secs_f64() - step_s).max(0.0),
    })
}

pub async fn run(a: &PreemptArgs) -> Result<String> {
    let mut rows = Vec::new();
    for rep in 0..a.reps {
        let r = once(a, rep)
            .await
            .with_context(|| format!("repetition {rep}"))?;
        eprintln!("rep {rep}: {r:?}");
        rows.push(r);
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(table(a, &rows))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn table(a: &PreemptArgs, rows: &[Row]) -> String {
    let mut out = format!(
        "Preset {}, batch {}, CPU, preemption checked every 1 s; each row a fresh daemon.\n\n\
         | rep | step s | stop s (accept → PREEMPTED) | low steps after accept | high start s | submit → first high step s | steps trained twice | resume overhead s |\n\
         |---|---|---|---|---|---|---|---|\n",
        a.preset, a.batch
    );
    for (i, r) in rows.iter().enumerate() {
        out.push_str(&format!(
            "| {i} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {} | {:.2} |\n",
            r.step_s,
            r.stop_s,
            r.steps_after_submit,
            r.high_start_s,
            r.submit_to_first_step_s,
            r.steps_trained_twice,
            r.resume_overhead_s
        ));
    }
    let m = |f: fn(&Row) -> f64| median(rows.iter().map(f).collect());
    out.push_str(&format!(
        "| median | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} |\n",
        m(|r| r.step_s),
        m(|r| r.stop_s),
        m(|r| r.steps_after_submit as f64),
        m(|r| r.high_start_s),
        m(|r| r.submit_to_first_step_s),
        m(|r| r.steps_trained_twice as f64),
        m(|r| r.resume_overhead_s)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_median_row() {
        let a = PreemptArgs {
            preset: "tiny".into(),
            reps: 2,
            batch: 8,
            json: None,
        };
        let row = |s: f64| Row {
            step_s: s,
            stop_s: 2.0 * s,
            steps_after_submit: 1,
            high_start_s: 1.0,
            submit_to_first_step_s: 3.0,
            steps_trained_twice: 0,
            resume_overhead_s: 0.5,
        };
        let t = table(&a, &[row(1.0), row(3.0), row(2.0)]);
        assert!(
            t.contains("| median | 2.00 | 4.00 | 1 | 1.00 | 3.00 | 0 | 0.50 |"),
            "{t}"
        );
    }
}
