//! `ctpctl report`: a static HTML report of one model's continual training.
//!
//! Fetching ([`fetch`]) and rendering ([`write()`]) are separate so the rendering can be
//! tested on synthetic data. The event history of each version's task comes from
//! WatchTask with `after_seq = 0`, which for a finished task replays every stored event
//! (progress with losses, momentum syncs) and ends with its terminal event.
use std::path::{Path, PathBuf};

use serde_json::json;

use super::args::ReportArgs;
use super::conn::Client;
use super::error::{CliError, CliResult};
use super::output::{is_terminal, print_json};
use super::tasks::{list_tasks, list_versions};
use super::watch::{follow, Collect};
use ctp_api::pb;

pub mod html;

/// The charts are shared with the dashboard (`ctpd --http-listen`).
pub use ctp_charts::{self as charts, data, font};

#[cfg(test)]
mod tests;

pub use data::{ReportData, TaskHistory};

/// Chart files, in the order the page shows them.
pub const CHART_FILES: [&str; 4] = ["accuracy.png", "forgetting.png", "syncs.png", "losses.png"];

/// Downloads versions, tasks and each version's event history.
pub async fn fetch(client: &mut Client, model: &str) -> CliResult<ReportData> {
    let versions = list_versions(client, model).await?;
    if versions.is_empty() {
        return Err(CliError::local(format!(
            "model {model} has no versions to report on"
        )));
    }
    let tasks = list_tasks(client, Some(model.to_string()), pb::TaskState::Unspecified).await?;
    let (versions, lineage_len) = data::lineage_order(versions);
    let mut histories = Vec::with_capacity(versions.len());
    for v in &versions {
        let mut events = Collect::default();
        follow(client, &v.task_id, 0, 5, &mut events).await?;
        let mut h = TaskHistory::from_events(&v.task_id, &v.task_name, &events.0);
        h.version = Some(v.version);
        histories.push(h);
    }
    let other_tasks = tasks
        .into_iter()
        .filter(|t| is_terminal(t.state) && t.produced_version.is_none())
        .collect();
    Ok(ReportData {
        model: model.to_string(),
        generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        versions,
        lineage_len,
        histories,
        other_tasks,
    })
}

/// What [`write()`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// `DIR/index.html`.
    pub index: PathBuf,
    /// Chart PNGs that were written.
    pub charts: Vec<PathBuf>,
    /// Charts that failed (the page says so too).
    pub errors: Vec<String>,
    /// Font used for chart text, if any.
    pub font: Option<PathBuf>,
}

/// Writes `out/index.html` and the chart PNGs. `text` = false draws charts without any
/// text (used when no font is available, and by tests).
pub fn write(data: &ReportData, out: &Path, text: bool) -> CliResult<Written> {
    std::fs::create_dir_all(out).map_err(|e| CliError::local(format!("{}: {e}", out.display())))?;
    let font = if text {
        font::init().map(Path::to_path_buf)
    } else {
        None
    };
    let text = font.is_some();
    type Draw = fn(&Path, &ReportData, bool) -> charts::ChartResult;
    let draws: [Draw; 4] = [
        charts::heatmap,
        charts::forgetting,
        charts::syncs,
        charts::losses,
    ];
    let mut files: [Option<&str>; 4] = [None; 4];
    let mut written = Vec::new();
    let mut errors = Vec::new();
    for (i, (name, draw)) in CHART_FILES.iter().zip(draws).enumerate() {
        let path = out.join(name);
        match draw(&path, data, text) {
            Ok(()) => {
                files[i] = Some(name);
                written.push(path);
            }
            // One broken chart should not cost the user the rest of the report.
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    let page = html::render(
        data,
        &html::Charts {
            files,
            errors: errors.clone(),
            font: font.as_ref().map(|p| p.display().to_string()),
        },
    );
    let index = out.join("index.html");
    std::fs::write(&index, page)
        .map_err(|e| CliError::local(format!("{}: {e}", index.display())))?;
    Ok(Written {
        index,
        charts: written,
        errors,
        font,
    })
}

/// `ctpctl report`.
pub async fn report(client: &mut Client, args: &ReportArgs, json: bool) -> CliResult {
    if !json {
        eprintln!("fetching versions and task histories of {} ...", args.model);
    }
    let data = fetch(client, &args.model).await?;
    let out = args.out.clone();
    let written = tokio::task::spawn_blocking(move || write(&data, &out, true))
        .await
        .map_err(|e| CliError::local(format!("report rendering crashed: {e}")))??;
    if json {
        print_json(&json!({
            "index": written.index.display().to_string(),
            "charts": written.charts.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "errors": written.errors,
            "font": written.font.map(|p| p.display().to_string()),
        }));
    } else {
        for e in &written.errors {
            eprintln!("warning: chart {e}");
        }
        if written.font.is_none() {
            eprintln!("warning: no TrueType font found; charts drawn without labels (set CTP_REPORT_FONT)");
        }
        println!("{}", written.index.display());
    }
    Ok(())
}
