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
use warp::http::HeaderValue;
use warp::reply::Response;
use warp::Filter;

use crate::auth::Tokens;
use crate::config::{secret, Config, ConfigError, ExposeSecret};
use crate::http::error::ApiError;
use crate::http::limits::TimedBody;
use crate::http::PeerAddr;
use crate::realtime::Hub;
use crate::store::{OpenError, Store};

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
    /// Microsoft 365 connect, subscriptions and the per-user delta sync.
    pub microsoft: Arc<crate::microsoft::MicrosoftSync>,
    /// The tokens and the identity check, as routes use them.
    pub auth: crate::http::Authenticator,
    /// Repeated warnings (e.g. notifications for an unknown channel), at most once a minute per key.
    pub log_throttle: Arc<crate::http::log_throttle::LogThrottle>,
    /// This node among the others: registry, leases, tail.
    pub node: Arc<crate::cluster::Node>,
}

impl Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// One open connection's share of `server.max_connections`; released when
/// the connection (and a realtime socket upgraded from it) has closed.
pub type ConnectionPermit = Arc<tokio::sync::OwnedSemaphorePermit>;

/// Why the server could not start: a sentence naming the key or file to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error("cannot listen on {addr} (server.bind): {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot read the listening address: {0}")]
    LocalAddr(std::io::Error),
    /// warp panics on an origin it cannot parse; validation refuses those first.
    #[error("server.cors_origins has \"{origin}\", which is not an origin like https://app.example.com")]
    CorsOrigin { origin: String },
    #[error(transparent)]
    Google(#[from] crate::google::HttpClientError),
    #[error(transparent)]
    Microsoft(#[from] crate::microsoft::client::HttpClientError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

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
    /// Orders every node's committed changes for the hub; ends when the
    /// writer has stopped and its feed is closed.
    tail_runner: JoinHandle<()>,
    /// Publishes committed changes to sockets; ends after the tail.
    hub_runner: JoinHandle<()>,
    /// Closes lagging sessions; ends on the shutdown signal.
    watchdog: JoinHandle<()>,
    /// What the realtime socket's upgrade and sessions use.
    realtime: crate::realtime::RealtimeState,
}

impl Server {
    /// Open everything and bind; nothing is served until [`Server::run`].
    pub async fn build(config: Config) -> Result<Server, StartupError> {
        // Nothing binds with a bad value (a config built in code skips the loader).
        config.validate()?;
        let (secret, warning) = secret::resolve_secret(&config)?;
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        let opened = Store::open(&config.database)?;
        let store = opened.store;
        let hub = Hub::with_replays(store.log_head(), config.realtime.queue_size, config.realtime.concurrent_replays);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let tasks = TaskTracker::new();
        // Every committed change, this node's or another's, reaches the hub
        // through the tail, in seq order; the listener wakes it.
        let wake = Arc::new(tokio::sync::Notify::new());
        let tail = crate::cluster::Tail::new(store.clone(), wake.clone(), config.cluster.poll_interval.0);
        let tail_stats = tail.stats.clone();
        let (ordered_tx, ordered) = tokio::sync::mpsc::unbounded_channel();
        let tail_runner = tokio::spawn(tail.run(opened.feed, ordered_tx));
        let hub_runner = tokio::spawn(hub.clone().run(ordered));
        if let Some(listener) = store.change_listener(wake, shutdown_rx.clone()) {
            tasks.spawn(listener);
        }
        let node_id = crate::cluster::node_id(&config);
        let leases = crate::cluster::Leases::new(store.clone(), &node_id, config.cluster.lease_ttl.0, &crate::cluster::NAMED_LEASES);
        leases.take_free().await;
        tasks.spawn(leases.clone().keep(shutdown_rx.clone()));
        let watchdog = tokio::spawn(crate::realtime::watchdog(hub.clone(), config.realtime.max_lag, shutdown_rx.clone()));
        let bind = config.bind_addr()?;
        let listener = TcpListener::bind(bind).await.map_err(|source| StartupError::Bind { addr: bind, source })?;
        let addr = listener.local_addr().map_err(StartupError::LocalAddr)?;
        let public_url = config.public_url(addr);
        let metrics = Arc::new(crate::counters::Metrics::new(store.writer_stats()));
        let node = Arc::new(crate::cluster::Node::new(&config, secret.expose_secret(), addr, store.clone(), leases.clone(), tail_stats));
        tasks.spawn(node.clone().keep_registered(shutdown_rx.clone()));
        let google = crate::google::GoogleSync::new(
            &config,
            store.clone(),
            &public_url,
            secret.expose_secret(),
            crate::provider::Background {
                shutdown: shutdown_rx.clone(),
                tasks: tasks.clone(),
                metrics: metrics.clone(),
                leases: leases.clone(),
            },
        )
        .map_err(StartupError::Google)?;
        let microsoft = crate::microsoft::MicrosoftSync::new(
            &config,
            store.clone(),
            &public_url,
            secret.expose_secret(),
            crate::provider::Background {
                shutdown: shutdown_rx.clone(),
                tasks: tasks.clone(),
                metrics: metrics.clone(),
                leases: leases.clone(),
            },
        )
        .map_err(StartupError::Microsoft)?;
        let mut loops = vec![(
            "google upkeep",
            tasks.spawn(under_lease(&leases, crate::cluster::GOOGLE_UPKEEP, shutdown_rx.clone(), {
                let google = google.clone();
                move || crate::google::run(google.clone())
            })),
        )];
        loops.push((
            "microsoft upkeep",
            tasks.spawn(under_lease(&leases, crate::cluster::MICROSOFT_UPKEEP, shutdown_rx.clone(), {
                let microsoft = microsoft.clone();
                move || crate::microsoft::upkeep::run(microsoft.clone())
            })),
        ));
        let identities = Arc::new(crate::auth::identity::Identities::new(store.clone(), config.auth.user_cache.0));
        let tokens = Tokens::new(secret.expose_secret());
        let realtime = crate::realtime::RealtimeState {
            session: crate::realtime::SessionCtx {
                hub: hub.clone(),
                store: store.clone(),
                tokens: tokens.clone(),
                identities: identities.clone(),
                cfg: config.realtime.clone(),
            },
            origin_allowed: {
                let (config, public_url) = (config.clone(), public_url.clone());
                Arc::new(move |origin: &str, host: &str| {
                    crate::http::origin_allowed(&config.server.cors_origins, &public_url, origin, host)
                })
            },
        };
        let retention = crate::ops::retention::Retention::new(store.clone(), &config);
        loops.push((
            "retention",
            tasks.spawn(under_lease(&leases, crate::cluster::RETENTION, shutdown_rx.clone(), {
                let shutdown = shutdown_rx.clone();
                move || crate::ops::retention::run(retention.clone(), shutdown.clone())
            })),
        ));
        let alerts = crate::ops::alerts::AlertState {
            store: store.clone(),
            monitor: Arc::default(),
            config: config.clone(),
            tasks: tasks.clone(),
            shutdown: shutdown_rx.clone(),
            notifier: leases.get(crate::cluster::ALERTS),
        };
        loops.push(("alerts", tasks.spawn(crate::ops::alerts::run(alerts.clone()))));
        let app = App(Arc::new(AppInner {
            metrics,
            alerts: alerts.monitor,
            google,
            microsoft,
            auth: crate::http::Authenticator::new(tokens.clone(), identities.clone()),
            tokens,
            config,
            store,
            hub,
            public_url,
            shutdown: shutdown_rx,
            tasks: tasks.clone(),
            started: Instant::now(),
            log_throttle: Default::default(),
            node,
        }));
        let routes = routes(app.clone())?;
        Ok(Server {
            app,
            routes,
            listener,
            addr,
            shutdown_tx,
            writer_thread: opened.writer_thread,
            loops,
            tail_runner,
            hub_runner,
            watchdog,
            realtime,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn app(&self) -> App {
        self.app.clone()
    }

    /// Serve until `shutdown` resolves, then shut down in order.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let Server { app, routes, listener, addr, shutdown_tx, writer_thread, loops, tail_runner, hub_runner, watchdog, realtime } = self;
        let svc = warp::service(routes);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tracing::info!(%addr, public_url = %app.public_url, "serving");
        let server_file = crate::ops::running::announce(&app.config, addr);
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
            let realtime = realtime.clone();
            // The service lives as long as the connection; a realtime socket
            // takes a clone of the permit into its session, so an upgraded
            // connection stays counted until the socket closes.
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let app = app.clone();
                let mut svc = svc.clone();
                let permit = permit.clone();
                let realtime = realtime.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, app, &realtime, &mut svc, peer, permit).await) }
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
        app.store.shutdown_writer().await;
        if let Some(f) = server_file {
            f.remove();
        }
        let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
        // The writer is gone, so the tail's feed is closed: the tail ends
        // after one last read of the log, then the hub once it has published
        // the last batches.
        if tokio::time::timeout(grace, tail_runner).await.is_err() {
            tracing::warn!("the change-log tail was still reading after {}; leaving it", app.config.server.shutdown_grace);
        }
        if tokio::time::timeout(grace, hub_runner).await.is_err() {
            tracing::warn!("the realtime hub was still publishing after {}; leaving it", app.config.server.shutdown_grace);
        }
        let _ = watchdog.await;
        tracing::info!("stopped");
    }
}

async fn handle<S>(
    mut req: Request<Incoming>,
    app: App,
    realtime: &crate::realtime::RealtimeState,
    svc: &mut S,
    peer: SocketAddr,
    permit: ConnectionPermit,
) -> Response
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
        crate::realtime::upgrade(req, realtime, permit)
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

/// The REST routes' state: records, `/api/me`, the login-link landing.
fn rest(app: &App) -> crate::api::RestState {
    crate::api::RestState {
        store: app.store.clone(),
        auth: app.auth.clone(),
        max_body_bytes: app.config.server.max_body_bytes,
        login: crate::api::login_link::LoginSettings {
            cors_origins: app.config.server.cors_origins.clone(),
            public_url: app.public_url.clone(),
            token_ttl_secs: app.config.auth.token_ttl.as_secs() as i64,
        },
    }
}

/// Account changes' state: what they write and what they set off.
fn accounts(app: &App) -> crate::accounts::AccountsState {
    crate::accounts::AccountsState {
        store: app.store.clone(),
        auth: app.auth.clone(),
        sockets: app.hub.clone(),
        google: app.google.clone(),
        microsoft: app.microsoft.clone(),
        public_url: app.public_url.clone(),
        max_body_bytes: app.config.server.max_body_bytes,
    }
}

/// `GET /api/admin/health`'s state.
fn admin_health(app: &App) -> crate::ops::admin_health::AdminHealthState {
    crate::ops::admin_health::AdminHealthState {
        store: app.store.clone(),
        auth: app.auth.clone(),
        hub: app.hub.clone(),
        alerts: app.alerts.clone(),
        started: app.started,
        node: app.node.clone(),
    }
}

/// Every HTTP route, with CORS for `server.cors_origins` and JSON errors.
/// Fails (never panics) on an origin warp cannot use.
pub fn routes(app: App) -> Result<BoxedFilter<(Response,)>, StartupError> {
    let calendly = crate::calendly::CalendlyState {
        store: app.store.clone(),
        metrics: app.metrics.clone(),
        config: Arc::new(app.config.calendly.clone()),
        log_throttle: app.log_throttle.clone(),
        auth: app.auth.clone(),
    };
    let all = crate::api::routes(rest(&app))
        .or(crate::api::rest_v1::routes(crate::api::rest_v1::RestV1State {
            store: app.store.clone(),
            auth: app.auth.clone(),
            limits: app.config.rest.clone(),
            max_body_bytes: app.config.server.max_body_bytes,
        }))
        .unify()
        .or(crate::accounts::routes::routes(accounts(&app)))
        .unify()
        .or(crate::ops::admin_health::routes(admin_health(&app)))
        .unify()
        .or(crate::calendly::routes(calendly))
        .unify()
        .or(crate::google::routes(crate::google::GoogleRoutesState {
            google: app.google.clone(),
            auth: app.auth.clone(),
            token_ttl_secs: app.config.auth.token_ttl.as_secs() as i64,
            max_body_bytes: app.config.server.max_body_bytes,
            log_throttle: app.log_throttle.clone(),
        }))
        .unify()
        .or(crate::microsoft::routes::routes(crate::microsoft::routes::MicrosoftRoutesState {
            microsoft: app.microsoft.clone(),
            auth: app.auth.clone(),
            token_ttl_secs: app.config.auth.token_ttl.as_secs() as i64,
        }))
        .unify()
        .or(crate::microsoft::webhook::routes(crate::microsoft::webhook::WebhookState {
            microsoft: app.microsoft.clone(),
            log_throttle: app.log_throttle.clone(),
            max_body_bytes: app.config.server.max_body_bytes,
        }))
        .unify()
        .or(crate::ops::health::routes(crate::ops::health::HealthState {
            store: app.store.clone(),
            hub: app.hub.clone(),
            node: app.node.clone(),
            poll_interval: app.config.cluster.poll_interval.0,
        }))
        .unify()
        .or(crate::ops::metrics::routes(crate::ops::metrics::MetricsState {
            counters: app.metrics.clone(),
            hub: app.hub.clone(),
            store: app.store.clone(),
            token: app.config.metrics.token.clone(),
            concurrent_replays: app.config.realtime.concurrent_replays,
            started: app.started,
            node: app.node.clone(),
        }))
        .unify()
        .or(crate::web::config_route(crate::realtime::PATH, &app.tokens.anon_key()))
        .unify()
        .or(crate::web::routes(&app.config.server.static_dir, &crate::web::content_security_policy(&app.config, &app.public_url)))
        .unify()
        .recover(crate::http::recover)
        .unify();
    if app.config.server.cors_origins.is_empty() {
        return Ok(all.boxed());
    }
    let mut cors = warp::cors()
        .allow_methods(vec!["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"])
        // What supabase-js sends to /rest/v1 besides the two /api needs.
        .allow_headers(vec![
            "authorization",
            "content-type",
            "apikey",
            "prefer",
            "x-client-info",
            "accept-profile",
            "content-profile",
            "range",
            "range-unit",
        ])
        .expose_headers(vec!["content-range", "x-request-id"])
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
            .map_err(|_| StartupError::CorsOrigin { origin: o.clone() })?;
    }
    Ok(all.with(cors).map(warp::Reply::into_response).boxed())
}

/// Run a background loop only while this node holds the lease `name`.
fn under_lease<F, Fut>(
    leases: &crate::cluster::Leases,
    name: &'static str,
    shutdown: watch::Receiver<bool>,
    work: F,
) -> impl std::future::Future<Output = ()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let lease = leases.get(name);
    async move {
        match lease {
            Some(lease) => lease.run_while_held(shutdown, work).await,
            None => tracing::error!(name, "no such lease; the work it guards does not run"),
        }
    }
}
