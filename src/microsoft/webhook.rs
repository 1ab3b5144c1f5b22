//! Graph's notifications: `POST /api/microsoft/webhook` (change and
//! lifecycle notifications, and the validation request that precedes a
//! subscription) and `GET /api/microsoft/webhook/test` (reachable,
//! configured, when the last notification came — nothing else).
//!
//! Graph wants an answer within 3 seconds (slow endpoints get their
//! notifications delayed, then dropped), so nothing here waits on Graph:
//! each item is checked and the work it asks for is queued, then 202.
//! A POST is a batch; every item's `clientState` is compared with the
//! secret of the subscription it names, and an item that fails is dropped
//! and counted (it is not Graph's), while the others are served. Items
//! of one user coalesce into one sync request.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::MicrosoftSync;
use crate::http::log_throttle::LogThrottle;
use crate::http::{body, json_response, respond, with_state, ApiError, ApiResult};
use crate::model::{DeliveryOutcome, Provider};
use crate::provider::scheduler::SyncTrigger;

/// One item of a notification POST (change or lifecycle).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    #[serde(default)]
    subscription_id: Option<String>,
    #[serde(default)]
    client_state: Option<String>,
    /// Set on lifecycle notifications only.
    #[serde(default)]
    lifecycle_event: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Batch {
    value: Vec<Value>,
}

/// What one POST came to, for its log line.
#[derive(Debug, Default)]
struct Tally {
    accepted: u64,
    rejected: u64,
    unknown: u64,
    invalid: u64,
    lifecycle: u64,
}

/// `?validationToken=…`: Graph checks the URL answers before it subscribes.
#[derive(Debug, Deserialize)]
struct Validation {
    #[serde(rename = "validationToken")]
    validation_token: Option<String>,
}

/// The echo Graph's validation expects: the decoded token, as plain text.
fn validation_answer(token: &str) -> Response {
    let mut res = Response::new(token.to_string().into());
    res.headers_mut().insert(warp::http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    res
}

/// What the notification routes use.
#[derive(Clone)]
pub struct WebhookState {
    pub microsoft: Arc<MicrosoftSync>,
    /// A flood for one dead subscription costs one log line a minute.
    pub log_throttle: Arc<LogThrottle>,
    /// `server.max_body_bytes`.
    pub max_body_bytes: usize,
}

async fn notification(state: WebhookState, v: Validation, body: Bytes) -> ApiResult<Response> {
    let ms = &state.microsoft;
    if let Some(token) = v.validation_token {
        // Bounded like any answer we echo: Graph's tokens are short.
        if token.len() > 1024 {
            return Err(ApiError::BadRequest("the validation token is too long".into()));
        }
        tracing::info!("microsoft validation request answered");
        return Ok(validation_answer(&token));
    }
    if !ms.enabled() {
        return Err(ApiError::Unavailable("Microsoft 365 is not configured on this server".into()));
    }
    let batch: Batch = serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("not a Graph notification batch: {e}")))?;
    if batch.value.len() > 1000 {
        return Err(ApiError::BadRequest("a notification batch holds at most 1000 items".into()));
    }
    let mut tally = Tally::default();
    let mut sync: BTreeSet<(i64, SyncTrigger)> = BTreeSet::new();
    let mut notified: BTreeSet<i64> = BTreeSet::new();
    let mut dropped: std::collections::BTreeMap<i64, u64> = std::collections::BTreeMap::new();
    for raw in batch.value {
        let outcome = match serde_json::from_value::<Item>(raw) {
            Err(_) => {
                tally.invalid += 1;
                DeliveryOutcome::Invalid
            }
            Ok(item) => one_item(&state, item, &mut tally, &mut sync, &mut notified, &mut dropped).await,
        };
        ms.metrics.webhook("microsoft", outcome.as_str());
    }
    for user_id in notified {
        let store = ms.store.clone();
        ms.tasks.spawn(async move {
            if let Err(e) = store.record_notification(Provider::Microsoft, user_id).await {
                tracing::debug!(user = user_id, error = %e, "could not record a Microsoft notification");
            }
        });
    }
    for (user_id, n) in dropped {
        let store = ms.store.clone();
        ms.tasks.spawn(async move {
            if let Err(e) = store.record_dropped_notifications(user_id, n).await {
                tracing::debug!(user = user_id, error = %e, "could not count dropped Microsoft notifications");
            }
        });
    }
    let users = sync.len();
    for (user_id, trigger) in sync {
        ms.enqueue_for(user_id, trigger);
    }
    tracing::info!(
        accepted = tally.accepted,
        rejected = tally.rejected,
        unknown = tally.unknown,
        invalid = tally.invalid,
        lifecycle = tally.lifecycle,
        users,
        "microsoft notification batch received"
    );
    Ok(warp::reply::with_status(warp::reply(), StatusCode::ACCEPTED).into_response())
}

/// Check one item against its subscription and queue what it asks for.
async fn one_item(
    state: &WebhookState,
    item: Item,
    tally: &mut Tally,
    sync: &mut BTreeSet<(i64, SyncTrigger)>,
    notified: &mut BTreeSet<i64>,
    dropped: &mut std::collections::BTreeMap<i64, u64>,
) -> DeliveryOutcome {
    let ms = &state.microsoft;
    let Some(id) = item.subscription_id.filter(|s| !s.is_empty() && s.len() <= 256) else {
        tally.invalid += 1;
        return DeliveryOutcome::Invalid;
    };
    let channel = match ms.store.channel_for_notification(&id).await {
        Ok(c) => c.filter(|c| c.provider == Provider::Microsoft),
        Err(e) => {
            // Not a 5xx for the whole batch: the safety net and the next
            // notification cover a lookup that failed.
            tracing::warn!(error = %e, "microsoft notification: cannot look the subscription up");
            None
        }
    };
    let Some(channel) = channel else {
        tally.unknown += 1;
        if state.log_throttle.should_log(&format!("microsoft-subscription:{id}")) {
            tracing::warn!("microsoft notification for unknown subscription {id}; further ones for it are not logged for a minute");
        }
        return DeliveryOutcome::UnknownChannel;
    };
    let sent = item.client_state.unwrap_or_default();
    if !bool::from(sent.as_bytes().ct_eq(channel.token.as_bytes())) {
        tally.rejected += 1;
        *dropped.entry(channel.user_id).or_default() += 1;
        tracing::warn!("microsoft notification dropped: wrong clientState for subscription {id} (user {})", channel.user_id);
        return DeliveryOutcome::Rejected;
    }
    let user_id = channel.user_id;
    match item.lifecycle_event.as_deref() {
        None => {
            tally.accepted += 1;
            notified.insert(user_id);
            sync.insert((user_id, SyncTrigger::Push));
        }
        Some(event) => {
            tally.lifecycle += 1;
            tally.accepted += 1;
            lifecycle(ms, user_id, &channel.calendar_id, &id, event, sync);
        }
    }
    DeliveryOutcome::Accepted
}

/// What a lifecycle notification asks for (see `docs/microsoft-graph.md`).
fn lifecycle(ms: &Arc<MicrosoftSync>, user_id: i64, calendar_id: &str, id: &str, event: &str, sync: &mut BTreeSet<(i64, SyncTrigger)>) {
    match event {
        // Extending the subscription also reauthorizes it.
        "reauthorizationRequired" | "subscriptionRemoved" => {
            tracing::info!(user = user_id, subscription = %id, "microsoft lifecycle notification: {event}");
            let (me, calendar_id) = (ms.clone(), calendar_id.to_string());
            ms.tasks.spawn(async move {
                match me.extend_subscription(user_id, &calendar_id).await {
                    // A new subscription: what changed while there was none is read now.
                    Ok(true) => me.enqueue_for(user_id, SyncTrigger::CatchUp),
                    Ok(false) => {}
                    Err(e) => {
                        me.renewals.failed(user_id, &calendar_id, &e.to_string(), e.retry_after()).await;
                    }
                }
            });
        }
        // Notifications were lost: read everything that changed.
        "missed" => {
            tracing::info!(user = user_id, subscription = %id, "microsoft lifecycle notification: missed; syncing");
            sync.insert((user_id, SyncTrigger::CatchUp));
        }
        other => tracing::info!(user = user_id, subscription = %id, "microsoft lifecycle notification {other:?} ignored"),
    }
}

/// `GET /api/microsoft/webhook/test`: reachable, configured, last notification.
async fn public_status(ms: Arc<MicrosoftSync>) -> ApiResult<Response> {
    let last = ms.store.last_notification_at(Provider::Microsoft).await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({"reachable": true, "configured": ms.enabled(), "last_notification_at": last})))
}

/// The notification endpoint and its status page.
pub fn routes(state: WebhookState) -> BoxedFilter<(Response,)> {
    let max_body_bytes = state.max_body_bytes;
    let ms = state.microsoft.clone();
    let post = warp::path!("api" / "microsoft" / "webhook")
        .and(warp::post())
        .and(with_state(state))
        .and(warp::query::<Validation>().or(warp::any().map(|| Validation { validation_token: None })).unify())
        .and(body(max_body_bytes))
        .and_then(|ms, v, b| async move { respond(notification(ms, v, b).await) });
    let test = warp::path!("api" / "microsoft" / "webhook" / "test")
        .and(warp::get())
        .and(with_state(ms))
        .and_then(|ms| async move { respond(public_status(ms).await) });
    post.or(test).unify().boxed()
}
