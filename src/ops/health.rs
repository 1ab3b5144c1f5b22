//! Health: `GET /health` (up, and which version), `GET /health/live` (the
//! process answers) and `GET /health/ready` (the database reads, the writer
//! commits and the realtime hub runs; 503 with the failing check otherwise).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::http::error::ApiError;
use crate::realtime::Hub;
use crate::store::{Store, StoreResult};

/// What the health routes look at.
#[derive(Clone)]
pub struct HealthState {
    pub store: Store,
    pub hub: Arc<Hub>,
    /// This node: its id and its change-log tail.
    pub node: Arc<crate::cluster::Node>,
    /// `cluster.poll_interval`: a working tail reads at least this often.
    pub poll_interval: Duration,
}

/// How long a readiness check may take before it counts as failed.
const CHECK_WAIT: Duration = Duration::from_secs(2);

fn json(status: StatusCode, body: &Value) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// `GET /health`, `GET /health/live`, `GET /health/ready`
pub fn routes(state: HealthState) -> BoxedFilter<(Response,)> {
    let basic =
        warp::path!("health").and(warp::get()).map(|| json(StatusCode::OK, &json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})));
    let live = warp::path!("health" / "live").and(warp::get()).map(|| json(StatusCode::OK, &json!({"status": "ok"})));
    let ready = warp::path!("health" / "ready").and(warp::get()).then(move || {
        let state = state.clone();
        async move {
            let (checks, tail) = readiness(&state).await;
            let ok = checks.iter().all(|(_, v)| v.is_none());
            let detail: serde_json::Map<String, Value> =
                checks.into_iter().map(|(k, v)| (k.to_string(), v.map(Value::String).unwrap_or_else(|| "ok".into()))).collect();
            let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            json(status, &json!({"status": if ok { "ok" } else { "unavailable" }, "checks": detail, "node": state.node.id, "tail": tail}))
        }
    });
    basic.or(live).unify().or(ready).unify().boxed()
}

/// Each readiness check: None when fine, else why not; and where the
/// node's tail stands against the log's head read now.
async fn readiness(state: &HealthState) -> (Vec<(&'static str, Option<String>)>, Value) {
    let verdict = |r: Result<StoreResult<()>, tokio::time::error::Elapsed>, silent: &str| match r {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(ApiError::from(e).public_message()),
        Err(_) => Some(silent.to_string()),
    };
    let db = verdict(tokio::time::timeout(CHECK_WAIT, state.store.ping()).await, "no answer within 2 s");
    // A no-op request through the writer proves its thread commits.
    let writer = verdict(tokio::time::timeout(CHECK_WAIT, state.store.writer_ping()).await, "the writer did not answer within 2 s");
    let hub = (!state.hub.is_alive()).then(|| "the realtime hub is not running".to_string());
    let published = state.hub.published();
    let head = tokio::time::timeout(CHECK_WAIT, state.store.read_log_head()).await.ok().and_then(Result::ok);
    let tail_view = match head {
        Some(head) => json!({"published": published, "head": head, "lag": (head - published).max(0)}),
        None => json!({"published": published, "head": null, "lag": null}),
    };
    // The tail reads at every poll; one that has not reached the head for
    // several polls is stuck (the database unreadable) or drowning.
    let stale_after = (state.poll_interval * 5).max(Duration::from_secs(5));
    let since = state.node.tail.since_caught_up();
    let tail = (since > stale_after)
        .then(|| format!("the change-log tail has not caught up for {} s; changes from other nodes are late", since.as_secs()));
    (vec![("database", db), ("writer", writer), ("hub", hub), ("tail", tail)], tail_view)
}
