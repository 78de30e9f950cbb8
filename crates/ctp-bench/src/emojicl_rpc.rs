//! The daemon side of `ctp-bench emojicl`: EmojiCL samples as upload messages, submitting a
//! task and following it to the end, and Rm of a version through `Embed`.
use anyhow::{bail, Context, Result};
use ctp_api::pb::{self, continual_trainer_client::ContinualTrainerClient};
use ctp_datasets::emojicl;
use tonic::transport::Channel;

use super::protocol::Protocol;

fn sample(s: &emojicl::SampleRef) -> Result<pb::Sample> {
    Ok(pb::Sample {
        image: std::fs::read(&s.image).with_context(|| format!("reading {}", s.image.display()))?,
        caption: s.caption.clone().into_bytes(),
        id: s.id.clone(),
        split: match s.split {
            ctp_datasets::Split::Train => pb::Split::Train,
            ctp_datasets::Split::Eval => pb::Split::Eval,
        } as i32,
    })
}

/// Submits one task, follows it to the end, returns (version, total steps, training samples).
/// With an idempotency key in `header`, a task that a killed run submitted is found again:
/// finished, its result is read back; still queued or running, it is followed.
pub async fn submit_and_wait(
    c: &mut ContinualTrainerClient<Channel>,
    header: pb::TaskHeader,
    samples: Vec<pb::Sample>,
) -> Result<(i64, u64, u64)> {
    use pb::submit_task_request::Msg;
    let mut reqs = vec![pb::SubmitTaskRequest {
        msg: Some(Msg::Header(header)),
    }];
    for chunk in samples.chunks(256) {
        reqs.push(pb::SubmitTaskRequest {
            msg: Some(Msg::Chunk(pb::SampleChunk {
                samples: chunk.to_vec(),
            })),
        });
    }
    let task = c.submit_task(tokio_stream::iter(reqs)).await?.into_inner();
    if !is_terminal(task.state) {
        let mut stream = c
            .watch_task(pb::WatchTaskRequest {
                task_id: task.id.clone(),
                after_seq: 0,
            })
            .await?
            .into_inner();
        loop {
            let ev = stream
                .message()
                .await?
                .context("watch stream ended early")?;
            if matches!(ev.event, Some(pb::task_event::Event::Terminal(_))) {
                break;
            }
        }
    }
    let done = c
        .get_task(pb::GetTaskRequest {
            task_id: task.id.clone(),
        })
        .await?
        .into_inner();
    if done.state != pb::TaskState::Succeeded as i32 {
        bail!(
            "task {} ({}) ended {:?}: {}",
            done.name,
            done.id,
            pb::TaskState::try_from(done.state),
            done.error
        );
    }
    let steps = done.progress.map_or(0, |p| p.total_steps);
    Ok((
        done.produced_version.context("no version")?,
        steps,
        done.n_train,
    ))
}

fn is_terminal(state: i32) -> bool {
    [
        pb::TaskState::Succeeded,
        pb::TaskState::Failed,
        pb::TaskState::Cancelled,
    ]
    .iter()
    .any(|s| *s as i32 == state)
}

/// Rm of `version` on one task's eval split, via the Embed RPC.
pub async fn embed_rm(
    c: &mut ContinualTrainerClient<Channel>,
    model: &str,
    version: i64,
    eval: &[pb::Sample],
) -> Result<f64> {
    let r = c
        .embed(pb::EmbedRequest {
            model: model.into(),
            version: Some(version),
            images: eval.iter().map(|s| s.image.clone()).collect(),
            texts: eval
                .iter()
                .map(|s| String::from_utf8_lossy(&s.caption).into_owned())
                .collect(),
        })
        .await?
        .into_inner();
    let n = eval.len();
    let mut sim = vec![0f32; n * n];
    for (i, a) in r.image_embeddings.iter().enumerate() {
        for (j, b) in r.text_embeddings.iter().enumerate() {
            sim[i * n + j] = a.values.iter().zip(&b.values).map(|(x, y)| x * y).sum();
        }
    }
    Ok(ctp::metrics::retrieval(&sim, n)?.rm)
}

/// (task name, train samples, eval samples) per task.
pub type TaskData = Vec<(String, Vec<pb::Sample>, Vec<pb::Sample>)>;

fn options(p: &Protocol, seed: u64) -> emojicl::Options {
    emojicl::Options {
        tasks: p.tasks.clone(),
        max_train: p.max_train,
        max_eval: p.max_eval,
        seed,
        anchor_per_category: p.anchor_per_category,
        ..Default::default()
    }
}

/// The anchor suite's samples (held-out emoji of all nine categories; the same for every
/// seed), empty when the protocol has none.
pub fn build_anchor(p: &Protocol) -> Result<Vec<pb::Sample>> {
    emojicl::anchor(&emojicl::default_node_modules(), &options(p, 0))?
        .iter()
        .map(sample)
        .collect()
}

/// Registers the anchor suite on `model` (creating the model with `preset` when it has no
/// task yet), so that every version is evaluated on it. A suite registered by an earlier run
/// of a resumed cell (ALREADY_EXISTS) is the same suite: suites are immutable and the
/// samples are fixed.
pub async fn register_anchor(
    c: &mut ContinualTrainerClient<Channel>,
    model: &str,
    preset: &str,
    samples: &[pb::Sample],
) -> Result<()> {
    use pb::register_anchor_suite_request::Msg;
    let mut reqs = vec![pb::RegisterAnchorSuiteRequest {
        msg: Some(Msg::Header(pb::AnchorSuiteHeader {
            model: model.into(),
            name: emojicl::ANCHOR_SUITE.into(),
            expected_samples: Some(samples.len() as u64),
            preset: preset.into(),
        })),
    }];
    for chunk in samples.chunks(256) {
        reqs.push(pb::RegisterAnchorSuiteRequest {
            msg: Some(Msg::Chunk(pb::SampleChunk {
                samples: chunk.to_vec(),
            })),
        });
    }
    match c.register_anchor_suite(tokio_stream::iter(reqs)).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(s) => Err(s).context("RegisterAnchorSuite"),
    }
}

pub fn build_data(p: &Protocol, seed: u64) -> Result<TaskData> {
    let opts = options(p, seed);
    emojicl::build(&emojicl::default_node_modules(), &opts)?
        .iter()
        .map(|t| {
            Ok((
                t.name.clone(),
                t.train.iter().map(sample).collect::<Result<_>>()?,
                t.eval.iter().map(sample).collect::<Result<_>>()?,
            ))
        })
        .collect()
}
