//! Webhook deliveries: the delivery loop's side of the outbox (`outbox` records them).
//!
//! A daemon claims due rows for a while (`claimed_until`) with a fresh token; each claim
//! counts one attempt. Its outcome is recorded only while the claim is still its own, so a
//! daemon that stalled past its claim, whose row another daemon took over, records nothing
//! (the receiver may then get the event twice: delivery is at least once, and the event id
//! lets it drop the duplicate). On Postgres the claim skips rows another daemon is claiming
//! (`FOR UPDATE SKIP LOCKED`), so two daemons do not normally send the same row.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::db::{args, now, Arg, Backend};
use super::rows::lease_delta;
use super::{Result, Store};

/// A delivery claimed by [`Store::claim_webhook_deliveries`]: one event for one webhook.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct WebhookDelivery {
    /// The delivery row.
    pub id: i64,
    /// The event's id (`evt_…`), the same on every attempt.
    pub event_id: String,
    /// The event type (`task.succeeded`, …).
    pub event_type: String,
    /// The webhook's URL.
    pub endpoint: String,
    /// The JSON body to send, byte for byte the same on every attempt.
    pub body: String,
    /// Attempts started, this one included.
    pub attempts: i64,
    /// The claim's token; the outcome must carry it.
    pub claim_token: String,
}

/// What an attempt came to.
#[derive(Clone, Debug, PartialEq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered {
        /// Its status.
        status: u16,
    },
    /// It failed; try again at `at`.
    Retry {
        /// When the next attempt is due.
        at: DateTime<Utc>,
        /// The receiver's status, if it answered.
        status: Option<u16>,
        /// Why it failed.
        error: String,
    },
    /// It failed and no attempt is left: the delivery is dead.
    Dead {
        /// The receiver's status, if it answered.
        status: Option<u16>,
        /// Why the last attempt failed.
        error: String,
    },
}

/// Deliveries of one webhook by state, and its latest failure (dashboard, metrics).
#[derive(Clone, Debug, Default, PartialEq, sqlx::FromRow)]
pub struct WebhookStats {
    /// The webhook's URL.
    pub endpoint: String,
    /// Waiting for their first or next attempt (or being sent).
    pub pending: i64,
    /// Answered 2xx.
    pub delivered: i64,
    /// Out of attempts.
    pub dead: i64,
    /// The error of its most recent failed attempt, if a pending or dead delivery has one.
    #[sqlx(skip)]
    pub last_error: Option<String>,
    /// When that attempt started.
    #[sqlx(skip)]
    pub last_error_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Claims up to `limit` due deliveries to `endpoints` for `worker` until now + `lease`:
    /// pending, due, and not claimed by anyone (or whose claim ran out). Each claim counts
    /// one attempt.
    pub async fn claim_webhook_deliveries(
        &self,
        worker: &str,
        endpoints: &[String],
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>> {
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let at = now();
        let until = at + lease_delta(lease)?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        let lock = match ex.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let list: Vec<String> = (0..endpoints.len())
            .map(|i| format!("${}", i + 6))
            .collect();
        let sql = format!(
            "UPDATE webhook_deliveries SET claimed_by = $1, claimed_until = $2, \
             claim_token = $3, attempts = attempts + 1, last_attempt_at = $4 \
             WHERE id IN (SELECT id FROM webhook_deliveries \
                 WHERE state = 'pending' AND next_attempt_at <= $4 \
                   AND (claimed_until IS NULL OR claimed_until < $4) \
                   AND endpoint IN ({}) \
                 ORDER BY next_attempt_at, id LIMIT $5{lock})",
            list.join(", ")
        );
        let mut bind = args![worker, until, &token, at, limit.max(1)];
        bind.extend(endpoints.iter().map(|e| Arg::from(e.as_str())));
        if ex.execute(&sql, bind).await? == 0 {
            return Ok(Vec::new());
        }
        let claimed = ex
            .fetch_all(
                "SELECT d.id, d.event_id, e.event_type, d.endpoint, e.body, d.attempts, \
                 d.claim_token FROM webhook_deliveries d \
                 JOIN webhook_events e ON e.id = d.event_id \
                 WHERE d.claim_token = $1 ORDER BY d.id",
                args![&token],
            )
            .await?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Records the outcome of an attempt and ends its claim. Returns false (and changes
    /// nothing) if the claim is no longer this one: it ran out and another daemon took the
    /// row over, which settles it.
    pub async fn record_webhook_attempt(
        &self,
        claim: &WebhookDelivery,
        outcome: &DeliveryOutcome,
    ) -> Result<bool> {
        const CLAIMED: &str = "WHERE id = $1 AND claim_token = $2 AND state = 'pending'";
        const UNCLAIM: &str = "claimed_by = NULL, claimed_until = NULL, claim_token = NULL";
        let key = args![claim.id, &claim.claim_token];
        let status = |s: Option<u16>| Arg::from(s.map(i64::from));
        let (sql, extra) = match outcome {
            DeliveryOutcome::Delivered { status: s } => (
                format!(
                    "UPDATE webhook_deliveries SET state = 'delivered', delivered_at = $3, \
                     last_status = $4, last_error = NULL, {UNCLAIM} {CLAIMED}"
                ),
                vec![Arg::from(now()), status(Some(*s))],
            ),
            DeliveryOutcome::Retry {
                at,
                status: s,
                error,
            } => (
                format!(
                    "UPDATE webhook_deliveries SET next_attempt_at = $3, last_status = $4, \
                     last_error = $5, {UNCLAIM} {CLAIMED}"
                ),
                vec![Arg::from(*at), status(*s), Arg::from(error.as_str())],
            ),
            DeliveryOutcome::Dead { status: s, error } => (
                format!(
                    "UPDATE webhook_deliveries SET state = 'dead', last_status = $3, \
                     last_error = $4, {UNCLAIM} {CLAIMED}"
                ),
                vec![status(*s), Arg::from(error.as_str())],
            ),
        };
        let mut conn = self.db.acquire().await?;
        let bind = key.into_iter().chain(extra).collect();
        Ok(conn.exec().execute(&sql, bind).await? == 1)
    }

    /// Ends the claims of `held_by` (`None`: everyone's) on pending deliveries, so they are
    /// sent again at once: a restarted daemon's claims died with its previous process.
    /// Returns how many were released.
    pub async fn release_webhook_claims(&self, held_by: Option<&str>) -> Result<u64> {
        let mut conn = self.db.acquire().await?;
        Ok(conn
            .exec()
            .execute(
                "UPDATE webhook_deliveries SET claimed_by = NULL, claimed_until = NULL, \
                 claim_token = NULL WHERE state = 'pending' AND claim_token IS NOT NULL \
                 AND ($1 IS NULL OR claimed_by = $1)",
                args![held_by],
            )
            .await?)
    }

    /// Deliveries by webhook and state, with each webhook's latest failure.
    pub async fn webhook_stats(&self) -> Result<Vec<WebhookStats>> {
        let mut conn = self.db.acquire().await?;
        let mut ex = conn.exec();
        let mut stats: Vec<WebhookStats> = ex
            .fetch_all(
                "SELECT endpoint, COUNT(CASE WHEN state = 'pending' THEN 1 END) AS pending, \
                 COUNT(CASE WHEN state = 'delivered' THEN 1 END) AS delivered, \
                 COUNT(CASE WHEN state = 'dead' THEN 1 END) AS dead \
                 FROM webhook_deliveries GROUP BY endpoint ORDER BY endpoint",
                args![],
            )
            .await?;
        for s in &mut stats {
            let last: Option<(Option<String>, Option<DateTime<Utc>>)> = ex
                .fetch_optional(
                    "SELECT last_error, last_attempt_at FROM webhook_deliveries \
                     WHERE endpoint = $1 AND state <> 'delivered' AND last_error IS NOT NULL \
                     ORDER BY last_attempt_at DESC, id DESC LIMIT 1",
                    args![&s.endpoint],
                )
                .await?;
            if let Some((error, at)) = last {
                (s.last_error, s.last_error_at) = (error, at);
            }
        }
        Ok(stats)
    }
}
