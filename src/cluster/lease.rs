//! Leases: work that must run on one node at a time, and the keeper that
//! takes and renews them. A named lease ([`Lease`]) is for a background
//! loop (Google upkeep, retention, alert notifications): every node's
//! keeper tries to take it every third of `cluster.lease_ttl`, its holder
//! renews it as often, and [`Lease::run_while_held`] runs the loop only
//! while this node holds it, under its fence. A short lease
//! ([`Leases::try_take`]) is held for one piece of work (one user's Google
//! sync) and renewed by the keeper while it lasts.
//!
//! A holder that cannot renew (the database is unreachable) gives the lease
//! up on its own once a whole `lease_ttl` passed without a renewal: by then
//! another node may have taken it, and the fence refuses its writes anyway.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::cluster::{fenced, Fence};
use crate::store::Store;

/// A named lease as this node sees it.
pub struct Lease {
    pub name: &'static str,
    held: watch::Sender<Option<Fence>>,
    renewed: Mutex<Option<Instant>>,
    store: Store,
    /// Work runs under it ([`Lease::run_while_held`]) and hands it back at
    /// shutdown; a lease without (one only consulted) the keeper releases.
    guards_work: std::sync::atomic::AtomicBool,
    /// The keeper has tried to take it at least once.
    tried: watch::Sender<bool>,
}

impl Lease {
    /// The fence while this node holds the lease.
    pub fn fence(&self) -> Option<Fence> {
        self.held.borrow().clone()
    }

    /// Run `work` whenever this node holds the lease, under its fence, and
    /// cancel it (at its next await) when the lease is lost. `work` watches
    /// `shutdown` itself (so what it has in flight finishes); once it has
    /// ended at shutdown, the lease is handed back at once instead of after
    /// its expiry. Work that ends by itself before (nothing to do, e.g.
    /// Google not configured) keeps the lease until then.
    pub async fn run_while_held<F, Fut>(&self, mut shutdown: watch::Receiver<bool>, work: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()>,
    {
        self.guards_work.store(true, std::sync::atomic::Ordering::Release);
        let mut held = self.held.subscribe();
        loop {
            let fence = tokio::select! {
                f = held.wait_for(Option::is_some) => match f {
                    Ok(f) => f.clone(),
                    Err(_) => return,
                },
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let Some(fence) = fence else { continue };
            let token = fence.token;
            let lost = {
                let mut held = self.held.subscribe();
                async move {
                    let _ = held.wait_for(|f| f.as_ref().map(|f| f.token) != Some(token)).await;
                }
            };
            tokio::select! {
                _ = fenced(fence.clone(), work()) => {
                    let _ = shutdown.wait_for(|stop| *stop).await;
                    self.hand_back(&fence).await;
                    return;
                }
                _ = lost => tracing::warn!(name = self.name, "stopped this node's work under the lease: the lease was lost"),
            }
        }
    }

    /// Wait until this node knows whether it holds the lease (the keeper's
    /// first try), or `shutdown`.
    pub async fn settled(&self, mut shutdown: watch::Receiver<bool>) {
        let mut tried = self.tried.subscribe();
        tokio::select! {
            _ = tried.wait_for(|t| *t) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }

    async fn hand_back(&self, fence: &Fence) {
        self.held.send_if_modified(|held| {
            let ours = held.as_ref().is_some_and(|f| f.token == fence.token);
            if ours {
                *held = None;
            }
            ours
        });
        match self.store.release_lease(fence).await {
            Ok(()) => tracing::info!(name = self.name, "lease released"),
            Err(e) => tracing::debug!(name = self.name, error = %e, "could not release a lease; it expires by itself"),
        }
    }
}

/// This node's leases and their keeper.
pub struct Leases {
    store: Store,
    node: String,
    ttl: Duration,
    named: Vec<Arc<Lease>>,
    /// Short leases held now, by name, with their last renewal.
    short: Mutex<HashMap<String, (Fence, Instant)>>,
}

impl Leases {
    /// The keeper of `names` for `node`.
    pub fn new(store: Store, node: &str, ttl: Duration, names: &[&'static str]) -> Arc<Leases> {
        let named = names
            .iter()
            .map(|name| {
                Arc::new(Lease {
                    name,
                    held: watch::channel(None).0,
                    renewed: Mutex::new(None),
                    store: store.clone(),
                    guards_work: Default::default(),
                    tried: watch::channel(false).0,
                })
            })
            .collect();
        Arc::new(Leases { store, node: node.to_string(), ttl, named, short: Mutex::new(HashMap::new()) })
    }

    /// The named lease `name` (one of those given to [`Leases::new`]).
    pub fn get(&self, name: &str) -> Option<Arc<Lease>> {
        self.named.iter().find(|l| l.name == name).cloned()
    }

    /// Names of the leases this node holds now (named ones).
    pub fn held(&self) -> Vec<&'static str> {
        self.named.iter().filter(|l| l.fence().is_some()).map(|l| l.name).collect()
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// `cluster.lease_ttl`.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Take the short lease `name` if nobody holds it; the keeper renews it
    /// until [`Leases::give_back`].
    pub async fn try_take(&self, name: &str) -> Option<Fence> {
        match self.store.acquire_lease(name, &self.node, self.ttl).await {
            Ok(Some(token)) => {
                let fence = Fence { lease: name.to_string(), holder: self.node.clone(), token };
                if let Ok(mut short) = self.short.lock() {
                    short.insert(name.to_string(), (fence.clone(), Instant::now()));
                }
                Some(fence)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(name, error = %e, "cannot take a lease");
                None
            }
        }
    }

    /// Give a short lease back (the work is done).
    pub async fn give_back(&self, fence: &Fence) {
        if let Ok(mut short) = self.short.lock() {
            short.remove(&fence.lease);
        }
        if let Err(e) = self.store.release_lease(fence).await {
            tracing::debug!(name = %fence.lease, error = %e, "could not release a lease; it expires by itself");
        }
    }

    /// Take and renew the leases every third of the lease time. At
    /// shutdown it takes nothing new but goes on renewing what is held
    /// until the work under it has ended and handed it back (a renewal in
    /// flight at shutdown finishes under a live lease).
    pub async fn keep(self: Arc<Leases>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            self.round(false).await;
        }
        for lease in self.named.iter().filter(|l| !l.guards_work.load(std::sync::atomic::Ordering::Acquire)) {
            if let Some(fence) = lease.fence() {
                lease.hand_back(&fence).await;
            }
        }
        // Done once nothing is held, or once the database (or the writer,
        // stopped last) no longer answers.
        let mut last_round = Instant::now();
        while self.holding() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if last_round.elapsed() >= self.ttl / 3 {
                last_round = Instant::now();
                if !self.round(true).await {
                    break;
                }
            }
        }
    }

    fn holding(&self) -> bool {
        !self.held().is_empty() || self.short.lock().map(|s| !s.is_empty()).unwrap_or(false)
    }

    /// One round: renew what is held, take what is free (not when
    /// `stopping`). False when a renewal could not reach the database.
    async fn round(&self, stopping: bool) -> bool {
        let mut reached = true;
        for lease in &self.named {
            match lease.fence() {
                Some(fence) => match self.store.renew_lease(&fence, self.ttl).await {
                    Ok(true) => {
                        if let Ok(mut r) = lease.renewed.lock() {
                            *r = Some(Instant::now());
                        }
                    }
                    Ok(false) => {
                        tracing::warn!(name = lease.name, token = fence.token, "lease lost: another node took it");
                        lease.held.send_replace(None);
                    }
                    Err(e) => {
                        reached = false;
                        let stale = lease.renewed.lock().ok().and_then(|r| *r).is_none_or(|at| at.elapsed() >= self.ttl);
                        if stale {
                            tracing::warn!(name = lease.name, error = %e, "lease lost: it could not be renewed within cluster.lease_ttl");
                            lease.held.send_replace(None);
                        }
                    }
                },
                None if stopping => {}
                None => match self.store.acquire_lease(lease.name, &self.node, self.ttl).await {
                    Ok(Some(token)) => {
                        tracing::info!(name = lease.name, token, node = %self.node, "lease acquired");
                        if let Ok(mut r) = lease.renewed.lock() {
                            *r = Some(Instant::now());
                        }
                        lease.held.send_replace(Some(Fence { lease: lease.name.to_string(), holder: self.node.clone(), token }));
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(name = lease.name, error = %e, "cannot take a lease now"),
                },
            }
            lease.tried.send_replace(true);
        }
        let short: Vec<Fence> = self.short.lock().map(|s| s.values().map(|(f, _)| f.clone()).collect()).unwrap_or_default();
        for fence in short {
            let renewed = self.store.renew_lease(&fence, self.ttl).await;
            if let Ok(mut map) = self.short.lock() {
                match renewed {
                    Ok(true) => {
                        if let Some(entry) = map.get_mut(&fence.lease) {
                            entry.1 = Instant::now();
                        }
                    }
                    Ok(false) => {
                        map.remove(&fence.lease);
                    }
                    Err(_) => {
                        reached = false;
                        if map.get(&fence.lease).is_some_and(|(_, at)| at.elapsed() >= self.ttl) {
                            map.remove(&fence.lease);
                        }
                    }
                }
            }
        }
        reached
    }
}
