//! `webhooks`: a webhook's delivery latency (issue #26 §4). A local HTTP receiver (axum) and
//! an in-process daemon (SQLite, temp data dir) with one `[[webhooks]]` entry pointing at it,
//! subscribed to `head.moved`. Two `tiny` tasks make versions 1 and 2 of one model; then
//! `--events` Rollback RPCs, one after the other, alternate the head between them (each move
//! records one `head.moved` event in its transaction).
//!
//! Per event: the latency from the body's `created_at` (stamped in the transaction that
//! moved the head) to the receiver's first 2xx answer to it, each request's signature checked
//! (`ctp::webhooks::sign::verify`, HMAC-SHA256 over `"<t>." + body`), duplicates (2xx
//! receipts of an id already delivered) counted. Runs, on the same daemon one after the
//! other: `200` (the receiver accepts every attempt) and, unless `--skip-retry`, `500 first`
//! (it answers 500 to each event's first attempt, so every event pays one retry delay of
//! `backoff_seconds` × [0.5, 1]).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use ctp_api::pb;

use crate::service::{client, header, samples, submit, Daemon};

const SECRET: &str = "ctp-bench-webhook-secret";
const MODEL: &str = "hooked";

#[derive(clap::Args)]
pub struct WebhooksArgs {
    /// Head moves (Rollback RPCs) per run, each one `head.moved` event.
    #[arg(long, default_value_t = 1000)]
    pub events: usize,
    /// `backoff_seconds` of the webhook: the retry delay of the `500 first` run.
    #[arg(long, default_value_t = 2.0)]
    pub backoff_seconds: f64,
    /// Only the run whose receiver accepts every attempt.
    #[arg(long)]
    pub skip_retry: bool,
    /// How long to wait for a run's last delivery.
    #[arg(long, default_value_t = 300)]
    pub wait_seconds: u64,
    /// Also write the rows as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hit {
    at: DateTime<Utc>,
    event_id: String,
    /// The body's `created_at`.
    created_at: Option<DateTime<Utc>>,
    /// The body's `data.reason` (which run moved the head).
    reason: String,
    answered: u16,
    signature_ok: bool,
}

#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Answer 500 to attempt 1 of each event.
    fail_first: Arc<AtomicBool>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Utc::now();
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let signature_ok = ctp::webhooks::sign::verify(
        SECRET.as_bytes(),
        &h(ctp::webhooks::sign::HEADER),
        &body,
        at.timestamp(),
        ctp::webhooks::sign::TOLERANCE_SECONDS,
    )
    .is_ok();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let created_at = json["created_at"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    let first = h("ctp-delivery-attempt") == "1";
    let status = if first && r.fail_first.load(Ordering::SeqCst) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    r.hits.lock().expect("receiver lock").push(Hit {
        at,
        event_id: json["id"].as_str().unwrap_or_default().to_string(),
        created_at,
        reason: json["data"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        answered: status.as_u16(),
        signature_ok,
    });
    status
}

impl Receiver {
    async fn start() -> Result<(Receiver, std::net::SocketAddr)> {
        let r = Receiver::default();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((r, addr))
    }

    fn hits(&self, reason: &str) -> Vec<Hit> {
        let all = self.hits.lock().expect("receiver lock");
        all.iter().filter(|h| h.reason == reason).cloned().collect()
    }
}

/// One run's measurements.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub run: String,
    pub events: usize,
    /// Distinct events answered 2xx.
    pub delivered: usize,
    /// 2xx receipts of an event already delivered.
    pub duplicates: usize,
    /// Requests received (all attempts).
    pub requests: usize,
    pub bad_signatures: usize,
    /// Events produced per second (Rollback RPCs, one after the other).
    pub produced_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Nearest-rank percentile of sorted values (`p` in [0, 1]); NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency and duplicates of `hits` (one run's requests, in arrival order).
fn tally(run: &str, events: usize, produced_per_s: f64, hits: &[Hit]) -> Row {
    let mut seen = std::collections::HashSet::new();
    let mut latencies = Vec::new();
    let mut duplicates = 0;
    for h in hits.iter().filter(|h| (200..300).contains(&h.answered)) {
        if !seen.insert(h.event_id.clone()) {
            duplicates += 1;
            continue;
        }
        if let Some(c) = h.created_at {
            latencies.push((h.at - c).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e3);
        }
    }
    latencies.sort_by(f64::total_cmp);
    Row {
        run: run.into(),
        events,
        delivered: seen.len(),
        duplicates,
        requests: hits.len(),
        bad_signatures: hits.iter().filter(|h| !h.signature_ok).count(),
        produced_per_s,
        p50_ms: percentile(&latencies, 0.5),
        p90_ms: percentile(&latencies, 0.9),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
    }
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| receiver | events | delivered | duplicates | requests | bad signatures | produced events/s | p50 ms | p90 ms | p99 ms | max ms |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            r.run,
            r.events,
            r.delivered,
            r.duplicates,
            r.requests,
            r.bad_signatures,
            r.produced_per_s,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms
        ));
    }
    out
}

/// Trains one `tiny` task of [`MODEL`] to its end (it makes the next version).
async fn train(
    c: &mut ctp_api::pb::continual_trainer_client::ContinualTrainerClient<
        tonic::transport::Channel,
    >,
    name: &str,
) -> Result<()> {
    let mut h = header(MODEL, 1);
    h.preset = "tiny".into();
    h.task_name = name.into();
    if let Some(s) = h.settings.as_mut() {
        s.batch_size = Some(5);
    }
    let t = submit(c, h, samples(16, 32, false), 16).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let got = c
            .get_task(pb::GetTaskRequest {
                task_id: t.id.clone(),
            })
            .await?
            .into_inner();
        match pb::TaskState::try_from(got.state) {
            Ok(pb::TaskState::Succeeded) => return Ok(()),
            Ok(pb::TaskState::Queued | pb::TaskState::Running) => {}
            other => bail!("task {name} ended {other:?}: {}", got.error),
        }
        if Instant::now() > deadline {
            bail!("task {name} did not finish in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run(a: &WebhooksArgs) -> Result<String> {
    let (receiver, addr) = Receiver::start().await?;
    let hook = format!(
        "[{{url = \"http://{addr}/hook\", events = [\"head.moved\"], secret = {SECRET:?}, \
         backoff_seconds = {}, max_backoff_seconds = {}}}]",
        a.backoff_seconds,
        a.backoff_seconds.max(600.0)
    );
    let env = [
        ("CTP__ENGINE__DEVICE", "\"cpu\"".to_string()),
        ("CTP__ENGINE__THREADS", "1".to_string()),
        ("CTP__WEBHOOKS", hook),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .to_vec();
    let dir = tempfile::tempdir()?;
    let d = Daemon::start_in(dir.path(), env).await?;
    let mut c = client(&d.addr).await?;
    let t0 = Instant::now();
    train(&mut c, "v1").await?;
    train(&mut c, "v2").await?;
    eprintln!(
        "versions 1 and 2 trained in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let mut runs = vec![("200", false)];
    if !a.skip_retry {
        runs.push(("500 first", true));
    }
    let mut rows = Vec::new();
    for (name, fail_first) in runs {
        receiver.fail_first.store(fail_first, Ordering::SeqCst);
        let reason = format!("bench {name}");
        let started = Instant::now();
        for i in 0..a.events {
            c.rollback(pb::RollbackRequest {
                model: MODEL.into(),
                version: if i % 2 == 0 { 1 } else { 2 },
                expected_head: None,
                reason: reason.clone(),
            })
            .await
            .with_context(|| format!("rollback {i}"))?;
        }
        let produced = a.events as f64 / started.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(a.wait_seconds);
        loop {
            let hits = receiver.hits(&reason);
            let delivered: std::collections::HashSet<&str> = hits
                .iter()
                .filter(|h| h.answered == 200)
                .map(|h| h.event_id.as_str())
                .collect();
            if delivered.len() >= a.events || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A late duplicate would come within a poll or two.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let row = tally(name, a.events, produced, &receiver.hits(&reason));
        eprintln!(
            "{row:?} (run took {:.1} s)",
            started.elapsed().as_secs_f64()
        );
        rows.push(row);
    }
    d.stop().await?;
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(format!(
        "One webhook subscribed to head.moved (backoff_seconds {}); {} Rollback RPCs per run, \
         one after the other, alternating the head between versions 1 and 2; latency from the \
         event's created_at to the receiver's 2xx answer.\n\n{}",
        a.backoff_seconds,
        a.events,
        table(&rows)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, created_ms: i64, at_ms: i64, answered: u16) -> Hit {
        let t = |ms| DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000 + ms).unwrap();
        Hit {
            at: t(at_ms),
            event_id: id.into(),
            created_at: Some(t(created_ms)),
            reason: "r".into(),
            answered,
            signature_ok: id != "bad",
        }
    }

    #[test]
    fn percentiles_duplicates_and_the_table() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(
            [0.5, 0.9, 0.99, 1.0].map(|p| percentile(&v, p)),
            [50.0, 90.0, 99.0, 100.0]
        );
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
        // "a" failed once, then was delivered twice (one duplicate); latency counts its
        // first 2xx.
        let hits = [
            hit("a", 0, 10, 500),
            hit("a", 0, 2000, 200),
            hit("b", 100, 150, 200),
            hit("a", 0, 2500, 200),
            hit("bad", 0, 30, 200),
        ];
        let r = tally("500 first", 3, 250.0, &hits);
        assert_eq!(
            (r.delivered, r.duplicates, r.requests, r.bad_signatures),
            (3, 1, 5, 1)
        );
        assert_eq!((r.p50_ms, r.max_ms), (50.0, 2000.0));
        let t = table(&[r]);
        assert!(
            t.contains("| 500 first | 3 | 3 | 1 | 5 | 1 | 250 | 50 | 2000 | 2000 | 2000 |"),
            "{t}"
        );
    }
}
