//! Calendly webhooks: `POST /api/calendly/webhook` receives signed
//! deliveries and turns bookings, cancellations, reschedules and no-shows
//! into the adviser's meetings and clients, exactly once; plus the public
//! status `GET /api/calendly/webhook/test` and the admin details
//! `GET /api/admin/health/calendly` ([`admin_health`]).
//!
//! The path of a delivery: body read up to 256 KiB (413 beyond) →
//! [`signature::verify`] over the raw bytes (401 otherwise: counted per
//! minute and reason by [`rejected`], no row of its own) →
//! [`payload::Delivery::parse`] (400 and an `invalid` row) →
//! [`booking::apply`] as one writer request → 200 after COMMIT. Every
//! verified delivery ends in exactly one `calendly webhook <event>:
//! <outcome>, …` log line; refused ones at most one per source address per
//! minute. This module never writes the synced tables itself: `booking` does,
//! through the writer.

pub mod api;
pub mod booking;
pub mod payload;
pub mod rejected;
pub mod signature;

use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use rusqlite::{Connection, OptionalExtension};
use serde_json::{json, Value};
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::http::error::{ApiError, ApiResult};
use crate::http::{authenticate, json_response, respond};
use crate::startup::{App, PeerAddr};
use crate::store::timefmt;
use booking::EventRow;
use payload::Delivery;
use signature::Reason;

/// Largest delivery accepted. Calendly's payloads are a few KiB.
pub const SIGNATURE_HEADER: &str = "calendly-webhook-signature";

/// Per-server state: the app and the signing keys in use.
struct Webhook {
    app: App,
    /// Keys stored by `syncgate calendly subscribe`, cached; re-read when a
    /// signature matches none of the cached keys (a key added while running).
    stored: RwLock<Option<Arc<Vec<String>>>>,
    rejections: rejected::Rejections,
}

impl Webhook {
    /// Configured keys first, then stored ones.
    async fn keys(&self, reload: bool) -> ApiResult<Vec<String>> {
        let cached = self.stored.read().ok().and_then(|g| g.clone());
        let stored = match cached {
            Some(k) if !reload => k,
            _ => {
                let k = Arc::new(self.app.store.read(|c| Ok(stored_keys(c)?)).await?);
                if let Ok(mut g) = self.stored.write() {
                    *g = Some(k.clone());
                }
                k
            }
        };
        let mut all = crate::config::present(&self.app.config.calendly.signing_keys).map(str::to_string).collect::<Vec<_>>();
        all.extend(stored.iter().cloned());
        Ok(all)
    }
}

fn stored_keys(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT signing_key FROM calendly_signing_keys ORDER BY id DESC")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// The webhook, its public status and its admin details.
pub fn routes(app: App) -> BoxedFilter<(Response,)> {
    let w = Arc::new(Webhook { app, stored: RwLock::new(None), rejections: Default::default() });
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
    let max_body = w.app.config.calendly.max_body_bytes;
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

    let delivery = match Delivery::parse(&body) {
        Ok(d) => d,
        Err(why) => {
            let event = payload::claimed_event(&body);
            let text = String::from_utf8_lossy(&body).into_owned();
            let (e2, why2) = (event.clone(), why.clone());
            let _ = w
                .app
                .store
                .writer
                .write(move |tx| {
                    let now = tx.now().to_string();
                    let row = EventRow {
                        event: e2.as_deref(),
                        outcome: "invalid",
                        error: Some(&why2),
                        payload: Some(&text),
                        ..Default::default()
                    };
                    Ok(booking::record(tx.conn(), &now, &row)?)
                })
                .await;
            tracing::info!("calendly webhook {}: invalid, {why}", event.as_deref().unwrap_or("?"));
            w.app.metrics.webhook("calendly", "invalid");
            return ApiError::BadRequest(format!("the delivery is not a Calendly event this server understands: {why}")).into_response();
        }
    };

    let text = String::from_utf8_lossy(&body).into_owned();
    let d = delivery.clone();
    let result = w.app.store.writer.write(move |tx| Ok(booking::apply(tx, &d, Some(&text))?)).await.map_err(ApiError::from);
    let ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(applied) => {
            let meeting = applied.meeting_id.map(|m| m.to_string()).unwrap_or_default();
            w.app.metrics.webhook("calendly", applied.outcome.as_str());
            tracing::info!(
                event = %delivery.event,
                outcome = applied.outcome.as_str(),
                meeting = %meeting,
                user = applied.user_id.unwrap_or_default(),
                ms,
                "calendly webhook {}: {}, {}",
                delivery.event,
                applied.outcome.as_str(),
                applied.summary
            );
            json_response(StatusCode::OK, &json!({"outcome": applied.outcome.as_str(), "meeting_id": applied.meeting_id}))
        }
        Err(e) => {
            // Nothing of the delivery was kept; Calendly retries a 5xx.
            let why = e.to_string();
            let (event, why2) = (delivery.event.clone(), why.clone());
            let invitee = delivery.invitee.as_ref().map(|i| i.uri.clone());
            let _ = w
                .app
                .store
                .writer
                .write(move |tx| {
                    let now = tx.now().to_string();
                    let row = EventRow {
                        event: Some(&event),
                        invitee_uri: invitee.as_deref(),
                        outcome: "failed",
                        error: Some(&why2),
                        ..Default::default()
                    };
                    Ok(booking::record(tx.conn(), &now, &row)?)
                })
                .await;
            tracing::warn!(event = %delivery.event, ms, "calendly webhook {}: failed, {why}", delivery.event);
            w.app.metrics.webhook("calendly", "failed");
            match e {
                ApiError::Unavailable(_) => e.into_response(),
                other => ApiError::internal(other).into_response(),
            }
        }
    }
}

/// Verify against the cached keys; on a miss re-read the stored keys once,
/// so a key added by `syncgate calendly subscribe` works without a restart.
async fn check_signature(w: &Webhook, header: Option<&str>, body: &[u8]) -> Result<(), Reason> {
    let tolerance = w.app.config.calendly.tolerance.as_secs();
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
    w.rejections.record(&w.app, code, sentence, event, source).await;
}

fn last_accepted(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT received_at FROM calendly_webhook_events WHERE outcome = 'accepted' ORDER BY received_at DESC, id DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .optional()
}

/// `GET /api/calendly/webhook/test`: reachable, configured, last accepted
/// delivery. Nothing else: it is public.
async fn public_status(w: Arc<Webhook>) -> ApiResult<Response> {
    let (stored, last) = w
        .app
        .store
        .read(|c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM calendly_signing_keys", [], |r| r.get(0))?;
            Ok((n, last_accepted(c)?))
        })
        .await?;
    let configured = stored > 0 || crate::config::present(&w.app.config.calendly.signing_keys).next().is_some();
    Ok(json_response(StatusCode::OK, &json!({"reachable": true, "configured": configured, "last_accepted_at": last})))
}

/// `GET /api/admin/health/calendly`: [`admin_health`] for admins.
async fn admin_status(w: Arc<Webhook>, auth: Option<String>) -> ApiResult<Response> {
    let who = authenticate(&w.app.auth, auth).await?;
    if !who.admin {
        return Err(ApiError::Forbidden("only admins can see webhook details".into()));
    }
    let mut v = w.app.store.read(|c| Ok(admin_health(c))).await?;
    v["configured_signing_keys"] = json!(crate::config::present(&w.app.config.calendly.signing_keys).count());
    Ok(json_response(StatusCode::OK, &v))
}

/// Admin details of the Calendly webhook: deliveries by outcome over the
/// last 24 h (rejections also by reason), hosts that matched no user, the
/// last delivery and the last accepted one, how many keys are stored. Never
/// a key or a payload. Duplicates are not counted: they write nothing.
pub fn admin_health(conn: &Connection) -> Value {
    match health(conn) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "reading Calendly webhook health failed");
            json!({"error": "the Calendly webhook log could not be read"})
        }
    }
}

fn health(conn: &Connection) -> rusqlite::Result<Value> {
    let now = timefmt::now();
    let day = timefmt::format(now - time::Duration::hours(24));
    let week = timefmt::format(now - time::Duration::days(7));
    let mut outcomes = serde_json::Map::new();
    for o in ["accepted", "unmatched", "ignored", "rejected", "invalid", "failed"] {
        outcomes.insert(o.into(), json!(0));
    }
    let mut stmt = conn.prepare("SELECT outcome, COUNT(*) FROM calendly_webhook_events WHERE received_at >= ?1 GROUP BY outcome")?;
    for row in stmt.query_map([&day], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (o, n) = row?;
        outcomes.insert(o, json!(n));
    }
    // Refusals are counted per minute, not stored as rows.
    let mut reasons = serde_json::Map::new();
    let mut rejected = 0;
    for (code, n) in crate::store::rejections::by_reason_since(conn, &day)? {
        rejected += n;
        reasons.insert(code, json!(n));
    }
    outcomes.insert("rejected".into(), json!(rejected));
    let mut stmt = conn.prepare(
        "SELECT host, COUNT(*), MAX(received_at) FROM calendly_webhook_events
         WHERE outcome = 'unmatched' AND received_at >= ?1 GROUP BY host ORDER BY 3 DESC LIMIT 50",
    )?;
    let hosts: Vec<Value> = stmt
        .query_map([&week], |r| {
            Ok(json!({"host": r.get::<_, Option<String>>(0)?, "deliveries": r.get::<_, i64>(1)?, "last_at": r.get::<_, String>(2)?}))
        })?
        .collect::<Result<_, _>>()?;
    let last = conn
        .query_row("SELECT received_at, event, outcome, error, summary FROM calendly_webhook_events ORDER BY id DESC LIMIT 1", [], |r| {
            Ok(json!({
                "received_at": r.get::<_, String>(0)?,
                "event": r.get::<_, Option<String>>(1)?,
                "outcome": r.get::<_, String>(2)?,
                "error": r.get::<_, Option<String>>(3)?,
                "summary": r.get::<_, Option<String>>(4)?,
            }))
        })
        .optional()?;
    let stored: i64 = conn.query_row("SELECT COUNT(*) FROM calendly_signing_keys", [], |r| r.get(0))?;
    Ok(json!({
        "outcomes_24h": outcomes,
        "rejected_by_reason_24h": reasons,
        "unmatched_hosts_7d": hosts,
        "last_delivery": last,
        "last_accepted_at": last_accepted(conn)?,
        "stored_signing_keys": stored,
    }))
}
