//! What the fakes of outside services (Google, Microsoft Graph) share: a
//! server on 127.0.0.1 at a free port that hands every request — method,
//! path, raw query, headers, body — to the fake, which answers as the real
//! service would.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use warp::http::{HeaderMap, Method};
use warp::path::FullPath;
use warp::reply::Response;
use warp::Filter;

/// One request as a fake reads it.
pub struct Request {
    pub method: Method,
    pub path: String,
    /// The raw query string ("" when there is none).
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A port for the fake `name`; serve it with [`serve`] once the fake,
/// which needs its own address, is built.
pub async fn bind(name: &str) -> (tokio::net::TcpListener, SocketAddr) {
    syncgate::provider::install_tls();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{name} binds: {e}"));
    let addr = listener.local_addr().expect("a bound address");
    (listener, addr)
}

/// Answer every request on `listener` with `handle`, until the test ends.
pub fn serve<H, F>(listener: tokio::net::TcpListener, handle: H)
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let route = warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .and_then(move |method: Method, path: FullPath, query: String, headers: HeaderMap, body: Bytes| {
            let handle = handle.clone();
            async move { Ok::<_, Infallible>(handle(Request { method, path: path.as_str().to_string(), query, headers, body }).await) }
        });
    tokio::spawn(warp::serve(route).incoming(listener).run());
}
