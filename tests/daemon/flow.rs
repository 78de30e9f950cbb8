//! submit → watch → version with accuracy row and forgetting → second task → rollback → third
//! task trains from the rolled-back version; idempotent resubmit.
use ctp_api::pb;
use tonic::Code;

use crate::helpers::*;

async fn full_flow(db: Db) {
    let backend = match db {
        Db::Sqlite => "sqlite",
        Db::Postgres => "postgres",
    };
    let app = spawn_app(db).await;
    let mut c = app.client.clone();

    // Task A.
    let a = submit(&mut c, header("m", "squares", 3), shape_samples(0))
        .await
        .unwrap();
    assert_eq!((a.n_train, a.n_eval), (10, 6));
    assert_eq!(
        a.state,
        pb::TaskState::Queued as i32,
        "the reply comes before training"
    );
    let events = watch_all(&mut c, &a.id, 0).await;
    assert!(matches!(
        events[0].event,
        Some(pb::task_event::Event::Snapshot(_))
    ));
    // Heartbeats repeat the last seq (a resume cursor, not an event); a loaded machine
    // sees them between steps.
    let seqs: Vec<u64> = events[1..]
        .iter()
        .filter(|e| !matches!(e.event, Some(pb::task_event::Event::Heartbeat(_))))
        .map(|e| e.seq)
        .filter(|s| *s > 0)
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] > w[0]),
        "seq increases: {seqs:?}"
    );
    let t = terminal(&events);
    assert_eq!(t.state, pb::TaskState::Succeeded as i32, "{}", t.error);
    assert_eq!(t.produced_version, Some(1));
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
    assert_eq!(progress.len(), 6);
    assert!(progress.last().unwrap().losses.contains_key("itc_queue"));
    // Task A leaves the drift threshold to the server's default (0.05): a sync happens only
    // where the drift reached it, and each one says so.
    let syncs: Vec<&pb::MomentumSync> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(pb::task_event::Event::Sync(s)) => Some(s),
            _ => None,
        })
        .collect();
    for s in &syncs {
        assert_eq!(s.threshold, 0.05, "{s:?}");
        assert!(s.drift >= s.threshold && s.k >= 1, "{s:?}");
    }
    // Every step's progress carries the drift of its check: the sync's own where it synced,
    // below the threshold where it did not.
    for p in &progress {
        let d = p
            .drift
            .unwrap_or_else(|| panic!("no drift at step {}", p.step));
        match syncs.iter().find(|s| s.step + 1 == p.step) {
            Some(s) => assert_eq!(d, s.drift, "step {}", p.step),
            None => assert!((0.0..0.05).contains(&d), "step {}: {d}", p.step),
        }
    }

    let v1 = c
        .get_version(pb::GetVersionRequest {
            model: "m".into(),
            version: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v1.parent, None);
    assert_eq!(v1.evals.len(), 1);
    assert!(v1.union_eval.is_some());
    assert!(v1.is_head);
    assert_eq!(v1.average_forgetting, None);
    assert_eq!(
        (v1.momentum_syncs, v1.momentum_steps),
        (syncs.len() as u64, 6)
    );
    // The engine is recorded on the version and reported by GetServerInfo.
    let info = c
        .get_server_info(pb::GetServerInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.device.as_str(), info.precision.as_str()),
        ("cpu", "fp32")
    );
    assert_eq!(info.backend, backend);
    assert!(info.storage_problem.is_empty());
    assert_eq!((v1.device.as_str(), v1.precision.as_str()), ("cpu", "fp32"));

    // Idempotent resubmit: same key, same task. This task also shrinks the momentum queue
    // that it carries over from version 1, and asks for the paper's per-step sync.
    let mut h = header("m", "discs", 3);
    h.idempotency_key = Some("discs-1".into());
    h.settings.as_mut().unwrap().queue_size = Some(8);
    h.settings.as_mut().unwrap().drift_threshold = Some(0.0);
    let b = submit(&mut c, h.clone(), shape_samples(1)).await.unwrap();
    assert_eq!(b.settings.as_ref().unwrap().queue_size, Some(8));
    let defaults = a.settings.as_ref().unwrap();
    assert_eq!(defaults.drift_threshold, Some(0.05), "the measured default");
    assert_eq!(
        defaults.queue_size,
        Some(8 * 5),
        "the default: 8 batches of 5"
    );
    let w = defaults.loss_weights.as_ref().unwrap();
    assert_eq!(
        (w.tp_cross, w.tp_intra, w.itc_queue),
        (Some(10.0), Some(10.0), Some(1.0)),
        "the measured TP default, the paper's other weights"
    );
    let again = submit(&mut c, h, shape_samples(1)).await.unwrap();
    assert_eq!(b.id, again.id);
    let t = terminal(&watch_all(&mut c, &b.id, 0).await);
    assert_eq!(t.produced_version, Some(2));
    let listed = c
        .list_tasks(pb::ListTasksRequest {
            model: Some("m".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tasks.len(), 2, "the resubmission created nothing");

    let v2 = c
        .get_version(pb::GetVersionRequest {
            model: "m".into(),
            version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((v2.version, v2.parent), (2, Some(1)));
    assert_eq!(
        (v2.momentum_syncs, v2.momentum_steps),
        (6, 6),
        "threshold 0 syncs every step"
    );
    assert_eq!(
        v2.evals
            .iter()
            .map(|e| e.task_id.clone())
            .collect::<Vec<_>>(),
        vec![a.id.clone(), b.id.clone()]
    );
    assert_eq!(v2.forgetting.len(), 1);
    assert_eq!(v2.forgetting[0].task_id, a.id);
    let expect = v1.evals[0].rm - v2.evals[0].rm;
    assert!((v2.forgetting[0].forgetting - expect).abs() < 1e-9);
    assert!(v2.average_forgetting.is_some() && v2.bwt.is_some());

    // Rollback with a stale expected head is refused; with the right one it moves the head.
    let stale = c
        .rollback(pb::RollbackRequest {
            model: "m".into(),
            version: 1,
            expected_head: Some(7),
            reason: "x".into(),
        })
        .await;
    assert_eq!(stale.unwrap_err().code(), Code::Aborted);
    let missing = c
        .rollback(pb::RollbackRequest {
            model: "m".into(),
            version: 9,
            ..Default::default()
        })
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let rb = c
        .rollback(pb::RollbackRequest {
            model: "m".into(),
            version: 1,
            expected_head: Some(2),
            reason: "v2 forgot squares".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let change = rb.change.unwrap();
    assert_eq!(
        (change.from, change.to, change.reason.as_str()),
        (Some(2), 1, "v2 forgot squares")
    );
    assert!(rb.head.unwrap().is_head);

    // Task C trains from the rolled-back head: its parent proves it, and it has not seen B.
    let cc = submit(&mut c, header("m", "crosses", 2), shape_samples(2))
        .await
        .unwrap();
    let t = terminal(&watch_all(&mut c, &cc.id, 0).await);
    assert_eq!(t.produced_version, Some(3));
    let v3 = c
        .get_version(pb::GetVersionRequest {
            model: "m".into(),
            version: Some(3),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v3.parent, Some(1));
    assert_eq!(
        v3.evals
            .iter()
            .map(|e| e.task_id.clone())
            .collect::<Vec<_>>(),
        vec![a.id.clone(), cc.id.clone()]
    );
    let task_c = c
        .get_task(pb::GetTaskRequest {
            task_id: cc.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(task_c.base_version, Some(1));
    let all = c
        .list_versions(pb::ListVersionsRequest {
            model: "m".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        all.versions
            .iter()
            .map(|v| (v.version, v.is_head))
            .collect::<Vec<_>>(),
        vec![(1, false), (2, false), (3, true)]
    );

    // Embeddings from an older version are unit vectors of the shared space.
    let e = c
        .embed(pb::EmbedRequest {
            model: "m".into(),
            version: Some(2),
            images: vec![shape_samples(0)[0].image.clone()],
            texts: vec!["a red square".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.version, 2);
    let norm: f32 = e.text_embeddings[0].values.iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-4 && e.image_embeddings[0].values.len() == e.dim as usize);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_sqlite() {
    full_flow(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_postgres() {
    if pg::skip_requested() {
        return;
    }
    full_flow(Db::Postgres).await;
}
