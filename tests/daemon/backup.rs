//! Issue #24 §3: a backup taken while a task trains, restored with `ctpd restore` into a new
//! data dir, serves the same versions, heads, accuracy matrices, head history and bit-identical
//! embeddings; the task that was training resumes there from its backed-up checkpoint. Bad
//! targets, damaged backups and Postgres are refused with messages that say why.
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use ctp_api::pb;
use ctp_api::pb::continual_trainer_client::ContinualTrainerClient;
use tonic::transport::Channel;
use tonic::Code;

use crate::helpers::*;

const CHECKPOINT_EVERY: u64 = 3;

async fn train(c: &mut ContinualTrainerClient<Channel>, name: &str, t: usize) -> i64 {
    let task = submit(c, header("m", name, 1), shape_samples(t))
        .await
        .unwrap();
    let end = terminal(&watch_all(c, &task.id, 0).await);
    assert_eq!(end.state, pb::TaskState::Succeeded as i32, "{end:?}");
    end.produced_version.unwrap()
}

async fn versions(c: &mut ContinualTrainerClient<Channel>) -> Vec<pb::Version> {
    let r = c
        .list_versions(pb::ListVersionsRequest {
            model: "m".into(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.next_page_token.is_empty());
    r.versions
}

/// Every task as (id, name, state, produced version), in submission order.
async fn tasks(c: &mut ContinualTrainerClient<Channel>) -> Vec<(String, String, i32, Option<i64>)> {
    let r = c
        .list_tasks(pb::ListTasksRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    r.tasks
        .into_iter()
        .map(|t| (t.id, t.name, t.state, t.produced_version))
        .collect()
}

/// Image and text embeddings of `version`, as raw bits.
async fn embed_bits(c: &mut ContinualTrainerClient<Channel>, version: i64) -> Vec<Vec<u32>> {
    let r = c
        .embed(pb::EmbedRequest {
            model: "m".into(),
            version: Some(version),
            images: vec![shape_samples(0)[0].image.clone()],
            texts: vec!["a red circle".into(), "a small blue square".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.version, version);
    r.image_embeddings
        .iter()
        .chain(&r.text_embeddings)
        .map(|e| e.values.iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// The first event of `task` that `pick` accepts (after the snapshot), within two minutes.
async fn wait_event(
    c: &mut ContinualTrainerClient<Channel>,
    task: &str,
    pick: impl Fn(&pb::task_event::Event) -> bool,
) -> pb::task_event::Event {
    let mut s = c
        .watch_task(pb::WatchTaskRequest {
            task_id: task.into(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(120), s.message())
            .await
            .expect("no such event within two minutes")
            .unwrap()
            .expect("the stream ended first")
            .event
            .unwrap();
        if pick(&ev) {
            return ev;
        }
        assert!(
            !matches!(ev, pb::task_event::Event::Terminal(_)),
            "task {task} ended first: {ev:?}"
        );
    }
}

async fn cancel_and_wait(c: &mut ContinualTrainerClient<Channel>, task: &str) {
    c.cancel_task(pb::CancelTaskRequest {
        task_id: task.into(),
    })
    .await
    .unwrap();
    let end = terminal(&watch_all(c, task, 0).await);
    assert_eq!(end.state, pb::TaskState::Cancelled as i32, "{end:?}");
}

/// A backup into `path` that must be refused.
async fn refused(c: &mut ContinualTrainerClient<Channel>, path: &Path) -> tonic::Status {
    c.backup(pb::BackupRequest {
        path: path.display().to_string(),
    })
    .await
    .unwrap_err()
}

/// Flips one bit in the middle of `file`.
fn damage(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(file, bytes).unwrap();
}

fn ctpd(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ctpd"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn restore(from: &Path, to: &Path) -> Output {
    ctpd(&[
        "restore".as_ref(),
        "--from".as_ref(),
        from.as_os_str(),
        "--data-dir".as_ref(),
        to.as_os_str(),
    ])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

async fn head_history(data_dir: &Path) -> Vec<pb::HeadChange> {
    let url = format!("sqlite://{}?mode=rw", data_dir.join("ctp.sqlite").display());
    let store = ctp::store::Store::connect(&url).await.unwrap();
    let h = store.head_history("m").await.unwrap();
    store.close().await;
    h.iter().map(ctp::api::convert::head_change_to_pb).collect()
}

fn manifest(snapshot: &Path) -> ctp::backup::manifest::Manifest {
    let text = std::fs::read_to_string(snapshot.join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_a_task_trains_restores_every_version_bit_for_bit() {
    let root = tempfile::tempdir().unwrap();
    let env = vec![(
        "CTP__TRAINING__CHECKPOINT_EVERY".to_string(),
        CHECKPOINT_EVERY.to_string(),
    )];
    let app = spawn_app_in(String::new(), &root.path().join("a"), env.clone()).await;
    let mut c = app.client.clone();
    assert_eq!(train(&mut c, "t1", 0).await, 1);
    assert_eq!(train(&mut c, "t2", 1).await, 2);
    c.rollback(pb::RollbackRequest {
        model: "m".into(),
        version: 1,
        expected_head: Some(2),
        reason: "before the backup".into(),
    })
    .await
    .unwrap();

    // A long task, past its first recorded resume checkpoint (events arrive in order, so a
    // progress step beyond the checkpoint step means the checkpoint was recorded).
    let long = submit(&mut c, header("m", "long", 5000), shape_samples(2))
        .await
        .unwrap();
    wait_event(
        &mut c,
        &long.id,
        |e| matches!(e, pb::task_event::Event::Progress(p) if p.step > CHECKPOINT_EVERY),
    )
    .await;
    let before = versions(&mut c).await;
    let tasks_before = tasks(&mut c).await;

    let snap = root.path().join("backups/one");
    let reply = c
        .backup(pb::BackupRequest {
            path: snap.display().to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    // It ran while the task trained, and nothing was committed meanwhile.
    let running = c
        .get_task(pb::GetTaskRequest {
            task_id: long.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(running.state, pb::TaskState::Running as i32, "{running:?}");
    assert_eq!(versions(&mut c).await, before);

    let m = manifest(&snap);
    assert_eq!(
        reply.path,
        std::fs::canonicalize(&snap).unwrap().display().to_string()
    );
    assert_eq!(reply.files, m.files.len() as u64);
    assert_eq!(reply.bytes, m.total_bytes());
    assert_eq!(reply.database_sha256, m.database.sha256);
    assert_eq!(reply.schema_version, m.schema_version);
    assert_eq!(m.ctpd_version, env!("CARGO_PKG_VERSION"));
    for v in &before {
        assert!(
            m.files
                .iter()
                .any(|f| f.sha256 == v.checkpoint_sha256 && f.path.starts_with("versions/")),
            "version {} ({}) is not in the manifest {m:?}",
            v.version,
            v.checkpoint_sha256
        );
    }
    assert_eq!(
        m.files
            .iter()
            .filter(|f| f.path.starts_with("tasks/"))
            .count(),
        3
    );
    assert_eq!(
        m.files
            .iter()
            .filter(|f| f.path.starts_with("resume/"))
            .count(),
        1,
        "the long task's recorded resume checkpoint: {m:?}"
    );

    // Refused targets leave what is there alone.
    let err = refused(&mut c, &snap).await;
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("exists and is not an empty directory"),
        "{}",
        err.message()
    );
    assert_eq!(manifest(&snap), m);
    for bad in [Path::new("relative/dir"), &app.data_dir.join("inside")] {
        let err = refused(&mut c, bad).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
    }
    assert!(
        !app.data_dir.join("inside").exists(),
        "a refused target is not created"
    );

    // The engine serves Embed between runs, not during one.
    cancel_and_wait(&mut c, &long.id).await;
    let embeddings_a = [embed_bits(&mut c, 1).await, embed_bits(&mut c, 2).await];
    app.stop().await;
    let history_a = head_history(&root.path().join("a")).await;
    assert_eq!(history_a.len(), 3, "{history_a:?}");

    // Offline restore of a damaged copy: one line naming the file, nothing restored (the
    // other refusals: `backup::tests::restore_checks_every_file_and_leaves_nothing_on_failure`).
    let damaged = root.path().join("backups/damaged");
    let mut paths: Vec<String> = m.files.iter().map(|f| f.path.clone()).collect();
    paths.extend([m.database.path.clone(), "manifest.json".into()]);
    for f in &paths {
        let to = damaged.join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(snap.join(f), to).unwrap();
    }
    let victim = m
        .files
        .iter()
        .find(|f| f.path.starts_with("versions/"))
        .unwrap();
    damage(&damaged.join(&victim.path));
    let target = root.path().join("from-damaged");
    let out = restore(&damaged, &target);
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert_eq!(msg.lines().count(), 1, "{msg}");
    assert!(
        msg.contains(&victim.path) && msg.contains("nothing was restored"),
        "{msg}"
    );
    assert!(is_empty_dir(&target), "a failed restore leaves nothing");

    let b = root.path().join("b");
    let out = restore(&snap, &b);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("every sha256 matched"));

    // The restored daemon: the long task resumes from the backed-up checkpoint.
    let app = spawn_app_in(String::new(), &b, env).await;
    let mut c = app.client.clone();
    wait_event(&mut c, &long.id, |e| {
        matches!(e, pb::task_event::Event::Log(l) if l.message.contains("resuming from the step-"))
    })
    .await;
    cancel_and_wait(&mut c, &long.id).await;
    assert_eq!(versions(&mut c).await, before);
    let restored_tasks = tasks(&mut c).await;
    assert_eq!(restored_tasks.len(), tasks_before.len());
    for (r, a) in restored_tasks
        .iter()
        .zip(&tasks_before)
        .filter(|(r, _)| r.0 != long.id)
    {
        assert_eq!(r, a);
    }
    assert_eq!(
        [embed_bits(&mut c, 1).await, embed_bits(&mut c, 2).await],
        embeddings_a
    );
    // … and the restored data dir is sound, every version loading.
    let report = c
        .verify(pb::VerifyRequest { load_weights: true })
        .await
        .unwrap()
        .into_inner();
    assert!(report.sound && report.loaded_weights, "{report:?}");
    assert_eq!(report.versions, before.len() as u64, "{report:?}");

    // A checkpoint that no longer matches its row is not backed up, and nothing is left.
    let v2 = before.iter().find(|v| v.version == 2).unwrap();
    let v2_file = m
        .files
        .iter()
        .find(|f| f.sha256 == v2.checkpoint_sha256)
        .map(|f| b.join(&f.path))
        .unwrap();
    damage(&v2_file);
    let second = root.path().join("backups/two");
    let err = refused(&mut c, &second).await;
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&v2_file.display().to_string())
            && err.message().contains(&v2.checkpoint_sha256),
        "{}",
        err.message()
    );
    assert!(is_empty_dir(&second), "a failed backup leaves nothing");
    app.stop().await;
    assert_eq!(head_history(&b).await, history_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_on_postgres_names_the_tools_instead() {
    if pg::skip_requested() {
        return;
    }
    let app = spawn_app_with(Db::Postgres, vec![("CTP__DISPATCH".into(), "false".into())]).await;
    let mut c = app.client.clone();
    let dir = tempfile::tempdir().unwrap();
    let err = c
        .backup(pb::BackupRequest {
            path: dir.path().join("b").display().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("pg_dump") && err.message().contains("bucket"),
        "{}",
        err.message()
    );
    assert!(!dir.path().join("b").exists(), "nothing written");
    app.stop().await;
}
