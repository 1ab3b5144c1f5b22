//! What a request brings, read within limits: the body (at most
//! `server.max_body_bytes`, however it is sent), the query string as a map,
//! and a route's shared state.

use std::collections::HashMap;
use std::convert::Infallible;

use bytes::Bytes;
use warp::{Filter, Rejection};

use super::error::ApiError;

/// A route's shared state, cloned into each request.
pub fn with_state<T: Clone + Send>(state: T) -> impl Filter<Extract = (T,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
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

/// A query string's parameters by name (the last of a repeated name wins).
pub type QueryParams = HashMap<String, String>;

/// The query string's parameters (none when there is no query string).
pub fn query() -> impl Filter<Extract = (QueryParams,), Error = Infallible> + Clone {
    warp::query::raw()
        .map(|q: String| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect::<QueryParams>())
        .or(warp::any().map(QueryParams::new))
        .unify()
}
