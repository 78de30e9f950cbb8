//! WatchTask: a snapshot, then every event after `after_seq` (replayed from the store), then
//! live events, heartbeats on idle streams, and a terminal event. A disconnecting client only
//! ends its stream; training goes on.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use ctp_api::pb;

use super::convert;
use super::status::ApiError;
use crate::state::AppState;
use crate::task::{StoredEvent, TaskEvent};

type Tx = mpsc::Sender<Result<pb::TaskEvent, Status>>;

/// How often a stream reads the store for events that another daemon wrote.
const STORE_POLL: Duration = Duration::from_secs(1);

/// Starts the stream task; returns its receiver.
pub async fn watch(
    state: Arc<AppState>,
    task_id: String,
    after_seq: u64,
) -> Result<mpsc::Receiver<Result<pb::TaskEvent, Status>>, ApiError> {
    let live = state.hub.subscribe(&task_id);
    let task = state.store.get_task(&task_id).await?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let snapshot_seq = state.store.last_event_seq(&task_id).await.unwrap_or(0);
        let snap = pb::TaskEvent {
            seq: snapshot_seq as u64,
            time: Some(convert::timestamp(chrono::Utc::now())),
            event: Some(pb::task_event::Event::Snapshot(convert::task_to_pb(&task))),
        };
        if tx.send(Ok(snap)).await.is_err() {
            return;
        }
        if let Err(e) = stream_events(&state, &task_id, after_seq as i64, live, &tx).await {
            let _ = tx.send(Err(e.into())).await;
        }
    });
    Ok(rx)
}

fn is_terminal(ev: &pb::TaskEvent) -> bool {
    matches!(ev.event, Some(pb::task_event::Event::Terminal(_)))
}

async fn stream_events(
    state: &AppState,
    task_id: &str,
    after: i64,
    mut live: broadcast::Receiver<TaskEvent>,
    tx: &Tx,
) -> Result<(), ApiError> {
    let mut last = after;
    // Backlog from the store.
    if catch_up(state, task_id, &mut last, tx).await? {
        return Ok(());
    }
    // Already finished and the client has seen everything: end with a terminal event anyway.
    if ended_without_event(state, task_id, last, tx).await? {
        return Ok(());
    }
    let beat = Duration::from_secs(state.settings.heartbeat_seconds.max(1));
    // Live events come only from this process's engine. With a shared store (several daemons
    // on one Postgres) another daemon may hold the task, or take it over mid-watch: its events
    // reach this stream only through the store, so poll it.
    let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + STORE_POLL, STORE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quiet_since = tokio::time::Instant::now();
    let mut shutdown = state.hub.shutdown_signal();
    loop {
        tokio::select! {
            ev = live.recv() => match ev {
                Ok(ev) => {
                    if ev.seq <= last {
                        continue;
                    }
                    if ev.seq > last + 1 && catch_up(state, task_id, &mut last, tx).await? {
                        return Ok(());
                    }
                    if ev.seq <= last {
                        continue;
                    }
                    last = ev.seq;
                    let ev = convert::event_to_pb(&ev);
                    quiet_since = tokio::time::Instant::now();
                    let terminal = is_terminal(&ev);
                    if tx.send(Ok(ev)).await.is_err() || terminal {
                        return Ok(());
                    }
                }
                // Fell behind or the task's channel closed: the store has everything.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if catch_up(state, task_id, &mut last, tx).await? {
                        return Ok(());
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    catch_up(state, task_id, &mut last, tx).await?;
                    return Ok(());
                }
            },
            _ = poll.tick() => {
                let before = last;
                if catch_up(state, task_id, &mut last, tx).await? {
                    return Ok(());
                }
                if last != before {
                    quiet_since = tokio::time::Instant::now();
                } else if quiet_since.elapsed() >= beat {
                    // A quiet stream: say so, and end it if the task ended without a stored
                    // terminal event.
                    if ended_without_event(state, task_id, last, tx).await? {
                        return Ok(());
                    }
                    let hb = pb::TaskEvent { seq: last as u64, time: Some(convert::timestamp(chrono::Utc::now())), event: Some(pb::task_event::Event::Heartbeat(pb::Heartbeat {})) };
                    if tx.send(Ok(hb)).await.is_err() {
                        return Ok(());
                    }
                    quiet_since = tokio::time::Instant::now();
                }
            }
            _ = tx.closed() => return Ok(()),
            _ = shutdown.changed() => {
                let message = format!("daemon shutting down; reconnect with after_seq={last} to continue");
                let ev = pb::TaskEvent {
                    seq: last as u64,
                    time: Some(convert::timestamp(chrono::Utc::now())),
                    event: Some(pb::task_event::Event::ServerClosing(pb::ServerClosing { message: message.clone() })),
                };
                if tx.send(Ok(ev)).await.is_ok() {
                    let _ = tx.send(Err(Status::unavailable(message))).await;
                }
                return Ok(());
            }
        }
    }
}

/// If the stored task is terminal, sends its terminal event (numbered `last`: no stored event
/// follows) and returns true.
async fn ended_without_event(
    state: &AppState,
    task_id: &str,
    last: i64,
    tx: &Tx,
) -> Result<bool, ApiError> {
    let task = state.store.get_task(task_id).await?;
    if !task.state.is_terminal() {
        return Ok(false);
    }
    let _ = tx.send(Ok(terminal_of(&task, last))).await;
    Ok(true)
}

fn terminal_of(task: &crate::store::TaskRow, seq: i64) -> pb::TaskEvent {
    let error = task.error.clone().unwrap_or_default();
    pb::TaskEvent {
        seq: seq as u64,
        time: Some(convert::timestamp(chrono::Utc::now())),
        event: Some(pb::task_event::Event::Terminal(pb::Terminal {
            state: convert::state_to_pb(task.state) as i32,
            error,
            produced_version: task.produced_version,
            rejection_reason: task.rejected_reason.clone(),
        })),
    }
}

/// Sends stored events after `last`; true if a terminal event was sent.
async fn catch_up(
    state: &AppState,
    task_id: &str,
    last: &mut i64,
    tx: &Tx,
) -> Result<bool, ApiError> {
    loop {
        let rows = state.store.events_after(task_id, *last, 500).await?;
        if rows.is_empty() {
            return Ok(false);
        }
        for r in rows {
            let stored: StoredEvent = serde_json::from_str(&r.payload_json)
                .map_err(|e| ApiError::Internal(format!("stored event {}: {e}", r.seq)))?;
            let ev = convert::event_to_pb(&TaskEvent {
                seq: r.seq,
                at: r.at,
                event: stored,
            });
            *last = r.seq;
            let terminal = is_terminal(&ev);
            if tx.send(Ok(ev)).await.is_err() || terminal {
                return Ok(true);
            }
        }
    }
}
