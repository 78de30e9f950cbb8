//! The dashboard (`ctpd --http-listen`) against a live daemon training tiny tasks: its HTTP
//! API (always), and its pages in headless Chromium (skipped, saying why, where Chromium or
//! chromedriver is missing). `CTP_SCREENSHOTS=docs/dashboard` saves screenshots.

mod browser;

use std::time::Duration;

use crate::helpers::{self, header, requests, shape_samples, spawn_app_with, Db, TestApp};
use ctp_api::pb::{self, continual_trainer_client::ContinualTrainerClient};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

const READ: &str = "viewer-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";
const MODEL: &str = "dash";

type Auth = fn(Request<()>) -> Result<Request<()>, Status>;
type Client = ContinualTrainerClient<InterceptedService<Channel, Auth>>;

fn as_admin(mut r: Request<()>) -> Result<Request<()>, Status> {
    let v = format!("Bearer {ADMIN}").parse().unwrap();
    r.metadata_mut().insert("authorization", v);
    Ok(r)
}

async fn daemon() -> (TestApp, Client) {
    let tokens = format!(
        r#"[{{name="viewer", token="{READ}", scopes=["read"]}}, {{name="ops", token="{ADMIN}", scopes=["admin"]}}]"#
    );
    let env = vec![
        (
            "CTP__HTTP_LISTEN".to_string(),
            "\"127.0.0.1:0\"".to_string(),
        ),
        ("CTP__AUTH__TOKENS".to_string(), tokens),
    ];
    let app = spawn_app_with(Db::Sqlite, env).await;
    let channel = tonic::transport::Endpoint::from_shared(app.addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = ContinualTrainerClient::with_interceptor(channel, as_admin as Auth);
    (app, client)
}

async fn submit(c: &mut Client, name: &str, shape: usize, epochs: u32) -> pb::Task {
    let reqs = requests(header(MODEL, name, epochs), shape_samples(shape), 5);
    c.submit_task(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner()
}

/// Polls GetTask until the task has ended.
async fn wait_done(c: &mut Client, id: &str) -> pb::Task {
    for _ in 0..3000 {
        let t = c
            .get_task(pb::GetTaskRequest { task_id: id.into() })
            .await
            .unwrap()
            .into_inner();
        if t.finished_at.is_some() {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("task {id} did not finish");
}

/// A plain HTTP/1.1 request; returns (status, body).
async fn http(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(app.http_addr.unwrap())
        .await
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_uses_the_grpc_tokens_scopes_and_errors() {
    let (app, mut c) = daemon().await;
    let t = submit(&mut c, "shapes-a", 0, 1).await;
    wait_done(&mut c, &t.id).await;
    assert_eq!(
        http(&app, "GET", "/", None, "").await.0,
        200,
        "pages need no token"
    );
    assert_eq!(http(&app, "GET", "/api/models", None, "").await.0, 401);
    assert_eq!(
        http(
            &app,
            "GET",
            "/api/models",
            Some("wrong-token-0123456789"),
            ""
        )
        .await
        .0,
        401
    );
    let (code, body) = http(&app, "GET", "/api/models", Some(READ), "").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["models"][0]["head"], json!(1));
    let (code, body) = http(&app, "GET", "/api/models/nope", Some(READ), "").await;
    assert_eq!(code, 404, "{body}");
    let rb = r#"{"version": 1, "expected_head": 1, "reason": "test"}"#;
    let (code, body) = http(&app, "POST", "/api/models/dash/rollback", Some(READ), rb).await;
    assert_eq!(code, 403, "a read token cannot roll back: {body}");
    let stale = r#"{"version": 1, "expected_head": 7, "reason": "test"}"#;
    let (code, body) = http(
        &app,
        "POST",
        "/api/models/dash/rollback",
        Some(ADMIN),
        stale,
    )
    .await;
    assert_eq!(code, 409, "a stale expected_head is a conflict: {body}");
    let (code, _) = http(
        &app,
        "POST",
        "/api/models/dash/rollback",
        Some(ADMIN),
        "not json",
    )
    .await;
    assert_eq!(code, 400);
    let (code, body) = http(
        &app,
        "GET",
        &format!("/api/tasks/{}/events?after=0", t.id),
        Some(READ),
        "",
    )
    .await;
    assert_eq!(code, 200);
    assert!(body.contains("event: terminal"), "{body}");
    assert!(body.contains("event: snapshot"), "{body}");
    app.stop().await;
}

/// Opens `hash` with a full page load.
async fn open(b: &browser::Browser, base: &str, hash: &str) {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    b.goto(&format!("{base}/?load={n}#{hash}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let b = match browser::Browser::start().await {
        Ok(b) => b,
        Err(why) => {
            eprintln!("SKIPPED dashboard_in_a_real_browser: {why}");
            return;
        }
    };
    let (app, mut c) = daemon().await;
    let base = format!("http://{}", app.http_addr.unwrap());
    for (i, name) in ["shapes-a", "shapes-b"].iter().enumerate() {
        let t = submit(&mut c, name, i, 2).await;
        let t = wait_done(&mut c, &t.id).await;
        assert_eq!(t.produced_version, Some(i as i64 + 1), "{t:?}");
    }

    // No token: the sign-in form. An admin token: everything.
    open(&b, &base, "/models").await;
    b.wait(
        "the sign-in form",
        30,
        "return !!document.querySelector('#token')",
    )
    .await;
    b.js(
        "ctp.setToken(arguments[0]); return true",
        vec![json!(ADMIN)],
    )
    .await;
    open(&b, &base, "/models").await;
    let head =
        "return document.querySelector('tr[data-model=\"dash\"] .head')?.textContent === 'v2'";
    b.wait("the models table", 60, head).await;
    b.shot("models").await;

    // A long task: its progress bar advances through server-sent events, without a reload.
    let long = submit(&mut c, "shapes-long", 2, 2000).await;
    open(&b, &base, "/tasks").await;
    b.js("window.noReload = true; return true", vec![]).await;
    let step = format!(
        "const r = document.querySelector('tr[data-task=\"{}\"]'); \
         const s = r && r.dataset.state === 'RUNNING' ? Number(r.dataset.step) : 0;",
        long.id
    );
    let s1 = b
        .wait("the task to run", 300, &format!("{step} return s"))
        .await;
    let more = format!("{step} return s > {}", s1.as_u64().unwrap());
    b.wait("the progress bar to advance", 300, &more).await;
    assert_eq!(
        b.js("return window.noReload === true", vec![]).await,
        json!(true)
    );
    assert!(
        b.js("return window.ctpEvents || 0", vec![])
            .await
            .as_u64()
            .unwrap()
            > 0
    );
    b.shot("tasks").await;

    // Cancel through the UI, with its confirmation.
    b.click(&format!("button[data-cancel=\"{}\"]", long.id))
        .await;
    b.wait(
        "the confirmation",
        10,
        "return document.querySelector('#confirm').open",
    )
    .await;
    b.click("#confirm-ok").await;
    let t = wait_done(&mut c, &long.id).await;
    assert_eq!(t.state, pb::TaskState::Cancelled as i32, "{t:?}");
    let gone = format!(
        "return document.querySelector('tr[data-task=\"{}\"]')?.dataset.state === 'CANCELLED'",
        long.id
    );
    b.wait("the list to show the cancel", 60, &gone).await;

    // Model detail: tree, charts; then a rollback through the UI moves the head.
    open(&b, &base, "/models/dash").await;
    b.wait(
        "the version tree",
        60,
        "return !!document.querySelector('.node.head[data-version=\"2\"]')",
    )
    .await;
    b.wait(
        "four charts",
        120,
        "return document.querySelectorAll('#charts img').length === 4",
    )
    .await;
    b.shot("model").await;
    b.click("button[data-rollback=\"1\"]").await;
    b.wait(
        "the confirmation",
        10,
        "return document.querySelector('#confirm').open",
    )
    .await;
    let reason = "v2 forgot shapes-a (browser test)";
    b.js(
        "document.querySelector('#confirm-reason').value = arguments[0]; return true",
        vec![json!(reason)],
    )
    .await;
    b.click("#confirm-ok").await;
    b.wait(
        "the head to move",
        60,
        "return document.querySelector('#head')?.textContent === 'v1'",
    )
    .await;
    let audit = format!("const a = document.querySelector('#audit')?.innerText || ''; return a.includes({reason:?}) && a.includes('ops')");
    b.wait("the audit row", 30, &audit).await;
    b.wait(
        "v2 marked rolled back",
        30,
        "return !!document.querySelector('.node.off[data-version=\"2\"]')",
    )
    .await;
    let head = c
        .get_version(pb::GetVersionRequest {
            model: MODEL.into(),
            version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(head.version, 1);
    b.shot("model-after-rollback").await;

    // Version detail.
    open(&b, &base, "/models/dash/versions/2").await;
    b.wait(
        "the checkpoint hash",
        60,
        "return (document.querySelector('#sha')?.textContent || '').length === 64",
    )
    .await;
    b.wait(
        "the evaluation row",
        10,
        "return document.querySelectorAll('#evals tbody tr').length === 3",
    )
    .await;
    b.shot("version").await;

    // A read-only token sees no admin controls, and the server refuses its writes.
    b.js("ctp.setToken(arguments[0]); return true", vec![json!(READ)])
        .await;
    open(&b, &base, "/models/dash").await;
    b.wait(
        "the version tree (read-only)",
        60,
        "return !!document.querySelector('.node.head')",
    )
    .await;
    assert!(b
        .js(
            "return document.querySelector('#whoami').textContent",
            vec![]
        )
        .await
        .to_string()
        .contains("read"));
    assert_eq!(
        b.js(
            "return document.querySelectorAll('.admin, [data-rollback], [data-cancel]').length",
            vec![]
        )
        .await,
        json!(0)
    );
    open(&b, &base, "/models/dash/versions/2").await;
    b.wait(
        "the version page (read-only)",
        60,
        "return !!document.querySelector('#sha')",
    )
    .await;
    assert_eq!(
        b.js("return document.querySelectorAll('.admin').length", vec![])
            .await,
        json!(0)
    );
    let post = "const cb = arguments[arguments.length - 1]; fetch('/api/models/dash/rollback', {method: 'POST', \
        headers: {'Content-Type': 'application/json', Authorization: 'Bearer ' + localStorage.getItem('ctpToken')}, \
        body: JSON.stringify({version: 2, expected_head: 1, reason: 'x'})}).then(r => cb(r.status));";
    let status = b.client.execute_async(post, vec![]).await.unwrap();
    assert_eq!(status, json!(403));

    b.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_metrics_can_share_one_listener() {
    let addr = format!("\"127.0.0.1:{}\"", helpers::free_port());
    let env = vec![
        ("CTP__HTTP_LISTEN".to_string(), addr.clone()),
        ("CTP__METRICS_LISTEN".to_string(), addr),
    ];
    let app = spawn_app_with(Db::Sqlite, env).await;
    assert_eq!(app.metrics_addr, app.http_addr);
    let (code, body) = http(&app, "GET", "/metrics", None, "").await;
    assert_eq!(code, 200);
    assert!(body.contains("ctp_queue_depth"), "{body}");
    let (code, body) = http(&app, "GET", "/", None, "").await;
    assert_eq!(code, 200);
    assert!(body.contains("ctp dashboard"));
    // No tokens configured: as over gRPC, the caller is an anonymous admin.
    let (code, body) = http(&app, "GET", "/api/whoami", None, "").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"admin\":true"), "{body}");
    app.stop().await;
}
