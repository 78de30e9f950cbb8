//! A font for chart text, found at run time.
//!
//! plotters is built with only its `ab_glyph` text backend (pure Rust; no fontconfig or
//! freetype system libraries), which draws text only with a font registered from bytes.
//! No font is embedded in the binary (licensing and size); instead the first TrueType font
//! found among common locations is used: `$CTP_REPORT_FONT`, DejaVu Sans (Debian's
//! `fonts-dejavu-core`, present on most Linux systems), Liberation, FreeFont, Noto, or any
//! `.ttf` under the system font folders. Without one the charts are drawn without text and
//! the HTML page, which carries every number in tables, says so.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::style::{register_font, FontStyle};

/// Well-known font files, most preferred first.
const CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Folders searched (a few levels deep) when no candidate exists.
const FOLDERS: &[&str] = &["/usr/share/fonts", "/usr/local/share/fonts"];

fn find_ttf(dir: &Path, depth: usize) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let is_ttf = |p: &PathBuf| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("ttf"))
    };
    if let Some(f) = entries.iter().find(|p| p.is_file() && is_ttf(p)) {
        return Some(f.clone());
    }
    if depth == 0 {
        return None;
    }
    entries
        .iter()
        .filter(|p| p.is_dir())
        .find_map(|d| find_ttf(d, depth - 1))
}

/// The font file the report will use, if any.
pub fn locate() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CTP_REPORT_FONT").map(PathBuf::from) {
        if p.is_file() {
            return Some(p);
        }
    }
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| FOLDERS.iter().find_map(|d| find_ttf(Path::new(d), 3)))
}

/// Registers the font as plotters' "sans-serif" once per process; returns the file used,
/// or `None` when charts must be drawn without text.
pub fn init() -> Option<&'static Path> {
    static FONT: OnceLock<Option<PathBuf>> = OnceLock::new();
    FONT.get_or_init(|| {
        let path = locate()?;
        let bytes = std::fs::read(&path).ok()?;
        // plotters keeps a 'static reference; one font per process, so leaking is bounded.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font("sans-serif", FontStyle::Normal, bytes).ok()?;
        Some(path)
    })
    .as_deref()
}
