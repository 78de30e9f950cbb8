//! EmojiCL: the 9-domain continual vision-language benchmark (docs/data.md, "EmojiCL").
//!
//! One task per CLDR category, in CLDR order (Component, the skin-tone swatches, is
//! dropped). A task trains on the Google/Noto art and evaluates on the Twitter/Twemoji art
//! of the same base emoji: same concept, different artist, so a retrieval hit needs real
//! visual–semantic alignment rather than memorised pixels. People & Body also trains on its
//! skin-tone variants (augmentation) but evaluates on base emoji only, which keeps the
//! domains balanced.
//!
//! Everything is deterministic for a given seed; each task draws from its own random
//! stream, so exporting a subset of tasks yields the same content for those tasks.
//!
//! **Anchor slice** (issue #25 §2, docs/anchors.md): with `anchor_per_category` N > 0, N base
//! emoji of every category (with their skin variants) are held out of training and evaluation
//! of every task and form one anchor suite ([`anchor`]): Twemoji art with the CLDR label, like
//! an eval split. Which emoji are held out depends only on N and the category, not on the
//! seed or the selected tasks ([`ANCHOR_STREAM`]), so every seed and every cell of a table is
//! measured on the same suite. N = 0 (the default) builds exactly what it built before.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{DatasetError, Split};

pub mod captions;
pub mod catalog;
mod export;

#[cfg(test)]
mod tests;

pub use catalog::default_node_modules;
pub use export::{export, ExportFormat, Index, IndexAnchor, IndexTask};

use captions::{CaptionText, Rng};

/// The 9 content categories, in CLDR order: the task order of the benchmark.
pub const CATEGORIES: [&str; 9] = [
    "Smileys & Emotion",
    "People & Body",
    "Animals & Nature",
    "Food & Drink",
    "Travel & Places",
    "Activities",
    "Objects",
    "Symbols",
    "Flags",
];

/// What to build.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Task indices into [`CATEGORIES`] (default all 9, in order).
    pub tasks: Vec<usize>,
    /// Cap on training samples per task (`None` = all).
    pub max_train: Option<usize>,
    /// Cap on evaluation samples per task (`None` = all base emoji).
    pub max_eval: Option<usize>,
    /// Cap on skin-tone variants per base emoji (`None` = all, `Some(0)` = none).
    pub max_skin_variants: Option<usize>,
    /// Training captions (samples) per training image, each from a different template.
    pub captions_per_image: usize,
    /// Seed for subsets and caption templates.
    pub seed: u64,
    /// Base emoji per category held out of every task as the anchor suite (0 = none).
    pub anchor_per_category: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tasks: (0..CATEGORIES.len()).collect(),
            max_train: None,
            max_eval: None,
            max_skin_variants: None,
            captions_per_image: 1,
            seed: 0,
            anchor_per_category: 0,
        }
    }
}

/// One sample of a built task: the image is a file in the installed package, read only
/// when the task is written.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRef {
    /// Unique within the task, e.g. `1f44b-1f3fb.google` or `1f600.twitter`.
    pub id: String,
    /// The 64×64 PNG.
    pub image: PathBuf,
    /// Caption text.
    pub caption: String,
    /// Train (Google art) or eval (Twitter art).
    pub split: Split,
}

/// One benchmark task (a CLDR category).
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Index into [`CATEGORIES`].
    pub index: usize,
    /// Category name, used as the task name.
    pub name: String,
    /// File-name form of the name, e.g. `food-drink`.
    pub slug: String,
    /// Training samples (Google art).
    pub train: Vec<SampleRef>,
    /// Evaluation samples (Twitter art of base emoji, captioned with the CLDR label).
    pub eval: Vec<SampleRef>,
}

/// `Food & Drink` → `food-drink`.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// Builds the selected tasks from the packages under `node_modules`.
pub fn build(node_modules: &Path, opts: &Options) -> Result<Vec<Task>, DatasetError> {
    if let Some(&bad) = opts.tasks.iter().find(|&&t| t >= CATEGORIES.len()) {
        return Err(DatasetError::Invalid {
            path: node_modules.to_path_buf(),
            problem: format!("task {bad} does not exist (EmojiCL tasks are 0..=8)"),
        });
    }
    let all = catalog::load(node_modules)?;
    let google = node_modules.join("emoji-datasource-google/img/google/64");
    let twitter = node_modules.join("emoji-datasource-twitter/img/twitter/64");
    let mut tasks = Vec::with_capacity(opts.tasks.len());
    for &index in &opts.tasks {
        let emoji = category(&all, index);
        let held = held_out(node_modules, &emoji, index, opts.anchor_per_category)?;
        let mut rng = Rng::derive(opts.seed, index as u64);
        tasks.push(build_task(
            index, &emoji, &held, &google, &twitter, opts, &mut rng,
        ));
    }
    Ok(tasks)
}

/// The random stream (seed) that picks the anchor slice: fixed, so the suite does not depend
/// on `Options::seed`.
pub const ANCHOR_STREAM: u64 = 0x0025_A7C4_0000_0000;

/// Suite name the benchmark and the demo register the anchor slice under.
pub const ANCHOR_SUITE: &str = "emojicl-anchor";

fn category(all: &[catalog::Emoji], index: usize) -> Vec<&catalog::Emoji> {
    all.iter()
        .filter(|e| e.category == CATEGORIES[index])
        .collect()
}

/// Indices (into the category's emoji) of the `n` held-out base emoji of category `index`:
/// the first `n` of a permutation drawn from [`ANCHOR_STREAM`].
fn held_out(
    node_modules: &Path,
    emoji: &[&catalog::Emoji],
    index: usize,
    n: usize,
) -> Result<HashSet<usize>, DatasetError> {
    if n == 0 {
        return Ok(HashSet::new());
    }
    if 2 * n > emoji.len() {
        return Err(DatasetError::Invalid {
            path: node_modules.to_path_buf(),
            problem: format!(
                "anchor slice of {n} per category is more than half of {} ({} base emoji)",
                CATEGORIES[index],
                emoji.len()
            ),
        });
    }
    let mut order: Vec<usize> = (0..emoji.len()).collect();
    Rng::derive(ANCHOR_STREAM, index as u64).shuffle(&mut order);
    Ok(order.into_iter().take(n).collect())
}

/// The anchor suite: the `opts.anchor_per_category` held-out base emoji of **every** category
/// (whatever `opts.tasks` selects), categories in CLDR order, emoji in CLDR order within one;
/// Twemoji art captioned with the CLDR label (as eval samples), split `Eval`. Empty when
/// `anchor_per_category` is 0. No task built with the same `anchor_per_category` trains or
/// evaluates on these emoji or their skin variants.
pub fn anchor(node_modules: &Path, opts: &Options) -> Result<Vec<SampleRef>, DatasetError> {
    if opts.anchor_per_category == 0 {
        return Ok(Vec::new());
    }
    let all = catalog::load(node_modules)?;
    let twitter = node_modules.join("emoji-datasource-twitter/img/twitter/64");
    let mut out = Vec::new();
    for index in 0..CATEGORIES.len() {
        let emoji = category(&all, index);
        let mut held: Vec<usize> = held_out(node_modules, &emoji, index, opts.anchor_per_category)?
            .into_iter()
            .collect();
        held.sort_unstable();
        out.extend(held.into_iter().map(|i| eval_sample(emoji[i], &twitter)));
    }
    Ok(out)
}

fn eval_sample(e: &catalog::Emoji, twitter: &Path) -> SampleRef {
    SampleRef {
        id: format!("{}.twitter", e.unified.to_lowercase()),
        image: twitter.join(&e.image),
        caption: e.label.clone(),
        split: Split::Eval,
    }
}

/// Picks the task's emoji and captions. One seeded permutation of the base emoji decides
/// both subsets, and eval takes a prefix of the train order, so with `max_eval` ≤ the number
/// of training base emoji every evaluated concept was also trained on.
#[allow(clippy::too_many_arguments)]
fn build_task(
    index: usize,
    emoji: &[&catalog::Emoji],
    held: &HashSet<usize>,
    google: &Path,
    twitter: &Path,
    opts: &Options,
    rng: &mut Rng,
) -> Task {
    let mut order: Vec<usize> = (0..emoji.len()).collect();
    rng.shuffle(&mut order);
    // The anchor slice is neither trained nor evaluated on (its removal after the shuffle
    // keeps the permutation, so N = 0 builds exactly what it always built).
    order.retain(|i| !held.contains(i));
    let per_image = opts.captions_per_image.max(1);

    // Training candidates: base images first (in permutation order), then skin variants
    // (shuffled), so a cap keeps concepts before augmentations.
    let mut base_train = Vec::new();
    let mut variants = Vec::new();
    for &i in &order {
        let e = emoji[i];
        base_train.push((i, None));
        let cap = opts.max_skin_variants.unwrap_or(usize::MAX);
        for s in e.skins.iter().take(cap) {
            variants.push((i, Some(s)));
        }
    }
    rng.shuffle(&mut variants);
    let mut chosen = base_train;
    chosen.extend(variants);
    if let Some(max) = opts.max_train {
        chosen.truncate(max.div_ceil(per_image));
    }
    // Back to CLDR order (then variant order) for readable output.
    chosen.sort_by_key(|(i, s)| (*i, s.map(|s| s.unified.clone())));

    let mut train = Vec::new();
    for (i, skin) in chosen {
        let e = emoji[i];
        let (unified, image, label, name) = match skin {
            None => (
                &e.unified,
                &e.image,
                e.label.as_str(),
                e.unicode_name.as_deref(),
            ),
            Some(s) => (&s.unified, &s.image, s.label.as_str(), None),
        };
        let text = CaptionText {
            label,
            tags: &e.tags,
            emojilib: &e.emojilib,
            unicode_name: name,
        };
        for (k, caption) in captions::train_captions(&text, per_image, rng)
            .into_iter()
            .enumerate()
        {
            let id = if per_image == 1 {
                format!("{}.google", unified.to_lowercase())
            } else {
                format!("{}.google.{k}", unified.to_lowercase())
            };
            train.push(SampleRef {
                id,
                image: google.join(image),
                caption,
                split: Split::Train,
            });
        }
    }
    if let Some(max) = opts.max_train {
        train.truncate(max);
    }

    let mut eval_idx: Vec<usize> = order.clone();
    if let Some(max) = opts.max_eval {
        eval_idx.truncate(max);
    }
    eval_idx.sort_unstable();
    let eval = eval_idx
        .into_iter()
        .map(|i| eval_sample(emoji[i], twitter))
        .collect();
    Task {
        index,
        name: CATEGORIES[index].to_string(),
        slug: slug(CATEGORIES[index]),
        train,
        eval,
    }
}
