//! The webhook outbox: events recorded in the transaction of their change, only for the
//! webhooks subscribed to them; claims that keep two daemons from sending one delivery until
//! the claim runs out, and a stale claim's outcome refused.
use std::time::Duration;

use ctp::store::{DeliveryOutcome, Store, WebhookDelivery, WebhookEvent, WebhookRoutes};
use serde_json::Value;

use crate::{run_to_version, submit, version_for};

contract_tests!(
    events_commit_with_their_change_for_their_subscribers,
    claims_are_exclusive_until_they_run_out_and_stale_outcomes_are_refused,
);

const A: &str = "http://a.example/hook";
const B: &str = "http://b.example/hook";

fn endpoints() -> Vec<String> {
    vec![A.to_string(), B.to_string()]
}

/// Claims every due delivery and marks it delivered; returns (endpoint, body) pairs in order.
async fn drain(store: &Store) -> Vec<(String, Value)> {
    let lease = Duration::from_secs(60);
    let claimed = store
        .claim_webhook_deliveries("w", &endpoints(), lease, 100)
        .await
        .unwrap();
    let mut out = Vec::new();
    for d in claimed {
        let done = DeliveryOutcome::Delivered { status: 200 };
        assert!(store.record_webhook_attempt(&d, &done).await.unwrap());
        out.push((d.endpoint, serde_json::from_str(&d.body).unwrap()));
    }
    out
}

fn types(events: &[(String, Value)]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|(e, b)| (e.clone(), b["type"].as_str().unwrap().to_string()))
        .collect()
}

async fn events_commit_with_their_change_for_their_subscribers(store: Store) {
    use WebhookEvent::*;
    let plain = store.clone();
    let store = store.with_webhooks(WebhookRoutes::new([
        (
            A.to_string(),
            vec![
                TaskSucceeded,
                TaskFailed,
                TaskCancelled,
                VersionRejected,
                HeadMoved,
            ],
        ),
        (B.to_string(), vec![HeadMoved]),
    ]));
    // A store without routes records nothing.
    let t0 = submit(&plain, "m", "t0", None).await;
    plain.cancel_task(&t0.id).await.unwrap();
    assert!(drain(&store).await.is_empty());

    let t1 = submit(&store, "m", "t1", None).await;
    assert_eq!(run_to_version(&store, &t1).await, 1);
    let got = drain(&store).await;
    let (a, b) = (A.to_string(), B.to_string());
    assert_eq!(
        types(&got),
        [
            (a.clone(), "task.succeeded".into()),
            (a.clone(), "head.moved".into()),
            (b.clone(), "head.moved".into())
        ]
    );
    let succeeded = &got[0].1;
    assert!(succeeded["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(succeeded["data"]["task"]["id"], t1.id.as_str());
    assert_eq!(succeeded["data"]["task"]["state"], "succeeded");
    assert_eq!(succeeded["data"]["version"]["version"], 1);
    assert_eq!(succeeded["data"]["version"]["evals"][0]["rm"], 40.0);
    assert_eq!(succeeded["data"]["version"]["union_rm"], 35.0);
    let moved = &got[1].1;
    assert_eq!(moved["data"]["who"], "ctpd");
    assert_eq!(moved["data"]["to_version"], 1);
    assert_eq!(moved["data"]["from_version"], Value::Null);
    // One event, one id, for both webhooks.
    assert_eq!(got[1].1["id"], got[2].1["id"]);
    assert_ne!(got[0].1["id"], got[1].1["id"]);

    let t2 = submit(&store, "m", "t2", None).await;
    run_to_version(&store, &t2).await;
    drain(&store).await;
    store
        .rollback("m", 1, Some(2), "alice", "v2 forgot")
        .await
        .unwrap();
    let got = drain(&store).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let data = &got[0].1["data"];
    assert_eq!(got[0].1["type"], "head.moved");
    assert_eq!(
        (
            &data["who"],
            &data["reason"],
            &data["from_version"],
            &data["to_version"]
        ),
        (
            &Value::from("alice"),
            &Value::from("v2 forgot"),
            &Value::from(2),
            &Value::from(1)
        )
    );
    assert_eq!(data["version"]["is_head"], true);

    // Cancelled while queued; a refused second cancel records nothing.
    let t3 = submit(&store, "m", "t3", None).await;
    store.cancel_task(&t3.id).await.unwrap();
    assert!(store.cancel_task(&t3.id).await.is_err());
    let t4 = submit(&store, "m", "t4", None).await;
    store.fail_task(&t4.id, "operator said so").await.unwrap();
    let got = drain(&store).await;
    assert_eq!(
        types(&got),
        [
            (a.clone(), "task.cancelled".into()),
            (a.clone(), "task.failed".into())
        ]
    );
    assert_eq!(got[0].1["data"]["task"]["id"], t3.id.as_str());
    assert_eq!(got[1].1["data"]["task"]["error"], "operator said so");

    // A version the gate refused: the task succeeded, the head stayed.
    let t5 = submit(&store, "m", "t5", None).await;
    let job = store
        .claim_next_job("worker", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let mut v = version_for(&job.task, job.task.base_version);
    v.rejection = Some("promotion gate: union Rm 35.00 < min_union_rm 50".into());
    store.finish_task(&job.lease(), v).await.unwrap();
    let got = drain(&store).await;
    assert_eq!(
        types(&got),
        [
            (a.clone(), "task.succeeded".into()),
            (a.clone(), "version.rejected".into())
        ]
    );
    let rejected = &got[1].1["data"];
    assert_eq!(rejected["task"]["id"], t5.id.as_str());
    assert!(rejected["reason"]
        .as_str()
        .unwrap()
        .contains("min_union_rm 50"));
    assert_eq!(rejected["version"]["is_head"], false);
    // Every delivery settled.
    let stats = store.webhook_stats().await.unwrap();
    assert!(
        stats.iter().all(|s| s.pending == 0 && s.dead == 0),
        "{stats:?}"
    );
}

async fn claims_are_exclusive_until_they_run_out_and_stale_outcomes_are_refused(store: Store) {
    let store = store.with_webhooks(WebhookRoutes::new([(
        A.to_string(),
        vec![WebhookEvent::TaskCancelled],
    )]));
    let t = submit(&store, "m", "t", None).await;
    store.cancel_task(&t.id).await.unwrap();
    let short = Duration::from_secs(1);
    let claim = |who: &'static str| {
        let store = store.clone();
        async move {
            store
                .claim_webhook_deliveries(who, &endpoints(), short, 10)
                .await
                .unwrap()
        }
    };
    let first: Vec<WebhookDelivery> = claim("a").await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempts, 1);
    assert!(claim("b").await.is_empty(), "claimed by a");
    // Another endpoint list does not see it.
    let other = store
        .claim_webhook_deliveries("b", &[B.to_string()], short, 10)
        .await
        .unwrap();
    assert!(other.is_empty());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // a's claim ran out: b takes it over, and a's late outcome changes nothing.
    let second = claim("b").await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempts, 2);
    assert_eq!(second[0].event_id, first[0].event_id);
    assert_eq!(
        second[0].body, first[0].body,
        "the same bytes on every attempt"
    );
    let ok = DeliveryOutcome::Delivered { status: 204 };
    assert!(!store.record_webhook_attempt(&first[0], &ok).await.unwrap());
    // b failed: retry at once.
    let retry = DeliveryOutcome::Retry {
        at: chrono::Utc::now(),
        status: Some(500),
        error: "HTTP 500".into(),
    };
    assert!(store
        .record_webhook_attempt(&second[0], &retry)
        .await
        .unwrap());
    let stats = store.webhook_stats().await.unwrap();
    assert_eq!((stats[0].pending, stats[0].delivered), (1, 0));
    assert_eq!(stats[0].last_error.as_deref(), Some("HTTP 500"));
    // A restart releases its own claims only, and the row is due again at once.
    let third = claim("a").await;
    assert_eq!(third[0].attempts, 3);
    assert_eq!(store.release_webhook_claims(Some("b")).await.unwrap(), 0);
    assert_eq!(store.release_webhook_claims(Some("a")).await.unwrap(), 1);
    let fourth = claim("b").await;
    assert_eq!(fourth[0].attempts, 4);
    assert!(!store.record_webhook_attempt(&third[0], &ok).await.unwrap());
    let dead = DeliveryOutcome::Dead {
        status: None,
        error: "connection refused".into(),
    };
    assert!(store
        .record_webhook_attempt(&fourth[0], &dead)
        .await
        .unwrap());
    assert!(
        claim("a").await.is_empty(),
        "a dead delivery is never sent again"
    );
    let stats = store.webhook_stats().await.unwrap();
    assert_eq!((stats[0].pending, stats[0].dead), (0, 1));
    assert_eq!(stats[0].last_error.as_deref(), Some("connection refused"));
}
