//! WebDataset `.tar` shards in the img2dataset layout.
//!
//! A sample is the run of adjacent tar entries sharing a key (the entry path up to the first
//! `.` of its file name): `key.jpg|jpeg|png` is the image, `key.txt` the caption, and an
//! optional `key.json` may carry `"caption"` (used when there is no `.txt`), `"split"`
//! (`"train"`/`"eval"`) and `"id"`. Other extensions (`.cls`, img2dataset's metadata, …) are
//! ignored. The reader is strict about everything that would otherwise turn into silently
//! wrong training data: a lone image or caption, two images for one key, a key repeated
//! later in the shard, a non-UTF-8 caption or a truncated tar are errors naming the shard
//! and the key.
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::{image_extension, safe_stem, DatasetError, DatasetSample, Split};

/// Entries collected for one key until the key changes.
#[derive(Default)]
struct Pending {
    key: String,
    image: Option<(String, Vec<u8>)>,
    txt: Option<Vec<u8>>,
    json: Option<Vec<u8>>,
    ignored: Vec<String>,
}

/// Reads one shard and calls `f` on each sample in tar order.
pub fn visit_shard(
    shard: &Path,
    f: &mut dyn FnMut(DatasetSample) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, DatasetError> {
    let file = File::open(shard).map_err(|e| DatasetError::io(shard, e))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let err = |key: &str, problem: String| DatasetError::Shard {
        shard: shard.to_path_buf(),
        key: key.to_string(),
        problem,
    };
    let broken = |last: &str, e: std::io::Error| {
        let at = if last.is_empty() {
            "the start of the shard".to_string()
        } else {
            format!("'{last}'")
        };
        err(last, format!("truncated or corrupt tar after {at}: {e}"))
    };
    let entries = archive.entries().map_err(|e| broken("", e))?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut cur = Pending::default();
    for entry in entries {
        let mut entry = entry.map_err(|e| broken(&cur.key, e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw_path)
            .map_err(|_| err(&cur.key, "an entry name after this key is not UTF-8".into()))?;
        let Some((key, ext)) = split_name(&name) else {
            continue;
        };
        let size = entry.size();
        let mut data = Vec::with_capacity(size.min(64 << 20) as usize);
        entry.read_to_end(&mut data).map_err(|e| {
            err(
                &key,
                format!("truncated or corrupt tar inside '{name}': {e}"),
            )
        })?;
        // The tar crate returns a short read at end of file without an error, so a shard
        // cut off in the middle of a file is only visible by its length.
        if (data.len() as u64) < size {
            return Err(err(
                &key,
                format!(
                    "truncated tar: '{name}' should hold {size} bytes but the shard ends after {}",
                    data.len()
                ),
            ));
        }
        if key != cur.key {
            if !cur.key.is_empty() {
                let prev = cur.key.clone();
                let sample = finish(std::mem::take(&mut cur)).map_err(|p| err(&prev, p))?;
                if f(sample).is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            if !seen.insert(key.clone()) {
                return Err(err(
                    &key,
                    "key appears again after other samples; a sample's files must be adjacent"
                        .into(),
                ));
            }
            cur.key = key.clone();
        }
        match ext.as_str() {
            "jpg" | "jpeg" | "png" => {
                if let Some((prev, _)) = &cur.image {
                    return Err(err(&key, format!("two images (.{prev} and .{ext})")));
                }
                cur.image = Some((ext, data));
            }
            "txt" => cur.txt = Some(data),
            "json" => cur.json = Some(data),
            _ => cur.ignored.push(ext),
        }
    }
    if !cur.key.is_empty() {
        let key = cur.key.clone();
        let sample = finish(cur).map_err(|p| err(&key, p))?;
        return Ok(f(sample));
    }
    Ok(ControlFlow::Continue(()))
}

/// Splits `dir/key.ext.more` into (`dir/key`, `ext.more` lower-cased). Names without an
/// extension and hidden files (e.g. macOS `._x` resource forks) are not sample files.
fn split_name(name: &str) -> Option<(String, String)> {
    let (dir, base) = match name.rfind('/') {
        Some(i) => (&name[..=i], &name[i + 1..]),
        None => ("", name),
    };
    if base.starts_with('.') {
        return None;
    }
    let dot = base.find('.')?;
    Some((
        format!("{dir}{}", &base[..dot]),
        base[dot + 1..].to_ascii_lowercase(),
    ))
}

/// Metadata a `key.json` may carry.
#[derive(Default)]
struct Meta {
    caption: Option<String>,
    split: Option<Split>,
    id: Option<String>,
}

fn parse_meta(key: &str, bytes: &[u8]) -> Result<Meta, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{key}.json is not valid JSON: {e}"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| format!("{key}.json is not a JSON object"))?;
    let text = |field: &str| -> Result<Option<String>, String> {
        match obj.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{key}.json: \"{field}\" is not a string")),
        }
    };
    let split = match text("split")? {
        None => None,
        Some(s) => Some(Split::parse(&s).ok_or_else(|| {
            format!("{key}.json: unknown split \"{s}\" (expected \"train\" or \"eval\")")
        })?),
    };
    Ok(Meta {
        caption: text("caption")?,
        split,
        id: text("id")?,
    })
}

/// Validates the entries of one key and turns them into a sample; `Err` is the problem.
fn finish(p: Pending) -> Result<DatasetSample, String> {
    let meta = match &p.json {
        Some(bytes) => parse_meta(&p.key, bytes)?,
        None => Meta::default(),
    };
    let has_caption = p.txt.is_some() || meta.caption.is_some();
    let caption = match p.txt {
        Some(bytes) => String::from_utf8(bytes).map_err(|e| {
            format!(
                "caption in {}.txt is not valid UTF-8 (byte {})",
                p.key,
                e.utf8_error().valid_up_to()
            )
        })?,
        None => meta.caption.clone().unwrap_or_default(),
    };
    let Some((ext, image)) = p.image else {
        let unsupported = if p.ignored.is_empty() {
            String::new()
        } else {
            format!(
                " (found .{}, which is not supported)",
                p.ignored.join(", .")
            )
        };
        return Err(if has_caption {
            format!("has a caption but no image (.jpg, .jpeg or .png){unsupported}")
        } else {
            format!("has neither an image nor a caption{unsupported}")
        });
    };
    if !has_caption {
        return Err(
            "has an image but no caption (.txt, or .json with a \"caption\" string)".into(),
        );
    }
    let caption = caption.trim().to_string();
    if caption.is_empty() {
        return Err("caption is empty".into());
    }
    if image_extension(&image).is_none() {
        return Err(format!("{}.{ext} is not a PNG or JPEG image", p.key));
    }
    Ok(DatasetSample {
        image,
        caption,
        id: meta.id.unwrap_or(p.key),
        split: meta.split,
    })
}

/// Writes one shard. The file appears under its final name only after [`finish`]
/// (written as `*.tar.partial`, then renamed), so an interrupted export never leaves a
/// truncated shard that a later `submit` would trip over.
///
/// [`finish`]: ShardWriter::finish
pub struct ShardWriter {
    path: PathBuf,
    partial: PathBuf,
    builder: tar::Builder<BufWriter<File>>,
    keys: HashSet<String>,
    count: u64,
}

impl ShardWriter {
    /// Starts a shard at `path` (parent folders must exist).
    pub fn create(path: &Path) -> Result<ShardWriter, DatasetError> {
        let partial = path.with_extension("tar.partial");
        let file = File::create(&partial).map_err(|e| DatasetError::io(&partial, e))?;
        Ok(ShardWriter {
            path: path.to_path_buf(),
            partial,
            builder: tar::Builder::new(BufWriter::new(file)),
            keys: HashSet::new(),
            count: 0,
        })
    }

    /// Appends a sample as `key.{png|jpg}`, `key.txt` and, when there is something to say
    /// (a split, or an id that is not a valid key), `key.json`.
    pub fn append(&mut self, s: &DatasetSample) -> Result<(), DatasetError> {
        let key = safe_stem(&s.id);
        let invalid = |problem: String| DatasetError::Shard {
            shard: self.path.clone(),
            key: key.clone(),
            problem,
        };
        let ext = image_extension(&s.image)
            .ok_or_else(|| invalid("image is not a PNG or JPEG".into()))?;
        if !self.keys.insert(key.clone()) {
            return Err(invalid(format!("duplicate key (from id '{}')", s.id)));
        }
        self.entry(&format!("{key}.{ext}"), &s.image)?;
        self.entry(&format!("{key}.txt"), s.caption.as_bytes())?;
        if s.split.is_some() || s.id != key {
            let mut meta = serde_json::Map::new();
            meta.insert("id".into(), s.id.clone().into());
            if let Some(split) = s.split {
                meta.insert("split".into(), split.as_str().into());
            }
            let json = serde_json::Value::Object(meta).to_string();
            self.entry(&format!("{key}.json"), json.as_bytes())?;
        }
        self.count += 1;
        Ok(())
    }

    fn entry(&mut self, name: &str, data: &[u8]) -> Result<(), DatasetError> {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        // A fixed mtime keeps exports byte-identical across runs (deterministic benchmark).
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        self.builder
            .append_data(&mut header, name, data)
            .map_err(|e| DatasetError::io(&self.partial, e))
    }

    /// Samples written so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True when nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes the end-of-archive marker, flushes and moves the shard to its final name.
    pub fn finish(self) -> Result<PathBuf, DatasetError> {
        let partial = self.partial.clone();
        let io = |e| DatasetError::io(&partial, e);
        let mut out = self.builder.into_inner().map_err(io)?;
        out.flush().map_err(io)?;
        drop(out);
        std::fs::rename(&self.partial, &self.path).map_err(io)?;
        Ok(self.path)
    }
}
