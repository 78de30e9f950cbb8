//! Wires the daemon together: store → engine → dispatcher → gRPC server, with recovery at
//! startup and a graceful drain at shutdown.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::api::auth::Auth;
use crate::api::service::Service;
use crate::config::Settings;
use crate::datadir::{DataDir, DataDirLock, Ownership};
use crate::objects::Objects;
use crate::state::AppState;
use crate::store::{Backend, Store};
use crate::telemetry::Metrics;
use crate::trainer::{Control, TrainerHandle};
use crate::worker;
use ctp_api::pb;
use ctp_api::pb::continual_trainer_server::ContinualTrainerServer;

pub struct Application {
    state: Arc<AppState>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    /// The dashboard's listener; also serves /metrics when both addresses are the same.
    http_listener: Option<TcpListener>,
    /// This daemon's hold on its data dir, released when the daemon has stopped.
    lock: DataDirLock,
}

impl Application {
    /// Opens the store (running migrations), starts the engine and binds the listeners
    /// (port 0 picks a free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let data = DataDir::open(&settings.data_dir)
            .with_context(|| format!("opening data dir {}", settings.data_dir.display()))?;
        // Before anything reads or sweeps the data dir: one owner, or peers on one Postgres.
        let lock = DataDirLock::acquire(data.root(), ownership(&settings))?;
        let objects = Objects::open(&settings.storage, &data).context("opening object storage")?;
        let store = Store::connect(&settings.database_url())
            .await
            .context("opening the database")?
            .with_webhooks(crate::webhooks::routes(&settings.webhooks))
            .with_ranking(crate::store::Ranking {
                aging_s: settings.scheduler.aging_seconds,
                min_run: Duration::from_secs(settings.scheduler.min_run_seconds),
            });
        let engine = TrainerHandle::start(settings.engine.clone())
            .context("starting the training engine")?;
        let listener = TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let shared = settings.metrics_shares_http();
        let metrics_listener = match settings.metrics_listen.as_str() {
            "" => None,
            _ if shared => None,
            addr => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding metrics {addr}"))?,
            ),
        };
        let http_listener = match settings.http_listen.as_str() {
            "" => None,
            addr => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding dashboard {addr}"))?,
            ),
        };
        let worker_id = worker::identity(&settings, listener.local_addr()?);
        tracing::info!(device = %engine.device, precision = %engine.precision, backend = ?store.backend(), data_dir = %data.root().display(), objects = %objects.describe(), "ctpd starting");
        let metrics = Metrics::default();
        metrics.set_engine(&engine.device, &engine.precision);
        let limits: Vec<_> = match settings.auth.tokens.is_empty() {
            true => vec![(
                crate::quota::ANONYMOUS.to_string(),
                settings.auth.anonymous_quota.clone(),
            )],
            false => settings
                .auth
                .tokens
                .iter()
                .map(|t| (t.name.clone(), t.quota.clone()))
                .collect(),
        };
        metrics.set_quota_limits(&limits);
        let state = Arc::new(AppState::new(
            settings, data, objects, store, engine, metrics, worker_id,
        ));
        Ok(Application {
            state,
            listener,
            metrics_listener,
            http_listener,
            lock,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        match self.state.settings.metrics_shares_http() {
            true => self.http_addr(),
            false => self
                .metrics_listener
                .as_ref()
                .and_then(|l| l.local_addr().ok()),
        }
    }

    /// The dashboard's address, when `http_listen` is set.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then drains: health NOT_SERVING, refuse submissions,
    /// checkpoint the running task at its next step, end watch streams, exit.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let state = self.state;
        let (health, health_svc) = tonic_health::server::health_reporter();
        crate::health::set_serving(&health, false).await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let auth = Auth::new(&state.settings.auth);
        let max = state.settings.limits.max_message_bytes;
        let trainer = ContinualTrainerServer::new(Service {
            state: state.clone(),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let trainer = InterceptedService::new(trainer, move |req| auth.intercept(req));
        let mut builder = Server::builder();
        if let Some(tls) = &state.settings.tls {
            let cert = std::fs::read(&tls.cert)
                .with_context(|| format!("reading TLS cert {}", tls.cert.display()))?;
            let key = std::fs::read(&tls.key)
                .with_context(|| format!("reading TLS key {}", tls.key.display()))?;
            let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
            if let Some(ca) = &tls.client_ca {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("reading TLS client CA {}", ca.display()))?;
                config = config.client_ca_root(Certificate::from_pem(pem));
            }
            builder = builder.tls_config(config)?;
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let router = builder
            .add_service(health_svc)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(trainer);
        // TCP_NODELAY: without it small unary replies wait for the peer's delayed ACK (~40 ms).
        let incoming =
            tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let server = tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await
        });

        // Recovery: put interrupted jobs back in the queue, quarantine unreferenced files.
        let requeued = match state.store.backend() {
            Backend::Sqlite => state.store.requeue_all_running().await?,
            Backend::Postgres => {
                let own = &state.worker_id;
                state.store.requeue_expired_or_held_by(own).await?
            }
        };
        if !requeued.is_empty() {
            tracing::info!(tasks = ?requeued, "Requeued interrupted tasks");
        }
        let cleanup = worker::clean_orphans(&state, worker::Sweep::Startup).await?;
        state.metrics.refresh(&state.store).await;
        state.mark_ready();
        // Health follows readiness, draining, the data dir and the database from here on.
        tokio::spawn(crate::health::watch(state.clone(), health.clone()));
        tokio::spawn(worker::reap(state.clone()));
        tokio::spawn(worker::sweep_forever(state.clone()));
        tokio::spawn(crate::webhooks::run(state.clone()));
        tracing::info!(addr = %state.settings.listen, removed_tmp = cleanup.removed_tmp, quarantined = cleanup.quarantined, "ctpd serving");

        let worker = if state.settings.dispatch {
            tokio::spawn(worker::run(state.clone()))
        } else {
            tracing::info!("dispatch = false: tasks are stored and queued, not trained here");
            tokio::spawn(async {})
        };
        let (metrics_stop_tx, metrics_stop_rx) = tokio::sync::oneshot::channel::<()>();
        if let Some(l) = self.metrics_listener {
            let s = state.clone();
            let render = move || {
                let s = s.clone();
                async move {
                    s.metrics.refresh(&s.store).await;
                    s.metrics.render()
                }
            };
            tokio::spawn(crate::telemetry::serve_metrics(l, render, async {
                let _ = metrics_stop_rx.await;
            }));
        }
        let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
        if let Some(l) = self.http_listener {
            tracing::info!(url = %format!("http://{}/", l.local_addr()?), "dashboard serving");
            tokio::spawn(crate::dashboard::serve(l, state.clone(), async {
                let _ = http_stop_rx.await;
            }));
        }

        shutdown.await;
        tracing::info!("Shutting down: draining");
        state.begin_draining();
        crate::health::set_serving(&health, false).await;
        state.running.signal(None, Control::PAUSE);
        state.hub.begin_shutdown();
        // Again, after the health loop has seen the shutdown (it may have raced the first).
        crate::health::set_serving(&health, false).await;
        let grace = Duration::from_secs(state.settings.shutdown_grace_seconds);
        if tokio::time::timeout(grace, worker).await.is_err() {
            tracing::warn!("The running task did not checkpoint within the grace period");
        }
        let _ = metrics_stop_tx.send(());
        let _ = http_stop_tx.send(());
        let _ = stop_tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        state.store.close().await;
        drop(self.lock);
        tracing::info!("ctpd stopped");
        Ok(())
    }
}

/// How a daemon with `settings` owns its data dir: alone (SQLite), or shared with the peers
/// of its Postgres database.
fn ownership(settings: &Settings) -> Ownership {
    match settings.database_url().starts_with("postgres") {
        true => Ownership::Shared,
        false => Ownership::Exclusive,
    }
}

/// `ctpd verify`: checks a data dir whose daemon is stopped (its lock is taken as a daemon
/// would take it, so a running owner makes this refuse), and with `repair` quarantines what
/// no row references. The database is migrated first, as a starting daemon would.
///
/// # Errors
/// The data dir is in use, or the database or storage cannot be opened.
pub async fn verify_offline(
    settings: Settings,
    repair: bool,
) -> anyhow::Result<crate::verify::Report> {
    let data = DataDir::open(&settings.data_dir)
        .with_context(|| format!("opening data dir {}", settings.data_dir.display()))?;
    let _lock = DataDirLock::acquire(data.root(), ownership(&settings))?;
    let objects = Objects::open(&settings.storage, &data).context("opening object storage")?;
    let store = Store::connect(&settings.database_url())
        .await
        .context("opening the database")?;
    let engine = TrainerHandle::start(settings.engine.clone())
        .context("starting the engine (to load each version)")?;
    let report = crate::verify::Verifier {
        store: &store,
        objects: &objects,
        data: &data,
        engine: Some(&engine),
    }
    .run(repair)
    .await?;
    store.close().await;
    Ok(report)
}

/// Resolves on the first SIGINT or SIGTERM; a second one exits immediately.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("Signal received; draining (send again to exit now)");
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        std::process::exit(130);
    });
}
