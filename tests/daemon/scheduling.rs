//! Sharing engines (issue #26 §1–§2): a high-priority task preempts a low one at a step
//! boundary, and the low one later finishes bitwise as if it had never stopped; the submit
//! scope cannot ask for high priority; an admin changes a queued task's priority; quotas per
//! token refuse with RESOURCE_EXHAUSTED naming the quota, the use and the limit, and a byte
//! quota stops an upload as it streams, keeping nothing.
use std::collections::BTreeMap;
use std::time::Duration;

use ctp_api::pb::{self, continual_trainer_client::ContinualTrainerClient};
use tonic::transport::Channel;
use tonic::Code;

use crate::helpers::*;

fn with_priority(mut h: pb::TaskHeader, p: pb::TaskPriority) -> pb::TaskHeader {
    h.priority = p as i32;
    h
}

/// Losses per step, the latest report of each step (a resumed run repeats steps after its
/// checkpoint), and the preemption events.
fn losses_and_preemptions(
    events: &[pb::TaskEvent],
) -> (BTreeMap<u64, BTreeMap<String, u64>>, Vec<pb::Preempted>) {
    let mut losses = BTreeMap::new();
    let mut preempted = Vec::new();
    for e in events {
        match &e.event {
            Some(pb::task_event::Event::Progress(p)) if !p.losses.is_empty() => {
                let bits = p
                    .losses
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_bits()))
                    .collect();
                losses.insert(p.step, bits);
            }
            Some(pb::task_event::Event::Preempted(p)) => preempted.push(p.clone()),
            _ => {}
        }
    }
    (losses, preempted)
}

async fn embed_bits(c: &mut ContinualTrainerClient<Channel>, model: &str) -> Vec<Vec<u32>> {
    let r = c
        .embed(pb::EmbedRequest {
            model: model.into(),
            version: Some(1),
            texts: vec!["a red circle".into(), "a blue square".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    r.text_embeddings
        .iter()
        .map(|e| e.values.iter().map(|v| v.to_bits()).collect())
        .collect()
}

pub(crate) async fn wait_progress(c: &mut ContinualTrainerClient<Channel>, task: &str, step: u64) {
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
            .expect("no progress within two minutes")
            .unwrap()
            .expect("the stream ended first");
        match ev.event {
            Some(pb::task_event::Event::Progress(p)) if p.step >= step => return,
            Some(pb::task_event::Event::Terminal(t)) => panic!("task {task} ended first: {t:?}"),
            _ => {}
        }
    }
}

const SCHEDULER: [(&str, &str); 2] = [
    ("CTP__SCHEDULER__PREEMPT_CHECK_SECONDS", "1"),
    ("CTP__SCHEDULER__MIN_RUN_SECONDS", "1"),
];

fn env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    SCHEDULER
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_task_preempts_a_low_one_which_resumes_bitwise() {
    const EPOCHS: u32 = 80;
    let tmp = tempfile::tempdir().unwrap();
    let app = spawn_app_in(String::new(), &tmp.path().join("a"), env(&[])).await;
    let mut c = app.client.clone();
    let low = submit(
        &mut c,
        with_priority(header("m-low", "low", EPOCHS), pb::TaskPriority::Low),
        shape_samples(0),
    )
    .await
    .unwrap();
    assert_eq!(low.priority, pb::TaskPriority::Low as i32);
    assert_eq!(low.submitted_by, "anonymous");
    wait_progress(&mut c, &low.id, 2).await;
    let high = submit(
        &mut c,
        with_priority(header("m-high", "urgent", 1), pb::TaskPriority::High),
        shape_samples(1),
    )
    .await
    .unwrap();
    let high_end = terminal(&watch_all(&mut c, &high.id, 0).await);
    assert_eq!(
        high_end.state,
        pb::TaskState::Succeeded as i32,
        "{}",
        high_end.error
    );
    let events = watch_all(&mut c, &low.id, 0).await;
    let end = terminal(&events);
    assert_eq!(end.state, pb::TaskState::Succeeded as i32, "{}", end.error);
    let (losses, preempted) = losses_and_preemptions(&events);
    assert_eq!(preempted.len(), 1, "{preempted:?}");
    assert_eq!(
        (preempted[0].count, preempted[0].by_task_id.as_str()),
        (1, high.id.as_str())
    );
    let got = |id: &str| {
        let mut c = c.clone();
        let id = id.to_string();
        async move {
            c.get_task(pb::GetTaskRequest { task_id: id })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let (low_row, high_row) = (got(&low.id).await, got(&high.id).await);
    assert_eq!(low_row.preemptions, 1);
    assert!(
        high_row.finished_at.unwrap().seconds <= low_row.finished_at.unwrap().seconds,
        "the high task finished while the low one waited"
    );
    let preempted_embeddings = embed_bits(&mut c, "m-low").await;
    app.stop().await;

    // The same task, never interrupted, on a fresh daemon.
    let app = spawn_app_in(String::new(), &tmp.path().join("b"), env(&[])).await;
    let mut c = app.client.clone();
    let again = submit(
        &mut c,
        with_priority(header("m-low", "low", EPOCHS), pb::TaskPriority::Low),
        shape_samples(0),
    )
    .await
    .unwrap();
    let events = watch_all(&mut c, &again.id, 0).await;
    let (straight, none) = losses_and_preemptions(&events);
    assert!(none.is_empty());
    assert_eq!(losses.len(), straight.len());
    assert_eq!(
        losses, straight,
        "the loss curve is bitwise the uninterrupted one"
    );
    assert_eq!(embed_bits(&mut c, "m-low").await, preempted_embeddings);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_needs_admin_and_an_admin_reprioritises_queued_tasks() {
    let tokens = r#"[{name="team-a", token="submit-token-0123456789", scopes=["submit"]}, {name="ops", token="admin-token-0123456789", scopes=["admin"]}]"#;
    let tmp = tempfile::tempdir().unwrap();
    // Accept-only: tasks stay queued.
    let app = spawn_app_in(
        String::new(),
        tmp.path(),
        env(&[("CTP__AUTH__TOKENS", tokens), ("CTP__DISPATCH", "false")]),
    )
    .await;
    let authed = |t: &'static str| {
        move |mut r: tonic::Request<()>| {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
            Ok(r)
        }
    };
    let channel = tonic::transport::Endpoint::from_shared(app.addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut team = ContinualTrainerClient::with_interceptor(
        channel.clone(),
        authed("submit-token-0123456789"),
    );
    let mut ops =
        ContinualTrainerClient::with_interceptor(channel, authed("admin-token-0123456789"));
    let reqs = |p| requests(with_priority(header("m", "t", 1), p), shape_samples(0), 5);
    let err = team
        .submit_task(tokio_stream::iter(reqs(pb::TaskPriority::High)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("header.priority high needs the admin scope"),
        "{}",
        err.message()
    );
    let t = team
        .submit_task(tokio_stream::iter(reqs(pb::TaskPriority::Low)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (t.priority, t.submitted_by.as_str()),
        (pb::TaskPriority::Low as i32, "team-a")
    );
    let set = |p: pb::TaskPriority| pb::SetTaskPriorityRequest {
        task_id: t.id.clone(),
        priority: p as i32,
    };
    let err = team
        .set_task_priority(set(pb::TaskPriority::High))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let changed = ops
        .set_task_priority(set(pb::TaskPriority::High))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.priority, pb::TaskPriority::High as i32);
    ops.cancel_task(pb::CancelTaskRequest {
        task_id: t.id.clone(),
    })
    .await
    .unwrap();
    let err = ops
        .set_task_priority(set(pb::TaskPriority::Low))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = ops
        .set_task_priority(pb::SetTaskPriorityRequest {
            task_id: "nope".into(),
            priority: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_with_the_quota_the_use_and_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let quota = |q: &str| ("CTP__AUTH__ANONYMOUS_QUOTA".to_string(), q.to_string());
    let accept_only = ("CTP__DISPATCH".to_string(), "false".to_string());

    // One task queued at a time.
    let mut e = env(&[]);
    e.extend([quota("{max_queued_tasks = 1}"), accept_only.clone()]);
    let app = spawn_app_in(String::new(), &dir, e).await;
    let mut c = app.client.clone();
    let first = submit(&mut c, header("m", "first", 1), shape_samples(0))
        .await
        .unwrap();
    let err = submit(&mut c, header("m", "second", 1), shape_samples(1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains(
            "quota max_queued_tasks of caller \"anonymous\" exceeded: 1 tasks queued or running, the limit is 1"
        ),
        "{}",
        err.message()
    );
    app.stop().await;
    let bundles = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir.join("tasks"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    let stored = std::fs::metadata(&bundles()[0]).unwrap().len();

    // Room for half another task: its upload is refused as it streams, and nothing is kept.
    let mut e = env(&[]);
    e.extend([
        quota(&format!("{{max_stored_bytes = {}}}", stored + stored / 2)),
        accept_only,
    ]);
    let app = spawn_app_in(String::new(), &dir, e).await;
    let mut c = app.client.clone();
    let err = submit(&mut c, header("m", "second", 1), shape_samples(1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let msg = err.message();
    assert!(
        msg.contains("quota max_stored_bytes")
            && msg.contains("sample ")
            && msg.contains(&format!("on top of {stored} stored")),
        "{msg}"
    );
    assert_eq!(
        bundles().len(),
        1,
        "only the first task's bundle: {:?}",
        bundles()
    );
    let q = c
        .get_quota(pb::GetQuotaRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.caller, "anonymous");
    let (queued, bytes) = (q.queued_tasks.unwrap(), q.stored_bytes.unwrap());
    assert_eq!((queued.used, queued.limit), (1.0, None));
    assert_eq!(
        (bytes.used, bytes.limit),
        (stored as f64, Some((stored + stored / 2) as f64))
    );
    app.stop().await;

    // Training seconds: the queued task trains (charged from its step times); then the
    // next submission is refused.
    let mut e = env(&[]);
    e.push(quota("{max_training_seconds_per_day = 0.000001}"));
    let app = spawn_app_in(String::new(), &dir, e).await;
    let mut c = app.client.clone();
    let end = terminal(&watch_all(&mut c, &first.id, 0).await);
    assert_eq!(end.state, pb::TaskState::Succeeded as i32, "{}", end.error);
    let err = submit(&mut c, header("m", "next", 1), shape_samples(1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("max_training_seconds_per_day"),
        "{}",
        err.message()
    );
    let q = c
        .get_quota(pb::GetQuotaRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(q.training_seconds_per_day.unwrap().used > 0.0, "{q:?}");
    app.stop().await;
}

/// On Postgres "every engine is busy" means every daemon on the database: with two daemons
/// each training a low task, a high task preempts exactly one (the younger submission),
/// runs, and the preempted task goes back to the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_one_of_two_busy_daemons_yields() {
    use crate::pg_daemons::{Daemon, SERIAL};
    if pg::skip_requested() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let url = pg::PgServer::shared().fresh_database().await;
    let extra: Vec<(String, String)> = env(&[]);
    let daemons: Vec<Daemon> = (0..2)
        .map(|i| {
            Daemon::start_with(
                dir.path(),
                &url,
                free_port(),
                10,
                Some(&format!("w{i}")),
                &extra,
            )
        })
        .collect();
    let mut c = connect(&daemons[0].addr).await;
    wait_serving(&daemons[0].addr).await;
    wait_serving(&daemons[1].addr).await;
    let mut low = Vec::new();
    for m in ["a", "b"] {
        let t = submit(
            &mut c,
            with_priority(header(m, "low", 5000), pb::TaskPriority::Low),
            shape_samples(0),
        )
        .await
        .unwrap();
        low.push(t.id);
    }
    for id in &low {
        wait_progress(&mut c, id, 2).await;
    }
    let high = submit(
        &mut c,
        with_priority(header("c", "urgent", 1), pb::TaskPriority::High),
        shape_samples(1),
    )
    .await
    .unwrap();
    let end = terminal(&watch_all(&mut c, &high.id, 0).await);
    assert_eq!(end.state, pb::TaskState::Succeeded as i32, "{}", end.error);
    let mut counts = Vec::new();
    for id in &low {
        let t = c
            .get_task(pb::GetTaskRequest {
                task_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        counts.push(t.preemptions);
        c.cancel_task(pb::CancelTaskRequest {
            task_id: id.clone(),
        })
        .await
        .unwrap();
    }
    assert_eq!(counts, vec![0, 1], "the younger low task yielded, once");
    for id in &low {
        terminal(&watch_all(&mut c, id, 0).await);
    }
}
