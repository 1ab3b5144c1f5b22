//! The realtime socket: `GET /realtime/v1/websocket?apikey=…&vsn=…`, speaking
//! Supabase Realtime's Postgres Changes protocol (see protocol.md).
//!
//! A committed change reaches a browser through `hub` (published into the
//! feeds, their sockets woken), `fanout` (the frames of what is new for one
//! socket's channels, each encoded once) and `session` (written to the socket).
//!
//! The upgrade is done here rather than by warp's `ws()` filter so the
//! tungstenite buffers can be sized: the default 128 KiB read buffer is
//! zero-filled on every read and dominates an idle socket's memory.

pub mod channel;
pub mod fanout;
pub mod filter;
pub mod hub;
pub mod protocol;
pub mod session;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;

use crate::http::error::ApiError;
pub use hub::Hub;
pub use session::SessionCtx;

pub const PATH: &str = "/realtime/v1/websocket";

/// Is a browser origin allowed to open a socket: `(origin, Host header)` →
/// yes or no. The server's CORS rule, handed in by the wiring.
pub type OriginRule = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// What the realtime socket needs from the server: the sessions' handles
/// and the origin rule the upgrade applies.
#[derive(Clone)]
pub struct RealtimeState {
    pub session: SessionCtx,
    pub origin_allowed: OriginRule,
}

/// Answer an upgrade request: 101 and a session, or a JSON error before any
/// upgrade. `connection` is held until the socket closes (the server counts
/// open connections by it).
pub fn upgrade(mut req: Request<Incoming>, state: &RealtimeState, connection: impl Send + 'static) -> Response {
    let cfg = &state.session.cfg;
    match check(&req, state) {
        Err(e) => e.into_response(),
        Ok((claims, vsn, accept)) => {
            // Counted as unjoined from here until the session joins a channel.
            let Some(unjoined) = UnjoinedSlot::take(&state.session.hub, cfg.max_unjoined) else {
                return ApiError::Unavailable(format!(
                    "too many realtime sockets are open without a joined channel (realtime.max_unjoined = {}); retry shortly",
                    cfg.max_unjoined
                ))
                .into_response();
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            let ctx = state.session.clone();
            let mut ws_config = WebSocketConfig::default();
            ws_config.read_buffer_size = cfg.read_buffer_size.max(256);
            // Frames fed before a flush go out in one write, but tungstenite's
            // write buffer keeps its largest size for the socket's life: 16 KiB
            // (~28 frames a write) instead of the 128 KiB default, which a
            // replay or snapshot burst would leave behind on every socket.
            ws_config.write_buffer_size = 16 * 1024;
            ws_config.max_message_size = Some(cfg.max_frame_bytes);
            ws_config.max_frame_size = Some(cfg.max_frame_bytes);
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => {
                        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config)).await;
                        session::run(ws, ctx, vsn, claims, unjoined).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
                }
                drop(connection);
            });
            let mut res = Response::new(Default::default());
            *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = res.headers_mut();
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(v) = HeaderValue::from_str(&accept) {
                h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
            }
            res
        }
    }
}

/// This socket's place among the unjoined ones (`realtime.max_unjoined`):
/// held while it has no channel, given back when it joins one or closes.
pub struct UnjoinedSlot {
    hub: Arc<Hub>,
    held: bool,
}

impl UnjoinedSlot {
    /// A place for a new socket, or None when `max` are taken.
    pub fn take(hub: &Arc<Hub>, max: usize) -> Option<UnjoinedSlot> {
        let before = hub.stats.unjoined.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if before >= i64::try_from(max).unwrap_or(i64::MAX) {
            hub.stats.unjoined.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            return None;
        }
        Some(UnjoinedSlot { hub: hub.clone(), held: true })
    }

    /// Is the socket counted as unjoined now.
    pub fn held(&self) -> bool {
        self.held
    }

    /// The socket joined its first channel (false) or left its last (true).
    /// A socket that is already open is counted again without the cap: it
    /// exists either way, and the cap is for new upgrades.
    pub fn set(&mut self, unjoined: bool) {
        if unjoined != self.held {
            let delta = if unjoined { 1 } else { -1 };
            self.hub.stats.unjoined.fetch_add(delta, std::sync::atomic::Ordering::AcqRel);
            self.held = unjoined;
        }
    }
}

impl Drop for UnjoinedSlot {
    fn drop(&mut self) {
        self.set(false);
    }
}

fn check(req: &Request<Incoming>, state: &RealtimeState) -> Result<(crate::auth::Claims, protocol::Vsn, String), ApiError> {
    let headers = req.headers();
    let has = |name: header::HeaderName, want: &str| {
        headers.get(name).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case(want)))
    };
    if req.method() != warp::http::Method::GET || !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(ApiError::BadRequest("this endpoint speaks WebSocket only; send a WebSocket upgrade".into()));
    }
    if !has(header::SEC_WEBSOCKET_VERSION, "13") {
        return Err(ApiError::BadRequest("only WebSocket version 13 is supported".into()));
    }
    let key =
        headers.get(header::SEC_WEBSOCKET_KEY).ok_or_else(|| ApiError::BadRequest("the Sec-WebSocket-Key header is missing".into()))?;
    let q: HashMap<String, String> =
        req.uri().query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let apikey = q.get("apikey").ok_or_else(|| ApiError::Unauthorized("the apikey query parameter is required".into()))?;
    let claims = state.session.tokens.verify(apikey).map_err(|e| ApiError::Unauthorized(format!("apikey refused: {e}")))?;
    let vsn = protocol::Vsn::parse(q.get("vsn").map(String::as_str)).map_err(|e| ApiError::BadRequest(e.0))?;
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if !(state.origin_allowed)(origin, host) {
            return Err(ApiError::Forbidden(format!("origin {origin} is not allowed; add it to server.cors_origins")));
        }
    }
    Ok((claims, vsn, derive_accept_key(key.as_bytes())))
}

/// Every 250 ms: release old changes from quiet feeds and close sessions
/// that fell more than `max_lag` changes behind while their socket stopped
/// draining (they cannot notice on their own while blocked). Ends when
/// `shutdown` turns true.
pub async fn watchdog(hub: Arc<Hub>, max_lag: u64, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        hub.sweep(max_lag);
    }
}
