//! Priorities across models and preemption (issue #26 §1): which queued job runs next, and
//! whether a running job must yield to a waiting one. Both weigh jobs the same way, in Rust
//! (the candidates are one row per queued or running job), so SQLite and Postgres decide
//! alike:
//!
//! - a job's priority is its task's, aged: one level higher per `aging_s` seconds since
//!   submission (see [`Priority::aged`]);
//! - a model's effective priority is the highest of its queued (and running) jobs': its tasks
//!   run in submission order, so an urgent task lifts the ones before it;
//! - the next job is the oldest queued job of the model with the highest effective priority
//!   among models without a running job; ties go to the oldest submission (FIFO).
//!
//! Preemption: when the best waiting model outranks a running job, no daemon is idle (seen
//! in `workers` within [`ALIVE`] and holding no job), the lowest-ranked running job yields;
//! a job that was preempted before must first have run `min_run` since its claim.
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::db::{args, now, Exec};
use super::outbox::{enqueue_webhook_event, WebhookEvent};
use super::rows::{lease_lost, load_task, HELD};
use super::{Lease, Result, Store, StoreError, TaskRow};
use crate::task::Priority;

/// A daemon whose dispatcher wrote its `workers` row within this long is alive.
pub const ALIVE: Duration = Duration::from_secs(15);

/// How a dispatcher ranks work (config `[scheduler]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranking {
    /// Seconds of waiting per priority level gained (0: no aging).
    pub aging_s: u64,
    /// A job preempted before runs at least this long after its claim before it can be
    /// preempted again.
    pub min_run: Duration,
}

impl Default for Ranking {
    fn default() -> Ranking {
        Ranking {
            aging_s: 0,
            min_run: Duration::from_secs(60),
        }
    }
}

/// A queued or running job as the dispatcher weighs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct Weighed {
    pub task_id: String,
    pub model: String,
    pub state: String,
    pub enqueued_seq: i64,
    pub priority: i64,
    pub created_at: DateTime<Utc>,
    pub preemptions: i64,
    pub claimed_at: Option<DateTime<Utc>>,
    pub lease_until: Option<DateTime<Utc>>,
}

const WEIGHED: &str = "SELECT j.task_id, j.model, j.state, j.enqueued_seq, t.priority, \
     t.created_at, t.preemptions, j.claimed_at, j.lease_until \
     FROM jobs j JOIN tasks t ON t.id = j.task_id \
     WHERE j.state IN ('queued', 'running') ORDER BY j.enqueued_seq";

pub(super) async fn weighed(ex: &mut Exec<'_>) -> Result<Vec<Weighed>> {
    Ok(ex.fetch_all(WEIGHED, args![]).await?)
}

/// The jobs' ranks at `at`.
pub(super) struct Board<'a> {
    jobs: &'a [Weighed],
    /// Effective priority per model (its queued and running jobs' highest aged priority).
    model_rank: HashMap<&'a str, Priority>,
    running_models: HashSet<&'a str>,
}

impl<'a> Board<'a> {
    pub fn new(jobs: &'a [Weighed], at: DateTime<Utc>, aging_s: u64) -> Board<'a> {
        let mut model_rank: HashMap<&str, Priority> = HashMap::new();
        let mut running_models = HashSet::new();
        for j in jobs {
            let waited = (at - j.created_at).num_milliseconds() as f64 / 1000.0;
            let p = Priority::from_stored(j.priority).aged(waited, aging_s);
            let e = model_rank.entry(j.model.as_str()).or_insert(p);
            *e = (*e).max(p);
            if j.state == "running" {
                running_models.insert(j.model.as_str());
            }
        }
        Board {
            jobs,
            model_rank,
            running_models,
        }
    }

    fn rank(&self, j: &Weighed) -> Priority {
        self.model_rank[j.model.as_str()]
    }

    /// The job to claim next: the oldest queued job of each idle model, best model first.
    pub fn next(&self) -> Option<&'a Weighed> {
        let mut seen = HashSet::new();
        let heads = self.jobs.iter().filter(|j| {
            j.state == "queued"
                && !self.running_models.contains(j.model.as_str())
                && seen.insert(j.model.as_str())
        });
        // `jobs` is in queue order, so the first of the best rank is the oldest.
        let mut best: Option<&Weighed> = None;
        for j in heads {
            if best.is_none_or(|b| self.rank(j) > self.rank(b)) {
                best = Some(j);
            }
        }
        best
    }

    /// The running job that must yield to [`next`](Self::next), if any: the lowest-ranked
    /// one below it (the youngest submission among equals), among those whose lease is live
    /// and that may be preempted now.
    pub fn victim(
        &self,
        at: DateTime<Utc>,
        min_run: Duration,
    ) -> Option<(&'a Weighed, &'a Weighed)> {
        let waiting = self.next()?;
        let min_run = chrono::Duration::from_std(min_run).unwrap_or(chrono::Duration::MAX);
        let mut victim: Option<&Weighed> = None;
        for j in self.jobs.iter().filter(|j| j.state == "running") {
            let live = j.lease_until.is_some_and(|u| u > at);
            let ran_enough = j.preemptions == 0 || j.claimed_at.is_some_and(|c| at - c >= min_run);
            if !live || !ran_enough || self.rank(j) >= self.rank(waiting) {
                continue;
            }
            if victim.is_none_or(|v| {
                (self.rank(j), std::cmp::Reverse(j.enqueued_seq))
                    <= (self.rank(v), std::cmp::Reverse(v.enqueued_seq))
            }) {
                victim = Some(j);
            }
        }
        victim.map(|v| (v, waiting))
    }
}

impl Store {
    /// Records that this daemon's dispatcher is alive (see [`ALIVE`]).
    pub async fn worker_seen(&self, worker_id: &str) -> Result<()> {
        let mut conn = self.db.acquire().await?;
        conn.exec()
            .execute(
                "INSERT INTO workers (worker_id, seen_at) VALUES ($1, $2) \
                 ON CONFLICT (worker_id) DO UPDATE SET seen_at = excluded.seen_at",
                args![worker_id, now()],
            )
            .await?;
        Ok(())
    }

    /// Whether the running job of `task_id` must yield now, and to which waiting task.
    pub async fn preempted_by(&self, task_id: &str, ranking: &Ranking) -> Result<Option<String>> {
        let mut conn = self.db.acquire().await?;
        let mut ex = conn.exec();
        let at = now();
        let alive_since = at - chrono::Duration::from_std(ALIVE).expect("ALIVE is short");
        let (idle,): (i64,) = ex
            .fetch_one(
                "SELECT COUNT(*) FROM workers w WHERE w.seen_at > $1 \
                 AND NOT EXISTS (SELECT 1 FROM jobs j \
                                 WHERE j.worker_id = w.worker_id AND j.state = 'running')",
                args![alive_since],
            )
            .await?;
        if idle > 0 {
            return Ok(None); // an idle daemon takes the waiting job itself
        }
        let jobs = weighed(&mut ex).await?;
        let board = Board::new(&jobs, at, ranking.aging_s);
        Ok(board
            .victim(at, ranking.min_run)
            .filter(|(v, _)| v.task_id == task_id)
            .map(|(_, w)| w.task_id.clone()))
    }
}

impl Store {
    /// Puts a preempted job back in its place in the queue (its `enqueued_seq`, resume
    /// checkpoint and base kept, as after a graceful stop) and counts the preemption; the
    /// `task.preempted` webhook event is recorded in the same transaction. `by`: the task it
    /// yields to; `step`: where it checkpointed. Returns the task's count. `LeaseLost` if the
    /// lease is not held.
    pub async fn preempt_job(&self, lease: &Lease, by: &str, step: i64) -> Result<i64> {
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        let released = ex
            .execute(
                &format!(
                    "UPDATE jobs SET state = 'queued', worker_id = NULL, lease_until = NULL \
                     WHERE {HELD}"
                ),
                args![&lease.task_id, &lease.worker_id, lease.epoch],
            )
            .await?;
        if released == 0 {
            return Err(lease_lost(lease));
        }
        ex.execute(
            "UPDATE tasks SET state = 'queued', preemptions = preemptions + 1 \
             WHERE id = $1 AND state = 'running'",
            args![&lease.task_id],
        )
        .await?;
        let task = load_task(&mut ex, &lease.task_id).await?;
        let data = serde_json::json!({
            "task": {
                "id": task.id, "model": task.model, "name": task.name,
                "priority": Priority::from_stored(task.priority).as_str(),
                "submitted_by": task.submitted_by,
            },
            "preemptions": task.preemptions,
            "step": step,
            "by_task_id": by,
        });
        enqueue_webhook_event(&mut ex, &self.webhooks, WebhookEvent::TaskPreempted, data).await?;
        tx.commit().await?;
        Ok(task.preemptions)
    }

    /// Sets a QUEUED task's priority. `NotFound` for an unknown task, `FailedPrecondition`
    /// once it runs or has finished.
    pub async fn set_task_priority(&self, id: &str, priority: Priority) -> Result<TaskRow> {
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        let changed = ex
            .execute(
                "UPDATE tasks SET priority = $2 WHERE id = $1 AND state = 'queued'",
                args![id, priority.stored()],
            )
            .await?;
        let task = load_task(&mut ex, id).await?;
        if changed == 0 {
            return Err(StoreError::FailedPrecondition(format!(
                "task {id} is {}; only a QUEUED task's priority can change",
                task.state.as_str().to_uppercase()
            )));
        }
        tx.commit().await?;
        Ok(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(task: &str, model: &str, state: &str, seq: i64, p: Priority, age_s: i64) -> Weighed {
        let at = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap();
        Weighed {
            task_id: task.into(),
            model: model.into(),
            state: state.into(),
            enqueued_seq: seq,
            priority: p.stored(),
            created_at: at - chrono::Duration::seconds(age_s),
            preemptions: 0,
            claimed_at: Some(at - chrono::Duration::seconds(1)),
            lease_until: Some(at + chrono::Duration::seconds(30)),
        }
    }

    fn at() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap()
    }

    #[test]
    fn the_highest_model_goes_first_and_fifo_holds_within_a_model() {
        use Priority::*;
        let jobs = vec![
            job("a1", "a", "queued", 1, Normal, 10),
            job("b1", "b", "queued", 2, Low, 10),
            job("b2", "b", "queued", 3, High, 10),
            job("c1", "c", "queued", 4, High, 10),
        ];
        let board = Board::new(&jobs, at(), 0);
        // b's high task lifts b; b1 comes before b2 (FIFO), and b is older than c.
        assert_eq!(board.next().unwrap().task_id, "b1");
        let jobs = vec![
            job("a1", "a", "queued", 1, Normal, 10),
            job("c1", "c", "queued", 4, Normal, 10),
        ];
        assert_eq!(Board::new(&jobs, at(), 0).next().unwrap().task_id, "a1");
    }

    #[test]
    fn a_busy_model_waits_and_aging_lifts_old_low_work() {
        use Priority::*;
        let jobs = vec![
            job("a0", "a", "running", 0, Low, 10),
            job("a1", "a", "queued", 1, High, 10),
            job("b1", "b", "queued", 2, Low, 7200),
            job("c1", "c", "queued", 3, Normal, 10),
        ];
        // a runs; b's low task, two hours old with 1 h aging, now ranks high.
        assert_eq!(Board::new(&jobs, at(), 3600).next().unwrap().task_id, "b1");
        assert_eq!(Board::new(&jobs, at(), 0).next().unwrap().task_id, "c1");
    }

    #[test]
    fn the_lowest_running_job_yields_unless_it_ran_too_little_since_a_preemption() {
        use Priority::*;
        let min_run = Duration::from_secs(60);
        let mut jobs = vec![
            job("a0", "a", "running", 0, Low, 10),
            job("b0", "b", "running", 1, Normal, 10),
            job("c1", "c", "queued", 2, High, 10),
        ];
        let v = Board::new(&jobs, at(), 0).victim(at(), min_run).unwrap();
        assert_eq!((v.0.task_id.as_str(), v.1.task_id.as_str()), ("a0", "c1"));
        // a0 was preempted before and resumed a second ago: b0 yields instead.
        jobs[0].preemptions = 1;
        let v = Board::new(&jobs, at(), 0).victim(at(), min_run).unwrap();
        assert_eq!(v.0.task_id, "b0");
        // Nobody outranked: nothing yields. A high task queued behind its own model's
        // running job lifts that job instead of preempting anything.
        let jobs = vec![
            job("a0", "a", "running", 0, Low, 10),
            job("a1", "a", "queued", 1, High, 10),
            job("b1", "b", "queued", 2, Normal, 10),
        ];
        assert!(Board::new(&jobs, at(), 0).victim(at(), min_run).is_none());
        // An expired lease is the reaper's business, not a victim.
        let mut jobs = vec![
            job("a0", "a", "running", 0, Low, 10),
            job("c1", "c", "queued", 2, High, 10),
        ];
        jobs[0].lease_until = Some(at() - chrono::Duration::seconds(1));
        assert!(Board::new(&jobs, at(), 0).victim(at(), min_run).is_none());
    }
}
