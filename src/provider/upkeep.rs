//! The upkeep both calendar providers run the same way, so push never fails
//! quietly: renewing each push channel before it expires (with capped
//! exponential backoff when a renewal fails, shown to admins), and the
//! staggered safety-net sync of every connected user. What a renewal *is*
//! differs — Google replaces its channel, Graph extends a subscription in
//! place — and stays the provider's ([`Channels::renew`]); when it runs,
//! how failures are retried and recorded, and when the safety net fires are
//! decided here once.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::scheduler::SyncTrigger;
use crate::backoff::Backoff;
use crate::model::Provider;
use crate::store::sync_status::RenewalFailure;
use crate::store::watch_channels::TickedCalendarChannel;
use crate::store::{timefmt, Store, StoreResult};

/// The renewal scheduler plans again at least this often; it is also woken
/// whenever a channel is registered or removed.
const RENEWAL_RECHECK: Duration = Duration::from_secs(3600);
/// The safety net looks for newly connected users at least this often.
const SAFETY_NET_RECHECK: Duration = Duration::from_secs(60);
/// Renewal retries: the first wait, and the longest (also at most a quarter
/// of the renewal margin, so several tries fit before the channel lapses).
const RETRY_BASE: Duration = Duration::from_secs(5);
/// The longest a provider's `Retry-After` holds a renewal or a sync back: a
/// throttled provider is obeyed, but a channel must not lapse, nor a user
/// go unsynced, on one huge answer.
pub const MAX_PROVIDER_WAIT: Duration = Duration::from_secs(3600);
const RETRY_CAP: Duration = Duration::from_secs(15 * 60);
const RETRY_FLOOR: Duration = Duration::from_secs(1);
/// A channel is not renewed sooner than this after it was registered, even
/// if the provider gave it a very short life (no renewal storm).
const MIN_CHANNEL_AGE: time::Duration = time::Duration::seconds(1);

/// A ticked calendar's live channel, as the renewal plan needs it.
#[derive(Debug, Clone)]
pub struct ChannelView {
    pub user_id: i64,
    pub calendar_id: String,
    /// None: no active channel, or its registration never finished.
    pub expiration: Option<OffsetDateTime>,
    pub registered_at: Option<OffsetDateTime>,
    pub webhook_url: Option<String>,
}

/// Stored channels as the renewal plan sees them: one per ticked calendar,
/// the one expiring last (the rows come ordered by calendar, then expiration).
pub fn views_from(rows: Vec<TickedCalendarChannel>) -> Vec<ChannelView> {
    let mut views: Vec<ChannelView> = Vec::new();
    for c in rows {
        let view = ChannelView {
            user_id: c.user_id,
            calendar_id: c.calendar_id,
            expiration: c.expiration.as_deref().and_then(timefmt::parse),
            registered_at: c.registered_at.as_deref().and_then(timefmt::parse),
            webhook_url: c.webhook_url,
        };
        match views.last_mut() {
            Some(last) if last.user_id == view.user_id && last.calendar_id == view.calendar_id => *last = view,
            _ => views.push(view),
        }
    }
    views
}

/// A renewal that is due at `due`, of the channel expiring at `expiration`
/// (None: there is no live channel).
#[derive(Debug)]
pub struct Due {
    pub user_id: i64,
    pub calendar_id: String,
    pub due: OffsetDateTime,
    pub expiration: Option<OffsetDateTime>,
}

/// A failed renewal waiting for its next try.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Failures in a row.
    pub failures: u32,
    pub at: OffsetDateTime,
}

/// What a provider's channels give the shared upkeep.
pub trait Channels: Send + Sync + 'static {
    fn renewals(&self) -> &Renewals;
    /// Each ticked calendar of each connected user with its live channel
    /// (the one expiring last, should there be two).
    fn views(&self) -> impl Future<Output = StoreResult<Vec<ChannelView>>> + Send;
    /// Renew one calendar's channel; records how it went through
    /// [`Renewals::succeeded`] / [`Renewals::failed`]. Returns whether it worked.
    fn renew(self: &Arc<Self>, user_id: i64, calendar_id: &str, why: &'static str) -> impl Future<Output = bool> + Send;
    /// Users whose calendars sync now.
    fn connected_users(&self) -> impl Future<Output = StoreResult<Vec<i64>>> + Send;
    fn enqueue_for(self: &Arc<Self>, user_id: i64, trigger: SyncTrigger);
    fn shutdown(&self) -> watch::Receiver<bool>;
}

/// When channels are renewed, and the failed renewals waiting for their next try.
pub struct Renewals {
    provider: Provider,
    store: Store,
    renew_before: Duration,
    ttl: Duration,
    retries: Mutex<HashMap<(i64, String), Retry>>,
    /// Wakes the renewal scheduler when a channel was registered or removed,
    /// so a short-lived channel is renewed in time.
    changed: Notify,
}

fn to_std(d: time::Duration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// Wait before renewal try number `failures + 1`: [`Backoff`] from
/// [`RETRY_BASE`], capped by [`RETRY_CAP`] and by a quarter of `margin`
/// (never under [`RETRY_FLOOR`]).
pub fn retry_after(failures: u32, margin: Duration) -> Duration {
    let cap = (margin / 4).clamp(RETRY_FLOOR, RETRY_CAP);
    Backoff::new(RETRY_BASE, cap).delay(failures.saturating_sub(1))
}

/// Say at startup when a provider's `renew_before` is not shorter than its
/// channels' life (`ttl_key`): they are then renewed halfway through it.
pub fn warn_if_renewed_halfway(provider: &str, renew_before: crate::duration::Dur, ttl_key: &str, ttl: crate::duration::Dur) {
    if renew_before.0 >= ttl.0 {
        tracing::warn!(
            "{provider}.renew_before ({renew_before}) is not shorter than {provider}.{ttl_key} ({ttl}); channels are renewed halfway through their life instead"
        );
    }
}

impl Renewals {
    /// `renew_before` ahead of expiry, for channels asked for with a life of `ttl`.
    pub fn new(provider: Provider, store: Store, renew_before: Duration, ttl: Duration) -> Renewals {
        Renewals { provider, store, renew_before, ttl, retries: Mutex::new(HashMap::new()), changed: Notify::new() }
    }

    fn retries(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, String), Retry>> {
        self.retries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A channel was registered or removed: plan again now.
    pub fn changed(&self) {
        self.changed.notify_one();
    }

    /// How long before expiry a channel is renewed; at most half its life
    /// (checked per channel in [`Renewals::renew_at`]).
    pub fn margin(&self) -> Duration {
        self.renew_before.min(self.ttl / 2)
    }

    /// When a channel registered at `registered` that expires at `expiration` is renewed.
    pub fn renew_at(&self, expiration: OffsetDateTime, registered: Option<OffsetDateTime>) -> OffsetDateTime {
        let margin = time::Duration::try_from(self.renew_before).unwrap_or(time::Duration::DAY);
        let Some(registered) = registered else { return expiration - margin };
        let half_life = (expiration - registered) / 2;
        (expiration - margin.min(half_life)).max(registered + MIN_CHANNEL_AGE)
    }

    /// What the renewal scheduler has to do, soonest first.
    pub fn plan(&self, views: Vec<ChannelView>) -> Vec<Due> {
        let ticked: HashSet<(i64, String)> = views.iter().map(|v| (v.user_id, v.calendar_id.clone())).collect();
        let retries = {
            let mut map = self.retries();
            // Users who disconnected or must reconnect, calendars unticked: nothing to retry.
            map.retain(|k, _| ticked.contains(k));
            map.clone()
        };
        let mut plan = Vec::new();
        for v in views {
            let retry = retries.get(&(v.user_id, v.calendar_id.clone())).map(|r| r.at);
            let due = match (v.expiration, retry) {
                (Some(exp), Some(at)) => self.renew_at(exp, v.registered_at).max(at),
                (Some(exp), None) => self.renew_at(exp, v.registered_at),
                // No channel: only a failed registration is retried here;
                // a user who removed theirs keeps it removed until restart.
                (None, Some(at)) => at,
                (None, None) => continue,
            };
            plan.push(Due { user_id: v.user_id, calendar_id: v.calendar_id, due, expiration: v.expiration });
        }
        plan.sort_by_key(|d| d.due);
        plan
    }

    /// A renewal worked: no retry waits, and admins see it.
    pub async fn succeeded(&self, user_id: i64, calendar_id: &str) {
        self.retries().remove(&(user_id, calendar_id.to_string()));
        self.record(user_id, None).await;
    }

    /// Nothing to renew for the user's calendar (or any of theirs) any more:
    /// they must reconnect, disconnected, or turned push off. A pending
    /// retry must not bring it back.
    pub fn forget(&self, user_id: i64, calendar_id: Option<&str>) {
        self.retries().retain(|(u, c), _| *u != user_id || calendar_id.is_some_and(|only| only != c));
        self.changed();
    }

    /// A renewal failed: schedule the next try with backoff — and no sooner
    /// than the provider asked (`Retry-After` of a throttled call, at most
    /// [`MAX_PROVIDER_WAIT`]) — and show the failure to admins.
    pub async fn failed(&self, user_id: i64, calendar_id: &str, error: &str, provider_wait: Option<Duration>) {
        let Retry { failures, at } = {
            let mut map = self.retries();
            let key = (user_id, calendar_id.to_string());
            let failures = map.get(&key).map_or(1, |r| r.failures.saturating_add(1));
            let wait = retry_after(failures, self.margin()).max(provider_wait.unwrap_or_default().min(MAX_PROVIDER_WAIT));
            let at = timefmt::now() + time::Duration::try_from(wait).unwrap_or(time::Duration::MINUTE);
            map.insert(key, Retry { failures, at });
            Retry { failures, at }
        };
        let wait_s = to_std(at - timefmt::now()).as_secs_f64();
        tracing::warn!(
            provider = %self.provider,
            "{} channel renewal for user {user_id} failed ({failures} in a row): {error}; next try in {wait_s:.1} s",
            self.provider
        );
        let failure = RenewalFailure { failures, error: error.to_string(), next_attempt_at: Some(timefmt::format(at)) };
        self.record(user_id, Some(failure)).await;
        self.changed();
    }

    async fn record(&self, user_id: i64, failure: Option<RenewalFailure>) {
        if let Err(e) = self.store.record_channel_renewal(self.provider, user_id, failure).await {
            tracing::debug!(provider = %self.provider, user = user_id, error = %e, "could not record a channel renewal");
        }
    }
}

/// Renew channels as they come due, until shutdown.
pub async fn renewals<C: Channels>(channels: Arc<C>) {
    let mut shutdown = channels.shutdown();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let plan = match channels.views().await {
            Ok(views) => channels.renewals().plan(views),
            Err(e) => {
                tracing::warn!(error = %e, "channel renewal: cannot read the channels; trying again in a minute");
                Vec::new()
            }
        };
        let now = timefmt::now();
        let mut next: Option<OffsetDateTime> = None;
        let mut acted = false;
        for d in plan {
            if d.due > now {
                next = Some(next.map_or(d.due, |n| n.min(d.due)));
                continue;
            }
            if *shutdown.borrow() {
                return;
            }
            let now = timefmt::now();
            let lapsed = d.expiration.is_none_or(|exp| exp <= now);
            let why = if lapsed { "the channel had lapsed" } else { "before expiry" };
            if channels.renew(d.user_id, &d.calendar_id, why).await && lapsed {
                // Nothing was pushed while there was no live channel.
                channels.enqueue_for(d.user_id, SyncTrigger::CatchUp);
            }
            acted = true;
        }
        if acted {
            // Plan again: the renewed channels have new expirations.
            continue;
        }
        let wait = next.map_or(RENEWAL_RECHECK, |n| to_std(n - timefmt::now())).min(RENEWAL_RECHECK);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = channels.renewals().changed.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One safety-net sync per connected user every `every`, each user at their
/// own random offset in the interval so they are spread out, not all at once.
pub async fn safety_net<C: Channels>(channels: Arc<C>, every: Duration) {
    let mut shutdown = channels.shutdown();
    let mut due: HashMap<i64, Instant> = HashMap::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        match channels.connected_users().await {
            Ok(users) => {
                let now = Instant::now();
                let users: HashSet<i64> = users.into_iter().collect();
                due.retain(|u, _| users.contains(u));
                for &user_id in &users {
                    // A random place in the cycle per user spreads the syncs over the interval.
                    let at = due.entry(user_id).or_insert_with(|| now + every.mul_f64(rand::random::<f64>()));
                    if *at <= now {
                        channels.enqueue_for(user_id, SyncTrigger::SafetyNet);
                        // Keep the user's place in the cycle; turns missed while busy are skipped.
                        let late = (now - *at).as_nanos() % every.as_nanos();
                        *at = now + every - Duration::from_nanos(late as u64);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "safety net: cannot read the connected users"),
        }
        let now = Instant::now();
        let wait = due.values().min().map_or(every, |t| t.saturating_duration_since(now)).min(every).min(SAFETY_NET_RECHECK);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Sync requests counted by a node that died before serving them: looked
/// for every `every` (the lease time, after which nobody holds their lease)
/// and served here.
pub async fn orphaned_syncs<C: Channels + super::scheduler::Syncer>(
    channels: Arc<C>,
    passes: Arc<super::scheduler::Passes>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = channels.shutdown();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        passes.orphaned(&channels).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_retries_back_off_with_jitter_under_a_cap() {
        let day = Duration::from_secs(86_400);
        for failures in 1..5u32 {
            let d = retry_after(failures, day);
            let step = RETRY_BASE * (1 << (failures - 1));
            assert!(d >= step / 2 && d <= step, "{d:?} after {failures} failures");
        }
        assert!(retry_after(40, day) <= RETRY_CAP);
        // A short renewal margin (tests) caps the wait at a quarter of it, but not under a second.
        assert!(retry_after(3, Duration::from_secs(2)) <= RETRY_FLOOR);
        assert!(retry_after(3, Duration::from_secs(40)) <= Duration::from_secs(10));
    }
}
