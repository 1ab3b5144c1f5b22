//! Wiring: opens the store, starts the writer and the hub, binds the listener
//! (port 0 works), serves HTTP and the realtime socket, and shuts down in
//! order: stop accepting, close sockets with 1001, finish requests, commit
//! the writer's queue.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::auth::Tokens;
use crate::config::Config;
use crate::http::error::ApiError;
use crate::http::limits::TimedBody;
use crate::realtime::Hub;
use crate::store::Store;

/// Shared state every handler reads. Cheap to clone.
#[derive(Clone)]
pub struct App(Arc<AppInner>);

pub struct AppInner {
    pub config: Config,
    pub store: Store,
    pub tokens: Tokens,
    pub hub: Arc<Hub>,
    /// `server.public_url`, or `http://<bound address>`.
    pub public_url: String,
    pub shutdown: watch::Receiver<bool>,
    /// Background work that writes through the writer (retention, alerts,
    /// Google upkeep and syncs, alert POSTs): told to stop by `shutdown`,
    /// awaited before the writer is drained.
    pub tasks: TaskTracker,
    pub started: Instant,
    /// Counters and histograms behind `/metrics`.
    pub metrics: Arc<crate::counters::Metrics>,
    /// Alerts currently raised by the webhook health monitor.
    pub alerts: Arc<crate::ops::alerts::AlertMonitor>,
    /// Google sign-in, channels and the per-user sync scheduler.
    pub google: Arc<crate::google::GoogleSync>,
    /// The identity check REST and realtime share, with its per-user cache.
    pub identities: Arc<crate::identity::Identities>,
    /// Repeated warnings (e.g. notifications for an unknown channel), at most once a minute per key.
    pub log_throttle: crate::http::log_throttle::LogThrottle,
}

impl Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// Is a browser origin allowed: listed in `server.cors_origins`, or the same
/// origin as the page (the public URL or the Host the request came to).
pub fn origin_allowed(config: &Config, public_url: &str, origin: &str, host: &str) -> bool {
    let origin = origin.trim_end_matches('/');
    if config.server.cors_origins.iter().any(|o| o == "*" || o.trim_end_matches('/') == origin) {
        return true;
    }
    if origin == public_url.trim_end_matches('/') {
        return true;
    }
    let bare = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    bare.is_some_and(|b| !host.is_empty() && b == host)
}

/// One open connection's share of `server.max_connections`; released when
/// the connection (and a realtime socket upgraded from it) has closed.
pub type ConnectionPermit = Arc<tokio::sync::OwnedSemaphorePermit>;

/// A server that is bound and ready to run.
pub struct Server {
    app: App,
    /// Built before the listening line, so a route that cannot be built stops startup instead.
    routes: BoxedFilter<(Response,)>,
    listener: TcpListener,
    addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    writer_thread: std::thread::JoinHandle<()>,
    /// The long-running loops, by name (for the shutdown log); what they
    /// spawn is in `AppInner::tasks`.
    loops: Vec<(&'static str, JoinHandle<()>)>,
    /// Publishes committed changes to sockets; ends when the writer has
    /// stopped and its feed is closed.
    hub_runner: JoinHandle<()>,
    /// Closes lagging sessions; ends on the shutdown signal.
    watchdog: JoinHandle<()>,
}

impl Server {
    /// Open everything and bind; nothing is served until [`Server::run`].
    pub async fn build(config: Config) -> Result<Server, String> {
        // Nothing binds with a bad value (a config built in code skips the loader).
        config.validate()?;
        let (secret, warning) = crate::auth::resolve_secret(&config)?;
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        let opened = Store::open(&config.database)?;
        let store = opened.store;
        let hub = Hub::with_replays(store.writer.head.clone(), config.realtime.queue_size, config.realtime.concurrent_replays);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let hub_runner = tokio::spawn(hub.clone().run(opened.feed));
        let watchdog = tokio::spawn(crate::realtime::watchdog(hub.clone(), config.realtime.max_lag, shutdown_rx.clone()));
        let bind = config.bind_addr()?;
        let listener = TcpListener::bind(bind).await.map_err(|e| format!("cannot listen on {bind} (server.bind): {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let public_url = config.public_url(addr);
        let metrics = Arc::new(crate::counters::Metrics::new(&store.writer.stats));
        let tasks = TaskTracker::new();
        let google = crate::google::GoogleSync::new(
            &config,
            store.clone(),
            &public_url,
            &secret,
            shutdown_rx.clone(),
            tasks.clone(),
            metrics.clone(),
        )
        .map_err(|e| e.to_string())?;
        let mut loops = vec![("google upkeep", tasks.spawn(crate::google::run(google.clone())))];
        let identities = Arc::new(crate::identity::Identities::new(store.clone(), config.auth.user_cache.0));
        let app = App(Arc::new(AppInner {
            metrics,
            alerts: Arc::default(),
            google,
            tokens: Tokens::new(&secret),
            config,
            store,
            hub,
            public_url,
            shutdown: shutdown_rx,
            tasks: tasks.clone(),
            started: Instant::now(),
            identities,
            log_throttle: Default::default(),
        }));
        loops.push(("retention", tasks.spawn(crate::ops::retention::run(app.clone()))));
        loops.push(("alerts", tasks.spawn(crate::ops::alerts::run(app.clone()))));
        let routes = routes(app.clone())?;
        Ok(Server { app, routes, listener, addr, shutdown_tx, writer_thread: opened.writer_thread, loops, hub_runner, watchdog })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn app(&self) -> App {
        self.app.clone()
    }

    /// Serve until `shutdown` resolves, then shut down in order.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let Server { app, routes, listener, addr, shutdown_tx, writer_thread, loops, hub_runner, watchdog } = self;
        let svc = warp::service(routes);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tracing::info!(%addr, public_url = %app.public_url, "serving");
        let server_file = crate::cli::running::announce(&app.config, addr);
        tokio::pin!(shutdown);
        // A permit per open connection, taken before accepting: past
        // `server.max_connections` new connections wait in the kernel's
        // accept queue instead of costing memory and file descriptors here.
        let open_connections = Arc::new(tokio::sync::Semaphore::new(app.config.server.max_connections));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(app.config.server.header_timeout.0);
        builder.http2().timer(TokioTimer::new());
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = open_connections.clone().acquire_owned() => match p {
                    Ok(p) => Arc::new(p),
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let app = app.clone();
            let svc = svc.clone();
            // The service lives as long as the connection; a realtime socket
            // takes a clone of the permit into its session, so an upgraded
            // connection stays counted until the socket closes.
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let app = app.clone();
                let mut svc = svc.clone();
                let permit = permit.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, app, &mut svc, peer, permit).await) }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        drop(listener);
        tracing::info!("shutting down: closing realtime sockets and finishing requests");
        let _ = shutdown_tx.send(true);
        app.hub.close_all();
        let grace = app.config.server.shutdown_grace.0;
        if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
            tracing::warn!("requests still open after {}; closing them", app.config.server.shutdown_grace);
        }
        // Give sessions a moment to send their close frames.
        let deadline = Instant::now() + grace;
        while app.hub.stats.sockets.load(std::sync::atomic::Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Background work got the signal with the sockets; what writes
        // through the writer ends (at its next await point, a renewal in
        // flight after its last write) before the writer's queue is drained.
        app.tasks.close();
        if tokio::time::timeout(grace, app.tasks.wait()).await.is_err() {
            let left: Vec<&str> = loops.iter().filter(|(_, t)| !t.is_finished()).map(|(name, _)| *name).collect();
            tracing::warn!(
                tasks = app.tasks.len(),
                loops = ?left,
                "background tasks still running after {}; leaving them (their later writes fail)",
                app.config.server.shutdown_grace
            );
        }
        app.store.writer.shutdown().await;
        if let Some(f) = server_file {
            f.remove();
        }
        let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
        // The writer is gone, so the hub's feed is closed: the runner ends
        // once it has published the last batches.
        if tokio::time::timeout(grace, hub_runner).await.is_err() {
            tracing::warn!("the realtime hub was still publishing after {}; leaving it", app.config.server.shutdown_grace);
        }
        let _ = watchdog.await;
        tracing::info!("stopped");
    }
}

/// The peer of the connection a request came on, for handlers that log by
/// source (`warp::ext::optional::<PeerAddr>()`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

async fn handle<S>(mut req: Request<Incoming>, app: App, svc: &mut S, peer: SocketAddr, permit: ConnectionPermit) -> Response
where
    S: Service<Request<TimedBody>, Response = Response, Error = std::convert::Infallible>,
{
    let rid = crate::auth::random_token(6);
    let span = tracing::info_span!("request", id = %rid);
    let _enter = span.enter();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    drop(_enter);
    let started = Instant::now();
    req.extensions_mut().insert(PeerAddr(peer));
    let mut res = if path == crate::realtime::PATH {
        let _e = span.enter();
        crate::realtime::upgrade(req, app.clone(), permit)
    } else {
        use tracing::Instrument;
        let (req, stalled) = {
            let (parts, body) = req.into_parts();
            let (body, stalled) = TimedBody::new(body, app.config.server.body_timeout.0);
            (Request::from_parts(parts, body), stalled)
        };
        let res = match svc.call(req).instrument(span.clone()).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        if stalled.load(std::sync::atomic::Ordering::Acquire) {
            // Whatever the handler made of the broken body, the client is
            // told why; the rest of its body is not waited for.
            let mut r = ApiError::RequestTimeout(format!(
                "the request body stopped arriving for {}; send it in full",
                app.config.server.body_timeout
            ))
            .into_response();
            r.headers_mut().insert(warp::http::header::CONNECTION, HeaderValue::from_static("close"));
            r
        } else {
            res
        }
    };
    if let Ok(v) = HeaderValue::from_str(&rid) {
        res.headers_mut().insert("x-request-id", v);
    }
    // No response is ever meant to be sniffed into another type.
    res.headers_mut().entry("x-content-type-options").or_insert(HeaderValue::from_static("nosniff"));
    let status = res.status();
    let _e = span.enter();
    if status.is_server_error() {
        tracing::warn!(%method, %path, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, %peer, "request");
    } else {
        tracing::info!(%method, %path, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, %peer, "request");
    }
    res
}

/// `GET /health`, `GET /health/live`, `GET /health/ready`
fn health(app: App) -> BoxedFilter<(Response,)> {
    let basic = warp::path!("health")
        .and(warp::get())
        .map(|| crate::api::json_response(StatusCode::OK, &serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})));
    let live = warp::path!("health" / "live")
        .and(warp::get())
        .map(|| crate::api::json_response(StatusCode::OK, &serde_json::json!({"status": "ok"})));
    let ready = warp::path!("health" / "ready").and(warp::get()).then(move || {
        let app = app.clone();
        async move {
            let checks = readiness(&app).await;
            let ok = checks.iter().all(|(_, v)| v.is_none());
            let detail: serde_json::Map<String, serde_json::Value> =
                checks.into_iter().map(|(k, v)| (k.to_string(), v.map(serde_json::Value::String).unwrap_or_else(|| "ok".into()))).collect();
            let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            crate::api::json_response(status, &serde_json::json!({"status": if ok { "ok" } else { "unavailable" }, "checks": detail}))
        }
    });
    basic.or(live).unify().or(ready).unify().boxed()
}

/// Each readiness check: None when fine, else why not.
async fn readiness(app: &App) -> Vec<(&'static str, Option<String>)> {
    let wait = std::time::Duration::from_secs(2);
    let db = match tokio::time::timeout(wait, app.store.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))).await {
        Ok(Ok(1)) => None,
        Ok(Ok(_)) => Some("unexpected answer".to_string()),
        Ok(Err(e)) => Some(ApiError::from(e).public_message()),
        Err(_) => Some("no answer within 2 s".to_string()),
    };
    // A no-op request through the writer proves its thread commits.
    let writer = match tokio::time::timeout(wait, app.store.writer.write(|_| Ok(()))).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(ApiError::from(e).public_message()),
        Err(_) => Some("the writer did not answer within 2 s".to_string()),
    };
    let hub = (!app.hub.is_alive()).then(|| "the realtime hub is not running".to_string());
    vec![("database", db), ("writer", writer), ("hub", hub)]
}

/// Every HTTP route, with CORS for `server.cors_origins` and JSON errors.
/// Fails (never panics) on an origin warp cannot use.
pub fn routes(app: App) -> Result<BoxedFilter<(Response,)>, String> {
    let all = crate::api::routes(app.clone())
        .or(crate::calendly::routes(app.clone()))
        .unify()
        .or(crate::google::routes(crate::google::GoogleRoutesState {
            google: app.google.clone(),
            tokens: app.tokens.clone(),
            identities: app.identities.clone(),
            token_ttl_secs: app.config.auth.token_ttl.as_secs() as i64,
            max_body_bytes: app.config.server.max_body_bytes,
            log_throttle: Default::default(),
        }))
        .unify()
        .or(health(app.clone()))
        .unify()
        .or(crate::ops::metrics::routes(app.clone()))
        .unify()
        .or(crate::web::config_route(&app))
        .unify()
        .or(crate::web::routes(&app.config.server.static_dir, &crate::web::content_security_policy(&app.config, &app.public_url)))
        .unify()
        .recover(crate::api::recover)
        .unify();
    if app.config.server.cors_origins.is_empty() {
        return Ok(all.boxed());
    }
    let mut cors = warp::cors()
        .allow_methods(vec!["GET", "POST", "PATCH", "DELETE", "OPTIONS"])
        .allow_headers(vec!["authorization", "content-type"])
        .max_age(600);
    for o in &app.config.server.cors_origins {
        if o == "*" {
            cors = cors.allow_any_origin();
            continue;
        }
        // warp panics on an origin it cannot parse; config validation refuses those,
        // and this catches whatever it might still find wrong.
        let origin = o.trim_end_matches('/').to_string();
        cors = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || cors.allow_origin(origin.as_str())))
            .map_err(|_| format!("server.cors_origins has \"{o}\", which is not an origin like https://app.example.com"))?;
    }
    Ok(all.with(cors).map(warp::Reply::into_response).boxed())
}
