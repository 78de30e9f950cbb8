//! API messages as JSON, for `ctpctl --json` and the dashboard's `/api/...` endpoints.
//!
//! The generated protobuf types have no serde support, so JSON is built by hand here; the
//! field names follow the proto (snake_case) so the output reads like the API docs.
use serde_json::{json, Map, Value};

use crate::pb;

/// `TASK_STATE_SUCCEEDED` → `SUCCEEDED`.
pub fn state_name(state: i32) -> String {
    pb::TaskState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TASK_STATE_")
                .to_string()
        })
        .unwrap_or_else(|_| format!("STATE_{state}"))
}

/// True for SUCCEEDED, FAILED and CANCELLED.
pub fn is_terminal(state: i32) -> bool {
    matches!(
        pb::TaskState::try_from(state),
        Ok(pb::TaskState::Succeeded | pb::TaskState::Failed | pb::TaskState::Cancelled)
    )
}

/// RFC 3339 (UTC, seconds) or empty.
pub fn time(ts: &Option<prost_types::Timestamp>) -> String {
    ts.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn time_json(ts: &Option<prost_types::Timestamp>) -> Value {
    match time(ts) {
        s if s.is_empty() => Value::Null,
        s => Value::String(s),
    }
}

/// Progress as JSON.
pub fn progress_json(p: &pb::Progress) -> Value {
    json!({
        "epoch": p.epoch,
        "total_epochs": p.total_epochs,
        "step": p.step,
        "total_steps": p.total_steps,
        "percent": p.percent,
        "eta_seconds": p.eta_seconds,
        "losses": p.losses,
        "samples_per_second": p.samples_per_second,
        "momentum_syncs": p.momentum_syncs,
        "drift": p.drift,
        "resumed_from_step": p.resumed_from_step,
    })
}

/// Effective settings as JSON.
pub fn settings_json(s: &pb::TrainSettings) -> Value {
    let method = pb::Method::try_from(s.method)
        .map(|m| m.as_str_name().trim_start_matches("METHOD_").to_lowercase())
        .unwrap_or_default();
    let bn = s
        .bn_policy
        .and_then(|b| pb::BnPolicy::try_from(b).ok())
        .map(|b| {
            b.as_str_name()
                .trim_start_matches("BN_POLICY_")
                .to_lowercase()
        });
    let weights = s.loss_weights.as_ref().map(|w| {
        json!({
            "itc": w.itc, "itc_queue": w.itc_queue, "mlm": w.mlm,
            "mlm_distill": w.mlm_distill, "tp_cross": w.tp_cross, "tp_intra": w.tp_intra,
        })
    });
    let replay = s.replay.as_ref().map(
        |r| json!({"samples_per_task": r.samples_per_task, "batch_fraction": r.batch_fraction}),
    );
    json!({
        "epochs": s.epochs,
        "batch_size": s.batch_size,
        "learning_rate": s.learning_rate,
        "drift_threshold": s.drift_threshold,
        "drift_check_every": s.drift_check_every,
        "method": method,
        "bn_policy": bn,
        "loss_weights": weights,
        "replay": replay,
        "momentum_reference_steps": s.momentum_reference_steps,
        "queue_size": s.queue_size,
    })
}

/// A task as JSON.
pub fn task_json(t: &pb::Task) -> Value {
    json!({
        "id": t.id,
        "model": t.model,
        "name": t.name,
        "state": state_name(t.state),
        "progress": t.progress.as_ref().map(progress_json),
        "created_at": time_json(&t.created_at),
        "started_at": time_json(&t.started_at),
        "finished_at": time_json(&t.finished_at),
        "error": t.error,
        "produced_version": t.produced_version,
        "base_version": t.base_version,
        "n_train": t.n_train,
        "n_eval": t.n_eval,
        "settings": t.settings.as_ref().map(settings_json),
        "idempotency_key": t.idempotency_key,
        "cancel_requested": t.cancel_requested,
        "seed": t.seed,
        "rejection_reason": t.rejection_reason,
        "priority": priority_name(t.priority),
        "preemptions": t.preemptions,
        "submitted_by": t.submitted_by,
    })
}

/// `low`, `normal` or `high` (unset is normal).
pub fn priority_name(p: i32) -> &'static str {
    match pb::TaskPriority::try_from(p) {
        Ok(pb::TaskPriority::Low) => "low",
        Ok(pb::TaskPriority::High) => "high",
        _ => "normal",
    }
}

/// An evaluation row as JSON.
pub fn eval_json(e: &pb::TaskEval) -> Value {
    json!({
        "task_id": e.task_id, "task_name": e.task_name,
        "tr1": e.tr1, "tr5": e.tr5, "tr10": e.tr10,
        "ir1": e.ir1, "ir5": e.ir5, "ir10": e.ir10, "rm": e.rm,
    })
}

/// A version as JSON.
pub fn version_json(v: &pb::Version) -> Value {
    let forgetting: Map<String, Value> = v
        .forgetting
        .iter()
        .map(|f| (f.task_id.clone(), json!(f.forgetting)))
        .collect();
    json!({
        "model": v.model,
        "version": v.version,
        "parent": v.parent,
        "task_id": v.task_id,
        "task_name": v.task_name,
        "checkpoint_sha256": v.checkpoint_sha256,
        "created_at": time_json(&v.created_at),
        "evals": v.evals.iter().map(eval_json).collect::<Vec<_>>(),
        "union_eval": v.union_eval.as_ref().map(eval_json),
        "average_forgetting": v.average_forgetting,
        "forgetting": forgetting,
        "bwt": v.bwt,
        "momentum_syncs": v.momentum_syncs,
        "momentum_steps": v.momentum_steps,
        "is_head": v.is_head,
        "state": if v.state == pb::VersionState::Rejected as i32 { "rejected" } else { "accepted" },
        "rejection_reason": v.rejection_reason,
        "device": v.device,
        "precision": v.precision,
        "anchors": v.anchors.iter().map(|a| json!({
            "suite": a.suite, "samples": a.samples,
            "tr1": a.tr1, "tr5": a.tr5, "tr10": a.tr10,
            "ir1": a.ir1, "ir5": a.ir5, "ir10": a.ir10, "rm": a.rm,
        })).collect::<Vec<_>>(),
    })
}

/// A watch event as one JSON object (`--json` prints one per line).
pub fn event_json(ev: &pb::TaskEvent) -> Value {
    use pb::task_event::Event;
    let (kind, body) = match &ev.event {
        Some(Event::Snapshot(t)) => ("snapshot", task_json(t)),
        Some(Event::Progress(p)) => ("progress", progress_json(p)),
        Some(Event::Sync(s)) => (
            "sync",
            json!({"step": s.step, "k": s.k, "drift": s.drift,
                   "threshold": s.threshold, "duration_ms": s.duration_ms}),
        ),
        Some(Event::Heartbeat(_)) => ("heartbeat", json!({})),
        Some(Event::Terminal(t)) => (
            "terminal",
            json!({"state": state_name(t.state), "error": t.error,
                   "produced_version": t.produced_version,
                   "rejection_reason": t.rejection_reason}),
        ),
        Some(Event::Log(l)) => ("log", json!({"message": l.message})),
        Some(Event::ServerClosing(c)) => ("server_closing", json!({"message": c.message})),
        Some(Event::Preempted(p)) => (
            "preempted",
            json!({"count": p.count, "step": p.step, "by_task_id": p.by_task_id}),
        ),
        None => ("unknown", json!({})),
    };
    json!({"seq": ev.seq, "time": time_json(&ev.time), "type": kind, kind: body})
}
