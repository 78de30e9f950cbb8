//! The promotion gate in the store: the per-model policy, and a rejected version that is
//! committed and listed but does not move the head (issue #10).

use std::time::Duration;

use ctp::store::{GatePolicy, Store, StoreError, TaskState};

use crate::{run_to_version, submit, version_for};

contract_tests!(
    gate_policy_round_trips,
    rejected_version_is_kept_but_not_head
);

async fn gate_policy_round_trips(store: Store) {
    let err = store.gate("ghost").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    let err = store
        .set_gate("ghost", &GatePolicy::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");

    submit(&store, "m", "t", None).await;
    assert!(
        store.gate("m").await.unwrap().is_empty(),
        "no gate by default"
    );
    let policy = GatePolicy {
        max_avg_forgetting: Some(20.0),
        min_union_rm: None,
        max_rm_drop: Some(5.5),
        ..Default::default()
    };
    assert_eq!(store.set_gate("m", &policy).await.unwrap(), policy);
    assert_eq!(store.gate("m").await.unwrap(), policy);
    store.set_gate("m", &GatePolicy::default()).await.unwrap();
    assert!(store.gate("m").await.unwrap().is_empty(), "cleared");
}

async fn rejected_version_is_kept_but_not_head(store: Store) {
    let t1 = submit(&store, "m", "first", None).await;
    let t2 = submit(&store, "m", "second", None).await;
    let t3 = submit(&store, "m", "third", None).await;
    assert_eq!(run_to_version(&store, &t1).await, 1);

    let job = store
        .claim_next_job("w", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.task.id, t2.id);
    let mut new = version_for(&job.task, Some(1));
    let why = "promotion gate: average forgetting 30.00 > max_avg_forgetting 20";
    new.rejection = Some(why.into());
    let v2 = store.finish_task(&job.lease(), new).await.unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.rejected_reason.as_deref(), Some(why));
    assert!(!v2.is_head);

    // The task succeeded and says why its version was refused; the head stayed at 1.
    let task = store.get_task(&t2.id).await.unwrap();
    assert_eq!(task.state, TaskState::Succeeded);
    assert_eq!(task.produced_version, Some(2));
    assert_eq!(task.rejected_reason.as_deref(), Some(why));
    assert_eq!(store.get_model("m").await.unwrap().head_version, Some(1));
    let listed = store.list_versions("m", 10, None).await.unwrap().0;
    assert_eq!(
        listed.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(listed[1].rejected_reason.as_deref(), Some(why));
    assert!(listed[0].rejected_reason.is_none() && listed[0].is_head);
    let moves: Vec<_> = store
        .head_history("m")
        .await
        .unwrap()
        .iter()
        .map(|h| (h.from_version, h.to_version))
        .collect();
    assert_eq!(
        moves,
        vec![(None, 1)],
        "no head move for the rejected version"
    );

    // The next task trains from the head (1), so its lineage skips the rejected version.
    let job = store
        .claim_next_job("w", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (job.task.id.as_str(), job.task.base_version),
        (t3.id.as_str(), Some(1))
    );
    let v3 = store
        .finish_task(&job.lease(), version_for(&job.task, Some(1)))
        .await
        .unwrap();
    assert!(v3.is_head && v3.rejected_reason.is_none());
    let lineage: Vec<i64> = store
        .lineage("m", 3)
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(lineage, vec![1, 3]);

    // An admin can still promote the rejected version explicitly (compare-and-set).
    let change = store
        .rollback("m", 2, Some(3), "admin", "promote v2 despite the gate")
        .await
        .unwrap();
    assert_eq!((change.from_version, change.to_version), (Some(3), 2));
    let head = store.head("m").await.unwrap().unwrap();
    assert_eq!(head.version, 2);
    assert_eq!(
        head.rejected_reason.as_deref(),
        Some(why),
        "the record of the refusal stays"
    );
}
