//! Drawing of the four charts onto any plotters backend (see [`super::Chart`]).
//!
//! Every chart takes `text`: with no usable font (see [`super::font`]) titles, axis labels
//! and annotations are left out rather than failing the whole page.
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::data::ReportData;

/// Chart error: plotters' errors are generic over the backend, so they become strings.
pub type ChartResult = Result<(), String>;

/// Distinct colors for tasks/series (Tableau 10).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Series color `i` (wrapping).
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Viridis-like map of `t` in [0, 1] (5 stops, linear in between): perceptually ordered and
/// readable in grey, for the accuracy heatmap.
pub fn heat(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

pub(super) type Area<DB> = DrawingArea<DB, Shift>;
type Ctx<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

pub(crate) fn font(size: u32) -> TextStyle<'static> {
    ("sans-serif", size).into_font().color(&BLACK)
}

pub(super) fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

const CELL: (u32, u32) = (64, 30);

fn heatmap_margins(text: bool) -> (u32, u32) {
    if text {
        (70, 60)
    } else {
        (10, 10)
    }
}

pub(super) fn heatmap_size(data: &ReportData, text: bool) -> (u32, u32) {
    let ncols = data.columns().len().max(1) as u32;
    let nrows = data.versions.len().max(1) as u32;
    let (left, top) = heatmap_margins(text);
    let w = (left + CELL.0 * ncols + 20).max(if text { 360 } else { 0 });
    (w, top + CELL.1 * nrows + 20)
}

/// Accuracy-matrix heatmap: rows = versions (lineage order), columns = tasks, each cell
/// colored by Rm and annotated with its value.
pub(super) fn draw_heatmap<DB: DrawingBackend>(
    root: &Area<DB>,
    data: &ReportData,
    text: bool,
) -> ChartResult {
    let matrix = data.matrix();
    let rows = data.row_labels();
    let ncols = data.columns().len().max(1);
    let (cell_w, cell_h) = CELL;
    let (left, top) = heatmap_margins(text);
    {
        if text {
            let title = format!("Rm (%) — {}", data.model);
            root.draw(&Text::new(title, (10, 8), font(16)))
                .map_err(err)?;
        }
        let center = Pos::new(HPos::Center, VPos::Center);
        for c in 0..ncols {
            if text {
                let x = (left + cell_w * c as u32 + cell_w / 2) as i32;
                let label = format!("T{}", c + 1);
                root.draw(&Text::new(
                    label,
                    (x, top as i32 - 14),
                    font(14).pos(center),
                ))
                .map_err(err)?;
            }
        }
        for (r, row) in matrix.iter().enumerate() {
            let y0 = (top + cell_h * r as u32) as i32;
            if text {
                let style = font(14).pos(Pos::new(HPos::Right, VPos::Center));
                root.draw(&Text::new(
                    rows[r].clone(),
                    (left as i32 - 8, y0 + cell_h as i32 / 2),
                    style,
                ))
                .map_err(err)?;
            }
            for (c, value) in row.iter().enumerate() {
                let x0 = (left + cell_w * c as u32) as i32;
                let corners = [(x0, y0), (x0 + cell_w as i32 - 1, y0 + cell_h as i32 - 1)];
                let fill = value
                    .map(|v| heat(v / 100.0))
                    .unwrap_or(RGBColor(235, 235, 235));
                root.draw(&Rectangle::new(corners, fill.filled()))
                    .map_err(err)?;
                if let (true, Some(v)) = (text, value) {
                    let ink = if *v > 60.0 { BLACK } else { WHITE };
                    let style = font(13).color(&ink).pos(center);
                    let at = (x0 + cell_w as i32 / 2, y0 + cell_h as i32 / 2);
                    root.draw(&Text::new(format!("{v:.1}"), at, style))
                        .map_err(err)?;
                }
            }
        }
        Ok(())
    }
}

/// Builds a chart with or without text (captions, tick labels, axis names).
pub(crate) fn chart<'a, DB: DrawingBackend>(
    area: &'a Area<DB>,
    title: &str,
    text: bool,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<Ctx<'a, DB>, String> {
    let mut b = ChartBuilder::on(area);
    b.margin(12);
    if text {
        b.caption(title, font(16))
            .x_label_area_size(34)
            .y_label_area_size(50);
    }
    b.build_cartesian_2d(x, y).map_err(err)
}

/// Steps are integers; plotters would print them as `5.0`.
fn whole(x: &f64) -> String {
    format!("{x:.0}")
}

pub(crate) fn mesh<DB: DrawingBackend>(
    c: &mut Ctx<'_, DB>,
    text: bool,
    x_desc: &str,
    y_desc: &str,
    x_fmt: &dyn Fn(&f64) -> String,
) -> ChartResult {
    let mut m = c.configure_mesh();
    m.light_line_style(RGBColor(245, 245, 245));
    if text {
        m.x_desc(x_desc)
            .y_desc(y_desc)
            .label_style(font(12))
            .x_label_formatter(x_fmt);
    } else {
        m.x_labels(0).y_labels(0);
    }
    m.draw().map_err(err)
}

fn legend<'a, DB: DrawingBackend + 'a>(c: &mut Ctx<'a, DB>, text: bool) -> ChartResult {
    if !text {
        return Ok(());
    }
    c.configure_series_labels()
        .label_font(font(12))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .position(SeriesLabelPosition::LowerLeft)
        .draw()
        .map_err(err)
}

/// Forgetting curves: Rm of each task (one line each) over the versions in lineage order.
pub(super) fn draw_forgetting<DB: DrawingBackend>(
    root: &Area<DB>,
    data: &ReportData,
    text: bool,
) -> ChartResult {
    let matrix = data.matrix();
    let cols = data.columns();
    let n = data.lineage_len.max(1) as f64;
    let labels = data.row_labels();
    // Ticks fall on whole positions 1..=n, each a version of the lineage.
    let version_at = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 1.0 && i <= n {
            labels[i as usize - 1].clone()
        } else {
            String::new()
        }
    };
    {
        let mut c = chart(
            root,
            "Rm per task over versions (forgetting curves)",
            text,
            0.5..n + 0.5,
            0.0..100.0,
        )?;
        mesh(
            &mut c,
            text,
            "version (head lineage, root → head)",
            "Rm (%)",
            &version_at,
        )?;
        for (j, (_, name)) in cols.iter().enumerate() {
            let pts: Vec<(f64, f64)> = matrix
                .iter()
                .take(data.lineage_len)
                .enumerate()
                .filter_map(|(i, row)| row[j].map(|v| ((i + 1) as f64, v)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let col = color(j);
            c.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
                .map_err(err)?
                .label(format!("T{} {name}", j + 1))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2))
                });
            c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled())))
                .map_err(err)?;
        }
        legend(&mut c, text)
    }
}

/// Right end of the global step axis, with a little room so the last points show.
fn x_range(data: &ReportData) -> f64 {
    data.lineage_histories()
        .last()
        .map(|(start, h)| (start + h.total_steps) as f64)
        .unwrap_or(0.0)
        .max(1.0)
        * 1.02
}

/// Grey vertical lines where each task after the first starts.
fn boundaries<DB: DrawingBackend>(
    c: &mut Ctx<'_, DB>,
    hist: &[(u64, &super::data::TaskHistory)],
    top: f64,
) -> ChartResult {
    let y0 = c.y_range().start;
    for (start, _) in hist.iter().skip(1) {
        let x = *start as f64;
        c.draw_series(LineSeries::new(
            vec![(x, y0), (x, top)],
            RGBColor(170, 170, 170),
        ))
        .map_err(err)?;
    }
    Ok(())
}

/// Momentum syncs: drift at each sync (with the threshold) and the sync gap k, over global
/// training steps of the head's lineage, one color per task.
pub(super) fn draw_syncs<DB: DrawingBackend>(
    root: &Area<DB>,
    data: &ReportData,
    text: bool,
) -> ChartResult {
    let hist = data.lineage_histories();
    let xmax = x_range(data);
    let dmax = hist
        .iter()
        .flat_map(|(_, h)| h.syncs.iter().map(|s| s.drift.max(s.threshold)))
        .fold(0.0f64, f64::max)
        .max(1e-6)
        * 1.1;
    let kmax = hist
        .iter()
        .flat_map(|(_, h)| h.syncs.iter().map(|s| s.k))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    {
        let (top, bottom) = root.split_vertically(300);
        let mut c = chart(&top, "Drift at momentum syncs", text, 0.0..xmax, 0.0..dmax)?;
        mesh(&mut c, text, "training step (all tasks)", "drift d", &whole)?;
        boundaries(&mut c, &hist, dmax)?;
        for (i, (start, h)) in hist.iter().enumerate() {
            let col = color(i);
            let pts = h.syncs.iter().map(|s| ((start + s.step) as f64, s.drift));
            c.draw_series(pts.map(|p| Circle::new(p, 3, col.filled())))
                .map_err(err)?
                .label(format!("{} ({} syncs)", h.name, h.syncs.len()))
                .legend(move |(x, y)| Circle::new((x + 8, y), 3, col.filled()));
            let thr: Vec<(f64, f64)> = h
                .syncs
                .iter()
                .map(|s| ((start + s.step) as f64, s.threshold))
                .collect();
            let line = c
                .draw_series(LineSeries::new(thr, BLACK.mix(0.5)))
                .map_err(err)?;
            if i == 0 {
                line.label("threshold")
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.5)));
            }
        }
        legend(&mut c, text)?;
        let mut c = chart(
            &bottom,
            "Steps between syncs (k)",
            text,
            0.0..xmax,
            0.0..kmax,
        )?;
        mesh(&mut c, text, "training step (all tasks)", "k", &whole)?;
        boundaries(&mut c, &hist, kmax)?;
        for (i, (start, h)) in hist.iter().enumerate() {
            let col = color(i);
            let pts = h
                .syncs
                .iter()
                .map(|s| ((start + s.step) as f64, s.k as f64));
            c.draw_series(pts.map(|p| Cross::new(p, 3, col.stroke_width(1))))
                .map_err(err)?;
        }
        Ok(())
    }
}

/// Loss curves: one panel per loss term, one color per task, over global steps.
pub(super) fn draw_losses<DB: DrawingBackend>(
    root: &Area<DB>,
    data: &ReportData,
    text: bool,
) -> ChartResult {
    let terms = data.loss_terms();
    let hist = data.lineage_histories();
    let xmax = x_range(data);
    let cols = terms.len().clamp(1, 3);
    let rows = terms.len().div_ceil(cols).max(1);
    {
        let panels = root.split_evenly((rows, cols));
        for (term, area) in terms.iter().zip(panels.iter()) {
            let values = hist
                .iter()
                .flat_map(|(_, h)| h.progress.iter().filter_map(|p| p.losses.get(term)));
            let (lo, hi) = values
                .filter(|v| v.is_finite())
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(*v), b.max(*v))
                });
            let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
            let pad = ((hi - lo) * 0.08).max(1e-6);
            let mut c = chart(area, term, text, 0.0..xmax, (lo - pad)..(hi + pad))?;
            mesh(&mut c, text, "step", "loss", &whole)?;
            boundaries(&mut c, &hist, hi + pad)?;
            for (i, (start, h)) in hist.iter().enumerate() {
                let pts: Vec<(f64, f64)> = h
                    .progress
                    .iter()
                    .filter_map(|p| p.losses.get(term).map(|v| ((start + p.step) as f64, *v)))
                    .filter(|(_, v)| v.is_finite())
                    .collect();
                c.draw_series(LineSeries::new(pts, color(i).stroke_width(2)))
                    .map_err(err)?;
            }
        }
        Ok(())
    }
}
