//! Committing versions, lineage, rollback and head history.

use std::time::Duration;

use ctp::store::{EvalScope, Lease, Store, StoreError, TaskState};

use crate::{eval, run_to_version, submit, version_for};

contract_tests!(
    finish_task_commits_everything,
    finish_task_is_all_or_nothing,
    rollback_compare_and_set,
    list_versions_pages,
);

async fn finish_task_commits_everything(store: Store) {
    let t1 = submit(&store, "m", "first", None).await;
    let t2 = submit(&store, "m", "second", None).await;
    assert_eq!(run_to_version(&store, &t1).await, 1);

    let job = store
        .claim_next_job("w", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let mut new = version_for(&job.task, Some(1));
    new.evals = vec![
        eval(EvalScope::Task, &t1, 30.0),
        eval(EvalScope::Task, &t2, 50.0),
        eval(EvalScope::Union, &t2, 42.0),
    ];
    new.forgetting = vec![(t1.id.clone(), 10.0)];
    let v2 = store.finish_task(&job.lease(), new.clone()).await.unwrap();

    assert_eq!(
        (v2.model.as_str(), v2.version, v2.parent),
        ("m", 2, Some(1))
    );
    assert_eq!(v2.task_id, t2.id);
    assert_eq!(v2.task_name, "second");
    assert!(v2.is_head);
    assert_eq!(v2.evals, new.evals, "order and values kept");
    assert_eq!(v2.task_evals().count(), 2);
    assert_eq!(v2.union_eval().map(|e| e.rm), Some(42.0));
    assert_eq!(v2.forgetting, vec![(t1.id.clone(), 10.0)]);
    assert_eq!((v2.bwt, v2.average_forgetting), (Some(1.5), Some(2.0)));
    assert_eq!((v2.momentum_syncs, v2.momentum_steps), (3, 10));
    assert_eq!(
        (v2.device.as_str(), v2.precision.as_str()),
        ("cuda:0", "bf16"),
        "the engine is recorded"
    );
    assert_eq!(store.get_version("m", 2).await.unwrap(), v2);

    let task = store.get_task(&t2.id).await.unwrap();
    assert_eq!(task.state, TaskState::Succeeded);
    assert_eq!(task.produced_version, Some(2));
    assert!(task.finished_at.is_some());
    assert_eq!(store.get_model("m").await.unwrap().head_version, Some(2));
    assert!(!store.get_version("m", 1).await.unwrap().is_head);

    let lineage = store.lineage("m", 2).await.unwrap();
    let numbers: Vec<i64> = lineage.iter().map(|v| v.version).collect();
    assert_eq!(numbers, vec![1, 2]);
    assert_eq!(lineage[1], v2);

    let history = store.head_history("m").await.unwrap();
    let moves: Vec<_> = history
        .iter()
        .map(|h| (h.from_version, h.to_version, h.who.as_str()))
        .collect();
    assert_eq!(moves, vec![(None, 1, "ctpd"), (Some(1), 2, "ctpd")]);
    assert_eq!(history[1].reason, format!("task {} succeeded", t2.id));

    let files = store.referenced_files().await.unwrap();
    assert!(files.contains(&v2.checkpoint_path));
    assert!(files.contains(&t1.data_dir));

    // Finishing twice is refused: the job is done, so the lease is gone.
    let err = store.finish_task(&job.lease(), new).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
}

async fn finish_task_is_all_or_nothing(store: Store) {
    let task = submit(&store, "m", "t", None).await;
    // Not running yet: no claim holds it (epoch 1 is the first claim's).
    let unclaimed = Lease {
        task_id: task.id.clone(),
        worker_id: "w".into(),
        epoch: 1,
    };
    let err = store
        .finish_task(&unclaimed, version_for(&task, None))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");

    let job = store
        .claim_next_job("w", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.lease(), unclaimed);
    // A parent that does not exist fails the whole transaction...
    let err = store
        .finish_task(&job.lease(), version_for(&task, Some(7)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    // ...and leaves no trace: still running, no version, version 1 still free.
    assert_eq!(
        store.get_task(&task.id).await.unwrap().state,
        TaskState::Running
    );
    assert!(store.head("m").await.unwrap().is_none());
    let v = store
        .finish_task(&job.lease(), version_for(&task, None))
        .await
        .unwrap();
    assert_eq!(v.version, 1);
    assert_eq!(store.head("m").await.unwrap().map(|h| h.version), Some(1));
}

async fn rollback_compare_and_set(store: Store) {
    let t1 = submit(&store, "m", "t1", None).await;
    let t2 = submit(&store, "m", "t2", None).await;
    run_to_version(&store, &t1).await;
    run_to_version(&store, &t2).await;

    let change = store
        .rollback("m", 1, Some(2), "alice", "v2 forgot too much")
        .await
        .unwrap();
    assert_eq!((change.from_version, change.to_version), (Some(2), 1));
    assert_eq!(
        (change.who.as_str(), change.reason.as_str()),
        ("alice", "v2 forgot too much")
    );
    let head = store.head("m").await.unwrap().unwrap();
    assert_eq!(head.version, 1);
    assert!(head.is_head);

    // A stale expectation aborts and changes nothing.
    let err = store
        .rollback("m", 2, Some(2), "bob", "")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Aborted {
                expected: Some(2),
                actual: Some(1)
            }
        ),
        "{err:?}"
    );
    let err = store.rollback("m", 9, None, "bob", "").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    let err = store
        .rollback("ghost", 1, None, "bob", "")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(store.get_model("m").await.unwrap().head_version, Some(1));

    // The next task trains from the rolled-back head; numbers are never reused.
    let t3 = submit(&store, "m", "t3", None).await;
    assert_eq!(run_to_version(&store, &t3).await, 3);
    let v3 = store.get_version("m", 3).await.unwrap();
    assert_eq!(v3.parent, Some(1));
    let lineage: Vec<i64> = store
        .lineage("m", 3)
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(lineage, vec![1, 3], "version 2 is off this lineage");
    assert!(
        !store.get_version("m", 2).await.unwrap().is_head,
        "still readable"
    );

    let history: Vec<_> = store
        .head_history("m")
        .await
        .unwrap()
        .iter()
        .map(|h| (h.from_version, h.to_version, h.who.clone()))
        .collect();
    assert_eq!(
        history,
        vec![
            (None, 1, "ctpd".to_owned()),
            (Some(1), 2, "ctpd".to_owned()),
            (Some(2), 1, "alice".to_owned()),
            (Some(1), 3, "ctpd".to_owned()),
        ]
    );
    // Without an expectation the move is unconditional.
    store
        .rollback("m", 2, None, "carol", "compare")
        .await
        .unwrap();
    assert_eq!(store.get_model("m").await.unwrap().head_version, Some(2));
}

async fn list_versions_pages(store: Store) {
    for i in 0..5 {
        let task = submit(&store, "m", &format!("t{i}"), None).await;
        run_to_version(&store, &task).await;
    }
    let mut seen = vec![];
    let mut token: Option<String> = None;
    loop {
        let (page, next) = store.list_versions("m", 2, token.as_deref()).await.unwrap();
        assert!(page.len() <= 2);
        assert!(page.iter().all(|v| v.evals.len() == 2), "details attached");
        seen.extend(page.iter().map(|v| (v.version, v.is_head)));
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(
        seen,
        vec![(1, false), (2, false), (3, false), (4, false), (5, true)]
    );
    let err = store.list_versions("ghost", 0, None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    let err = store.list_versions("m", 0, Some("t1.0")).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
}
