//! Object storage (issue #23) with real servers: a moto S3 server (pinned by
//! `scripts/setup-moto.sh`) and, for several hosts, a throwaway Postgres.
//!
//! - Three `ctpd` processes with **separate data dirs** share one Postgres and one bucket: the
//!   holder is SIGKILLed, a survivor resumes from the checkpoint the dead one stored in the
//!   bucket, the task ends with exactly one version whose object matches its row, and Embed
//!   works from the daemon that never held it (cold cache), bit for bit like the survivor's.
//! - An outage (a proxy cut between ctpd and the server): health NOT_SERVING, SubmitTask
//!   UNAVAILABLE, training holds; after the restore the task finishes.
//! - A corrupt object is never used: Embed from a cold cache fails naming it, and nothing
//!   corrupt stays in the cache.
use std::path::Path;
use std::time::Duration;

use ctp_api::pb;
use ctp_storage::{Storage, StorageConfig};
use sqlx::{Connection, PgConnection};

use crate::helpers::*;
use crate::pg_daemons::{
    index_of, job, progress, wait_job, watch_succeeded, Daemon, EPOCHS, SERIAL,
};

use crate::moto;
#[path = "../../crates/ctp-storage/tests/support/proxy.rs"]
mod proxy;

/// Test credentials for daemons in this process (moto accepts any); child processes get them
/// through [`s3_env`].
fn credentials() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
}

/// The settings that put a daemon on `s3://<bucket>/ctp` at `endpoint` (moto accepts any
/// credentials), with short timeouts so that an outage shows quickly.
fn s3_env(endpoint: &str, bucket: &str) -> Vec<(String, String)> {
    [
        ("CTP__STORAGE__URL", format!("s3://{bucket}/ctp")),
        ("CTP__STORAGE__ENDPOINT", endpoint.to_string()),
        ("CTP__STORAGE__CONNECT_TIMEOUT_SECS", "2".into()),
        ("CTP__STORAGE__RETRY_TIMEOUT_SECS", "2".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The test's own view of the bucket (a separate cache in `dir`).
fn bucket_view(endpoint: &str, bucket: &str, dir: &Path) -> Storage {
    let cfg = StorageConfig {
        url: Some(format!("s3://{bucket}/ctp")),
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        ..StorageConfig::default()
    };
    credentials();
    Storage::open(&cfg, &dir.join("data"), &dir.join("cache")).unwrap()
}

async fn versions(addr: &str) -> Vec<pb::Version> {
    connect(addr)
        .await
        .list_versions(pb::ListVersionsRequest {
            model: "m".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .versions
}

async fn embed(addr: &str, version: i64) -> Result<Vec<f32>, tonic::Status> {
    let r = connect(addr)
        .await
        .embed(pb::EmbedRequest {
            model: "m".into(),
            version: Some(version),
            texts: vec!["a red square".into(), "a blue circle".into()],
            images: Vec::new(),
        })
        .await?
        .into_inner();
    Ok(r.text_embeddings
        .iter()
        .flat_map(|e| e.values.clone())
        .collect())
}

/// Every file under `dir` whose path contains `part`.
fn files_with(dir: &Path, part: &str) -> Vec<String> {
    fn walk(d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    let mut all = Vec::new();
    walk(dir, &mut all);
    all.retain(|p| p.contains(part));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_one_bucket_and_take_over_from_it() {
    if pg::skip_requested() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let moto = moto::moto();
    let bucket = moto.bucket();
    let env = s3_env(&moto.endpoint(), &bucket);
    let url = pg::PgServer::shared().fresh_database().await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let lease = 3;
    let start = |i: usize| {
        Daemon::start_with(
            dirs[i].path(),
            &url,
            free_port(),
            lease,
            Some(&format!("d{i}")),
            &env,
        )
    };
    let mut daemons = vec![start(0)];
    wait_serving(&daemons[0].addr).await;
    daemons.push(start(1));
    daemons.push(start(2));
    for d in &daemons {
        wait_serving(&d.addr).await;
    }
    let mut c = connect(&daemons[0].addr).await;
    let task = submit(&mut c, header("m", "squares", EPOCHS), shape_samples(0))
        .await
        .unwrap();
    // The bundle is in the bucket, and no data dir keeps a copy of it.
    let view_dir = tempfile::tempdir().unwrap();
    let view = bucket_view(&moto.endpoint(), &bucket, view_dir.path());
    let bundles = view.list("tasks").await.unwrap();
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    for d in &dirs {
        assert!(files_with(d.path(), ".bundle").is_empty());
    }

    let mut db = PgConnection::connect(&url).await.unwrap();
    wait_job(&mut db, &task.id, |j| j.resume_step.is_some()).await;
    let held = job(&mut db, &task.id).await;
    let holder = index_of(&daemons, held.worker_id.as_deref().unwrap());
    daemons[holder].kill(); // SIGKILL: its data dir is gone for the others.
    let at_kill = job(&mut db, &task.id).await;
    let taken = wait_job(&mut db, &task.id, |j| j.lease_epoch > held.lease_epoch).await;
    let survivor = index_of(&daemons, taken.worker_id.as_deref().unwrap());
    assert_ne!(survivor, holder);

    let mut c = connect(&daemons[survivor].addr).await;
    let events = watch_succeeded(&mut c, &task.id).await;
    let resumed = progress(&events)
        .into_iter()
        .find_map(|p| p.resumed_from_step)
        .expect("the survivor resumed");
    assert_eq!(
        Some(resumed as i64),
        at_kill.resume_step,
        "resumed from the checkpoint the dead holder stored in the bucket"
    );

    // Exactly one version; its object is in the bucket and matches its row (fetch verifies
    // the sha256 before it returns the file).
    let v = versions(&daemons[survivor].addr).await;
    assert_eq!(v.len(), 1, "trained exactly once: {v:?}");
    let objects = view.list("versions").await.unwrap();
    assert_eq!(objects.len(), 1, "one version object: {objects:?}");
    let fetched = view
        .fetch(&objects[0].key, &v[0].checkpoint_sha256)
        .await
        .unwrap();
    assert_eq!(
        ctp::trainer::checkpoint::sha256_file(&fetched).unwrap(),
        v[0].checkpoint_sha256
    );

    // Embed from the daemon that never held the task: its cache is cold.
    let cold = (0..3).find(|i| *i != holder && *i != survivor).unwrap();
    assert!(files_with(dirs[cold].path(), "cache/objects").is_empty());
    let from_cold = embed(&daemons[cold].addr, 1).await.unwrap();
    let from_survivor = embed(&daemons[survivor].addr, 1).await.unwrap();
    assert!(!from_cold.is_empty());
    assert_eq!(
        from_cold.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        from_survivor
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>(),
        "the same version gives the same embeddings on every host"
    );
    assert!(!files_with(dirs[cold].path(), "cache/objects").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_storage_outage_holds_training_and_refuses_submissions() {
    let _serial = SERIAL.lock().await;
    let moto = moto::moto();
    let bucket = moto.bucket();
    credentials();
    let proxy = proxy::Proxy::start(moto.addr).await;
    let mut env = s3_env(&proxy.url(), &bucket);
    env.push(("CTP__TRAINING__CHECKPOINT_EVERY".into(), "3".into()));
    let app = spawn_app_with(Db::Sqlite, env).await;
    let addr = app.addr.clone();
    let mut c = connect(&addr).await;
    let task = submit(&mut c, header("m", "squares", 12), shape_samples(0))
        .await
        .unwrap();

    proxy.cut().await;
    wait_health(&addr, false).await;
    let refused = submit(&mut c, header("m", "more", 1), shape_samples(1))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // Training holds while it cannot store its checkpoints: it does not fail.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = c
        .get_task(pb::GetTaskRequest {
            task_id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        during.state,
        pb::TaskState::Failed as i32,
        "{}",
        during.error
    );

    proxy.restore().await;
    wait_health(&addr, true).await;
    let events = watch_all(&mut c, &task.id, 0).await;
    let t = terminal(&events);
    assert_eq!(t.state, pb::TaskState::Succeeded as i32, "{}", t.error);
    assert_eq!(versions(&addr).await.len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_object_is_never_used() {
    let _serial = SERIAL.lock().await;
    let moto = moto::moto();
    let bucket = moto.bucket();
    let env = s3_env(&moto.endpoint(), &bucket);
    credentials();
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(String::new(), dir.path(), env.clone()).await;
    let mut c = connect(&app.addr).await;
    let task = submit(&mut c, header("m", "squares", 1), shape_samples(0))
        .await
        .unwrap();
    let t = terminal(&watch_all(&mut c, &task.id, 0).await);
    assert_eq!(t.state, pb::TaskState::Succeeded as i32, "{}", t.error);
    app.stop().await;

    // Replace the version's object behind ctpd's back with other bytes (a bad disk, a buggy
    // tool), and empty the daemon's cache.
    let view_dir = tempfile::tempdir().unwrap();
    let view = bucket_view(&moto.endpoint(), &bucket, view_dir.path());
    let key = view.list("versions").await.unwrap().remove(0).key;
    view.delete(&key).await.unwrap();
    let garbage = view_dir.path().join("garbage");
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    let sha = ctp::trainer::checkpoint::sha256_file(&garbage).unwrap();
    view.put_file_create_only(&key, &garbage, &sha)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(dir.path().join("cache"));

    let app = spawn_app_in(String::new(), dir.path(), env).await;
    let err = embed(&app.addr, 1).await.unwrap_err();
    assert!(err.message().contains(&key), "{err:?}");
    assert!(
        files_with(dir.path(), "cache/objects").is_empty(),
        "nothing corrupt is kept"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_orphans_are_quarantined_after_the_grace_period_and_never_referenced_ones() {
    let moto = moto::moto();
    let bucket = moto.bucket();
    credentials();
    let dir = tempfile::tempdir().unwrap();
    let data = ctp::datadir::DataDir::open(&dir.path().join("data")).unwrap();
    let cfg = StorageConfig {
        url: Some(format!("s3://{bucket}/ctp")),
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        ..StorageConfig::default()
    };
    let objects = ctp::objects::Objects::open(&cfg, &data).unwrap();
    // A referenced bundle and an orphan (a peer's upload whose row never came).
    let put = |name: &str, body: &[u8]| {
        let p = data.root().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        (
            p.clone(),
            ctp::trainer::checkpoint::sha256_file(&p).unwrap(),
        )
    };
    let (kept, kept_sha) = put("tasks/kept.bundle", b"kept");
    let (orphan, orphan_sha) = put("versions/orphan.1.safetensors", b"orphan");
    objects.publish(&kept, &kept_sha).await.unwrap();
    objects.publish(&orphan, &orphan_sha).await.unwrap();
    let referenced = vec!["tasks/kept.bundle".to_string()];

    // Young objects are a peer's work in progress: left alone.
    let young = objects
        .sweep_bucket(&referenced, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(young.quarantined, 0);
    let done = objects
        .sweep_bucket(&referenced, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(done.quarantined, 1);
    let view = objects.storage();
    assert!(view.head("tasks/kept.bundle").await.unwrap().is_some());
    assert!(view
        .head("versions/orphan.1.safetensors")
        .await
        .unwrap()
        .is_none());
    assert!(view
        .head("quarantine/versions/orphan.1.safetensors")
        .await
        .unwrap()
        .is_some());
}
