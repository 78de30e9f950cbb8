//! The webhook outbox (issue #26 §3): events recorded in the same transaction as the change
//! that caused them, so a change is never committed without its event nor an event without
//! its change. Each event is one `webhook_events` row (its id, type and the exact JSON body
//! every attempt sends) and one `webhook_deliveries` row per webhook subscribed to its type;
//! `deliveries` claims and settles those rows for the delivery loop (`crate::webhooks`).
//!
//! The body is `{"id", "type", "created_at", "data"}`; `data` per type is built here from the
//! rows the transaction already holds (docs/webhooks.md lists the fields).

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::db::{args, now, Exec};
use super::rows::load_task;
use super::{HeadChange, Result, Store, TaskRow, TaskState, VersionRow};

/// The event types a webhook may subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WebhookEvent {
    /// A task produced a version (also when the promotion gate refused it).
    TaskSucceeded,
    /// A task failed.
    TaskFailed,
    /// A task was cancelled (queued, or stopped at a step boundary).
    TaskCancelled,
    /// A running task was preempted (`Store::preempt_job`).
    TaskPreempted,
    /// The promotion gate refused a new version; the head stayed.
    VersionRejected,
    /// A model's head moved: a task's version was promoted, or a rollback.
    HeadMoved,
    /// A submission was refused for a quota (`Store::record_quota_exceeded`).
    QuotaExceeded,
}

impl WebhookEvent {
    /// Every type, in the order the docs list them.
    pub const ALL: [WebhookEvent; 7] = [
        WebhookEvent::TaskSucceeded,
        WebhookEvent::TaskFailed,
        WebhookEvent::TaskCancelled,
        WebhookEvent::TaskPreempted,
        WebhookEvent::VersionRejected,
        WebhookEvent::HeadMoved,
        WebhookEvent::QuotaExceeded,
    ];

    /// The name in configuration and in the body's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::TaskSucceeded => "task.succeeded",
            WebhookEvent::TaskFailed => "task.failed",
            WebhookEvent::TaskCancelled => "task.cancelled",
            WebhookEvent::TaskPreempted => "task.preempted",
            WebhookEvent::VersionRejected => "version.rejected",
            WebhookEvent::HeadMoved => "head.moved",
            WebhookEvent::QuotaExceeded => "quota.exceeded",
        }
    }

    /// The type named `name`, if there is one.
    pub fn parse(name: &str) -> Option<WebhookEvent> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// Which webhooks (by URL, their identity in the outbox) take which event types: the
/// daemon's configuration, given to the store at startup. Empty: nothing is recorded.
#[derive(Clone, Debug, Default)]
pub struct WebhookRoutes {
    targets: Vec<(String, BTreeSet<WebhookEvent>)>,
    /// Signalled each time an event is recorded, so this daemon's delivery loop claims it at
    /// once instead of at its next poll ([`Store::webhook_events_recorded`]).
    recorded: Arc<Notify>,
}

impl PartialEq for WebhookRoutes {
    fn eq(&self, other: &Self) -> bool {
        self.targets == other.targets
    }
}

impl WebhookRoutes {
    /// Routes from `(url, event types)` pairs.
    pub fn new(targets: impl IntoIterator<Item = (String, Vec<WebhookEvent>)>) -> Self {
        let targets = targets
            .into_iter()
            .map(|(url, events)| (url, events.into_iter().collect()))
            .collect();
        WebhookRoutes {
            targets,
            recorded: Arc::default(),
        }
    }

    /// Every configured webhook URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.targets.iter().map(|(url, _)| url.clone()).collect()
    }

    /// True if some webhook takes `event`.
    pub fn wants(&self, event: WebhookEvent) -> bool {
        self.targets.iter().any(|(_, e)| e.contains(&event))
    }

    fn subscribers(&self, event: WebhookEvent) -> impl Iterator<Item = &str> {
        self.targets
            .iter()
            .filter(move |(_, e)| e.contains(&event))
            .map(|(url, _)| url.as_str())
    }
}

/// Records `event` with `data` for every webhook subscribed to its type, inside the caller's
/// transaction (it commits or rolls back with the change that caused it). Returns the event
/// id, or `None` when no webhook takes this type (nothing is written). This is the one way to
/// emit an event; `task.preempted` and `quota.exceeded` are emitted by calling it from the
/// transaction that preempts or refuses.
pub(crate) async fn enqueue_webhook_event(
    ex: &mut Exec<'_>,
    routes: &WebhookRoutes,
    event: WebhookEvent,
    data: Value,
) -> Result<Option<String>> {
    let endpoints: Vec<&str> = routes.subscribers(event).collect();
    if endpoints.is_empty() {
        return Ok(None);
    }
    let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    let at = now();
    let body = json!({"id": id, "type": event.as_str(), "created_at": time(at), "data": data});
    ex.execute(
        "INSERT INTO webhook_events (id, event_type, body, created_at) VALUES ($1, $2, $3, $4)",
        args![&id, event.as_str(), body.to_string(), at],
    )
    .await?;
    for endpoint in endpoints {
        ex.execute(
            "INSERT INTO webhook_deliveries (event_id, endpoint, state, next_attempt_at) \
             VALUES ($1, $2, 'pending', $3)",
            args![&id, endpoint, at],
        )
        .await?;
    }
    // Before the commit, which the store's callers do: on SQLite the loop's claim (a write
    // transaction) waits for this one's commit and sees the event; on Postgres it may run
    // first and miss it, and the loop looks again shortly (`webhooks::run`).
    routes.recorded.notify_one();
    Ok(Some(id))
}

impl Store {
    /// Signalled (a stored permit if nobody waits) whenever this store records a webhook
    /// event, possibly just before its transaction commits: the delivery loop waits on it
    /// between polls. Events recorded by other daemons of a shared database are not signalled.
    pub fn webhook_events_recorded(&self) -> Arc<Notify> {
        self.webhooks.recorded.clone()
    }
}

/// `task.succeeded` / `task.failed` / `task.cancelled` for a task that just reached that
/// state (`version`: the one it produced).
pub(super) async fn task_ended(
    ex: &mut Exec<'_>,
    routes: &WebhookRoutes,
    task: &TaskRow,
    version: Option<&VersionRow>,
) -> Result<()> {
    let event = match task.state {
        TaskState::Succeeded => WebhookEvent::TaskSucceeded,
        TaskState::Failed => WebhookEvent::TaskFailed,
        TaskState::Cancelled => WebhookEvent::TaskCancelled,
        TaskState::Queued | TaskState::Running => return Ok(()),
    };
    let mut data = json!({"task": task_json(task)});
    if let Some(v) = version {
        data["version"] = version_json(v);
    }
    enqueue_webhook_event(ex, routes, event, data).await?;
    Ok(())
}

/// The events of a committed version: `task.succeeded`, then `version.rejected` (the gate
/// refused it) or `head.moved` (`change`: the move to it).
pub(super) async fn version_committed(
    ex: &mut Exec<'_>,
    routes: &WebhookRoutes,
    version: &VersionRow,
    change: Option<&HeadChange>,
) -> Result<()> {
    let task = load_task(ex, &version.task_id).await?;
    task_ended(ex, routes, &task, Some(version)).await?;
    match (&version.rejected_reason, change) {
        (Some(reason), _) => {
            let data = json!({
                "model": version.model,
                "reason": reason,
                "version": version_json(version),
                "task": task_json(&task),
            });
            enqueue_webhook_event(ex, routes, WebhookEvent::VersionRejected, data).await?;
        }
        (None, Some(change)) => head_moved(ex, routes, change, version).await?,
        (None, None) => {}
    }
    Ok(())
}

/// `head.moved`: who moved the model's head from where to `head`, and why.
pub(super) async fn head_moved(
    ex: &mut Exec<'_>,
    routes: &WebhookRoutes,
    change: &HeadChange,
    head: &VersionRow,
) -> Result<()> {
    let data = json!({
        "model": change.model,
        "from_version": change.from_version,
        "to_version": change.to_version,
        "who": change.who,
        "reason": change.reason,
        "at": time(change.at),
        "change_id": change.id,
        "version": version_json(head),
    });
    enqueue_webhook_event(ex, routes, WebhookEvent::HeadMoved, data).await?;
    Ok(())
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn task_json(t: &TaskRow) -> Value {
    json!({
        "id": t.id,
        "model": t.model,
        "name": t.name,
        "state": t.state.as_str(),
        "idempotency_key": t.idempotency_key,
        "base_version": t.base_version,
        "produced_version": t.produced_version,
        "error": t.error,
        "rejected_reason": t.rejected_reason,
        "created_at": time(t.created_at),
        "started_at": t.started_at.map(time),
        "finished_at": t.finished_at.map(time),
    })
}

/// A version with its accuracy row (Rm and the six recalls per lineage task, then the union
/// of their eval splits) and its forgetting per earlier task.
fn version_json(v: &VersionRow) -> Value {
    let evals: Vec<Value> = v
        .evals
        .iter()
        .map(|e| {
            json!({
                "scope": e.scope.as_str(),
                "task_id": e.task_id,
                "task_name": e.task_name,
                "rm": e.rm,
                "tr1": e.tr1, "tr5": e.tr5, "tr10": e.tr10,
                "ir1": e.ir1, "ir5": e.ir5, "ir10": e.ir10,
            })
        })
        .collect();
    let forgetting: Vec<Value> = v
        .forgetting
        .iter()
        .map(|(task_id, value)| json!({"task_id": task_id, "value": value}))
        .collect();
    json!({
        "model": v.model,
        "version": v.version,
        "parent": v.parent,
        "task_id": v.task_id,
        "task_name": v.task_name,
        "sha256": v.sha256,
        "created_at": time(v.created_at),
        "is_head": v.is_head,
        "rejected_reason": v.rejected_reason,
        "union_rm": v.union_eval().map(|e| e.rm),
        "average_forgetting": v.average_forgetting,
        "bwt": v.bwt,
        "momentum_syncs": v.momentum_syncs,
        "evals": evals,
        "forgetting": forgetting,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip_and_routes_pick_subscribers() {
        for e in WebhookEvent::ALL {
            assert_eq!(WebhookEvent::parse(e.as_str()), Some(e));
        }
        assert_eq!(WebhookEvent::parse("task.done"), None);
        let routes = WebhookRoutes::new([
            ("http://a".into(), vec![WebhookEvent::HeadMoved]),
            (
                "http://b".into(),
                vec![WebhookEvent::HeadMoved, WebhookEvent::TaskFailed],
            ),
        ]);
        let heads: Vec<&str> = routes.subscribers(WebhookEvent::HeadMoved).collect();
        assert_eq!(heads, ["http://a", "http://b"]);
        assert!(routes.wants(WebhookEvent::TaskFailed));
        assert!(!routes.wants(WebhookEvent::TaskSucceeded));
        assert!(!WebhookRoutes::default().wants(WebhookEvent::HeadMoved));
    }
}
