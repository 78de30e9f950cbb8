//! Charts shared by `ctpctl report` (PNG files) and the dashboard (SVG served by `ctpd`):
//! the data model ([`data`], derived from API messages by pure functions), the drawing
//! ([`draw`], one function per chart, generic over the plotters backend) and a run-time
//! font ([`font`]). [`sweep`] draws the drift-gated sweep of `ctp-bench emojicl`.
use std::path::Path;

use plotters::prelude::*;

pub mod data;
mod draw;
pub mod font;
pub mod sweep;

pub use data::{ReportData, TaskHistory};
use draw::*;
pub use draw::{color, heat, ChartResult, PALETTE};

/// The four charts, in the order pages show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chart {
    Heatmap,
    Forgetting,
    Syncs,
    Losses,
}

impl Chart {
    pub const ALL: [Chart; 4] = [
        Chart::Heatmap,
        Chart::Forgetting,
        Chart::Syncs,
        Chart::Losses,
    ];

    /// Short name (`heatmap`, …), also the report's file stem.
    pub fn name(self) -> &'static str {
        match self {
            Chart::Heatmap => "heatmap",
            Chart::Forgetting => "forgetting",
            Chart::Syncs => "syncs",
            Chart::Losses => "losses",
        }
    }

    /// Canvas size in pixels.
    pub fn size(self, data: &ReportData, text: bool) -> (u32, u32) {
        match self {
            Chart::Heatmap => heatmap_size(data, text),
            Chart::Forgetting => (760, 420),
            Chart::Syncs => (900, 560),
            Chart::Losses => {
                let n = data.loss_terms().len();
                let cols = n.clamp(1, 3);
                let rows = n.div_ceil(cols).max(1);
                (380 * cols as u32, 280 * rows as u32)
            }
        }
    }

    /// Draws onto `root` (already filled white) with any backend.
    pub fn draw<DB: DrawingBackend>(
        self,
        root: &Area<DB>,
        data: &ReportData,
        text: bool,
    ) -> ChartResult {
        match self {
            Chart::Heatmap => draw_heatmap(root, data, text),
            Chart::Forgetting => draw_forgetting(root, data, text),
            Chart::Syncs => draw_syncs(root, data, text),
            Chart::Losses => draw_losses(root, data, text),
        }
    }

    /// Renders into an RGB buffer and writes it as PNG.
    pub fn png(self, path: &Path, data: &ReportData, text: bool) -> ChartResult {
        let (w, h) = self.size(data, text);
        let mut buf = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(err)?;
            self.draw(&root, data, text)?;
            root.present().map_err(err)?;
        }
        let img = image::RgbImage::from_raw(w, h, buf).ok_or("chart buffer has the wrong size")?;
        img.save_with_format(path, image::ImageFormat::Png)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Renders as an SVG document (text stays text: selectable and sharp at any zoom).
    pub fn svg(self, data: &ReportData, text: bool) -> Result<String, String> {
        let size = self.size(data, text);
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
            root.fill(&WHITE).map_err(err)?;
            self.draw(&root, data, text)?;
            root.present().map_err(err)?;
        }
        Ok(out)
    }
}

/// Accuracy-matrix heatmap PNG (see [`Chart::Heatmap`]).
pub fn heatmap(path: &Path, data: &ReportData, text: bool) -> ChartResult {
    Chart::Heatmap.png(path, data, text)
}

/// Forgetting curves PNG (see [`Chart::Forgetting`]).
pub fn forgetting(path: &Path, data: &ReportData, text: bool) -> ChartResult {
    Chart::Forgetting.png(path, data, text)
}

/// Drift / momentum-sync PNG (see [`Chart::Syncs`]).
pub fn syncs(path: &Path, data: &ReportData, text: bool) -> ChartResult {
    Chart::Syncs.png(path, data, text)
}

/// Loss curves PNG (see [`Chart::Losses`]).
pub fn losses(path: &Path, data: &ReportData, text: bool) -> ChartResult {
    Chart::Losses.png(path, data, text)
}
