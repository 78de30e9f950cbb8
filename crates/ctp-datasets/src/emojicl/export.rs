//! Writes built EmojiCL tasks as ordinary datasets (`DIR/<nn>-<slug>/…`) plus
//! `DIR/index.json`, so `ctpctl submit DIR/00-smileys-emotion` needs no EmojiCL knowledge
//! and any other tool can follow the index. With an anchor slice
//! (`Options::anchor_per_category` > 0) the held-out samples go to `DIR/anchor/`, in the same
//! format, for `ctpctl anchors add` (the folder name does not match `<nn>-<slug>`).
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{anchor, build, Options, SampleRef, Task};
use crate::jsonl::JsonlWriter;
use crate::webdataset::ShardWriter;
use crate::{DatasetError, DatasetSample};

/// On-disk format of the exported tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// `DIR/<nn>-<slug>/shard-000000.tar`.
    WebDataset,
    /// `DIR/<nn>-<slug>/samples.jsonl` + `images/`.
    Jsonl,
}

/// One exported task in `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexTask {
    /// Index into the 9 categories (0-based, CLDR order).
    pub index: usize,
    /// Task name (the category), suitable for `submit --name`.
    pub name: String,
    /// Slug used in the folder name.
    pub slug: String,
    /// Task folder relative to the index (what to pass to `ctpctl submit`).
    pub path: String,
    /// Training samples written.
    pub n_train: usize,
    /// Evaluation samples written.
    pub n_eval: usize,
}

/// The anchor suite in `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexAnchor {
    /// Folder relative to the index (what to pass to `ctpctl anchors add`): `anchor`.
    pub path: String,
    /// Held-out base emoji per category (all nine categories).
    pub per_category: usize,
    /// Samples written (9 × `per_category`).
    pub n_samples: usize,
}

/// `DIR/index.json`: what was exported and how, for scripts that submit the tasks in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// Always "emojicl".
    pub benchmark: String,
    /// Format of every task folder.
    pub format: ExportFormat,
    /// Seed the export used.
    pub seed: u64,
    /// Caps in force (`null` = none).
    pub max_train: Option<usize>,
    /// Cap on eval samples per task.
    pub max_eval: Option<usize>,
    /// Cap on skin variants per base emoji.
    pub max_skin_variants: Option<usize>,
    /// Training captions per image.
    pub captions_per_image: usize,
    /// Train images' art style and package.
    pub train_images: String,
    /// Eval images' art style and package.
    pub eval_images: String,
    /// Exported tasks in benchmark order.
    pub tasks: Vec<IndexTask>,
    /// The held-out anchor suite, when one was carved (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<IndexAnchor>,
}

fn load(sample: &SampleRef) -> Result<DatasetSample, DatasetError> {
    let image = std::fs::read(&sample.image).map_err(|e| DatasetError::io(&sample.image, e))?;
    Ok(DatasetSample {
        image,
        caption: sample.caption.clone(),
        id: sample.id.clone(),
        split: Some(sample.split),
    })
}

/// Writes one task folder; returns it.
fn write_task(out: &Path, task: &Task, format: ExportFormat) -> Result<PathBuf, DatasetError> {
    let dir = out.join(format!("{:02}-{}", task.index, task.slug));
    write_samples(&dir, task.train.iter().chain(&task.eval), format)?;
    Ok(dir)
}

fn write_samples<'a>(
    dir: &Path,
    samples: impl Iterator<Item = &'a SampleRef>,
    format: ExportFormat,
) -> Result<(), DatasetError> {
    std::fs::create_dir_all(dir).map_err(|e| DatasetError::io(dir, e))?;
    match format {
        ExportFormat::WebDataset => {
            let mut w = ShardWriter::create(&dir.join("shard-000000.tar"))?;
            for s in samples {
                w.append(&load(s)?)?;
            }
            w.finish()?;
        }
        ExportFormat::Jsonl => {
            let mut w = JsonlWriter::create(dir, "samples.jsonl")?;
            for s in samples {
                w.append(&load(s)?)?;
            }
            w.finish()?;
        }
    }
    Ok(())
}

/// Builds the tasks from `node_modules` and writes them under `out`, calling `progress`
/// after each task (the CLI prints a line per task).
pub fn export(
    node_modules: &Path,
    out: &Path,
    format: ExportFormat,
    opts: &Options,
    progress: &mut dyn FnMut(&IndexTask),
) -> Result<Index, DatasetError> {
    let tasks = build(node_modules, opts)?;
    std::fs::create_dir_all(out).map_err(|e| DatasetError::io(out, e))?;
    let mut index = Index {
        benchmark: "emojicl".into(),
        format,
        seed: opts.seed,
        max_train: opts.max_train,
        max_eval: opts.max_eval,
        max_skin_variants: opts.max_skin_variants,
        captions_per_image: opts.captions_per_image.max(1),
        train_images: "Google/Noto (emoji-datasource-google, Apache-2.0)".into(),
        eval_images: "Twitter/Twemoji (emoji-datasource-twitter, CC-BY-4.0)".into(),
        tasks: Vec::with_capacity(tasks.len()),
        anchor: None,
    };
    for task in &tasks {
        let dir = write_task(out, task, format)?;
        let entry = IndexTask {
            index: task.index,
            name: task.name.clone(),
            slug: task.slug.clone(),
            path: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            n_train: task.train.len(),
            n_eval: task.eval.len(),
        };
        progress(&entry);
        index.tasks.push(entry);
    }
    let held = anchor(node_modules, opts)?;
    if !held.is_empty() {
        write_samples(&out.join("anchor"), held.iter(), format)?;
        index.anchor = Some(IndexAnchor {
            path: "anchor".into(),
            per_category: opts.anchor_per_category,
            n_samples: held.len(),
        });
    }
    let path = out.join("index.json");
    let json = serde_json::to_string_pretty(&index).expect("index serializes");
    std::fs::write(&path, json + "\n").map_err(|e| DatasetError::io(&path, e))?;
    Ok(index)
}
