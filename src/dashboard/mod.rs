//! The live dashboard: a small web UI and JSON API served by `ctpd` on `http_listen`.
//!
//! - Pages are one embedded HTML/JS/CSS bundle (no build step, no network): Models, Tasks,
//!   Model detail, Version detail. The charts are the SVG rendering of the same drawing code
//!   as `ctpctl report` ([`ctp_charts`]).
//! - `/api/...` answers JSON by calling the gRPC service's own handlers in-process, so
//!   scopes, validation and business rules (rollback verification, cancel) are exactly the
//!   gRPC ones; errors become HTTP statuses in one place ([`error`]).
//! - Live task updates are server-sent events from the hub that WatchTask uses; every event
//!   carries its per-task `seq` as the SSE id, so a reconnecting browser resumes where it was.
//! - Authentication: the gRPC bearer tokens and scopes. Reads take the token from the
//!   `Authorization` header or the `ctp_token` cookie (EventSource cannot set headers);
//!   writes need the header and a JSON body, so another site cannot forge them.
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::api::auth::{Auth, Caller, Scope};
use crate::api::service::Service;
use crate::state::AppState;

mod api;
mod charts;
pub mod error;
mod events;
mod webhooks;

use error::HttpError;

/// What every handler reaches.
pub struct Ctx {
    pub state: Arc<AppState>,
    auth: Auth,
}

impl Ctx {
    /// The gRPC service, whose handlers the JSON endpoints call.
    fn service(&self) -> Service {
        Service {
            state: self.state.clone(),
        }
    }
}

type Shared = Arc<Ctx>;

/// The caller of a dashboard request (at least the read scope).
pub struct Viewer(pub Caller);

fn cookie_token(parts: &Parts) -> Option<String> {
    let cookies = parts.headers.get(header::COOKIE)?.to_str().ok()?;
    cookies.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == "ctp_token").then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes (what `encodeURIComponent` produces).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FromRequestParts<Shared> for Viewer {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Shared) -> Result<Self, HttpError> {
        let header_token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::to_string);
        // The cookie only authenticates reads: a forged cross-site POST carries cookies.
        let token = match parts.method {
            Method::GET | Method::HEAD => header_token.or_else(|| cookie_token(parts)),
            _ => header_token,
        };
        let caller = ctx.auth.caller(token.as_deref())?;
        Ok(Viewer(caller))
    }
}

impl Viewer {
    pub fn is_admin(&self) -> bool {
        self.0.scope >= Scope::Admin
    }
}

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const MODEL_JS: &str = include_str!("assets/model.js");
const STYLE: &str = include_str!("assets/style.css");

fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn metrics(State(ctx): State<Shared>) -> Response {
    ctx.state.metrics.refresh(&ctx.state.store).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ctx.state.metrics.render(),
    )
        .into_response()
}

/// The dashboard's routes (and `/metrics` when it shares the listener).
pub fn router(state: Arc<AppState>) -> Router {
    let shared_metrics = state.settings.metrics_shares_http();
    let ctx = Arc::new(Ctx {
        auth: Auth::new(&state.settings.auth),
        state,
    });
    let mut r = Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { asset(APP_JS, "text/javascript") }),
        )
        .route(
            "/model.js",
            get(|| async { asset(MODEL_JS, "text/javascript") }),
        )
        .route("/style.css", get(|| async { asset(STYLE, "text/css") }))
        .route("/api/whoami", get(api::whoami))
        .route("/api/models", get(api::models))
        .route("/api/models/{model}", get(api::model))
        .route("/api/models/{model}/charts", get(charts::charts))
        .route("/api/models/{model}/versions/{version}", get(api::version))
        .route("/api/models/{model}/rollback", post(api::rollback))
        .route("/api/tasks", get(api::tasks))
        .route("/api/tasks/{id}/cancel", post(api::cancel))
        .route("/api/tasks/{id}/events", get(events::events))
        .route("/api/webhooks", get(webhooks::webhooks));
    if shared_metrics {
        r = r.route("/metrics", get(metrics));
    }
    r.fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .with_state(ctx)
}

/// Serves the dashboard on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = router(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "dashboard server failed");
    }
}
