//! The EmojiCL summary: `emojicl.json` and `emojicl.md` from the committed cells and the
//! drift-gated sweep.
use serde_json::json;

use super::cells::{pm, ran_on, rows, Cell};
use super::protocol::Protocol;
use super::sweep::{is_gated, vs_ctp, vs_threshold0, Sweep};

/// `emojicl.json`: protocol, summary per method (contract of issue #10), and every cell.
pub fn summary_json(
    cells: &[Cell],
    p: &Protocol,
    seeds: &[u64],
    order: &[String],
) -> serde_json::Value {
    let rows = rows(cells, p, order);
    let steps = rows
        .iter()
        .flat_map(|r| &r.cells)
        .find(|c| !c.knobs.method.joint)
        .map(|c| c.result.steps_per_task.clone());
    let mut summary = serde_json::Map::new();
    for r in &rows {
        let mut row = r.json(seeds);
        if is_gated(&r.cells[0].knobs.method) {
            if let Some(v) = vs_threshold0(cells, r) {
                row["vs_threshold0"] = v;
            }
        }
        summary.insert(r.name.to_string(), row);
    }
    let ignored: Vec<String> = cells
        .iter()
        .filter(|c| &c.knobs.protocol != p)
        .map(|c| format!("{} seed {}", c.knobs.method.name, c.knobs.seed))
        .collect();
    json!({
        "protocol": {
            "seeds": seeds,
            "steps_per_task": steps,
            "knobs": p,
        },
        "summary": summary,
        "ignored_cells_other_protocol": ignored,
        "cells": rows.iter().flat_map(|r| r.cells.iter().copied()).collect::<Vec<_>>(),
    })
}

/// `emojicl.md`: the mean ± std table, then each cell's accuracy matrix.
pub fn markdown(
    cells: &[Cell],
    p: &Protocol,
    seeds: &[u64],
    order: &[String],
    desc: &str,
    sweep: &Sweep,
) -> String {
    let rows = rows(cells, p, order);
    let steps = summary_json(cells, p, seeds, order)["protocol"]["steps_per_task"].clone();
    let mut s = format!(
        "# EmojiCL results\n\nProtocol: {desc}\n\nOptimizer steps per task: {steps}\n\n\
         Mean ± sample std over the seeds that finished (n = seeds done of {}; one seed: no std); \
         a row with fewer seeds is incomplete.\n\n\
         Δ vs CTP: a CTP variant minus the `CTP` cell of the same seed on the same hardware \
         (paired), final Rm / avg forgetting.\n\n\
         | method | n seeds | final mean Rm | avg forgetting | BWT (paper, + = forgetting) | Δ vs CTP (paired) | syncs / steps | wall s per seed |\n|---|---|---|---|---|---|---|---|\n",
        seeds.len()
    );
    for r in &rows {
        let sync = r
            .sync_fraction()
            .map_or("-".into(), |f| format!("{:.0}%", 100.0 * f));
        let wall =
            r.cells.iter().map(|c| c.result.wall_seconds).sum::<f64>() / r.cells.len() as f64;
        let delta = vs_ctp(cells, r).map_or("-".into(), |(rm, f)| {
            format!(
                "{rm:+.2} / {}",
                f.map_or("-".into(), |f| format!("{f:+.2}"))
            )
        });
        s.push_str(&format!(
            "| {} | {} ({}) | {} | {} | {} | {delta} | {sync} | {wall:.0} |\n",
            r.name,
            r.cells.len(),
            r.cells
                .iter()
                .map(|c| c.knobs.seed.to_string())
                .collect::<Vec<_>>()
                .join(","),
            pm(r.stat(|c| Some(c.result.final_mean_rm))),
            pm(r.stat(|c| c.result.average_forgetting)),
            pm(r.stat(|c| c.result.bwt)),
        ));
    }
    let all: Vec<&Cell> = rows.iter().flat_map(|r| r.cells.iter().copied()).collect();
    s.push_str(&format!("\nRan on: {}\n", ran_on(&all).join("; ")));
    if !sweep.markdown.is_empty() {
        s.push_str(&format!(
            "\n## Drift-gated sweep\n\nEach gated cell is compared with the threshold-0 (`CTP`) cell of the same seed on the same machine, device and precision{}. Chart: `emojicl-gated.svg`.\n\n{}",
            sweep.source.as_deref().map_or(String::new(), |d| format!("; cells from `{d}`")),
            sweep.markdown
        ));
    }
    for r in &rows {
        for c in &r.cells {
            let res = &c.result;
            s.push_str(&format!(
                "\n## {} seed {} — accuracy matrix (Rm; row = after task, column = task)\n\n| after \\ task | {} |\n|---|{}\n",
                r.name, c.knobs.seed, res.tasks.join(" | "), "---|".repeat(res.tasks.len())
            ));
            for (i, row) in res.matrix.iter().enumerate() {
                let label = if c.knobs.method.joint {
                    "joint"
                } else {
                    &res.tasks[i]
                };
                let vals: Vec<String> = row
                    .iter()
                    .map(|v| v.map_or("-".into(), |x| format!("{x:.1}")))
                    .collect();
                s.push_str(&format!("| {label} | {} |\n", vals.join(" | ")));
            }
        }
    }
    s
}
