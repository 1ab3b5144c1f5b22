//! The tail: the one path by which committed changes reach this node's
//! realtime hub, whichever node committed them. It reads the change log
//! (`seq > published`, in seq order), woken by the listener after every
//! commit of any node and by its own poll (`cluster.poll_interval`), since a
//! wake-up is lost while the listener reconnects: a lost wake-up delays a
//! change by at most one poll, never loses it.
//!
//! This node's own commits arrive from its writer with their rows; they are
//! passed on without a read, but never out of order: seqs are handed out in
//! commit order across all nodes (`store::writer::log_changes`), so when an
//! own batch does not follow the published seq directly, another node
//! committed the seqs in between, and the log is read before anything later
//! goes out. Publishing our seq 10 before another node's 9 would make every
//! session skip 9 for good.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};

use crate::store::{Change, ChangeBatch, LogHead, Store};

/// Changes read from the log per query.
const PAGE: usize = 1000;

/// What the tail has done, for readiness and `/metrics`.
#[derive(Debug)]
pub struct TailStats {
    /// The newest seq handed to the hub.
    pub published: AtomicI64,
    /// The newest seq the tail has read or been handed.
    pub head_seen: AtomicI64,
    /// Milliseconds since `started` of the last read that reached the head.
    last_caught_up_ms: AtomicU64,
    started: Instant,
    /// Reads of the log, and changes they found that the writer had not handed over.
    pub reads: AtomicU64,
    pub read_changes: AtomicU64,
}

impl TailStats {
    fn new(published: i64) -> TailStats {
        TailStats {
            published: AtomicI64::new(published),
            head_seen: AtomicI64::new(published),
            last_caught_up_ms: AtomicU64::new(0),
            started: Instant::now(),
            reads: AtomicU64::new(0),
            read_changes: AtomicU64::new(0),
        }
    }

    /// How long ago a read last found nothing left to read.
    pub fn since_caught_up(&self) -> Duration {
        self.started.elapsed().saturating_sub(Duration::from_millis(self.last_caught_up_ms.load(Ordering::Acquire)))
    }
}

/// The tail of one node.
pub struct Tail {
    store: Store,
    /// Advanced to the newest seq seen anywhere (sessions measure lag against it).
    head: LogHead,
    /// Wakes a read (the listener's notifications).
    wake: Arc<Notify>,
    poll: Duration,
    pub stats: Arc<TailStats>,
}

impl Tail {
    /// A tail that has published everything up to the log's current head.
    pub fn new(store: Store, wake: Arc<Notify>, poll: Duration) -> Tail {
        let head = store.log_head();
        let stats = Arc::new(TailStats::new(head.get()));
        Tail { store, head, wake, poll, stats }
    }

    /// Pass changes on to `hub` in seq order until the writer's feed
    /// `own` closes (shutdown), then read the log once more and end.
    pub async fn run(self, mut own: mpsc::UnboundedReceiver<ChangeBatch>, hub: mpsc::UnboundedSender<ChangeBatch>) {
        let mut published = self.stats.published.load(Ordering::Acquire);
        // Own changes that cannot go out yet: another node's seqs come first.
        let mut waiting: BTreeMap<i64, Arc<Change>> = BTreeMap::new();
        let mut poll = tokio::time::interval(self.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures: u32 = 0;
        loop {
            let mut read = false;
            let mut open = true;
            tokio::select! {
                batch = own.recv() => match batch {
                    Some(batch) => waiting.extend(batch.iter().map(|c| (c.seq, c.clone()))),
                    None => open = false,
                },
                _ = self.wake.notified() => read = true,
                _ = poll.tick() => read = true,
            }
            while let Ok(batch) = own.try_recv() {
                waiting.extend(batch.iter().map(|c| (c.seq, c.clone())));
            }
            published = self.pass_on(&mut waiting, published, &hub);
            // A gap before an own change is another node's commit: read it.
            if read || !waiting.is_empty() || !open {
                match self.read_log(published, &hub).await {
                    Ok(p) => {
                        published = p;
                        failures = 0;
                        waiting.retain(|seq, _| *seq > published);
                        published = self.pass_on(&mut waiting, published, &hub);
                    }
                    Err(e) => {
                        failures += 1;
                        if failures == 1 || failures.is_power_of_two() {
                            tracing::warn!(error = %e, failures, "cannot read the change log; retrying on the next poll");
                        }
                        if !open {
                            break;
                        }
                        // Not a busy loop: wait for the next poll or wake-up.
                        continue;
                    }
                }
            }
            if !open {
                break;
            }
        }
        // Whatever could not be ordered (the log unreadable at shutdown) still goes out.
        let rest: Vec<Arc<Change>> = waiting.into_values().filter(|c| c.seq > published).collect();
        if !rest.is_empty() {
            let _ = hub.send(Arc::new(rest));
        }
    }

    /// Hand over the own changes that follow `published` directly.
    fn pass_on(&self, waiting: &mut BTreeMap<i64, Arc<Change>>, mut published: i64, hub: &mpsc::UnboundedSender<ChangeBatch>) -> i64 {
        let mut ready = Vec::new();
        while let Some(entry) = waiting.first_entry() {
            let seq = *entry.key();
            if seq <= published {
                entry.remove();
            } else if seq == published + 1 {
                ready.push(entry.remove());
                published = seq;
            } else {
                break;
            }
        }
        if !ready.is_empty() {
            self.published(published);
            let _ = hub.send(Arc::new(ready));
        }
        published
    }

    /// Read every change after `published` from the log, page by page, and
    /// hand them over; returns the new published seq.
    async fn read_log(&self, mut published: i64, hub: &mpsc::UnboundedSender<ChangeBatch>) -> crate::store::StoreResult<i64> {
        let from = published;
        let mut pages = 0usize;
        loop {
            pages += 1;
            // One statement, one round trip: this runs after every commit of every node.
            let changes = self.store.changes_after(published, PAGE).await?;
            self.stats.reads.fetch_add(1, Ordering::Relaxed);
            let full = changes.len() == PAGE;
            if let Some(last) = changes.last() {
                self.stats.head_seen.fetch_max(last.seq, Ordering::AcqRel);
                self.head.advance(last.seq);
            }
            let fresh: Vec<Arc<Change>> = changes.into_iter().filter(|c| c.seq > published).map(Arc::new).collect();
            if let Some(last) = fresh.last() {
                if fresh[0].seq != published + 1 {
                    // Retention pruned them before this node read them (it was
                    // stopped or far behind): sessions that need them resume
                    // from a snapshot, as after any pruning.
                    tracing::warn!(from = published + 1, to = fresh[0].seq - 1, "changes were pruned before this node read them");
                }
                published = last.seq;
                self.stats.read_changes.fetch_add(fresh.len() as u64, Ordering::Relaxed);
                self.published(published);
                let _ = hub.send(Arc::new(fresh));
            }
            if !full {
                // Everything committed when the statement ran has been read.
                let since = self.stats.since_caught_up();
                self.stats.last_caught_up_ms.store(self.stats.started.elapsed().as_millis() as u64, Ordering::Release);
                // Far behind (paused, cut off, just resumed): say so once it is over.
                if pages > 1 || since > self.poll * 3 {
                    tracing::info!(
                        changes = published - from,
                        seq = published,
                        behind_ms = since.as_millis() as u64,
                        "tail caught up: read {} changes from the log",
                        published - from
                    );
                }
                return Ok(published);
            }
        }
    }

    fn published(&self, seq: i64) {
        self.stats.published.fetch_max(seq, Ordering::AcqRel);
        self.stats.head_seen.fetch_max(seq, Ordering::AcqRel);
    }
}
