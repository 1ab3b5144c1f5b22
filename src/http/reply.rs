//! Answers: JSON with a status, a handler's result turned into a response,
//! the small server-rendered pages a browser lands on outside the UI (a
//! login link, a sign-in that failed), and the redirect that hands a browser
//! its token.

use std::convert::Infallible;

use serde_json::Value;
use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::error::{ApiError, ApiResult};

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut res = warp::reply::json(body).into_response();
    *res.status_mut() = status;
    res
}

/// A handler's answer, or its error in the one JSON shape.
pub fn respond(result: ApiResult<Response>) -> Result<Response, Infallible> {
    Ok(result.unwrap_or_else(ApiError::into_response))
}

/// Does the client read HTML (a browser following a link) rather than JSON?
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"))
}

/// Text made safe to put in HTML, including attribute values.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A small server-rendered page in the UI's style (for the few answers a
/// browser lands on outside the UI, like a login link). `body_html` must
/// already be escaped. No script and no inline style, so the page works
/// under `default-src 'self'`.
pub fn html_page(status: StatusCode, title: &str, body_html: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{t}</title><link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/app.css\"></head>\
         <body><main class=\"standalone\"><h1>{t}</h1>{body_html}</main></body></html>",
        t = html_escape(title),
    );
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The page's URL may hold a secret (a login code): never send it on.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        // Fixed and stricter than the UI's: these pages open no connection.
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    res
}

/// A 303 to `/` carrying the token in the URL fragment (never sent to servers or logs).
pub fn redirect_with_token(token: &str) -> Response {
    let mut res = Response::new(Default::default());
    *res.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(&format!("/#access_token={token}")) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
