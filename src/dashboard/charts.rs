//! `GET /api/models/{model}/charts`: the four charts of `ctpctl report`, drawn by the same
//! code ([`ctp_charts`]) as SVG, from the same inputs (versions and each version's task
//! history replayed through WatchTask).
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};
use tokio_stream::StreamExt;

use super::api::{all_versions, req};
use super::{HttpError, Shared, Viewer};
use crate::api::status::ApiError;
use ctp_api::pb::{self, continual_trainer_server::ContinualTrainer};
use ctp_charts::data::lineage_order;
use ctp_charts::{font, Chart, ReportData, TaskHistory};

pub async fn charts(
    State(ctx): State<Shared>,
    v: Viewer,
    Path(model): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let versions = all_versions(&ctx, &v.0, &model).await?;
    if versions.is_empty() {
        return Ok(Json(json!({ "charts": [] })));
    }
    let (versions, lineage_len) = lineage_order(versions);
    let svc = ctx.service();
    let mut histories = Vec::with_capacity(versions.len());
    for ver in &versions {
        let msg = pb::WatchTaskRequest {
            task_id: ver.task_id.clone(),
            after_seq: 0,
        };
        let mut stream = svc.watch_task(req(&v.0, msg)).await?.into_inner();
        let mut events = Vec::new();
        while let Some(ev) = stream.next().await {
            let ev = ev?;
            let end = matches!(ev.event, Some(pb::task_event::Event::Terminal(_)));
            events.push(ev);
            if end {
                break;
            }
        }
        let mut h = TaskHistory::from_events(&ver.task_id, &ver.task_name, &events);
        h.version = Some(ver.version);
        histories.push(h);
    }
    let data = ReportData {
        model,
        generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        versions,
        lineage_len,
        histories,
        other_tasks: Vec::new(),
    };
    let charts = tokio::task::spawn_blocking(move || {
        let text = font::init().is_some();
        Chart::ALL
            .iter()
            .map(|c| match c.svg(&data, text) {
                Ok(svg) => json!({"name": c.name(), "svg": svg}),
                Err(e) => json!({"name": c.name(), "error": e}),
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("chart rendering crashed: {e}")))?;
    Ok(Json(json!({ "charts": charts })))
}
