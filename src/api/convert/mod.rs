//! Every conversion between `ctp.v1` messages and the daemon's own types (store rows, the task
//! domain's settings and events); task settings are in `settings`.
use chrono::{DateTime, Utc};
use ctp_api::pb;

use super::status::ApiError;
use crate::store::{EvalRow, HeadChange, TaskRow, TaskState, VersionRow};
use crate::task::{Priority, ProgressInfo, StoredEvent, TaskEvent, TaskSettings};

mod anchors;
mod export;
mod settings;
pub use anchors::{anchor_eval_to_pb, anchor_suite_to_pb};
pub use export::manifest_to_pb;
pub use settings::{settings_from_pb, settings_to_pb};

/// A task's progress as sent on the wire.
pub fn progress_to_pb(p: &ProgressInfo) -> pb::Progress {
    pb::Progress {
        epoch: p.epoch,
        total_epochs: p.total_epochs,
        step: p.step,
        total_steps: p.total_steps,
        percent: p.percent(),
        eta_seconds: p.eta_seconds,
        losses: p.losses.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        samples_per_second: p.samples_per_second,
        momentum_syncs: p.momentum_syncs,
        resumed_from_step: p.resumed_from_step,
        drift: p.drift,
    }
}

/// A stored event (with its seq and time) as `WatchTask` sends it.
pub fn event_to_pb(e: &TaskEvent) -> pb::TaskEvent {
    use pb::task_event::Event;
    let event = match &e.event {
        StoredEvent::Progress(p) => Event::Progress(progress_to_pb(p)),
        StoredEvent::Sync {
            step,
            k,
            drift,
            threshold,
            duration_ms,
        } => Event::Sync(pb::MomentumSync {
            step: *step,
            k: *k,
            drift: *drift,
            threshold: *threshold,
            duration_ms: *duration_ms,
        }),
        StoredEvent::Terminal {
            state,
            error,
            produced_version,
            rejection,
        } => Event::Terminal(pb::Terminal {
            state: state_to_pb(state.parse().unwrap_or(TaskState::Failed)) as i32,
            error: error.clone(),
            produced_version: *produced_version,
            rejection_reason: rejection.clone(),
        }),
        StoredEvent::Log { message } => Event::Log(pb::Log {
            message: message.clone(),
        }),
        StoredEvent::Preempted {
            count,
            step,
            by_task_id,
        } => Event::Preempted(pb::Preempted {
            count: *count,
            step: *step,
            by_task_id: by_task_id.clone(),
        }),
    };
    pb::TaskEvent {
        seq: e.seq as u64,
        time: Some(timestamp(e.at)),
        event: Some(event),
    }
}

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn state_to_pb(s: TaskState) -> pb::TaskState {
    match s {
        TaskState::Queued => pb::TaskState::Queued,
        TaskState::Running => pb::TaskState::Running,
        TaskState::Succeeded => pb::TaskState::Succeeded,
        TaskState::Failed => pb::TaskState::Failed,
        TaskState::Cancelled => pb::TaskState::Cancelled,
    }
}

pub fn state_from_pb(v: i32) -> Result<Option<TaskState>, ApiError> {
    Ok(match pb::TaskState::try_from(v) {
        Ok(pb::TaskState::Unspecified) => None,
        Ok(pb::TaskState::Queued) => Some(TaskState::Queued),
        Ok(pb::TaskState::Running) => Some(TaskState::Running),
        Ok(pb::TaskState::Succeeded) => Some(TaskState::Succeeded),
        Ok(pb::TaskState::Failed) => Some(TaskState::Failed),
        Ok(pb::TaskState::Cancelled) => Some(TaskState::Cancelled),
        Err(_) => return Err(ApiError::Invalid(format!("state: unknown value {v}"))),
    })
}

pub fn task_to_pb(t: &TaskRow) -> pb::Task {
    let settings: Option<TaskSettings> = serde_json::from_str(&t.settings_json).ok();
    let progress: ProgressInfo = serde_json::from_str(&t.progress_json).unwrap_or_default();
    pb::Task {
        id: t.id.clone(),
        model: t.model.clone(),
        name: t.name.clone(),
        state: state_to_pb(t.state) as i32,
        progress: Some(progress_to_pb(&progress)),
        created_at: Some(timestamp(t.created_at)),
        started_at: t.started_at.map(timestamp),
        finished_at: t.finished_at.map(timestamp),
        error: t.error.clone().unwrap_or_default(),
        produced_version: t.produced_version,
        base_version: t.base_version,
        n_train: t.n_train as u64,
        n_eval: t.n_eval as u64,
        seed: settings.as_ref().map_or(0, |s| s.seed),
        settings: settings.as_ref().map(settings_to_pb),
        idempotency_key: t.idempotency_key.clone(),
        cancel_requested: t.cancel_requested,
        rejection_reason: t.rejected_reason.clone(),
        sources: sources_from_json(t.sources_json.as_deref()),
        priority: priority_to_pb(Priority::from_stored(t.priority)) as i32,
        preemptions: t.preemptions as u32,
        submitted_by: t.submitted_by.clone(),
    }
}

pub fn priority_to_pb(p: Priority) -> pb::TaskPriority {
    match p {
        Priority::Low => pb::TaskPriority::Low,
        Priority::Normal => pb::TaskPriority::Normal,
        Priority::High => pb::TaskPriority::High,
    }
}

/// A request's priority (`field` names it in the error); unset = normal.
pub fn priority_from_pb(field: &str, n: i32) -> Result<Priority, ApiError> {
    match pb::TaskPriority::try_from(n) {
        Ok(pb::TaskPriority::Unspecified) => Ok(Priority::Normal),
        Ok(pb::TaskPriority::Low) => Ok(Priority::Low),
        Ok(pb::TaskPriority::Normal) => Ok(Priority::Normal),
        Ok(pb::TaskPriority::High) => Ok(Priority::High),
        Err(_) => Err(ApiError::Invalid(format!(
            "{field}: unknown priority {n} (1 low, 2 normal, 3 high)"
        ))),
    }
}

/// `Task.sources` from a stored manifest (empty for a streamed upload, or one unreadable).
pub fn sources_from_json(json: Option<&str>) -> Vec<pb::DataSource> {
    let records: Vec<super::submit_ref::SourceRecord> = json
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    records
        .into_iter()
        .map(|r| pb::DataSource {
            url: r.url,
            etag: r.etag.unwrap_or_default(),
            sha256: r.sha256,
            samples: r.samples,
            bytes: r.bytes,
        })
        .collect()
}

fn eval_to_pb(e: &EvalRow) -> pb::TaskEval {
    pb::TaskEval {
        task_id: e.task_id.clone(),
        task_name: e.task_name.clone(),
        tr1: e.tr1,
        tr5: e.tr5,
        tr10: e.tr10,
        ir1: e.ir1,
        ir5: e.ir5,
        ir10: e.ir10,
        rm: e.rm,
    }
}

pub fn version_to_pb(v: &VersionRow) -> pb::Version {
    pb::Version {
        model: v.model.clone(),
        version: v.version,
        parent: v.parent,
        task_id: v.task_id.clone(),
        task_name: v.task_name.clone(),
        checkpoint_sha256: v.sha256.clone(),
        created_at: Some(timestamp(v.created_at)),
        evals: v.task_evals().map(eval_to_pb).collect(),
        union_eval: v.union_eval().map(eval_to_pb),
        average_forgetting: v.average_forgetting,
        forgetting: v
            .forgetting
            .iter()
            .map(|(t, f)| pb::TaskForgetting {
                task_id: t.clone(),
                forgetting: *f,
            })
            .collect(),
        bwt: v.bwt,
        momentum_syncs: v.momentum_syncs as u64,
        momentum_steps: v.momentum_steps as u64,
        is_head: v.is_head,
        state: if v.rejected_reason.is_some() {
            pb::VersionState::Rejected
        } else {
            pb::VersionState::Accepted
        } as i32,
        rejection_reason: v.rejected_reason.clone().unwrap_or_default(),
        device: v.device.clone(),
        precision: v.precision.clone(),
        anchors: v.anchors.iter().map(anchor_eval_to_pb).collect(),
    }
}

pub fn head_change_to_pb(h: &HeadChange) -> pb::HeadChange {
    pb::HeadChange {
        from: h.from_version,
        to: h.to_version,
        at: Some(timestamp(h.at)),
        who: h.who.clone(),
        reason: h.reason.clone(),
    }
}

pub fn backup_to_pb(b: &crate::backup::Backup) -> pb::BackupResponse {
    pb::BackupResponse {
        path: b.path.display().to_string(),
        files: b.manifest.files.len() as u64,
        bytes: b.manifest.total_bytes(),
        schema_version: b.manifest.schema_version,
        created_at: Some(timestamp(b.created_at)),
        database_sha256: b.manifest.database.sha256.clone(),
    }
}

pub fn verify_to_pb(r: &crate::verify::Report, loaded_weights: bool) -> pb::VerifyReport {
    pb::VerifyReport {
        sound: r.is_sound(),
        models: r.models as u64,
        versions: r.versions as u64,
        tasks: r.tasks as u64,
        resume_points: r.resume_points as u64,
        problems: r.problems.clone(),
        unreferenced: r.unreferenced.clone(),
        temp_files: r.temp_files.clone(),
        loaded_weights,
    }
}

pub fn quota_to_pb(
    caller: &str,
    q: &crate::config::Quota,
    u: &crate::quota::Usage,
) -> pb::QuotaUsage {
    let item = |used: f64, limit: Option<f64>| Some(pb::QuotaItem { used, limit });
    pb::QuotaUsage {
        caller: caller.to_owned(),
        queued_tasks: item(u.queued_tasks as f64, q.max_queued_tasks.map(|m| m as f64)),
        stored_bytes: item(u.stored_bytes as f64, q.max_stored_bytes.map(|m| m as f64)),
        training_seconds_per_day: item(u.training_seconds_day, q.max_training_seconds_per_day),
    }
}
