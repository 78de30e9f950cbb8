//! What each caller uses (issue #26 §2): its queued and running tasks and stored bundle bytes
//! come from `tasks.submitted_by`; training seconds from `training_usage`, one row per
//! charge of a run's step time.
use chrono::Duration;

use super::db::{args, now, Exec};
use super::outbox::{enqueue_webhook_event, WebhookEvent};
use super::{Result, Store};
use crate::quota::Usage;

/// Usage rows older than this no longer count toward any quota; they are pruned.
const WINDOW_HOURS: i64 = 24;

#[derive(sqlx::FromRow)]
struct Counts {
    caller: String,
    queued: i64,
    bytes: i64,
}

pub(super) async fn usage_of(ex: &mut Exec<'_>, caller: &str) -> Result<Usage> {
    let (queued, bytes): (i64, i64) = ex
        .fetch_one(
            "SELECT CAST(COALESCE(SUM(CASE WHEN state IN ('queued', 'running') THEN 1 ELSE 0 END), 0) AS BIGINT), \
                    CAST(COALESCE(SUM(bundle_bytes), 0) AS BIGINT) \
             FROM tasks WHERE submitted_by = $1",
            args![caller],
        )
        .await?;
    let since = now() - Duration::hours(WINDOW_HOURS);
    let (seconds,): (f64,) = ex
        .fetch_one(
            "SELECT CAST(COALESCE(SUM(seconds), 0) AS DOUBLE PRECISION) FROM training_usage \
             WHERE caller = $1 AND at > $2",
            args![caller, since],
        )
        .await?;
    Ok(Usage {
        queued_tasks: queued.max(0) as u64,
        stored_bytes: bytes.max(0) as u64,
        training_seconds_day: seconds,
    })
}

impl Store {
    /// What `caller` uses now.
    pub async fn usage(&self, caller: &str) -> Result<Usage> {
        let mut conn = self.db.acquire().await?;
        usage_of(&mut conn.exec(), caller).await
    }

    /// Every caller that has tasks or recent training, with its usage (for `/metrics`).
    pub async fn usage_by_caller(&self) -> Result<Vec<(String, Usage)>> {
        let mut conn = self.db.acquire().await?;
        let mut ex = conn.exec();
        let rows: Vec<Counts> = ex
            .fetch_all(
                "SELECT submitted_by AS caller, \
                    CAST(COALESCE(SUM(CASE WHEN state IN ('queued', 'running') THEN 1 ELSE 0 END), 0) AS BIGINT) AS queued, \
                    CAST(COALESCE(SUM(bundle_bytes), 0) AS BIGINT) AS bytes \
                 FROM tasks GROUP BY submitted_by ORDER BY submitted_by",
                args![],
            )
            .await?;
        let since = now() - Duration::hours(WINDOW_HOURS);
        let seconds: Vec<(String, f64)> = ex
            .fetch_all(
                "SELECT caller, CAST(SUM(seconds) AS DOUBLE PRECISION) FROM training_usage \
                 WHERE at > $1 GROUP BY caller",
                args![since],
            )
            .await?;
        let mut out: Vec<(String, Usage)> = rows
            .into_iter()
            .map(|c| {
                (
                    c.caller,
                    Usage {
                        queued_tasks: c.queued.max(0) as u64,
                        stored_bytes: c.bytes.max(0) as u64,
                        training_seconds_day: 0.0,
                    },
                )
            })
            .collect();
        for (caller, s) in seconds {
            match out.iter_mut().find(|(c, _)| *c == caller) {
                Some((_, u)) => u.training_seconds_day = s,
                None => out.push((
                    caller,
                    Usage {
                        training_seconds_day: s,
                        ..Usage::default()
                    },
                )),
            }
        }
        Ok(out)
    }

    /// Records a refused submission for `quota.exceeded` webhooks.
    pub async fn record_quota_exceeded(&self, q: &crate::quota::Exceeded) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        let data = serde_json::json!({
            "caller": q.caller, "quota": q.quota, "used": q.used, "limit": q.limit,
            "message": q.to_string(),
        });
        let mut ex = tx.exec();
        enqueue_webhook_event(&mut ex, &self.webhooks, WebhookEvent::QuotaExceeded, data).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Charges `seconds` of training of `task_id` to `caller`, and prunes charges that left
    /// the window.
    pub async fn charge_training(&self, caller: &str, task_id: &str, seconds: f64) -> Result<()> {
        if seconds <= 0.0 {
            return Ok(());
        }
        let mut conn = self.db.acquire().await?;
        let mut ex = conn.exec();
        let at = now();
        ex.execute(
            "INSERT INTO training_usage (caller, task_id, at, seconds) VALUES ($1, $2, $3, $4)",
            args![caller, task_id, at, seconds],
        )
        .await?;
        ex.execute(
            "DELETE FROM training_usage WHERE at < $1",
            args![at - Duration::hours(2 * WINDOW_HOURS)],
        )
        .await?;
        Ok(())
    }
}
