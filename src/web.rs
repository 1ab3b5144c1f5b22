//! The browser UI: files under `static/`, embedded into the binary at build
//! time (one-file deploy), or served from `server.static_dir` while developing.

use std::path::PathBuf;

use rust_embed::RustEmbed;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

#[derive(RustEmbed)]
#[folder = "static/"]
struct Assets;

fn file_response(path: &str, bytes: Vec<u8>) -> Response {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let mut res = Response::new(bytes.into());
    if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
        res.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
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
pub fn routes(static_dir: &str) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let dir = (!static_dir.trim().is_empty()).then(|| PathBuf::from(static_dir));
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
        async move {
            let path = tail.as_str();
            let path = if path.is_empty() { "index.html" } else { path };
            if let Some(bytes) = load(&dir, path) {
                return Ok(file_response(path, bytes));
            }
            if !path.contains('.') {
                if let Some(bytes) = load(&dir, "index.html") {
                    return Ok(file_response("index.html", bytes));
                }
            }
            let mut res = crate::error::ApiError::NotFound(format!("no file /{path}")).into_response();
            *res.status_mut() = StatusCode::NOT_FOUND;
            Ok::<_, Rejection>(res)
        }
    })
}
