//! The JSON endpoints. Each one calls the gRPC service's handler (same scope checks, same
//! validation, same business rules) with the dashboard caller attached, and converts the
//! reply with [`ctp_api::json`]; only listings the gRPC API lacks (models, head
//! history) read the store directly.
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tonic::{Request, Status};

use super::{Ctx, HttpError, Shared, Viewer};
use crate::api::auth::Caller;
use ctp_api::json::{task_json, time, version_json};
use ctp_api::pb::{self, continual_trainer_server::ContinualTrainer};
use ctp_charts::data::lineage_order;

type JsonResult = Result<Json<Value>, HttpError>;

/// A gRPC request as `caller` made it.
pub(super) fn req<T>(caller: &Caller, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.extensions_mut().insert(caller.clone());
    r
}

/// Every version of `model`, by number (NotFound for an unknown model).
pub(super) async fn all_versions(
    ctx: &Ctx,
    caller: &Caller,
    model: &str,
) -> Result<Vec<pb::Version>, HttpError> {
    let svc = ctx.service();
    let (mut out, mut page_token) = (Vec::new(), String::new());
    loop {
        let msg = pb::ListVersionsRequest {
            model: model.into(),
            page_size: 1000,
            page_token,
        };
        let r = svc.list_versions(req(caller, msg)).await?.into_inner();
        out.extend(r.versions);
        if r.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = r.next_page_token;
    }
}

/// Every task (of `model`, if given), oldest first.
async fn all_tasks(
    ctx: &Ctx,
    caller: &Caller,
    model: Option<String>,
) -> Result<Vec<pb::Task>, HttpError> {
    let svc = ctx.service();
    let (mut out, mut page_token) = (Vec::new(), String::new());
    loop {
        let msg = pb::ListTasksRequest {
            model: model.clone(),
            state: 0,
            page_size: 1000,
            page_token,
        };
        let r = svc.list_tasks(req(caller, msg)).await?.into_inner();
        out.extend(r.tasks);
        if r.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = r.next_page_token;
    }
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, HttpError> {
    b.map(|Json(t)| t)
        .map_err(|e| HttpError(Status::invalid_argument(e.body_text())))
}

/// Who the caller is, so the page can show or hide admin controls.
pub async fn whoami(State(ctx): State<Shared>, v: Viewer) -> Json<Value> {
    Json(json!({
        "name": v.0.name,
        "scope": format!("{:?}", v.0.scope).to_lowercase(),
        "admin": v.is_admin(),
        "auth": !ctx.auth.is_open(),
    }))
}

/// Models: head, number of versions, last task, union Rm along the head's lineage.
pub async fn models(State(ctx): State<Shared>, v: Viewer) -> JsonResult {
    let rows = ctx.state.store.list_models().await?;
    let tasks = all_tasks(&ctx, &v.0, None).await?;
    let mut out = Vec::new();
    for m in rows {
        let versions = all_versions(&ctx, &v.0, &m.name).await?;
        let rejected = versions
            .iter()
            .filter(|x| x.state == pb::VersionState::Rejected as i32)
            .count();
        let n = versions.len();
        let (lineage, len) = lineage_order(versions);
        let union: Vec<Value> = lineage[..len]
            .iter()
            .map(|x| json!({"version": x.version, "rm": x.union_eval.as_ref().map(|e| e.rm)}))
            .collect();
        let mine: Vec<&pb::Task> = tasks.iter().filter(|t| t.model == m.name).collect();
        out.push(json!({
            "name": m.name,
            "preset": m.preset,
            "head": m.head_version,
            "versions": n,
            "rejected": rejected,
            "union_rm": union,
            "tasks": mine.len(),
            "last_task": mine.last().map(|t| task_json(t)),
        }));
    }
    Ok(Json(json!({ "models": out })))
}

/// One model: every version, the head-history audit and its tasks.
pub async fn model(State(ctx): State<Shared>, v: Viewer, Path(model): Path<String>) -> JsonResult {
    let versions = all_versions(&ctx, &v.0, &model).await?;
    let history = ctx.state.store.head_history(&model).await?;
    let tasks = all_tasks(&ctx, &v.0, Some(model.clone())).await?;
    let head = versions.iter().find(|x| x.is_head).map(|x| x.version);
    let history: Vec<Value> = history
        .iter()
        .map(|h| {
            let h = crate::api::convert::head_change_to_pb(h);
            json!({"from": h.from, "to": h.to, "at": time(&h.at), "who": h.who, "reason": h.reason})
        })
        .collect();
    Ok(Json(json!({
        "model": model,
        "head": head,
        "versions": versions.iter().map(version_json).collect::<Vec<_>>(),
        "head_history": history,
        "tasks": tasks.iter().map(task_json).collect::<Vec<_>>(),
    })))
}

/// One version with the task (and settings) it was trained with.
pub async fn version(
    State(ctx): State<Shared>,
    v: Viewer,
    Path((model, version)): Path<(String, i64)>,
) -> JsonResult {
    let svc = ctx.service();
    let msg = pb::GetVersionRequest {
        model,
        version: Some(version),
    };
    let ver = svc.get_version(req(&v.0, msg)).await?.into_inner();
    let msg = pb::GetTaskRequest {
        task_id: ver.task_id.clone(),
    };
    let task = svc.get_task(req(&v.0, msg)).await?.into_inner();
    let engine = &ctx.state.engine;
    Ok(Json(json!({
        "version": version_json(&ver),
        "task": task_json(&task),
        "engine": {"device": engine.device, "precision": engine.precision},
    })))
}

#[derive(Deserialize)]
pub struct TasksQuery {
    model: Option<String>,
    limit: Option<usize>,
}

/// Tasks, newest first (`limit`, default 200).
pub async fn tasks(
    State(ctx): State<Shared>,
    v: Viewer,
    Query(q): Query<TasksQuery>,
) -> JsonResult {
    let mut tasks = all_tasks(&ctx, &v.0, q.model).await?;
    let total = tasks.len();
    tasks.reverse();
    tasks.truncate(q.limit.unwrap_or(200).min(1000));
    Ok(Json(json!({
        "tasks": tasks.iter().map(task_json).collect::<Vec<_>>(),
        "total": total,
    })))
}

#[derive(Deserialize)]
pub struct RollbackBody {
    version: i64,
    expected_head: Option<i64>,
    #[serde(default)]
    reason: String,
}

/// Admin: moves the head (compare-and-set on `expected_head`), as the Rollback RPC.
pub async fn rollback(
    State(ctx): State<Shared>,
    v: Viewer,
    Path(model): Path<String>,
    b: Result<Json<RollbackBody>, JsonRejection>,
) -> JsonResult {
    let b = body(b)?;
    let msg = pb::RollbackRequest {
        model,
        version: b.version,
        expected_head: b.expected_head,
        reason: b.reason,
    };
    let r = ctx.service().rollback(req(&v.0, msg)).await?.into_inner();
    Ok(Json(json!({
        "head": r.head.as_ref().map(version_json),
        "change": r.change.map(|h| json!({"from": h.from, "to": h.to, "at": time(&h.at), "who": h.who, "reason": h.reason})),
    })))
}

/// Admin: cancels a task, as the CancelTask RPC. The body must be JSON (`{}`), which a
/// cross-site form cannot send.
pub async fn cancel(
    State(ctx): State<Shared>,
    v: Viewer,
    Path(id): Path<String>,
    b: Result<Json<Value>, JsonRejection>,
) -> JsonResult {
    body(b)?;
    let msg = pb::CancelTaskRequest { task_id: id };
    let t = ctx
        .service()
        .cancel_task(req(&v.0, msg))
        .await?
        .into_inner();
    Ok(Json(json!({ "task": task_json(&t) })))
}
