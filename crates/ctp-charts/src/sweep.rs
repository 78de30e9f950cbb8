//! The drift-gated sweep of `ctp-bench emojicl`: final Rm against the fraction of optimizer
//! steps that synced the momentum model, one point per configuration (threshold 0, which
//! syncs every step, sits at 1.0).
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::draw::{chart, err, font, mesh, ChartResult};

/// One configuration of the sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPoint {
    /// Shown next to the point, e.g. `0.02` or `0.02 / 10`.
    pub label: String,
    /// Momentum syncs ÷ optimizer steps, in [0, 1].
    pub sync_fraction: f64,
    /// Final mean Rm (%).
    pub rm: f64,
    /// Sample std of `rm` over seeds (`None`: one seed).
    pub rm_std: Option<f64>,
}

/// Canvas size in pixels.
pub const SIZE: (u32, u32) = (760, 460);

/// The sweep as an SVG document; `text` = false leaves out every label (no usable font).
pub fn sweep_svg(title: &str, points: &[SweepPoint], text: bool) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw_sweep(&root, title, points, text)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

fn y_range(points: &[SweepPoint]) -> std::ops::Range<f64> {
    let lo = points
        .iter()
        .map(|p| p.rm - p.rm_std.unwrap_or(0.0))
        .fold(f64::INFINITY, f64::min);
    let hi = points
        .iter()
        .map(|p| p.rm + p.rm_std.unwrap_or(0.0))
        .fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return 0.0..100.0;
    }
    let pad = ((hi - lo) * 0.2).max(1.0);
    (lo - pad).max(0.0)..(hi + pad).min(100.0)
}

fn draw_sweep<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    points: &[SweepPoint],
    text: bool,
) -> ChartResult {
    let mut c = chart(root, title, text, -0.02..1.08, y_range(points))?;
    let pct = |x: &f64| format!("{:.0}%", x * 100.0);
    mesh(
        &mut c,
        text,
        "momentum syncs / optimizer steps",
        "final mean Rm (%)",
        &pct,
    )?;
    let ink = RGBColor(31, 119, 180);
    for p in points {
        if let Some(s) = p.rm_std {
            c.draw_series(std::iter::once(PathElement::new(
                vec![(p.sync_fraction, p.rm - s), (p.sync_fraction, p.rm + s)],
                ink.stroke_width(2),
            )))
            .map_err(err)?;
        }
        c.draw_series(std::iter::once(Circle::new(
            (p.sync_fraction, p.rm),
            5,
            ink.filled(),
        )))
        .map_err(err)?;
        if text {
            // Labels of points near the right edge go to their left, so they stay inside.
            let (side, dx) = if p.sync_fraction > 0.75 {
                (HPos::Right, -0.015)
            } else {
                (HPos::Left, 0.015)
            };
            c.draw_series(std::iter::once(Text::new(
                p.label.clone(),
                (p.sync_fraction + dx, p.rm),
                font(12).pos(Pos::new(side, VPos::Center)),
            )))
            .map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(label: &str, x: f64, rm: f64) -> SweepPoint {
        SweepPoint {
            label: label.into(),
            sync_fraction: x,
            rm,
            rm_std: Some(0.5),
        }
    }

    #[test]
    fn one_marker_per_point_and_labels_only_with_text() {
        let pts = [
            pt("0", 1.0, 7.8),
            pt("0.02", 0.12, 7.5),
            pt("0.05", 0.03, 6.9),
        ];
        let svg = sweep_svg("sweep", &pts, false).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60.min(svg.len())]);
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
        assert!(!svg.contains("0.05"), "no labels without a font");
        if crate::font::init().is_some() {
            let svg = sweep_svg("sweep", &pts, true).unwrap();
            assert!(svg.contains("0.05"), "{svg}");
        }
    }

    #[test]
    fn y_range_covers_error_bars() {
        let r = y_range(&[pt("a", 1.0, 10.0), pt("b", 0.1, 20.0)]);
        assert!(r.start <= 9.5 && r.end >= 20.5, "{r:?}");
        assert_eq!(y_range(&[]), 0.0..100.0);
    }
}
