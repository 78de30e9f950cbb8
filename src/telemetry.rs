//! Logging (tracing) and Prometheus metrics, with one emission point per event.
//!
//! Metric names follow `ctp_<name>_<unit>[_total]`. `/metrics` is served by a tiny HTTP/1.1
//! responder on `metrics_listen` (it answers GET /metrics and 404 otherwise).
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::store::{Store, TaskState};
use crate::trainer::StepProgress;

/// Initialises tracing once (`RUST_LOG` filters; default info).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

pub struct Metrics {
    registry: Registry,
    queue_depth: IntGauge,
    tasks: IntGaugeVec,
    steps: IntCounter,
    samples_per_second: Gauge,
    step_seconds: Histogram,
    checkpoint_seconds: Histogram,
    drift: Gauge,
    syncs: IntCounter,
    forgetting: Gauge,
    engine: IntGaugeVec,
    webhook_delivered: IntCounter,
    webhook_failed: IntCounter,
    webhook_dead: IntCounter,
    webhook_pending: IntGauge,
    preemptions: IntCounter,
    quota_exceeded: IntCounterVec,
    quota_used: GaugeVec,
    quota_limit: GaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid histogram")
        };
        let m = Metrics {
            queue_depth: IntGauge::new("ctp_queue_depth", "Tasks waiting in the queue")
                .expect("valid"),
            tasks: IntGaugeVec::new(Opts::new("ctp_tasks", "Tasks by state"), &["state"])
                .expect("valid"),
            steps: IntCounter::new("ctp_train_steps_total", "Training steps completed")
                .expect("valid"),
            samples_per_second: Gauge::new(
                "ctp_train_samples_per_second",
                "Training throughput of the running task",
            )
            .expect("valid"),
            step_seconds: hist(
                "ctp_step_duration_seconds",
                "Wall time of one training step",
                vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0],
            ),
            checkpoint_seconds: hist(
                "ctp_checkpoint_write_seconds",
                "Recording a mid-task checkpoint",
                vec![0.001, 0.01, 0.1, 0.5, 1.0, 5.0],
            ),
            drift: Gauge::new(
                "ctp_momentum_drift_ratio",
                "Drift between online and momentum model at the latest check",
            )
            .expect("valid"),
            syncs: IntCounter::new("ctp_momentum_syncs_total", "Momentum model syncs")
                .expect("valid"),
            forgetting: Gauge::new(
                "ctp_average_forgetting_rm",
                "Average forgetting (Rm points) of the newest version",
            )
            .expect("valid"),
            engine: IntGaugeVec::new(
                Opts::new(
                    "ctp_engine_info",
                    "The training engine's device and precision (value 1)",
                ),
                &["device", "precision"],
            )
            .expect("valid"),
            webhook_delivered: IntCounter::new(
                "ctp_webhook_deliveries_total",
                "Webhook events delivered (answered 2xx) by this daemon",
            )
            .expect("valid"),
            webhook_failed: IntCounter::new(
                "ctp_webhook_failed_attempts_total",
                "Webhook attempts that failed (no answer, timeout, or not 2xx)",
            )
            .expect("valid"),
            webhook_dead: IntCounter::new(
                "ctp_webhook_dead_total",
                "Webhook deliveries given up after their last attempt",
            )
            .expect("valid"),
            webhook_pending: IntGauge::new(
                "ctp_webhook_pending",
                "Webhook deliveries waiting for an attempt (all daemons of the database)",
            )
            .expect("valid"),
            preemptions: IntCounter::new(
                "ctp_preemptions_total",
                "Running tasks this daemon paused for higher-priority work",
            )
            .expect("valid"),
            quota_exceeded: IntCounterVec::new(
                Opts::new(
                    "ctp_quota_exceeded_total",
                    "Submissions refused for a quota",
                ),
                &["caller", "quota"],
            )
            .expect("valid"),
            quota_used: GaugeVec::new(
                Opts::new(
                    "ctp_quota_used",
                    "Each caller's use per quota (tasks, bytes, training seconds in 24 h)",
                ),
                &["caller", "quota"],
            )
            .expect("valid"),
            quota_limit: GaugeVec::new(
                Opts::new("ctp_quota_limit", "Each caller's configured quota limits"),
                &["caller", "quota"],
            )
            .expect("valid"),
            registry,
        };
        for c in [
            Box::new(m.queue_depth.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.tasks.clone()),
            Box::new(m.steps.clone()),
            Box::new(m.samples_per_second.clone()),
            Box::new(m.step_seconds.clone()),
            Box::new(m.checkpoint_seconds.clone()),
            Box::new(m.drift.clone()),
            Box::new(m.syncs.clone()),
            Box::new(m.forgetting.clone()),
            Box::new(m.engine.clone()),
            Box::new(m.webhook_delivered.clone()),
            Box::new(m.webhook_failed.clone()),
            Box::new(m.webhook_dead.clone()),
            Box::new(m.webhook_pending.clone()),
            Box::new(m.preemptions.clone()),
            Box::new(m.quota_exceeded.clone()),
            Box::new(m.quota_used.clone()),
            Box::new(m.quota_limit.clone()),
        ] {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }
}

impl Metrics {
    /// Records the engine's device ("cpu", "cuda:0") and precision ("fp32", "bf16").
    pub fn set_engine(&self, device: &str, precision: &str) {
        self.engine.with_label_values(&[device, precision]).set(1);
    }

    pub fn observe_step(&self, p: &StepProgress) {
        self.steps.inc();
        self.step_seconds.observe(p.times.step_ms / 1e3);
        self.samples_per_second.set(p.samples_per_sec);
        if let Some(d) = p.drift {
            self.drift.set(d);
        }
    }

    pub fn observe_sync(&self, drift: f64) {
        self.syncs.inc();
        self.drift.set(drift);
    }

    pub fn observe_checkpoint(&self, seconds: f64) {
        self.checkpoint_seconds.observe(seconds);
    }

    pub fn observe_forgetting(&self, v: f64) {
        self.forgetting.set(v);
    }

    /// A webhook delivery answered 2xx.
    pub fn observe_webhook_delivered(&self) {
        self.webhook_delivered.inc();
    }

    /// A webhook attempt failed; `dead`: it was the last one.
    pub fn observe_webhook_failed(&self, dead: bool) {
        self.webhook_failed.inc();
        if dead {
            self.webhook_dead.inc();
        }
    }

    /// A running task paused for higher-priority work.
    pub fn observe_preemption(&self) {
        self.preemptions.inc();
    }

    /// A submission refused for `quota` of `caller`.
    pub fn observe_quota_exceeded(&self, caller: &str, quota: &str) {
        self.quota_exceeded
            .with_label_values(&[caller, quota])
            .inc();
    }

    /// The configured limits per caller (once, at startup).
    pub fn set_quota_limits(&self, limits: &[(String, crate::config::Quota)]) {
        for (caller, q) in limits {
            for (name, limit) in [
                ("max_queued_tasks", q.max_queued_tasks.map(|v| v as f64)),
                ("max_stored_bytes", q.max_stored_bytes.map(|v| v as f64)),
                (
                    "max_training_seconds_per_day",
                    q.max_training_seconds_per_day,
                ),
            ] {
                if let Some(l) = limit {
                    self.quota_limit.with_label_values(&[caller, name]).set(l);
                }
            }
        }
    }

    /// Re-reads task counts per state and pending webhook deliveries from the store.
    pub async fn refresh(&self, store: &Store) {
        if let Ok(usage) = store.usage_by_caller().await {
            for (caller, u) in usage {
                for (name, used) in [
                    ("max_queued_tasks", u.queued_tasks as f64),
                    ("max_stored_bytes", u.stored_bytes as f64),
                    ("max_training_seconds_per_day", u.training_seconds_day),
                ] {
                    self.quota_used
                        .with_label_values(&[&caller, name])
                        .set(used);
                }
            }
        }
        if let Ok(stats) = store.webhook_stats().await {
            self.webhook_pending
                .set(stats.iter().map(|s| s.pending).sum());
        }
        for s in [
            TaskState::Queued,
            TaskState::Running,
            TaskState::Succeeded,
            TaskState::Failed,
            TaskState::Cancelled,
        ] {
            let mut n = 0i64;
            let mut token: Option<String> = None;
            loop {
                let Ok((rows, next)) = store
                    .list_tasks(None, Some(s), 1000, token.as_deref())
                    .await
                else {
                    return;
                };
                n += rows.len() as i64;
                match next {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            self.tasks.with_label_values(&[s.as_str()]).set(n);
            if s == TaskState::Queued {
                self.queue_depth.set(n);
            }
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

/// Serves GET /metrics until `shutdown` resolves; `render` produces the exposition text
/// (refreshing the gauges first), so this module never needs the daemon's state.
pub async fn serve_metrics<F, Fut>(
    listener: TcpListener,
    render: F,
    shutdown: impl std::future::Future<Output = ()>,
) where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = String> + Send,
{
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = &mut shutdown => return,
        };
        let Ok((mut sock, _)) = conn else { continue };
        let render = render.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let resp = if req.starts_with("GET /metrics") {
                let body = render().await;
                format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
