//! `ctpd` as a separate process: SIGKILL while a task trains, restart, and the task finishes
//! from its last mid-task checkpoint (not from step 0) with consistent versions; SIGTERM
//! checkpoints at the next step and the restarted daemon resumes exactly there.
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::*;
use ctp_api::pb;

fn start(dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ctpd"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--device", "cpu"])
        .arg("--data-dir")
        .arg(dir)
        .env("CTP__TRAINING__CHECKPOINT_EVERY", "3")
        .env("CTP__ENGINE__THREADS", "1")
        .env(
            "CTP__ENGINE__WEIGHTS_DIR",
            format!("{:?}", assets::weights().display().to_string()),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits for progress past `step`; returns the last progress step seen.
async fn wait_for_step(addr: &str, task_id: &str, step: u64) -> u64 {
    let mut c = connect(addr).await;
    let mut s = c
        .watch_task(pb::WatchTaskRequest {
            task_id: task_id.into(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(120), s.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(pb::task_event::Event::Progress(p)) = &ev.event {
            if p.step >= step {
                return p.step;
            }
        }
        assert!(
            !matches!(ev.event, Some(pb::task_event::Event::Terminal(_))),
            "task ended before the kill"
        );
    }
}

/// After the restart: the resume point, and the first progress step the new run reported.
fn resume_point(events: &[pb::TaskEvent]) -> (u64, u64) {
    let progress: Vec<&pb::Progress> = events
        .iter()
        .filter_map(|e| {
            if let Some(pb::task_event::Event::Progress(p)) = &e.event {
                Some(p)
            } else {
                None
            }
        })
        .collect();
    let resumed = progress
        .iter()
        .find(|p| p.resumed_from_step.is_some())
        .expect("a resumed progress event");
    (resumed.resumed_from_step.unwrap(), resumed.step)
}

async fn finish_and_check(dir: &std::path::Path, addr: &str, task_id: &str) -> Vec<pb::TaskEvent> {
    let mut c = connect(addr).await;
    wait_serving(addr).await;
    let events = watch_all(&mut c, task_id, 0).await;
    let t = terminal(&events);
    assert_eq!(t.state, pb::TaskState::Succeeded as i32, "{}", t.error);
    let v = c
        .get_version(pb::GetVersionRequest {
            model: "m".into(),
            version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.version, 1, "exactly one version");
    // The version file of the claim that finished (its name carries the claim's epoch),
    // and no other.
    let files: Vec<_> = std::fs::read_dir(dir.join("versions"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert!(file
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(task_id));
    let sha = ctp::trainer::checkpoint::sha256_file(file).unwrap();
    assert_eq!(
        sha, v.checkpoint_sha256,
        "the version row points at the complete file"
    );
    let resume_left: Vec<_> = std::fs::read_dir(dir.join("resume"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(
        resume_left.is_empty(),
        "resume checkpoints are cleaned up: {resume_left:?}"
    );
    events
}

/// A fresh daemon process with one long `tiny` task queued on it.
async fn start_training() -> (tempfile::TempDir, u16, String, Child, pb::Task) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let child = start(dir.path(), port);
    let mut c = connect(&addr).await;
    wait_serving(&addr).await;
    let task = submit(&mut c, header("m", "squares", 60), shape_samples(0))
        .await
        .unwrap();
    (dir, port, addr, child, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_task_resumes_from_checkpoint() {
    let (dir, port, addr, mut child, task) = start_training().await;
    let seen = wait_for_step(&addr, &task.id, 8).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let mut child = start(dir.path(), port);
    let events = finish_and_check(dir.path(), &addr, &task.id).await;
    let (from, first) = resume_point(&events);
    // Not from step 0, and not past the end; the kill lands a few steps after `seen` at most
    // (the watch stream may trail training), so only the lower bound is exact.
    assert!(
        (3..120).contains(&from),
        "resumed from step {from} (killed after progress step {seen})"
    );
    assert_eq!(
        from % 3,
        0,
        "resume points are the every-3-steps checkpoints"
    );
    assert_eq!(first, from + 1);
    assert!(events.iter().any(|e| matches!(&e.event, Some(pb::task_event::Event::Log(l)) if l.message.contains(&format!("step-{from} checkpoint")))));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_checkpoints_and_restart_resumes_there() {
    let (dir, port, addr, mut child, task) = start_training().await;
    let seen = wait_for_step(&addr, &task.id, 4).await;
    // SIGTERM to a child we own and have not yet waited for.
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit: {status:?}");

    let mut child = start(dir.path(), port);
    let events = finish_and_check(dir.path(), &addr, &task.id).await;
    let (from, first) = resume_point(&events);
    assert!(
        from >= seen,
        "resumed from step {from}, the pause point (progress was at {seen})"
    );
    assert_eq!(first, from + 1);
    assert!(events.iter().any(|e| matches!(&e.event, Some(pb::task_event::Event::Log(l)) if l.message.contains("daemon stopping"))));
    child.kill().unwrap();
    child.wait().unwrap();
}
