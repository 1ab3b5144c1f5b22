//! Answers every route family builds the same way: a JSON body with a
//! status, an `ApiResult` turned into a response, the redirect that lands a
//! signed-in browser on `/`, and the request body read up to a limit.

use std::convert::Infallible;

use bytes::Bytes;
use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::http::error::{ApiError, ApiResult};

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut res = warp::reply::json(body).into_response();
    *res.status_mut() = status;
    res
}

pub fn respond(result: ApiResult<Response>) -> Result<Response, Infallible> {
    Ok(result.unwrap_or_else(ApiError::into_response))
}

/// A 303 to `/` carrying the token in the URL fragment (never sent to servers or logs).
pub fn redirect_with_token(token: &str) -> Response {
    let mut res = Response::new(Default::default());
    *res.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = warp::http::HeaderValue::from_str(&format!("/#access_token={token}")) {
        res.headers_mut().insert(warp::http::header::LOCATION, v);
    }
    res.headers_mut().insert(warp::http::header::CACHE_CONTROL, warp::http::HeaderValue::from_static("no-store"));
    res
}

/// The request body, at most `limit` bytes (`server.max_body_bytes`): a `Content-Length` over the
/// limit is refused before anything is read, and a body without one (chunked,
/// what `fetch` with a stream sends) is read until it passes the limit — 413
/// either way, never more than the limit buffered.
pub fn body(limit: usize) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-length").and(warp::body::stream()).and_then(
        move |announced: Option<String>, stream| async move {
            let too_large = || {
                warp::reject::custom(ApiError::PayloadTooLarge(format!("the body is larger than {limit} bytes (server.max_body_bytes)")))
            };
            if let Some(n) = announced {
                match n.trim().parse::<u64>() {
                    Ok(n) if n > limit as u64 => return Err(too_large()),
                    Ok(_) => {}
                    Err(_) => return Err(warp::reject::custom(ApiError::BadRequest("the Content-Length header is not a number".into()))),
                }
            }
            read_limited(stream, limit).await.map_err(|e| match e {
                None => too_large(),
                Some(why) => warp::reject::custom(ApiError::BadRequest(format!("the body could not be read: {why}"))),
            })
        },
    )
}

/// Collect a body stream, giving up (None) as soon as it passes `limit` bytes.
async fn read_limited<S, B>(stream: S, limit: usize) -> Result<Bytes, Option<String>>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use bytes::BufMut;
    use futures_util::StreamExt;
    let mut stream = std::pin::pin!(stream);
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Some(e.to_string()))?;
        if buf.len() + chunk.remaining() > limit {
            return Err(None);
        }
        buf.put(chunk);
    }
    Ok(buf.freeze())
}
