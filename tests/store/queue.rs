//! Submitting, claiming, leases, cancelling and restart recovery.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ctp::store::{ClaimedJob, Store, StoreError, TaskState};

use crate::{new_task, run_to_version, submit};

contract_tests!(
    idempotent_submit,
    fifo_per_model_and_one_running_per_model,
    base_version_is_the_head_at_claim_time,
    requeue_keeps_resume_checkpoint,
    requeue_expired_only_takes_lapsed_leases,
    cancel_queued_and_running,
    fail_task_is_terminal,
    concurrent_claimers_keep_per_model_order,
);

const LEASE: Duration = Duration::from_secs(60);

async fn idempotent_submit(store: Store) {
    store.create_model_if_absent("m", "tiny").await.unwrap();
    let first = store
        .submit_task(new_task("m", "a", Some("key-1")))
        .await
        .unwrap();
    assert!(!first.existing);
    assert_eq!(first.task.state, TaskState::Queued);
    assert_eq!(first.task.base_version, None, "decided at claim time");

    let again = store
        .submit_task(new_task("m", "a (retry)", Some("key-1")))
        .await
        .unwrap();
    assert!(again.existing);
    assert_eq!(again.task, first.task);

    // The same key with different content is refused, naming the key; nothing is stored.
    let mut other = new_task("m", "a", Some("key-1"));
    other.request_digest = "other content".into();
    match store.submit_task(other).await {
        Err(StoreError::AlreadyExists { what }) => {
            assert!(
                what.contains("key-1") && what.contains(&first.task.id),
                "{what}"
            )
        }
        r => panic!("expected AlreadyExists, got {r:?}"),
    }

    // Without a key nothing is deduplicated; the same key on another model is distinct.
    let no_key_1 = submit(&store, "m", "b", None).await;
    let no_key_2 = submit(&store, "m", "b", None).await;
    assert_ne!(no_key_1.id, no_key_2.id);
    let other_model = submit(&store, "n", "a", Some("key-1")).await;
    assert_ne!(other_model.id, first.task.id);

    let (tasks, _) = store.list_tasks(Some("m"), None, 0, None).await.unwrap();
    assert_eq!(tasks.len(), 3, "the retry stored nothing");

    // One job per stored task: the retry did not enqueue a second run.
    let mut claimed = vec![];
    while let Some(job) = store.claim_next_job("w", LEASE).await.unwrap() {
        store.fail_task(&job.task.id, "test").await.unwrap();
        claimed.push(job.task.id);
    }
    assert_eq!(claimed.len(), 4);

    // Presets are fixed per model; unknown models and reused ids are rejected.
    let err = store.create_model_if_absent("m", "base").await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    let err = store.submit_task(new_task("ghost", "x", None)).await;
    assert!(matches!(err, Err(StoreError::NotFound { .. })), "{err:?}");
    let mut dup = new_task("m", "dup", None);
    dup.id = first.task.id.clone();
    let err = store.submit_task(dup).await;
    assert!(
        matches!(err, Err(StoreError::AlreadyExists { .. })),
        "{err:?}"
    );
}

async fn fifo_per_model_and_one_running_per_model(store: Store) {
    let a1 = submit(&store, "a", "a1", None).await;
    let a2 = submit(&store, "a", "a2", None).await;
    let b1 = submit(&store, "b", "b1", None).await;

    let first = store.claim_next_job("w1", LEASE).await.unwrap().unwrap();
    assert_eq!(first.task.id, a1.id);
    assert_eq!(first.task.state, TaskState::Running);
    assert_eq!(first.attempts, 1);
    assert!(first.task.started_at.is_some());

    // a2 waits for a1; b1 (another model) runs alongside.
    let second = store.claim_next_job("w2", LEASE).await.unwrap().unwrap();
    assert_eq!(second.task.id, b1.id);
    assert!(store.claim_next_job("w3", LEASE).await.unwrap().is_none());

    run_finish(&store, &first).await;
    let third = store.claim_next_job("w1", LEASE).await.unwrap().unwrap();
    assert_eq!(third.task.id, a2.id);
    assert_eq!(third.task.base_version, Some(1));
}

async fn base_version_is_the_head_at_claim_time(store: Store) {
    let t1 = submit(&store, "m", "t1", None).await;
    let t2 = submit(&store, "m", "t2", None).await;
    assert_eq!(run_to_version(&store, &t1).await, 1);
    // t2 was submitted while the head was empty, but trains from version 1.
    let job = store.claim_next_job("w", LEASE).await.unwrap().unwrap();
    assert_eq!(job.task.id, t2.id);
    assert_eq!(job.task.base_version, Some(1));
    assert_eq!(store.get_task(&t2.id).await.unwrap().base_version, Some(1));
}

async fn requeue_keeps_resume_checkpoint(store: Store) {
    let task = submit(&store, "m", "t", None).await;
    let waiting = submit(&store, "m", "later", None).await;
    let job = store.claim_next_job("old", LEASE).await.unwrap().unwrap();
    assert_eq!(job.resume_checkpoint, None);
    store
        .set_resume_checkpoint(&job.lease(), "/data/resume/t-40.safetensors", 40, "ab40")
        .await
        .unwrap();
    let started_at = store.get_task(&task.id).await.unwrap().started_at;

    // The daemon restarts: the running job goes back to the queue, ahead of `later`.
    assert_eq!(
        store.requeue_all_running().await.unwrap(),
        vec![task.id.clone()]
    );
    let queued = store.get_task(&task.id).await.unwrap();
    assert_eq!(queued.state, TaskState::Queued);
    assert_eq!(queued.started_at, started_at);
    assert!(store
        .referenced_files()
        .await
        .unwrap()
        .contains(&"/data/resume/t-40.safetensors".to_owned()));

    let resumed = store.claim_next_job("new", LEASE).await.unwrap().unwrap();
    assert_eq!(resumed.task.id, task.id);
    assert_eq!(resumed.attempts, 2);
    assert_eq!(
        resumed.resume_checkpoint.as_deref(),
        Some("/data/resume/t-40.safetensors")
    );
    // Its hash travels with it, for a daemon that fetches it from object storage.
    assert_eq!(resumed.resume_sha256.as_deref(), Some("ab40"));
    assert_eq!(resumed.resume_step, Some(40));
    assert_eq!(resumed.task.started_at, started_at);

    // The old worker lost its lease; the new one holds it, under the next epoch.
    assert_eq!(resumed.epoch, job.epoch + 1);
    let err = store.heartbeat(&job.lease(), LEASE).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    assert!(!store.heartbeat(&resumed.lease(), LEASE).await.unwrap());

    // A cancel requested before a restart is honoured by the restart.
    store.cancel_task(&task.id).await.unwrap();
    assert!(store.requeue_all_running().await.unwrap().is_empty());
    let cancelled = store.get_task(&task.id).await.unwrap();
    assert_eq!(cancelled.state, TaskState::Cancelled);
    let next = store.claim_next_job("new", LEASE).await.unwrap().unwrap();
    assert_eq!(next.task.id, waiting.id);
}

async fn requeue_expired_only_takes_lapsed_leases(store: Store) {
    let lapsing = submit(&store, "a", "t", None).await;
    let healthy = submit(&store, "b", "t", None).await;
    store.claim_next_job("w1", Duration::ZERO).await.unwrap();
    store.claim_next_job("w2", LEASE).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;

    assert_eq!(
        store.requeue_expired().await.unwrap(),
        vec![lapsing.id.clone()]
    );
    assert_eq!(
        store.get_task(&lapsing.id).await.unwrap().state,
        TaskState::Queued
    );
    assert_eq!(
        store.get_task(&healthy.id).await.unwrap().state,
        TaskState::Running
    );
    let again = store.claim_next_job("w3", LEASE).await.unwrap().unwrap();
    assert_eq!(again.task.id, lapsing.id);
}

async fn cancel_queued_and_running(store: Store) {
    let running = submit(&store, "m", "r", None).await;
    let queued = submit(&store, "m", "q", None).await;
    let job = store.claim_next_job("w", LEASE).await.unwrap().unwrap();

    let cancelled = store.cancel_task(&queued.id).await.unwrap();
    assert_eq!(cancelled.state, TaskState::Cancelled);
    assert!(cancelled.finished_at.is_some());

    let flagged = store.cancel_task(&running.id).await.unwrap();
    assert_eq!(flagged.state, TaskState::Running);
    assert!(flagged.cancel_requested);
    assert!(store.heartbeat(&job.lease(), LEASE).await.unwrap());

    let stopped = store.mark_cancelled(&job.lease()).await.unwrap();
    assert_eq!(stopped.state, TaskState::Cancelled);
    assert!(store.claim_next_job("w", LEASE).await.unwrap().is_none());

    let err = store.cancel_task(&running.id).await.unwrap_err();
    assert!(matches!(err, StoreError::FailedPrecondition(_)), "{err:?}");
    let err = store.cancel_task("no-such-task").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

async fn fail_task_is_terminal(store: Store) {
    let task = submit(&store, "m", "t", None).await;
    let job = store.claim_next_job("w", LEASE).await.unwrap().unwrap();
    let failed = store.fail_task(&task.id, "out of memory").await.unwrap();
    assert_eq!(failed.state, TaskState::Failed);
    assert_eq!(failed.error.as_deref(), Some("out of memory"));
    let err = store.fail_task(&task.id, "again").await.unwrap_err();
    assert!(matches!(err, StoreError::FailedPrecondition(_)), "{err:?}");
    let err = store
        .set_resume_checkpoint(&job.lease(), "/x", 1, "ab01")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    let err = store.heartbeat(&job.lease(), LEASE).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
}

async fn concurrent_claimers_keep_per_model_order(store: Store) {
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..4 {
        for model in ["a", "b", "c"] {
            let task = submit(&store, model, &format!("{model}{i}"), None).await;
            expected.entry(model.to_owned()).or_default().push(task.id);
        }
    }
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let order: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (store, running, order) = (store.clone(), running.clone(), order.clone());
            tokio::spawn(async move {
                let worker = format!("w{w}");
                let mut idle = 0;
                while idle < 20 {
                    let Some(job) = store.claim_next_job(&worker, LEASE).await.unwrap() else {
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    idle = 0;
                    let model = job.task.model.clone();
                    assert!(
                        running.lock().unwrap().insert(model.clone()),
                        "{model} twice"
                    );
                    order
                        .lock()
                        .unwrap()
                        .entry(model.clone())
                        .or_default()
                        .push(job.task.id.clone());
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    running.lock().unwrap().remove(&model);
                    run_finish(&store, &job).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), expected);
}

/// Finishes a claimed task with a minimal version.
async fn run_finish(store: &Store, job: &ClaimedJob) {
    let version = crate::version_for(&job.task, job.task.base_version);
    store.finish_task(&job.lease(), version).await.unwrap();
}
