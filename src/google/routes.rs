//! Google's HTTP surface: sign-in (`/api/auth/google`, its callback), push
//! channel setup and removal, the push notification endpoint
//! `POST /api/calendar/webhook`, its public status, the admin report, and
//! `/api/me/calendars` ([`super::calendar_routes`]). Handlers are thin; the
//! work is in [`crate::google`]. Google's errors become HTTP answers here
//! and only here.
//!
//! A notification carries no data, only which channel fired: it is checked
//! (unknown channel → 404, wrong token or resource → 403, no sync) and
//! answered at once; the sync runs in the background, coalesced per user.

use std::convert::Infallible;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::calendar_routes;
use super::oauth::{self, Callback, Purpose, SignInError};
use super::sync::SyncError;
use super::GoogleSync;
use crate::auth::identity::Identity;
use crate::http::error::{ApiError, ApiResult};
use crate::http::log_throttle::LogThrottle;
use crate::http::sign_in::{consent_json, to_consent, Consent, Landing};
use crate::http::Authenticator;
use crate::http::{auth_header, body, json_response, query, respond, with_state, QueryParams};
use crate::model::DeliveryOutcome;
use crate::store::timefmt;

/// What Google's routes need: the Google part, and the identity check.
#[derive(Clone)]
pub struct GoogleRoutesState {
    pub google: Arc<GoogleSync>,
    /// The identity check, and the tokens a sign-in ends with.
    pub auth: Authenticator,
    /// Lifetime of the token a Google sign-in ends with (`auth.token_ttl`).
    pub token_ttl_secs: i64,
    /// `server.max_body_bytes`, for `PUT /api/me/calendars`.
    pub max_body_bytes: usize,
    /// Notifications for an unknown or expired channel: one line a minute per channel.
    pub log_throttle: Arc<LogThrottle>,
}

impl GoogleRoutesState {
    /// The caller of an authenticated route, or 401.
    pub(crate) async fn caller(&self, auth: Option<String>) -> ApiResult<Identity> {
        crate::http::authenticate(&self.auth, auth).await
    }
}

fn not_configured() -> ApiError {
    ApiError::Unavailable("Google is not configured on this server (google.client_id and google.client_secret are empty)".into())
}

/// Every Google route, `/api/me/calendars` included.
pub fn routes(app: GoogleRoutesState) -> BoxedFilter<(Response,)> {
    let start = warp::path!("api" / "auth" / "google")
        .and(warp::get())
        .and(with_state(app.clone()))
        .and(auth_header())
        .and(query())
        .and_then(|app, auth, q| async move { respond(start_sign_in(app, auth, q).await) });
    let callback = warp::path!("api" / "auth" / "google" / "callback")
        .and(warp::get())
        .and(with_state(app.clone()))
        .and(query())
        .and(warp::header::headers_cloned())
        .and_then(|app, q, headers| async move { Ok::<_, Infallible>(callback(app, q, headers).await) });
    let connect = warp::path!("api" / "auth" / "google" / "connect")
        .and(warp::post())
        .and(with_state(app.clone()))
        .and(auth_header())
        .and_then(|app, auth| async move { respond(start_connect(app, auth).await) });
    let setup = warp::path!("api" / "calendar" / "webhook" / "setup")
        .and(warp::post())
        .and(with_state(app.clone()))
        .and(auth_header())
        .and_then(|app, auth| async move { respond(setup_channel(app, auth).await) });
    let remove = warp::path!("api" / "calendar" / "webhook")
        .and(warp::delete())
        .and(with_state(app.clone()))
        .and(auth_header())
        .and_then(|app, auth| async move { respond(remove_channels(app, auth).await) });
    let notify = warp::path!("api" / "calendar" / "webhook")
        .and(warp::post())
        .and(with_state(app.clone()))
        .and(warp::header::headers_cloned())
        .and_then(|app: GoogleRoutesState, headers| async move {
            let result = notification(app.clone(), headers).await;
            let outcome = match &result {
                Ok(_) => DeliveryOutcome::Accepted,
                Err(ApiError::NotFound(_)) => DeliveryOutcome::UnknownChannel,
                Err(ApiError::Forbidden(_)) => DeliveryOutcome::Rejected,
                Err(_) => DeliveryOutcome::Invalid,
            };
            app.google.metrics.webhook("google", outcome.as_str());
            respond(result)
        });
    let status = warp::path!("api" / "calendar" / "webhook" / "test")
        .and(warp::get())
        .and(with_state(app.clone()))
        .and_then(|app| async move { respond(public_status(app).await) });
    let admin = warp::path!("api" / "admin" / "health" / "google")
        .and(warp::get())
        .and(with_state(app.clone()))
        .and(auth_header())
        .and_then(|app, auth| async move { respond(admin_report(app, auth).await) });
    let calendars_get = warp::path!("api" / "me" / "calendars")
        .and(warp::get())
        .and(with_state(app.clone()))
        .and(auth_header())
        .and_then(|app, auth| async move { respond(calendar_routes::list(app, auth).await) });
    let calendars_put = warp::path!("api" / "me" / "calendars")
        .and(warp::put())
        .and(with_state(app.clone()))
        .and(auth_header())
        .and(body(app.max_body_bytes))
        .and_then(|app, auth, body| async move { respond(calendar_routes::set(app, auth, body).await) });
    start
        .or(callback)
        .unify()
        .or(connect)
        .unify()
        .or(setup)
        .unify()
        .or(remove)
        .unify()
        .or(notify)
        .unify()
        .or(status)
        .unify()
        .or(admin)
        .unify()
        .or(calendars_get)
        .unify()
        .or(calendars_put)
        .unify()
        .boxed()
}

/// `GET /api/auth/google[?connect=1]`: redirect to Google's consent page.
/// With `connect=1` the caller must be signed in with an Authorization header
/// (scripts). A browser page uses `POST /api/auth/google/connect` instead, so
/// its token never travels in a URL (history, proxy logs).
async fn start_sign_in(app: GoogleRoutesState, auth: Option<String>, q: QueryParams) -> ApiResult<Response> {
    if !app.google.enabled() {
        return Err(not_configured());
    }
    let purpose = match q.get("connect").map(String::as_str) {
        None | Some("0") | Some("false") => Purpose::SignIn,
        Some(_) => {
            let who = app.caller(auth).await?;
            Purpose::Connect(who.user_id)
        }
    };
    let started = app.google.start_sign_in(purpose).map_err(sign_in_error)?;
    to_consent(Consent { location: &started.location, set_cookie: &started.set_cookie })
}

/// `POST /api/auth/google/connect` (JWT): for a signed-in page. Answers
/// `{"location": <Google's consent URL>}` (also as `url`) and sets the state
/// cookie; the page then navigates there ([`consent_json`]).
async fn start_connect(app: GoogleRoutesState, auth: Option<String>) -> ApiResult<Response> {
    if !app.google.enabled() {
        return Err(not_configured());
    }
    let who = app.caller(auth).await?;
    let started = app.google.start_sign_in(Purpose::Connect(who.user_id)).map_err(sign_in_error)?;
    Ok(consent_json(Consent { location: &started.location, set_cookie: &started.set_cookie }))
}

/// `GET /api/auth/google/callback?code=…&state=…`: land signed in on `/`,
/// or a page (JSON for non-browsers) saying why not.
async fn callback(app: GoogleRoutesState, q: QueryParams, headers: HeaderMap) -> Response {
    let result = if app.google.enabled() {
        let cookie = oauth::cookie_nonce(headers.get(header::COOKIE).and_then(|v| v.to_str().ok()));
        let cb = Callback { code: q.get("code").cloned(), state: q.get("state").cloned(), error: q.get("error").cloned() };
        app.google.finish_sign_in(cb, cookie).await.map_err(sign_in_error)
    } else {
        Err(not_configured())
    };
    let clear_cookie = app.google.clear_state_cookie();
    Landing { provider: "Google", auth: &app.auth, token_ttl_secs: app.token_ttl_secs, clear_cookie: &clear_cookie }
        .answer(result, &headers)
}

/// What a refused sign-in answers.
fn sign_in_error(e: SignInError) -> ApiError {
    let message = e.to_string();
    match e {
        SignInError::Cancelled | SignInError::NoVerifiedEmail | SignInError::NoAccount(_) => ApiError::Forbidden(message),
        SignInError::Failed(_)
        | SignInError::Incomplete
        | SignInError::BadState
        | SignInError::OtherBrowser
        | SignInError::StateUsed
        | SignInError::CodeRefused => ApiError::BadRequest(message),
        SignInError::Exchange(_) | SignInError::UserInfo(_) | SignInError::NoSubject => ApiError::Unavailable(message),
        SignInError::TakenByAnotherUser(_) => ApiError::Conflict(message),
        SignInError::UserGone => ApiError::Unauthorized(message),
        SignInError::Refused(_) => ApiError::Unprocessable(message),
        SignInError::Internal(_) => ApiError::internal(message),
        SignInError::Store(e) => e.into(),
    }
}

fn sync_error(e: SyncError) -> ApiError {
    match e {
        SyncError::NotConnected => {
            ApiError::Conflict("connect Google Calendar first: sign in with Google (GET /api/auth/google?connect=1)".into())
        }
        SyncError::NeedsReconnect => ApiError::Conflict("Google access was revoked or has expired; sign in with Google again".into()),
        SyncError::Api(e) => ApiError::Unavailable(format!("Google did not do it: {e}")),
        SyncError::Store(e) => e.into(),
        SyncError::ShuttingDown => ApiError::Unavailable("the server is shutting down".into()),
    }
}

/// `POST /api/calendar/webhook/setup` (JWT): register or replace the caller's channel.
async fn setup_channel(app: GoogleRoutesState, auth: Option<String>) -> ApiResult<Response> {
    let who = app.caller(auth).await?;
    if !app.google.enabled() {
        return Err(not_configured());
    }
    // One channel per ticked calendar: the first is the answer's top level (as
    // with one calendar), all of them are under `channels`.
    let infos = app.google.replace_channels(who.user_id).await.map_err(sync_error)?;
    let mut body = infos.first().map(|i| serde_json::to_value(i).unwrap_or_default()).unwrap_or_else(|| serde_json::json!({}));
    body["channels"] = serde_json::to_value(&infos).unwrap_or_default();
    Ok(json_response(StatusCode::CREATED, &body))
}

/// `DELETE /api/calendar/webhook` (JWT): stop the caller's channels.
async fn remove_channels(app: GoogleRoutesState, auth: Option<String>) -> ApiResult<Response> {
    let who = app.caller(auth).await?;
    if !app.google.enabled() {
        return Err(not_configured());
    }
    let n = app.google.stop_channels(who.user_id).await.map_err(sync_error)?;
    if n == 0 {
        return Err(ApiError::NotFound("you have no Google push channel to stop".into()));
    }
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}

/// The headers of a push notification, read and bounded (the body is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationHeaders {
    pub channel_id: String,
    pub token: Option<String>,
    pub resource_id: Option<String>,
    /// `sync`, `exists`, `not_exists` (anything else is acknowledged and ignored).
    pub state: String,
    /// For the log line only.
    pub message: String,
}

impl NotificationHeaders {
    /// Longest channel id accepted (Google allows 64 characters; ours are UUIDs).
    pub const MAX_CHANNEL_ID: usize = 256;

    pub fn parse(headers: &HeaderMap) -> ApiResult<NotificationHeaders> {
        let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
        let Some(channel_id) = h("x-goog-channel-id") else {
            return Err(ApiError::BadRequest("X-Goog-Channel-ID header is missing".into()));
        };
        if channel_id.len() > Self::MAX_CHANNEL_ID {
            return Err(ApiError::BadRequest("X-Goog-Channel-ID header is too long".into()));
        }
        Ok(NotificationHeaders {
            channel_id: channel_id.to_string(),
            token: h("x-goog-channel-token").map(|t| t.chars().take(512).collect()),
            resource_id: h("x-goog-resource-id").map(|t| t.chars().take(512).collect()),
            state: h("x-goog-resource-state").unwrap_or("").chars().take(40).collect(),
            message: h("x-goog-message-number").unwrap_or("-").chars().take(20).collect(),
        })
    }
}

/// `POST /api/calendar/webhook`: a push notification from Google (empty body).
async fn notification(app: GoogleRoutesState, headers: HeaderMap) -> ApiResult<Response> {
    if !app.google.enabled() {
        tracing::warn!("google notification refused: Google is not configured on this server");
        return Err(not_configured());
    }
    let n = match NotificationHeaders::parse(&headers) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("google notification refused: {e}");
            return Err(e);
        }
    };
    let NotificationHeaders { channel_id, state, message, .. } = &n;
    // One lookup by the unique channel_id index; a stopped channel's row is gone.
    let channel = app.google.store.channel_for_notification(channel_id).await?;
    // A Graph subscription's id is not a Google channel, whatever else the request says.
    let Some(channel) = channel.filter(|c| c.provider == crate::model::Provider::Google) else {
        // A flood on one dead channel costs one log line a minute, not one per request.
        if app.log_throttle.should_log(&format!("google-channel:{channel_id}")) {
            tracing::warn!("google notification refused: unknown channel {channel_id} (state {state}, message {message}); further ones for it are not logged for a minute");
        }
        return Err(ApiError::NotFound("unknown channel".into()));
    };
    let token_ok: bool = n.token.as_deref().unwrap_or("").as_bytes().ct_eq(channel.token.as_bytes()).into();
    if !token_ok {
        tracing::warn!("google notification refused: wrong channel token for channel {channel_id} (user {})", channel.user_id);
        return Err(ApiError::Forbidden("wrong channel token".into()));
    }
    // Before the watch answer is stored the resource id is unknown; the token vouches then.
    if let Some(expected) = channel.resource_id.as_deref() {
        if n.resource_id.as_deref() != Some(expected) {
            tracing::warn!("google notification refused: wrong resource id for channel {channel_id} (user {})", channel.user_id);
            return Err(ApiError::Forbidden("wrong resource id".into()));
        }
    }
    // Google sends nothing on a channel past its expiration: whatever arrives
    // for one is a replay, and must not start a sync.
    let now = timefmt::format(timefmt::now());
    if channel.expiration.as_deref().is_some_and(|exp| exp <= now.as_str()) {
        if app.log_throttle.should_log(&format!("google-channel:{channel_id}")) {
            tracing::warn!(
                "google notification refused: channel {channel_id} (user {}) expired at {}",
                channel.user_id,
                channel.expiration.as_deref().unwrap_or("?")
            );
        }
        return Err(ApiError::NotFound("the channel has expired".into()));
    }
    tracing::info!(
        "google notification: channel {channel_id} ({}), user {}, state {state}, message {message}",
        channel.state,
        channel.user_id
    );
    // `sync` only confirms a new channel; a state Google has not documented
    // is acknowledged (it came on a verified channel) and ignored.
    if matches!(state.as_str(), "exists" | "not_exists") {
        app.google.enqueue(channel.user_id);
    }
    app.google.record_notification(channel.user_id);
    Ok(json_response(StatusCode::OK, &serde_json::json!({"ok": true})))
}

/// `GET /api/calendar/webhook/test`: reachable, configured, last notification. Nothing else.
async fn public_status(app: GoogleRoutesState) -> ApiResult<Response> {
    let last = app.google.store.last_notification_at(crate::model::Provider::Google).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({"reachable": true, "google_configured": app.google.enabled(), "last_notification_at": last}),
    ))
}

/// `GET /api/admin/health/google` (admin JWT).
async fn admin_report(app: GoogleRoutesState, auth: Option<String>) -> ApiResult<Response> {
    let who = app.caller(auth).await?;
    if !who.admin {
        return Err(ApiError::Forbidden("only admins can see this".into()));
    }
    let mut report = crate::provider::health::admin_health(&app.google.store, crate::model::Provider::Google).await;
    let cfg = &app.google.cfg;
    if let Some(o) = report.as_object_mut() {
        o.insert("configured".into(), app.google.enabled().into());
        o.insert("webhook_url".into(), app.google.webhook_url().into());
        o.insert("calendar_id".into(), cfg.calendar_id.clone().into());
        o.insert("calendars".into(), cfg.default_calendars().into());
        // The schedule the renewal and safety-net numbers above follow.
        o.insert("channel_ttl".into(), cfg.channel_ttl.to_string().into());
        o.insert("renew_before".into(), cfg.renew_before.to_string().into());
        o.insert("safety_net_interval".into(), cfg.safety_net_interval.to_string().into());
    }
    Ok(json_response(StatusCode::OK, &report))
}
