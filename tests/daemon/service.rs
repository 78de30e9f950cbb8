//! Health, reflection, cancellation, watch replay, auth, message limits.
use ctp_api::pb;
use tonic::Code;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer() {
    let app = spawn_app(Db::Sqlite).await;
    let channel = tonic::transport::Endpoint::from_shared(app.addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let mut status = ServingStatus::Unknown;
    for _ in 0..100 {
        status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        if status == ServingStatus::Serving {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, ServingStatus::Serving);
    let named = health
        .check(HealthCheckRequest {
            service: "ctp.v1.ContinualTrainer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(named.status(), ServingStatus::Serving);

    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut refl = ServerReflectionClient::new(channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        resp.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"ctp.v1.ContinualTrainer".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );

    use tonic_reflection::pb::v1alpha::{
        server_reflection_client::ServerReflectionClient as AlphaClient,
        server_reflection_request::MessageRequest as AlphaReq,
        server_reflection_response::MessageResponse as AlphaResp,
        ServerReflectionRequest as AlphaRequest,
    };
    let mut alpha = AlphaClient::new(channel);
    let req = AlphaRequest {
        host: String::new(),
        message_request: Some(AlphaReq::ListServices(String::new())),
    };
    let mut resp = alpha
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let Some(AlphaResp::ListServicesResponse(list)) =
        resp.message().await.unwrap().unwrap().message_response
    else {
        panic!("no v1alpha list")
    };
    assert!(list
        .service
        .iter()
        .any(|s| s.name == "ctp.v1.ContinualTrainer"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_watch_replay_and_message_limit() {
    let app = spawn_app_with(
        Db::Sqlite,
        vec![("CTP__LIMITS__MAX_MESSAGE_BYTES".into(), "2500".into())],
    )
    .await;
    let mut c = app.client.clone();
    // A long task, then a queued one behind it (one running job per model).
    let long = submit(&mut c, header("m", "long", 500), shape_samples(0))
        .await
        .unwrap();
    let queued = submit(&mut c, header("m", "queued", 1), shape_samples(1))
        .await
        .unwrap();
    // Wait until the long task is running and has made progress.
    let mut stream = c
        .watch_task(pb::WatchTaskRequest {
            task_id: long.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let ev = stream.message().await.unwrap().unwrap();
        if matches!(ev.event, Some(pb::task_event::Event::Progress(_))) {
            seen.push(ev.seq);
        }
    }
    drop(stream); // a disconnecting watcher does not cancel training
    let t = c
        .get_task(pb::GetTaskRequest {
            task_id: long.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.state, pb::TaskState::Running as i32);

    // Cancelling the queued task is immediate.
    let q = c
        .cancel_task(pb::CancelTaskRequest {
            task_id: queued.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.state, pb::TaskState::Cancelled as i32);
    let again = c
        .cancel_task(pb::CancelTaskRequest {
            task_id: queued.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    // The running one stops at a step boundary.
    c.cancel_task(pb::CancelTaskRequest {
        task_id: long.id.clone(),
    })
    .await
    .unwrap();
    let all = watch_all(&mut c, &long.id, 0).await;
    assert_eq!(terminal(&all).state, pb::TaskState::Cancelled as i32);
    // Reconnecting with after_seq replays exactly the events after it.
    let after = seen[1];
    let replay = watch_all(&mut c, &long.id, after).await;
    let replay_seqs: Vec<u64> = replay[1..].iter().map(|e| e.seq).collect();
    let full_seqs: Vec<u64> = all[1..]
        .iter()
        .map(|e| e.seq)
        .filter(|s| *s > after)
        .collect();
    assert_eq!(replay_seqs, full_seqs);
    assert_eq!(replay_seqs[0], after + 1);

    // A message over the configured limit is refused with a clear status.
    let err = c
        .submit_task(tokio_stream::iter(requests(
            header("m", "big", 1),
            shape_samples(0),
            16,
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("message length too large"),
        "{}",
        err.message()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_and_scopes() {
    let tokens = r#"[{name="viewer", token="read-token-0123456789", scopes=["read"]}, {name="ops", token="admin-token-0123456789", scopes=["admin"]}]"#;
    let app = spawn_app_with(
        Db::Sqlite,
        vec![("CTP__AUTH__TOKENS".into(), tokens.into())],
    )
    .await;
    let mut c = app.client.clone();
    let err = c
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let with = |t: &str, req: pb::RollbackRequest| {
        let mut r = tonic::Request::new(req);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
        r
    };
    let rb = pb::RollbackRequest {
        model: "m".into(),
        version: 1,
        ..Default::default()
    };
    let err = c
        .rollback(with("read-token-0123456789", rb.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = c
        .rollback(with("admin-token-0123456789", rb))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "admin passes auth and reaches the handler"
    );
    // Health needs no token.
    let channel = tonic::transport::Endpoint::from_shared(app.addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    assert!(health
        .check(HealthCheckRequest {
            service: String::new()
        })
        .await
        .is_ok());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_count_steps_and_syncs() {
    let app = spawn_app_with(
        Db::Sqlite,
        vec![("CTP__METRICS_LISTEN".into(), "127.0.0.1:0".into())],
    )
    .await;
    let mut c = app.client.clone();
    let mut h = header("m", "squares", 1);
    h.settings.as_mut().unwrap().drift_threshold = Some(0.0); // a sync every step
    let t = submit(&mut c, h, shape_samples(0)).await.unwrap();
    assert_eq!(
        terminal(&watch_all(&mut c, &t.id, 0).await).state,
        pb::TaskState::Succeeded as i32
    );
    let addr = app.metrics_addr.expect("metrics listener");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    sock.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let value = |name: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{body}"))
    };
    assert_eq!(value("ctp_train_steps_total"), 2.0);
    assert_eq!(value("ctp_momentum_syncs_total"), 2.0);
    assert_eq!(value("ctp_tasks{state=\"succeeded\"}"), 1.0);
    assert_eq!(value("ctp_queue_depth"), 0.0);
    assert!(body.contains("ctp_step_duration_seconds_bucket"));
    app.stop().await;
}
