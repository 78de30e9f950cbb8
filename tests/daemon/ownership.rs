//! One owner per data dir (issue #24 §1): a second daemon on a SQLite data dir refuses to
//! start and names the holder; daemons that share a data dir on purpose (one Postgres) start
//! side by side, and the second one's startup sweep leaves the first one's upload in flight
//! alone.
use std::time::Duration;

use ctp::app::Application;
use ctp_api::pb;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_a_sqlite_data_dir_refuses_to_start_and_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let first = spawn_app_in(String::new(), dir.path(), vec![]).await;
    let err = Application::build(settings(String::new(), dir.path(), vec![]))
        .await
        .err()
        .expect("the second daemon must not start");
    let line = format!("{err:#}");
    assert!(!line.contains('\n'), "one line: {line}");
    for part in [
        std::fs::canonicalize(dir.path())
            .unwrap()
            .display()
            .to_string(),
        format!("pid {}", std::process::id()),
        "on host".into(),
        "since".into(),
    ] {
        assert!(line.contains(&part), "{part:?} missing from: {line}");
    }
    // The first daemon is unharmed and still serves.
    let mut c = connect(&first.addr).await;
    submit(&mut c, header("m", "t", 1), shape_samples(0))
        .await
        .unwrap();
    first.stop().await;
    // Released when it stopped: the next daemon takes the data dir.
    spawn_app_in(String::new(), dir.path(), vec![])
        .await
        .stop()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_starting_on_a_shared_data_dir_leaves_an_upload_in_flight_alone() {
    if pg::skip_requested() {
        return;
    }
    let url = pg::PgServer::shared().fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let first = spawn_app_in(url.clone(), dir.path(), vec![]).await;
    // An upload whose header and first chunk are in, the rest still to come.
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut msgs = requests(header("m", "t", 1), shape_samples(0), 5).into_iter();
    tx.send(msgs.next().unwrap()).await.unwrap();
    tx.send(msgs.next().unwrap()).await.unwrap();
    let mut c = connect(&first.addr).await;
    let upload = tokio::spawn(async move {
        c.submit_task(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner())
    });
    let tmp_files = || {
        std::fs::read_dir(dir.path().join("tasks"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                    .count()
            })
            .unwrap_or(0)
    };
    for _ in 0..100 {
        if tmp_files() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tmp_files(), 1, "the upload is being written");
    // A peer on the same Postgres and data dir starts now; its startup sweep runs.
    let second = spawn_app_in(url, dir.path(), vec![]).await;
    assert_eq!(
        tmp_files(),
        1,
        "the peer's sweep left the upload's temp file alone"
    );
    for m in msgs {
        tx.send(m).await.unwrap();
    }
    drop(tx);
    let task: pb::Task = upload.await.unwrap().unwrap();
    assert_eq!(task.n_train + task.n_eval, shape_samples(0).len() as u64);
    second.stop().await;
    first.stop().await;
}
