//! The report's data model, derived from API messages by pure functions so that charts and
//! HTML can be tested from synthetic inputs without a daemon.
use std::collections::BTreeMap;

use ctp_api::pb;
use ctp_api::pb::task_event::Event;

/// One progress sample of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressPoint {
    /// Step within the task.
    pub step: u64,
    /// Loss terms by name.
    pub losses: BTreeMap<String, f64>,
}

/// One momentum sync of a task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncPoint {
    /// Step within the task.
    pub step: u64,
    /// Steps since the previous sync.
    pub k: u64,
    /// Drift that triggered it.
    pub drift: f64,
    /// Threshold in force.
    pub threshold: f64,
}

/// What a task's event history says about its training.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskHistory {
    /// Task id.
    pub task_id: String,
    /// Task name.
    pub name: String,
    /// Version the task produced, if any.
    pub version: Option<i64>,
    /// Steps the task took (or planned).
    pub total_steps: u64,
    /// Progress samples in step order.
    pub progress: Vec<ProgressPoint>,
    /// Syncs in step order.
    pub syncs: Vec<SyncPoint>,
    /// Log lines.
    pub logs: Vec<String>,
}

impl TaskHistory {
    /// Extracts losses, syncs and logs from a task's events (snapshot included).
    pub fn from_events(task_id: &str, name: &str, events: &[pb::TaskEvent]) -> TaskHistory {
        let mut h = TaskHistory {
            task_id: task_id.to_string(),
            name: name.to_string(),
            ..Default::default()
        };
        for ev in events {
            match &ev.event {
                Some(Event::Snapshot(t)) => {
                    h.version = h.version.or(t.produced_version);
                    if let Some(p) = &t.progress {
                        h.total_steps = h.total_steps.max(p.total_steps);
                    }
                }
                Some(Event::Progress(p)) => {
                    h.total_steps = h.total_steps.max(p.total_steps).max(p.step);
                    if !p.losses.is_empty() {
                        h.progress.push(ProgressPoint {
                            step: p.step,
                            losses: p.losses.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                        });
                    }
                }
                Some(Event::Sync(s)) => {
                    h.total_steps = h.total_steps.max(s.step);
                    h.syncs.push(SyncPoint {
                        step: s.step,
                        k: s.k,
                        drift: s.drift,
                        threshold: s.threshold,
                    });
                }
                Some(Event::Log(l)) => h.logs.push(l.message.clone()),
                Some(Event::Preempted(p)) => h.logs.push(format!(
                    "preempted (#{}) at step {} by task {}",
                    p.count, p.step, p.by_task_id
                )),
                Some(Event::Terminal(t)) => h.version = h.version.or(t.produced_version),
                Some(Event::Heartbeat(_)) | Some(Event::ServerClosing(_)) | None => {}
            }
        }
        // A resumed task replays steps after its checkpoint; keep the latest per step.
        h.progress.sort_by_key(|p| p.step);
        h.progress.dedup_by(|later, earlier| {
            if later.step == earlier.step {
                *earlier = later.clone();
                true
            } else {
                false
            }
        });
        h.syncs.sort_by_key(|s| s.step);
        h.syncs.dedup_by_key(|s| s.step);
        h
    }
}

/// Everything the report shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportData {
    /// Model name.
    pub model: String,
    /// When the report was made (RFC 3339).
    pub generated_at: String,
    /// Versions in row order: the head's lineage root → head, then versions off it.
    pub versions: Vec<pb::Version>,
    /// Number of leading `versions` that form the head's lineage.
    pub lineage_len: usize,
    /// Training history of each version's task, in the order of `versions`.
    pub histories: Vec<TaskHistory>,
    /// Tasks that ended without a version (failed/cancelled), for the task table.
    pub other_tasks: Vec<pb::Task>,
}

/// Orders versions for the report: the head's lineage from the root, then any versions
/// a rollback left off it, by number. Returns (ordered, lineage length).
pub fn lineage_order(mut versions: Vec<pb::Version>) -> (Vec<pb::Version>, usize) {
    versions.sort_by_key(|v| v.version);
    let head = versions
        .iter()
        .find(|v| v.is_head)
        .or(versions.last())
        .map(|v| v.version);
    let mut chain = Vec::new();
    let mut cur = head;
    while let Some(n) = cur {
        if chain.contains(&n) {
            break; // defensive: a cycle would be a daemon bug, not a reason to hang
        }
        chain.push(n);
        cur = versions
            .iter()
            .find(|v| v.version == n)
            .and_then(|v| v.parent);
    }
    chain.reverse();
    let mut ordered: Vec<pb::Version> = chain
        .iter()
        .filter_map(|n| versions.iter().find(|v| v.version == *n).cloned())
        .collect();
    let lineage_len = ordered.len();
    ordered.extend(versions.into_iter().filter(|v| !chain.contains(&v.version)));
    (ordered, lineage_len)
}

/// The task columns (id, name) of every version table — `ctpctl versions`, the report's
/// matrix and charts — in ONE order: tasks as they first appear along [`lineage_order`] (the
/// head's lineage from the root, then the versions left off it by number), so `T5` names the
/// same task everywhere.
pub fn task_columns(versions: &[pb::Version]) -> Vec<(String, String)> {
    let (ordered, _) = lineage_order(versions.to_vec());
    let mut cols: Vec<(String, String)> = Vec::new();
    for v in &ordered {
        for e in &v.evals {
            if !cols.iter().any(|(id, _)| *id == e.task_id) {
                cols.push((e.task_id.clone(), e.task_name.clone()));
            }
        }
    }
    cols
}

/// One line defining union Rm, shown under every table that has the column.
pub const UNION_RM_NOTE: &str = "UNION Rm = Rm with the eval samples of all seen tasks pooled \
     into one candidate set (each query competes against every task's items at once), so it is \
     lower than per-task Rm and keeps falling as tasks accumulate.";

impl ReportData {
    /// Matrix columns: see [`task_columns`].
    pub fn columns(&self) -> Vec<(String, String)> {
        task_columns(&self.versions)
    }

    /// The accuracy matrix: Rm of each version (row) on each task (column).
    pub fn matrix(&self) -> Vec<Vec<Option<f64>>> {
        let cols = self.columns();
        self.versions
            .iter()
            .map(|v| {
                cols.iter()
                    .map(|(id, _)| v.evals.iter().find(|e| e.task_id == *id).map(|e| e.rm))
                    .collect()
            })
            .collect()
    }

    /// Row labels: `v3`, with `*` on the head, `†` off the head's lineage and `✗` when the
    /// promotion gate rejected the version.
    pub fn row_labels(&self) -> Vec<String> {
        self.versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mark = if v.is_head {
                    "*"
                } else if i >= self.lineage_len {
                    "†"
                } else {
                    ""
                };
                let gate = if v.state == pb::VersionState::Rejected as i32 {
                    "✗"
                } else {
                    ""
                };
                format!("v{}{mark}{gate}", v.version)
            })
            .collect()
    }

    /// Histories on the head's lineage with the global step each task starts at, so the
    /// training curves of consecutive tasks line up on one axis.
    pub fn lineage_histories(&self) -> Vec<(u64, &TaskHistory)> {
        let mut offset = 0;
        self.histories
            .iter()
            .take(self.lineage_len)
            .map(|h| {
                let start = offset;
                offset += h.total_steps;
                (start, h)
            })
            .collect()
    }

    /// All loss term names seen, `total` first (the learning rate is not one).
    pub fn loss_terms(&self) -> Vec<String> {
        let mut terms: Vec<String> = Vec::new();
        for h in &self.histories {
            for p in &h.progress {
                // The learning rate rides in the same map; it is no loss and not plotted.
                for k in p.losses.keys().filter(|k| *k != "lr") {
                    if !terms.contains(k) {
                        terms.push(k.clone());
                    }
                }
            }
        }
        terms.sort_by_key(|t| (t != "total", t.clone()));
        terms
    }
}
