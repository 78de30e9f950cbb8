//! `index.html`: one self-contained page (inline CSS, no scripts, no network) that shows
//! the charts as relative PNGs and every number in tables, so it is readable offline, in a
//! CI artifact viewer, and even when the charts had to be drawn without a font.
use std::fmt::Write;

use super::charts::heat;
use super::data::{ReportData, UNION_RM_NOTE};
use crate::output::{num, state_name, time};

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const CSS: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
img{max-width:100%;border:1px solid #eee}.note{color:#666;font-size:.9em}
.mono{font-family:ui-monospace,monospace;font-size:.85em}";

/// Chart files the page links to, and the font note if charts have no text.
pub struct Charts<'a> {
    /// PNG file names (relative), in the order heatmap, forgetting, syncs, losses; `None`
    /// where a chart could not be drawn (the reason goes in `errors`).
    pub files: [Option<&'a str>; 4],
    /// Per-chart failures, shown instead of the image.
    pub errors: Vec<String>,
    /// Font used for chart text, or `None` (charts without labels).
    pub font: Option<String>,
}

fn img(out: &mut String, file: Option<&str>, alt: &str) {
    match file {
        Some(f) => {
            let _ = writeln!(out, "<p><img src=\"{}\" alt=\"{}\"></p>", esc(f), esc(alt));
        }
        None => {
            let _ = writeln!(out, "<p class=note>({} not available)</p>", esc(alt));
        }
    }
}

fn matrix_table(out: &mut String, data: &ReportData) {
    let cols = data.columns();
    let labels = data.row_labels();
    out.push_str("<table><tr><th class=l>version</th>");
    for (i, (_, name)) in cols.iter().enumerate() {
        let _ = write!(out, "<th title=\"{}\">T{}</th>", esc(name), i + 1);
    }
    out.push_str("</tr>\n");
    for (label, row) in labels.iter().zip(data.matrix()) {
        let _ = write!(out, "<tr><th class=l>{}</th>", esc(label));
        for v in row {
            match v {
                Some(v) => {
                    let c = heat(v / 100.0);
                    let ink = if v > 60.0 { "#000" } else { "#fff" };
                    let _ = write!(
                        out,
                        "<td style=\"background:rgb({},{},{});color:{ink}\">{v:.1}</td>",
                        c.0, c.1, c.2
                    );
                }
                None => out.push_str("<td></td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n<p class=note>");
    for (i, (id, name)) in cols.iter().enumerate() {
        let _ = write!(
            out,
            "T{} = {} <span class=mono>({})</span>; ",
            i + 1,
            esc(name),
            esc(id)
        );
    }
    out.push_str(
        "* = head, † = not on the head's lineage (left by a rollback or refused by the gate), \
         ✗ = rejected by the promotion gate.</p>\n",
    );
}

/// Rm per anchor suite (a column each) per version; nothing when the model has no suites.
fn anchors_table(out: &mut String, data: &ReportData) {
    let suites = crate::anchors::anchor_columns(&data.versions);
    if suites.is_empty() {
        return;
    }
    out.push_str(
        "<h2>Anchor suites (Rm, %)</h2>\n<p class=note>Held-out sets that belong to no task \
         (docs/anchors.md); blank = not evaluated.</p>\n<table><tr><th class=l>version</th>",
    );
    for s in &suites {
        let _ = write!(out, "<th>{}</th>", esc(s));
    }
    out.push_str("</tr>\n");
    for (label, v) in data.row_labels().iter().zip(&data.versions) {
        let _ = write!(out, "<tr><td class=l>{}</td>", esc(label));
        for s in &suites {
            let rm = crate::anchors::anchor_rm(v, s);
            let _ = write!(
                out,
                "<td>{}</td>",
                rm.map(|x| format!("{x:.1}")).unwrap_or_default()
            );
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn versions_table(out: &mut String, data: &ReportData) {
    out.push_str(
        "<table><tr><th>version</th><th>parent</th><th class=l>task</th><th>union Rm</th>\
         <th>avg forgetting</th><th>BWT</th><th>syncs / steps</th><th class=l>created</th>\
         <th class=l>checkpoint</th><th class=l>promotion gate</th></tr>\n",
    );
    for (label, v) in data.row_labels().iter().zip(&data.versions) {
        let sha: String = v.checkpoint_sha256.chars().take(12).collect();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{} / {}</td><td class=l>{}</td><td class='l mono'>{}</td><td class=l>{}</td></tr>",
            esc(label),
            v.parent.map(|p| p.to_string()).unwrap_or("-".into()),
            esc(&v.task_name),
            num(v.union_eval.as_ref().map(|e| e.rm), 1),
            num(v.average_forgetting, 2),
            num(v.bwt, 2),
            v.momentum_syncs,
            v.momentum_steps,
            esc(&time(&v.created_at)),
            esc(&sha),
            if v.rejection_reason.is_empty() {
                String::new()
            } else {
                format!("REJECTED: {}", esc(&v.rejection_reason))
            },
        );
    }
    out.push_str("</table>\n");
}

fn tasks_table(out: &mut String, data: &ReportData) {
    out.push_str(
        "<table><tr><th class=l>task</th><th class=l>id</th><th>version</th><th>steps</th>\
         <th>syncs</th><th class=l>final losses</th></tr>\n",
    );
    for h in &data.histories {
        let last = h
            .progress
            .last()
            .map(|p| {
                p.losses
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.3}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "<tr><td class=l>{}</td><td class='l mono'>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=l>{}</td></tr>",
            esc(&h.name),
            esc(&h.task_id),
            h.version.map(|v| v.to_string()).unwrap_or("-".into()),
            h.total_steps,
            h.syncs.len(),
            esc(&last)
        );
    }
    for t in &data.other_tasks {
        let _ = writeln!(
            out,
            "<tr><td class=l>{}</td><td class='l mono'>{}</td><td>-</td><td colspan=3 class=l>{}{}</td></tr>",
            esc(&t.name),
            esc(&t.id),
            state_name(t.state),
            if t.error.is_empty() { String::new() } else { format!(": {}", esc(&t.error)) }
        );
    }
    out.push_str("</table>\n");
}

/// The whole page.
pub fn render(data: &ReportData, charts: &Charts<'_>) -> String {
    let mut out = String::new();
    let title = format!("ctp report — {}", data.model);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{CSS}</style></head><body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    let head = data.versions.iter().find(|v| v.is_head).map(|v| v.version);
    let _ = writeln!(
        out,
        "<p class=note>Generated {} · {} versions · head {} · {} tasks evaluated</p>",
        esc(&data.generated_at),
        data.versions.len(),
        head.map(|h| format!("v{h}")).unwrap_or("-".into()),
        data.columns().len()
    );
    if charts.font.is_none() {
        out.push_str(
            "<p class=note>No TrueType font was found, so the charts have no labels; all \
             values are in the tables. Set CTP_REPORT_FONT to a .ttf file to label them.</p>\n",
        );
    }
    for e in &charts.errors {
        let _ = writeln!(out, "<p class=note>chart error: {}</p>", esc(e));
    }
    out.push_str(
        "<h2>Accuracy matrix (Rm, %)</h2>\n<p class=note>Rows: versions in lineage \
                  order; columns: tasks. Rm = mean of TR@1/5/10 and IR@1/5/10 on the task's \
                  held-out split.</p>\n",
    );
    img(&mut out, charts.files[0], "accuracy matrix heatmap");
    matrix_table(&mut out, data);
    out.push_str("<h2>Forgetting curves</h2>\n");
    img(&mut out, charts.files[1], "Rm per task over versions");
    out.push_str(
        "<h2>Versions</h2>\n<p class=note>Forgetting and BWT: positive = forgotten \
                  (max earlier Rm minus current).</p>\n",
    );
    let _ = writeln!(
        out,
        "<p class=note>{}</p>",
        esc(&UNION_RM_NOTE.replace("UNION Rm", "union Rm"))
    );
    versions_table(&mut out, data);
    anchors_table(&mut out, data);
    out.push_str("<h2>Momentum syncs and drift</h2>\n");
    img(&mut out, charts.files[2], "drift at momentum syncs");
    out.push_str("<h2>Loss curves</h2>\n");
    img(&mut out, charts.files[3], "loss curves");
    out.push_str("<h2>Tasks</h2>\n");
    tasks_table(&mut out, data);
    out.push_str("</body></html>\n");
    out
}
