//! Webhooks (issue #26 §3) against a local HTTP receiver: every request's signature checked
//! with an HMAC computed here; a receiver that answers 500, one that is down and comes up
//! later, one that never comes up (dead after its last attempt, shown on /metrics and the
//! dashboard); and an event recorded before a SIGKILL, whose attempt hung, delivered after the
//! restart without waiting for the dead process's claim to run out.
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::helpers::*;
use ctp_api::pb;

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hit {
    event_id: String,
    event_type: String,
    attempt: u32,
    signature: String,
    body: String,
    answered: u16,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A local webhook receiver: answers 500 to its first `fail_first` requests, then 200.
#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    fail_first: Arc<AtomicUsize>,
}

async fn record(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let failing = r
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let h = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    r.hits.lock().unwrap().push(Hit {
        event_id: h("ctp-event-id"),
        event_type: h("ctp-event-type"),
        attempt: h("ctp-delivery-attempt").parse().unwrap(),
        signature: h("ctp-signature"),
        body: String::from_utf8(body.to_vec()).unwrap(),
        answered: status.as_u16(),
    });
    status
}

impl Receiver {
    /// Serves on `port` (127.0.0.1).
    async fn start(port: u16, fail_first: usize) -> Receiver {
        let r = Receiver::default();
        r.fail_first.store(fail_first, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(record))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until the receiver answered 200 to `types` (in any order); returns those hits.
    async fn delivered(&self, types: &[&str]) -> Vec<Hit> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let ok: Vec<Hit> = self
                .hits()
                .into_iter()
                .filter(|h| h.answered == 200)
                .collect();
            if types.iter().all(|t| ok.iter().any(|h| h.event_type == *t)) {
                return ok;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never delivered {types:?}; got {:?}",
                self.hits()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Checks `hit` as a receiver would, with an HMAC computed here: `t=<unix>,v1=<hex>` over
/// `"<t>." + body`, a recent timestamp, and the body's id equal to the header's.
fn check_signature(secret: &str, hit: &Hit) {
    let (t, v1) = hit
        .signature
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
        .unwrap_or_else(|| panic!("bad signature header {:?}", hit.signature));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(hit.body.as_bytes());
    assert_eq!(hex::encode(mac.finalize().into_bytes()), v1, "{hit:?}");
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap();
    assert!((0..300).contains(&age), "timestamp {t} is {age} s old");
    let body = hit.json();
    assert_eq!(body["id"], hit.event_id.as_str());
    assert_eq!(body["type"], hit.event_type.as_str());
}

/// A `[[webhooks]]` entry as an inline TOML table (for `CTP__WEBHOOKS`).
fn hook(url: &str, events: &[&str], secret: &str, extra: &str) -> String {
    let events: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
    format!(
        "{{url = {url:?}, events = [{}], secret = {secret:?}, backoff_seconds = 0.2, \
         max_backoff_seconds = 0.5{extra}}}",
        events.join(", ")
    )
}

/// The body of `GET http://{addr}{path}` (HTTP/1.1, the connection closed after it).
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    sock.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n").unwrap().1.to_string()
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_events_are_retried_after_500_and_after_the_receiver_was_down() {
    const S1: &str = "first-secret-0123456789";
    const S2: &str = "second-secret-0123456789";
    let flaky_port = free_port();
    let flaky = Receiver::start(flaky_port, 2).await;
    let (down_port, never_port) = (free_port(), free_port());
    let hooks = [
        hook(
            &format!("http://127.0.0.1:{flaky_port}/hook?token=t0ps3cret"),
            &["task.succeeded", "head.moved"],
            S1,
            "",
        ),
        hook(
            &format!("http://127.0.0.1:{down_port}/later"),
            &["head.moved"],
            S2,
            ", max_attempts = 100",
        ),
        hook(
            &format!("http://127.0.0.1:{never_port}/never"),
            &["task.succeeded"],
            S2,
            ", max_attempts = 2",
        ),
    ];
    let app = spawn_app_with(
        Db::Sqlite,
        vec![
            ("CTP__WEBHOOKS".into(), format!("[{}]", hooks.join(", "))),
            ("CTP__METRICS_LISTEN".into(), "127.0.0.1:0".into()),
            ("CTP__HTTP_LISTEN".into(), "127.0.0.1:0".into()),
        ],
    )
    .await;
    let mut c = app.client.clone();
    let t = submit(&mut c, header("m", "squares", 1), shape_samples(0))
        .await
        .unwrap();
    let end = terminal(&watch_all(&mut c, &t.id, 0).await);
    assert_eq!(end.state, pb::TaskState::Succeeded as i32, "{}", end.error);

    // The first two requests (one per event) got 500; each event came again, the same bytes
    // under the same id, as attempt 2.
    let ok = flaky.delivered(&["task.succeeded", "head.moved"]).await;
    let all = flaky.hits();
    for hit in &all {
        check_signature(S1, hit);
    }
    assert_eq!(
        all.iter().filter(|h| h.answered == 500).count(),
        2,
        "{all:?}"
    );
    for d in &ok {
        let first = all
            .iter()
            .find(|h| h.event_id == d.event_id)
            .expect("an earlier attempt");
        assert_eq!((first.answered, first.attempt), (500, 1));
        assert_eq!(first.body, d.body);
        assert!(d.attempt >= 2, "{d:?}");
    }
    let succeeded = ok
        .iter()
        .find(|h| h.event_type == "task.succeeded")
        .unwrap();
    let body = succeeded.json();
    assert_eq!(body["data"]["task"]["id"], t.id.as_str());
    assert_eq!(body["data"]["version"]["version"], 1);
    assert!(
        body["data"]["version"]["evals"][0]["rm"].is_number(),
        "{body}"
    );
    let moved = ok
        .iter()
        .find(|h| h.event_type == "head.moved")
        .unwrap()
        .json();
    assert_eq!(
        (&moved["data"]["who"], &moved["data"]["to_version"]),
        (&Value::from("ctpd"), &Value::from(1))
    );

    // The receiver that was down: attempts failed while it was, and it gets the same event
    // once it is up.
    let metrics = app.metrics_addr.unwrap();
    for _ in 0..300 {
        let m = get(metrics, "/metrics").await;
        if metric(&m, "ctp_webhook_failed_attempts_total") >= 6.0
            && metric(&m, "ctp_webhook_dead_total") >= 1.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = get(metrics, "/metrics").await;
    assert_eq!(metric(&m, "ctp_webhook_dead_total"), 1.0, "{m}");
    assert!(metric(&m, "ctp_webhook_pending") >= 1.0, "{m}");
    assert!(metric(&m, "ctp_webhook_deliveries_total") >= 2.0, "{m}");
    let dash = get(app.http_addr.unwrap(), "/api/webhooks").await;
    let dash: Value = serde_json::from_str(&dash).unwrap();
    let never = &dash["webhooks"][2];
    assert_eq!(never["url"], format!("http://127.0.0.1:{never_port}/never"));
    assert_eq!(
        (&never["dead"], &never["pending"]),
        (&Value::from(1), &Value::from(0))
    );
    let error = never["last_error"].as_str().unwrap().to_lowercase();
    assert!(error.contains("connect"), "{dash}");
    assert!(!dash.to_string().contains("t0ps3cret"), "{dash}");
    assert_eq!(dash["webhooks"][0]["delivered"], 2);

    let later = Receiver::start(down_port, 0).await;
    let got = later.delivered(&["head.moved"]).await;
    check_signature(S2, &got[0]);
    assert!(got[0].attempt >= 2, "{:?}", got[0]);
    let first_moved = ok.iter().find(|h| h.event_type == "head.moved").unwrap();
    assert_eq!(got[0].event_id, first_moved.event_id, "one event, one id");

    // A rollback names who moved the head and why.
    c.rollback(pb::RollbackRequest {
        model: "m".into(),
        version: 1,
        expected_head: Some(1),
        reason: "back to the known good one".into(),
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rolled = loop {
        let hits = later.hits();
        if let Some(h) = hits.iter().find(|h| h.json()["data"]["who"] == "anonymous") {
            break h.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{hits:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    check_signature(S2, &rolled);
    assert_eq!(
        rolled.json()["data"]["reason"],
        "back to the known good one"
    );
    app.stop().await;
}

/// `ctpd` as a process with one webhook, its metrics on `metrics_port`.
fn start(dir: &std::path::Path, port: u16, metrics_port: u16, hooks: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ctpd"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--device", "cpu"])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .arg("--data-dir")
        .arg(dir)
        .env("CTP__ENGINE__THREADS", "1")
        .env(
            "CTP__ENGINE__WEIGHTS_DIR",
            format!("{:?}", assets::weights().display().to_string()),
        )
        .env("CTP__WEBHOOKS", hooks)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_attempt_hung_at_a_sigkill_is_delivered_after_the_restart() {
    const SECRET: &str = "restart-secret-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port, hook_port) = (free_port(), free_port(), free_port());
    // A claim outlives the attempt's timeout (30 s) by 30 s: only the restart's release
    // makes the delivery come within the deadline below.
    let hooks = format!(
        "[{}]",
        hook(
            &format!("http://127.0.0.1:{hook_port}/hook"),
            &["task.succeeded", "head.moved"],
            SECRET,
            ", timeout_seconds = 30",
        )
    );
    // A receiver that accepts and never answers.
    let hang = tokio::net::TcpListener::bind(("127.0.0.1", hook_port))
        .await
        .unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    let hanging = tokio::spawn(async move {
        while let Ok((sock, _)) = hang.accept().await {
            keep.lock().unwrap().push(sock);
        }
    });
    let addr = format!("http://127.0.0.1:{port}");
    let mut child = start(dir.path(), port, metrics_port, &hooks);
    let mut c = connect(&addr).await;
    wait_serving(&addr).await;
    let t = submit(&mut c, header("m", "squares", 1), shape_samples(0))
        .await
        .unwrap();
    let end = terminal(&watch_all(&mut c, &t.id, 0).await);
    assert_eq!(end.state, pb::TaskState::Succeeded as i32, "{}", end.error);
    // Both events are recorded and their attempts are in flight when the daemon dies.
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while held.lock().unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no attempt reached the receiver"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&get(metrics, "/metrics").await, "ctp_webhook_pending"),
        2.0
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    hanging.abort();
    let _ = hanging.await; // the listener is closed once the task is gone
    held.lock().unwrap().clear();

    let receiver = Receiver::start(hook_port, 0).await;
    let mut child = start(dir.path(), port, metrics_port, &hooks);
    wait_serving(&addr).await;
    let started = tokio::time::Instant::now();
    let ok = receiver.delivered(&["task.succeeded", "head.moved"]).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "waited for the dead claim to run out"
    );
    for hit in &ok {
        check_signature(SECRET, hit);
        assert_eq!(hit.attempt, 2, "the hung attempt counted: {hit:?}");
        assert_eq!(hit.json()["data"]["version"]["task_id"], t.id.as_str());
    }
    let ids: std::collections::BTreeSet<&str> = ok.iter().map(|h| h.event_id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ok:?}");
    let m = get(metrics, "/metrics").await;
    assert_eq!(metric(&m, "ctp_webhook_pending"), 0.0, "{m}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `task.preempted` (with the task it yielded to) and `quota.exceeded` (with the quota, use
/// and limit) reach a subscribed receiver, signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemptions_and_quota_refusals_are_announced() {
    const SECRET: &str = "fleet-secret-0123456789";
    let port = free_port();
    let receiver = Receiver::start(port, 0).await;
    let hooks = hook(
        &format!("http://127.0.0.1:{port}/fleet"),
        &["task.preempted", "quota.exceeded"],
        SECRET,
        "",
    );
    let app = spawn_app_with(
        Db::Sqlite,
        vec![
            ("CTP__WEBHOOKS".into(), format!("[{hooks}]")),
            ("CTP__SCHEDULER__PREEMPT_CHECK_SECONDS".into(), "1".into()),
            ("CTP__SCHEDULER__MIN_RUN_SECONDS".into(), "1".into()),
            (
                "CTP__AUTH__ANONYMOUS_QUOTA".into(),
                "{max_queued_tasks = 2}".into(),
            ),
        ],
    )
    .await;
    let mut c = app.client.clone();
    let mut low = header("low", "long", 5000);
    low.priority = pb::TaskPriority::Low as i32;
    let low = submit(&mut c, low, shape_samples(0)).await.unwrap();
    crate::scheduling::wait_progress(&mut c, &low.id, 2).await;
    let mut high = header("high", "urgent", 1);
    high.priority = pb::TaskPriority::High as i32;
    let high = submit(&mut c, high, shape_samples(1)).await.unwrap();
    let err = submit(&mut c, header("third", "t", 1), shape_samples(2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    let hits = receiver
        .delivered(&["task.preempted", "quota.exceeded"])
        .await;
    for h in &hits {
        check_signature(SECRET, h);
    }
    let data = |t: &str| hits.iter().find(|h| h.event_type == t).unwrap().json()["data"].clone();
    let pre = data("task.preempted");
    assert_eq!(pre["task"]["id"], low.id.as_str(), "{pre}");
    assert_eq!(pre["by_task_id"], high.id.as_str(), "{pre}");
    assert_eq!(pre["preemptions"], 1, "{pre}");
    let quota = data("quota.exceeded");
    assert_eq!(quota["caller"], "anonymous", "{quota}");
    assert_eq!(quota["quota"], "max_queued_tasks", "{quota}");
    assert_eq!(
        (quota["used"].as_f64(), quota["limit"].as_f64()),
        (Some(2.0), Some(2.0))
    );
    c.cancel_task(pb::CancelTaskRequest {
        task_id: low.id.clone(),
    })
    .await
    .unwrap();
    app.stop().await;
}
