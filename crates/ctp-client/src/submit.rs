//! `ctpctl submit`: validate the dataset locally, then stream it as one TaskHeader and
//! ~4 MiB SampleChunks.
//!
//! The whole dataset is read once before anything is sent. That costs a second pass over
//! the files but buys three things: a malformed shard is reported before a long upload
//! starts, the header can say whether samples carry their own splits, and
//! `expected_samples` lets the daemon reject an upload that ends early.
//!
//! A dataset given as a URL (`s3://…`, `https://…`, `file://…`, or a brace pattern of them)
//! is not read here: the header alone goes out, with `data_urls`, and the daemon fetches,
//! checks and copies the shards itself.
use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::args::{BnPolicyArg, MethodArg, SubmitArgs};
use super::conn::Client;
use super::error::{CliError, CliResult};
use ctp_api::pb;
use ctp_datasets::{self as datasets, DatasetSample, Source, Split, Summary};

/// Default held-out fraction when the dataset states no splits.
pub const DEFAULT_EVAL_FRACTION: f32 = 0.2;

/// The split mode for the header, and whether sample splits are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitPlan {
    /// Header's eval split.
    pub eval_split: pb::EvalSplit,
    /// Send each sample's own split (PerSampleSplit) or leave them unspecified.
    pub per_sample: bool,
}

/// Samples that state their splits use them, unless `--eval-fraction` is given, which
/// overrides; otherwise the server holds out 20%.
pub fn plan_split(
    eval_fraction: Option<f32>,
    summary: &Summary,
    path: &Path,
) -> CliResult<SplitPlan> {
    use pb::eval_split::Kind;
    if let Some(f) = eval_fraction {
        if !(f > 0.0 && f < 1.0) {
            return Err(CliError::local(format!(
                "--eval-fraction must be in (0, 1), got {f}"
            )));
        }
        return Ok(SplitPlan {
            eval_split: pb::EvalSplit {
                kind: Some(Kind::EvalFraction(f)),
            },
            per_sample: false,
        });
    }
    if summary.explicit_splits(path)? {
        if summary.eval == 0 {
            return Err(CliError::local(format!(
                "{}: every sample is marked train; mark some eval or pass --eval-fraction",
                path.display()
            )));
        }
        return Ok(SplitPlan {
            eval_split: pb::EvalSplit {
                kind: Some(Kind::PerSample(pb::PerSampleSplit {})),
            },
            per_sample: true,
        });
    }
    Ok(SplitPlan {
        eval_split: pb::EvalSplit {
            kind: Some(Kind::EvalFraction(DEFAULT_EVAL_FRACTION)),
        },
        per_sample: false,
    })
}

/// The TaskHeader for these arguments.
pub fn header(args: &SubmitArgs, plan: &SplitPlan, samples: u64) -> pb::TaskHeader {
    let method = match args.method {
        None => pb::Method::Unspecified,
        Some(MethodArg::Ctp) => pb::Method::Ctp,
        Some(MethodArg::Seqft) => pb::Method::Seqft,
    };
    let bn_policy = args.bn_policy.map(|b| match b {
        BnPolicyArg::Frozen => pb::BnPolicy::Frozen as i32,
        BnPolicyArg::Train => pb::BnPolicy::Train as i32,
    });
    pb::TaskHeader {
        model: args.model.clone(),
        preset: args.preset.clone(),
        task_name: args.name.clone(),
        idempotency_key: args.idempotency_key.clone(),
        settings: Some(pb::TrainSettings {
            epochs: args.epochs,
            batch_size: args.batch_size,
            learning_rate: args.lr,
            drift_threshold: args.drift_threshold,
            drift_check_every: args.drift_check_every,
            momentum_reference_steps: args.momentum_reference_steps,
            queue_size: args.queue_size,
            method: method as i32,
            bn_policy,
            loss_weights: args.tp_weight.map(|w| pb::LossWeights {
                tp_cross: Some(w),
                tp_intra: Some(w),
                ..Default::default()
            }),
            replay: (args.replay_per_task.is_some() || args.replay_fraction.is_some()).then_some(
                pb::Replay {
                    samples_per_task: args.replay_per_task,
                    batch_fraction: args.replay_fraction,
                },
            ),
        }),
        eval_split: Some(plan.eval_split),
        seed: args.seed,
        expected_samples: Some(samples),
        data_urls: Vec::new(),
        priority: args.priority.map_or(0, |p| p.to_pb() as i32),
    }
}

/// The dataset argument as a URL (`scheme://…`, the scheme letters, digits, `+`, `-`, `.`),
/// or `None` for a local path.
pub fn data_url(path: &Path) -> Option<&str> {
    let s = path.to_str()?;
    let (scheme, _) = s.split_once("://")?;
    let mut chars = scheme.chars();
    (chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
    .then_some(s)
}

/// The header of a task submitted by reference: `url` as given (the daemon expands brace
/// patterns); the split is `--eval-fraction`, else the daemon follows the shards' own
/// splits when they state them.
pub fn reference_header(args: &SubmitArgs, url: &str) -> CliResult<pb::TaskHeader> {
    use pb::eval_split::Kind;
    let eval_split = match args.eval_fraction {
        Some(f) if !(f > 0.0 && f < 1.0) => {
            return Err(CliError::local(format!(
                "--eval-fraction must be in (0, 1), got {f}"
            )))
        }
        Some(f) => Some(pb::EvalSplit {
            kind: Some(Kind::EvalFraction(f)),
        }),
        None => None,
    };
    let plan = SplitPlan {
        eval_split: pb::EvalSplit::default(),
        per_sample: false,
    };
    Ok(pb::TaskHeader {
        eval_split,
        expected_samples: None,
        data_urls: vec![url.to_string()],
        ..header(args, &plan, 0)
    })
}

/// Converts a dataset sample to the wire form.
pub fn to_pb(s: DatasetSample, per_sample: bool) -> pb::Sample {
    let split = match (per_sample, s.split) {
        (true, Some(Split::Train)) => pb::Split::Train,
        (true, Some(Split::Eval)) => pb::Split::Eval,
        _ => pb::Split::Unspecified,
    };
    pb::Sample {
        image: s.image,
        caption: s.caption.into_bytes(),
        id: s.id,
        split: split as i32,
    }
}

/// Groups samples into chunks whose encoded size stays near `target` bytes (a sample
/// larger than the target travels alone), calling `send` per full chunk.
pub struct Chunker {
    target: usize,
    chunk: pb::SampleChunk,
    size: usize,
}

impl Chunker {
    /// A chunker aiming at `target` encoded bytes per message.
    pub fn new(target: usize) -> Chunker {
        Chunker {
            target: target.max(1),
            chunk: pb::SampleChunk::default(),
            size: 0,
        }
    }

    /// Adds a sample; returns a full chunk when adding it would pass the target.
    pub fn push(&mut self, sample: pb::Sample) -> Option<pb::SampleChunk> {
        let len = sample.encoded_len();
        let framed = len + prost::length_delimiter_len(len) + 1;
        let full = if !self.chunk.samples.is_empty() && self.size + framed > self.target {
            self.size = 0;
            Some(std::mem::take(&mut self.chunk))
        } else {
            None
        };
        self.size += framed;
        self.chunk.samples.push(sample);
        full
    }

    /// The last, partial chunk.
    pub fn finish(self) -> Option<pb::SampleChunk> {
        (!self.chunk.samples.is_empty()).then_some(self.chunk)
    }
}

fn upload_bar(total: u64, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "uploading {bar:30.green/white} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}  {msg}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar
}

/// Reads the dataset on a blocking thread and feeds the request stream; stops as soon as
/// the RPC side hangs up (e.g. the daemon rejected the header).
fn produce(
    source: Source,
    header: pb::TaskHeader,
    per_sample: bool,
    chunk_bytes: usize,
    tx: mpsc::Sender<pb::SubmitTaskRequest>,
    stop: CancellationToken,
    bar: ProgressBar,
) -> Result<(), datasets::DatasetError> {
    use pb::submit_task_request::Msg;
    let rt = tokio::runtime::Handle::current();
    // Waits for room in the channel, or gives up once the RPC has finished (a rejected
    // header must not leave this thread blocked on a stream nobody reads any more).
    let send = |msg: Msg| {
        rt.block_on(async {
            tokio::select! {
                r = tx.send(pb::SubmitTaskRequest { msg: Some(msg) }) => r.is_ok(),
                _ = stop.cancelled() => false,
            }
        })
    };
    if !send(Msg::Header(header)) {
        return Ok(());
    }
    let mut chunker = Chunker::new(chunk_bytes);
    let mut n: u64 = 0;
    datasets::visit(&source, &mut |s| {
        bar.inc((s.image.len() + s.caption.len()) as u64);
        n += 1;
        if n.is_multiple_of(64) {
            bar.set_message(format!("{n} samples"));
        }
        let full = chunker.push(to_pb(s, per_sample));
        if full.is_some_and(|chunk| !send(Msg::Chunk(chunk))) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    if let Some(chunk) = chunker.finish() {
        send(Msg::Chunk(chunk));
    }
    bar.set_message(format!("{n} samples"));
    Ok(())
}

/// Scans, uploads and returns the stored (QUEUED) task.
pub async fn submit(client: &mut Client, args: &SubmitArgs, json: bool) -> CliResult<pb::Task> {
    if let Some(url) = data_url(&args.path) {
        let header = reference_header(args, url)?;
        if !json {
            eprintln!("asking the daemon to read {url} ...");
        }
        let req = pb::SubmitTaskRequest {
            msg: Some(pb::submit_task_request::Msg::Header(header)),
        };
        let task = client
            .submit_task(tokio_stream::iter(vec![req]))
            .await?
            .into_inner();
        if !json {
            let samples: u64 = task.sources.iter().map(|s| s.samples).sum();
            eprintln!(
                "the daemon read {} shard(s), {samples} samples ({} train / {} eval)",
                task.sources.len(),
                task.n_train,
                task.n_eval
            );
        }
        return Ok(task);
    }
    let source = datasets::detect(&args.path)?;
    if !json {
        eprintln!("checking {} ...", args.path.display());
    }
    let scan_source = source.clone();
    let summary = tokio::task::spawn_blocking(move || datasets::summarize(&scan_source))
        .await
        .map_err(|e| CliError::local(format!("dataset scan crashed: {e}")))??;
    let plan = plan_split(args.eval_fraction, &summary, &args.path)?;
    if !json {
        let splits = if plan.per_sample {
            format!(
                "{} train / {} eval (from the dataset)",
                summary.train, summary.eval
            )
        } else {
            "split by the daemon (eval fraction)".to_string()
        };
        eprintln!(
            "{} samples, {:.1} MiB, {splits}",
            summary.samples,
            summary.bytes as f64 / (1024.0 * 1024.0)
        );
    }
    let header = header(args, &plan, summary.samples);
    let bar = upload_bar(summary.bytes, !json && std::io::stderr().is_terminal());
    let (tx, rx) = mpsc::channel(4);
    let stop = CancellationToken::new();
    let producer = {
        let bar = bar.clone();
        let chunk_bytes = args.chunk_bytes;
        let per_sample = plan.per_sample;
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            produce(source, header, per_sample, chunk_bytes, tx, stop, bar)
        })
    };
    let result = client.submit_task(ReceiverStream::new(rx)).await;
    stop.cancel();
    let produced = producer
        .await
        .map_err(|e| CliError::local(format!("dataset reader crashed: {e}")))?;
    bar.finish_and_clear();
    // A local read error explains a failed upload better than the server's view of it.
    produced?;
    Ok(result?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> SubmitArgs {
        let mut argv = vec![
            "ctpctl", "submit", "--model", "m", "--name", "t1", "data.tar",
        ];
        argv.extend_from_slice(extra);
        match super::super::args::Cli::parse_from(argv).command {
            super::super::args::Command::Submit(a) => a,
            other => panic!("parsed {other:?}"),
        }
    }

    fn summary(train: u64, eval: u64, unspecified: u64) -> Summary {
        Summary {
            samples: train + eval + unspecified,
            train,
            eval,
            unspecified,
            bytes: 0,
        }
    }

    #[test]
    fn split_plans() {
        use pb::eval_split::Kind;
        let p = Path::new("d");
        let fraction = plan_split(None, &summary(0, 0, 5), p).unwrap();
        assert_eq!(fraction.eval_split.kind, Some(Kind::EvalFraction(0.2)));
        let per = plan_split(None, &summary(4, 1, 0), p).unwrap();
        assert!(per.per_sample);
        let forced = plan_split(Some(0.5), &summary(4, 1, 0), p).unwrap();
        assert!(!forced.per_sample);
        assert!(plan_split(None, &summary(4, 1, 1), p).is_err());
        assert!(plan_split(None, &summary(4, 0, 0), p).is_err());
        assert!(plan_split(Some(1.0), &summary(0, 0, 5), p).is_err());
    }

    #[test]
    fn header_carries_settings() {
        let a = args(&[
            "--epochs",
            "3",
            "--lr",
            "0.001",
            "--method",
            "seqft",
            "--bn-policy",
            "train",
            "--seed",
            "9",
            "--idempotency-key",
            "k1",
            "--drift-threshold",
            "0",
        ]);
        let plan = plan_split(None, &summary(0, 0, 5), Path::new("d")).unwrap();
        let h = header(&a, &plan, 5);
        assert_eq!(
            (h.model.as_str(), h.preset.as_str(), h.task_name.as_str()),
            ("m", "small", "t1")
        );
        assert_eq!(h.expected_samples, Some(5));
        assert_eq!(h.idempotency_key.as_deref(), Some("k1"));
        assert_eq!(h.seed, 9);
        let s = h.settings.unwrap();
        assert_eq!(
            (s.epochs, s.batch_size, s.learning_rate),
            (Some(3), None, Some(0.001))
        );
        assert_eq!(s.drift_threshold, Some(0.0));
        assert_eq!(s.method, pb::Method::Seqft as i32);
        assert_eq!(s.bn_policy, Some(pb::BnPolicy::Train as i32));
        let d = header(&args(&[]), &plan, 5).settings.unwrap();
        assert_eq!((d.method, d.bn_policy, d.epochs), (0, None, None));
    }

    #[test]
    fn urls_go_by_reference() {
        use pb::eval_split::Kind;
        assert_eq!(data_url(Path::new("data.tar")), None);
        assert_eq!(data_url(Path::new("/srv/a://b")), None);
        let url = "s3://bucket/emoji/shard-{000..008}.tar";
        assert_eq!(data_url(Path::new(url)), Some(url));
        let h = reference_header(&args(&["--idempotency-key", "k"]), url).unwrap();
        assert_eq!(h.data_urls, vec![url.to_string()]);
        assert_eq!((h.eval_split, h.expected_samples), (None, None));
        assert_eq!(h.idempotency_key.as_deref(), Some("k"));
        let f = reference_header(&args(&["--eval-fraction", "0.3"]), url).unwrap();
        assert_eq!(f.eval_split.unwrap().kind, Some(Kind::EvalFraction(0.3)));
        assert!(reference_header(&args(&["--eval-fraction", "1"]), url).is_err());
    }

    #[test]
    fn chunks_stay_near_target() {
        let mut c = Chunker::new(1000);
        let mut chunks = Vec::new();
        for i in 0..10 {
            let s = pb::Sample {
                image: vec![0; 300],
                caption: b"cap".to_vec(),
                id: format!("{i}"),
                split: 0,
            };
            chunks.extend(c.push(s));
        }
        chunks.extend(c.finish());
        let sizes: Vec<usize> = chunks.iter().map(|c| c.samples.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 10);
        assert!(chunks.iter().all(|c| c.encoded_len() <= 1000), "{sizes:?}");
        assert_eq!(sizes[0], 3);
        // An oversized sample travels alone instead of being dropped.
        let mut c = Chunker::new(10);
        assert!(c
            .push(pb::Sample {
                image: vec![0; 50],
                ..Default::default()
            })
            .is_none());
        assert_eq!(c.push(pb::Sample::default()).unwrap().samples.len(), 1);
    }
}
