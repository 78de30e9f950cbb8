//! The delivery loop: claim due deliveries from the outbox, POST each one signed, record the
//! outcome (delivered; retry after a backoff with jitter; dead after `max_attempts`).
use std::sync::Arc;
use std::time::Duration;

use super::config::{display_url, Webhook};
use super::sign;
use crate::errors::error_chain;
use crate::state::AppState;
use crate::store::{Backend, DeliveryOutcome, WebhookDelivery};

/// How often the outbox is polled when nothing was due: the longest wait for a retry that
/// came due, or for an event another daemon of a shared database recorded. This daemon's own
/// events wake the loop at once (`Store::webhook_events_recorded`).
const POLL: Duration = Duration::from_secs(1);
/// After a wake-up by a recorded event that found nothing due, the loop looks again this soon
/// (on Postgres the signal can come just before the event's transaction commits).
const RECHECK: Duration = Duration::from_millis(50);
/// Most deliveries claimed (and sent concurrently) at once.
const BATCH: i64 = 16;
/// A claim outlives the longest attempt by this much.
const CLAIM_MARGIN: Duration = Duration::from_secs(30);

/// Delivers until the daemon drains; returns at once when no webhook is configured.
///
/// First it releases the claims this daemon's previous process held (SQLite: all claims,
/// the daemon is alone; Postgres: those of its own worker id; a dead peer's claims run out
/// by themselves), so what was being sent at a crash is sent again at once.
pub async fn run(state: Arc<AppState>) {
    let hooks = state.settings.webhooks.clone();
    if hooks.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "webhooks: no HTTP client; nothing is delivered");
            return;
        }
    };
    let endpoints: Vec<String> = hooks.iter().map(|h| h.url.clone()).collect();
    let lease = hooks.iter().map(Webhook::timeout).max().unwrap_or_default() + CLAIM_MARGIN;
    let held_by = match state.store.backend() {
        Backend::Sqlite => None,
        Backend::Postgres => Some(state.worker_id.as_str()),
    };
    loop {
        match state.store.release_webhook_claims(held_by).await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(
                        deliveries = n,
                        "webhooks: released the claims of a previous run"
                    );
                }
                break;
            }
            Err(_) if state.is_draining() => return,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "webhooks: cannot read the outbox; retrying");
                tokio::time::sleep(POLL).await;
            }
        }
    }
    let recorded = state.store.webhook_events_recorded();
    let mut signalled = false;
    while !state.is_draining() {
        let claim = state
            .store
            .claim_webhook_deliveries(&state.worker_id, &endpoints, lease, BATCH)
            .await;
        let batch = match claim {
            Ok(b) => b,
            Err(e) => {
                if !state.is_draining() {
                    tracing::warn!(error = %error_chain(&e), "webhooks: cannot claim deliveries; retrying");
                }
                Vec::new()
            }
        };
        if batch.is_empty() {
            let wait = if signalled { RECHECK } else { POLL };
            signalled = tokio::select! {
                _ = recorded.notified() => true,
                _ = tokio::time::sleep(wait) => false,
            };
            continue;
        }
        let mut sends = tokio::task::JoinSet::new();
        for d in batch {
            // Claims only name configured endpoints.
            let Some(hook) = hooks.iter().find(|h| h.url == d.endpoint).cloned() else {
                continue;
            };
            let (state, client) = (state.clone(), client.clone());
            sends.spawn(async move { attempt(&state, &client, &hook, d).await });
        }
        while sends.join_next().await.is_some() {}
    }
}

/// Sends one claimed delivery and records what came of it.
async fn attempt(state: &AppState, client: &reqwest::Client, hook: &Webhook, d: WebhookDelivery) {
    let metrics = &state.metrics;
    let outcome = match send(client, hook, &d).await {
        Ok(status) => {
            metrics.observe_webhook_delivered();
            DeliveryOutcome::Delivered { status }
        }
        Err((status, error)) => {
            let attempts = u32::try_from(d.attempts).unwrap_or(u32::MAX);
            let dead = attempts >= hook.max_attempts;
            metrics.observe_webhook_failed(dead);
            let url = display_url(&hook.url);
            if dead {
                tracing::warn!(event = %d.event_id, url = %url, attempts, error = %error, "webhook delivery is dead: no attempt left");
                DeliveryOutcome::Dead { status, error }
            } else {
                let delay = hook.retry_delay(attempts, jitter());
                tracing::info!(event = %d.event_id, url = %url, attempts, retry_in = ?delay, error = %error, "webhook attempt failed");
                let at = chrono::Utc::now()
                    + chrono::Duration::from_std(delay)
                        .unwrap_or_else(|_| chrono::Duration::days(1));
                DeliveryOutcome::Retry { at, status, error }
            }
        }
    };
    match state.store.record_webhook_attempt(&d, &outcome).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(event = %d.event_id, "webhooks: the claim was taken over; its outcome is not recorded")
        }
        Err(e) => {
            tracing::warn!(event = %d.event_id, error = %error_chain(&e), "webhooks: outcome not recorded; the claim runs out and the delivery is attempted again")
        }
    }
}

/// One signed POST. `Ok(status)` for 2xx; otherwise the status (if any) and why.
async fn send(
    client: &reqwest::Client,
    hook: &Webhook,
    d: &WebhookDelivery,
) -> Result<u16, (Option<u16>, String)> {
    let timestamp = chrono::Utc::now().timestamp();
    let body = d.body.clone().into_bytes();
    let signature = sign::header_value(hook.secret.as_bytes(), timestamp, &body);
    let sent = client
        .post(&hook.url)
        .timeout(hook.timeout())
        .header("content-type", "application/json")
        .header("user-agent", concat!("ctpd/", env!("CARGO_PKG_VERSION")))
        .header(sign::HEADER, signature)
        .header("ctp-event-id", &d.event_id)
        .header("ctp-event-type", &d.event_type)
        .header("ctp-delivery-attempt", d.attempts.to_string())
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
        Ok(r) => Err((Some(r.status().as_u16()), format!("HTTP {}", r.status()))),
        // Without the URL: its query may hold a credential.
        Err(e) => Err((None, error_chain(&e.without_url()))),
    }
}

/// A number in [0, 1) from the OS's randomness (through a v4 UUID; its low 48 bits are
/// random).
fn jitter() -> f64 {
    let (_, low) = uuid::Uuid::new_v4().as_u64_pair();
    (low & ((1 << 48) - 1)) as f64 / (1u64 << 48) as f64
}
