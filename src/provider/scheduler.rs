//! When a provider's sync passes run, written once for Google and
//! Microsoft: requests for one user coalesce on this node (a burst of
//! notifications is one pass and at most one more), and across nodes one
//! user is synced on one node at a time, under the short lease
//! `<provider>_sync:<user id>`. What a pass does is the provider's
//! ([`Syncer::run_pass`]); this module only decides when it runs.
//!
//! Across nodes: every request is counted in the provider's
//! `*_sync_status.passes_wanted`, then this node takes the user's lease or
//! leaves the request to the node that holds it. The holder goes round
//! until `passes_done` catches up, gives the lease back, and looks once
//! more (a request counted while it held the lease, by a node that then
//! failed to take it, is served either way). A request counted by a node
//! that died is found by [`Passes::orphaned`], which the provider's upkeep
//! runs, and served there.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::cluster::Leases;
use crate::model::{Provider, SyncKind, SyncOutcome};
use crate::store::sync_status::SyncRecord;
use crate::store::Store;

/// Why a sync pass runs. Ordered by precedence: when requests for a user
/// coalesce into one pass, it counts as the strongest of them (a pass that
/// also answers a push is not a safety-net find).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SyncTrigger {
    /// The slow periodic sync (`*.safety_net_interval`).
    SafetyNet,
    /// Startup, or a channel that lapsed: changes may have gone unannounced.
    CatchUp,
    /// A push notification, a sign-in, or an explicit request.
    Push,
}

impl SyncTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncTrigger::SafetyNet => "safety_net",
            SyncTrigger::CatchUp => "catch_up",
            SyncTrigger::Push => "push",
        }
    }

    /// What a pass for this reason did, shown to admins and in metrics:
    /// `full` when it had to list the whole window, else `safety_net` or
    /// `incremental`.
    pub fn kind(self, full: bool) -> SyncKind {
        match (full, self) {
            (true, _) => SyncKind::Full,
            (false, SyncTrigger::SafetyNet) => SyncKind::SafetyNet,
            (false, _) => SyncKind::Incremental,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncReport {
    pub full: bool,
    pub pages: usize,
    pub created: u64,
    pub updated: u64,
    pub canceled: u64,
    /// Rows removed: events that are not meetings (imported by an earlier version, or changed since).
    pub removed: u64,
    /// Events left alone (owned by Calendly, not meetings, unreadable, deletions of unknown events).
    pub skipped: u64,
}

impl SyncReport {
    /// Meeting changes the pass made.
    pub fn changes(&self) -> u64 {
        self.created + self.updated + self.canceled + self.removed
    }
}

/// How one pass ended, as its provider saw it.
pub enum PassEnd<'a> {
    Done(&'a SyncReport),
    /// `invalid_grant`: the user must connect again (the sentence says how).
    NeedsReconnect(String),
    Failed(String),
}

/// The words a provider's pass log lines use.
pub struct PassWords {
    /// `google`, `microsoft`: the log lines start with it.
    pub name: &'static str,
    /// What "changes no notification announced" points the operator to.
    pub not_arriving: &'static str,
    /// What the user must do after `invalid_grant`.
    pub reconnect: &'static str,
}

/// The end of a pass, the same for every provider: its log line, its
/// metrics (`syncs` by kind and outcome, `seconds` by kind) and its row in
/// the provider's `*_sync_status`.
#[allow(clippy::too_many_arguments)]
pub async fn record_pass(
    provider: Provider,
    words: &PassWords,
    store: &Store,
    (syncs, seconds): (&prometheus::IntCounterVec, &prometheus::HistogramVec),
    user_id: i64,
    trigger: SyncTrigger,
    started: std::time::Instant,
    end: PassEnd<'_>,
) {
    let name = words.name;
    let empty = SyncReport::default();
    let (kind, outcome, error, report) = match end {
        PassEnd::Done(r) => {
            let kind = trigger.kind(r.full);
            tracing::info!(
                trigger = trigger.as_str(),
                removed = r.removed,
                "{name} sync user {user_id}: {} created, {} updated, {} canceled ({kind}, {} {})",
                r.created,
                r.updated,
                r.canceled,
                r.pages,
                if r.pages == 1 { "page" } else { "pages" }
            );
            if trigger == SyncTrigger::SafetyNet && r.changes() > 0 {
                tracing::warn!(
                    "{name} safety-net sync user {user_id} found {} change(s) no push notification announced; \
                     if this keeps happening, {}",
                    r.changes(),
                    words.not_arriving
                );
            }
            (Some(kind), SyncOutcome::Ok, None, r)
        }
        PassEnd::NeedsReconnect(why) => {
            tracing::warn!("{name} sync user {user_id} stopped: {}", words.reconnect);
            (None, SyncOutcome::NeedsReconnect, Some(why), &empty)
        }
        PassEnd::Failed(why) => {
            tracing::warn!(trigger = trigger.as_str(), "{name} sync user {user_id} failed: {why}");
            (None, SyncOutcome::Error, Some(why), &empty)
        }
    };
    let metric_kind = kind.unwrap_or_else(|| trigger.kind(false)).as_str();
    syncs.with_label_values(&[metric_kind, outcome.as_str()]).inc();
    seconds.with_label_values(&[metric_kind]).observe(started.elapsed().as_secs_f64());
    let record = SyncRecord {
        kind,
        outcome,
        error,
        full: report.full,
        safety_net: trigger == SyncTrigger::SafetyNet,
        created: report.created,
        updated: report.updated,
        canceled: report.canceled,
        changes: report.changes(),
    };
    if let Err(e) = store.record_sync(provider, user_id, record).await {
        tracing::debug!(user = user_id, error = %e, "could not record the sync outcome");
    }
}

/// A provider's sync: one pass for one user, with its own log line and bookkeeping.
pub trait Syncer: Send + Sync + 'static {
    fn run_pass(self: &Arc<Self>, user_id: i64, trigger: SyncTrigger) -> impl Future<Output = ()> + Send;
}

/// The users of one provider with a pass running or asked for on this node.
pub struct Passes {
    provider: Provider,
    /// `google_sync:` or `microsoft_sync:`, followed by the user id.
    lease_prefix: &'static str,
    /// Users with a pass under way; `Some(trigger)` means "run once more
    /// when done", for that reason.
    running: Mutex<HashMap<i64, Option<SyncTrigger>>>,
    store: Store,
    leases: Arc<Leases>,
    tasks: TaskTracker,
    shutdown: watch::Receiver<bool>,
}

/// Removes a user's "pass running" mark when the pass task ends, however it ends.
struct RunningGuard {
    passes: Arc<Passes>,
    user_id: i64,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.passes.running().remove(&self.user_id);
    }
}

impl Passes {
    pub fn new(
        provider: Provider,
        lease_prefix: &'static str,
        store: Store,
        leases: Arc<Leases>,
        tasks: TaskTracker,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Passes> {
        Arc::new(Passes { provider, lease_prefix, running: Mutex::new(HashMap::new()), store, leases, tasks, shutdown })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Option<SyncTrigger>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Ask for a pass of this user. Returns at once: starts a pass, or marks
    /// the running one to go again when it ends.
    pub fn enqueue<S: Syncer>(self: &Arc<Self>, syncer: &Arc<S>, user_id: i64, trigger: SyncTrigger) {
        if self.shutting_down() {
            return;
        }
        {
            let mut map = self.running();
            if let Some(again) = map.get_mut(&user_id) {
                *again = Some(again.map_or(trigger, |t| t.max(trigger)));
                return;
            }
            map.insert(user_id, None);
        }
        let (me, syncer) = (self.clone(), syncer.clone());
        self.tasks.spawn(async move {
            let _guard = RunningGuard { passes: me.clone(), user_id };
            me.passes_for(&syncer, user_id, trigger).await;
        });
    }

    /// Is a pass running (or queued) for this user on this node?
    pub fn pending(&self, user_id: i64) -> bool {
        self.running().contains_key(&user_id)
    }

    /// A request of this node marked while its task ran ("go again"), taken.
    fn take_again(&self, user_id: i64) -> Option<SyncTrigger> {
        self.running().get_mut(&user_id).and_then(Option::take)
    }

    /// The task is about to end: take a request marked meanwhile, or remove
    /// the "pass running" mark in the same step, so a request that comes
    /// after starts a new task instead of being marked on one that is gone.
    fn finish_or_again(&self, user_id: i64) -> Option<SyncTrigger> {
        let mut map = self.running();
        if let Some(again) = map.get_mut(&user_id).and_then(Option::take) {
            return Some(again);
        }
        map.remove(&user_id);
        None
    }

    async fn count_request(&self, user_id: i64) {
        if let Err(e) = self.store.want_pass(self.provider, user_id).await {
            tracing::debug!(provider = %self.provider, user = user_id, error = %e, "could not count a sync request");
        }
    }

    async fn counts(&self, user_id: i64) -> (i64, i64) {
        self.store.passes(self.provider, user_id).await.unwrap_or((0, 0))
    }

    /// Passes of one user across nodes (see the module doc).
    async fn passes_for<S: Syncer>(self: &Arc<Self>, syncer: &Arc<S>, user_id: i64, mut trigger: SyncTrigger) {
        let lease = format!("{}{user_id}", self.lease_prefix);
        self.count_request(user_id).await;
        loop {
            let Some(fence) = self.leases.try_take(&lease).await else {
                // Another node syncs this user and serves what was counted;
                // a request of this node marked meanwhile is counted too.
                match self.finish_or_again(user_id) {
                    Some(t) if !self.shutting_down() => {
                        trigger = t;
                        self.count_request(user_id).await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    _ => return,
                }
            };
            loop {
                let (wanted, _) = self.counts(user_id).await;
                crate::store::cluster::fenced(fence.clone(), syncer.run_pass(user_id, trigger)).await;
                if let Err(e) = self.store.passes_done(self.provider, user_id, wanted).await {
                    tracing::debug!(provider = %self.provider, user = user_id, error = %e, "could not record the served sync requests");
                }
                let again = self.take_again(user_id);
                if again.is_some() {
                    self.count_request(user_id).await;
                }
                let (wanted, done) = self.counts(user_id).await;
                if wanted <= done || self.shutting_down() {
                    break;
                }
                trigger = again.unwrap_or(SyncTrigger::Push);
            }
            self.leases.give_back(&fence).await;
            if self.shutting_down() {
                return;
            }
            match self.store.passes(self.provider, user_id).await {
                Ok((wanted, done)) if wanted > done => trigger = self.take_again(user_id).unwrap_or(SyncTrigger::Push),
                _ => match self.finish_or_again(user_id) {
                    Some(t) => {
                        trigger = t;
                        self.count_request(user_id).await;
                    }
                    None => return,
                },
            }
        }
    }

    /// Users whose counted request nobody serves (the node that counted it,
    /// or held their lease, died): run here. The provider's upkeep calls
    /// this after each lease time.
    pub async fn orphaned<S: Syncer>(self: &Arc<Self>, syncer: &Arc<S>) {
        match self.store.unserved_passes(self.provider, self.lease_prefix).await {
            Ok(users) => {
                for user_id in users {
                    if !self.pending(user_id) {
                        tracing::info!(
                            provider = %self.provider,
                            "{} sync asked for on a node that stopped before serving it; running it here (user {user_id})",
                            self.provider
                        );
                        self.enqueue(syncer, user_id, SyncTrigger::Push);
                    }
                }
            }
            Err(e) => tracing::debug!(provider = %self.provider, error = %e, "could not look for unserved sync requests"),
        }
    }
}
