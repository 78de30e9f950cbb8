//! Nothing accepted is lost, nothing rejected is kept: the data dir under another spelling or
//! after a move, idempotency keys reused with other content, uploads cancelled by the client,
//! malformed requests on every RPC, and the drain's last watch event.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ctp_api::pb;
use tonic::Code;

use crate::helpers::*;

/// Every file under `dir` (recursively).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

async fn train_one(app: &TestApp, name: &str, t: usize) -> pb::Terminal {
    let mut c = app.client.clone();
    let task = submit(&mut c, header("m", name, 1), shape_samples(t))
        .await
        .unwrap();
    terminal(&watch_all(&mut c, &task.id, 0).await)
}

/// Issue: restarting on the same data dir spelled differently deleted every bundle and
/// checkpoint. Rows now hold data-dir-relative paths, so a moved data dir just works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_or_respelled_data_dir_keeps_every_file() {
    let root = tempfile::tempdir().unwrap();
    let first = root.path().join("a/d");
    let app = spawn_app_in(String::new(), &first, vec![]).await;
    let t = train_one(&app, "t1", 0).await;
    assert_eq!(t.state, pb::TaskState::Succeeded as i32, "{t:?}");
    app.stop().await;
    let before: HashSet<PathBuf> = files(&first)
        .into_iter()
        .filter_map(|p| p.strip_prefix(&first).ok().map(Path::to_path_buf))
        .filter(|p| !p.starts_with("ctp.sqlite") && !p.to_string_lossy().starts_with("ctp.sqlite"))
        .collect();
    assert!(before.iter().any(|p| p.starts_with("tasks")), "{before:?}");
    assert!(
        before.iter().any(|p| p.starts_with("versions")),
        "{before:?}"
    );

    // Moved (as a restored backup would be), and reached through `..` and `.`.
    std::fs::rename(root.path().join("a"), root.path().join("b")).unwrap();
    let moved = root.path().join("b/../b/./d");
    let app = spawn_app_in(String::new(), &moved, vec![]).await;
    let real = root.path().join("b/d");
    for rel in &before {
        assert!(
            real.join(rel).exists(),
            "{} was removed at startup",
            rel.display()
        );
    }
    assert!(!real.join("quarantine").exists(), "nothing is unreferenced");
    let mut c = app.client.clone();
    let e = c
        .embed(pb::EmbedRequest {
            model: "m".into(),
            texts: vec!["a red circle".into()],
            ..Default::default()
        })
        .await
        .expect("the version's checkpoint is still there")
        .into_inner();
    assert_eq!(e.version, 1);
    // The next task reads its parent's checkpoint and trains from it.
    let t = train_one(&app, "t2", 1).await;
    assert_eq!(t.state, pb::TaskState::Succeeded as i32, "{t:?}");
    assert_eq!(t.produced_version, Some(2));
    app.stop().await;
}

/// Issue: the same idempotency key with a different payload returned the old task with OK and
/// left the new upload's bundle on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_reused_with_other_content_is_refused() {
    let app = spawn_app_with(Db::Sqlite, vec![("CTP__DISPATCH".into(), "false".into())]).await;
    let mut c = app.client.clone();
    let keyed = |name: &str| {
        let mut h = header("m", name, 1);
        h.idempotency_key = Some("upload-7".into());
        h
    };
    let first = submit(&mut c, keyed("t"), shape_samples(0)).await.unwrap();
    let again = submit(&mut c, keyed("t"), shape_samples(0)).await.unwrap();
    assert_eq!(again.id, first.id, "an exact retry returns the first task");
    let bundles = files(&app.data_dir.join("tasks"));
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    for (name, t) in [("t", 1), ("other name", 0)] {
        let err = submit(&mut c, keyed(name), shape_samples(t))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(
            err.message().contains("\"upload-7\"") && err.message().contains(&first.id),
            "{}",
            err.message()
        );
    }
    assert_eq!(
        files(&app.data_dir.join("tasks")),
        bundles,
        "nothing of the refused uploads stays"
    );
    app.stop().await;
}

/// Issue: a client that cancelled its SubmitTask left a complete bundle behind. However the
/// cancellation falls (mid-stream, or just after the last message), afterwards every bundle
/// belongs to a task and no temp file remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_uploads_leave_nothing_behind() {
    let app = spawn_app_with(Db::Sqlite, vec![("CTP__DISPATCH".into(), "false".into())]).await;
    // Mid-stream: the client's stream is still open when it gives up.
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    for r in requests(header("m", "mid", 1), shape_samples(0), 4) {
        tx.send(r).await.unwrap();
    }
    let mut c = app.client.clone();
    let call = tokio::spawn(async move {
        c.submit_task(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    call.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(tx);
    assert!(
        files(&app.data_dir.join("tasks")).is_empty(),
        "mid-stream cancel kept a file"
    );

    // Just after the end of the stream: each upload either became a task or left nothing.
    for i in 0..12u64 {
        let mut samples = shape_samples(0);
        samples[0].caption = format!("a shape, upload {i}").into_bytes();
        let reqs = requests(header("m", &format!("late-{i}"), 1), samples, 16);
        let mut c = app.client.clone();
        let call = tokio::spawn(async move { c.submit_task(tokio_stream::iter(reqs)).await });
        tokio::time::sleep(Duration::from_micros(500 * i)).await;
        call.abort();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tasks = app
        .client
        .clone()
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tasks;
    let bundles = files(&app.data_dir.join("tasks"));
    assert!(
        bundles
            .iter()
            .all(|p| !p.to_string_lossy().ends_with(".tmp")),
        "{bundles:?}"
    );
    assert_eq!(
        bundles.len(),
        tasks.len(),
        "every bundle belongs to a task: {bundles:?} vs {} tasks",
        tasks.len()
    );
    app.stop().await;
}

/// A string field that is not UTF-8 is the client's fault on every RPC (issue: Embed answered
/// INTERNAL while SubmitTask said INVALID_ARGUMENT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_invalid_argument_on_every_rpc() {
    /// `EmbedRequest` with `texts` (tag 4) as raw bytes, so it can carry invalid UTF-8.
    #[derive(Clone, PartialEq, prost::Message)]
    struct RawEmbed {
        #[prost(string, tag = "1")]
        model: String,
        #[prost(bytes = "vec", repeated, tag = "4")]
        texts: Vec<Vec<u8>>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct RawGetTask {
        #[prost(bytes = "vec", tag = "1")]
        task_id: Vec<u8>,
    }
    let app = spawn_app(Db::Sqlite).await;
    let channel = tonic::transport::Endpoint::from_shared(app.addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = |m: &'static str| tonic::codegen::http::uri::PathAndQuery::from_static(m);
    let err = grpc
        .unary::<_, pb::EmbedResponse, _>(
            tonic::Request::new(RawEmbed {
                model: "m".into(),
                texts: vec![b"ok".to_vec(), vec![0xff, 0xfe]],
            }),
            path("/ctp.v1.ContinualTrainer/Embed"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("UTF-8"), "{}", err.message());
    grpc.ready().await.unwrap();
    let err = grpc
        .unary::<_, pb::Task, _>(
            tonic::Request::new(RawGetTask {
                task_id: vec![b'x', 0xc3],
            }),
            path("/ctp.v1.ContinualTrainer/GetTask"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    app.stop().await;
}

/// Issue: the drain's last WatchTask event was a Terminal carrying RUNNING. Now it is a
/// ServerClosing event, the stream ends UNAVAILABLE, and no Terminal is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_daemon_says_server_closing_not_terminal() {
    let app = spawn_app(Db::Sqlite).await;
    let mut c = app.client.clone();
    let task = submit(&mut c, header("m", "long", 200), shape_samples(0))
        .await
        .unwrap();
    let mut stream = c
        .watch_task(pb::WatchTaskRequest {
            task_id: task.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(120), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if matches!(ev.event, Some(pb::task_event::Event::Progress(_))) {
            break;
        }
    }
    let stop = tokio::spawn(app.stop());
    let mut last = None;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .unwrap()
        {
            Ok(Some(ev)) => last = Some(ev),
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    let last = last.expect("events before the close");
    match &last.event {
        Some(pb::task_event::Event::ServerClosing(sc)) => {
            assert!(sc.message.contains("after_seq="), "{}", sc.message)
        }
        other => panic!("last event {other:?}"),
    }
    assert_eq!(end.map(|s| s.code()), Some(Code::Unavailable));
    stop.await.unwrap();
}
