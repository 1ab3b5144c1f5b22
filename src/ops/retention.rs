//! Background retention: the `changes` log is pruned by age and by count,
//! raw Calendly payloads (personal data: names, emails, answers) older than
//! `calendly.keep_payloads` are dropped, keeping each delivery's outcome row,
//! account audit entries older than `auth.audit_retention` are deleted,
//! and outcome rows and per-minute rejection counts older than
//! `calendly.keep_outcomes` are deleted.
//! Each prune is a store op that deletes one chunk (`store::retention`);
//! this module decides the cutoffs and repeats chunks until one comes back
//! short, between chunks checking for shutdown.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::config::Config;
use crate::duration::Dur;
use crate::store::{Store, StoreResult};

const CHUNK: usize = 2000;

/// What retention uses: the store and the five retention settings.
#[derive(Clone)]
pub struct Retention {
    store: Store,
    /// `changes.prune_interval`.
    every: Duration,
    /// `changes.retention_age` and `changes.retention_rows`.
    changes_age: Dur,
    changes_rows: u64,
    /// `calendly.keep_payloads`, `calendly.keep_outcomes`, `auth.audit_retention`.
    payloads_age: Dur,
    outcomes_age: Dur,
    audit_age: Dur,
}

/// The time `age` ago: rows stamped before it are past their retention.
/// Config caps durations at 100 years; a longer one (set in code) keeps
/// everything (None) rather than overflow.
fn cutoff(age: Dur) -> Option<OffsetDateTime> {
    let age = time::Duration::seconds(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
    crate::store::timefmt::now().checked_sub(age)
}

impl Retention {
    pub fn new(store: Store, config: &Config) -> Retention {
        Retention {
            store,
            every: config.changes.prune_interval.0,
            changes_age: config.changes.retention_age,
            changes_rows: config.changes.retention_rows,
            payloads_age: config.calendly.keep_payloads,
            outcomes_age: config.calendly.keep_outcomes,
            audit_age: config.auth.audit_retention,
        }
    }

    /// Delete one chunk of changes past retention; returns how many went.
    pub async fn prune_once(&self) -> StoreResult<usize> {
        self.store.prune_changes(cutoff(self.changes_age), self.changes_rows, CHUNK).await
    }

    /// Drop one chunk of raw Calendly payloads past `calendly.keep_payloads`;
    /// the event row (event, invitee, outcome, error, times) stays.
    pub async fn reduce_payloads_once(&self) -> StoreResult<usize> {
        self.store.drop_calendly_payloads(cutoff(self.payloads_age), CHUNK).await
    }

    /// Delete one chunk of audit entries older than `auth.audit_retention`.
    pub async fn prune_audit_once(&self) -> StoreResult<usize> {
        self.store.prune_audit(cutoff(self.audit_age), CHUNK).await
    }

    /// Delete one chunk of Calendly delivery rows (every outcome) and of
    /// per-minute rejection counts older than `calendly.keep_outcomes`.
    pub async fn drop_outcomes_once(&self) -> StoreResult<usize> {
        self.store.drop_calendly_outcomes(cutoff(self.outcomes_age), CHUNK).await
    }
}

/// Run a chunked job until a chunk comes back short; returns the total.
async fn drain<Fut>(what: &str, shutdown: &watch::Receiver<bool>, chunk: impl Fn() -> Fut) -> usize
where
    Fut: std::future::Future<Output = StoreResult<usize>>,
{
    let mut total = 0;
    loop {
        // A shutdown stops between chunks: each chunk is its own transaction.
        if *shutdown.borrow() {
            return total;
        }
        match chunk().await {
            Ok(n) => {
                total += n;
                if n < CHUNK {
                    return total;
                }
                tokio::task::yield_now().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed");
                return total;
            }
        }
    }
}

/// Prune every `changes.prune_interval`, chunk by chunk, until `shutdown` turns true.
pub async fn run(retention: Retention, mut shutdown: watch::Receiver<bool>) {
    let r = &retention;
    let mut tick = tokio::time::interval(r.every.max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let pruned = drain("pruning the change log", &shutdown, || r.prune_once()).await;
        if pruned > 0 {
            tracing::info!(pruned, "change log pruned");
        }
        let reduced = drain("dropping old Calendly payloads", &shutdown, || r.reduce_payloads_once()).await;
        if reduced > 0 {
            tracing::info!(payloads = reduced, "old Calendly payloads dropped; their outcome rows are kept");
        }
        let audited = drain("pruning the audit log", &shutdown, || r.prune_audit_once()).await;
        if audited > 0 {
            tracing::info!(entries = audited, "old audit entries deleted (auth.audit_retention)");
        }
        let dropped = drain("deleting old Calendly outcome rows", &shutdown, || r.drop_outcomes_once()).await;
        if dropped > 0 {
            tracing::info!(rows = dropped, "Calendly delivery rows older than calendly.keep_outcomes deleted");
        }
    }
}
