//! Image–caption datasets on disk, read and written in pure Rust (no Python, no libtorch).
//!
//! `ctpctl submit` uploads whatever a user already has, so the two formats people actually
//! produce are supported:
//! - [`webdataset`]: img2dataset-style `.tar` shards (`key.jpg|jpeg|png` + `key.txt`, or a
//!   `key.json` carrying `"caption"`), one file or a folder of shards;
//! - [`jsonl`]: a manifest with one `{"image", "caption", "split"?, "id"?}` object per line.
//!
//! [`emojicl`] builds the 9-domain EmojiCL benchmark from the installed npm emoji packages
//! and writes it with the same writers, so every benchmark task is a plain dataset that
//! `submit` reads like any other.
//!
//! Readers are visitors ([`visit`]) rather than collections: a task can be far larger than
//! memory, and the uploader streams samples into gRPC chunks as they are read. Every error
//! names the file and the sample (shard + key, or manifest line) so a bad input can be fixed
//! without guessing.
use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

pub mod emojicl;
pub mod jsonl;
pub mod webdataset;

#[cfg(test)]
mod tests;

/// Which split a sample was assigned to by the dataset itself.
///
/// `None` on [`DatasetSample::split`] means "let the server choose" (eval fraction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training only.
    Train,
    /// Held out for evaluation.
    Eval,
}

impl Split {
    /// Parses the on-disk spelling. Strict on purpose: a typo such as `"test"` silently
    /// becoming train data would corrupt the evaluation without any visible error.
    pub fn parse(s: &str) -> Option<Split> {
        match s {
            "train" => Some(Split::Train),
            "eval" => Some(Split::Eval),
            _ => None,
        }
    }

    /// The on-disk spelling, the inverse of [`Split::parse`].
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
        }
    }
}

/// One image–caption pair as stored in a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSample {
    /// The encoded image exactly as in the file (PNG or JPEG); the server decodes it, so the
    /// client never re-encodes and never loses quality.
    pub image: Vec<u8>,
    /// Caption text (valid UTF-8, non-empty).
    pub caption: String,
    /// Sample id, unique within the dataset (the WebDataset key or the manifest's `id`).
    pub id: String,
    /// Split stated by the dataset, if any.
    pub split: Option<Split>,
}

/// Why a dataset could not be read or written. The message always names the file and, where
/// there is one, the sample, because "invalid dataset" alone is useless on a 10 GB upload.
#[derive(Debug)]
pub enum DatasetError {
    /// Reading or writing a file failed.
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A WebDataset shard is malformed.
    Shard {
        /// The shard file.
        shard: PathBuf,
        /// The sample key (or the last good key when the tar itself is broken).
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// A JSONL manifest line is malformed.
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// Anything else about the input (unknown format, no samples, …).
    Invalid {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl fmt::Display for DatasetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            DatasetError::Shard {
                shard,
                key,
                problem,
            } => write!(f, "shard {}: entry '{key}': {problem}", shard.display()),
            DatasetError::Manifest {
                path,
                line,
                problem,
            } => write!(f, "{}:{line}: {problem}", path.display()),
            DatasetError::Invalid { path, problem } => {
                write!(f, "{}: {problem}", path.display())
            }
        }
    }
}

impl std::error::Error for DatasetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DatasetError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl DatasetError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: &Path, source: std::io::Error) -> DatasetError {
        DatasetError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn invalid(path: &Path, problem: impl Into<String>) -> DatasetError {
        DatasetError::Invalid {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

/// The on-disk layouts `ctpctl submit` accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One or more `.tar` shards, read in file-name order.
    WebDataset(Vec<PathBuf>),
    /// A JSONL manifest.
    Jsonl(PathBuf),
}

/// Works out what `path` is: a `.tar`, a `.jsonl`, or a folder holding `.tar` shards (or,
/// failing that, exactly one `.jsonl` manifest, which is how the EmojiCL exporter lays out
/// a JSONL task folder).
pub fn detect(path: &Path) -> Result<Source, DatasetError> {
    let meta = std::fs::metadata(path).map_err(|e| DatasetError::io(path, e))?;
    if meta.is_file() {
        return match extension(path).as_deref() {
            Some("tar") => Ok(Source::WebDataset(vec![path.to_path_buf()])),
            Some("jsonl") => Ok(Source::Jsonl(path.to_path_buf())),
            _ => Err(DatasetError::invalid(
                path,
                "not a dataset: expected a .tar shard, a .jsonl manifest or a folder of .tar shards",
            )),
        };
    }
    let mut tars = Vec::new();
    let mut manifests = Vec::new();
    let entries = std::fs::read_dir(path).map_err(|e| DatasetError::io(path, e))?;
    for entry in entries {
        let p = entry.map_err(|e| DatasetError::io(path, e))?.path();
        if !p.is_file() {
            continue;
        }
        match extension(&p).as_deref() {
            Some("tar") => tars.push(p),
            Some("jsonl") => manifests.push(p),
            _ => {}
        }
    }
    tars.sort();
    if !tars.is_empty() {
        return Ok(Source::WebDataset(tars));
    }
    match manifests.len() {
        1 => Ok(Source::Jsonl(manifests.remove(0))),
        0 => Err(DatasetError::invalid(
            path,
            "folder holds no .tar shards and no .jsonl manifest",
        )),
        n => Err(DatasetError::invalid(
            path,
            format!(
                "folder holds {n} .jsonl manifests and no .tar shards; name the manifest to use"
            ),
        )),
    }
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
}

/// Calls `f` on every sample of `source` in file order; `f` returns `Break` to stop early.
///
/// A dataset with no sample at all is an error: submitting nothing is always a mistake.
pub fn visit(
    source: &Source,
    f: &mut dyn FnMut(DatasetSample) -> ControlFlow<()>,
) -> Result<(), DatasetError> {
    let mut any = false;
    let mut counted = |s: DatasetSample| {
        any = true;
        f(s)
    };
    let path = match source {
        Source::WebDataset(shards) => {
            for shard in shards {
                if webdataset::visit_shard(shard, &mut counted)?.is_break() {
                    return Ok(());
                }
            }
            shards.first().cloned().unwrap_or_default()
        }
        Source::Jsonl(manifest) => {
            // Stopping early and reading to the end both end the visit here.
            let _ = jsonl::visit(manifest, &mut counted)?;
            manifest.clone()
        }
    };
    if !any {
        return Err(DatasetError::invalid(&path, "dataset holds no samples"));
    }
    Ok(())
}

/// Reads every sample into memory; for tests and small datasets.
pub fn read_all(path: &Path) -> Result<Vec<DatasetSample>, DatasetError> {
    let source = detect(path)?;
    let mut out = Vec::new();
    visit(&source, &mut |s| {
        out.push(s);
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// What a full pass over a dataset found; `submit` needs it before the upload starts (the
/// header carries the split mode and the expected sample count).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Number of samples.
    pub samples: u64,
    /// Samples marked train.
    pub train: u64,
    /// Samples marked eval.
    pub eval: u64,
    /// Samples without a split.
    pub unspecified: u64,
    /// Total image + caption bytes (the upload size, without protobuf framing).
    pub bytes: u64,
}

impl Summary {
    /// True when every sample states its split (use per-sample splits), false when none do.
    /// A mix is an error because the server accepts only one mode per task.
    pub fn explicit_splits(&self, path: &Path) -> Result<bool, DatasetError> {
        if self.unspecified == 0 {
            Ok(true)
        } else if self.train + self.eval == 0 {
            Ok(false)
        } else {
            Err(DatasetError::invalid(
                path,
                format!(
                    "{} samples state a split and {} do not; either all or none must",
                    self.train + self.eval,
                    self.unspecified
                ),
            ))
        }
    }
}

/// Reads the whole dataset once, validating every sample, without keeping the images.
pub fn summarize(source: &Source) -> Result<Summary, DatasetError> {
    let mut sum = Summary::default();
    visit(source, &mut |s| {
        sum.samples += 1;
        sum.bytes += (s.image.len() + s.caption.len()) as u64;
        match s.split {
            Some(Split::Train) => sum.train += 1,
            Some(Split::Eval) => sum.eval += 1,
            None => sum.unspecified += 1,
        }
        ControlFlow::Continue(())
    })?;
    Ok(sum)
}

/// The file extension for encoded image bytes, from their magic number, so writers name
/// files after what they really hold rather than what a caller claimed.
pub fn image_extension(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("jpg")
    } else {
        None
    }
}

/// Turns an id into a file-name-safe stem: WebDataset keys end at the first `.` and may
/// not contain `/`, and JSONL image files should be portable names.
pub fn safe_stem(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "_".to_string()
    } else {
        s
    }
}
