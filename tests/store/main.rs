//! Contract tests of `ctp::store::Store`: every test runs against both backends — a
//! SQLite file in a temporary directory and a real PostgreSQL server started by the test
//! binary itself (`tests/support/postgres.rs`) — so the two cannot drift apart.
//!
//! Test names read `<area>::<backend>::<contract>`, e.g.
//! `cargo test --test store queue::postgres::`.

#[path = "../support/postgres.rs"]
mod pg;

use ctp::store::{Backend, EvalRow, EvalScope, NewTask, NewVersion, Store, TaskRow};

/// Expands contract functions `async fn name(store: Store)` into one `#[tokio::test]`
/// per backend: `sqlite::name` and `postgres::name`.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _dir) = crate::sqlite_store().await;
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(store) = crate::postgres_store().await else {
                        eprintln!("skipped: CTP_SKIP_POSTGRES_TESTS=1");
                        return;
                    };
                    super::$name(store).await;
                }
            )*
        }
    };
}

mod events;
mod fencing;
mod gate;
mod outbox;
mod queue;
mod versions;

/// A store on a new SQLite file; keep the directory alive for the test's duration.
async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ctp.db").display());
    let store = Store::connect(&url).await.expect("open SQLite store");
    assert_eq!(store.backend(), Backend::Sqlite);
    (store, dir)
}

/// A store on a fresh database of the shared test PostgreSQL server.
async fn postgres_store() -> Option<Store> {
    if pg::skip_requested() {
        return None;
    }
    let url = pg::PgServer::shared().fresh_database().await;
    let store = Store::connect(&url).await.expect("open Postgres store");
    assert_eq!(store.backend(), Backend::Postgres);
    Some(store)
}

/// Creates `model` (preset "tiny") and submits a task to it.
async fn submit(store: &Store, model: &str, name: &str, key: Option<&str>) -> TaskRow {
    store
        .create_model_if_absent(model, "tiny")
        .await
        .expect("create model");
    let submitted = store
        .submit_task(new_task(model, name, key))
        .await
        .expect("submit");
    submitted.task
}

/// A task input with a fresh id.
pub(crate) fn new_task(model: &str, name: &str, key: Option<&str>) -> NewTask {
    let id = ctp::store::new_task_id();
    NewTask {
        data_dir: format!("/data/tasks/{id}"),
        id,
        model: model.to_owned(),
        name: name.to_owned(),
        idempotency_key: key.map(str::to_owned),
        settings_json: r#"{"epochs":1}"#.to_owned(),
        request_digest: format!("content-of-{model}"),
        n_train: 8,
        n_eval: 2,
        sources_json: None,
        priority: 2,
        submitted_by: "anonymous".into(),
        bundle_bytes: 0,
        quota: Default::default(),
    }
}

/// An evaluation row with every recall equal to `rm`.
fn eval(scope: EvalScope, task: &TaskRow, rm: f64) -> EvalRow {
    EvalRow {
        scope,
        task_id: task.id.clone(),
        task_name: task.name.clone(),
        tr1: rm,
        tr5: rm,
        tr10: rm,
        ir1: rm,
        ir5: rm,
        ir10: rm,
        rm,
    }
}

/// A plausible result for `task`, trained from `parent`.
fn version_for(task: &TaskRow, parent: Option<i64>) -> NewVersion {
    NewVersion {
        parent,
        checkpoint_path: format!("/data/versions/{}.safetensors", task.id),
        sha256: "ab".repeat(32),
        momentum_syncs: 3,
        momentum_steps: 10,
        bwt: parent.map(|_| 1.5),
        average_forgetting: parent.map(|_| 2.0),
        rejection: None,
        evals: vec![
            eval(EvalScope::Task, task, 40.0),
            eval(EvalScope::Union, task, 35.0),
        ],
        forgetting: vec![],
        device: "cuda:0".into(),
        precision: "bf16".into(),
    }
}

/// Claims the next job (which must be `task`'s) and commits its version.
async fn run_to_version(store: &Store, task: &TaskRow) -> i64 {
    let job = store
        .claim_next_job("worker", std::time::Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("a job is eligible");
    assert_eq!(job.task.id, task.id, "FIFO order");
    let version = store
        .finish_task(&job.lease(), version_for(&job.task, job.task.base_version))
        .await
        .expect("finish");
    version.version
}
