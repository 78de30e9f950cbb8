//! Tasks submitted by reference (issue #23 §2): the header names WebDataset shards by URL
//! (`header.data_urls`, brace patterns expanded here) instead of streaming samples.
//!
//! Before anything is fetched, every URL must pass the allow-list (`storage.allow_urls`, plus
//! the daemon's own bucket): no request makes the daemon contact a host it was not told to
//! trust. Each shard is then fetched to a private folder under `<data dir>/cache` (at most
//! `limits.max_shard_bytes`, hashed as it arrives), decoded in tar order, and every sample goes
//! through the same [`Intake`] as a streamed upload, numbered across shards in URL order; the
//! next shard downloads while one is decoded. Nothing is stored or queued unless every sample
//! passes.
//!
//! The samples are copied into the task's own content-addressed bundle, exactly as an upload
//! is, and the manifest of what was read (URL, ETag, sha256, samples per shard) is stored with
//! the task (`tasks.sources_json`, `Task.sources`). Training, evaluation and every resume read
//! the bundle, never the URLs again, so a shard that changes or disappears after submission
//! does not affect the task, and the manifest says what it was trained on.
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use ctp_api::pb;
use ctp_datasets::{webdataset, DatasetError, DatasetSample, Split};
use ctp_storage::{expand_braces, FetchedShard, Storage, StorageError};
use serde::{Deserialize, Serialize};
use tonic::Streaming;

use super::intake::{disk_error, stream_error, Intake, SplitMode};
use super::status::ApiError;
use crate::state::AppState;

/// Most shard URLs one task may name, all patterns together.
pub const MAX_SHARDS: usize = ctp_storage::MAX_EXPANSION;

/// One shard of a task's manifest (`tasks.sources_json` holds a JSON array of these).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The URL as fetched (expanded and normalised).
    pub url: String,
    /// The server's ETag, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// sha256 of the shard as read.
    pub sha256: String,
    /// Samples read from it.
    pub samples: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// A request with `data_urls` is its header alone: reads the stream's end, refusing samples.
pub(super) async fn expect_no_samples(
    stream: &mut Streaming<pb::SubmitTaskRequest>,
) -> Result<(), ApiError> {
    use pb::submit_task_request::Msg;
    while let Some(msg) = stream.message().await.map_err(|s| stream_error(s, 0))? {
        match msg.msg {
            Some(Msg::Chunk(_)) => return Err(ApiError::Invalid(
                "header.data_urls names the task's data, so the request must send no SampleChunk; send either data_urls or samples".into(),
            )),
            Some(Msg::Header(_)) => {
                return Err(ApiError::Invalid(
                    "a second header arrived; send the header once".into(),
                ))
            }
            None => {}
        }
    }
    Ok(())
}

/// A storage error about a data URL, in the words of the request.
fn url_error(e: StorageError) -> ApiError {
    let at = |m: String| format!("header.data_urls: {m}");
    match ApiError::from(e) {
        ApiError::Invalid(m) => ApiError::Invalid(at(m)),
        ApiError::NotFound(m) => ApiError::NotFound(at(m)),
        ApiError::ResourceExhausted(m) => {
            ApiError::ResourceExhausted(format!("{} (limits.max_shard_bytes)", at(m)))
        }
        ApiError::FailedPrecondition(m) => ApiError::FailedPrecondition(at(m)),
        other => other,
    }
}

/// Every URL the patterns name, in order, each checked against the allow-list.
fn expand(patterns: &[String], storage: &Storage) -> Result<Vec<String>, ApiError> {
    let mut urls = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        if p.trim().is_empty() {
            return Err(ApiError::Invalid(format!("header.data_urls[{i}] is empty")));
        }
        let expanded = expand_braces(p.trim())
            .map_err(|e| ApiError::Invalid(format!("header.data_urls[{i}]: {e}")))?;
        urls.extend(expanded);
        if urls.len() > MAX_SHARDS {
            return Err(ApiError::Invalid(format!(
                "header.data_urls name more than {MAX_SHARDS} shards"
            )));
        }
    }
    for u in &urls {
        storage.allow_list().check(u).map_err(url_error)?;
    }
    Ok(urls)
}

/// How samples' own splits are used.
#[derive(Clone, Copy)]
enum SplitChoice {
    /// The header chose (`eval_split`): as for an upload.
    Given,
    /// No `eval_split`, no sample read yet.
    Undecided,
    /// No `eval_split`: the first sample decided whether samples state their splits.
    FromFirst { per_sample: bool },
}

/// Fetches, decodes and checks every shard the header names, feeding `intake`; returns it
/// with the manifest.
pub(super) async fn read_shards(
    state: &Arc<AppState>,
    data_urls: &[String],
    split_given: bool,
    mut intake: Intake,
) -> Result<(Intake, Vec<SourceRecord>), ApiError> {
    let storage = state.objects.storage().clone();
    let urls = expand(data_urls, &storage)?;
    let max = state.settings.limits.max_shard_bytes;
    let parent = state.data.root().join("cache");
    let dir = std::fs::create_dir_all(&parent)
        .and_then(|()| {
            tempfile::Builder::new()
                .prefix("fetch-")
                .tempdir_in(&parent)
        })
        .map_err(|e| disk_error(state, "creating the folder for fetched shards", e))?;
    let mut choice = if split_given {
        SplitChoice::Given
    } else {
        SplitChoice::Undecided
    };
    let mut sources = Vec::with_capacity(urls.len());
    let mut next_shard = Some(
        storage
            .fetch_url(&urls[0], dir.path(), max)
            .await
            .map_err(url_error)?,
    );
    for i in 0..urls.len() {
        let fetched = next_shard.take().expect("fetched before its turn");
        // Decode this shard while the next one downloads.
        let decode = tokio::task::spawn_blocking(move || {
            let r = decode_shard(&mut intake, &fetched, &mut choice);
            let _ = std::fs::remove_file(&fetched.local_path);
            r.map(|record| (intake, record, choice))
        });
        let prefetch = async {
            match urls.get(i + 1) {
                Some(u) => Some(storage.fetch_url(u, dir.path(), max).await),
                None => None,
            }
        };
        let (decoded, next) = tokio::join!(decode, prefetch);
        let (back, record, c) = decoded
            .map_err(|e| ApiError::Internal(format!("decoding a shard panicked: {e}")))??;
        (intake, choice) = (back, c);
        tracing::debug!(url = %record.url, samples = record.samples, "Read shard");
        sources.push(record);
        if let Some(next) = next {
            next_shard = Some(next.map_err(url_error)?);
        }
    }
    Ok((intake, sources))
}

/// Feeds every sample of one fetched shard to `intake`.
fn decode_shard(
    intake: &mut Intake,
    shard: &FetchedShard,
    choice: &mut SplitChoice,
) -> Result<SourceRecord, ApiError> {
    let mut samples = 0u64;
    let mut failed = None;
    let read = webdataset::visit_shard(&shard.local_path, &mut |s| match feed(
        intake, s, choice, &shard.url,
    ) {
        Ok(()) => {
            samples += 1;
            ControlFlow::Continue(())
        }
        Err(e) => {
            failed = Some(e);
            ControlFlow::Break(())
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let _ = read.map_err(|e| shard_error(&shard.url, &shard.local_path, e))?;
    Ok(SourceRecord {
        url: shard.url.clone(),
        etag: shard.etag.clone(),
        sha256: shard.sha256.clone(),
        samples,
        bytes: shard.size,
    })
}

/// One decoded sample, in the wire form a client would have streamed it in.
fn feed(
    intake: &mut Intake,
    s: DatasetSample,
    choice: &mut SplitChoice,
    url: &str,
) -> Result<(), ApiError> {
    let per_sample = match *choice {
        SplitChoice::Given => matches!(intake.rules.split, SplitMode::PerSample),
        SplitChoice::Undecided => {
            let per_sample = s.split.is_some();
            if per_sample {
                intake.rules.split = SplitMode::PerSample;
            }
            *choice = SplitChoice::FromFirst { per_sample };
            per_sample
        }
        SplitChoice::FromFirst { per_sample } => {
            if s.split.is_some() != per_sample {
                let (this, first) = if per_sample {
                    ("states no split", "does")
                } else {
                    ("states a split", "does not")
                };
                return Err(ApiError::Invalid(format!(
                    "sample {}: {url} entry '{}' {this} but the first sample {first}; state a split (train or eval) on every sample, or set header.eval_split",
                    intake.n, s.id
                )));
            }
            per_sample
        }
    };
    let split = match (per_sample, s.split) {
        (true, Some(Split::Train)) => pb::Split::Train,
        (true, Some(Split::Eval)) => pb::Split::Eval,
        _ => pb::Split::Unspecified,
    };
    intake.add(pb::Sample {
        image: s.image,
        caption: s.caption.into_bytes(),
        id: s.id,
        split: split as i32,
    })
}

/// A malformed shard, named by its URL (not the daemon's local copy).
fn shard_error(url: &str, local: &Path, e: DatasetError) -> ApiError {
    match e {
        DatasetError::Shard { key, problem, .. } => {
            ApiError::Invalid(format!("shard {url}: entry '{key}': {problem}"))
        }
        DatasetError::Io { source, .. } => ApiError::Internal(format!(
            "reading the fetched copy {} of {url}: {source}",
            local.display()
        )),
        other => ApiError::Invalid(format!("shard {url}: {other}")),
    }
}
