//! Calendly webhooks: `POST /api/calendly/webhook` receives signed
//! deliveries and turns bookings, cancellations, reschedules and no-shows
//! into the adviser's meetings and clients, exactly once; plus the public
//! status `GET /api/calendly/webhook/test` and the admin details
//! `GET /api/admin/health/calendly` (the store's `CalendlyHealth`).
//!
//! The path of a delivery: body read up to 256 KiB (413 beyond) →
//! [`signature::verify`] over the raw bytes (401 otherwise: counted per
//! minute and reason by [`rejected`], no row of its own) →
//! [`payload::Delivery::parse`] (400 and an `invalid` row) →
//! [`booking::book`] as one writer request → 200 after COMMIT. Every
//! verified delivery ends in exactly one `calendly webhook <event>:
//! <outcome>, …` log line; refused ones at most one per source address per
//! minute. This module holds only [`CalendlyState`] and never writes a
//! table itself: `booking` decides, the store's steps write.

pub mod api;
pub mod booking;
pub mod payload;
pub mod rejected;
pub mod signature;

use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::config::CalendlyConfig;
use crate::counters::Metrics;
use crate::http::error::{ApiError, ApiResult};
use crate::http::log_throttle::LogThrottle;
use crate::http::PeerAddr;
use crate::http::{authenticate, json_response, respond, Authenticator};
use crate::model::DeliveryOutcome;
use crate::store::calendly::DeliveryRow;
use crate::store::{Store, StoreError};
use payload::Delivery;
use signature::Reason;

/// The header Calendly signs its deliveries in.
pub const SIGNATURE_HEADER: &str = "calendly-webhook-signature";

/// What the Calendly routes use, and nothing else. Cheap to clone.
#[derive(Clone)]
pub struct CalendlyState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub config: Arc<CalendlyConfig>,
    /// The server's one throttle for refused-delivery log lines.
    pub log_throttle: Arc<LogThrottle>,
    /// The identity check of the admin route.
    pub auth: Authenticator,
}

/// Per-server state: the parts, the signing keys in use and the refusal counts.
struct Webhook {
    state: CalendlyState,
    /// Keys stored by `syncgate calendly subscribe`, cached; re-read when a
    /// signature matches none of the cached keys (a key added while running).
    stored: RwLock<Option<Arc<Vec<String>>>>,
    rejections: rejected::Rejections,
}

impl Webhook {
    /// Configured keys first, then stored ones.
    async fn keys(&self, reload: bool) -> Result<Vec<String>, StoreError> {
        let cached = self.stored.read().ok().and_then(|g| g.clone());
        let stored = match cached {
            Some(k) if !reload => k,
            _ => {
                let k = Arc::new(self.state.store.calendly_signing_keys().await?);
                if let Ok(mut g) = self.stored.write() {
                    *g = Some(k.clone());
                }
                k
            }
        };
        let mut all = configured_keys(&self.state.config).map(str::to_string).collect::<Vec<_>>();
        all.extend(stored.iter().cloned());
        Ok(all)
    }
}

/// The keys in `calendly.signing_keys`, trimmed, blanks skipped.
fn configured_keys(config: &CalendlyConfig) -> impl Iterator<Item = &str> {
    crate::config::present(&config.signing_keys)
}

/// The webhook, its public status and its admin details.
pub fn routes(state: CalendlyState) -> BoxedFilter<(Response,)> {
    let w = Arc::new(Webhook { state, stored: RwLock::new(None), rejections: Default::default() });
    let with = {
        let w = w.clone();
        warp::any().map(move || w.clone())
    };
    let hook = warp::path!("api" / "calendly" / "webhook")
        .and(warp::post())
        .and(with.clone())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<PeerAddr>())
        .and(warp::body::stream())
        .then(|w: Arc<Webhook>, headers: HeaderMap, peer: Option<PeerAddr>, body| async move {
            let source = source_of(&headers, peer);
            receive(w, headers, source, body).await
        });
    let test = warp::path!("api" / "calendly" / "webhook" / "test")
        .and(warp::get())
        .and(with.clone())
        .and_then(|w: Arc<Webhook>| async move { respond(public_status(w).await) });
    let admin = warp::path!("api" / "admin" / "health" / "calendly")
        .and(warp::get())
        .and(with)
        .and(warp::header::optional::<String>("authorization"))
        .and_then(|w: Arc<Webhook>, auth: Option<String>| async move { respond(admin_status(w, auth).await) });
    hook.or(test).unify().or(admin).unify().boxed()
}

enum BodyError {
    TooLarge,
    Read(String),
}

/// The raw body, refusing to buffer more than `limit` bytes (also for
/// chunked bodies that announce no length).
async fn read_body<S, B>(stream: S, limit: usize) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
        if buf.len() + chunk.remaining() > limit {
            return Err(BodyError::TooLarge);
        }
        buf.put(chunk);
    }
    Ok(buf.freeze())
}

fn announced_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(warp::http::header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Where a delivery came from, for the log: the first `X-Forwarded-For`
/// entry when a proxy set one, else the peer. Only ever logged: behind a
/// proxy it cannot be trusted to decide anything.
fn source_of(headers: &HeaderMap, peer: Option<PeerAddr>) -> String {
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 64);
    match (forwarded, peer) {
        (Some(f), _) => crate::http::clip(f),
        (None, Some(p)) => p.0.ip().to_string(),
        (None, None) => "?".into(),
    }
}

/// `POST /api/calendly/webhook`
async fn receive<S, B>(w: Arc<Webhook>, headers: HeaderMap, source: String, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let started = Instant::now();
    let max_body = w.state.config.max_body_bytes;
    let too_large = || ApiError::PayloadTooLarge(format!("the body is larger than {max_body} bytes (calendly.max_body_bytes)"));
    if announced_length(&headers).is_some_and(|n| n > max_body as u64) {
        reject(&w, None, "too_large", "the body is larger than the limit", &source).await;
        return too_large().into_response();
    }
    let body = match read_body(body, max_body).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            reject(&w, None, "too_large", "the body is larger than the limit", &source).await;
            return too_large().into_response();
        }
        Err(BodyError::Read(e)) => {
            tracing::info!(error = %e, "calendly webhook ?: unreadable body");
            return ApiError::BadRequest("the body could not be read".into()).into_response();
        }
    };

    // Headers that are not visible ASCII are malformed, not missing.
    let header = headers.get(SIGNATURE_HEADER).map(|v| v.to_str().unwrap_or("\u{1}"));
    if let Err(reason) = check_signature(&w, header, &body).await {
        let claimed = payload::claimed_event(&body);
        reject(&w, claimed.as_deref(), reason.code(), &reason.to_string(), &source).await;
        return ApiError::Unauthorized(reason.to_string()).into_response();
    }

    let text = String::from_utf8_lossy(&body).into_owned();
    let delivery = match Delivery::parse(&body) {
        Ok(d) => d,
        Err(why) => return invalid(&w, payload::claimed_event(&body), text, why).await,
    };
    match booking::book(&w.state.store, delivery.clone(), text).await {
        Ok(applied) => booked(&w, &delivery, applied, started),
        Err(e) => failed(&w, &delivery, e.into(), started).await,
    }
}

/// 200 after COMMIT, with the outcome and the meeting it touched.
fn booked(w: &Webhook, delivery: &Delivery, applied: booking::Applied, started: Instant) -> Response {
    let meeting = applied.meeting_id.map(|m| m.to_string()).unwrap_or_default();
    w.state.metrics.webhook("calendly", applied.outcome.as_str());
    tracing::info!(
        event = %delivery.event,
        outcome = applied.outcome.as_str(),
        meeting = %meeting,
        user = applied.user_id.unwrap_or_default(),
        ms = started.elapsed().as_millis() as u64,
        "calendly webhook {}: {}, {}",
        delivery.event,
        applied.outcome,
        applied.summary
    );
    json_response(StatusCode::OK, &json!({"outcome": applied.outcome.as_str(), "meeting_id": applied.meeting_id}))
}

/// 400 for a verified body that is no delivery syncgate understands; logged
/// as an `invalid` row with the body.
async fn invalid(w: &Webhook, event: Option<String>, body: String, why: payload::InvalidDelivery) -> Response {
    let row = DeliveryRow {
        event: event.clone(),
        error: Some(why.to_string()),
        payload: Some(body),
        ..DeliveryRow::new(DeliveryOutcome::Invalid)
    };
    let _ = w.state.store.record_calendly_delivery(row).await;
    tracing::info!("calendly webhook {}: invalid, {why}", event.as_deref().unwrap_or("?"));
    w.state.metrics.webhook("calendly", DeliveryOutcome::Invalid.as_str());
    ApiError::BadRequest(format!("the delivery is not a Calendly event this server understands: {why}")).into_response()
}

/// 5xx when booking failed: nothing of the delivery was kept but a `failed`
/// row, and Calendly retries.
async fn failed(w: &Webhook, delivery: &Delivery, e: ApiError, started: Instant) -> Response {
    let ms = started.elapsed().as_millis() as u64;
    let why = e.to_string();
    let row = DeliveryRow {
        event: Some(delivery.event.clone()),
        invitee_uri: delivery.invitee.as_ref().map(|i| i.uri.clone()),
        error: Some(why.clone()),
        ..DeliveryRow::new(DeliveryOutcome::Failed)
    };
    let _ = w.state.store.record_calendly_delivery(row).await;
    tracing::warn!(event = %delivery.event, ms, "calendly webhook {}: failed, {why}", delivery.event);
    w.state.metrics.webhook("calendly", DeliveryOutcome::Failed.as_str());
    match e {
        ApiError::Unavailable(_) => e.into_response(),
        other => ApiError::internal(other).into_response(),
    }
}

/// Verify against the cached keys; on a miss re-read the stored keys once,
/// so a key added by `syncgate calendly subscribe` works without a restart.
async fn check_signature(w: &Webhook, header: Option<&str>, body: &[u8]) -> Result<(), Reason> {
    let tolerance = w.state.config.tolerance.as_secs();
    let now = crate::auth::unix_now();
    let keys = w.keys(false).await.map_err(|e| {
        tracing::error!(error = %e, "cannot read the Calendly signing keys");
        Reason::NoKeys
    })?;
    match signature::verify(&keys, header, body, now, tolerance) {
        Ok(_) => Ok(()),
        Err(Reason::Mismatch | Reason::NoKeys) => {
            let keys = w.keys(true).await.map_err(|_| Reason::NoKeys)?;
            signature::verify(&keys, header, body, now, tolerance).map(|_| ())
        }
        Err(other) => Err(other),
    }
}

/// Count a refused delivery (never its body: it is unauthenticated; and no
/// row of its own: forging must cost next to nothing) and log it.
async fn reject(w: &Webhook, event: Option<&str>, code: &'static str, sentence: &str, source: &str) {
    w.rejections.record(&w.state, code, sentence, event, source).await;
}

/// `GET /api/calendly/webhook/test`: reachable, configured, last accepted
/// delivery. Nothing else: it is public.
async fn public_status(w: Arc<Webhook>) -> ApiResult<Response> {
    let status = w.state.store.calendly_webhook_status().await?;
    let configured = status.stored_signing_keys > 0 || configured_keys(&w.state.config).next().is_some();
    Ok(json_response(StatusCode::OK, &json!({"reachable": true, "configured": configured, "last_accepted_at": status.last_accepted_at})))
}

/// `GET /api/admin/health/calendly`: the store's Calendly health for admins,
/// with how many keys the configuration holds. Never a key or a payload.
async fn admin_status(w: Arc<Webhook>, auth: Option<String>) -> ApiResult<Response> {
    let who = authenticate(&w.state.auth, auth).await?;
    if !who.admin {
        return Err(ApiError::Forbidden("only admins can see webhook details".into()));
    }
    let mut v = match w.state.store.calendly_health().await {
        Ok(health) => serde_json::to_value(health).map_err(ApiError::internal)?,
        Err(e) => {
            tracing::error!(error = %e, "reading Calendly webhook health failed");
            json!({"error": "the Calendly webhook log could not be read"})
        }
    };
    v["configured_signing_keys"] = json!(configured_keys(&w.state.config).count());
    Ok(json_response(StatusCode::OK, &v))
}
