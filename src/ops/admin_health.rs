//! `GET /api/admin/health` (admin JWT): everything an operator needs on one
//! page — alerts, Google channels and expiries, users needing reconnect,
//! Calendly outcome counts and unmatched hosts, realtime and writer state.
//! Never a secret. (Moved from `api/admin.rs`: it reads every feature, so it
//! lives above them.)

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use crate::http::{auth_header, authenticate, json_response, respond, with_state, ApiError, ApiResult, Authenticator};
use crate::ops::alerts::AlertMonitor;
use crate::realtime::Hub;
use crate::store::Store;

/// What the health page reads. Cheap to clone.
#[derive(Clone)]
pub struct AdminHealthState {
    pub store: Store,
    pub auth: Authenticator,
    pub hub: Arc<Hub>,
    pub alerts: Arc<AlertMonitor>,
    pub started: Instant,
    /// This node, for the `cluster` part (nodes, leases).
    pub node: Arc<crate::cluster::Node>,
}

async fn health(state: AdminHealthState, auth: Option<String>) -> ApiResult<Response> {
    let who = authenticate(&state.auth, auth).await?;
    if !who.admin {
        return Err(ApiError::Forbidden("only admins may see the health details".into()));
    }
    let google = crate::provider::health::admin_health(&state.store, crate::model::Provider::Google).await;
    let microsoft = crate::provider::health::admin_health(&state.store, crate::model::Provider::Microsoft).await;
    let calendly = match state.store.calendly_health().await {
        Ok(health) => serde_json::to_value(health).map_err(ApiError::internal)?,
        Err(e) => {
            tracing::error!(error = %e, "reading Calendly webhook health failed");
            json!({"error": "the Calendly webhook log could not be read"})
        }
    };
    let log = state.store.change_log_extent().await?;
    let cluster = match state.node.view().await {
        Ok(view) => serde_json::to_value(view).map_err(ApiError::internal)?,
        Err(e) => {
            tracing::error!(error = %e, "reading the node registry failed");
            json!({"error": "the node registry could not be read"})
        }
    };
    let hub = &state.hub.stats;
    let w = state.store.writer_stats();
    let batches = w.batches.load(Relaxed).max(1);
    let body = json!({
        "status": if state.alerts.active().is_empty() { "ok" } else { "attention" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "alerts": state.alerts.active(),
        "google": google,
        "microsoft": microsoft,
        "calendly": calendly,
        "realtime": {
            "sockets": hub.sockets.load(Relaxed),
            "channels": hub.channels.load(Relaxed),
            "bindings": hub.bindings.load(Relaxed),
            "frames_delivered": hub.frames_delivered.load(Relaxed),
            "catching_up": hub.catching_up.load(Relaxed),
            "closed_slow": hub.closed_slow.load(Relaxed),
        },
        "writer": {
            "batches": w.batches.load(Relaxed),
            "requests": w.requests.load(Relaxed),
            "failed_requests": w.failed_requests.load(Relaxed),
            "mean_batch_size": w.requests.load(Relaxed) as f64 / batches as f64,
        },
        "changes": {"head_seq": state.hub.head(), "oldest_seq": log.oldest_seq, "retained": log.retained},
        "cluster": cluster,
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /api/admin/health`
pub fn routes(state: AdminHealthState) -> BoxedFilter<(Response,)> {
    warp::path!("api" / "admin" / "health")
        .and(warp::get())
        .and(with_state(state))
        .and(auth_header())
        .and_then(|state, auth| async move { respond(health(state, auth).await) })
        .boxed()
}
