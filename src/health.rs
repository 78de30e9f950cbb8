//! Whether the daemon can serve: recovered, not draining, able to write its data dir and to
//! reach its database and (when configured) its object storage.
//!
//! A background loop probes the data dir (a small file written, fsynced and removed) and pings
//! the database every two seconds, and keeps `grpc.health.v1` in step: NOT_SERVING while a
//! probe fails (a full disk, a read-only mount, a database outage) or while training is held
//! back for lack of space, SERVING again by itself once they pass. Nothing has to restart.
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::datadir::DataDir;
use crate::state::AppState;

/// A database ping slower than this counts as a failure.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the data dir is probed and the database pinged.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// Bytes the probe writes: enough to notice a disk that cannot take another block.
const PROBE_BYTES: usize = 64 << 10;

pub use crate::state::StorageHealth;

/// Writes, fsyncs and removes a probe file in the data dir.
///
/// # Errors
/// The I/O error, with the data dir named.
pub fn probe(data: &DataDir) -> Result<(), String> {
    let path = data.root().join(".health-probe.tmp");
    let result = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(&vec![0u8; PROBE_BYTES])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&path);
    result.map_err(|e| format!("data dir {} is not writable: {e}", data.root().display()))
}

/// Sets grpc.health.v1 for the whole server ("") and for ctp.v1.ContinualTrainer together.
pub async fn set_serving(health: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    health
        .set_service_status(ctp_api::pb::continual_trainer_server::SERVICE_NAME, status)
        .await;
}

/// Probes the data dir and the database and updates the health service until shutdown.
pub async fn watch(state: Arc<AppState>, health: HealthReporter) {
    let mut shutdown = state.hub.shutdown_signal();
    let mut last: Option<bool> = None;
    loop {
        let data = state.data.clone();
        let result = tokio::task::spawn_blocking(move || probe(&data))
            .await
            .unwrap_or_else(|e| Err(format!("probe panicked: {e}")));
        state.storage.set_probe(result);
        let ping = match tokio::time::timeout(PING_TIMEOUT, state.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!(
                "the database is unreachable: {}",
                crate::errors::error_chain(&e)
            )),
            Err(_) => Err(format!(
                "the database did not answer within {PING_TIMEOUT:?}"
            )),
        };
        state.storage.set_database(ping);
        let objects = match tokio::time::timeout(PING_TIMEOUT, state.objects.probe()).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "object storage {} did not answer within {PING_TIMEOUT:?}",
                state.objects.describe()
            )),
        };
        state.storage.set_objects(objects);
        let problem = state.storage.problem();
        let serving = state.is_ready() && !state.is_draining() && problem.is_none();
        if last != Some(serving) {
            match &problem {
                Some(p) => tracing::warn!(problem = %p, "Health: NOT_SERVING"),
                None if serving => tracing::info!("Health: SERVING"),
                None => {}
            }
            set_serving(&health, serving).await;
            last = Some(serving);
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_passes_on_a_writable_dir_and_names_the_dir_otherwise() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        probe(&data).unwrap();
        assert!(
            std::fs::read_dir(data.root()).unwrap().next().is_none(),
            "probe left a file"
        );
        let gone = DataDir::open(&tmp.path().join("x")).unwrap();
        std::fs::remove_dir(gone.root()).unwrap();
        let err = probe(&gone).unwrap_err();
        assert!(err.contains(&gone.root().display().to_string()), "{err}");
    }

    #[test]
    fn starving_training_is_a_problem_until_cleared() {
        let h = StorageHealth::default();
        assert_eq!(h.problem(), None);
        h.set_starved(true);
        assert!(h.problem().is_some());
        h.set_starved(false);
        h.set_probe(Err("full".into()));
        assert_eq!(h.problem().as_deref(), Some("full"));
    }
}
