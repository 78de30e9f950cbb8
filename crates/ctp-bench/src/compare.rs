//! `compare`: ctp's training step against its PyTorch peers (bench/pytorch_step.py) in one
//! invocation, per preset and precision: eager, eager + TF32 (fp32 on CUDA), `torch.compile`
//! (default mode; `max-autotune` behind a flag). Each row is the median (min, max) of
//! `--reps` repetitions of `--steps` measured steps after warm-up; ctp's drift-gated row is
//! measured in the same process as its every-step row, the repetitions interleaved.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use ctp::trainer::EngineConfig;
use serde::Serialize;

use crate::step::{Repeat, Row, StepSettings};

/// The floor for a comparison row (#27 §1): at least 3 repetitions of 30 steps.
const MIN_REPS: i64 = 3;
const MIN_STEPS: i64 = 30;

/// Settings of `compare`.
#[derive(Args, Debug)]
pub struct CompareSettings {
    /// Comma-separated presets: small, base.
    #[arg(long = "presets", alias = "preset", default_value = "small")]
    pub presets: String,
    /// Comma-separated precisions: auto (as ctpd: per preset on CUDA, base bf16 and the others fp32; fp32 on CPU), bf16 (PyTorch: bf16
    /// autocast) or fp32.
    #[arg(long = "precisions", alias = "precision", default_value = "auto")]
    pub precisions: String,
    #[arg(long, default_value_t = 32)]
    pub batch: i64,
    /// Measured steps per repetition.
    #[arg(long, default_value_t = 30)]
    pub steps: i64,
    /// Repetitions per row (the row shows their median, min and max).
    #[arg(long, default_value_t = 3)]
    pub reps: i64,
    /// Unmeasured steps before the measured ones (ctp: at the start of each measured task;
    /// eager PyTorch: once per process).
    #[arg(long, default_value_t = 2)]
    pub warmup: i64,
    /// Unmeasured steps of a compiled PyTorch peer (they compile; timed apart as compile_s).
    #[arg(long, default_value_t = 5)]
    pub compile_warmup: i64,
    #[arg(long, default_value_t = 2)]
    pub threads: i32,
    /// cpu, cuda or cuda:N (every implementation runs there).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Random weights with the real shapes, in every implementation.
    #[arg(long)]
    pub random_weights: bool,
    /// Drift threshold of ctp's gated row.
    #[arg(long = "gated-threshold", default_value_t = 0.02)]
    pub gated: f64,
    /// No torch.compile peer (its compile takes minutes on a CPU).
    #[arg(long)]
    pub no_compile: bool,
    /// Add a `torch.compile(mode="max-autotune")` peer.
    #[arg(long)]
    pub max_autotune: bool,
    /// Stop a PyTorch peer after this many seconds (0 = never); its row then says so.
    #[arg(long, default_value_t = 0)]
    pub peer_timeout: u64,
    /// Python with torch 2.11 + safetensors + tokenizers.
    #[arg(long, env = "CTP_PYTHON", default_value = "python3")]
    pub python: String,
    /// Write every table and raw measurement as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the Markdown (machine line, tables, notes, command) here too.
    #[arg(long)]
    pub md: Option<PathBuf>,
}

/// `compare-one` (used by `compare`): ctp's step with repetitions and a paired threshold in
/// one process; prints one JSON row.
#[derive(Args, Debug)]
pub struct CompareOne {
    #[command(flatten)]
    pub step: StepSettings,
    #[command(flatten)]
    pub repeat: Repeat,
}

/// Median, min and max of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    /// The spread of `xs` (the median of an even count is the mean of the middle two); `None`
    /// when empty or when any value is not finite.
    pub fn of(xs: &[f64]) -> Option<Spread> {
        if xs.is_empty() || xs.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

/// One row of a comparison table.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    pub implementation: String,
    /// Momentum sync: "every step" or "drift-gated (threshold t)".
    pub sync: String,
    /// A PyTorch peer (else ctp).
    pub peer: bool,
    /// TF32 for fp32 matmuls, as in effect (false on a CPU).
    pub tf32: Option<bool>,
    /// Samples/s over the repetitions.
    pub samples_per_sec: Option<Spread>,
    /// Median measured step, milliseconds.
    pub step_ms: Option<f64>,
    /// Compile time of a compiled peer (warm-up wall time less as many median steps).
    pub compile_s: Option<f64>,
    /// ctp: momentum syncs / all steps of its measured tasks.
    pub syncs: Option<String>,
    /// Why this row has no measurement.
    pub error: Option<String>,
    /// Graphs a compiled peer compiled after its warm-up (should be 0).
    pub recompiles_measured: Option<i64>,
}

/// The index of the fastest measured peer (highest median samples/s).
pub fn best_peer(rows: &[CompareRow]) -> Option<usize> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| r.peer)
        .filter_map(|(i, r)| r.samples_per_sec.map(|s| (i, s.median)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// The PyTorch peers of one table.
#[derive(Debug, Clone, PartialEq)]
struct Peer {
    name: &'static str,
    tf32: bool,
    compile: &'static str,
}

fn peers(c: &CompareSettings, precision: &str) -> (Vec<Peer>, Vec<String>) {
    let cuda = c.device.starts_with("cuda");
    let mut notes = Vec::new();
    let mut p = vec![Peer {
        name: "PyTorch eager",
        tf32: false,
        compile: "none",
    }];
    if cuda && precision == "fp32" {
        p.push(Peer {
            name: "PyTorch eager + TF32",
            tf32: true,
            compile: "none",
        });
    } else if cuda {
        notes.push(
            "eager + TF32 skipped: TF32 applies to fp32 (bf16 autocast runs the matmuls in bf16)"
                .into(),
        );
    } else {
        notes.push("TF32 rows skipped: TF32 exists only on CUDA".into());
    }
    // A compiled peer runs as the user would run it: with TF32 when fp32 on CUDA.
    let tf32 = cuda && precision == "fp32";
    if c.no_compile {
        notes.push("no compiled peer (--no-compile)".into());
    } else {
        p.push(Peer {
            name: "PyTorch compiled (default)",
            tf32,
            compile: "default",
        });
    }
    if c.max_autotune {
        p.push(Peer {
            name: "PyTorch compiled (max-autotune)",
            tf32,
            compile: "max-autotune",
        });
    }
    (p, notes)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs `cmd` with its output in files (no pipe to fill) and at most `timeout` (0 = none).
fn run_with_timeout(cmd: &mut Command, timeout: u64) -> Result<(bool, String, String, bool)> {
    let dir = tempfile::tempdir()?;
    let (o, e) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdout(std::fs::File::create(&o)?)
        .stderr(std::fs::File::create(&e)?)
        .spawn()
        .context("starting the PyTorch step")?;
    let start = Instant::now();
    let (status, timed_out) = loop {
        if let Some(s) = child.try_wait()? {
            break (s, false);
        }
        if timeout > 0 && start.elapsed() > Duration::from_secs(timeout) {
            child.kill().ok();
            break (child.wait()?, true);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    Ok((status.success(), read(&o), read(&e), timed_out))
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn run_peer(
    c: &CompareSettings,
    preset: &str,
    precision: &str,
    peer: &Peer,
) -> (CompareRow, serde_json::Value) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/pytorch_step.py");
    let script = std::env::var("CTP_PYTORCH_STEP").unwrap_or_else(|_| script.into());
    let warmup = if peer.compile == "none" {
        c.warmup
    } else {
        c.compile_warmup
    };
    let mut cmd = Command::new(&c.python);
    cmd.arg(&script)
        .arg(EngineConfig::default().weights_dir)
        .args([
            c.batch.to_string(),
            c.steps.to_string(),
            c.threads.to_string(),
        ])
        .args(["--preset", preset, "--precision", precision])
        .args(["--device", &c.device, "--compile", peer.compile])
        .args([
            "--warmup",
            &warmup.to_string(),
            "--reps",
            &c.reps.to_string(),
        ]);
    if peer.tf32 {
        cmd.arg("--tf32");
    }
    if c.random_weights {
        cmd.arg("--random-weights");
    }
    let mut row = CompareRow {
        implementation: peer.name.into(),
        sync: "every step".into(),
        peer: true,
        tf32: None,
        samples_per_sec: None,
        step_ms: None,
        compile_s: None,
        syncs: None,
        error: None,
        recompiles_measured: None,
    };
    let fail = |mut row: CompareRow, msg: String, stderr: &str| {
        let raw = serde_json::json!({"error": msg, "stderr_tail": tail(stderr, 40)});
        row.error = Some(msg);
        (row, raw)
    };
    let (ok, out, err, timed_out) = match run_with_timeout(&mut cmd, c.peer_timeout) {
        Ok(x) => x,
        Err(e) => return fail(row, format!("{e:#}"), ""),
    };
    if timed_out {
        return fail(row, format!("stopped after {} s", c.peer_timeout), &err);
    }
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if !ok {
        return fail(
            row,
            format!("failed: {}", last.chars().take(160).collect::<String>()),
            &err,
        );
    }
    let v: serde_json::Value = match serde_json::from_str(out.trim()) {
        Ok(v) => v,
        Err(e) => return fail(row, format!("unreadable output: {e}"), &err),
    };
    let floats = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default()
    };
    row.implementation = format!("{} {}", peer.name, v["torch"].as_str().unwrap_or(""));
    row.tf32 = v["tf32"].as_bool();
    row.samples_per_sec = Spread::of(&floats("rep_samples_per_sec"));
    row.step_ms = Spread::of(&floats("step_ms")).map(|s| s.median);
    row.compile_s = v["compile_s"].as_f64();
    row.recompiles_measured = v["recompiles_measured"].as_i64();
    (row, v)
}

fn ctp_rows(row: &Row, gated: f64) -> Vec<CompareRow> {
    let one = |r: &Row, sync: String| CompareRow {
        implementation: "ctp".into(),
        sync,
        peer: false,
        tf32: Some(r.tf32),
        samples_per_sec: Spread::of(&r.rep_samples_per_sec),
        step_ms: Spread::of(&r.step_ms).map(|s| s.median),
        compile_s: None,
        syncs: Some(format!("{}/{}", r.syncs, r.total_steps)),
        error: None,
        recompiles_measured: None,
    };
    let mut v = vec![one(row, "every step (threshold 0)".into())];
    if let Some(g) = &row.paired {
        v.push(one(g, format!("drift-gated (threshold {gated}), paired")));
    }
    v
}

/// One table's Markdown: header, rows, ratio line and notes.
pub fn table_md(rows: &[CompareRow]) -> String {
    let best = best_peer(rows);
    let best_sps = best.and_then(|i| rows[i].samples_per_sec).map(|s| s.median);
    let mut md = String::from(
        "| implementation | momentum sync | TF32 | samples/s median | min | max | step ms (median) | compile s | ÷ best peer | syncs |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let yes_no = |b: Option<bool>| match b {
        Some(true) => "on",
        Some(false) => "off",
        None => "-",
    };
    for r in rows {
        let Some(s) = r.samples_per_sec else {
            md += &format!(
                "| {} | {} | {} | {} | - | - | - | - | - | - |\n",
                r.implementation,
                r.sync,
                yes_no(r.tf32),
                r.error.as_deref().unwrap_or("no measurement")
            );
            continue;
        };
        md += &format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |\n",
            r.implementation,
            r.sync,
            yes_no(r.tf32),
            s.median,
            s.min,
            s.max,
            r.step_ms.map_or("-".into(), |m| format!("{m:.0}")),
            r.compile_s.map_or("-".into(), |c| format!("{c:.1}")),
            best_sps.map_or("-".into(), |b| format!("{:.2}x", s.median / b)),
            r.syncs.as_deref().unwrap_or("-"),
        );
    }
    md
}

/// ctp against its PyTorch peers, per preset and precision. Returns the Markdown.
pub fn compare(c: &CompareSettings) -> Result<String> {
    if c.device == "auto" {
        bail!("compare needs an explicit --device (cpu, cuda or cuda:N)");
    }
    if c.steps < 1 || c.reps < 1 || c.warmup < 0 || c.compile_warmup < 1 {
        bail!("--steps and --reps must be >= 1, --warmup >= 0, --compile-warmup >= 1");
    }
    let started = Instant::now();
    let mut md = String::new();
    let mut tables = Vec::new();
    for preset in c.presets.split(',') {
        for precision in c.precisions.split(',') {
            // `auto` as ctpd resolves it: per preset on CUDA (base bf16, the others fp32).
            let precision = match (precision, ctp::trainer::Preset::parse(preset)) {
                ("auto", Some(p)) => {
                    ctp::trainer::Precision::parse("auto", p, c.device.starts_with("cuda"))
                        .map_err(anyhow::Error::msg)?
                        .as_str()
                }
                (p, _) => p,
            };
            let load_before = load_average();
            let t0 = Instant::now();
            let every = StepSettings {
                preset: preset.into(),
                batch: c.batch,
                steps: c.steps,
                threshold: 0.0,
                device: c.device.clone(),
                threads: c.threads,
                precision: precision.into(),
                random_weights: c.random_weights,
                profile: false,
            }
            .run_child_repeated(Some(&Repeat {
                warmup: c.warmup,
                reps: c.reps,
                paired_threshold: Some(c.gated),
                no_tf32: false,
            }))?;
            let mut rows = ctp_rows(&every, c.gated);
            let (peer_list, notes) = peers(c, precision);
            let mut raw_peers = Vec::new();
            for p in &peer_list {
                let (row, raw) = run_peer(c, preset, precision, p);
                rows.push(row);
                raw_peers.push(raw);
            }
            let load_after = load_average();
            let best = best_peer(&rows);
            md += &format!(
                "### `{preset}` {precision}, batch {}, {}\n\n",
                c.batch, every.device
            );
            md += &table_md(&rows);
            md += "\n";
            if let (Some(b), Some(ctp)) = (best, rows[0].samples_per_sec) {
                let bs = rows[b].samples_per_sec.map_or(f64::NAN, |s| s.median);
                md += &format!(
                    "ctp (every step) ÷ best peer ({}): **{:.2}x**.",
                    rows[b].implementation,
                    ctp.median / bs
                );
                let gated = rows.get(1).filter(|r| !r.peer);
                if let Some(g) = gated.and_then(|r| r.samples_per_sec) {
                    md += &format!(
                        " Drift-gated ÷ every step (same process): {:.3}x.",
                        g.median / ctp.median
                    );
                }
                md += "\n";
            } else {
                md += "No PyTorch peer measured.\n";
            }
            for r in &rows {
                if r.recompiles_measured.is_some_and(|n| n > 0) {
                    md += &format!(
                        "\n**{}: {} graph(s) compiled during the measured steps** (raise --compile-warmup).\n",
                        r.implementation,
                        r.recompiles_measured.unwrap_or(0)
                    );
                }
            }
            let mut all_notes = notes;
            all_notes.push(format!(
                "load average (1/5/15 min) before {load_before}, after {load_after}; {:.0} s",
                t0.elapsed().as_secs_f64()
            ));
            md += &format!("\nNotes: {}.\n\n", all_notes.join("; "));
            tables.push(serde_json::json!({
                "preset": preset, "precision": precision, "device": every.device,
                "batch": c.batch, "rows": rows, "best_peer": best.map(|b| &rows[b].implementation),
                "notes": all_notes, "load_before": load_before, "load_after": load_after,
                "ctp": every, "peers": raw_peers,
            }));
        }
    }
    let below = c.reps < MIN_REPS || c.steps < MIN_STEPS;
    let mut head = format!(
        "Each row: median (min, max) of {} repetitions of {} measured steps, samples/s. ctp: {} warm-up steps at the start of each measured task; the drift-gated row runs in the same process as the every-step row, the repetitions alternating which goes first. PyTorch: one process per row, {} warm-up steps ({} for a compiled peer, whose wall time less as many median steps is `compile s`, excluded from samples/s), then the repetitions back to back. TF32: fp32 matmuls on TF32 tensor cores (cuDNN convolutions may use TF32 in every CUDA row, PyTorch's and libtorch's default); ctp runs with `engine.tf32` on, its default. `÷ best peer`: row median ÷ the fastest PyTorch peer's median.\n\n",
        c.reps, c.steps, c.warmup, c.warmup, c.compile_warmup
    );
    if below {
        head += &format!(
            "**Below the issue's floor of {MIN_REPS} repetitions × {MIN_STEPS} steps: a smoke run, not a measurement.**\n\n"
        );
    }
    let command = std::iter::once("ctp-bench".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let md = format!(
        "{head}{md}Total {:.0} s. Command: `{command}`\n",
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &c.json {
        let v = serde_json::json!({
            "machine": crate::machine(), "reps": c.reps, "steps": c.steps, "warmup": c.warmup,
            "compile_warmup": c.compile_warmup, "batch": c.batch, "threads": c.threads,
            "device": c.device, "random_weights": c.random_weights, "gated_threshold": c.gated,
            "below_floor": below, "command": command, "tables": tables,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    if let Some(path) = &c.md {
        std::fs::write(path, format!("{}\n\n{md}", crate::machine()))?;
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_odd_and_even_counts() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Spread::of(&[4.0, 1.0, 10.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 10.0, 4));
        let s = Spread::of(&[5.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (5.0, 5.0, 5.0));
    }

    #[test]
    fn spread_refuses_empty_and_non_finite() {
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[1.0, f64::NAN, 2.0]), None);
        assert_eq!(Spread::of(&[1.0, f64::INFINITY]), None);
    }

    fn row(peer: bool, median: Option<f64>) -> CompareRow {
        CompareRow {
            implementation: "x".into(),
            sync: "every step".into(),
            peer,
            tf32: None,
            samples_per_sec: median.map(|m| Spread {
                median: m,
                min: m,
                max: m,
                n: 1,
            }),
            step_ms: None,
            compile_s: None,
            syncs: None,
            error: None,
            recompiles_measured: None,
        }
    }

    #[test]
    fn best_peer_ignores_ctp_and_failed_rows() {
        // ctp fastest, a failed peer, two measured peers: the faster measured peer wins.
        let rows = [
            row(false, Some(100.0)),
            row(true, None),
            row(true, Some(40.0)),
            row(true, Some(60.0)),
        ];
        assert_eq!(best_peer(&rows), Some(3));
        assert_eq!(best_peer(&rows[..2]), None);
        let md = table_md(&rows);
        assert!(
            md.contains("| 100.0 | 100.0 | 100.0 | - | - | 1.67x |"),
            "{md}"
        );
        assert!(
            md.contains("| 60.0 | 60.0 | 60.0 | - | - | 1.00x |"),
            "{md}"
        );
    }

    fn settings(device: &str) -> CompareSettings {
        CompareSettings {
            presets: "small".into(),
            precisions: "fp32".into(),
            batch: 8,
            steps: 30,
            reps: 3,
            warmup: 2,
            compile_warmup: 5,
            threads: 2,
            device: device.into(),
            random_weights: false,
            gated: 0.02,
            no_compile: false,
            max_autotune: false,
            peer_timeout: 0,
            python: "python3".into(),
            json: None,
            md: None,
        }
    }

    #[test]
    fn tf32_peer_only_for_fp32_on_cuda() {
        let names =
            |c: &CompareSettings, p| peers(c, p).0.iter().map(|p| p.name).collect::<Vec<_>>();
        let cpu = settings("cpu");
        assert_eq!(
            names(&cpu, "fp32"),
            ["PyTorch eager", "PyTorch compiled (default)"]
        );
        assert!(peers(&cpu, "fp32").1[0].contains("TF32 rows skipped"));
        let mut cuda = settings("cuda");
        assert_eq!(
            names(&cuda, "fp32"),
            [
                "PyTorch eager",
                "PyTorch eager + TF32",
                "PyTorch compiled (default)"
            ]
        );
        assert!(peers(&cuda, "fp32").0[2].tf32);
        assert_eq!(
            names(&cuda, "bf16"),
            ["PyTorch eager", "PyTorch compiled (default)"]
        );
        cuda.no_compile = true;
        cuda.max_autotune = true;
        assert_eq!(
            names(&cuda, "bf16"),
            ["PyTorch eager", "PyTorch compiled (max-autotune)"]
        );
    }
}
