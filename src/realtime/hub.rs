//! The fanout hub: consumes the writer's feed of committed changes and hands
//! each one to the sockets allowed to see it. A change's `data` JSON is built
//! once and shared; per socket the hub only checks ownership and bindings in
//! memory and `try_send`s to the socket's bounded queue. It never awaits a
//! socket: a full queue marks the socket lagging, and that session catches up
//! from the `changes` log on its own (nobody waits on the slowest).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use dashmap::DashMap;
use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use super::channel::Channel;
use crate::store::{Change, ChangeBatch, Table};

/// A committed change with its `data` payload serialized once.
#[derive(Debug)]
pub struct Published {
    pub change: Change,
    pub data: String,
}

impl Published {
    pub fn new(change: Change) -> Published {
        let data = data_json(&change, false);
        Published { change, data }
    }
}

fn columns_json(table: Table) -> &'static Value {
    static CACHE: OnceLock<[Value; 3]> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        let build = |t: Table| {
            Value::Array(t.columns().iter().map(|(n, ty)| serde_json::json!({"name": n, "type": ty.name()})).collect())
        };
        [build(Table::Clients), build(Table::Meetings), build(Table::Pipeline)]
    });
    match table {
        Table::Clients => &all[0],
        Table::Meetings => &all[1],
        Table::Pipeline => &all[2],
    }
}

/// The `data` object of a `postgres_changes` frame (protocol.md).
pub fn data_json(change: &Change, snapshot: bool) -> String {
    let mut data = serde_json::Map::with_capacity(10);
    data.insert("schema".into(), Value::from("public"));
    data.insert("table".into(), Value::from(change.table.name()));
    data.insert("commit_timestamp".into(), Value::from(change.committed_at.as_str()));
    data.insert("type".into(), Value::from(change.op.as_str()));
    data.insert("columns".into(), columns_json(change.table).clone());
    if let Some(r) = &change.record {
        data.insert("record".into(), r.clone());
    }
    if let Some(r) = &change.old_record {
        data.insert("old_record".into(), r.clone());
    }
    data.insert("errors".into(), Value::Null);
    data.insert("seq".into(), Value::from(change.seq));
    if snapshot {
        data.insert("snapshot".into(), Value::Bool(true));
    }
    Value::Object(data).to_string()
}

/// One frame's worth of work queued for a socket.
#[derive(Debug)]
pub struct Delivery {
    pub gen: u64,
    pub topic: Arc<str>,
    pub ids: Ids,
    pub item: Arc<Published>,
}

/// The binding ids a frame names (reads as `&[u32]`). Almost always one, so
/// that case is kept inline: no allocation per delivery.
#[derive(Debug, Clone)]
pub enum Ids {
    One(u32),
    Many(Vec<u32>),
}

impl Ids {
    /// Ids of the channel's bindings the change matches; None when none does.
    pub fn matching(ch: &Channel, change: &Change) -> Option<Ids> {
        let mut it = ch.bindings.iter().filter(|b| b.matches(change)).map(|b| b.id);
        let first = it.next()?;
        Some(match it.next() {
            None => Ids::One(first),
            Some(second) => Ids::Many([first, second].into_iter().chain(it).collect()),
        })
    }
}

impl std::ops::Deref for Ids {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        match self {
            Ids::One(id) => std::slice::from_ref(id),
            Ids::Many(v) => v,
        }
    }
}

/// What a socket is subscribed as, guarded by the socket's mutex. A
/// `std::sync::Mutex` because it is held only for in-memory checks, never
/// across an `.await`.
#[derive(Debug, Default)]
pub struct SocketSubs {
    pub user_id: i64,
    pub admin: bool,
    pub channels: Vec<Channel>,
}

impl SocketSubs {
    pub fn binding_count(&self) -> usize {
        self.channels.iter().map(|c| c.bindings.len()).sum()
    }
}

/// The part of a session the hub sees.
#[derive(Debug)]
pub struct SocketShared {
    pub id: u64,
    pub tx: mpsc::Sender<Delivery>,
    /// Set by the hub when the queue was full; the hub then skips this socket
    /// until the session has caught up from the log and clears it.
    pub lagging: AtomicBool,
    /// Seq of the first change not queued because the queue was full.
    pub lag_from: AtomicI64,
    /// Highest seq the session has written to its socket (for the lag limit).
    pub delivered: AtomicI64,
    /// Wakes a session that must be closed because it fell too far behind.
    pub kill: Notify,
    pub subs: Mutex<SocketSubs>,
}

#[derive(Debug, Default)]
pub struct HubStats {
    pub sockets: AtomicI64,
    pub channels: AtomicI64,
    pub bindings: AtomicI64,
    pub frames_delivered: AtomicU64,
    pub lag_events: AtomicU64,
    pub catching_up: AtomicI64,
    pub closed_slow: AtomicU64,
}

/// Registry of subscribed sockets, indexed by owner so a change touches only
/// its owner's sockets and admins'.
pub struct Hub {
    by_user: DashMap<i64, DashMap<u64, Arc<SocketShared>>>,
    admins: DashMap<u64, Arc<SocketShared>>,
    /// Where each registered socket is indexed: (user id, admin).
    placement: DashMap<u64, (i64, bool)>,
    per_user_sockets: DashMap<i64, usize>,
    /// Head of the change log (owned by the writer).
    pub head: Arc<AtomicI64>,
    pub stats: HubStats,
    next_id: AtomicU64,
    alive: AtomicBool,
    /// Log replays (resume, catch-up) running at once. Each holds a page of
    /// changes and its frames in memory; after a restart every browser
    /// resumes at the same moment, so this bounds the peak.
    pub replays: tokio::sync::Semaphore,
}

/// Replays that may read and send a page of the log at the same time.
pub const CONCURRENT_REPLAYS: usize = 16;

impl Hub {
    pub fn new(head: Arc<AtomicI64>) -> Arc<Hub> {
        Arc::new(Hub {
            by_user: DashMap::new(),
            admins: DashMap::new(),
            placement: DashMap::new(),
            per_user_sockets: DashMap::new(),
            head,
            stats: HubStats::default(),
            next_id: AtomicU64::new(1),
            alive: AtomicBool::new(false),
            replays: tokio::sync::Semaphore::new(CONCURRENT_REPLAYS),
        })
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn head(&self) -> i64 {
        self.head.load(Ordering::Acquire)
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// Consume the writer's feed until it closes. Everything committed by
    /// the time a pass starts goes out in that one pass, socket by socket:
    /// when the hub is busy, a socket is woken (and writes) once for several
    /// changes instead of once per change. The passes run on a thread of
    /// their own: on a tokio worker a new change waited behind every session
    /// task the previous pass had woken before its fanout could start.
    pub async fn run(self: Arc<Hub>, mut feed: mpsc::UnboundedReceiver<ChangeBatch>) {
        const PASS: usize = 256;
        self.alive.store(true, Ordering::Relaxed);
        let mut items: Vec<Arc<Published>> = Vec::new();
        let prepare = |items: &mut Vec<Arc<Published>>, batch: ChangeBatch| {
            items.extend(batch.iter().map(|change| Arc::new(Published::new((**change).clone()))));
        };
        let hub = self.clone();
        let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
        let spawned = std::thread::Builder::new().name("syncgate-hub".into()).spawn(move || {
            while let Some(batch) = feed.blocking_recv() {
                prepare(&mut items, batch);
                while items.len() < PASS {
                    match feed.try_recv() {
                        Ok(batch) => prepare(&mut items, batch),
                        Err(_) => break,
                    }
                }
                hub.publish_all(&items);
                items.clear();
            }
            let _ = done_tx.send(());
        });
        match spawned {
            Ok(_) => {
                let _ = done.await;
            }
            Err(e) => tracing::error!(error = %e, "cannot start the realtime hub thread; no changes will reach sockets"),
        }
        self.alive.store(false, Ordering::Relaxed);
    }

    /// Hand one change to every socket that may see it. Never blocks.
    pub fn publish(&self, item: Arc<Published>) {
        self.publish_all(std::slice::from_ref(&item));
    }

    /// Hand changes (in seq order) to every socket that may see them, each
    /// socket getting its whole share in one go. Never blocks.
    pub fn publish_all(&self, items: &[Arc<Published>]) {
        let mut owners: Vec<i64> = Vec::new();
        for item in items {
            if !owners.contains(&item.change.user_id) {
                owners.push(item.change.user_id);
            }
        }
        for owner in owners {
            if let Some(sockets) = self.by_user.get(&owner) {
                for s in sockets.iter() {
                    self.offer(s.value(), items.iter().filter(|i| i.change.user_id == owner));
                }
            }
        }
        for s in self.admins.iter() {
            self.offer(s.value(), items.iter());
        }
    }

    fn offer<'a>(&self, sock: &Arc<SocketShared>, items: impl Iterator<Item = &'a Arc<Published>>) {
        if sock.lagging.load(Ordering::Acquire) {
            return;
        }
        let Ok(subs) = sock.subs.lock() else { return };
        for item in items {
            if !(subs.admin || subs.user_id == item.change.user_id) {
                continue;
            }
            for ch in &subs.channels {
                let Some(ids) = Ids::matching(ch, &item.change) else { continue };
                let d = Delivery { gen: ch.gen, topic: ch.topic.clone(), ids, item: item.clone() };
                match sock.tx.try_send(d) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // Nothing from here on is queued; the session reads it from the log.
                        sock.lag_from.store(item.change.seq, Ordering::Release);
                        sock.lagging.store(true, Ordering::Release);
                        self.stats.lag_events.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        }
    }

    /// Sockets the user has subscribed (for the per-user cap).
    pub fn user_sockets(&self, user_id: i64) -> usize {
        self.per_user_sockets.get(&user_id).map(|v| *v).unwrap_or(0)
    }

    /// Bindings across all of a user's sockets (for the per-user cap).
    pub fn user_bindings(&self, user_id: i64) -> usize {
        let mut n = 0;
        let count = |s: &Arc<SocketShared>| s.subs.lock().map(|g| if g.user_id == user_id { g.binding_count() } else { 0 }).unwrap_or(0);
        if let Some(sockets) = self.by_user.get(&user_id) {
            n += sockets.iter().map(|s| count(s.value())).sum::<usize>();
        }
        n += self.admins.iter().map(|s| count(s.value())).sum::<usize>();
        n
    }

    /// Index (or re-index after a token swap) a socket under its user / admin.
    pub fn place(&self, sock: &Arc<SocketShared>, user_id: i64, admin: bool) {
        if let Some(prev) = self.placement.get(&sock.id).map(|p| *p) {
            if prev == (user_id, admin) {
                return;
            }
            self.unindex(sock.id, prev);
        } else {
            self.stats.sockets.fetch_add(1, Ordering::Relaxed);
            *self.per_user_sockets.entry(user_id).or_insert(0) += 1;
        }
        if admin {
            self.admins.insert(sock.id, sock.clone());
        } else {
            self.by_user.entry(user_id).or_default().insert(sock.id, sock.clone());
        }
        self.placement.insert(sock.id, (user_id, admin));
    }

    fn unindex(&self, id: u64, (user_id, admin): (i64, bool)) {
        if admin {
            self.admins.remove(&id);
        } else {
            let empty = match self.by_user.get(&user_id) {
                Some(m) => {
                    m.remove(&id);
                    m.is_empty()
                }
                None => false,
            };
            if empty {
                self.by_user.remove_if(&user_id, |_, m| m.is_empty());
            }
        }
    }

    /// Forget a socket entirely (it closed, or its last channel left).
    pub fn remove(&self, sock_id: u64) {
        if let Some((_, p)) = self.placement.remove(&sock_id) {
            self.unindex(sock_id, p);
            self.stats.sockets.fetch_sub(1, Ordering::Relaxed);
            if let Some(mut n) = self.per_user_sockets.get_mut(&p.0) {
                *n = n.saturating_sub(1);
            }
            self.per_user_sockets.remove_if(&p.0, |_, n| *n == 0);
        }
    }

    /// Every registered socket (for shutdown and the lag watchdog).
    pub fn all_sockets(&self) -> Vec<Arc<SocketShared>> {
        let mut v: Vec<Arc<SocketShared>> = self.admins.iter().map(|s| s.value().clone()).collect();
        for m in self.by_user.iter() {
            v.extend(m.value().iter().map(|s| s.value().clone()));
        }
        v
    }
}
