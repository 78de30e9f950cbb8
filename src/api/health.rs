//! The database half of `grpc.health.v1`: a background probe that reports NOT_SERVING
//! while the database does not answer, and SERVING again once it does.
use std::sync::Arc;
use std::time::Duration;

use tonic_health::server::HealthReporter;

use crate::app::{set_health, AppState};

/// Time between two probes.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A probe that takes longer than this counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Pings the database every second until the daemon drains; flips health on each change.
pub async fn probe_database(state: Arc<AppState>, health: HealthReporter) {
    let mut shutdown = state.hub.shutdown_signal();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut up = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let ping = tokio::time::timeout(PROBE_TIMEOUT, state.store.ping()).await;
        let ok = matches!(ping, Ok(Ok(())));
        if ok == up {
            continue;
        }
        if state.is_draining() {
            return;
        }
        up = ok;
        match ping {
            Ok(Ok(())) => tracing::info!("Database reachable again: serving"),
            Ok(Err(e)) => tracing::error!(error.message = %super::status::error_chain(&e),
                "Database unreachable: health NOT_SERVING"),
            Err(_) => tracing::error!("Database probe timed out: health NOT_SERVING"),
        }
        set_health(&health, ok).await;
    }
}
