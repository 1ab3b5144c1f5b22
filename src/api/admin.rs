//! `GET /api/admin/health` (admin JWT): everything an operator needs on one
//! page — alerts, Google channels and expiries, users needing reconnect,
//! Calendly outcome counts and unmatched hosts, realtime and writer state.
//! Never a secret.

use std::sync::atomic::Ordering::Relaxed;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::http::error::{ApiError, ApiResult};
use crate::startup::App;

pub async fn health(app: App, auth: Option<String>) -> ApiResult<Response> {
    let who = super::authenticate(&app, auth).await?;
    if !who.admin {
        return Err(ApiError::Forbidden("only admins may see the health details".into()));
    }
    let google = crate::google::admin_health(&app.store).await;
    let (calendly, retained, oldest) = app
        .store
        .read(|c| {
            let retained: i64 = c.query_row("SELECT COUNT(*) FROM changes", [], |r| r.get(0))?;
            Ok((crate::calendly::admin_health(c), retained, crate::store::changes::oldest(c)?))
        })
        .await?;
    let hub = &app.hub.stats;
    let w = &app.store.writer.stats;
    let batches = w.batches.load(Relaxed).max(1);
    let body = json!({
        "status": if app.alerts.active().is_empty() { "ok" } else { "attention" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "alerts": app.alerts.active(),
        "google": google,
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
        "changes": {"head_seq": app.hub.head(), "oldest_seq": oldest, "retained": retained},
    });
    Ok(super::json_response(StatusCode::OK, &body))
}
