//! The browser UI: files under `static/`, embedded into the binary at build
//! time (one-file deploy), or served from `server.static_dir` while developing,
//! each with a Content-Security-Policy (only this origin's scripts, styles and
//! connections, never framed; `nosniff` is set on every response by the
//! server); plus
//! `GET /api/config`, the public settings the UI needs before sign-in (the
//! anon key it opens the realtime socket with).

use std::path::PathBuf;

use rust_embed::RustEmbed;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

#[derive(RustEmbed)]
#[folder = "static/"]
struct Assets;

/// The policy every UI response carries. Scripts and styles only from this
/// origin (the UI has no inline script or style), connections to this origin
/// (http and its WebSocket: `'self'` covers ws/wss in Chromium and Firefox,
/// the explicit ws:/wss: entries are for Safari) and to `server.cors_origins`,
/// and no framing (clickjacking).
pub fn content_security_policy(config: &crate::config::Config, public_url: &str) -> String {
    let mut connect = vec!["'self'".to_string()];
    if let Ok(u) = url::Url::parse(public_url) {
        if let Some(host) = u.host_str() {
            let authority = match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_string(),
            };
            let ws = if u.scheme() == "https" { "wss" } else { "ws" };
            connect.push(format!("{ws}://{authority}"));
        }
    }
    for o in &config.server.cors_origins {
        let o = o.trim().trim_end_matches('/');
        // "*" would open connect-src to every site; the UI never needs it.
        if o != "*" && !o.is_empty() && !o.contains([';', ',', ' ', '\'', '"']) {
            connect.push(o.to_string());
        }
    }
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src {}; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        connect.join(" ")
    )
}

fn file_response(path: &str, bytes: Vec<u8>, csp: &HeaderValue) -> Response {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let mut res = Response::new(bytes.into());
    if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
        res.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    res
}

fn load(dir: &Option<PathBuf>, path: &str) -> Option<Vec<u8>> {
    if path.split('/').any(|seg| seg == ".." || seg.starts_with('.')) {
        return None;
    }
    match dir {
        Some(d) => std::fs::read(d.join(path)).ok(),
        None => Assets::get(path).map(|f| f.data.into_owned()),
    }
}

/// `GET /` and `GET /<file>`: the UI. Unknown paths outside `/api` fall back
/// to `index.html` so the UI's own routes survive a reload.
pub fn routes(static_dir: &str, csp: &str) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let dir = (!static_dir.trim().is_empty()).then(|| PathBuf::from(static_dir));
    let csp = HeaderValue::from_str(csp).unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"));
    // Server paths are rejected before the method check: a POST to an unknown
    // `/api/...` path is then a 404, not the 405 of "the UI only does GET".
    let not_server_path = warp::path::tail().and_then(|tail: warp::path::Tail| async move {
        let path = tail.as_str();
        if path == "api" || path.starts_with("api/") || path.starts_with("realtime/") || path.starts_with("health") || path == "metrics" {
            return Err(warp::reject::not_found());
        }
        Ok::<_, Rejection>(tail)
    });
    not_server_path.and(warp::get()).and_then(move |tail: warp::path::Tail| {
        let dir = dir.clone();
        let csp = csp.clone();
        async move {
            let path = tail.as_str();
            let path = if path.is_empty() { "index.html" } else { path };
            if let Some(bytes) = load(&dir, path) {
                return Ok(file_response(path, bytes, &csp));
            }
            if !path.contains('.') {
                if let Some(bytes) = load(&dir, "index.html") {
                    return Ok(file_response("index.html", bytes, &csp));
                }
            }
            let mut res = crate::http::error::ApiError::NotFound(format!("no file /{path}")).into_response();
            *res.status_mut() = StatusCode::NOT_FOUND;
            Ok::<_, Rejection>(res)
        }
    })
}

/// `GET /api/config`: what the UI needs before anyone signs in. The anon key
/// is public by design (as in Supabase, where it ships inside the app): it
/// only opens the realtime socket, a join still needs the user's token, and
/// REST refuses it. Serving it keeps it out of the static files, so a
/// rotated `auth.jwt_secret` needs no rebuild.
///
/// `realtime_path` is where the realtime socket listens, `anon_key` the key it opens with.
pub fn config_route(realtime_path: &str, anon_key: &str) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let body = serde_json::json!({
        "realtime": {"path": realtime_path, "apikey": anon_key},
    });
    warp::path!("api" / "config").and(warp::get()).map(move || {
        let mut res = crate::http::json_response(StatusCode::OK, &body);
        res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        res
    })
}
