//! Leases as fencing tokens: a worker whose job was requeued and claimed again writes
//! nothing; restarted daemons reclaim their own jobs; submission order is version order.

use std::time::Duration;

use ctp::store::{ClaimedJob, Store, StoreError, SyncRow, TaskState};

use crate::{submit, version_for};

contract_tests!(
    stale_worker_writes_are_refused,
    same_worker_reclaiming_fences_its_old_claim,
    restart_reclaims_own_jobs_at_once,
    released_job_resumes_in_place,
    concurrent_submissions_number_versions_in_list_order,
    closed_store_is_unavailable,
);

const LEASE: Duration = Duration::from_secs(60);

/// Claims the next job as `worker` with a lease that has already run out.
async fn claim_expired(store: &Store, worker: &str) -> ClaimedJob {
    let job = store
        .claim_next_job(worker, Duration::ZERO)
        .await
        .unwrap()
        .expect("a job is eligible");
    tokio::time::sleep(Duration::from_millis(5)).await;
    job
}

fn assert_lost<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) {
    assert!(
        matches!(r, Err(StoreError::LeaseLost { .. })),
        "{what}: {r:?}"
    );
}

async fn stale_worker_writes_are_refused(store: Store) {
    let task = submit(&store, "m", "t", None).await;
    let stale = claim_expired(&store, "a").await;
    store
        .set_resume_checkpoint(&stale.lease(), "/r/t.1.3.safetensors", 3, "ab03")
        .await
        .unwrap();
    // The reaper of another daemon requeues it; that daemon claims it.
    assert_eq!(
        store.requeue_expired().await.unwrap(),
        vec![task.id.clone()]
    );
    let fresh = store.claim_next_job("b", LEASE).await.unwrap().unwrap();
    assert_eq!(fresh.task.id, task.id);
    assert_eq!(fresh.epoch, stale.epoch + 1);
    assert_eq!(
        fresh.resume_step,
        Some(3),
        "the recorded resume point is kept"
    );
    store
        .update_progress(&fresh.lease(), r#"{"step":9}"#)
        .await
        .unwrap();
    let seq = store
        .append_job_event(&fresh.lease(), "progress", "{}")
        .await
        .unwrap();

    let old = stale.lease();
    let sync = SyncRow {
        step: 1,
        k: 1,
        drift: 0.1,
        threshold: 0.0,
        duration_ms: 1.0,
        at: chrono::Utc::now(),
    };
    assert_lost("heartbeat", store.heartbeat(&old, LEASE).await);
    assert_lost(
        "progress",
        store.update_progress(&old, r#"{"step":2}"#).await,
    );
    assert_lost(
        "event",
        store.append_job_event(&old, "progress", "{}").await,
    );
    assert_lost("sync", store.record_sync(&old, &sync).await);
    assert_lost(
        "resume point",
        store
            .set_resume_checkpoint(&old, "/r/stale", 6, "ab06")
            .await,
    );
    assert_lost("cancel ack", store.mark_cancelled(&old).await);
    assert_lost("fail", store.fail_job(&old, "stale").await);
    assert_lost("release", store.release_job(&old).await);
    let late = version_for(&stale.task, None);
    assert_lost(
        "version commit",
        store.finish_task(&old, late.clone()).await,
    );

    // None of it landed: the new holder's state is intact.
    let t = store.get_task(&task.id).await.unwrap();
    assert_eq!(t.state, TaskState::Running);
    assert_eq!(t.progress_json, r#"{"step":9}"#);
    assert!(!t.cancel_requested);
    assert_eq!(store.last_event_seq(&task.id).await.unwrap(), seq);
    assert!(store.syncs(&task.id).await.unwrap().is_empty());
    assert!(store.head("m").await.unwrap().is_none());
    assert!(store.heartbeat(&fresh.lease(), LEASE).await.is_ok());

    let v = store
        .finish_task(&fresh.lease(), version_for(&fresh.task, None))
        .await
        .unwrap();
    assert_eq!(v.version, 1);
    // The claim that finished may still announce it; nothing else is appended.
    store
        .append_job_event(&fresh.lease(), "terminal", "{}")
        .await
        .unwrap();
    assert_lost(
        "event after the end",
        store
            .append_job_event(&fresh.lease(), "progress", "{}")
            .await,
    );
    // After the task finished, the late writer is still refused.
    assert_lost("late commit", store.finish_task(&old, late).await);
    assert_lost(
        "late event",
        store.append_job_event(&old, "terminal", "{}").await,
    );
    assert_eq!(
        store.get_task(&task.id).await.unwrap().state,
        TaskState::Succeeded
    );
}

async fn same_worker_reclaiming_fences_its_old_claim(store: Store) {
    submit(&store, "m", "t", None).await;
    let first = store.claim_next_job("w", LEASE).await.unwrap().unwrap();
    store.requeue_expired_or_held_by("w").await.unwrap();
    let second = store.claim_next_job("w", LEASE).await.unwrap().unwrap();
    assert_eq!(
        (second.worker_id.as_str(), second.epoch),
        ("w", first.epoch + 1)
    );
    assert_eq!(second.attempts, 2);
    assert_lost("old epoch", store.heartbeat(&first.lease(), LEASE).await);
    assert_lost(
        "old epoch",
        store.update_progress(&first.lease(), "{}").await,
    );
    assert!(!store.heartbeat(&second.lease(), LEASE).await.unwrap());
}

async fn restart_reclaims_own_jobs_at_once(store: Store) {
    let mine = submit(&store, "a", "t", None).await;
    let theirs = submit(&store, "b", "t", None).await;
    let lapsed = submit(&store, "c", "t", None).await;
    store.claim_next_job("me", LEASE).await.unwrap().unwrap();
    store.claim_next_job("other", LEASE).await.unwrap().unwrap();
    claim_expired(&store, "dead").await;

    // Leases of an hour are no obstacle for the restarted daemon's own job; a live
    // daemon's job stays where it is.
    let mut requeued = store.requeue_expired_or_held_by("me").await.unwrap();
    requeued.sort();
    let mut want = vec![mine.id.clone(), lapsed.id.clone()];
    want.sort();
    assert_eq!(requeued, want);
    assert_eq!(
        store.get_task(&mine.id).await.unwrap().state,
        TaskState::Queued
    );
    assert_eq!(
        store.get_task(&theirs.id).await.unwrap().state,
        TaskState::Running
    );
    assert!(store.requeue_expired().await.unwrap().is_empty());
}

async fn released_job_resumes_in_place(store: Store) {
    let task = submit(&store, "m", "t", None).await;
    let later = submit(&store, "m", "later", None).await;
    let job = store.claim_next_job("w", LEASE).await.unwrap().unwrap();
    store
        .set_resume_checkpoint(&job.lease(), "/r/t.1.6.safetensors", 6, "ab06")
        .await
        .unwrap();
    store.release_job(&job.lease()).await.unwrap();
    assert_eq!(
        store.get_task(&task.id).await.unwrap().state,
        TaskState::Queued
    );
    let again = store.claim_next_job("v", LEASE).await.unwrap().unwrap();
    assert_eq!(again.task.id, task.id, "ahead of {}", later.id);
    assert_eq!(
        again.resume_checkpoint.as_deref(),
        Some("/r/t.1.6.safetensors")
    );
    assert_eq!(again.resume_step, Some(6));
    assert_lost("released", store.heartbeat(&job.lease(), LEASE).await);
}

async fn concurrent_submissions_number_versions_in_list_order(store: Store) {
    store.create_model_if_absent("m", "tiny").await.unwrap();
    let submits: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let new = crate::new_task("m", &format!("t{i}"), None);
                store.submit_task(new).await.unwrap().task.id
            })
        })
        .collect();
    for s in submits {
        s.await.unwrap();
    }
    while let Some(job) = store.claim_next_job("w", LEASE).await.unwrap() {
        let new = version_for(&job.task, job.task.base_version);
        store.finish_task(&job.lease(), new).await.unwrap();
    }
    let (tasks, _) = store.list_tasks(Some("m"), None, 100, None).await.unwrap();
    let versions: Vec<Option<i64>> = tasks.iter().map(|t| t.produced_version).collect();
    let want: Vec<Option<i64>> = (1..=16).map(Some).collect();
    assert_eq!(versions, want, "versions in ListTasks order");
}

async fn closed_store_is_unavailable(store: Store) {
    store.close().await;
    let err = store.get_task("t").await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(!err.is_transient(), "closed by us: not worth retrying");
}
