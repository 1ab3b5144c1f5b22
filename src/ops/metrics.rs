//! Prometheus metrics. Event counters and histograms live in a per-server
//! registry (so several servers in one test process do not mix); values that
//! are facts of the moment (sockets, channels, head seq, channel expiries) are
//! read when `/metrics` is scraped. `GET /metrics`, optionally behind
//! `metrics.token`.

use std::sync::Arc;
use std::time::Instant;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, TextEncoder};
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::config::ExposeSecret;
use crate::counters::Metrics;
use crate::http::error::ApiError;
use crate::realtime::Hub;
use crate::store::Store;

/// What `/metrics` reads.
#[derive(Clone)]
pub struct MetricsState {
    /// The counters and histograms webhook and sync code record into.
    pub counters: Arc<Metrics>,
    pub hub: Arc<Hub>,
    pub store: Store,
    /// `metrics.token`: when set, scrapes must send it as a bearer token.
    pub token: crate::config::SecretString,
    /// `realtime.concurrent_replays`, to report how many are running.
    pub concurrent_replays: usize,
    pub started: Instant,
    /// This node: its id labels every sample (`node="…"`), its tail is measured.
    pub node: Arc<crate::cluster::Node>,
}

fn gauge(name: &str, help: &str, value: f64) -> Vec<MetricFamily> {
    match prometheus::Gauge::new(name, help) {
        Ok(g) => {
            g.set(value);
            g.collect()
        }
        Err(_) => vec![],
    }
}

/// A gauge labelled with the database engine (`engine="sqlite"|"postgres"`).
fn labelled_gauge(name: &str, help: &str, engine: &str, value: f64) -> Vec<MetricFamily> {
    match prometheus::GaugeVec::new(prometheus::Opts::new(name, help), &["engine"]) {
        Ok(g) => {
            g.with_label_values(&[engine]).set(value);
            g.collect()
        }
        Err(_) => vec![],
    }
}

fn counter(name: &str, help: &str, value: u64) -> Vec<MetricFamily> {
    match prometheus::IntCounter::new(name, help) {
        Ok(c) => {
            c.inc_by(value);
            c.collect()
        }
        Err(_) => vec![],
    }
}

/// Everything, as Prometheus text.
pub async fn render(state: &MetricsState) -> Result<String, ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut families = state.counters.registry.gather();
    let hub = &state.hub.stats;
    families.extend(gauge(
        "syncgate_realtime_sockets",
        "Realtime sockets with at least one joined channel.",
        hub.sockets.load(Relaxed) as f64,
    ));
    families.extend(gauge(
        "syncgate_realtime_unjoined_sockets",
        "Realtime sockets open without a joined channel (capped by realtime.max_unjoined).",
        hub.unjoined.load(Relaxed) as f64,
    ));
    families.extend(gauge(
        "syncgate_realtime_replays_running",
        "Snapshots and log replays reading right now (capped by realtime.concurrent_replays).",
        (state.concurrent_replays.saturating_sub(state.hub.replays.available_permits())) as f64,
    ));
    families.extend(gauge("syncgate_realtime_channels", "Joined realtime channels.", hub.channels.load(Relaxed) as f64));
    families.extend(gauge(
        "syncgate_realtime_bindings",
        "postgres_changes bindings across joined channels.",
        hub.bindings.load(Relaxed) as f64,
    ));
    families.extend(counter(
        "syncgate_realtime_frames_delivered_total",
        "Change frames written to sockets.",
        hub.frames_delivered.load(Relaxed),
    ));
    families.extend(gauge(
        "syncgate_realtime_sessions_lagging",
        "Sessions that fell out of the in-memory window and read from the change log.",
        hub.catching_up.load(Relaxed) as f64,
    ));
    families.extend(gauge(
        "syncgate_realtime_sessions_catching_up",
        "Sessions catching up from the change log right now.",
        hub.catching_up.load(Relaxed) as f64,
    ));
    families.extend(counter(
        "syncgate_realtime_sessions_closed_slow_total",
        "Sessions closed with 4008 slow consumer.",
        hub.closed_slow.load(Relaxed),
    ));
    families.extend(counter(
        "syncgate_realtime_lag_events_total",
        "Times a session fell out of the in-memory window and went to the change log.",
        hub.lag_events.load(Relaxed),
    ));
    let facts = state.store.metrics_facts().await?;
    families.extend(gauge("syncgate_changes_head_seq", "Seq of the newest committed change.", state.hub.head() as f64));
    families.extend(gauge("syncgate_changes_retained_rows", "Rows kept in the change log.", facts.retained_changes as f64));
    families.extend(gauge("syncgate_google_watch_channels", "Google push channels (active and retiring).", facts.watch_channels as f64));
    if let Some(t) = facts.soonest_channel_expiry {
        let secs = (t - crate::store::timefmt::now()).as_seconds_f64();
        families.extend(gauge("syncgate_google_channel_soonest_expiry_seconds", "Seconds until the soonest Google channel expires.", secs));
    }
    let pool = state.store.pool_status();
    let engine = match state.store.engine() {
        crate::store::Engine::Sqlite => "sqlite",
        crate::store::Engine::Postgres => "postgres",
    };
    families.extend(labelled_gauge("syncgate_db_pool_connections", "Read connections open in the pool.", engine, pool.open as f64));
    families.extend(labelled_gauge("syncgate_db_pool_idle_connections", "Read connections open and idle.", engine, pool.idle as f64));
    families.extend(labelled_gauge("syncgate_db_pool_max_connections", "Most read connections the pool opens.", engine, pool.max as f64));
    families.extend(labelled_gauge("syncgate_db_pool_waiting", "Reads waiting for a pooled connection.", engine, pool.waiting as f64));
    families.extend(gauge("syncgate_uptime_seconds", "Seconds since the server started.", state.started.elapsed().as_secs_f64()));
    let tail = &state.node.tail;
    let published = tail.published.load(Relaxed);
    families.extend(gauge("syncgate_tail_published_seq", "Seq of the newest change this node's hub has published.", published as f64));
    families.extend(gauge(
        "syncgate_tail_lag",
        "Changes committed (by any node) that this node's hub has not published yet.",
        (tail.head_seen.load(Relaxed).max(state.hub.head()) - published).max(0) as f64,
    ));
    families.extend(counter("syncgate_tail_reads_total", "Reads of the change log by this node's tail.", tail.reads.load(Relaxed)));
    families.extend(counter(
        "syncgate_tail_read_changes_total",
        "Changes the tail read from the log (other nodes' commits, or this node's after a lost commit).",
        tail.read_changes.load(Relaxed),
    ));
    families.extend(gauge(
        "syncgate_leases_held",
        "Named leases (work that runs on one node) this node holds.",
        state.node.leases.held().len() as f64,
    ));
    if let Ok(nodes) = state.node.view_nodes().await {
        families.extend(gauge("syncgate_cluster_nodes_alive", "Nodes with a recent heartbeat, this one included.", nodes as f64));
    }
    label_all(&mut families, "node", &state.node.id);
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut buf = Vec::new();
    TextEncoder::new().encode(&families, &mut buf).map_err(ApiError::internal)?;
    String::from_utf8(buf).map_err(ApiError::internal)
}

/// Put `name="value"` on every sample: with several nodes behind one
/// scrape target, each series says which node it is.
fn label_all(families: &mut [MetricFamily], name: &str, value: &str) {
    for family in families {
        for metric in family.mut_metric() {
            let mut pair = prometheus::proto::LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value.to_string());
            let mut labels = metric.take_label();
            labels.push(pair);
            metric.set_label(labels);
        }
    }
}

/// `GET /metrics`
pub fn routes(state: MetricsState) -> BoxedFilter<(Response,)> {
    warp::path!("metrics")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .then(move |auth: Option<String>| {
            let state = state.clone();
            async move {
                let result = async {
                    let required = state.token.expose_secret().trim();
                    if !required.is_empty() {
                        let given = auth.as_deref().and_then(|h| h.strip_prefix("Bearer ")).unwrap_or_default();
                        if !crate::auth::constant_time_eq(given.as_bytes(), required.as_bytes()) {
                            return Err(ApiError::Unauthorized("send Authorization: Bearer <metrics.token>".into()));
                        }
                    }
                    let text = render(&state).await?;
                    let mut res = Response::new(text.into());
                    res.headers_mut()
                        .insert(warp::http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
                    *res.status_mut() = StatusCode::OK;
                    Ok(res)
                }
                .await;
                result.unwrap_or_else(ApiError::into_response)
            }
        })
        .boxed()
}
