//! Several nodes on one database: what lets any `syncgate serve` process
//! serve anyone while the others run, with the database as the only thing
//! they share (no cluster protocol of our own).
//!
//! - [`tail`]: the one path from the change log to this node's realtime
//!   hub, for every node's commits, in seq order.
//! - [`lease`]: work that must run on one node at a time, with fencing.
//! - This file: the node's identity, its registry row and heartbeat, the
//!   fingerprint of the settings every node must share, and the view
//!   `/api/admin/health` gives of the nodes and leases.
//!
//! With SQLite there is exactly one node; the same code runs (its leases are
//! always its own), so the single-node path is the tested one.

pub mod lease;
pub mod tail;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::config::{Config, ExposeSecret};
use crate::store::cluster::{LeaseRow, NodeRow};
use crate::store::{timefmt, Store, StoreResult};
pub use lease::{Lease, Leases};
pub use tail::{Tail, TailStats};

/// The named leases: what each guards.
pub const GOOGLE_UPKEEP: &str = "google_upkeep";
pub const RETENTION: &str = "retention";
pub const ALERTS: &str = "alerts";
pub const MICROSOFT_UPKEEP: &str = "microsoft_upkeep";
pub const NAMED_LEASES: [&str; 4] = [GOOGLE_UPKEEP, RETENTION, ALERTS, MICROSOFT_UPKEEP];
/// Short leases of one user's Google sync: `google_sync:<user id>`.
pub const GOOGLE_SYNC_PREFIX: &str = "google_sync:";
/// Short leases of one user's Outlook sync: `microsoft_sync:<user id>`.
pub const MICROSOFT_SYNC_PREFIX: &str = "microsoft_sync:";

/// A node that has not heartbeated for this long is dropped from the registry.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// This node: who it is and what it shares with the others.
pub struct Node {
    pub id: String,
    /// Where this node listens (its own address, not the load balancer's
    /// `server.public_url`), as the registry shows it.
    pub address: String,
    pub started_at: String,
    /// A digest of the settings every node must share (never the settings themselves).
    pub fingerprint: String,
    pub lease_ttl: Duration,
    pub leases: Arc<Leases>,
    pub tail: Arc<TailStats>,
    store: Store,
}

/// The node's id: `cluster.node_id`, else the host name and a random suffix.
pub fn node_id(config: &Config) -> String {
    let configured = config.cluster.node_id.trim();
    if !configured.is_empty() {
        return configured.to_string();
    }
    format!("{}-{:06x}", host_name(), rand::random::<u32>() & 0xff_ffff)
}

/// This machine's name, as far as it can be read (letters, digits, `.-_`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')).take(40).collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into())
}

/// A digest of the settings that must agree across nodes: the JWT secret,
/// the public URL, the Google, Calendly and Microsoft credentials. Compared,
/// never shown. (Microsoft's count only once set, so a node of the version
/// before them agrees with one that has them unset.)
pub fn settings_fingerprint(config: &Config, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"syncgate settings fingerprint\0");
    let parts = [
        secret,
        config.server.public_url.trim(),
        config.google.client_id.trim(),
        config.google.client_secret.expose_secret().trim(),
        &config.calendly.signing_keys.iter().map(|k| k.expose_secret().trim().to_string()).collect::<Vec<_>>().join(","),
        config.calendly.token.expose_secret().trim(),
    ];
    let microsoft =
        [config.microsoft.client_id.trim(), config.microsoft.client_secret.expose_secret().trim(), config.microsoft.tenant.trim()];
    let microsoft_set = config.microsoft_enabled();
    for p in parts.iter().chain(microsoft.iter().filter(|_| microsoft_set)) {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// One node as `/api/admin/health` lists it.
#[derive(Debug, Serialize)]
pub struct NodeView {
    pub id: String,
    pub address: String,
    pub version: String,
    pub started_at: String,
    pub heartbeat_at: String,
    /// Heartbeat within twice `cluster.lease_ttl`.
    pub alive: bool,
    /// The newest seq its hub had published at its last heartbeat, and how
    /// far that is behind the log's head now.
    pub published: i64,
    pub lag: i64,
    pub settings_match: bool,
    pub this_node: bool,
}

/// A named lease as `/api/admin/health` lists it.
#[derive(Debug, Serialize)]
pub struct LeaseView {
    pub name: String,
    pub holder: Option<String>,
    pub token: i64,
    pub acquired_at: Option<String>,
    pub expires_at: Option<String>,
    /// Held and not expired.
    pub live: bool,
}

/// The `cluster` part of `/api/admin/health`.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub node: String,
    pub nodes: Vec<NodeView>,
    pub leases: Vec<LeaseView>,
    pub warnings: Vec<String>,
}

impl Node {
    /// `bound`: where this node listens; the registry shows it with the
    /// host name when it listens on every interface.
    pub fn new(
        config: &Config,
        secret: &str,
        bound: std::net::SocketAddr,
        store: Store,
        leases: Arc<Leases>,
        tail: Arc<TailStats>,
    ) -> Node {
        let address = if bound.ip().is_unspecified() { format!("{}:{}", host_name(), bound.port()) } else { bound.to_string() };
        Node {
            id: leases.node().to_string(),
            address,
            started_at: timefmt::format(timefmt::now()),
            fingerprint: settings_fingerprint(config, secret),
            lease_ttl: config.cluster.lease_ttl.0,
            leases,
            tail,
            store,
        }
    }

    fn row(&self) -> NodeRow {
        NodeRow {
            id: self.id.clone(),
            address: self.address.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.started_at.clone(),
            heartbeat_at: timefmt::format(timefmt::now()),
            published_seq: self.tail.published.load(std::sync::atomic::Ordering::Acquire),
            settings_fingerprint: self.fingerprint.clone(),
        }
    }

    /// Register, then heartbeat every third of the lease time until
    /// `shutdown`, warning once per node whose shared settings differ from
    /// ours; leave the registry at a clean stop.
    pub async fn keep_registered(self: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.store.register_node(self.row()).await {
            tracing::warn!(error = %e, "cannot register this node; retrying with the heartbeat");
        }
        tracing::info!(node = %self.id, address = %self.address, "node registered");
        let mut warned: std::collections::HashSet<String> = Default::default();
        let mut tick = tokio::time::interval(self.lease_ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            let published = self.tail.published.load(std::sync::atomic::Ordering::Acquire);
            if let Err(e) = self.store.heartbeat(&self.id, published, FORGET_AFTER).await {
                tracing::debug!(error = %e, "heartbeat failed");
                continue;
            }
            // A row lost (forgotten after a long pause): register again.
            if let Ok(nodes) = self.store.nodes().await {
                if !nodes.iter().any(|n| n.id == self.id) {
                    let _ = self.store.register_node(self.row()).await;
                }
                for n in nodes.iter().filter(|n| n.id != self.id && self.is_alive(n)) {
                    if n.settings_fingerprint != self.fingerprint && warned.insert(n.id.clone()) {
                        tracing::warn!(
                            node = %n.id,
                            "node {} runs with different shared settings (auth.jwt_secret, server.public_url, Google or Calendly credentials); \
                             every node must have the same ones",
                            n.id
                        );
                    }
                }
            }
        }
        if let Err(e) = self.store.deregister_node(&self.id).await {
            tracing::debug!(error = %e, "could not leave the node registry");
        }
    }

    fn is_alive(&self, n: &NodeRow) -> bool {
        let Some(at) = timefmt::parse(&n.heartbeat_at) else { return false };
        let ttl = time::Duration::try_from(self.lease_ttl * 2).unwrap_or(time::Duration::MINUTE);
        timefmt::now() - at <= ttl
    }

    /// How many nodes heartbeat now (this one included).
    pub async fn view_nodes(&self) -> StoreResult<usize> {
        Ok(self.store.nodes().await?.iter().filter(|n| self.is_alive(n)).count())
    }

    /// The nodes and named leases, as `/api/admin/health` shows them.
    pub async fn view(&self) -> StoreResult<ClusterView> {
        let (nodes, leases, head) =
            (self.store.nodes().await?, self.store.leases(GOOGLE_SYNC_PREFIX).await?, self.store.read_log_head().await?);
        let now = timefmt::format(timefmt::now());
        let mut warnings = Vec::new();
        let nodes: Vec<NodeView> = nodes
            .into_iter()
            .map(|n| {
                let alive = self.is_alive(&n);
                let this_node = n.id == self.id;
                // This node's own position is current, not as of its last heartbeat.
                let published = if this_node { self.tail.published.load(std::sync::atomic::Ordering::Acquire) } else { n.published_seq };
                let settings_match = n.settings_fingerprint == self.fingerprint;
                if alive && !settings_match {
                    warnings.push(format!(
                        "node {} runs with different shared settings (auth.jwt_secret, server.public_url, Google or Calendly credentials)",
                        n.id
                    ));
                }
                NodeView {
                    id: n.id,
                    address: n.address,
                    version: n.version,
                    started_at: n.started_at,
                    heartbeat_at: n.heartbeat_at,
                    alive,
                    published,
                    lag: (head - published).max(0),
                    settings_match,
                    this_node,
                }
            })
            .collect();
        let leases = leases.into_iter().map(|l: LeaseRow| {
            let live = l.holder.is_some() && l.expires_at.as_deref().is_some_and(|e| e > now.as_str());
            LeaseView { name: l.name, holder: l.holder, token: l.token, acquired_at: l.acquired_at, expires_at: l.expires_at, live }
        });
        Ok(ClusterView { node: self.id.clone(), nodes, leases: leases.collect(), warnings })
    }
}
