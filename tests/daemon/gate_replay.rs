//! Issue #10 through the daemon: the promotion gate refuses a version by itself (visible in
//! GetTask, WatchTask and ListVersions; an admin can still promote it), and replay is a task
//! setting that trains, is reported back, and is validated.
use ctp_api::pb;
use tonic::Code;

use crate::helpers::*;

async fn gate_flow(db: Db) {
    let app = spawn_app(db).await;
    let mut c = app.client.clone();
    let a = submit(&mut c, header("m", "squares", 2), shape_samples(0))
        .await
        .unwrap();
    assert_eq!(
        terminal(&watch_all(&mut c, &a.id, 0).await).produced_version,
        Some(1)
    );

    let bad = c
        .set_promotion_gate(pb::SetPromotionGateRequest {
            model: "m".into(),
            gate: Some(pb::PromotionGate {
                min_union_rm: Some(-1.0),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("gate.min_union_rm"),
        "{}",
        bad.message()
    );
    let ghost = c
        .get_promotion_gate(pb::GetPromotionGateRequest {
            model: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(ghost.code(), Code::NotFound);

    // Forgetting is at least -100 Rm points, so this gate refuses every non-root version.
    let gate = pb::PromotionGate {
        max_avg_forgetting: Some(-100.0),
        ..Default::default()
    };
    let set = c
        .set_promotion_gate(pb::SetPromotionGateRequest {
            model: "m".into(),
            gate: Some(gate),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set, gate);
    let got = c
        .get_promotion_gate(pb::GetPromotionGateRequest { model: "m".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, gate);

    let b = submit(&mut c, header("m", "discs", 2), shape_samples(1))
        .await
        .unwrap();
    let t = terminal(&watch_all(&mut c, &b.id, 0).await);
    assert_eq!(t.state, pb::TaskState::Succeeded as i32, "{}", t.error);
    assert_eq!(t.produced_version, Some(2));
    let why = t
        .rejection_reason
        .expect("the terminal event says the gate refused v2");
    assert!(why.contains("max_avg_forgetting -100"), "{why}");
    let task = c
        .get_task(pb::GetTaskRequest {
            task_id: b.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(task.rejection_reason.as_deref(), Some(why.as_str()));
    // A watcher arriving after the end sees the same outcome.
    let replayed = terminal(&watch_all(&mut c, &b.id, 0).await);
    assert_eq!(replayed.rejection_reason.as_deref(), Some(why.as_str()));

    let list = c
        .list_versions(pb::ListVersionsRequest {
            model: "m".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .versions;
    let states: Vec<(i64, i32, bool)> = list
        .iter()
        .map(|v| (v.version, v.state, v.is_head))
        .collect();
    assert_eq!(
        states,
        vec![
            (1, pb::VersionState::Accepted as i32, true),
            (2, pb::VersionState::Rejected as i32, false)
        ]
    );
    assert_eq!(list[1].rejection_reason, why);

    // The next task trains from the head, not from the rejected version.
    let d = submit(&mut c, header("m", "triangles", 1), shape_samples(2))
        .await
        .unwrap();
    watch_all(&mut c, &d.id, 0).await;
    let d = c
        .get_task(pb::GetTaskRequest {
            task_id: d.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.base_version, Some(1));

    // An admin promotes the rejected version explicitly.
    let r = c
        .rollback(pb::RollbackRequest {
            model: "m".into(),
            version: 2,
            expected_head: Some(1),
            reason: "promote v2 despite the gate".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let head = r.head.unwrap();
    assert_eq!(
        (head.version, head.is_head, head.state),
        (2, true, pb::VersionState::Rejected as i32)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_flow_sqlite() {
    gate_flow(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_flow_postgres() {
    if pg::skip_requested() {
        return;
    }
    gate_flow(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_setting_trains_and_is_validated() {
    let app = spawn_app(Db::Sqlite).await;
    let mut c = app.client.clone();
    let mut h = header("m", "squares", 1);
    let bad = submit(
        &mut c,
        with_replay(h.clone(), Some(4), Some(0.5)),
        shape_samples(0),
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("settings.replay"),
        "{}",
        bad.message()
    );

    // Replay on the first task of a lineage is allowed and replays nothing.
    h = with_replay(h, Some(2), None);
    let a = submit(&mut c, h.clone(), shape_samples(0)).await.unwrap();
    assert_eq!(
        terminal(&watch_all(&mut c, &a.id, 0).await).produced_version,
        Some(1)
    );
    h.task_name = "discs".into();
    let b = submit(&mut c, h, shape_samples(1)).await.unwrap();
    let t = terminal(&watch_all(&mut c, &b.id, 0).await);
    assert_eq!(
        (t.state, t.produced_version),
        (pb::TaskState::Succeeded as i32, Some(2)),
        "{}",
        t.error
    );
    let b = c
        .get_task(pb::GetTaskRequest {
            task_id: b.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let settings = b.settings.unwrap();
    let replay = settings.replay.unwrap();
    assert_eq!(
        (replay.samples_per_task, replay.batch_fraction),
        (Some(2), None)
    );
    // A replaying task's topology-preservation default is training.tp_weight_replay (1), not
    // the plain default (10).
    let w = settings.loss_weights.unwrap();
    assert_eq!((w.tp_cross, w.tp_intra), (Some(1.0), Some(1.0)));
    app.stop().await;
}

fn with_replay(
    mut h: pb::TaskHeader,
    per_task: Option<u32>,
    fraction: Option<f64>,
) -> pb::TaskHeader {
    h.settings.as_mut().unwrap().replay = Some(pb::Replay {
        samples_per_task: per_task,
        batch_fraction: fraction,
    });
    h
}
