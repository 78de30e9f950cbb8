//! Following a task's event stream to its end, surviving dropped connections and daemon
//! restarts without losing or repeating an event.
//!
//! The resume cursor is the seq of the last *event* processed (progress, sync, log) or of a
//! heartbeat, which the daemon stamps with the last event it sent on that stream. Snapshot
//! seqs are not used as the cursor: a snapshot carries the newest *stored* seq, which can be
//! ahead of the events this client has actually received, and `report` needs every event.
//! Replayed events at or below the cursor are dropped, so a reconnect never duplicates.
use std::time::Duration;

use super::conn::Client;
use super::error::{CliError, CliResult};
use super::output::{is_terminal, state_name};
use ctp_api::pb;
use ctp_api::pb::task_event::Event;

/// Receives the events of a followed task (rendering, collecting).
pub trait Sink {
    /// One event, in seq order, never twice (snapshots and heartbeats may repeat).
    fn event(&mut self, ev: &pb::TaskEvent);
    /// The stream broke; the follower waits `delay` and reconnects.
    fn reconnecting(&mut self, _attempt: u32, _delay: Duration, _why: &str) {}
}

/// How a followed task ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Terminal state (SUCCEEDED, FAILED or CANCELLED).
    pub state: i32,
    /// Error message when FAILED.
    pub error: String,
    /// Version produced when SUCCEEDED.
    pub produced_version: Option<i64>,
    /// Why the promotion gate refused the produced version, if it did.
    pub rejection: Option<String>,
    /// Seq of the last event processed (a resume cursor).
    pub cursor: u64,
}

impl Outcome {
    /// `Ok` on SUCCEEDED, else the exit-code-4 error naming the state and error.
    pub fn into_result(self) -> CliResult<Outcome> {
        if self.state == pb::TaskState::Succeeded as i32 {
            return match &self.rejection {
                None => Ok(self),
                Some(why) => Err(CliError::GateRejected(format!(
                    "task succeeded, but version {} was rejected ({why}); the head did not move",
                    self.produced_version.unwrap_or_default()
                ))),
            };
        }
        let mut msg = format!("task ended {}", state_name(self.state));
        if !self.error.is_empty() {
            msg.push_str(": ");
            msg.push_str(&self.error);
        }
        Err(CliError::TaskEnded(msg))
    }
}

/// Statuses after which reconnecting can help: the daemon is restarting or draining, or
/// the connection broke (which tonic reports as UNKNOWN/INTERNAL with an h2 message).
pub fn retryable(status: &tonic::Status) -> bool {
    use tonic::Code;
    match status.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => true,
        Code::Internal => {
            let m = status.message().to_ascii_lowercase();
            m.contains("h2") || m.contains("connection") || m.contains("stream")
        }
        _ => false,
    }
}

/// Delay before reconnect attempt `n` (1-based): 250 ms doubling, capped at 10 s.
pub fn backoff(n: u32) -> Duration {
    let ms = 250u64.saturating_mul(1u64 << n.saturating_sub(1).min(6));
    Duration::from_millis(ms.min(10_000))
}

/// What one stream connection ended with.
enum StreamEnd {
    Done(Outcome),
    Retry(String),
}

/// Follows `task_id` from `cursor` (0 = the whole stored history, then live events) until
/// a terminal event; gives up after `max_retries` consecutive failed reconnects.
pub async fn follow(
    client: &mut Client,
    task_id: &str,
    mut cursor: u64,
    max_retries: u32,
    sink: &mut dyn Sink,
) -> CliResult<Outcome> {
    let mut failures: u32 = 0;
    loop {
        let req = pb::WatchTaskRequest {
            task_id: task_id.to_string(),
            after_seq: cursor,
        };
        let why = match client.watch_task(req).await {
            Err(s) if retryable(&s) => s.message().to_string(),
            Err(s) => return Err(s.into()),
            Ok(resp) => {
                let mut stream = resp.into_inner();
                match read_stream(&mut stream, &mut cursor, &mut failures, sink).await? {
                    StreamEnd::Done(outcome) => return Ok(outcome),
                    StreamEnd::Retry(why) => why,
                }
            }
        };
        failures += 1;
        if failures > max_retries {
            return Err(CliError::Connect(format!(
                "lost the event stream of task {task_id} ({why}); gave up after {max_retries} \
                 reconnects (resume with after_seq={cursor})"
            )));
        }
        let delay = backoff(failures);
        sink.reconnecting(failures, delay, &why);
        tokio::time::sleep(delay).await;
    }
}

/// Reads one connection's events; resets `failures` once the stream delivers anything.
async fn read_stream(
    stream: &mut tonic::Streaming<pb::TaskEvent>,
    cursor: &mut u64,
    failures: &mut u32,
    sink: &mut dyn Sink,
) -> CliResult<StreamEnd> {
    let mut snapshot: Option<pb::Task> = None;
    loop {
        let ev = match stream.message().await {
            Ok(Some(ev)) => ev,
            Ok(None) => {
                // Closed without a terminal event. If the snapshot already said the task is
                // over there is nothing more to wait for; otherwise resume.
                if let Some(t) = snapshot.filter(|t| is_terminal(t.state)) {
                    return Ok(StreamEnd::Done(Outcome {
                        state: t.state,
                        error: t.error,
                        produced_version: t.produced_version,
                        rejection: t.rejection_reason,
                        cursor: *cursor,
                    }));
                }
                return Ok(StreamEnd::Retry(
                    "stream closed before the task ended".into(),
                ));
            }
            Err(s) if retryable(&s) => return Ok(StreamEnd::Retry(s.message().to_string())),
            Err(s) => return Err(s.into()),
        };
        *failures = 0;
        match &ev.event {
            Some(Event::Snapshot(t)) => {
                snapshot = Some(t.clone());
                sink.event(&ev);
            }
            Some(Event::Heartbeat(_)) => {
                *cursor = (*cursor).max(ev.seq);
                sink.event(&ev);
            }
            Some(Event::ServerClosing(c)) => {
                // The daemon is draining (shutdown): the task is not over; come back later.
                *cursor = (*cursor).max(ev.seq);
                return Ok(StreamEnd::Retry(c.message.clone()));
            }
            Some(Event::Terminal(t)) if !is_terminal(t.state) => {
                // An older daemon's drain marker: the task is not over; come back later.
                *cursor = (*cursor).max(ev.seq);
                return Ok(StreamEnd::Retry(if t.error.is_empty() {
                    "daemon closed the stream".into()
                } else {
                    t.error.clone()
                }));
            }
            Some(Event::Terminal(t)) => {
                *cursor = (*cursor).max(ev.seq);
                sink.event(&ev);
                return Ok(StreamEnd::Done(Outcome {
                    state: t.state,
                    error: t.error.clone(),
                    produced_version: t.produced_version,
                    rejection: t.rejection_reason.clone(),
                    cursor: *cursor,
                }));
            }
            _ => {
                if ev.seq <= *cursor {
                    continue;
                }
                *cursor = ev.seq;
                sink.event(&ev);
            }
        }
    }
}

/// Collects every event (for `report`).
#[derive(Debug, Default)]
pub struct Collect(pub Vec<pb::TaskEvent>);

impl Sink for Collect {
    fn event(&mut self, ev: &pb::TaskEvent) {
        self.0.push(ev.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(6), Duration::from_millis(8000));
        assert_eq!(backoff(30), Duration::from_secs(10));
    }

    #[test]
    fn retryable_statuses() {
        assert!(retryable(&tonic::Status::unavailable("draining")));
        assert!(retryable(&tonic::Status::internal(
            "h2 protocol error: reset"
        )));
        assert!(!retryable(&tonic::Status::internal("database exploded")));
        assert!(!retryable(&tonic::Status::not_found("no such task")));
        assert!(!retryable(&tonic::Status::permission_denied("scope")));
    }

    #[test]
    fn outcome_maps_to_exit_codes() {
        let ok = Outcome {
            state: pb::TaskState::Succeeded as i32,
            error: String::new(),
            produced_version: Some(2),
            rejection: None,
            cursor: 9,
        };
        assert!(ok.clone().into_result().is_ok());
        let rejected = Outcome {
            rejection: Some(
                "promotion gate: average forgetting 30.00 > max_avg_forgetting 20".into(),
            ),
            ..ok.clone()
        };
        let err = rejected.into_result().unwrap_err();
        assert_eq!(err.exit_code(), super::super::error::EXIT_GATE_REJECTED);
        assert!(
            err.to_string()
                .contains("version 2 was rejected (promotion gate: average forgetting 30.00"),
            "{err}"
        );
        let failed = Outcome {
            state: pb::TaskState::Failed as i32,
            error: "NaN loss".into(),
            ..ok
        };
        let err = failed.into_result().unwrap_err();
        assert_eq!(err.exit_code(), super::super::error::EXIT_TASK_FAILED);
        assert_eq!(err.to_string(), "task ended FAILED: NaN loss");
    }
}
