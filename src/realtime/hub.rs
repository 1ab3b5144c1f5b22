//! The hub: consumes the writer's feed of committed changes and makes each
//! one readable by the sockets allowed to see it, without touching the
//! sockets one by one; and the registry of open sessions (for the caps, the
//! slow-consumer watchdog, account rechecks and shutdown).
//!
//! Every committed change becomes one [`Published`] and is appended to a
//! [`Feed`]: one per user with subscribed sockets (that user's changes) and
//! one for admins (every change). A feed is a bounded, seq-ordered list of
//! recent changes plus the list of sockets that read it. Publishing appends,
//! then wakes the feed's sockets; what a woken session does next is the
//! fanout step (`fanout::take`), on its own task. So the hub's cost per
//! change does not grow with the work each socket does, and a socket that
//! stops reading holds nobody up: the feed keeps only the last
//! `realtime.queue_size` changes, and a session whose cursor fell out of that
//! window reads the `changes` log instead (losslessly), or is closed past
//! `max_lag`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use dashmap::DashMap;
use futures_util::task::AtomicWaker;
use tokio::sync::mpsc;

use super::fanout::Published;
use crate::store::{ChangeBatch, LogHead};

/// What a session finds in its feed after its cursor.
pub enum Pull {
    /// Nothing newer than the cursor.
    Nothing,
    /// Changes after the cursor, in seq order (at most the asked number).
    Items(Vec<Arc<Published>>),
    /// Changes after the cursor were already dropped from memory: read the log.
    Behind,
}

#[derive(Debug)]
struct FeedItems {
    list: VecDeque<Arc<Published>>,
    /// Every change of this feed with a seq above this is in `list`.
    complete_after: i64,
}

/// Recent changes one group of sockets may see (one user's, or all for
/// admins), and those sockets.
#[derive(Debug)]
pub struct Feed {
    items: RwLock<FeedItems>,
    /// Seq of the newest change in the feed (the cheap "anything new?" check).
    latest: AtomicI64,
    sockets: Mutex<Vec<Arc<SocketShared>>>,
}

impl Feed {
    fn new(complete_after: i64) -> Feed {
        Feed {
            items: RwLock::new(FeedItems { list: VecDeque::new(), complete_after }),
            latest: AtomicI64::new(complete_after),
            sockets: Mutex::new(Vec::new()),
        }
    }

    pub fn latest(&self) -> i64 {
        self.latest.load(Ordering::Acquire)
    }

    /// Every change of this feed above this seq is still in memory.
    pub fn complete_after(&self) -> i64 {
        self.items.read().map(|i| i.complete_after).unwrap_or(i64::MAX)
    }

    /// Up to `max` changes with a seq above `after`.
    pub fn pull(&self, after: i64, max: usize) -> Pull {
        if self.latest() <= after {
            return Pull::Nothing;
        }
        let Ok(items) = self.items.read() else { return Pull::Behind };
        if items.complete_after > after {
            return Pull::Behind;
        }
        let start = items.list.partition_point(|p| p.seq() <= after);
        if start == items.list.len() {
            return Pull::Nothing;
        }
        Pull::Items(items.list.range(start..).take(max).cloned().collect())
    }

    fn append(&self, batch: &[Arc<Published>], floor: i64) {
        let Some(last) = batch.last() else { return };
        if let Ok(mut items) = self.items.write() {
            for p in batch {
                if items.list.back().is_none_or(|b| b.seq() < p.seq()) {
                    items.list.push_back(p.clone());
                }
            }
            trim(&mut items, floor);
        }
        self.latest.fetch_max(last.seq(), Ordering::Release);
    }

    /// Drop changes at or below `floor` (older than the window).
    fn trim(&self, floor: i64) {
        if let Ok(mut items) = self.items.write() {
            trim(&mut items, floor);
        }
    }

    fn wake_all(&self) {
        if let Ok(sockets) = self.sockets.lock() {
            for s in sockets.iter() {
                s.waker.wake();
            }
        }
    }

    fn attach(&self, sock: &Arc<SocketShared>) {
        if let Ok(mut sockets) = self.sockets.lock() {
            sockets.push(sock.clone());
        }
    }

    fn detach(&self, sock_id: u64) {
        if let Ok(mut sockets) = self.sockets.lock() {
            if let Some(i) = sockets.iter().position(|s| s.id == sock_id) {
                sockets.swap_remove(i);
            }
        }
    }

    fn sockets(&self) -> Vec<Arc<SocketShared>> {
        self.sockets.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn trim(items: &mut FeedItems, floor: i64) {
    while items.list.front().is_some_and(|p| p.seq() <= floor) {
        if let Some(p) = items.list.pop_front() {
            items.complete_after = items.complete_after.max(p.seq());
        }
    }
}

/// Why the hub wants a session's attention (bits of [`SocketShared::signal`]):
/// the first two end it, the last asks it to check its user's account again.
pub const SIGNAL_SLOW: u8 = 1;
pub const SIGNAL_SHUTDOWN: u8 = 2;
pub const SIGNAL_RECHECK: u8 = 4;
/// The signals that end a session.
pub const SIGNALS_ENDING: u8 = SIGNAL_SLOW | SIGNAL_SHUTDOWN;

/// The part of a session the hub sees.
#[derive(Debug, Default)]
pub struct SocketShared {
    pub id: u64,
    /// The session's task, woken when its feed has news or a signal is set.
    pub waker: AtomicWaker,
    pub signal: AtomicU8,
    /// Seq up to which the session has handed changes to its socket.
    pub delivered: AtomicI64,
    /// The user the session is signed in as (0 before its first join).
    pub user_id: AtomicI64,
}

impl SocketShared {
    pub fn new(id: u64) -> SocketShared {
        SocketShared { id, ..Default::default() }
    }

    pub fn raise(&self, signal: u8) {
        self.signal.fetch_or(signal, Ordering::AcqRel);
        self.waker.wake();
    }

    /// Take a recheck request, if any (it does not end the session).
    pub fn take_recheck(&self) -> bool {
        self.signal.fetch_and(!SIGNAL_RECHECK, Ordering::AcqRel) & SIGNAL_RECHECK != 0
    }
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
    /// Open sockets with no joined channel (capped by `realtime.max_unjoined`).
    pub unjoined: AtomicI64,
}

/// A user with subscribed sockets: their feed and what they hold (for the caps).
struct UserEntry {
    feed: Arc<Feed>,
    sockets: usize,
    bindings: usize,
}

/// Where a session's socket is registered; returned by [`Hub::attach`].
#[derive(Debug, Clone)]
pub struct Placement {
    pub user_id: i64,
    pub admin: bool,
    pub feed: Arc<Feed>,
}

pub struct Hub {
    /// Users with subscribed sockets. Also taken by each publish pass, so a
    /// feed created meanwhile knows exactly from which seq it is complete.
    users: Mutex<HashMap<i64, UserEntry>>,
    admin_feed: Arc<Feed>,
    /// Seq of the newest change appended to the feeds (set under `users`).
    published: AtomicI64,
    /// Every open session, joined or not (for shutdown).
    sessions: DashMap<u64, Arc<SocketShared>>,
    /// Changes kept in memory per feed (`realtime.queue_size`).
    window: i64,
    /// Head of the change log (advanced by the writer).
    head: LogHead,
    pub stats: HubStats,
    next_id: AtomicU64,
    alive: AtomicBool,
    closing: AtomicBool,
    /// Log replays (resume, catch-up) and snapshots running at once. Each
    /// holds a page of rows or changes and its frames in memory; after a
    /// restart every browser resumes at the same moment, so this bounds the
    /// peak.
    pub replays: Arc<tokio::sync::Semaphore>,
}

/// Replays that may read and send a page of the log at the same time, by
/// default (`realtime.concurrent_replays`).
pub const CONCURRENT_REPLAYS: usize = 16;

impl Hub {
    /// `window`: how many recent changes are kept in memory for sessions to
    /// read; further behind, they read the log.
    pub fn new(head: LogHead, window: usize) -> Arc<Hub> {
        Hub::with_replays(head, window, CONCURRENT_REPLAYS)
    }

    /// The same, with `replays` snapshots and log replays allowed at once.
    pub fn with_replays(head: LogHead, window: usize, replays: usize) -> Arc<Hub> {
        let start = head.get();
        Arc::new(Hub {
            users: Mutex::new(HashMap::new()),
            admin_feed: Arc::new(Feed::new(start)),
            published: AtomicI64::new(start),
            sessions: DashMap::new(),
            window: window.max(1) as i64,
            head,
            stats: HubStats::default(),
            next_id: AtomicU64::new(1),
            alive: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            replays: Arc::new(tokio::sync::Semaphore::new(replays.max(1))),
        })
    }

    /// A turn among the snapshots and log replays running at once; None
    /// once the server is shutting down.
    pub async fn replays_permit(self: &Arc<Hub>) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if self.closing.load(Ordering::Acquire) {
            return None;
        }
        self.replays.clone().acquire_owned().await.ok()
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Seq of the newest committed change.
    pub fn head(&self) -> i64 {
        self.head.get()
    }

    /// Seq of the newest change the feeds have received.
    pub fn published(&self) -> i64 {
        self.published.load(Ordering::Acquire)
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// Consume the writer's feed until it closes. Everything committed by
    /// the time a pass starts goes out in that one pass. The passes run on a
    /// thread of their own: on a tokio worker a new change would wait behind
    /// every session task the previous pass had woken.
    pub async fn run(self: Arc<Hub>, mut feed: mpsc::UnboundedReceiver<ChangeBatch>) {
        const PASS: usize = 256;
        self.alive.store(true, Ordering::Relaxed);
        let hub = self.clone();
        let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
        let spawned = std::thread::Builder::new().name("syncgate-hub".into()).spawn(move || {
            let mut items: Vec<Arc<Published>> = Vec::new();
            let prepare = |items: &mut Vec<Arc<Published>>, batch: ChangeBatch| {
                items.extend(batch.iter().map(|change| Arc::new(Published::new(change.clone()))));
            };
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

    /// Make changes (in seq order) readable by every socket that may see
    /// them and wake those sockets. Never blocks on a socket.
    pub fn publish_all(&self, items: &[Arc<Published>]) {
        let Some(last) = items.last() else { return };
        let floor = last.seq() - self.window;
        let mut touched: Vec<(Arc<Feed>, Vec<Arc<Published>>)> = Vec::new();
        {
            let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            for item in items {
                let Some(entry) = users.get(&item.change.user_id) else { continue };
                match touched.iter_mut().find(|(f, _)| Arc::ptr_eq(f, &entry.feed)) {
                    Some((_, v)) => v.push(item.clone()),
                    None => touched.push((entry.feed.clone(), vec![item.clone()])),
                }
            }
            for (feed, batch) in &touched {
                feed.append(batch, floor);
            }
            self.published.fetch_max(last.seq(), Ordering::AcqRel);
        }
        self.admin_feed.append(items, floor);
        for (feed, _) in &touched {
            feed.wake_all();
        }
        self.admin_feed.wake_all();
    }

    /// Register a session so it hears of new changes (at its first join, or
    /// again after a token swap changed whether it is an admin's).
    pub fn attach(&self, sock: &Arc<SocketShared>, user_id: i64, admin: bool) -> Placement {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let published = self.published.load(Ordering::Acquire);
        let entry = users.entry(user_id).or_insert_with(|| UserEntry { feed: Arc::new(Feed::new(published)), sockets: 0, bindings: 0 });
        entry.sockets += 1;
        let feed = if admin { self.admin_feed.clone() } else { entry.feed.clone() };
        feed.attach(sock);
        sock.user_id.store(user_id, Ordering::Release);
        self.stats.sockets.fetch_add(1, Ordering::Relaxed);
        Placement { user_id, admin, feed }
    }

    /// Unregister a session (it closed, or its last channel left); `bindings`
    /// is how many it held.
    pub fn detach(&self, sock_id: u64, placement: &Placement, bindings: usize) {
        placement.feed.detach(sock_id);
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = users.get_mut(&placement.user_id) {
            entry.sockets = entry.sockets.saturating_sub(1);
            entry.bindings = entry.bindings.saturating_sub(bindings);
            if entry.sockets == 0 {
                users.remove(&placement.user_id);
            }
        }
        self.stats.sockets.fetch_sub(1, Ordering::Relaxed);
    }

    /// Count bindings a user's socket took (+) or released (−), for the cap.
    pub fn add_bindings(&self, user_id: i64, delta: isize) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = users.get_mut(&user_id) {
            entry.bindings = entry.bindings.saturating_add_signed(delta);
        }
    }

    /// Sockets the user has subscribed (for the per-user cap).
    pub fn user_sockets(&self, user_id: i64) -> usize {
        self.users.lock().map(|u| u.get(&user_id).map_or(0, |e| e.sockets)).unwrap_or(0)
    }

    /// Bindings across all of a user's sockets (for the per-user cap).
    pub fn user_bindings(&self, user_id: i64) -> usize {
        self.users.lock().map(|u| u.get(&user_id).map_or(0, |e| e.bindings)).unwrap_or(0)
    }

    /// A session opened (joined or not); told to close at once when the
    /// server is already shutting down.
    pub fn open_session(&self, sock: &Arc<SocketShared>) {
        self.sessions.insert(sock.id, sock.clone());
        if self.closing.load(Ordering::Acquire) {
            sock.raise(SIGNAL_SHUTDOWN);
        }
    }

    pub fn close_session(&self, sock_id: u64) {
        self.sessions.remove(&sock_id);
    }

    /// The user's account changed (disabled, removed, signed out, role): ask
    /// each of their open sessions to check it again now rather than when
    /// their cached answer runs out. Rare, so a walk over the sessions is fine.
    pub fn recheck_user(&self, user_id: i64) {
        for s in self.sessions.iter() {
            if s.value().user_id.load(Ordering::Acquire) == user_id {
                s.value().raise(SIGNAL_RECHECK);
            }
        }
    }

    /// Tell every session the server is shutting down (they close with 1001).
    pub fn close_all(&self) {
        self.closing.store(true, Ordering::Release);
        for s in self.sessions.iter() {
            s.value().raise(SIGNAL_SHUTDOWN);
        }
    }

    /// One watchdog round: release changes older than the window from feeds
    /// that were quiet (busy ones trim as they go), and close sessions that
    /// missed changes no longer in memory and are more than `max_lag`
    /// changes behind the head — a socket that stopped draining cannot
    /// notice that on its own.
    pub fn sweep(&self, max_lag: u64) {
        let floor = self.published.load(Ordering::Acquire) - self.window;
        let head = self.head();
        let mut feeds: Vec<Arc<Feed>> = match self.users.lock() {
            Ok(u) => u.values().map(|e| e.feed.clone()).collect(),
            Err(_) => return,
        };
        feeds.push(self.admin_feed.clone());
        for feed in feeds {
            feed.trim(floor);
            let complete_after = feed.complete_after();
            for s in feed.sockets() {
                // Missed changes are no longer in memory and it is too far behind.
                let delivered = s.delivered.load(Ordering::Acquire);
                if complete_after > delivered && head - delivered > max_lag as i64 {
                    s.raise(SIGNAL_SLOW);
                }
            }
        }
    }
}
