//! The drift-gated sweep of `ctp-bench emojicl` (issue #10 item 5): every gated row (CTP
//! with a drift threshold above 0, or a fixed sync interval) against threshold 0, paired by
//! seed and hardware, as summary entries, a Markdown table and the points of
//! `emojicl-gated.svg`.
use serde_json::json;

use super::cells::{mean_std, ms, pm, ran_on, rows, Cell, Row};
use super::protocol::{Method, Protocol};

/// A row of the sweep: a `CTP gated …` row (the `gated` method) with a drift threshold above
/// 0, or with its own drift-check interval above 1 (threshold 0 every n steps is a fixed sync
/// schedule, the baseline that a drift gate has to beat). A fidelity row with a threshold is
/// not: its threshold-0 reference is another row, not `CTP`.
pub(super) fn is_gated(m: &Method) -> bool {
    m.method == "ctp"
        && m.name.starts_with("CTP gated")
        && (m.threshold > 0.0 || m.check_every.is_some_and(|n| n > 1))
}

/// The cell in `all` that `c` is compared with: `is_reference`, the same seed and protocol, and
/// the same machine (without the date), device, precision and threads; pairs never cross
/// hardware.
fn pair_of<'a>(
    all: &'a [Cell],
    c: &Cell,
    is_reference: impl Fn(&Method) -> bool,
) -> Option<&'a Cell> {
    all.iter().find(|r| {
        is_reference(&r.knobs.method)
            && r.knobs.seed == c.knobs.seed
            && r.knobs.protocol == c.knobs.protocol
            && hardware(r) == hardware(c)
    })
}

/// Machine (without the date that `machine` also records), device, precision, threads.
fn hardware(c: &Cell) -> (&str, &str, &str, i32) {
    let machine = c.machine.split("; date").next().unwrap_or(&c.machine);
    (machine, &c.device, &c.precision, c.threads)
}

/// The threshold-0 cell of a gated cell: the same knobs with threshold 0 and the protocol's
/// drift-check interval.
fn threshold0_of<'a>(all: &'a [Cell], c: &Cell) -> Option<&'a Cell> {
    let reference = Method {
        name: "CTP".into(),
        threshold: 0.0,
        check_every: None,
        ..c.knobs.method.clone()
    };
    pair_of(all, c, |m| *m == reference)
}

/// A CTP variant (any `ctp` row but `CTP` itself) against the `CTP` cell of the same seed,
/// protocol and hardware: mean paired differences of final Rm and of average forgetting.
/// `None` for other rows or when no seed has a pair.
pub(super) fn vs_ctp(all: &[Cell], r: &Row) -> Option<(f64, Option<f64>)> {
    if r.name == "CTP" || r.cells[0].knobs.method.method != "ctp" {
        return None;
    }
    let pairs: Vec<(&Cell, &Cell)> = r
        .cells
        .iter()
        .filter_map(|c| pair_of(all, c, |m| m.name == "CTP").map(|z| (*c, z)))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let rm = pairs
        .iter()
        .map(|(c, z)| c.result.final_mean_rm - z.result.final_mean_rm)
        .sum::<f64>()
        / n;
    let f: Option<Vec<f64>> = pairs
        .iter()
        .map(|(c, z)| Some(c.result.average_forgetting? - z.result.average_forgetting?))
        .collect();
    Some((rm, f.map(|f| f.iter().sum::<f64>() / n)))
}

/// A gated row against threshold 0, seed by seed (paired): Rm and forgetting differences,
/// and how many fewer syncs. `None` when no seed has its threshold-0 cell.
pub(super) fn vs_threshold0(all: &[Cell], r: &Row) -> Option<serde_json::Value> {
    let pairs: Vec<(&Cell, &Cell)> = r
        .cells
        .iter()
        .filter_map(|c| threshold0_of(all, c).map(|z| (*c, z)))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let diff = |f: &dyn Fn(&Cell) -> Option<f64>| {
        let xs: Vec<f64> = pairs
            .iter()
            .filter_map(|(c, z)| Some(f(c)? - f(z)?))
            .collect();
        (!xs.is_empty()).then(|| mean_std(&xs))
    };
    let frac = |cs: &mut dyn Iterator<Item = &Cell>| {
        let (mut syncs, mut steps) = (0u64, 0u64);
        for c in cs {
            syncs += c.result.momentum_syncs;
            steps += c.result.momentum_steps;
        }
        (steps > 0).then(|| syncs as f64 / steps as f64)
    };
    let gated = frac(&mut pairs.iter().map(|p| p.0));
    let zero = frac(&mut pairs.iter().map(|p| p.1));
    Some(json!({
        "seeds": pairs.iter().map(|p| p.0.knobs.seed).collect::<Vec<_>>(),
        "final_rm_threshold0": ms(mean_std_of(pairs.iter().map(|p| p.1.result.final_mean_rm))),
        "final_rm_delta": ms(diff(&|c| Some(c.result.final_mean_rm))),
        "avg_forgetting_delta": ms(diff(&|c| c.result.average_forgetting)),
        "sync_fraction_threshold0": zero,
        "fewer_syncs": match (gated, zero) {
            (Some(g), Some(z)) if z > 0.0 => json!(1.0 - g / z),
            _ => serde_json::Value::Null,
        },
    }))
}

fn mean_std_of(xs: impl Iterator<Item = f64>) -> Option<(f64, Option<f64>)> {
    let v: Vec<f64> = xs.collect();
    (!v.is_empty()).then(|| mean_std(&v))
}

/// The drift-gated sweep over `cells` (protocol `p`): each gated row's summary entry with
/// its paired comparison to threshold 0, the chart's points (threshold 0 first), and a
/// Markdown table.
pub struct Sweep {
    /// The cells' folder when they are not the summary's own.
    pub source: Option<String>,
    pub rows: Vec<(String, serde_json::Value)>,
    pub points: Vec<ctp_charts::sweep::SweepPoint>,
    pub markdown: String,
}

pub fn gated_sweep(cells: &[Cell], p: &Protocol, seeds: &[u64]) -> Sweep {
    let mut rows: Vec<Row> = rows(cells, p, &[])
        .into_iter()
        .filter(|r| is_gated(&r.cells[0].knobs.method))
        .collect();
    rows.sort_by(|a, b| {
        let key = |r: &Row| {
            let m = &r.cells[0].knobs.method;
            (m.threshold, m.check_every.unwrap_or(p.check_every))
        };
        key(a).partial_cmp(&key(b)).expect("thresholds are finite")
    });
    let mut out = Sweep {
        source: None,
        rows: Vec::new(),
        points: Vec::new(),
        markdown: String::new(),
    };
    if rows.is_empty() {
        return out;
    }
    // Threshold 0: the paired reference cells of every gated row, once each.
    let mut zero: Vec<&Cell> = Vec::new();
    for r in &rows {
        for c in &r.cells {
            if let Some(z) = threshold0_of(cells, c) {
                if !zero.iter().any(|x| std::ptr::eq(*x, z)) {
                    zero.push(z);
                }
            }
        }
    }
    let point = |label: String, r: &Row| {
        r.sync_fraction().map(|f| {
            let (rm, rm_std) = r.stat(|c| Some(c.result.final_mean_rm)).expect("a cell");
            ctp_charts::sweep::SweepPoint {
                label,
                sync_fraction: f,
                rm,
                rm_std,
            }
        })
    };
    let zero_row = Row {
        name: "CTP",
        cells: zero,
    };
    let mut md = String::from(
        "| threshold | drift check every | seeds | final mean Rm | Δ Rm vs threshold 0 (paired) | avg forgetting | syncs / steps | fewer syncs than threshold 0 |\n|---|---|---|---|---|---|---|---|\n",
    );
    if !zero_row.cells.is_empty() {
        out.points.extend(point("0 (every step)".into(), &zero_row));
        md.push_str(&format!(
            "| 0 | 1 | {} | {} | – | {} | {} | – |\n",
            seeds_of(&zero_row),
            pm(zero_row.stat(|c| Some(c.result.final_mean_rm))),
            pm(zero_row.stat(|c| c.result.average_forgetting)),
            pct(zero_row.sync_fraction()),
        ));
    }
    for r in &rows {
        let m = &r.cells[0].knobs.method;
        let every = m.check_every.unwrap_or(p.check_every);
        let mut row = r.json(seeds);
        let vs = vs_threshold0(cells, r);
        let label = if every == 1 {
            format!("{}", m.threshold)
        } else {
            format!("{} / {every}", m.threshold)
        };
        out.points.extend(point(label, r));
        let delta = vs
            .as_ref()
            .and_then(|v| v["final_rm_delta"]["mean"].as_f64());
        let fewer = vs.as_ref().and_then(|v| v["fewer_syncs"].as_f64());
        md.push_str(&format!(
            "| {} | {every} | {} | {} | {} | {} | {} | {} |\n",
            m.threshold,
            seeds_of(r),
            pm(r.stat(|c| Some(c.result.final_mean_rm))),
            delta.map_or("no pair".into(), |d| format!("{d:+.2}")),
            pm(r.stat(|c| c.result.average_forgetting)),
            pct(r.sync_fraction()),
            fewer.map_or("-".into(), |f| format!("{:.0}%", 100.0 * f)),
        ));
        if let Some(v) = vs {
            row["vs_threshold0"] = v;
        }
        out.rows.push((r.name.to_string(), row));
    }
    md.push_str(&format!("\nRan on: {}\n", {
        let mut all: Vec<&Cell> = rows.iter().flat_map(|r| r.cells.iter().copied()).collect();
        all.extend(zero_row.cells.iter().copied());
        ran_on(&all).join("; ")
    }));
    out.markdown = md;
    out
}

/// The fidelity rows of issue #10 item 2 (`CTP, …`) with their `SeqFT` and `CTP` references,
/// all from one folder's cells: each row's summary entry plus its paired difference from
/// `CTP` and its forgetting as a multiple of `SeqFT`'s (means over the row's seeds), and a
/// Markdown table. Empty when the folder has no fidelity cell.
pub fn fidelity(cells: &[Cell], p: &Protocol, seeds: &[u64]) -> (serde_json::Value, String) {
    let order = ["SeqFT".to_string(), "CTP".to_string()];
    let rows: Vec<Row> = rows(cells, p, &order)
        .into_iter()
        .filter(|r| matches!(r.name, "SeqFT" | "CTP") || r.name.starts_with("CTP, "))
        .collect();
    if !rows.iter().any(|r| r.name.starts_with("CTP, ")) {
        return (serde_json::Value::Null, String::new());
    }
    // SeqFT's mean forgetting over the seeds of `of` (each row is compared on its own seeds).
    let seqft_forgetting = |of: &Row| {
        let seqft = rows.iter().find(|r| r.name == "SeqFT")?;
        let xs: Vec<f64> = seqft
            .cells
            .iter()
            .filter(|c| of.cells.iter().any(|o| o.knobs.seed == c.knobs.seed))
            .filter_map(|c| c.result.average_forgetting)
            .collect();
        (!xs.is_empty()).then(|| mean_std(&xs).0)
    };
    let mut json_rows = serde_json::Map::new();
    let mut md = String::from(
        "| row | seeds | final mean Rm | avg forgetting | Δ vs CTP (paired) | forgetting / SeqFT (same seeds) |\n|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let mut row = r.json(seeds);
        let forgetting = r.stat(|c| c.result.average_forgetting);
        let ratio = forgetting.zip(seqft_forgetting(r)).map(|((f, _), s)| f / s);
        let vs = vs_ctp(cells, r);
        if let Some((rm, f)) = vs {
            row["vs_ctp"] = json!({"final_rm_delta": rm, "avg_forgetting_delta": f});
        }
        if let Some(x) = ratio {
            row["forgetting_vs_seqft"] = json!(x);
        }
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.name,
            seeds_of(r),
            pm(r.stat(|c| Some(c.result.final_mean_rm))),
            pm(forgetting),
            vs.map_or("-".into(), |(rm, f)| format!(
                "{rm:+.2} / {}",
                f.map_or("-".into(), |f| format!("{f:+.2}"))
            )),
            ratio.map_or("-".into(), |x| format!("{x:.2} ×")),
        ));
        json_rows.insert(r.name.to_string(), row);
    }
    (serde_json::Value::Object(json_rows), md)
}

fn seeds_of(r: &Row) -> String {
    r.cells
        .iter()
        .map(|c| c.knobs.seed.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn pct(f: Option<f64>) -> String {
    f.map_or("-".into(), |f| format!("{:.1}%", 100.0 * f))
}

#[cfg(test)]
mod tests {
    use super::{is_gated, Method};

    fn ctp(method: &str, threshold: f64, check_every: Option<u32>) -> Method {
        Method {
            name: "CTP gated x".into(),
            method: method.into(),
            bn: "frozen".into(),
            threshold,
            joint: false,
            tp_weight: 1.0,
            mlm_weight: 1.0,
            momentum_weight: 1.0,
            replay_per_task: 0,
            replay_fraction: 0.0,
            check_every,
            task0_plain: false,
            queue_size: None,
            momentum_reference_steps: None,
        }
    }

    #[test]
    fn sweep_rows_are_gated_or_fixed_interval_ctp() {
        assert!(!is_gated(&ctp("ctp", 0.0, None)), "the reference itself");
        assert!(!is_gated(&ctp("ctp", 0.0, Some(1))));
        assert!(is_gated(&ctp("ctp", 0.0, Some(10))), "fixed schedule");
        assert!(is_gated(&ctp("ctp", 0.05, None)));
        assert!(is_gated(&ctp("ctp", 0.05, Some(10))));
        assert!(
            !is_gated(&ctp("seqft", 0.05, None)),
            "SeqFT has no momentum model"
        );
        let fidelity = Method {
            name: "CTP, queue 256 + TP weight 10 + threshold 0.05".into(),
            ..ctp("ctp", 0.05, None)
        };
        assert!(!is_gated(&fidelity), "a fidelity row with a threshold");
    }
}
