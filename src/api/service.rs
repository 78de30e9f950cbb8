//! `ctp.v1.ContinualTrainer`: thin handlers that check scope, validate, call the store / engine
//! and convert. Errors go through [`ApiError`] → `Status` in one place.
use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{require, Scope};
use super::convert;
use super::status::ApiError;
use super::{anchors, export, gate, submit, watch};
use crate::state::AppState;
use crate::store::VersionRow;
use crate::trainer::{Control, ModelConfig, Preset, VersionRef};
use ctp_api::pb::{self, continual_trainer_server::ContinualTrainer};

pub struct Service {
    pub state: Arc<AppState>,
}

type Res<T> = Result<Response<T>, Status>;

impl Service {
    /// A verified local copy of a version's checkpoint: the data dir's file, or one fetched
    /// into this daemon's cache from object storage (a cold cache works, it is only slower).
    async fn version_ref(&self, v: &VersionRow) -> Result<VersionRef, ApiError> {
        let path = self
            .state
            .objects
            .local(&v.checkpoint_path, &v.sha256)
            .await?;
        Ok(VersionRef {
            path,
            sha256: v.sha256.clone(),
        })
    }

    async fn model_config(&self, model: &str) -> Result<ModelConfig, ApiError> {
        let m = self.state.store.get_model(model).await?;
        let preset = Preset::parse(&m.preset).ok_or_else(|| {
            ApiError::Internal(format!("model {model} has preset {:?}", m.preset))
        })?;
        Ok(ModelConfig::preset(preset))
    }

    async fn version_or_head(
        &self,
        model: &str,
        version: Option<i64>,
    ) -> Result<VersionRow, ApiError> {
        match version {
            Some(v) => Ok(self.state.store.get_version(model, v).await?),
            None => {
                self.state.store.head(model).await?.ok_or_else(|| {
                    ApiError::NotFound(format!("model {model:?} has no versions yet"))
                })
            }
        }
    }
}

#[tonic::async_trait]
impl ContinualTrainer for Service {
    #[tracing::instrument(skip_all, fields(rpc = "SubmitTask"))]
    async fn submit_task(&self, req: Request<Streaming<pb::SubmitTaskRequest>>) -> Res<pb::Task> {
        let caller = require(&req, Scope::Submit)?;
        let submitted = submit::submit(&self.state, caller, req.into_inner()).await;
        if let Err(ApiError::Quota(q)) = &submitted {
            submit::quota_refused(&self.state, q).await;
        }
        let (task, existing) = submitted?;
        tracing::info!(task_id = %task.id, existing, "SubmitTask done");
        Ok(Response::new(convert::task_to_pb(&task)))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetTask"))]
    async fn get_task(&self, req: Request<pb::GetTaskRequest>) -> Res<pb::Task> {
        require(&req, Scope::Read)?;
        let t = self
            .state
            .store
            .get_task(&req.get_ref().task_id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(convert::task_to_pb(&t)))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListTasks"))]
    async fn list_tasks(&self, req: Request<pb::ListTasksRequest>) -> Res<pb::ListTasksResponse> {
        require(&req, Scope::Read)?;
        let r = req.into_inner();
        let state = convert::state_from_pb(r.state)?;
        let token = Some(r.page_token.as_str()).filter(|t| !t.is_empty());
        let (rows, next) = self
            .state
            .store
            .list_tasks(r.model.as_deref(), state, r.page_size, token)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: rows.iter().map(convert::task_to_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    type WatchTaskStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::TaskEvent, Status>> + Send>>;

    #[tracing::instrument(skip_all, fields(rpc = "WatchTask"))]
    async fn watch_task(&self, req: Request<pb::WatchTaskRequest>) -> Res<Self::WatchTaskStream> {
        require(&req, Scope::Read)?;
        let r = req.into_inner();
        let rx = watch::watch(self.state.clone(), r.task_id, r.after_seq).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all, fields(rpc = "CancelTask"))]
    async fn cancel_task(&self, req: Request<pb::CancelTaskRequest>) -> Res<pb::Task> {
        let caller = require(&req, Scope::Admin)?;
        let id = req.into_inner().task_id;
        let t = self
            .state
            .store
            .cancel_task(&id)
            .await
            .map_err(ApiError::from)?;
        if t.state.is_terminal() {
            // It was queued and is now cancelled: tell watchers.
            let ev = crate::task::StoredEvent::Terminal {
                state: t.state.as_str().into(),
                error: format!("cancelled by {}", caller.name),
                produced_version: None,
                rejection: None,
            };
            self.state
                .hub
                .emit(&self.state.store, &id, ev)
                .await
                .map_err(ApiError::from)?;
        } else {
            self.state.running.signal(Some(&id), Control::CANCEL);
        }
        tracing::info!(task_id = %id, who = %caller.name, "Cancel requested");
        Ok(Response::new(convert::task_to_pb(&t)))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListVersions"))]
    async fn list_versions(
        &self,
        req: Request<pb::ListVersionsRequest>,
    ) -> Res<pb::ListVersionsResponse> {
        require(&req, Scope::Read)?;
        let r = req.into_inner();
        self.state
            .store
            .get_model(&r.model)
            .await
            .map_err(ApiError::from)?;
        let token = Some(r.page_token.as_str()).filter(|t| !t.is_empty());
        let (rows, next) = self
            .state
            .store
            .list_versions(&r.model, r.page_size, token)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListVersionsResponse {
            versions: rows.iter().map(convert::version_to_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetVersion"))]
    async fn get_version(&self, req: Request<pb::GetVersionRequest>) -> Res<pb::Version> {
        require(&req, Scope::Read)?;
        let r = req.into_inner();
        let v = self.version_or_head(&r.model, r.version).await?;
        Ok(Response::new(convert::version_to_pb(&v)))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Rollback"))]
    async fn rollback(&self, req: Request<pb::RollbackRequest>) -> Res<pb::RollbackResponse> {
        let caller = require(&req, Scope::Admin)?;
        let r = req.into_inner();
        super::limits::check("reason", &r.reason, super::limits::REASON_BYTES)?;
        let target = self
            .state
            .store
            .get_version(&r.model, r.version)
            .await
            .map_err(ApiError::from)?;
        // Verify before moving the head: the hash matches and the weights load.
        let cfg = self.model_config(&r.model).await?;
        let checkpoint = self.version_ref(&target).await?;
        self.state
            .engine
            .verify(cfg, checkpoint)
            .await
            .map_err(|e| {
                ApiError::FailedPrecondition(format!("version {} cannot be used: {e}", r.version))
            })?;
        let reason = if r.reason.is_empty() {
            "rollback".to_string()
        } else {
            r.reason
        };
        let change = self
            .state
            .store
            .rollback(&r.model, r.version, r.expected_head, &caller.name, &reason)
            .await
            .map_err(ApiError::from)?;
        let head = self
            .state
            .store
            .get_version(&r.model, r.version)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(model = %r.model, from = ?change.from_version, to = change.to_version, who = %caller.name, "Rolled back");
        Ok(Response::new(pb::RollbackResponse {
            head: Some(convert::version_to_pb(&head)),
            change: Some(convert::head_change_to_pb(&change)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SetPromotionGate"))]
    async fn set_promotion_gate(
        &self,
        req: Request<pb::SetPromotionGateRequest>,
    ) -> Res<pb::PromotionGate> {
        let caller = require(&req, Scope::Admin)?;
        let g = gate::set(&self.state, req.into_inner(), &caller.name).await?;
        Ok(Response::new(g))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetPromotionGate"))]
    async fn get_promotion_gate(
        &self,
        req: Request<pb::GetPromotionGateRequest>,
    ) -> Res<pb::PromotionGate> {
        require(&req, Scope::Read)?;
        Ok(Response::new(
            gate::get(&self.state, req.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetServerInfo"))]
    async fn get_server_info(&self, req: Request<pb::GetServerInfoRequest>) -> Res<pb::ServerInfo> {
        require(&req, Scope::Read)?;
        let s = &self.state;
        Ok(Response::new(pb::ServerInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            device: s.engine.device.clone(),
            precision: s.engine.precision.clone(),
            backend: format!("{:?}", s.store.backend()).to_lowercase(),
            storage_problem: s.storage.problem().unwrap_or_default(),
            precision_rule: s.engine.precision_rule.clone(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Embed"))]
    async fn embed(&self, req: Request<pb::EmbedRequest>) -> Res<pb::EmbedResponse> {
        require(&req, Scope::Read)?;
        let r = req.into_inner();
        let cfg = self.model_config(&r.model).await?;
        let v = self.version_or_head(&r.model, r.version).await?;
        let size = cfg.image_size as u32;
        let limits = self.state.image_limits();
        let images = tokio::task::spawn_blocking(move || {
            r.images
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    crate::images::decode_rgb(b, &limits, size)
                        .map_err(|e| ApiError::Invalid(format!("images[{i}]: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
        if let Some(i) = r.texts.iter().position(|t| t.trim().is_empty()) {
            return Err(ApiError::Invalid(format!("texts[{i}] is empty")).into());
        }
        let checkpoint = self.version_ref(&v).await?;
        let e = self
            .state
            .engine
            .embed(cfg.clone(), checkpoint, images, r.texts)
            .await
            .map_err(ApiError::from)?;
        let wrap = |rows: Vec<Vec<f32>>| {
            rows.into_iter()
                .map(|values| pb::Embedding { values })
                .collect()
        };
        Ok(Response::new(pb::EmbedResponse {
            version: v.version,
            dim: cfg.embed_dim as u32,
            image_embeddings: wrap(e.images),
            text_embeddings: wrap(e.texts),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Backup"))]
    async fn backup(&self, req: Request<pb::BackupRequest>) -> Res<pb::BackupResponse> {
        let caller = require(&req, Scope::Admin)?;
        let target = std::path::PathBuf::from(req.into_inner().path);
        let st = &self.state;
        let remote = (!st.objects.is_local()).then(|| st.objects.describe());
        let done = crate::backup::backup(&st.store, &st.data, remote, &target)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(path = %done.path.display(), files = done.manifest.files.len(),
            bytes = done.manifest.total_bytes(), who = %caller.name, "Backup written");
        Ok(Response::new(convert::backup_to_pb(&done)))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SetTaskPriority"))]
    async fn set_task_priority(&self, req: Request<pb::SetTaskPriorityRequest>) -> Res<pb::Task> {
        let caller = require(&req, Scope::Admin)?;
        let r = req.into_inner();
        let priority = convert::priority_from_pb("priority", r.priority)?;
        let task = self
            .state
            .store
            .set_task_priority(&r.task_id, priority)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(task_id = %r.task_id, %priority, who = %caller.name, "Priority changed");
        self.state.wake.notify_one();
        self.state.queue_changed.notify_one();
        Ok(Response::new(convert::task_to_pb(&task)))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetQuota"))]
    async fn get_quota(&self, req: Request<pb::GetQuotaRequest>) -> Res<pb::QuotaUsage> {
        let caller = require(&req, Scope::Read)?;
        let usage = self
            .state
            .store
            .usage(&caller.name)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(convert::quota_to_pb(
            &caller.name,
            &caller.quota,
            &usage,
        )))
    }

    type ExportVersionStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ExportVersionChunk, Status>> + Send>>;

    /// Read scope: an export changes nothing, and Embed (read) already serves what a
    /// version computes (docs/export.md).
    #[tracing::instrument(skip_all, fields(rpc = "ExportVersion"))]
    async fn export_version(
        &self,
        req: Request<pb::ExportVersionRequest>,
    ) -> Res<Self::ExportVersionStream> {
        require(&req, Scope::Read)?;
        let r = req.into_inner();
        let rx = export::export(self.state.clone(), r.model, r.version).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Verify"))]
    async fn verify(&self, req: Request<pb::VerifyRequest>) -> Res<pb::VerifyReport> {
        let caller = require(&req, Scope::Admin)?;
        let load = req.into_inner().load_weights;
        let st = &self.state;
        // Read-only: no repair while the daemon owns its files.
        let report = crate::verify::Verifier {
            store: &st.store,
            objects: &st.objects,
            data: &st.data,
            engine: load.then_some(&st.engine),
        }
        .run(false)
        .await
        .map_err(ApiError::from)?;
        tracing::info!(problems = report.problems.len(), unreferenced = report.unreferenced.len(),
            temp_files = report.temp_files.len(), load, who = %caller.name, "Verify done");
        Ok(Response::new(convert::verify_to_pb(&report, load)))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RegisterAnchorSuite"))]
    async fn register_anchor_suite(
        &self,
        req: Request<Streaming<pb::RegisterAnchorSuiteRequest>>,
    ) -> Res<pb::AnchorSuite> {
        let caller = require(&req, Scope::Admin)?;
        let suite = anchors::register(&self.state, caller, req.into_inner()).await?;
        Ok(Response::new(suite))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListAnchorSuites"))]
    async fn list_anchor_suites(
        &self,
        req: Request<pb::ListAnchorSuitesRequest>,
    ) -> Res<pb::ListAnchorSuitesResponse> {
        require(&req, Scope::Read)?;
        Ok(Response::new(
            anchors::list(&self.state, req.into_inner()).await?,
        ))
    }
}
