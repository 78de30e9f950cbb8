//! The `ctp-bench emojicl` command line: flags, the rows they select, and the run that
//! executes the missing cells and rebuilds the summary.
use anyhow::{bail, Context, Result};

use super::{cells, emojicl, protocol, summary, sweep};

#[derive(clap::Args)]
pub struct EmojiclArgs {
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
    /// Momentum queue rows of CTP runs (default: the paper's 1,024). ctpd's defaults are
    /// `--queue-size <8 × batch> --tp-weight 10 --ctp-threshold 0.05`; run them into another
    /// `--out`.
    #[arg(long)]
    queue_size: Option<u32>,
    /// Drift threshold of the `CTP` and `CTP+replay` rows (default 0: the paper's per-step
    /// momentum update). The gated and fidelity rows keep their own.
    #[arg(long, default_value_t = 0.0)]
    ctp_threshold: f64,
    /// Replay methods: samples of each earlier task per batch.
    #[arg(long, default_value_t = 0)]
    replay_per_task: u32,
    /// Replay methods: replayed samples as a fraction of the batch.
    #[arg(long, default_value_t = 0.25)]
    replay_fraction: f64,
    /// Hold this many base emoji of every category out of all tasks and register them as an
    /// anchor suite on each cell's model (issue #25 §2): the summary then reports each
    /// method's Rm on it after every task and its loss from task 1 to the last. 0 (the
    /// default) keeps the split of the committed tables; N > 0 changes every task's data
    /// (and is part of a cell's knobs).
    #[arg(long, default_value_t = 0)]
    anchor_per_category: usize,
    /// EmojiCL task indices (default all nine).
    #[arg(long, default_value = "0,1,2,3,4,5,6,7,8")]
    tasks: String,
    #[arg(long, default_value = "auto")]
    device: String,
    /// The daemon's `engine.precision` (auto: bf16 on CUDA, fp32 on CPU).
    #[arg(long, default_value = "auto")]
    precision: String,
    /// libtorch intra-op threads of the daemon (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// Run only the row at this 0-based index of the rows `--methods` expands to (parallel
    /// runners give each process one row of `gated` or `fidelity`).
    #[arg(long)]
    row_index: Option<usize>,
    /// Only rebuild emojicl.{json,md} from the finished cells.
    #[arg(long)]
    summarize_only: bool,
    /// Also write a `ctpctl report` per cell under `<out>/emojicl/reports` (about 1 MB each).
    #[arg(long)]
    reports: bool,
    /// Where a cell in progress keeps its daemon's data so that a killed run resumes it
    /// (default: `$CTP_CACHE/emojicl-work`, else `~/.cache/ctp/emojicl-work`). A cell's folder
    /// is deleted when the cell is written.
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
    /// Steps between the daemon's mid-task checkpoints (0 = none: a resumed cell restarts its
    /// interrupted task). Each costs a write of the weights and AdamW moments; on a GPU, where
    /// a task takes seconds, use 0.
    #[arg(long, default_value_t = 25)]
    checkpoint_every: u32,
    /// Take the drift-gated sweep (rows "CTP gated …" with their threshold-0 pairs) from the
    /// cells of this results folder instead of `--out`'s, e.g. a sweep that ran on another
    /// machine. Its rows are marked with the folder in emojicl.json.
    #[arg(long)]
    sweep_from: Option<std::path::PathBuf>,
    /// Folder for results (summary, reports); cells go to `<out>/emojicl/cells`.
    #[arg(long, default_value = "bench/results")]
    out: std::path::PathBuf,
}

fn emojicl_methods(a: &EmojiclArgs) -> Result<Vec<protocol::Method>> {
    let mk = |name: &str, method: &str, bn: &str, threshold: f64| protocol::Method {
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
        queue_size: a.queue_size.filter(|_| method == "ctp").map(i64::from),
        momentum_reference_steps: None,
    };
    let replay = |mut m: protocol::Method| {
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
            "ctp" => list.push(mk("CTP", "ctp", "frozen", a.ctp_threshold)),
            "seqft-replay" => list.push(replay(mk("SeqFT+replay", "seqft", "frozen", 0.0))),
            "ctp-replay" => list.push(replay(mk("CTP+replay", "ctp", "frozen", a.ctp_threshold))),
            "joint" => list.push(protocol::Method {
                joint: true,
                ..mk("Joint", "seqft", "frozen", 0.0)
            }),
            "gated" => {
                for t in a.thresholds.split(',') {
                    let v: f64 = t.parse().context("thresholds")?;
                    list.push(mk(&format!("CTP gated {t}"), "ctp", "frozen", v));
                    for n in a.gated_check_every.split(',').filter(|n| !n.is_empty()) {
                        let every: u32 = n.parse().context("gated-check-every")?;
                        list.push(protocol::Method {
                            check_every: Some(every),
                            ..mk(&format!("CTP gated {t} every {n}"), "ctp", "frozen", v)
                        });
                    }
                }
            }
            "fidelity" => {
                // Issue #10 item 2: one change from `CTP` each.
                list.push(protocol::Method {
                    task0_plain: true,
                    ..mk("CTP, paper-era task 0", "ctp", "frozen", 0.0)
                });
                list.push(protocol::Method {
                    queue_size: Some(i64::from(a.batch) * 8),
                    ..mk(&format!("CTP, queue {}", a.batch * 8), "ctp", "frozen", 0.0)
                });
                list.push(protocol::Method {
                    momentum_reference_steps: Some(1000),
                    ..mk(
                        "CTP, task-0 momentum scaled to 1000 steps",
                        "ctp",
                        "frozen",
                        0.0,
                    )
                });
                for w in [0.1, 0.3] {
                    list.push(protocol::Method {
                        tp_weight: w,
                        ..mk(&format!("CTP, TP weight {w}"), "ctp", "frozen", 0.0)
                    });
                    list.push(protocol::Method {
                        momentum_weight: w,
                        ..mk(&format!("CTP, momentum weight {w}"), "ctp", "frozen", 0.0)
                    });
                }
                // Beyond the list (appended, so earlier row indices stay): TP weight
                // 0.1 forgot more than 1 on seed 0, so the other direction.
                list.push(protocol::Method {
                    tp_weight: 3.0,
                    ..mk("CTP, TP weight 3", "ctp", "frozen", 0.0)
                });
                // On seed 0 the smaller queue gave the most Rm and TP weight 3 the least
                // forgetting: do they add up? And does more TP keep cutting forgetting?
                let small_queue_with_tp = |w: f64| protocol::Method {
                    tp_weight: w,
                    queue_size: Some(i64::from(a.batch) * 8),
                    ..mk(
                        &format!("CTP, queue {} + TP weight {w}", a.batch * 8),
                        "ctp",
                        "frozen",
                        0.0,
                    )
                };
                list.push(small_queue_with_tp(3.0));
                list.push(protocol::Method {
                    tp_weight: 10.0,
                    ..mk("CTP, TP weight 10", "ctp", "frozen", 0.0)
                });
                // TP 10 met the forgetting target on seed 0 at some Rm; the small queue
                // gave Rm: both at once.
                list.push(small_queue_with_tp(10.0));
                // Row 10 met both CTP targets on three seeds; does the drift gate (0.05 on the
                // paper's weights) still pay on top of it? It did on three seeds: row 11 is
                // ctpd's defaults.
                list.push(protocol::Method {
                    threshold: 0.05,
                    name: format!("CTP, queue {} + TP weight 10 + threshold 0.05", a.batch * 8),
                    ..small_queue_with_tp(10.0)
                });
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

/// The fidelity row whose knobs are ctpd's training defaults at batch 32 (config.rs
/// `TrainingDefaults`: queue 8 × batch, TP weight 10, drift threshold 0.05; every other knob
/// the paper's).
const CTPD_DEFAULTS_ROW: &str = "CTP, queue 256 + TP weight 10 + threshold 0.05";

fn default_work_dir() -> std::path::PathBuf {
    let cache = std::env::var_os("CTP_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/ctp")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("emojicl-work")
}

pub fn run(a: &EmojiclArgs) -> Result<()> {
    let mut methods = emojicl_methods(a)?;
    // A summary covers every finished cell, whichever row a parallel runner ran.
    if let Some(i) = a.row_index.filter(|_| !a.summarize_only) {
        if i >= methods.len() {
            bail!(
                "--row-index {i}: --methods expands to {} rows",
                methods.len()
            );
        }
        methods = vec![methods.swap_remove(i)];
    }
    let protocol = protocol::Protocol {
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
        anchor_per_category: a.anchor_per_category,
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
    let mut desc = format!(
        "`{}` preset, tasks {}, {} train (Noto) / {} eval (Twemoji) samples per task, {} epochs, batch {}, AdamW lr {} cosine per task, BN frozen unless stated, seeds {}, drift check every {} step(s)",
        a.preset, a.tasks, cap(a.max_train), cap(a.max_eval), a.epochs, a.batch, a.lr, a.seeds, a.drift_check_every
    );
    if a.anchor_per_category > 0 {
        desc.push_str(&format!(
            ", anchor suite: {} held-out base emoji of each of the nine categories (Twemoji art, CLDR label; in no task's train or eval split)",
            a.anchor_per_category
        ));
    }
    let cells_dir = a.out.join("emojicl").join("cells");
    std::fs::create_dir_all(&cells_dir)?;
    if !a.summarize_only {
        let ctpctl = std::env::current_exe()?.with_file_name("ctpctl");
        let rt = emojicl::Runtime {
            device: a.device.clone(),
            precision: a.precision.clone(),
            threads: a.threads,
            seeds: seeds.clone(),
            ctpctl: (a.reports && ctpctl.exists()).then_some(ctpctl),
            work_dir: a.work_dir.clone().unwrap_or_else(default_work_dir),
            checkpoint_every: a.checkpoint_every,
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
    let other = match &a.sweep_from {
        Some(dir) => Some((dir, cells::load_all(&dir.join("emojicl").join("cells"))?)),
        None => None,
    };
    let mut gated = match &other {
        Some((dir, cells)) => sweep::Sweep {
            source: Some(dir.display().to_string()),
            ..sweep::gated_sweep(cells, &protocol, &seeds)
        },
        None => sweep::gated_sweep(&all, &protocol, &seeds),
    };
    let mut md = summary::markdown(&all, &protocol, &seeds, &order, &desc, &gated);
    let mut json = summary::summary_json(&all, &protocol, &seeds, &order);
    json["protocol"]["description"] = serde_json::json!(desc);
    if let Some((dir, cells)) = &other {
        let (rows, table) = sweep::fidelity(cells, &protocol, &seeds);
        if !table.is_empty() {
            let dir = dir.display();
            md.push_str(&format!(
                "\n## Fidelity variants and ctpd's defaults\n\nCells from `{dir}`, paired by seed with its own `SeqFT` and `CTP` (the paper's constants). ctpd's defaults are the row `{CTPD_DEFAULTS_ROW}` (at batch 32).\n\n{table}"
            ));
            json["fidelity"] = serde_json::json!({
                "cells_dir": dir.to_string(),
                "ctpd_defaults_row": CTPD_DEFAULTS_ROW,
                "rows": rows,
            });
        }
    }
    if let Some((table, value)) = anchor_summary(&all, &protocol, &seeds, &order) {
        md.push_str(&table);
        json["anchor"] = value;
    }
    for (name, mut row) in std::mem::take(&mut gated.rows) {
        if let Some(dir) = &gated.source {
            row["cells_dir"] = serde_json::json!(dir);
        }
        json["summary"][name] = row;
    }
    std::fs::write(a.out.join("emojicl.md"), &md)?;
    std::fs::write(
        a.out.join("emojicl.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    if !gated.points.is_empty() {
        let text = ctp_charts::font::init().is_some();
        let svg = ctp_charts::sweep::sweep_svg(
            "EmojiCL-9: final Rm against momentum syncs (drift-gated CTP)",
            &gated.points,
            text,
        )
        .map_err(anyhow::Error::msg)?;
        std::fs::write(a.out.join("emojicl-gated.svg"), svg)?;
    }
    println!("{md}");
    Ok(())
}

/// The anchor-suite section of the summary: per method, the mean (over finished seeds) Rm on
/// the suite after each task and the loss from task 1 to the last task. `None` when no cell
/// of this protocol has anchor results.
fn anchor_summary(
    all: &[cells::Cell],
    p: &protocol::Protocol,
    seeds: &[u64],
    order: &[String],
) -> Option<(String, serde_json::Value)> {
    let rows = cells::rows(all, p, order);
    let first = rows
        .iter()
        .flat_map(|r| &r.cells)
        .find_map(|c| c.result.anchor.as_ref())?;
    let (suite, samples) = (first.suite.clone(), first.samples);
    let n_tasks = p.tasks.len();
    let mut md = format!(
        "\n## Anchor suite\n\n`{suite}`: {samples} samples, {} held-out base emoji of each category that no task trains or evaluates on; Rm within the suite (all {samples} candidates). Mean over the seeds that finished; loss = Rm after task 1 − Rm after task {n_tasks} (positive = the method lost ground on the held-out emoji).\n\n| method | seeds |",
        p.anchor_per_category
    );
    for t in 1..=n_tasks {
        md.push_str(&format!(" after {t} |"));
    }
    md.push_str(" loss 1→last |\n|---|---|");
    md.push_str(&"---|".repeat(n_tasks + 1));
    md.push('\n');
    let mut out = serde_json::Map::new();
    for row in &rows {
        let tracks: Vec<(u64, &protocol::AnchorTrack)> = row
            .cells
            .iter()
            .filter_map(|c| c.result.anchor.as_ref().map(|a| (c.knobs.seed, a)))
            .collect();
        if tracks.is_empty() {
            continue;
        }
        let joint = row.cells[0].knobs.method.joint;
        // Joint has one version, trained on all tasks: its value goes under the last task.
        let at = |a: &protocol::AnchorTrack, t: usize| -> Option<f64> {
            if joint {
                (t + 1 == n_tasks).then(|| a.rm.first().copied().flatten())?
            } else {
                a.rm.get(t).copied().flatten()
            }
        };
        let per_task: Vec<Option<(f64, Option<f64>)>> = (0..n_tasks)
            .map(|t| {
                let xs: Vec<f64> = tracks.iter().filter_map(|(_, a)| at(a, t)).collect();
                (!xs.is_empty()).then(|| cells::mean_std(&xs))
            })
            .collect();
        let losses: Vec<f64> = if joint {
            Vec::new()
        } else {
            tracks
                .iter()
                .filter_map(|(_, a)| Some(at(a, 0)? - at(a, n_tasks - 1)?))
                .collect()
        };
        let loss = (!losses.is_empty()).then(|| cells::mean_std(&losses));
        md.push_str(&format!("| {} | {} |", row.name, tracks.len()));
        for v in &per_task {
            md.push_str(&format!(" {} |", cells::pm(*v)));
        }
        md.push_str(&format!(" {} |\n", cells::pm(loss)));
        out.insert(
            row.name.to_string(),
            serde_json::json!({
                "seeds": tracks.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
                "complete": seeds.iter().all(|s| tracks.iter().any(|(t, _)| t == s)),
                "rm_after_task": per_task.iter().map(|v| cells::ms(*v)).collect::<Vec<_>>(),
                "loss_first_to_last": cells::ms(loss),
                "per_seed": tracks.iter().map(|(s, a)| serde_json::json!({"seed": s, "rm": a.rm})).collect::<Vec<_>>(),
            }),
        );
    }
    Some((
        md,
        serde_json::json!({
            "suite": suite,
            "samples": samples,
            "per_category": p.anchor_per_category,
            "rows": out,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: EmojiclArgs,
    }

    fn rows(flags: &[&str]) -> Vec<String> {
        let cli = Cli::parse_from(std::iter::once("emojicl").chain(flags.iter().copied()));
        emojicl_methods(&cli.args)
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect()
    }

    /// Runners pick fidelity rows by `--row-index` and committed cells carry the row names, so
    /// appending a row must not move or rename an earlier one.
    #[test]
    fn fidelity_rows_keep_their_indices_and_names() {
        let names = rows(&["--methods", "fidelity"]);
        let expected = [
            (0, "CTP, paper-era task 0"),
            (1, "CTP, queue 256"),
            (3, "CTP, TP weight 0.1"),
            (4, "CTP, momentum weight 0.1"),
            (7, "CTP, TP weight 3"),
            (8, "CTP, queue 256 + TP weight 3"),
            (9, "CTP, TP weight 10"),
            (10, "CTP, queue 256 + TP weight 10"),
            (11, "CTP, queue 256 + TP weight 10 + threshold 0.05"),
        ];
        for (i, name) in expected {
            assert_eq!(names[i], name, "row {i} of {names:?}");
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "duplicate row names: {names:?}");
        // The queue rows follow the batch size.
        assert_eq!(
            rows(&["--methods", "fidelity", "--batch", "16"])[1],
            "CTP, queue 128"
        );
    }

    /// Cells committed before the anchor slice existed keep their identity: they read back
    /// with no slice, and a protocol without one serializes exactly as before (no key), so
    /// `is_done` still finds them and the old tables are reproduced unchanged.
    #[test]
    fn anchor_slice_is_off_by_default_and_old_cells_keep_their_knobs() {
        let cli = Cli::parse_from(["emojicl"]);
        assert_eq!(cli.args.anchor_per_category, 0);
        let old: cells::Cell = serde_json::from_str(include_str!(
            "../../../bench/results/emojicl/cells/CTP--seed0.json"
        ))
        .unwrap();
        assert_eq!(old.knobs.protocol.anchor_per_category, 0);
        assert!(old.result.anchor.is_none());
        let text = serde_json::to_string(&old).unwrap();
        assert!(!text.contains("anchor"), "{text}");
        let mut with = old.knobs.protocol.clone();
        with.anchor_per_category = 8;
        assert_ne!(with, old.knobs.protocol, "a slice is another cell");
    }

    fn cell(name: &str, joint: bool, seed: u64, rm: Vec<Option<f64>>) -> cells::Cell {
        let p = protocol::Protocol {
            preset: "tiny".into(),
            max_train: Some(8),
            max_eval: Some(4),
            epochs: 1,
            batch: 4,
            lr: 1e-4,
            tasks: vec![0, 1, 2],
            check_every: 1,
            anchor_per_category: 2,
        };
        let cli = Cli::parse_from(["emojicl", "--methods", "seqft"]);
        let mut m = emojicl_methods(&cli.args).unwrap().remove(0);
        m.name = name.into();
        m.joint = joint;
        cells::Cell {
            knobs: cells::Knobs::new(&p, &m, seed),
            device: "cpu".into(),
            precision: "fp32".into(),
            threads: 1,
            machine: "test".into(),
            finished_at: "now".into(),
            result: protocol::MethodResult {
                tasks: vec!["a".into(), "b".into(), "c".into()],
                matrix: Vec::new(),
                final_rm: vec![1.0],
                final_mean_rm: 1.0,
                average_forgetting: None,
                bwt: None,
                momentum_syncs: 0,
                momentum_steps: 0,
                steps_per_task: Vec::new(),
                n_train: Vec::new(),
                wall_seconds: 1.0,
                runs: 1,
                anchor: Some(protocol::AnchorTrack {
                    suite: "emojicl-anchor".into(),
                    samples: 18,
                    rm,
                }),
            },
        }
    }

    #[test]
    fn anchor_summary_reports_rm_after_each_task_and_the_loss() {
        let all = vec![
            cell("SeqFT", false, 0, vec![Some(30.0), Some(25.0), Some(20.0)]),
            cell("SeqFT", false, 1, vec![Some(40.0), Some(30.0), Some(24.0)]),
            cell("Joint", true, 0, vec![Some(33.0)]),
        ];
        let order = vec!["SeqFT".to_string(), "Joint".to_string()];
        let p = all[0].knobs.protocol.clone();
        let (md, json) = anchor_summary(&all, &p, &[0, 1], &order).unwrap();
        let seqft = &json["rows"]["SeqFT"];
        assert_eq!(seqft["rm_after_task"][0]["mean"], 35.0);
        assert_eq!(seqft["rm_after_task"][2]["mean"], 22.0);
        // Losses 10 and 16: mean 13.
        assert_eq!(seqft["loss_first_to_last"]["mean"], 13.0);
        assert_eq!(seqft["complete"], true);
        let joint = &json["rows"]["Joint"];
        assert!(joint["rm_after_task"][0].is_null());
        assert_eq!(joint["rm_after_task"][2]["mean"], 33.0);
        assert!(joint["loss_first_to_last"].is_null());
        assert_eq!(json["samples"], 18);
        assert!(
            md.contains(
                "| SeqFT | 2 | 35.00 ± 7.07 | 27.50 ± 3.54 | 22.00 ± 2.83 | 13.00 ± 4.24 |"
            ),
            "{md}"
        );
        assert!(md.contains("| Joint | 1 | - | - | 33.00 | - |"), "{md}");
        // Without anchor results there is no section.
        let mut plain = all.clone();
        for c in &mut plain {
            c.result.anchor = None;
        }
        assert!(anchor_summary(&plain, &p, &[0, 1], &order).is_none());
    }

    /// `--queue-size` reaches the CTP rows only; SeqFT has no queue.
    #[test]
    fn queue_size_flag_sets_ctp_rows() {
        let cli = Cli::parse_from([
            "emojicl",
            "--methods",
            "ctp,seqft,ctp-replay",
            "--queue-size",
            "256",
        ]);
        let queues: Vec<Option<i64>> = emojicl_methods(&cli.args)
            .unwrap()
            .into_iter()
            .map(|m| m.queue_size)
            .collect();
        assert_eq!(queues, [Some(256), None, Some(256)]);
        let cli = Cli::parse_from(["emojicl", "--methods", "ctp"]);
        assert_eq!(
            emojicl_methods(&cli.args).unwrap()[0].queue_size,
            None,
            "the paper's"
        );
    }

    #[test]
    fn ctp_threshold_flag_sets_only_the_ctp_rows() {
        let thresholds = |argv: &[&str]| -> Vec<(String, f64)> {
            let cli = Cli::parse_from(argv);
            emojicl_methods(&cli.args)
                .unwrap()
                .into_iter()
                .map(|m| (m.name, m.threshold))
                .collect()
        };
        let base = ["emojicl", "--methods", "ctp,seqft,ctp-replay,gated"];
        let set = thresholds(
            &[
                &base[..],
                &["--ctp-threshold", "0.05", "--thresholds", "0.02"],
            ]
            .concat(),
        );
        assert_eq!(
            set,
            [
                ("CTP".to_string(), 0.05),
                ("SeqFT".to_string(), 0.0),
                ("CTP+replay".to_string(), 0.05),
                ("CTP gated 0.02".to_string(), 0.02),
            ]
        );
        assert!(
            thresholds(&base).iter().take(3).all(|(_, t)| *t == 0.0),
            "the paper's per-step sync unless asked"
        );
    }
}
