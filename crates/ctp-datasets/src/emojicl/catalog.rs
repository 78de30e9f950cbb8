//! The joined emoji catalog: `emoji.json` (images, categories, Unicode names) from
//! `emoji-datasource-google`, CLDR labels and keywords from `emojibase-data/en/data.json`,
//! and community keywords from `emojilib`.
//!
//! The packages disagree on variation selectors (emojibase writes `❤️`, emoji.json's
//! `unified` is `2764-FE0F`, emojilib sometimes omits U+FE0F), so every join key is the emoji
//! string with U+FE0F removed (docs/data.md, "Captions").
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::DatasetError;

/// Where the npm packages are, relative to the assets folder (`scripts/setup-data.sh`).
pub const NPM_SUBDIR: &str = "npm/node_modules";

/// `$CTP_ASSETS/npm/node_modules`, else `~/.cache/ctp/assets/npm/node_modules`, matching
/// where `scripts/setup-data.sh` installs the packages.
pub fn default_node_modules() -> PathBuf {
    let assets = std::env::var_os("CTP_ASSETS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CTP_CACHE").map(|c| PathBuf::from(c).join("assets")))
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/ctp/assets")
        });
    assets.join(NPM_SUBDIR)
}

/// A skin-tone variant of a base emoji (People & Body).
#[derive(Debug, Clone)]
pub struct SkinVariant {
    /// Hex code points joined by `-`.
    pub unified: String,
    /// Image file name under `img/<set>/64/`.
    pub image: String,
    /// emojibase's label, e.g. "waving hand: light skin tone".
    pub label: String,
}

/// One base emoji with all the text the packages have about it.
#[derive(Debug, Clone)]
pub struct Emoji {
    /// Hex code points joined by `-` (the stable key; names have a duplicate).
    pub unified: String,
    /// Image file name under `img/<set>/64/`.
    pub image: String,
    /// Unicode name from emoji.json (upper case; flags are title case).
    pub unicode_name: Option<String>,
    /// CLDR category, e.g. "Food & Drink".
    pub category: String,
    /// CLDR subcategory, e.g. "food-fruit".
    pub subcategory: String,
    /// CLDR order within the whole list.
    pub sort_order: u32,
    /// CLDR short name from emojibase (falls back to the lower-cased Unicode name).
    pub label: String,
    /// CLDR keywords from emojibase.
    pub tags: Vec<String>,
    /// emojilib keywords (noisier; used when CLDR has none).
    pub emojilib: Vec<String>,
    /// Skin-tone variants, in emoji.json's key order.
    pub skins: Vec<SkinVariant>,
}

#[derive(Deserialize)]
struct RawEmoji {
    name: Option<String>,
    unified: String,
    image: String,
    category: String,
    subcategory: String,
    sort_order: u32,
    #[serde(default)]
    skin_variations: Option<BTreeMap<String, RawSkin>>,
}

#[derive(Deserialize)]
struct RawSkin {
    unified: String,
    image: String,
}

#[derive(Deserialize)]
struct BaseEntry {
    label: String,
    emoji: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    skins: Vec<BaseSkin>,
}

#[derive(Deserialize)]
struct BaseSkin {
    label: String,
    emoji: String,
}

/// The join key: the emoji string without U+FE0F.
pub fn join_key(emoji: &str) -> String {
    emoji.chars().filter(|&c| c != '\u{FE0F}').collect()
}

/// Builds the emoji string from `unified` (`1F44B-1F3FB`), or `None` if a part is not a
/// valid code point.
pub fn emoji_from_unified(unified: &str) -> Option<String> {
    unified
        .split('-')
        .map(|h| u32::from_str_radix(h, 16).ok().and_then(char::from_u32))
        .collect()
}

/// Reads a package file, turning "not there" into the fix (run the setup script).
fn read_asset(node_modules: &Path, rel: &str) -> Result<Vec<u8>, DatasetError> {
    let path = node_modules.join(rel);
    std::fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DatasetError::Invalid {
                path: path.clone(),
                problem: "EmojiCL assets missing: run scripts/setup-data.sh \
                          (installs the emoji npm packages into $CTP_ASSETS/npm)"
                    .into(),
            }
        } else {
            DatasetError::io(&path, e)
        }
    })
}

fn parse<T: serde::de::DeserializeOwned>(
    node_modules: &Path,
    rel: &str,
) -> Result<T, DatasetError> {
    let bytes = read_asset(node_modules, rel)?;
    serde_json::from_slice(&bytes).map_err(|e| DatasetError::Invalid {
        path: node_modules.join(rel),
        problem: format!("unexpected package file format: {e}"),
    })
}

/// Loads and joins the three packages. Entries come back in CLDR `sort_order`.
pub fn load(node_modules: &Path) -> Result<Vec<Emoji>, DatasetError> {
    let raw: Vec<RawEmoji> = parse(node_modules, "emoji-datasource-google/emoji.json")?;
    let base: Vec<BaseEntry> = parse(node_modules, "emojibase-data/en/data.json")?;
    let lib: HashMap<String, Vec<String>> = parse(node_modules, "emojilib/dist/emoji-en-US.json")?;

    let mut labels: HashMap<String, (String, Vec<String>)> = HashMap::new();
    let mut skin_labels: HashMap<String, String> = HashMap::new();
    for entry in base {
        for skin in entry.skins {
            skin_labels.insert(join_key(&skin.emoji), skin.label);
        }
        labels.insert(join_key(&entry.emoji), (entry.label, entry.tags));
    }
    let lib: HashMap<String, Vec<String>> =
        lib.into_iter().map(|(k, v)| (join_key(&k), v)).collect();

    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        let key = emoji_from_unified(&r.unified)
            .map(|e| join_key(&e))
            .unwrap_or_default();
        let fallback = r.unicode_label();
        let (label, tags) = labels
            .get(&key)
            .cloned()
            .unwrap_or_else(|| (fallback.clone(), Vec::new()));
        let skins = r
            .skin_variations
            .unwrap_or_default()
            .into_values()
            .map(|s| {
                let skey = emoji_from_unified(&s.unified)
                    .map(|e| join_key(&e))
                    .unwrap_or_default();
                let label = skin_labels
                    .get(&skey)
                    .cloned()
                    .unwrap_or_else(|| format!("{label}: {}", s.unified.to_lowercase()));
                SkinVariant {
                    unified: s.unified,
                    image: s.image,
                    label,
                }
            })
            .collect();
        out.push(Emoji {
            emojilib: lib.get(&key).cloned().unwrap_or_default(),
            unified: r.unified,
            image: r.image,
            unicode_name: r.name,
            category: r.category,
            subcategory: r.subcategory,
            sort_order: r.sort_order,
            label,
            tags,
            skins,
        });
    }
    out.sort_by_key(|e| e.sort_order);
    Ok(out)
}

impl RawEmoji {
    fn unicode_label(&self) -> String {
        self.name
            .as_deref()
            .map(str::to_lowercase)
            .unwrap_or_else(|| self.unified.to_lowercase())
    }
}
