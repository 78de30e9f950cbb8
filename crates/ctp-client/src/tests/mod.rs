//! `ctpctl` against an in-process mock daemon: the real gRPC stack, scripted answers.
//! Covers what matters most and cannot be seen offline otherwise: the upload stream's
//! shape, the bearer token, reconnecting watches, and exit codes.
use std::sync::Arc;

use clap::Parser;
use tokio::net::TcpListener;

use super::*;
use ctp_api::pb;
use ctp_api::pb::task_event::Event;

mod export;
mod mock;
use mock::{serve, Mock};

fn cli(addr: &str, rest: &[&str]) -> Cli {
    let mut argv = vec!["ctpctl", "--addr", addr];
    argv.extend_from_slice(rest);
    Cli::parse_from(argv)
}

#[tokio::test]
async fn watch_reconnects_without_losing_or_repeating_events() {
    let mock = Arc::new(Mock::default());
    let addr = serve(mock.clone()).await;
    let conn = Connection::open(&cli(&addr, &["health"])).await.unwrap();
    let mut client = conn.client();
    let mut seen = watch::Collect::default();
    let outcome = watch::follow(&mut client, "flaky", 0, 5, &mut seen)
        .await
        .unwrap();
    assert_eq!(outcome.produced_version, Some(2));
    assert_eq!(*mock.watch_cursors.lock().unwrap(), vec![0, 3, 4]);
    let seqs: Vec<u64> = seen
        .0
        .iter()
        .filter(|e| {
            !matches!(
                e.event,
                Some(Event::Snapshot(_)) | Some(Event::Heartbeat(_))
            )
        })
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    assert!(outcome.into_result().is_ok());
}

#[tokio::test]
async fn watch_exit_codes() {
    let mock = Arc::new(Mock::default());
    let addr = serve(mock).await;
    let run = |task: &str| execute_owned(cli(&addr, &["--json", "watch", task]));
    assert_eq!(
        run("failed").await.unwrap_err().exit_code(),
        error::EXIT_TASK_FAILED
    );
    let cancelled = run("done").await.unwrap_err();
    assert_eq!(cancelled.exit_code(), error::EXIT_TASK_FAILED);
    assert_eq!(cancelled.to_string(), "task ended CANCELLED");
    let missing = run("nope").await.unwrap_err();
    assert_eq!(missing.exit_code(), error::EXIT_REJECTED);
    assert_eq!(missing.to_string(), "NOT_FOUND: no such task");
    assert_eq!(run("flaky").await.unwrap(), error::EXIT_OK);
}

async fn execute_owned(cli: Cli) -> CliResult<u8> {
    execute(&cli).await
}

#[tokio::test]
async fn rejections_health_and_unreachable_daemon() {
    let mock = Arc::new(Mock::default());
    let addr = serve(mock).await;
    let e = execute_owned(cli(&addr, &["cancel", "x"]))
        .await
        .unwrap_err();
    assert_eq!(
        (e.exit_code(), e.to_string().as_str()),
        (2, "FAILED_PRECONDITION: task already finished")
    );
    let e = execute_owned(cli(&addr, &["rollback", "--model", "m", "--to", "1"]))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "ABORTED: head moved");
    assert_eq!(
        execute_owned(cli(&addr, &["--json", "health"]))
            .await
            .unwrap(),
        0
    );
    // A port nobody listens on: exit 3.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let e = execute_owned(cli(&dead, &["tasks"])).await.unwrap_err();
    assert_eq!(e.exit_code(), error::EXIT_UNAVAILABLE);
    assert!(
        e.to_string().starts_with("UNAVAILABLE: cannot connect to"),
        "{e}"
    );
}

#[tokio::test]
async fn submit_streams_header_then_chunks_with_token() {
    let mock = Arc::new(Mock::default());
    let addr = serve(mock.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("data.tar");
    let mut w = ctp_datasets::webdataset::ShardWriter::create(&shard).unwrap();
    for i in 0..5u8 {
        let mut image = b"\x89PNG\r\n\x1a\n".to_vec();
        image.extend(vec![i; 100]);
        w.append(&ctp_datasets::DatasetSample {
            image,
            caption: format!("caption {i}"),
            id: format!("s{i}"),
            split: Some(if i == 0 {
                ctp_datasets::Split::Eval
            } else {
                ctp_datasets::Split::Train
            }),
        })
        .unwrap();
    }
    w.finish().unwrap();
    let path = shard.to_str().unwrap();
    let args = [
        "--token",
        "tok",
        "--json",
        "submit",
        "--model",
        "m",
        "--name",
        "n",
        "--epochs",
        "2",
        "--chunk-bytes",
        "300",
        path,
    ];
    assert_eq!(execute_owned(cli(&addr, &args)).await.unwrap(), 0);
    assert_eq!(*mock.tokens.lock().unwrap(), vec!["Bearer tok".to_string()]);
    let msgs = mock.submitted.lock().unwrap().clone();
    use pb::submit_task_request::Msg;
    let Some(Msg::Header(h)) = &msgs[0].msg else {
        panic!("first message is not the header")
    };
    assert_eq!(
        (h.model.as_str(), h.task_name.as_str(), h.expected_samples),
        ("m", "n", Some(5))
    );
    assert!(matches!(
        h.eval_split.as_ref().unwrap().kind,
        Some(pb::eval_split::Kind::PerSample(_))
    ));
    assert_eq!(h.settings.as_ref().unwrap().epochs, Some(2));
    let samples: Vec<pb::Sample> = msgs[1..]
        .iter()
        .flat_map(|m| match &m.msg {
            Some(Msg::Chunk(c)) => c.samples.clone(),
            _ => panic!("header after the first message"),
        })
        .collect();
    assert!(msgs.len() > 2, "chunked into several messages");
    assert_eq!(samples.len(), 5);
    assert_eq!(samples[0].split, pb::Split::Eval as i32);
    assert_eq!(samples[3].caption, b"caption 3");
    // A malformed dataset fails locally (exit 1) before anything is sent.
    std::fs::write(dir.path().join("bad.jsonl"), "{oops").unwrap();
    let bad = dir.path().join("bad.jsonl");
    let e = execute_owned(cli(
        &addr,
        &[
            "submit",
            "--model",
            "m",
            "--name",
            "n",
            bad.to_str().unwrap(),
        ],
    ))
    .await
    .unwrap_err();
    assert_eq!(e.exit_code(), error::EXIT_LOCAL);
    assert!(e.to_string().contains("bad.jsonl:1: invalid JSON"), "{e}");
}

#[tokio::test]
async fn search_pins_the_query_version() {
    let mock = Arc::new(Mock::default());
    let addr = serve(mock.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    for (name, first) in [("a.png", 9u8), ("b.png", 1), ("c.jpg", 0)] {
        std::fs::write(dir.path().join(name), [first, 0, 0]).unwrap();
    }
    let d = dir.path().to_str().unwrap();
    let args = [
        "--json", "search", "--model", "m", "--query", "red", "--top-k", "2", d,
    ];
    assert_eq!(execute_owned(cli(&addr, &args)).await.unwrap(), 0);
    let calls = mock.embeds.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].texts.len(), calls[0].version), (1, None));
    assert_eq!((calls[1].images.len(), calls[1].version), (3, Some(7)));
}

/// `backup --to` sends the path as written (it is on the daemon's host); a relative one is
/// refused locally, a daemon refusal exits 2.
#[tokio::test]
async fn backup_sends_the_daemon_side_path() {
    let mock = Arc::new(Mock::default());
    let addr = serve(mock.clone()).await;
    let run = |to: &str| execute_owned(cli(&addr, &["--json", "backup", "--to", to]));
    assert_eq!(run("/srv/backups/ctp-1").await.unwrap(), error::EXIT_OK);
    let e = run("relative/dir").await.unwrap_err();
    assert_eq!(e.exit_code(), error::EXIT_LOCAL);
    assert!(e.to_string().contains("not an absolute path"), "{e}");
    let e = run("/full").await.unwrap_err();
    assert_eq!(e.exit_code(), error::EXIT_REJECTED);
    assert!(
        e.to_string()
            .starts_with("FAILED_PRECONDITION: backup target /full"),
        "{e}"
    );
    let sent: Vec<String> = mock
        .backups
        .lock()
        .unwrap()
        .iter()
        .map(|b| b.path.clone())
        .collect();
    assert_eq!(sent, vec!["/srv/backups/ctp-1", "/full"]);
    let line = backup::describe(&pb::BackupResponse {
        path: "/b".into(),
        files: 2,
        bytes: 10,
        schema_version: 5,
        created_at: None,
        database_sha256: String::new(),
    });
    assert!(
        line.contains("ctpd restore --from /b --data-dir NEW"),
        "{line}"
    );
}

#[test]
fn command_line_parses() {
    let c = Cli::parse_from([
        "ctpctl", "emojicl", "export", "--out", "d", "--tasks", "0,2", "--format", "jsonl",
    ]);
    let Command::Emojicl {
        command: args::EmojiclCommand::Export(a),
    } = c.command
    else {
        panic!()
    };
    assert_eq!(a.tasks, vec![0, 2]);
    assert_eq!(a.format, args::FormatArg::Jsonl);
    let c = Cli::parse_from([
        "ctpctl", "embed", "--model", "m", "--image", "a.png", "--image", "b.png", "--text", "hi",
    ]);
    let Command::Embed(e) = c.command else {
        panic!()
    };
    assert_eq!((e.images.len(), e.texts.len()), (2, 1));
    assert_eq!(
        Cli::parse_from(["ctpctl", "tasks"]).addr,
        "http://127.0.0.1:50051"
    );
    assert!(Cli::try_parse_from(["ctpctl", "submit", "x"]).is_err());
    assert!(Cli::try_parse_from(["ctpctl", "tasks", "--state", "bogus"]).is_err());
    use clap::CommandFactory;
    let help = Cli::command().render_long_help().to_string();
    assert!(help.contains("Exit codes") && help.contains("4  the watched task ended FAILED"));
}

/// `verify` asks the daemon, prints its lines, and exits 6 on problems.
#[tokio::test]
async fn verify_exits_six_on_problems() {
    let mock = Arc::new(Mock::default());
    let addr = serve(mock.clone()).await;
    assert_eq!(
        execute_owned(cli(&addr, &["verify"])).await.unwrap(),
        error::EXIT_OK
    );
    assert_eq!(
        execute_owned(cli(&addr, &["verify", "--load-weights"]))
            .await
            .unwrap(),
        error::EXIT_UNSOUND
    );
    let text = backup::verify_summary(&pb::VerifyReport {
        sound: false,
        versions: 2,
        problems: vec!["version m/2: x".into()],
        unreferenced: vec!["versions/s".into()],
        loaded_weights: true,
        ..Default::default()
    });
    assert!(
        text.starts_with(
            "checked 0 models, 2 versions, 0 tasks, 0 resume points (weights loaded): 1 problems\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("problem: version m/2: x\nunreferenced: versions/s\n"),
        "{text}"
    );
}

/// `priority` sends the level; `quota` prints the caller's lines.
#[tokio::test]
async fn priority_and_quota_commands() {
    let mock = Arc::new(Mock::default());
    let addr = serve(mock.clone()).await;
    let args = ["--json", "priority", "t1", "high"];
    assert_eq!(
        execute_owned(cli(&addr, &args)).await.unwrap(),
        error::EXIT_OK
    );
    assert_eq!(
        execute_owned(cli(&addr, &["quota"])).await.unwrap(),
        error::EXIT_OK
    );
    let bad = Cli::try_parse_from(["ctpctl", "--addr", &addr, "priority", "t1", "urgent"]);
    assert!(bad.is_err(), "unknown level");
}
