//! The scripted mock daemon the client tests run against.
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

use ctp_api::pb;
use ctp_api::pb::continual_trainer_server::{ContinualTrainer, ContinualTrainerServer};
use ctp_api::pb::task_event::Event;

/// Records what the client sent.
#[derive(Default)]
pub struct Mock {
    pub watch_cursors: Mutex<Vec<u64>>,
    pub submitted: Mutex<Vec<pb::SubmitTaskRequest>>,
    pub tokens: Mutex<Vec<String>>,
    pub embeds: Mutex<Vec<pb::EmbedRequest>>,
    pub backups: Mutex<Vec<pb::BackupRequest>>,
}

type Reply<T> = Result<Response<T>, Status>;

fn ev(seq: u64, event: Event) -> Result<pb::TaskEvent, Status> {
    Ok(pb::TaskEvent {
        seq,
        time: None,
        event: Some(event),
    })
}

fn progress(step: u64) -> Event {
    Event::Progress(pb::Progress {
        step,
        total_steps: 10,
        ..Default::default()
    })
}

fn terminal(state: pb::TaskState, error: &str, version: Option<i64>) -> Event {
    Event::Terminal(pb::Terminal {
        state: state as i32,
        error: error.into(),
        produced_version: version,
        rejection_reason: None,
    })
}

fn snapshot(state: pb::TaskState) -> Event {
    Event::Snapshot(pb::Task {
        id: "t".into(),
        state: state as i32,
        ..Default::default()
    })
}

/// Scripted WatchTask streams, chosen by task id and connection number.
fn script(task: &str, call: usize) -> Vec<Result<pb::TaskEvent, Status>> {
    use pb::TaskState::*;
    match (task, call) {
        // First connection breaks after seq 3.
        ("flaky", 0) => vec![
            ev(3, snapshot(Running)),
            ev(1, progress(1)),
            ev(2, progress(2)),
            ev(
                3,
                Event::Sync(pb::MomentumSync {
                    step: 2,
                    k: 2,
                    ..Default::default()
                }),
            ),
            Err(Status::unavailable("connection reset")),
        ],
        // Replays seq 3 (must be dropped), then the daemon drains.
        ("flaky", 1) => vec![
            ev(5, snapshot(Running)),
            ev(
                3,
                Event::Sync(pb::MomentumSync {
                    step: 2,
                    k: 2,
                    ..Default::default()
                }),
            ),
            ev(4, progress(4)),
            ev(4, Event::Heartbeat(pb::Heartbeat {})),
            ev(4, terminal(Running, "daemon shutting down", None)),
        ],
        ("flaky", _) => vec![
            ev(5, snapshot(Running)),
            ev(
                5,
                Event::Log(pb::Log {
                    message: "resumed from step 4".into(),
                }),
            ),
            ev(6, terminal(Succeeded, "", Some(2))),
        ],
        ("failed", _) => vec![
            ev(1, snapshot(Running)),
            ev(2, terminal(Failed, "NaN loss", None)),
        ],
        // Finished task whose stream closes after the snapshot.
        ("done", _) => vec![ev(0, snapshot(Cancelled))],
        _ => vec![Err(Status::not_found("no such task"))],
    }
}

/// The served handle (a newtype: `ContinualTrainer` and `Arc` are both foreign to this crate).
#[derive(Clone)]
pub struct Served(pub Arc<Mock>);

impl std::ops::Deref for Served {
    type Target = Mock;
    fn deref(&self) -> &Mock {
        &self.0
    }
}

#[tonic::async_trait]
impl ContinualTrainer for Served {
    async fn submit_task(
        &self,
        req: Request<tonic::Streaming<pb::SubmitTaskRequest>>,
    ) -> Reply<pb::Task> {
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.tokens
            .lock()
            .unwrap()
            .push(auth.unwrap_or_default().to_string());
        let mut stream = req.into_inner();
        while let Some(msg) = stream.message().await? {
            self.submitted.lock().unwrap().push(msg);
        }
        Ok(Response::new(pb::Task {
            id: "task-1".into(),
            state: pb::TaskState::Queued as i32,
            ..Default::default()
        }))
    }
    async fn get_task(&self, _: Request<pb::GetTaskRequest>) -> Reply<pb::Task> {
        Err(Status::unimplemented("mock"))
    }
    async fn list_tasks(&self, _: Request<pb::ListTasksRequest>) -> Reply<pb::ListTasksResponse> {
        Err(Status::unimplemented("mock"))
    }
    type WatchTaskStream = ReceiverStream<Result<pb::TaskEvent, Status>>;
    async fn watch_task(&self, req: Request<pb::WatchTaskRequest>) -> Reply<Self::WatchTaskStream> {
        let r = req.into_inner();
        let call = {
            let mut cursors = self.watch_cursors.lock().unwrap();
            cursors.push(r.after_seq);
            cursors.len() - 1
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        for item in script(&r.task_id, call) {
            tx.send(item).await.unwrap();
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }
    async fn cancel_task(&self, _: Request<pb::CancelTaskRequest>) -> Reply<pb::Task> {
        Err(Status::failed_precondition("task already finished"))
    }
    async fn list_versions(
        &self,
        _: Request<pb::ListVersionsRequest>,
    ) -> Reply<pb::ListVersionsResponse> {
        Err(Status::unimplemented("mock"))
    }
    async fn get_version(&self, _: Request<pb::GetVersionRequest>) -> Reply<pb::Version> {
        Err(Status::unimplemented("mock"))
    }
    async fn set_promotion_gate(
        &self,
        _: Request<pb::SetPromotionGateRequest>,
    ) -> Reply<pb::PromotionGate> {
        Err(Status::unimplemented("mock"))
    }
    async fn get_promotion_gate(
        &self,
        _: Request<pb::GetPromotionGateRequest>,
    ) -> Reply<pb::PromotionGate> {
        Err(Status::unimplemented("mock"))
    }
    async fn get_server_info(&self, _: Request<pb::GetServerInfoRequest>) -> Reply<pb::ServerInfo> {
        Err(Status::unimplemented("mock"))
    }
    async fn backup(&self, req: Request<pb::BackupRequest>) -> Reply<pb::BackupResponse> {
        let r = req.into_inner();
        self.backups.lock().unwrap().push(r.clone());
        if r.path == "/full" {
            return Err(Status::failed_precondition(
                "backup target /full exists and is not an empty directory; name a new or empty one",
            ));
        }
        Ok(Response::new(pb::BackupResponse {
            path: r.path,
            files: 3,
            bytes: 4096,
            schema_version: 20261130003000,
            created_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            database_sha256: "ab".repeat(32),
        }))
    }
    /// Echoes the priority onto a queued task.
    async fn set_task_priority(&self, req: Request<pb::SetTaskPriorityRequest>) -> Reply<pb::Task> {
        let r = req.into_inner();
        Ok(Response::new(pb::Task {
            id: r.task_id,
            state: pb::TaskState::Queued as i32,
            priority: r.priority,
            ..Default::default()
        }))
    }
    async fn get_quota(&self, _: Request<pb::GetQuotaRequest>) -> Reply<pb::QuotaUsage> {
        Ok(Response::new(pb::QuotaUsage {
            caller: "team-a".into(),
            queued_tasks: Some(pb::QuotaItem {
                used: 1.0,
                limit: Some(2.0),
            }),
            ..Default::default()
        }))
    }
    /// Sound without weights; with `load_weights`, one version "does not load".
    async fn verify(&self, req: Request<pb::VerifyRequest>) -> Reply<pb::VerifyReport> {
        let load = req.into_inner().load_weights;
        Ok(Response::new(pb::VerifyReport {
            sound: !load,
            models: 1,
            versions: 2,
            tasks: 2,
            resume_points: 0,
            problems: if load {
                vec!["version m/2: the checkpoint does not load: shapes".into()]
            } else {
                vec![]
            },
            unreferenced: vec!["versions/stray.safetensors".into()],
            temp_files: vec![],
            loaded_weights: load,
        }))
    }
    type ExportVersionStream = ReceiverStream<Result<pb::ExportVersionChunk, Status>>;
    /// Model "m": two files, the second in two chunks; "tampered": the second file's bytes
    /// do not match the manifest; anything else: NOT_FOUND.
    async fn export_version(
        &self,
        req: Request<pb::ExportVersionRequest>,
    ) -> Reply<Self::ExportVersionStream> {
        use pb::export_version_chunk::Part;
        use sha2::{Digest, Sha256};
        let model = req.into_inner().model;
        if model != "m" && model != "tampered" {
            return Err(Status::not_found(format!("model {model:?} not found")));
        }
        let files = [
            ("config.json", b"{}".to_vec()),
            ("weights.safetensors", b"0123456789".to_vec()),
        ];
        let manifest = pb::ExportManifest {
            model: model.clone(),
            version: 3,
            preset: "tiny".into(),
            probe_source: "stored".into(),
            files: files
                .iter()
                .map(|(n, d)| pb::ExportFile {
                    name: (*n).into(),
                    size: d.len() as u64,
                    sha256: hex::encode(Sha256::digest(d)),
                    description: String::new(),
                })
                .collect(),
        };
        let chunk = |name: &str, offset: u64, data: &[u8]| {
            Ok(pb::ExportVersionChunk {
                part: Some(Part::Chunk(pb::ExportFileChunk {
                    name: name.into(),
                    offset,
                    data: data.to_vec(),
                })),
            })
        };
        let last = if model == "tampered" {
            b"6789X" as &[u8]
        } else {
            b"56789"
        };
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        for m in [
            Ok(pb::ExportVersionChunk {
                part: Some(Part::Manifest(manifest)),
            }),
            chunk("config.json", 0, b"{}"),
            chunk("weights.safetensors", 0, b"01234"),
            chunk("weights.safetensors", 5, last),
        ] {
            tx.send(m).await.unwrap();
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }
    async fn register_anchor_suite(
        &self,
        req: Request<tonic::Streaming<pb::RegisterAnchorSuiteRequest>>,
    ) -> Reply<pb::AnchorSuite> {
        use pb::register_anchor_suite_request::Msg;
        let mut stream = req.into_inner();
        let mut suite = pb::AnchorSuite::default();
        while let Some(msg) = stream.message().await? {
            match msg.msg {
                Some(Msg::Header(h)) => (suite.model, suite.name) = (h.model, h.name),
                Some(Msg::Chunk(c)) => suite.samples += c.samples.len() as u64,
                None => {}
            }
        }
        Ok(Response::new(suite))
    }
    async fn list_anchor_suites(
        &self,
        _: Request<pb::ListAnchorSuitesRequest>,
    ) -> Reply<pb::ListAnchorSuitesResponse> {
        Err(Status::unimplemented("mock"))
    }
    async fn rollback(&self, _: Request<pb::RollbackRequest>) -> Reply<pb::RollbackResponse> {
        Err(Status::aborted("head moved"))
    }
    async fn embed(&self, req: Request<pb::EmbedRequest>) -> Reply<pb::EmbedResponse> {
        let r = req.into_inner();
        self.embeds.lock().unwrap().push(r.clone());
        // Image vectors from the first byte, so tests control the ranking.
        let vec_of = |b: u8| pb::Embedding {
            values: vec![f32::from(b), 1.0],
        };
        Ok(Response::new(pb::EmbedResponse {
            version: 7,
            dim: 2,
            image_embeddings: r.images.iter().map(|i| vec_of(i[0])).collect(),
            text_embeddings: r.texts.iter().map(|_| vec_of(1)).collect(),
        }))
    }
}

/// Starts the mock (plus a SERVING health service) on a free port; returns its address.
pub async fn serve(mock: Arc<Mock>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(ContinualTrainerServer::new(Served(mock)))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr
}
