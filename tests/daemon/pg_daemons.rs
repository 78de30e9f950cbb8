//! Several `ctpd` processes on one Postgres (a throwaway server this test starts): a killed
//! holder's task is taken over and resumed from its checkpoint; a stopped holder that wakes
//! up after losing its lease writes nothing; a Postgres restart does not fail the running
//! task; a daemon killed and restarted at once reclaims its task without waiting for the
//! lease. Leases are short and set through configuration (`CTP__LEASE_SECONDS`).
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::*;
use chrono::{DateTime, Utc};
use ctp::store::{Lease, Store, StoreError};
use ctp_api::pb;
use sqlx::{Connection, PgConnection};

/// Training: 16 samples, 13 for training in batches of 5 = 3 steps an epoch.
pub(crate) const EPOCHS: u32 = 30;
/// Resume checkpoints every this many steps.
const CHECKPOINT_EVERY: i64 = 3;

/// The tests run one at a time: each trains on CPU, and together they would starve each
/// other's daemons (CI has 2 cores).
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One `ctpd` process; killed when dropped.
pub(crate) struct Daemon {
    child: Child,
    pub(crate) worker: String,
    pub(crate) addr: String,
}

impl Daemon {
    /// Starts `ctpd` on `url` with data in `dir` and the given lease (seconds) and worker
    /// id (`None`: the default identity, host name and port).
    fn start(dir: &Path, url: &str, port: u16, lease: u64, worker: Option<&str>) -> Daemon {
        Daemon::start_with(dir, url, port, lease, worker, &[])
    }

    /// [`Daemon::start`] with more environment (`CTP__…` settings).
    pub(crate) fn start_with(
        dir: &Path,
        url: &str,
        port: u16,
        lease: u64,
        worker: Option<&str>,
        env: &[(String, String)],
    ) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctpd"));
        cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--device", "cpu"])
            .arg("--data-dir")
            .arg(dir)
            .args(["--database-url", url])
            .env("CTP__LEASE_SECONDS", lease.to_string())
            .env("CTP__REAP_SECONDS", "1")
            .env(
                "CTP__TRAINING__CHECKPOINT_EVERY",
                CHECKPOINT_EVERY.to_string(),
            )
            .env("CTP__ENGINE__THREADS", "1")
            .env(
                "CTP__ENGINE__WEIGHTS_DIR",
                format!("{:?}", assets::weights().display().to_string()),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        if let Some(w) = worker {
            cmd.env("CTP__WORKER_ID", format!("{w:?}"));
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        Daemon {
            child: cmd.spawn().unwrap(),
            worker: worker.unwrap_or_default().to_owned(),
            addr: format!("http://127.0.0.1:{port}"),
        }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        // A child we own and have not waited for.
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, sig).unwrap();
    }

    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The job row of a task, as the test reads it straight from the database.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Job {
    pub(crate) state: String,
    pub(crate) worker_id: Option<String>,
    pub(crate) lease_epoch: i64,
    pub(crate) lease_until: Option<DateTime<Utc>>,
    pub(crate) resume_step: Option<i64>,
}

pub(crate) async fn job(db: &mut PgConnection, task_id: &str) -> Job {
    sqlx::query_as(
        "SELECT state, worker_id, lease_epoch, lease_until, resume_step FROM jobs \
         WHERE task_id = $1",
    )
    .bind(task_id)
    .fetch_one(db)
    .await
    .unwrap()
}

/// Polls the job until `ok` holds (at most two minutes).
pub(crate) async fn wait_job(
    db: &mut PgConnection,
    task_id: &str,
    ok: impl Fn(&Job) -> bool,
) -> Job {
    for _ in 0..1200 {
        let j = job(db, task_id).await;
        if ok(&j) {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "job of {task_id} never reached the expected state: {:?}",
        job(db, task_id).await
    );
}

/// Starts daemons `d0..dn` on a fresh database of the shared server, one data dir; submits
/// one task through `d0` and waits until it trains past its first recorded checkpoint.
async fn training_on(
    n: usize,
    lease: u64,
) -> (
    tempfile::TempDir,
    String,
    Vec<Daemon>,
    pb::Task,
    PgConnection,
) {
    let url = pg::PgServer::shared().fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    // Migrations run before the others start, so they never race on an empty database.
    let mut daemons = vec![Daemon::start(
        dir.path(),
        &url,
        free_port(),
        lease,
        Some("d0"),
    )];
    wait_serving(&daemons[0].addr).await;
    for i in 1..n {
        let w = format!("d{i}");
        daemons.push(Daemon::start(
            dir.path(),
            &url,
            free_port(),
            lease,
            Some(&w),
        ));
    }
    for d in &daemons {
        wait_serving(&d.addr).await;
    }
    let mut c = connect(&daemons[0].addr).await;
    let task = submit(&mut c, header("m", "squares", EPOCHS), shape_samples(0))
        .await
        .unwrap();
    let mut db = PgConnection::connect(&url).await.unwrap();
    wait_job(&mut db, &task.id, |j| j.resume_step.is_some()).await;
    (dir, url, daemons, task, db)
}

/// One daemon with the default identity and a long lease (waiting for it to expire would
/// take a minute), training one task past its first recorded checkpoint.
async fn training_alone(dir: &Path, url: &str, port: u16) -> (Daemon, pb::Task, PgConnection, Job) {
    let d = Daemon::start(dir, url, port, 60, None);
    wait_serving(&d.addr).await;
    let mut c = connect(&d.addr).await;
    let task = submit(&mut c, header("m", "squares", EPOCHS), shape_samples(0))
        .await
        .unwrap();
    let mut db = PgConnection::connect(url).await.unwrap();
    let held = wait_job(&mut db, &task.id, |j| j.resume_step.is_some()).await;
    (d, task, db, held)
}

pub(crate) fn index_of(daemons: &[Daemon], worker: &str) -> usize {
    daemons
        .iter()
        .position(|d| d.worker == worker)
        .unwrap_or_else(|| panic!("no daemon {worker}"))
}

/// Watches the task to its end, which must be success; returns every event.
pub(crate) async fn watch_succeeded(
    c: &mut ctp_api::pb::continual_trainer_client::ContinualTrainerClient<
        tonic::transport::Channel,
    >,
    task_id: &str,
) -> Vec<pb::TaskEvent> {
    let events = watch_all(c, task_id, 0).await;
    let t = terminal(&events);
    assert_eq!(t.state, pb::TaskState::Succeeded as i32, "{}", t.error);
    events
}

pub(crate) fn progress(events: &[pb::TaskEvent]) -> Vec<&pb::Progress> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(pb::task_event::Event::Progress(p)) => Some(p),
            _ => None,
        })
        .collect()
}

/// The one version of model `m`, checked against its file.
async fn single_version(addr: &str, dir: &Path) -> pb::Version {
    let mut c = connect(addr).await;
    let v = c
        .list_versions(pb::ListVersionsRequest {
            model: "m".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .versions;
    assert_eq!(v.len(), 1, "trained exactly once: {v:?}");
    let files: Vec<_> = std::fs::read_dir(dir.join("versions"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "no other version file: {files:?}");
    let sha = ctp::trainer::checkpoint::sha256_file(&files[0]).unwrap();
    assert_eq!(sha, v[0].checkpoint_sha256, "the committed file is intact");
    v[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holder_is_taken_over_and_resumed() {
    if pg::skip_requested() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let lease = 3;
    let (dir, url, mut daemons, task, mut db) = training_on(3, lease).await;
    let held = job(&mut db, &task.id).await;
    let holder = index_of(&daemons, held.worker_id.as_deref().unwrap());
    daemons[holder].kill(); // SIGKILL
    let at_kill = job(&mut db, &task.id).await;
    let taken = wait_job(&mut db, &task.id, |j| j.lease_epoch > held.lease_epoch).await;
    let survivor = taken.worker_id.clone().expect("a survivor holds it");
    assert_ne!(survivor, daemons[holder].worker);

    // Taken over within the lease plus one reaper period (1 s), plus the survivor's
    // 1 s queue poll and 2 s of slack for a loaded machine; without a reaper it never is.
    let claimed_at = taken.lease_until.unwrap() - chrono::Duration::seconds(lease as i64);
    let expired_at = at_kill.lease_until.unwrap();
    assert!(
        claimed_at - expired_at <= chrono::Duration::seconds(4),
        "claimed {claimed_at}, the lease ran out at {expired_at}"
    );

    let s = &daemons[index_of(&daemons, &survivor)];
    let mut c = connect(&s.addr).await;
    let events = watch_succeeded(&mut c, &task.id).await;
    let resumed = progress(&events)
        .into_iter()
        .find_map(|p| p.resumed_from_step)
        .expect("the survivor resumed");
    assert_eq!(
        Some(resumed as i64),
        at_kill.resume_step,
        "resumed from the recorded checkpoint"
    );
    single_version(&s.addr, dir.path()).await;

    // The dead holder's late commit is refused.
    let store = Store::connect(&url).await.unwrap();
    let old = Lease {
        task_id: task.id.clone(),
        worker_id: daemons[holder].worker.clone(),
        epoch: held.lease_epoch,
    };
    let late = store.get_version("m", 1).await.unwrap();
    let err = store
        .finish_task(&old, new_version_like(&late))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    assert_eq!(store.head("m").await.unwrap().unwrap().version, 1);
}

/// WatchTask through a daemon that does not hold the task: the holder's events reach it only
/// through the shared store, in order and without gaps, up to the terminal event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_through_another_daemon_follows_the_holder() {
    if pg::skip_requested() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (dir, _url, daemons, task, mut db) = training_on(2, 30).await;
    let held = job(&mut db, &task.id).await;
    let other = 1 - index_of(&daemons, held.worker_id.as_deref().unwrap());
    let mut c = connect(&daemons[other].addr).await;
    let events = watch_succeeded(&mut c, &task.id).await;
    let seqs: Vec<u64> = events
        .iter()
        .filter(|e| {
            !matches!(
                e.event,
                Some(pb::task_event::Event::Snapshot(_) | pb::task_event::Event::Heartbeat(_))
            )
        })
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs.first(), Some(&1), "replayed from the start: {seqs:?}");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let after_watch = job(&mut db, &task.id).await;
    assert_eq!(
        after_watch.lease_epoch, held.lease_epoch,
        "never taken over"
    );
    single_version(&daemons[other].addr, dir.path()).await;
}

fn new_version_like(v: &ctp::store::VersionRow) -> ctp::store::NewVersion {
    ctp::store::NewVersion {
        parent: v.parent,
        checkpoint_path: v.checkpoint_path.clone(),
        sha256: v.sha256.clone(),
        momentum_syncs: 0,
        momentum_steps: 0,
        bwt: None,
        average_forgetting: None,
        evals: vec![],
        forgetting: vec![],
        rejection: None,
        device: v.device.clone(),
        precision: v.precision.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_holder_writes_nothing_after_takeover() {
    if pg::skip_requested() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (dir, _url, daemons, task, mut db) = training_on(2, 2).await;
    let held = job(&mut db, &task.id).await;
    let holder = index_of(&daemons, held.worker_id.as_deref().unwrap());
    let other = 1 - holder;
    daemons[holder].signal(rustix::process::Signal::STOP);
    wait_job(&mut db, &task.id, |j| j.lease_epoch > held.lease_epoch).await;
    // Wake it while the new holder trains: its run must stop without writing.
    daemons[holder].signal(rustix::process::Signal::CONT);

    let mut c = connect(&daemons[other].addr).await;
    let events = watch_succeeded(&mut c, &task.id).await;
    // Give the woken worker time to try its writes, then read the whole log again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (last,): (i64,) = sqlx::query_as("SELECT last_event_seq FROM tasks WHERE id = $1")
        .bind(&task.id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(
        last as u64,
        events.last().unwrap().seq,
        "no event after the terminal one"
    );
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM task_events WHERE task_id = $1 ORDER BY seq")
            .bind(&task.id)
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(
        kinds.iter().filter(|k| *k == "terminal").count(),
        1,
        "{kinds:?}"
    );

    let got = c
        .get_task(pb::GetTaskRequest {
            task_id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, pb::TaskState::Succeeded as i32);
    assert!(!got.cancel_requested, "nobody cancelled it");
    let p = got.progress.expect("progress");
    assert_eq!(p.step, p.total_steps, "progress never went back");
    // After the takeover's resume, progress only moves forward.
    let steps: Vec<u64> = progress(&events)
        .iter()
        .skip_while(|p| p.resumed_from_step.is_none())
        .map(|p| p.step)
        .collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    single_version(&daemons[other].addr, dir.path()).await;
    wait_serving(&daemons[holder].addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_while_training_loses_nothing() {
    if pg::skip_requested() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut server = pg::PgServer::start().unwrap();
    let url = server.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    let (d, task, db, _) = training_alone(dir.path(), &url, free_port()).await;
    drop(db);
    let mut c = connect(&d.addr).await;

    server.stop_fast().unwrap();
    // While the database is down: health says NOT_SERVING and RPCs answer UNAVAILABLE.
    wait_health(&d.addr, false).await;
    let err = c
        .get_task(pb::GetTaskRequest {
            task_id: task.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    server.start_again().unwrap();
    wait_health(&d.addr, true).await;

    watch_succeeded(&mut c, &task.id).await;
    single_version(&d.addr, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_daemon_reclaims_its_task_at_once() {
    if pg::skip_requested() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let url = pg::PgServer::shared().fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut d, task, mut db, held) = training_alone(dir.path(), &url, port).await;
    d.kill();
    let at_kill = job(&mut db, &task.id).await;

    let d = Daemon::start(dir.path(), &url, port, 60, None);
    let again = wait_job(&mut db, &task.id, |j| j.lease_epoch > held.lease_epoch).await;
    assert_eq!(
        again.worker_id, held.worker_id,
        "same identity after the restart"
    );
    let claimed_at = again.lease_until.unwrap() - chrono::Duration::seconds(60);
    assert!(
        claimed_at < at_kill.lease_until.unwrap(),
        "reclaimed at {claimed_at}, before the old lease ran out at {:?}",
        at_kill.lease_until
    );
    let mut c = connect(&d.addr).await;
    let events = watch_succeeded(&mut c, &task.id).await;
    let resumed = progress(&events)
        .into_iter()
        .find_map(|p| p.resumed_from_step);
    assert_eq!(resumed.map(|s| s as i64), at_kill.resume_step);
    assert_eq!(again.state, "running");
    single_version(&d.addr, dir.path()).await;
}
