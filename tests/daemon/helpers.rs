//! Starts a real `ctpd` (in-process `Application`, port 0) against SQLite or a throwaway
//! Postgres, and drives it through the generated tonic client.
#![allow(dead_code)]
use std::path::PathBuf;
use std::time::Duration;

use ctp::app::Application;
use ctp::config::{Overrides, Settings};
use ctp_api::pb::{self, continual_trainer_client::ContinualTrainerClient};
use tonic::transport::Channel;

#[path = "../support/assets.rs"]
pub mod assets;
#[path = "../support/bins.rs"]
pub mod bins;
#[path = "../support/postgres.rs"]
pub mod pg;
#[path = "../support/shapes.rs"]
pub mod shapes;

pub enum Db {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub addr: String,
    /// Prometheus endpoint, when `CTP__METRICS_LISTEN` was set.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Dashboard endpoint, when `CTP__HTTP_LISTEN` was set.
    pub http_addr: Option<std::net::SocketAddr>,
    pub client: ContinualTrainerClient<Channel>,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Graceful shutdown (as on SIGTERM); returns once the daemon has exited.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.join.take().unwrap().await.unwrap().unwrap();
    }
}

pub fn settings(
    db_url: String,
    dir: &std::path::Path,
    extra_env: Vec<(String, String)>,
) -> Settings {
    let mut env = vec![
        ("CTP__ENGINE__DEVICE".to_string(), "\"cpu\"".to_string()),
        ("CTP__ENGINE__THREADS".to_string(), "1".to_string()),
        (
            "CTP__ENGINE__WEIGHTS_DIR".to_string(),
            format!("{:?}", assets::weights().display().to_string()),
        ),
        ("CTP__HEARTBEAT_SECONDS".to_string(), "1".to_string()),
    ];
    env.extend(extra_env);
    let flags = Overrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
        database_url: Some(db_url),
        ..Default::default()
    };
    Settings::load(None, env, &flags).unwrap()
}

pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, vec![]).await
}

pub async fn spawn_app_with(db: Db, env: Vec<(String, String)>) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let url = match db {
        Db::Sqlite => String::new(),
        Db::Postgres => pg::PgServer::shared().fresh_database().await,
    };
    let mut app = spawn_app_in(url, dir.path(), env).await;
    app._dir = Some(dir);
    app
}

/// A daemon on the data dir `dir` (kept after it stops) and database `url` ("" = SQLite
/// inside the data dir).
pub async fn spawn_app_in(
    url: String,
    dir: &std::path::Path,
    env: Vec<(String, String)>,
) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        ctp::telemetry::init_tracing();
    }
    let s = settings(url, dir, env);
    let data_dir = s.data_dir.clone();
    let app = Application::build(s).await.unwrap();
    let addr = format!("http://{}", app.grpc_addr());
    let metrics_addr = app.metrics_addr();
    let http_addr = app.http_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let join = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let client = connect(&addr).await;
    wait_serving(&addr).await;
    TestApp {
        addr,
        metrics_addr,
        http_addr,
        client,
        data_dir,
        _dir: None,
        stop: Some(tx),
        join: Some(join),
    }
}

pub async fn connect(addr: &str) -> ContinualTrainerClient<Channel> {
    for _ in 0..100 {
        if let Ok(c) = ContinualTrainerClient::connect(addr.to_string()).await {
            return c
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("daemon at {addr} never came up");
}

/// Waits until grpc.health.v1 reports SERVING (startup recovery done).
pub async fn wait_serving(addr: &str) {
    wait_health(addr, true).await;
}

/// Waits until grpc.health.v1 reports SERVING (`true`) or NOT_SERVING (`false`); the
/// daemon may still be starting.
pub async fn wait_health(addr: &str, serving: bool) {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
        .unwrap()
        .connect_lazy();
    let mut health = HealthClient::new(channel);
    let want = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for _ in 0..600 {
        if let Ok(r) = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
        {
            if r.into_inner().status() == want {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("daemon at {addr} never reported {want:?}");
}

/// A TCP port that was free a moment ago (for daemons started as processes).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn png(rgb: &[u8], w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_raw(w, h, rgb.to_vec()).unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// 16 PNG samples of one shape: 8 colours × 2 sizes; "blue", "pink" and "red" are eval.
pub fn shape_samples(t: usize) -> Vec<pb::Sample> {
    shapes::variants(t)
        .into_iter()
        .map(|(cname, sname, px, caption)| {
            let eval = cname == "blue" || cname == "pink" || cname == "red";
            pb::Sample {
                image: png(&px, 32, 32),
                caption: caption.into_bytes(),
                id: format!("{cname}-{sname}"),
                split: if eval {
                    pb::Split::Eval
                } else {
                    pb::Split::Train
                } as i32,
            }
        })
        .collect()
}

pub fn header(model: &str, name: &str, epochs: u32) -> pb::TaskHeader {
    pb::TaskHeader {
        model: model.into(),
        preset: "tiny".into(),
        task_name: name.into(),
        settings: Some(pb::TrainSettings {
            epochs: Some(epochs),
            batch_size: Some(5),
            learning_rate: Some(1e-3),
            ..Default::default()
        }),
        eval_split: Some(pb::EvalSplit {
            kind: Some(pb::eval_split::Kind::PerSample(pb::PerSampleSplit {})),
        }),
        seed: 7,
        ..Default::default()
    }
}

pub fn requests(
    h: pb::TaskHeader,
    samples: Vec<pb::Sample>,
    chunk: usize,
) -> Vec<pb::SubmitTaskRequest> {
    use pb::submit_task_request::Msg;
    let mut v = vec![pb::SubmitTaskRequest {
        msg: Some(Msg::Header(h)),
    }];
    for c in samples.chunks(chunk) {
        v.push(pb::SubmitTaskRequest {
            msg: Some(Msg::Chunk(pb::SampleChunk {
                samples: c.to_vec(),
            })),
        });
    }
    v
}

pub async fn submit(
    client: &mut ContinualTrainerClient<Channel>,
    h: pb::TaskHeader,
    samples: Vec<pb::Sample>,
) -> Result<pb::Task, tonic::Status> {
    client
        .submit_task(tokio_stream::iter(requests(h, samples, 5)))
        .await
        .map(|r| r.into_inner())
}

/// Watches a task to its terminal event; returns all events (snapshot first).
pub async fn watch_all(
    client: &mut ContinualTrainerClient<Channel>,
    task_id: &str,
    after_seq: u64,
) -> Vec<pb::TaskEvent> {
    let mut stream = client
        .watch_task(pb::WatchTaskRequest {
            task_id: task_id.into(),
            after_seq,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while let Some(ev) = tokio::time::timeout_at(deadline, stream.message())
        .await
        .expect("watch timed out")
        .unwrap()
    {
        let terminal = matches!(ev.event, Some(pb::task_event::Event::Terminal(_)));
        out.push(ev);
        if terminal {
            break;
        }
    }
    out
}

pub fn terminal(events: &[pb::TaskEvent]) -> pb::Terminal {
    match events.last().and_then(|e| e.event.clone()) {
        Some(pb::task_event::Event::Terminal(t)) => t,
        other => panic!("no terminal event, last = {other:?}"),
    }
}
