//! `ctp-bench storage`: what object storage costs (issue #23 §4).
//!
//! 1. **Submission**: the time from the start of `SubmitTask` to its reply (the task durable
//!    and QUEUED) for N 64 px PNG image–caption samples, (a) streamed through the client
//!    connection (64 samples per message) and (b) by reference: the header alone, naming
//!    WebDataset shards in an `s3://` bucket (`TaskHeader.data_urls`, a brace pattern), which
//!    the daemon fetches, checks and copies into its own bundle. Each with the daemon's
//!    storage on the bucket (`storage.url = s3://…`) and on its data dir (the default; the
//!    shards still come from the bucket). An in-process daemon with `dispatch = false`, so no
//!    training competes; every repetition submits other captions, so nothing is deduplicated.
//!    Writing and uploading the shards is not timed.
//! 2. **Resume start**: module [`crate::storage_resume`].
//!
//! The bucket is a local moto server, started as the tests start it
//! (`crates/ctp-storage/tests/support/moto.rs`; `scripts/setup-moto.sh` installs it).
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use ctp_api::pb;
use ctp_datasets::webdataset::ShardWriter;
use ctp_datasets::{DatasetSample, Split};
use ctp_storage::{Storage, StorageConfig};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::moto::{self, Moto};
use crate::service::{self, Daemon};
use crate::storage_resume::{self, ResumeRow};

#[derive(clap::Args)]
pub struct StorageArgs {
    /// Samples per submission (64 px PNG + caption; every fifth an eval sample).
    #[arg(long, default_value_t = 10_000)]
    pub samples: usize,
    /// Shards the by-reference submission names.
    #[arg(long, default_value_t = 10)]
    pub shards: usize,
    /// Repetitions of each submission.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Repetitions of each resume start (each loads the `small` model).
    #[arg(long, default_value_t = 3)]
    pub resume_reps: usize,
    /// Samples in the resumed task's bundle (64 px PNG; every fifth an eval sample).
    #[arg(long, default_value_t = 1024)]
    pub resume_samples: usize,
    /// The `ctpd` binary the resume starts run (default: the one beside this binary).
    #[arg(long)]
    pub ctpd: Option<PathBuf>,
    /// Only the submission table.
    #[arg(long, conflicts_with = "resume_only")]
    pub submit_only: bool,
    /// Only the resume table.
    #[arg(long)]
    pub resume_only: bool,
    /// Also measure resume starts on the data dir (`file://`, no object cache): one more
    /// parent task and part-trained task.
    #[arg(long)]
    pub local_resume: bool,
    /// Keep the resume starts' data dirs and ctpd logs here (default: a temp dir, removed
    /// unless a start fails).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Median, minimum and every run, in seconds (or any unit).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub runs: Vec<f64>,
}

impl Stat {
    pub fn of(runs: Vec<f64>) -> Stat {
        let mut s = runs.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => s[n / 2],
            _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        };
        Stat {
            median,
            min: s.first().copied().unwrap_or(f64::NAN),
            runs,
        }
    }
}

/// One (daemon storage, submission mode) row.
#[derive(Debug, Serialize)]
pub struct SubmitRow {
    /// `s3` (bundles in the bucket) or `data dir`.
    pub storage: String,
    /// `streamed` or `by reference`.
    pub mode: String,
    pub samples: usize,
    /// Image and caption bytes of one submission.
    pub megabytes: f64,
    pub seconds: Stat,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    command: String,
    /// `/proc/loadavg` before and after: other work on the machine shows here.
    load_average: [String; 2],
    samples: usize,
    shards: usize,
    submit: Vec<SubmitRow>,
    resume: Vec<ResumeRow>,
    /// Median time to the first step, cold ÷ warm (target ≤ 2 for `small`).
    cold_over_warm: Option<f64>,
}

pub fn run(args: &StorageArgs, machine: String) -> Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let load_before = load();
    let moto = moto::moto();
    // Credentials for the in-process daemons and the bucket view (moto accepts any).
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_REGION", "us-east-1");
    let rt = tokio::runtime::Runtime::new()?;
    let submit = if args.resume_only {
        Vec::new()
    } else {
        rt.block_on(submissions(args, &moto))?
    };
    let resume = if args.submit_only {
        Vec::new()
    } else {
        rt.block_on(storage_resume::run(args, &moto))?
    };
    let report = Report {
        machine,
        command,
        load_average: [load_before, load()],
        samples: args.samples,
        shards: args.shards,
        cold_over_warm: storage_resume::cold_over_warm(&resume),
        submit,
        resume,
    };
    println!("{}", markdown(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The daemon settings for storage on `s3://<bucket>/ctp` (`s3 = true`) or on the data dir,
/// both allowed to read task data under `s3://<bucket>/datasets/`.
pub fn storage_env(endpoint: &str, bucket: &str, s3: bool) -> Vec<(String, String)> {
    let mut env = vec![
        ("CTP__STORAGE__ENDPOINT", format!("{endpoint:?}")),
        ("CTP__STORAGE__REGION", "\"us-east-1\"".into()),
        (
            "CTP__STORAGE__ALLOW_URLS",
            format!("[{:?}]", format!("s3://{bucket}/datasets/")),
        ),
    ];
    if s3 {
        env.push((
            "CTP__STORAGE__URL",
            format!("{:?}", format!("s3://{bucket}/ctp")),
        ));
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// `base` with every caption marked `tag` and ids `s<i>`, so each submission is new data.
fn tagged(base: &[pb::Sample], tag: &str) -> Vec<pb::Sample> {
    base.iter()
        .enumerate()
        .map(|(i, s)| {
            let mut caption = s.caption.clone();
            caption.extend_from_slice(format!(" ({tag})").as_bytes());
            pb::Sample {
                caption,
                id: format!("s{i:06}"),
                ..s.clone()
            }
        })
        .collect()
}

/// Writes `samples` as `n` shards under `dir` and uploads them as `<prefix>/shard-<i>.tar`;
/// the brace pattern that names them.
async fn upload_shards(
    view: &Storage,
    bucket: &str,
    dir: &Path,
    prefix: &str,
    samples: &[pb::Sample],
    n: usize,
) -> Result<String> {
    let per = samples.len().div_ceil(n.max(1));
    let mut count = 0;
    for (i, part) in samples.chunks(per).enumerate() {
        let path = dir.join(format!("shard-{i}.tar"));
        let mut w = ShardWriter::create(&path)?;
        for s in part {
            w.append(&DatasetSample {
                image: s.image.clone(),
                caption: String::from_utf8(s.caption.clone())?,
                id: s.id.clone(),
                split: Some(if s.split == pb::Split::Eval as i32 {
                    Split::Eval
                } else {
                    Split::Train
                }),
            })?;
        }
        let path = w.finish()?;
        let sha = hex::encode(Sha256::digest(std::fs::read(&path)?));
        view.put_file_create_only(&format!("{prefix}/shard-{i}.tar"), &path, &sha)
            .await?;
        std::fs::remove_file(&path)?;
        count += 1;
    }
    Ok(format!(
        "s3://{bucket}/datasets/{prefix}/shard-{{0..{}}}.tar",
        count - 1
    ))
}

async fn submissions(args: &StorageArgs, moto: &Moto) -> Result<Vec<SubmitRow>> {
    eprintln!("encoding {} 64 px PNGs", args.samples);
    let base = service::samples(args.samples, 64, false);
    let megabytes = base
        .iter()
        .map(|s| s.image.len() + s.caption.len())
        .sum::<usize>() as f64
        / 1e6;
    let mut rows = Vec::new();
    for s3 in [true, false] {
        let bucket = moto.bucket();
        let work = tempfile::tempdir()?;
        let mut env = storage_env(&moto.endpoint(), &bucket, s3);
        env.push(("CTP__DISPATCH".into(), "false".into()));
        let daemon = Daemon::start_in(&work.path().join("data"), env).await?;
        let mut c = service::client(&daemon.addr).await?;
        let cfg = StorageConfig {
            url: Some(format!("s3://{bucket}/datasets")),
            endpoint: Some(moto.endpoint()),
            region: Some("us-east-1".into()),
            ..StorageConfig::default()
        };
        let view = Storage::open(&cfg, &work.path().join("view"), &work.path().join("cache"))?;
        let (mut streamed, mut by_ref) = (Vec::new(), Vec::new());
        for rep in 0..args.reps {
            let samples = tagged(&base, &format!("streamed {rep}"));
            let t = Instant::now();
            let task = service::submit(&mut c, service::header("m", 1), samples, 64).await?;
            streamed.push(t.elapsed().as_secs_f64());
            check(&task, args.samples, pb::TaskState::Queued)?;

            let samples = tagged(&base, &format!("by reference {rep}"));
            let pattern = upload_shards(
                &view,
                &bucket,
                work.path(),
                &format!("r{rep}"),
                &samples,
                args.shards,
            )
            .await?;
            drop(samples);
            let header = pb::TaskHeader {
                data_urls: vec![pattern],
                ..service::header("m", 1)
            };
            let t = Instant::now();
            let task = service::submit(&mut c, header, Vec::new(), 64).await?;
            by_ref.push(t.elapsed().as_secs_f64());
            check(&task, args.samples, pb::TaskState::Queued)?;
            ensure!(task.sources.len() == args.shards.min(args.samples));
            eprintln!(
                "{} rep {rep}: streamed {:.2} s, by reference {:.2} s",
                if s3 { "s3" } else { "data dir" },
                streamed[rep],
                by_ref[rep]
            );
        }
        daemon.stop().await?;
        let storage = if s3 { "s3 (moto)" } else { "data dir" };
        for (mode, runs) in [("streamed", streamed), ("by reference (s3://)", by_ref)] {
            rows.push(SubmitRow {
                storage: storage.into(),
                mode: mode.into(),
                samples: args.samples,
                megabytes,
                seconds: Stat::of(runs),
            });
        }
    }
    Ok(rows)
}

fn check(task: &pb::Task, samples: usize, state: pb::TaskState) -> Result<()> {
    ensure!(
        task.n_train + task.n_eval == samples as u64,
        "task {} holds {} + {} samples, not {samples}",
        task.id,
        task.n_train,
        task.n_eval
    );
    ensure!(
        task.state == state as i32,
        "task {} is {:?}, not {state:?}",
        task.id,
        pb::TaskState::try_from(task.state)
    );
    Ok(())
}

fn markdown(r: &Report) -> String {
    let mut s = format!(
        "{}\nLoad average (/proc/loadavg) before: {}; after: {}\n\n",
        r.machine, r.load_average[0], r.load_average[1]
    );
    if !r.submit.is_empty() {
        s.push_str(&format!(
            "SubmitTask until the task is QUEUED, {} samples of 64 px PNG + caption, {} shards by reference; median (min) of {} runs:\n\n",
            r.samples,
            r.shards,
            r.submit[0].seconds.runs.len()
        ));
        s.push_str(
            "| daemon storage | submission | MB | seconds | samples/s |\n|---|---|---|---|---|\n",
        );
        for row in &r.submit {
            s.push_str(&format!(
                "| {} | {} | {:.1} | {:.2} ({:.2}) | {:.0} |\n",
                row.storage,
                row.mode,
                row.megabytes,
                row.seconds.median,
                row.seconds.min,
                row.samples as f64 / row.seconds.median
            ));
        }
        s.push('\n');
    }
    if !r.resume.is_empty() {
        s.push_str(&storage_resume::markdown(&r.resume));
        if let Some(x) = r.cold_over_warm {
            s.push_str(&format!(
                "\nCold ÷ warm, median time to the first step: {x:.2} (target ≤ 2: {}).\n",
                if x <= 2.0 { "met" } else { "missed" }
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::Stat;

    #[test]
    fn median_of_odd_and_even_runs_and_the_minimum() {
        let odd = Stat::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((odd.median, odd.min), (2.0, 1.0));
        assert_eq!(odd.runs, vec![3.0, 1.0, 2.0], "runs stay in order");
        let even = Stat::of(vec![4.0, 1.0, 3.0, 2.0]);
        assert_eq!((even.median, even.min), (2.5, 1.0));
        assert!(Stat::of(Vec::new()).median.is_nan());
    }
}
