//! Task events, momentum-sync records and task listing.

use std::collections::HashSet;

use ctp::store::{Store, StoreError, SyncRow, TaskState};

use crate::submit;

contract_tests!(
    event_seq_is_monotonic_and_resumable,
    concurrent_appends_get_distinct_seqs,
    replayed_sync_steps_overwrite,
    list_tasks_pages_and_filters,
    list_tasks_paging_survives_changes_between_pages,
);

async fn event_seq_is_monotonic_and_resumable(store: Store) {
    let task = submit(&store, "m", "t", None).await;
    let other = submit(&store, "m", "u", None).await;
    assert_eq!(store.last_event_seq(&task.id).await.unwrap(), 0);
    for (i, kind) in ["log", "progress", "sync"].iter().enumerate() {
        let seq = store
            .append_event(&task.id, kind, &format!(r#"{{"i":{i}}}"#))
            .await
            .unwrap();
        assert_eq!(seq, i as i64 + 1);
    }
    // Another task's log is numbered independently.
    assert_eq!(store.append_event(&other.id, "log", "{}").await.unwrap(), 1);

    let all = store.events_after(&task.id, 0, 100).await.unwrap();
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(all[1].kind, "progress");
    assert_eq!(all[1].payload_json, r#"{"i":1}"#);
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at));

    let resumed = store.events_after(&task.id, 1, 1).await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].seq, 2);
    assert!(store
        .events_after(&task.id, 3, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.last_event_seq(&task.id).await.unwrap(), 3);

    let err = store.append_event("no-such-task", "log", "{}").await;
    assert!(matches!(err, Err(StoreError::NotFound { .. })), "{err:?}");
}

async fn concurrent_appends_get_distinct_seqs(store: Store) {
    let task = submit(&store, "m", "t", None).await;
    let appends: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let id = task.id.clone();
            tokio::spawn(async move { store.append_event(&id, "progress", "{}").await })
        })
        .collect();
    let mut seqs = HashSet::new();
    for handle in appends {
        seqs.insert(handle.await.unwrap().unwrap());
    }
    assert_eq!(seqs, (1..=16).collect::<HashSet<i64>>());
}

async fn replayed_sync_steps_overwrite(store: Store) {
    let task = submit(&store, "m", "t", None).await;
    let job = store
        .claim_next_job("w", std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let lease = job.lease();
    let sync = |step: i64, drift: f64| SyncRow {
        step,
        k: 4,
        drift,
        threshold: 0.01,
        duration_ms: 1.25,
        at: chrono::DateTime::from_timestamp(1_800_000_000, 123_456_000).unwrap(),
    };
    store.record_sync(&lease, &sync(8, 0.02)).await.unwrap();
    store.record_sync(&lease, &sync(4, 0.03)).await.unwrap();
    // After a resume, step 8 runs again.
    store.record_sync(&lease, &sync(8, 0.05)).await.unwrap();
    assert_eq!(
        store.syncs(&task.id).await.unwrap(),
        vec![sync(4, 0.03), sync(8, 0.05)]
    );
}

async fn list_tasks_pages_and_filters(store: Store) {
    let mut submitted = vec![];
    for i in 0..5 {
        let model = if i % 2 == 0 { "even" } else { "odd" };
        submitted.push(submit(&store, model, &format!("t{i}"), None).await);
    }
    store.cancel_task(&submitted[4].id).await.unwrap();

    let mut pages = vec![];
    let mut token: Option<String> = None;
    loop {
        let (page, next) = store
            .list_tasks(None, None, 2, token.as_deref())
            .await
            .unwrap();
        pages.push(page.len());
        token = next;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, vec![2, 2, 1]);

    // A full listing is in (created_at, id) order and holds every task once.
    let (all, next) = store.list_tasks(None, None, 0, None).await.unwrap();
    assert!(next.is_none());
    assert_eq!(all.len(), 5);
    assert!(all
        .windows(2)
        .all(|w| (w[0].created_at, &w[0].id) < (w[1].created_at, &w[1].id)));
    let ids: HashSet<_> = all.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids, submitted.iter().map(|t| t.id.clone()).collect());

    let (even, _) = store.list_tasks(Some("even"), None, 0, None).await.unwrap();
    assert_eq!(even.len(), 3);
    assert!(even.iter().all(|t| t.model == "even"));
    let (cancelled, _) = store
        .list_tasks(Some("even"), Some(TaskState::Cancelled), 0, None)
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].id, submitted[4].id);
    let (none, next) = store
        .list_tasks(Some("odd"), Some(TaskState::Running), 10, None)
        .await
        .unwrap();
    assert!(none.is_empty() && next.is_none());

    let err = store
        .list_tasks(None, None, 2, Some("v1.2"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
}

/// Keyset paging: a row that leaves the filter between pages shifts nothing (issue: after q0
/// was cancelled, an offset-based page 2 skipped q2).
async fn list_tasks_paging_survives_changes_between_pages(store: Store) {
    for i in 0..5 {
        submit(&store, "m", &format!("q{i}"), None).await;
    }
    let queued = Some(TaskState::Queued);
    let (all, _) = store.list_tasks(Some("m"), queued, 0, None).await.unwrap();
    let ids = |rows: &[ctp::store::TaskRow]| rows.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
    let (page1, token) = store.list_tasks(Some("m"), queued, 2, None).await.unwrap();
    assert_eq!(ids(&page1), ids(&all[..2]));
    store.cancel_task(&all[0].id).await.unwrap();
    let (page2, token) = store
        .list_tasks(Some("m"), queued, 2, token.as_deref())
        .await
        .unwrap();
    assert_eq!(ids(&page2), ids(&all[2..4]), "no queued task skipped");
    let (page3, token) = store
        .list_tasks(Some("m"), queued, 2, token.as_deref())
        .await
        .unwrap();
    assert_eq!(ids(&page3), ids(&all[4..]));
    assert!(token.is_none());
    for bad in ["t2.x.id", "t2.5.", "t1.2"] {
        let err = store
            .list_tasks(None, None, 2, Some(bad))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{bad}: {err:?}");
    }
}
