//! `GET /api/tasks/{id}/events`: server-sent events from the WatchTask stream (the same hub,
//! replay and heartbeats). Each event is the JSON of `ctpctl watch --json`; its SSE id is the
//! task's event `seq` (the snapshot has none), so a browser that reconnects sends
//! `Last-Event-ID` and resumes after the last event it saw. Without it the stream starts at
//! `?after=SEQ`, or by default at the current end (the snapshot carries the state).
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::Deserialize;
use tokio_stream::{Stream, StreamExt};

use super::api::req;
use super::{HttpError, Shared, Viewer};
use ctp_api::json::event_json;
use ctp_api::pb::{self, continual_trainer_server::ContinualTrainer};

#[derive(Deserialize)]
pub struct EventsQuery {
    after: Option<u64>,
}

fn to_sse(ev: &pb::TaskEvent) -> Event {
    let j = event_json(ev);
    let kind = j["type"].as_str().unwrap_or("message").to_string();
    let e = Event::default().event(kind).data(j.to_string());
    match ev.event {
        Some(pb::task_event::Event::Snapshot(_)) => e,
        _ => e.id(ev.seq.to_string()),
    }
}

pub async fn events(
    State(ctx): State<Shared>,
    v: Viewer,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpError> {
    let resume = headers
        .get("last-event-id")
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    let after = match resume.or(q.after) {
        Some(a) => a,
        None => ctx.state.store.last_event_seq(&id).await?.max(0) as u64,
    };
    let msg = pb::WatchTaskRequest {
        task_id: id,
        after_seq: after,
    };
    let stream = ctx.service().watch_task(req(&v.0, msg)).await?.into_inner();
    // Reconnect after 2 s (the browser's default is 3 s); the stream ends on the terminal
    // event or when the daemon drains (the client then resumes from its last id).
    let retry = Event::default().retry(Duration::from_secs(2));
    let first = tokio_stream::once(Ok::<Event, Infallible>(retry));
    let events = stream.map_while(|item| item.ok().map(|ev| Ok::<Event, Infallible>(to_sse(&ev))));
    Ok(
        Sse::new(first.chain(events))
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
}
