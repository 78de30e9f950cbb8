//! The Python client package (`clients/python`, grpcio + committed stubs) against a live
//! daemon: installed offline with `pip --no-index --no-build-isolation` (built by the
//! hatchling that scripts/setup-torch.sh pins into the venv), its unit tests and live tests
//! run, then the `examples/python` script, built on it, submits and watches tasks: the API
//! works from another language without the server's dependencies.
use std::path::Path;

use crate::helpers::*;

/// `pip install --no-index --no-build-isolation --no-deps --target DIR ./clients/python`:
/// builds the wheel with the interpreter's own hatchling, with nothing from an index, into
/// DIR (not the shared venv). Checks that the wheel carried the committed stubs and the
/// `py.typed` marker. Returns DIR (for PYTHONPATH).
fn install_package(python: &Path, dir: &Path) -> std::path::PathBuf {
    let package = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python");
    let site = dir.join("site");
    let out = std::process::Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-build-isolation",
            "--no-deps",
            "--no-cache-dir",
            "--quiet",
        ])
        .arg("--target")
        .arg(&site)
        .arg(package)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pip install --no-index --no-build-isolation ./clients/python failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "ctp_client/__init__.py",
        "ctp_client/py.typed",
        "ctp_client/_pb/__init__.py",
        "ctp_client/_pb/ctp_pb2.py",
        "ctp_client/_pb/ctp_pb2.pyi",
        "ctp_client/_pb/ctp_pb2_grpc.py",
    ] {
        assert!(
            site.join(file).is_file(),
            "the installed package lacks {file}"
        );
    }
    // Its dependencies resolve offline against what the interpreter already has.
    let out = std::process::Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-build-isolation",
            "--dry-run",
            "--quiet",
            package,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the package's dependencies do not resolve offline:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    site
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_package_and_example_against_a_live_daemon() {
    // Shards the live tests write for a task submitted by reference.
    let shards = tempfile::tempdir().unwrap();
    let shards_dir = shards.path().canonicalize().unwrap();
    let allow = format!("[{:?}]", format!("file://{}/", shards_dir.display()));
    let app = spawn_app_with(
        Db::Sqlite,
        vec![("CTP__STORAGE__ALLOW_URLS".to_string(), allow)],
    )
    .await;
    let python = assets::python();
    let has_grpc = std::process::Command::new(&python)
        .args(["-c", "import grpc, grpc_tools, numpy, hatchling.build"])
        .status()
        .unwrap()
        .success();
    assert!(
        has_grpc,
        "{} lacks grpcio/grpcio-tools/numpy/hatchling: run scripts/setup-torch.sh",
        python.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let site = install_package(&python, tmp.path());
    let addr = app.addr.trim_start_matches("http://").to_string();

    // The package's own tests (offline ones, stubs-match-proto, and the live flow), run
    // from a neutral folder so `import ctp_client` is the installed copy.
    let tests = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python/tests");
    let out = tokio::process::Command::new(&python)
        .args(["-m", "unittest", "discover", "-v", "-s", tests])
        .current_dir(tmp.path())
        .env("PYTHONPATH", &site)
        .env("CTP_ADDR", &addr)
        .env("CTP_SHARDS_DIR", &shards_dir)
        .env(
            "CTP_PROTO_ROOT",
            concat!(env!("CARGO_MANIFEST_DIR"), "/proto"),
        )
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "clients/python tests failed:\n{stderr}"
    );
    assert!(
        !stderr.contains("skipped"),
        "no package test may be skipped here:\n{stderr}"
    );

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/client.py");
    let out = tokio::process::Command::new(&python)
        .args([script, "--addr", &addr, "--model", "py", "--epochs", "2"])
        .env("PYTHONPATH", &site)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The daemon agrees: one succeeded task and a version for model "py".
    let mut c = app.client.clone();
    let tasks = c
        .list_tasks(ctp_api::pb::ListTasksRequest {
            model: Some("py".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].state, ctp_api::pb::TaskState::Succeeded as i32);
    let v = c
        .get_version(ctp_api::pb::GetVersionRequest {
            model: "py".into(),
            version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.task_id, tasks[0].id);

    // A second task with replay, under a gate no non-root version can meet (forgetting is at
    // least -100 Rm points): the example reports the refusal with exit code 5.
    let out = tokio::process::Command::new(&python)
        .args([script, "--addr", &addr, "--model", "py", "--name", "second"])
        .args([
            "--replay-per-task",
            "2",
            "--gate-max-avg-forgetting",
            "-100",
        ])
        .env("PYTHONPATH", &site)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("version 2 was rejected"), "{stderr}");
    let v2 = c
        .get_version(ctp_api::pb::GetVersionRequest {
            model: "py".into(),
            version: Some(2),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v2.state, ctp_api::pb::VersionState::Rejected as i32);
    assert!(!v2.is_head);
    let t2 = c
        .get_task(ctp_api::pb::GetTaskRequest {
            task_id: v2.task_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        t2.settings.unwrap().replay.unwrap().samples_per_task,
        Some(2)
    );
    app.stop().await;
}
