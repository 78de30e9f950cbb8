//! Cell files of `ctp-bench emojicl` and the summary built from them.
//!
//! A cell is one (method, seed) run: `<cells>/<method slug>--seed<k>.json` holds every knob
//! (protocol, method, seed) plus where it ran and its result. The summary
//! (`emojicl.json`, `emojicl.md`) is rebuilt from the cells whose protocol equals the current
//! one; it states for each method how many seeds finished.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::protocol::{Method, MethodResult, Protocol};

/// Everything that decides a cell's numbers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Knobs {
    pub protocol: Protocol,
    pub method: Method,
    pub seed: u64,
}

impl Knobs {
    pub fn new(p: &Protocol, m: &Method, seed: u64) -> Knobs {
        Knobs {
            protocol: p.clone(),
            method: m.clone(),
            seed,
        }
    }
    fn file(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}--seed{}.json", self.method.slug(), self.seed))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    pub knobs: Knobs,
    pub device: String,
    /// `engine.precision` as asked ("auto" in cells written before it was recorded).
    #[serde(default = "auto")]
    pub precision: String,
    pub threads: i32,
    pub machine: String,
    pub finished_at: String,
    pub result: MethodResult,
}

fn auto() -> String {
    "auto".into()
}

fn read(path: &Path) -> Result<Cell> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}", path.display()))
}

/// True if this cell's file exists with exactly these knobs.
pub fn is_done(dir: &Path, k: &Knobs) -> bool {
    read(&k.file(dir)).is_ok_and(|c| &c.knobs == k)
}

/// Refuses to overwrite a cell file that holds a different configuration.
pub fn check_no_conflict(dir: &Path, k: &Knobs) -> Result<()> {
    let path = k.file(dir);
    if path.exists() {
        let old = read(&path)?;
        if &old.knobs != k {
            bail!(
                "{} holds a run with other knobs ({}); move it away or use another --out",
                path.display(),
                serde_json::to_string(&old.knobs)?
            );
        }
    }
    Ok(())
}

/// Writes a finished cell (to a temp file, then renamed, so a crash never leaves half a cell).
pub fn write(dir: &Path, cell: &Cell) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = cell.knobs.file(dir);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(cell)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// Every cell in `dir`, sorted by file name.
pub fn load_all(dir: &Path) -> Result<Vec<Cell>> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(_) => Vec::new(),
    };
    paths.sort();
    paths.iter().map(|p| read(p)).collect()
}

/// Mean and sample standard deviation (n − 1; `None` for a single value).
pub fn mean_std(xs: &[f64]) -> (f64, Option<f64>) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let std = (xs.len() > 1)
        .then(|| (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, std)
}

/// One method's row, over the seeds that finished.
pub(super) struct Row<'a> {
    pub name: &'a str,
    pub cells: Vec<&'a Cell>,
}

impl Row<'_> {
    pub fn stat(&self, f: impl Fn(&Cell) -> Option<f64>) -> Option<(f64, Option<f64>)> {
        let xs: Vec<f64> = self.cells.iter().filter_map(|c| f(c)).collect();
        (!xs.is_empty()).then(|| mean_std(&xs))
    }
    pub fn sync_fraction(&self) -> Option<f64> {
        let steps: u64 = self.cells.iter().map(|c| c.result.momentum_steps).sum();
        let syncs: u64 = self.cells.iter().map(|c| c.result.momentum_syncs).sum();
        (steps > 0).then(|| syncs as f64 / steps as f64)
    }
}

/// Groups the cells of protocol `p` by method, in `order` first, then any others by name.
pub(super) fn rows<'a>(cells: &'a [Cell], p: &Protocol, order: &'a [String]) -> Vec<Row<'a>> {
    let mut by: BTreeMap<&str, Vec<&Cell>> = BTreeMap::new();
    for c in cells.iter().filter(|c| &c.knobs.protocol == p) {
        by.entry(c.knobs.method.name.as_str()).or_default().push(c);
    }
    let mut out = Vec::new();
    for name in order {
        if let Some(cs) = by.remove(name.as_str()) {
            out.push(Row { name, cells: cs });
        }
    }
    out.extend(by.into_iter().map(|(name, cells)| Row { name, cells }));
    out
}

/// `{"mean", "std"}`; std is null with one seed.
pub(super) fn ms(v: Option<(f64, Option<f64>)>) -> serde_json::Value {
    v.map_or(
        serde_json::Value::Null,
        |(m, s)| json!({"mean": m, "std": s}),
    )
}

impl Row<'_> {
    /// The row's entry in `summary` (contract of issue #10).
    pub fn json(&self, seeds: &[u64]) -> serde_json::Value {
        let mut row = json!({
            "seeds": self.cells.iter().map(|c| c.knobs.seed).collect::<Vec<_>>(),
            "n_seeds": self.cells.len(),
            "complete": seeds.iter().all(|s| self.cells.iter().any(|c| c.knobs.seed == *s)),
            "final_rm": ms(self.stat(|c| Some(c.result.final_mean_rm))),
            "method": self.cells[0].knobs.method,
            "ran_on": ran_on(&self.cells),
        });
        if !self.cells[0].knobs.method.joint {
            row["avg_forgetting"] = ms(self.stat(|c| c.result.average_forgetting));
            row["bwt"] = ms(self.stat(|c| c.result.bwt));
        }
        if let Some(f) = self.sync_fraction() {
            row["sync_fraction"] = json!(f);
        }
        row
    }
}

/// Where cells ran: machine, device, precision, threads (one entry per distinct setup).
pub(super) fn ran_on(cells: &[&Cell]) -> Vec<String> {
    let set: std::collections::BTreeSet<String> = cells
        .iter()
        .map(|c| {
            format!(
                "{} ({}, {}, {} threads)",
                c.machine, c.device, c.precision, c.threads
            )
        })
        .collect();
    set.into_iter().collect()
}

/// `mean ± std` with two decimals (`-` when there is nothing).
pub(super) fn pm(v: Option<(f64, Option<f64>)>) -> String {
    match v {
        None => "-".into(),
        Some((m, None)) => format!("{m:.2}"),
        Some((m, Some(s))) => format!("{m:.2} ± {s:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::mean_std;

    #[test]
    fn sample_std_and_single_seed() {
        let (m, s) = mean_std(&[1.0, 2.0, 6.0]);
        assert_eq!(m, 3.0);
        assert!((s.unwrap() - 7f64.sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[4.0]), (4.0, None));
    }
}
