//! Issue #24 §4: upgrades keep every version. Each fixture under `tests/fixtures/upgrade/` is a
//! data dir made by an earlier release's own ctpd and ctpctl, with what that release reported
//! (`expected/`, see its README.md). Today's ctpd opens a copy of each and must report the same
//! tasks, versions, heads, evaluations and embeddings, roll back, train a new task from the old
//! head, and leave every old file's bytes as they were. A database from a newer ctpd is refused.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ctp_api::pb;
use ctp_api::pb::continual_trainer_client::ContinualTrainerClient;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use crate::helpers::*;

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("data").is_dir() && p.join("expected").is_dir())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures under {}", root.display());
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn time(ts: &Option<prost_types::Timestamp>) -> String {
    ctp_api::json::time(ts)
}

/// The number the release printed, read back: serde_json (built without `float_roundtrip`)
/// may parse a printed f64 one unit in the last place off, so equal means within one ULP.
fn same(want: &Value, got: f64) -> bool {
    let w = want.as_f64().unwrap();
    w == got || (w.to_bits() as i64 - got.to_bits() as i64).abs() <= 1
}

fn same_opt(want: &Value, got: Option<f64>) -> bool {
    match got {
        None => want.is_null(),
        Some(g) => same(want, g),
    }
}

fn eval_matches(want: &Value, got: &pb::TaskEval) -> bool {
    let values = [
        got.tr1, got.tr5, got.tr10, got.ir1, got.ir5, got.ir10, got.rm,
    ];
    want["task_id"] == got.task_id.as_str()
        && ["tr1", "tr5", "tr10", "ir1", "ir5", "ir10", "rm"]
            .iter()
            .zip(values)
            .all(|(k, g)| same(&want[*k], g))
}

/// Today's `Version` against the release's `ctpctl --json versions` entry: identity, checkpoint
/// hash, lineage, head flag, the accuracy-matrix row, the union eval and forgetting.
fn assert_version(want: &Value, got: &pb::Version, fixture: &str) {
    let n = got.version;
    let ctx = format!("{fixture}: version {n}");
    assert_eq!(want["version"], n, "{ctx}");
    assert_eq!(
        want["checkpoint_sha256"],
        got.checkpoint_sha256.as_str(),
        "{ctx}"
    );
    assert_eq!(want["task_id"], got.task_id.as_str(), "{ctx}");
    assert_eq!(want["task_name"], got.task_name.as_str(), "{ctx}");
    assert_eq!(want["parent"].as_i64(), got.parent, "{ctx}");
    assert_eq!(want["is_head"], got.is_head, "{ctx}");
    assert_eq!(want["created_at"], time(&got.created_at).as_str(), "{ctx}");
    assert_eq!(want["momentum_syncs"], got.momentum_syncs, "{ctx}");
    assert_eq!(want["momentum_steps"], got.momentum_steps, "{ctx}");
    assert!(
        same_opt(&want["average_forgetting"], got.average_forgetting),
        "{ctx}: {got:?}"
    );
    assert!(same_opt(&want["bwt"], got.bwt), "{ctx}: {got:?}");
    let evals = want["evals"].as_array().unwrap();
    assert_eq!(evals.len(), got.evals.len(), "{ctx}: accuracy-matrix row");
    for (w, g) in evals.iter().zip(&got.evals) {
        assert!(eval_matches(w, g), "{ctx}: eval {w} vs {g:?}");
    }
    let union = got.union_eval.as_ref().unwrap();
    let mut want_union = want["union_eval"].clone();
    want_union["task_id"] = union.task_id.clone().into();
    assert!(
        eval_matches(&want_union, union),
        "{ctx}: union eval {want_union} vs {union:?}"
    );
    let forgetting: BTreeMap<&str, f64> = got
        .forgetting
        .iter()
        .map(|f| (f.task_id.as_str(), f.forgetting))
        .collect();
    let want_forgetting = want["forgetting"].as_object().unwrap();
    assert_eq!(want_forgetting.len(), forgetting.len(), "{ctx}: forgetting");
    for (task, w) in want_forgetting {
        assert!(
            same(w, forgetting[task.as_str()]),
            "{ctx}: forgetting of {task}"
        );
    }
}

async fn versions(c: &mut ContinualTrainerClient<Channel>) -> Vec<pb::Version> {
    c.list_versions(pb::ListVersionsRequest {
        model: "m".into(),
        page_size: 1000,
        page_token: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .versions
}

/// Embed with `version` as the release's `expected/embed-v<version>.json` recorded it (same
/// probe image and texts); `None` embeds with the head.
async fn assert_embeddings(
    c: &mut ContinualTrainerClient<Channel>,
    fixture: &Path,
    version: i64,
    by_head: bool,
) {
    let want = json(&fixture.join(format!("expected/embed-v{version}.json")));
    let texts: Vec<String> = want["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap().to_string())
        .collect();
    let got = c
        .embed(pb::EmbedRequest {
            model: "m".into(),
            version: (!by_head).then_some(version),
            images: vec![std::fs::read(fixture.join("probe.png")).unwrap()],
            texts,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.version, version);
    assert_eq!(want["dim"], got.dim);
    let expected = want["images"]
        .as_array()
        .unwrap()
        .iter()
        .chain(want["texts"].as_array().unwrap());
    for (w, g) in expected.zip(got.image_embeddings.iter().chain(&got.text_embeddings)) {
        // The release printed each f32 exactly (as the f64 of the same value). On the CPU
        // that made the fixture the embeddings come back bit for bit; libtorch picks other
        // kernels on another instruction set (AVX2 vs AVX-512), which moves the last bits:
        // 9e-8 at most between an AMD EPYC and an Intel Xeon. A wrong weight or layout moves
        // them by orders of magnitude more.
        let w: Vec<f32> = w["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(w.len(), g.values.len(), "{}: dim", fixture.display());
        let worst = w
            .iter()
            .zip(&g.values)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-6,
            "{}: embedding of version {version} differs by {worst:e} (want <= 1e-6)\n want {w:?}\n  got {:?}",
            fixture.display(),
            g.values
        );
    }
}

async fn check_fixture(fixture: &Path) {
    let name = fixture.file_name().unwrap().to_string_lossy().into_owned();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    copy_dir(&fixture.join("data"), &dir);
    let weights = format!("{:?}", fixture.join("weights").display().to_string());
    let env = vec![("CTP__ENGINE__WEIGHTS_DIR".to_string(), weights)];
    let app = spawn_app_in(String::new(), &dir, env).await;
    let mut c = app.client.clone();

    // Tasks as the release listed them.
    let want_tasks = json(&fixture.join("expected/tasks.json"));
    let got_tasks = c
        .list_tasks(pb::ListTasksRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    let want_tasks = want_tasks.as_array().unwrap();
    assert_eq!(want_tasks.len(), got_tasks.len(), "{name}: tasks");
    for (w, g) in want_tasks.iter().zip(&got_tasks) {
        assert_eq!(w["id"], g.id.as_str(), "{name}");
        assert_eq!(w["name"], g.name.as_str(), "{name}");
        assert_eq!(g.state, pb::TaskState::Succeeded as i32, "{name}: {g:?}");
        assert_eq!(w["produced_version"].as_i64(), g.produced_version, "{name}");
        assert_eq!(w["n_train"], g.n_train, "{name}");
        assert_eq!(w["n_eval"], g.n_eval, "{name}");
        assert_eq!(
            w["idempotency_key"].as_str(),
            g.idempotency_key.as_deref(),
            "{name}"
        );
    }

    // Versions, the head, evaluations, and embeddings of every version.
    let want_versions = json(&fixture.join("expected/versions.json"));
    let want_versions = want_versions.as_array().unwrap();
    let got = versions(&mut c).await;
    assert_eq!(want_versions.len(), got.len(), "{name}: versions");
    for (w, g) in want_versions.iter().zip(&got) {
        assert_version(w, g, &name);
        assert_embeddings(&mut c, fixture, g.version, false).await;
    }
    let head = got.iter().find(|v| v.is_head).unwrap().version;
    assert_embeddings(&mut c, fixture, head, true).await;

    // Rollback works on old rows: to the newest version and back to the old head.
    let newest = got.last().unwrap().version;
    for (to, from) in [(newest, head), (head, newest)] {
        let r = c
            .rollback(pb::RollbackRequest {
                model: "m".into(),
                version: to,
                expected_head: Some(from),
                reason: format!("upgrade test: {from} -> {to}"),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.head.unwrap().version, to);
        assert_embeddings(&mut c, fixture, to, true).await;
    }

    // A new task trains from the old head and is evaluated on the old tasks too.
    let task = submit(&mut c, header("m", "after-upgrade", 1), shape_samples(0))
        .await
        .unwrap();
    let end = terminal(&watch_all(&mut c, &task.id, 0).await);
    assert_eq!(
        end.state,
        pb::TaskState::Succeeded as i32,
        "{name}: {end:?}"
    );
    let v = c
        .get_version(pb::GetVersionRequest {
            model: "m".into(),
            version: end.produced_version,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.parent, Some(head), "{name}: trained from the old head");
    let lineage_before = want_versions.iter().find(|w| w["version"] == head).unwrap()["evals"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(v.evals.len(), lineage_before + 1, "{name}: {v:?}");
    app.stop().await;

    // Every file the release wrote is byte for byte what it wrote (the database aside:
    // migrations change it), and the head history kept the release's moves.
    let sums = std::fs::read_to_string(fixture.join("expected/files.sha256")).unwrap();
    for line in sums.lines() {
        let (sum, path) = line.split_once("  ").unwrap();
        let path = path.trim_start_matches("./");
        if path.starts_with("ctp.sqlite") {
            continue;
        }
        assert_eq!(sha256(&dir.join(path)), sum, "{name}: {path} changed");
    }
    let url = format!("sqlite://{}?mode=rw", dir.join("ctp.sqlite").display());
    let store = ctp::store::Store::connect(&url).await.unwrap();
    let history = store.head_history("m").await.unwrap();
    store.close().await;
    let moves: Vec<(Option<i64>, i64)> = history
        .iter()
        .map(|h| (h.from_version, h.to_version))
        .collect();
    let v3 = v.version;
    assert_eq!(
        moves,
        vec![
            (None, 1),
            (Some(1), 2),
            (Some(2), 1),
            (Some(1), 2),
            (Some(2), 1),
            (Some(1), v3)
        ],
        "{name}: head history"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dirs_of_earlier_releases_keep_every_version() {
    for fixture in fixtures() {
        check_fixture(&fixture).await;
    }
}

/// A ctpd older than its database (a downgrade) refuses to start, with one line, and applies
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_ctpd_is_refused_at_startup() {
    use ctp::store::{Backend, Store};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("ctp.sqlite");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    Store::connect(&url).await.unwrap().close().await;
    let known = Store::known_schema_version(Backend::Sqlite);
    let future = known + 1;
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations \
             (version, description, installed_on, success, checksum, execution_time) \
             VALUES (?, 'from a newer ctpd', CURRENT_TIMESTAMP, TRUE, x'00', 0)",
        )
        .bind(future)
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let recorded = migrations(&url).await;
    assert_eq!(recorded.last(), Some(&future));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ctpd"))
        .args(["--listen", "127.0.0.1:0", "--device", "cpu", "--data-dir"])
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "database schema version {future} is newer than this ctpd (which knows up to \
             {known}); use a newer ctpd"
        )),
        "{stderr}"
    );
    // Nothing was applied: the recorded migrations are the ones written above.
    assert_eq!(migrations(&url).await, recorded);
}

async fn migrations(url: &str) -> Vec<i64> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    let rows: Vec<(i64,)> = sqlx::query_as("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    rows.into_iter().map(|(v,)| v).collect()
}
