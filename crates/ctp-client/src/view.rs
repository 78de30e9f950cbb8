//! Showing a followed task: a live progress bar on a terminal, throttled plain lines when
//! stderr is a file or pipe (CI logs), or one JSON object per event with `--json`.
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::output::{event_json, state_name};
use super::watch::Sink;
use ctp_api::pb;
use ctp_api::pb::task_event::Event;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live bar on stderr.
    Bar,
    /// Plain lines on stderr, at most one progress line per interval.
    Lines,
    /// NDJSON events on stdout.
    Json,
}

impl Mode {
    /// `--json` wins; otherwise a bar only when stderr is a terminal.
    pub fn pick(json: bool) -> Mode {
        if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

/// One-line summary of a progress update: what a person watching training wants to see.
pub fn progress_line(p: &pb::Progress, last_sync: Option<&pb::MomentumSync>) -> String {
    let mut parts = Vec::new();
    if p.total_epochs > 0 {
        parts.push(format!("epoch {}/{}", p.epoch, p.total_epochs));
    }
    // `total` first, then the individual terms in name order. The learning rate travels in
    // the same map but is no loss: it gets its own part in scientific notation (`3.0e-4`;
    // three decimals would print 0.000).
    let mut losses: Vec<(&String, &f64)> = p.losses.iter().filter(|(k, _)| *k != "lr").collect();
    losses.sort_by_key(|(k, _)| (k.as_str() != "total", k.as_str()));
    if !losses.is_empty() {
        let terms: Vec<String> = losses.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
        parts.push(terms.join(" "));
    }
    if let Some(lr) = p.losses.get("lr") {
        parts.push(format!("lr {lr:.1e}"));
    }
    if p.samples_per_second > 0.0 {
        parts.push(format!("{:.1} samples/s", p.samples_per_second));
    }
    parts.push(format!("syncs {}", p.momentum_syncs));
    if let Some(d) = p.drift {
        parts.push(format!("drift {d:.4}"));
    }
    if let Some(s) = last_sync {
        parts.push(format!("last sync @{} d={:.4} k={}", s.step, s.drift, s.k));
    }
    if let Some(eta) = p.eta_seconds {
        parts.push(format!("ETA {}", duration(eta)));
    }
    parts.join(" | ")
}

/// Where training stands: `step 40/100 (40.0%)`, or `starting…` while the total is not known
/// yet (the first snapshot of a queued or just-claimed task carries zeros).
pub fn step_label(p: &pb::Progress) -> String {
    if p.total_steps == 0 {
        "starting…".to_string()
    } else {
        format!("step {}/{} ({:.1}%)", p.step, p.total_steps, p.percent)
    }
}

/// `3725` → `1h02m05s`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Renders events for a person (bar or lines) or a program (JSON lines).
pub struct View {
    mode: Mode,
    bar: ProgressBar,
    last_sync: Option<pb::MomentumSync>,
    last_line: Option<Instant>,
    line_every: Duration,
    /// Whether the bar has switched from the spinner to steps (the total became known).
    bar_shown: bool,
}

/// The bar once the total number of steps is known.
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} steps  {msg}",
    )
    .expect("static template")
    .progress_chars("=> ")
}

impl View {
    /// A view in `mode`.
    pub fn new(mode: Mode) -> View {
        let bar = if mode == Mode::Bar {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            // No `0/0 steps` bar before the total is known: a spinner until then.
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .expect("static template"),
            );
            bar.set_message("starting…");
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::hidden()
        };
        View {
            mode,
            bar,
            last_sync: None,
            last_line: None,
            line_every: Duration::from_secs(10),
            bar_shown: false,
        }
    }

    /// A message above the bar (or a plain stderr line).
    fn say(&self, msg: &str) {
        match self.mode {
            Mode::Bar => self.bar.println(msg),
            Mode::Lines => eprintln!("{msg}"),
            Mode::Json => {}
        }
    }

    fn progress(&mut self, p: &pb::Progress) {
        let line = progress_line(p, self.last_sync.as_ref());
        match self.mode {
            Mode::Bar => {
                if p.total_steps > 0 {
                    if !self.bar_shown {
                        self.bar.set_style(bar_style());
                        self.bar_shown = true;
                    }
                    self.bar.set_length(p.total_steps);
                    self.bar.set_position(p.step);
                    self.bar.set_message(line);
                } else {
                    self.bar.set_message(format!("starting… | {line}"));
                }
            }
            Mode::Lines => {
                let due = self
                    .last_line
                    .is_none_or(|t| t.elapsed() >= self.line_every);
                if due || p.step == p.total_steps {
                    self.last_line = Some(Instant::now());
                    eprintln!("{} | {line}", step_label(p));
                }
            }
            Mode::Json => {}
        }
    }

    /// Clears the bar (call before printing a final result).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Sink for View {
    fn event(&mut self, ev: &pb::TaskEvent) {
        if self.mode == Mode::Json {
            println!("{}", event_json(ev));
            return;
        }
        match &ev.event {
            Some(Event::Snapshot(t)) => {
                self.say(&format!(
                    "task {} ({} on model {}): {}",
                    t.id,
                    t.name,
                    t.model,
                    state_name(t.state)
                ));
                if let Some(p) = &t.progress {
                    self.progress(p);
                }
            }
            Some(Event::Progress(p)) => self.progress(p),
            Some(Event::Sync(s)) => self.last_sync = Some(*s),
            Some(Event::Log(l)) => self.say(&l.message),
            Some(Event::ServerClosing(c)) => self.say(&c.message),
            Some(Event::Preempted(p)) => self.say(&format!(
                "preempted by task {} at step {} (time #{}); queued again, resumes from there",
                p.by_task_id, p.step, p.count
            )),
            Some(Event::Terminal(t)) => {
                self.bar.finish_and_clear();
                let mut msg = format!("task {}", state_name(t.state));
                if let Some(v) = t.produced_version {
                    msg.push_str(&format!(": version {v}"));
                }
                if !t.error.is_empty() {
                    msg.push_str(&format!(": {}", t.error));
                }
                if let Some(why) = &t.rejection_reason {
                    msg.push_str(&format!(" REJECTED, head unchanged ({why})"));
                }
                eprintln!("{msg}");
            }
            Some(Event::Heartbeat(_)) | None => {}
        }
    }

    fn reconnecting(&mut self, attempt: u32, delay: Duration, why: &str) {
        self.say(&format!(
            "connection lost ({why}); reconnecting in {:.1}s (attempt {attempt})",
            delay.as_secs_f64()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_shows_losses_rate_syncs_eta() {
        let mut p = pb::Progress {
            epoch: 2,
            total_epochs: 5,
            step: 40,
            total_steps: 100,
            percent: 40.0,
            eta_seconds: Some(75.0),
            samples_per_second: 123.45,
            momentum_syncs: 7,
            drift: Some(0.00412),
            ..Default::default()
        };
        p.losses.insert("itc".into(), 1.5);
        p.losses.insert("total".into(), 2.25);
        let sync = pb::MomentumSync {
            step: 38,
            k: 4,
            drift: 0.0123,
            threshold: 0.01,
            duration_ms: 1.0,
        };
        let line = progress_line(&p, Some(&sync));
        assert_eq!(
            line,
            "epoch 2/5 | total 2.250 itc 1.500 | 123.5 samples/s | syncs 7 | drift 0.0041 | \
             last sync @38 d=0.0123 k=4 | ETA 1m15s"
        );
        assert_eq!(step_label(&p), "step 40/100 (40.0%)");
        assert_eq!(duration(3725.0), "1h02m05s");
        assert_eq!(duration(4.2), "4s");
    }

    #[test]
    fn learning_rate_prints_in_scientific_notation_not_as_a_loss() {
        let mut p = pb::Progress::default();
        p.losses.insert("total".into(), 2.25);
        p.losses.insert("lr".into(), 3e-4);
        assert_eq!(progress_line(&p, None), "total 2.250 | lr 3.0e-4 | syncs 0");
        p.losses.insert("lr".into(), 1.5e-5);
        assert!(progress_line(&p, None).contains("lr 1.5e-5"));
    }

    #[test]
    fn no_step_count_before_the_total_is_known() {
        let p = pb::Progress::default();
        assert_eq!(step_label(&p), "starting…");
        assert!(!step_label(&p).contains("0/0"));
    }
}
