//! `/api/webhooks`: each configured webhook (URL without credentials, its events) with its
//! deliveries by state and latest failure, read from the outbox (read scope).
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::{HttpError, Shared, Viewer};
use crate::webhooks::config::display_url;

pub async fn webhooks(State(ctx): State<Shared>, _v: Viewer) -> Result<Json<Value>, HttpError> {
    let stats = ctx.state.store.webhook_stats().await?;
    let hooks: Vec<Value> = ctx
        .state
        .settings
        .webhooks
        .iter()
        .map(|h| {
            let s = stats
                .iter()
                .find(|s| s.endpoint == h.url)
                .cloned()
                .unwrap_or_default();
            json!({
                "url": display_url(&h.url),
                "events": h.events,
                "pending": s.pending,
                "delivered": s.delivered,
                "dead": s.dead,
                "last_error": s.last_error,
                "last_error_at": s.last_error_at.map(|t| t.to_rfc3339()),
            })
        })
        .collect();
    Ok(Json(json!({ "webhooks": hooks })))
}
