//! The Python example (grpcio, stubs generated from the same proto) submits a task to a live
//! daemon and watches it to the end: the API works from another language.
#[allow(dead_code)]
#[path = "daemon/helpers.rs"]
mod helpers;

use helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_submits_and_watches() {
    let app = spawn_app(Db::Sqlite).await;
    let python = assets::python();
    let has_grpc = std::process::Command::new(&python)
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .unwrap()
        .success();
    assert!(
        has_grpc,
        "{} lacks grpcio/grpcio-tools: run scripts/setup-torch.sh",
        python.display()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/client.py");
    let addr = app.addr.trim_start_matches("http://").to_string();
    let out = tokio::process::Command::new(&python)
        .args([script, "--addr", &addr, "--model", "py", "--epochs", "2"])
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
        .list_tasks(ctp::api::pb::ListTasksRequest {
            model: Some("py".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].state, ctp::api::pb::TaskState::Succeeded as i32);
    let v = c
        .get_version(ctp::api::pb::GetVersionRequest {
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
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("version 2 was rejected"), "{stderr}");
    let v2 = c
        .get_version(ctp::api::pb::GetVersionRequest {
            model: "py".into(),
            version: Some(2),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v2.state, ctp::api::pb::VersionState::Rejected as i32);
    assert!(!v2.is_head);
    let t2 = c
        .get_task(ctp::api::pb::GetTaskRequest {
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
