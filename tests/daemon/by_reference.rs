//! Tasks submitted by reference (issue #23 §2): `TaskHeader.data_urls` names WebDataset shards
//! (`file://`, `s3://`, brace patterns) that the daemon fetches, checks with the rules and
//! messages of a streamed upload, and copies into its own bundle, recording a manifest.
//!
//! - file:// shards by a brace pattern train to SUCCEEDED; `Task.sources` lists each shard
//!   with its sha256 and sample count; the same samples streamed with the same idempotency
//!   key return the same task (the digest covers the data, not how it arrived); shards that
//!   change or vanish after submission do not affect the task (it trains on its own copy).
//! - A URL outside `storage.allow_urls` is INVALID_ARGUMENT naming it, before anything is
//!   fetched; a header with data_urls plus samples is refused.
//! - A bad sample in a shard gives exactly the message a streamed upload of the same samples
//!   gives, and nothing is queued or kept.
//! - s3:// shards in a moto bucket (the daemon's own bucket, allowed without configuration),
//!   through the API and through `ctpctl submit 's3://…/shard-{0..1}.tar'`.
use std::path::{Path, PathBuf};
use std::process::Output;

use ctp_api::pb;
use ctp_datasets::webdataset::ShardWriter;
use ctp_datasets::{DatasetSample, Split};
use ctp_storage::{Storage, StorageConfig};
use sha2::{Digest, Sha256};

use crate::helpers::*;

use crate::moto;

/// The dataset form of a wire sample (what a user's shard holds).
fn dataset_sample(s: &pb::Sample) -> DatasetSample {
    DatasetSample {
        image: s.image.clone(),
        caption: String::from_utf8(s.caption.clone()).unwrap(),
        id: s.id.clone(),
        split: match pb::Split::try_from(s.split) {
            Ok(pb::Split::Train) => Some(Split::Train),
            Ok(pb::Split::Eval) => Some(Split::Eval),
            _ => None,
        },
    }
}

/// Writes `samples` as `n` shards `dir/shard-<i>.tar` (contiguous slices); their paths.
fn write_shards(dir: &Path, samples: &[pb::Sample], n: usize) -> Vec<PathBuf> {
    let per = samples.len().div_ceil(n);
    samples
        .chunks(per)
        .enumerate()
        .map(|(i, part)| {
            let mut w = ShardWriter::create(&dir.join(format!("shard-{i}.tar"))).unwrap();
            for s in part {
                w.append(&dataset_sample(s)).unwrap();
            }
            w.finish().unwrap()
        })
        .collect()
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A daemon that may read task data under `root` (a canonical folder).
async fn daemon_reading(root: &Path) -> TestApp {
    let allow = format!("[{:?}]", format!("file://{}/", root.display()));
    spawn_app_with(
        Db::Sqlite,
        vec![("CTP__STORAGE__ALLOW_URLS".to_string(), allow)],
    )
    .await
}

/// `header(model, name, epochs)` naming its data by URL.
fn ref_header(model: &str, name: &str, epochs: u32, urls: &[String]) -> pb::TaskHeader {
    pb::TaskHeader {
        data_urls: urls.to_vec(),
        ..header(model, name, epochs)
    }
}

/// SubmitTask with the header alone.
async fn submit_ref(c: &mut TestApp, h: pb::TaskHeader) -> Result<pb::Task, tonic::Status> {
    c.client
        .submit_task(tokio_stream::iter(requests(h, Vec::new(), 5)))
        .await
        .map(|r| r.into_inner())
}

async fn get_task(app: &mut TestApp, id: &str) -> pb::Task {
    app.client
        .get_task(pb::GetTaskRequest {
            task_id: id.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn task_count(app: &mut TestApp) -> usize {
    app.client
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tasks
        .len()
}

/// Files left in the data dir's `tasks/` and in the folders shards are fetched to.
fn leftovers(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["tasks", "cache"] {
        for e in std::fs::read_dir(data_dir.join(sub)).into_iter().flatten() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if sub == "tasks" || name.starts_with("fetch-") {
                out.push(format!("{sub}/{name}"));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_shards_by_reference_train_and_record_their_manifest() {
    let shards = tempfile::tempdir().unwrap();
    let root = shards.path().canonicalize().unwrap();
    let samples = shape_samples(0);
    let paths = write_shards(&root, &samples, 2);
    let mut app = daemon_reading(&root).await;

    let pattern = format!("file://{}/shard-{{0..1}}.tar", root.display());
    let mut h = ref_header("m", "by-reference", 2, &[pattern]);
    h.idempotency_key = Some("k1".into());
    let task = submit_ref(&mut app, h.clone()).await.unwrap();
    let shas: Vec<String> = paths.iter().map(|p| sha256_of(p)).collect();
    assert_eq!(task.n_train + task.n_eval, samples.len() as u64);
    assert_eq!(task.n_eval, 6, "the shards' own splits are used");
    assert_eq!(task.sources.len(), 2, "{:?}", task.sources);
    for (i, (src, path)) in task.sources.iter().zip(&paths).enumerate() {
        assert_eq!(src.url, format!("file://{}/shard-{i}.tar", root.display()));
        assert_eq!(src.sha256, shas[i]);
        assert_eq!(src.samples, 8);
        assert_eq!(src.bytes, std::fs::metadata(path).unwrap().len());
        assert_eq!(src.etag, "");
    }

    // The digest covers the samples, not how they arrived: the same samples streamed with
    // the same key are the same request, and return the first task.
    h.data_urls.clear();
    let again = submit(&mut app.client, h, samples.clone()).await.unwrap();
    assert_eq!(again.id, task.id);

    // The shards change after submission: the task trains on the copy it stored.
    std::fs::write(&paths[0], b"not a tar any more").unwrap();
    std::fs::remove_file(&paths[1]).unwrap();
    let events = watch_all(&mut app.client, &task.id, 0).await;
    let t = terminal(&events);
    assert_eq!(t.state, pb::TaskState::Succeeded as i32, "{}", t.error);
    let done = get_task(&mut app, &task.id).await;
    assert_eq!(
        done.sources, task.sources,
        "the manifest is stored with the task"
    );
    assert!(leftovers(&app.data_dir)
        .iter()
        .all(|f| !f.starts_with("cache/")));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_outside_the_allow_list_are_refused_by_name() {
    let shards = tempfile::tempdir().unwrap();
    let root = shards.path().canonicalize().unwrap();
    write_shards(&root, &shape_samples(0), 1);
    let mut app = daemon_reading(&root).await;
    let good = format!("file://{}/shard-0.tar", root.display());

    for outside in [
        "file:///etc/passwd".to_string(),
        "https://169.254.169.254/latest/meta-data/x.tar".to_string(),
        "s3://some-other-bucket/shards/x.tar".to_string(),
        format!("file://{}-private/shard-0.tar", root.display()),
    ] {
        let h = ref_header("m", "t", 1, &[good.clone(), outside.clone()]);
        let err = submit_ref(&mut app, h).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{outside}: {err:?}"
        );
        assert!(
            err.message().contains(&outside),
            "{outside}: {}",
            err.message()
        );
        assert!(
            err.message().contains("storage.allow_urls"),
            "{}",
            err.message()
        );
    }
    // A `..` that climbs out of the allowed folder is resolved before the check.
    let climb = format!("file://{}/../shard-0.tar", root.display());
    let err = submit_ref(&mut app, ref_header("m", "t", 1, &[climb]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // data_urls and samples together: refused, naming the rule.
    let mixed = requests(
        ref_header("m", "t", 1, std::slice::from_ref(&good)),
        shape_samples(0),
        5,
    );
    let err = app
        .client
        .submit_task(tokio_stream::iter(mixed))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("data_urls"), "{}", err.message());

    // A bad brace pattern is named too.
    let bad = format!("file://{}/shard-{{0..}}.tar", root.display());
    let err = submit_ref(&mut app, ref_header("m", "t", 1, &[bad]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("header.data_urls[0]"),
        "{}",
        err.message()
    );

    assert_eq!(task_count(&mut app).await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_sample_in_a_shard_gives_the_streamed_upload_message() {
    let shards = tempfile::tempdir().unwrap();
    let root = shards.path().canonicalize().unwrap();
    let mut app = daemon_reading(&root).await;
    let long_caption = {
        let mut s = shape_samples(0);
        s[11].caption = vec![b'x'; 2000];
        s
    };
    let bad_image = {
        let mut s = shape_samples(0);
        // PNG magic (so the shard reader takes it as an image), then garbage.
        s[5].image = b"\x89PNG\r\n\x1a\nnot really a png".to_vec();
        s
    };
    for (name, samples) in [("caption", long_caption), ("image", bad_image)] {
        let dir = root.join(name);
        std::fs::create_dir(&dir).unwrap();
        write_shards(&dir, &samples, 2);
        let streamed = submit(&mut app.client, header("m", "t", 1), samples)
            .await
            .unwrap_err();
        let url = format!("file://{}/shard-{{0..1}}.tar", dir.display());
        let by_ref = submit_ref(&mut app, ref_header("m", "t", 1, &[url]))
            .await
            .unwrap_err();
        assert_eq!(by_ref.code(), tonic::Code::InvalidArgument, "{by_ref:?}");
        assert_eq!(by_ref.code(), streamed.code());
        assert_eq!(by_ref.message(), streamed.message(), "{name}");
        assert!(
            by_ref.message().starts_with("sample "),
            "{}",
            by_ref.message()
        );
    }
    assert_eq!(task_count(&mut app).await, 0, "nothing queued");
    assert_eq!(
        leftovers(&app.data_dir),
        Vec::<String>::new(),
        "nothing kept"
    );
    app.stop().await;
}

/// The settings that put a daemon on `s3://<bucket>/ctp` at `endpoint`.
fn s3_env(endpoint: &str, bucket: &str) -> Vec<(String, String)> {
    // Credentials are read from the process environment (moto accepts any).
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    [
        ("CTP__STORAGE__URL", format!("s3://{bucket}/ctp")),
        ("CTP__STORAGE__ENDPOINT", endpoint.to_string()),
        ("CTP__STORAGE__REGION", "\"us-east-1\"".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_shards_by_reference_through_the_api_and_ctpctl() {
    let moto = moto::moto();
    let bucket = moto.bucket();
    let env = s3_env(&moto.endpoint(), &bucket);
    let work = tempfile::tempdir().unwrap();
    let cfg = StorageConfig {
        url: Some(format!("s3://{bucket}/ctp")),
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        ..StorageConfig::default()
    };
    let view = Storage::open(&cfg, &work.path().join("data"), &work.path().join("cache")).unwrap();
    let samples = shape_samples(1);
    let shard_dir = work.path().join("shards");
    std::fs::create_dir(&shard_dir).unwrap();
    let mut shas = Vec::new();
    for (i, p) in write_shards(&shard_dir, &samples, 2).iter().enumerate() {
        let sha = sha256_of(p);
        let key = format!("shards/shard-{i}.tar");
        // The put consumes its file; keep the shard for nothing else.
        view.put_file_create_only(&key, p, &sha).await.unwrap();
        shas.push(sha);
    }

    let mut app = spawn_app_with(Db::Sqlite, env).await;
    let pattern = format!("s3://{bucket}/ctp/shards/shard-{{0..1}}.tar");
    let task = submit_ref(
        &mut app,
        ref_header("m", "from-s3", 1, std::slice::from_ref(&pattern)),
    )
    .await
    .unwrap();
    assert_eq!(task.n_train + task.n_eval, samples.len() as u64);
    let got: Vec<(String, String, u64)> = task
        .sources
        .iter()
        .map(|s| (s.url.clone(), s.sha256.clone(), s.samples))
        .collect();
    let want: Vec<(String, String, u64)> = (0..2)
        .map(|i| {
            (
                format!("s3://{bucket}/ctp/shards/shard-{i}.tar"),
                shas[i].clone(),
                8,
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(
        task.sources.iter().all(|s| !s.etag.is_empty()),
        "S3 sends ETags"
    );

    // ctpctl with the quoted pattern: the header alone goes out, the daemon expands it.
    let out = tokio::process::Command::new(bins::ctpctl())
        .args(["--addr", &app.addr, "--json", "submit", "--model", "m"])
        .args(["--name", "ctpctl-s3", "--preset", "tiny", "--epochs", "1"])
        .args(["--batch-size", "5", "--wait", &pattern])
        .output()
        .await
        .unwrap();
    ok(&out);
    let first = terminal(&watch_all(&mut app.client, &task.id, 0).await);
    assert_eq!(
        first.state,
        pb::TaskState::Succeeded as i32,
        "{}",
        first.error
    );
    let tasks = app
        .client
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tasks;
    let by_ctpctl = tasks.iter().find(|t| t.name == "ctpctl-s3").expect("task");
    assert_eq!(
        by_ctpctl.state,
        pb::TaskState::Succeeded as i32,
        "{}",
        by_ctpctl.error
    );
    assert_eq!(by_ctpctl.sources.len(), 2);
    assert_eq!(
        by_ctpctl.n_eval, task.n_eval,
        "the shards' splits, as by the API"
    );
    app.stop().await;
}
