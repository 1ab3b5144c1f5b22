//! The background work that keeps push-based sync from failing quietly.
//! Push alone loses changes: channels expire (7 days by default), Google
//! drops some notifications, and nothing is pushed to a server that is down.
//!
//! - **Catch-up on start.** Every connected user (refresh token, not
//!   `needs_reconnect`) gets a sync of all their ticked calendars (the sync
//!   tokens make it cheap; a calendar without one, as after the upgrade that
//!   brought several calendars, is listed in full, a few users at a time),
//!   and each ticked calendar a new channel when its own is missing, expired,
//!   about to expire, or registered for another webhook address. Channels a
//!   previous run left behind (`retiring`, or of a calendar not ticked) are
//!   stopped.
//! - **Renewal before expiry.** Each channel (one per ticked calendar) is replaced
//!   `google.renew_before` before the expiration Google returned (at the
//!   latest halfway through its life), by [`GoogleSync::replace_channel`]:
//!   new channel first, old one stopped after, notifications on both
//!   accepted meanwhile. A failed renewal is retried with capped exponential
//!   backoff with jitter, and shown to admins (`google_sync_status`). If the
//!   old channel lapsed before a renewal worked, a catch-up sync follows.
//! - **Safety net.** An incremental sync per connected user every
//!   `google.safety_net_interval` (`0s` turns it off), each user at their own
//!   random offset in the interval so they are spread out, not all at once.
//!   Such passes run as [`SyncTrigger::SafetyNet`] and what they find is
//!   counted per user: changes no push announced.
//! - Used sign-in states are pruned once they have expired.
//!
//! Every loop ends when the server shuts down.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use super::sync::SyncError;
use super::GoogleSync;
use crate::backoff::Backoff;
use crate::provider::scheduler::SyncTrigger;
use crate::store::sync_status::RenewalFailure;
use crate::store::timefmt;

/// How often used sign-in states are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// The renewal scheduler plans again at least this often; it is also woken
/// whenever a channel is registered or removed.
const RENEWAL_RECHECK: Duration = Duration::from_secs(3600);
/// The safety net looks for newly connected users at least this often.
const SAFETY_NET_RECHECK: Duration = Duration::from_secs(60);
/// Renewal retries: the first wait, and the longest (also at most a quarter
/// of the renewal margin, so several tries fit before the channel lapses).
const RETRY_BASE: Duration = Duration::from_secs(5);
const RETRY_CAP: Duration = Duration::from_secs(15 * 60);
const RETRY_FLOOR: Duration = Duration::from_secs(1);
/// A channel is not renewed sooner than this after it was registered, even
/// if Google gave it a very short life (no renewal storm).
const MIN_CHANNEL_AGE: time::Duration = time::Duration::seconds(1);

/// A failed renewal waiting for its next try.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Failures in a row.
    pub failures: u32,
    pub at: OffsetDateTime,
}

/// Run the upkeep until shutdown, on the node that holds the upkeep lease
/// (`Server::build`); the node that takes the lease over catches up first,
/// as after a start (the one before may have died mid-renewal).
pub async fn run(google: Arc<GoogleSync>) {
    if !google.enabled() {
        return;
    }
    // One future, not spawned tasks: with several nodes this runs only
    // while the node holds the upkeep lease, and all of it stops when the
    // lease is lost (and runs under its fence).
    let upkeep = async {
        google.catch_up().await;
        tokio::join!(safety_net(google.clone()), renewals(google.clone()), orphaned_syncs(google.clone()));
    };
    tokio::join!(prune_states(google.clone()), upkeep);
}

/// A ticked calendar's active channel, as the renewal plan needs it.
#[derive(Debug)]
struct ChannelView {
    user_id: i64,
    calendar_id: String,
    /// None: no active channel, or its registration never finished.
    expiration: Option<OffsetDateTime>,
    registered_at: Option<OffsetDateTime>,
    webhook_url: Option<String>,
}

/// A renewal that is due at `due`, of the channel expiring at `expiration`
/// (None: there is no live channel).
#[derive(Debug)]
struct Due {
    user_id: i64,
    calendar_id: String,
    due: OffsetDateTime,
    expiration: Option<OffsetDateTime>,
}

fn to_std(d: time::Duration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// Wait before renewal try number `failures + 1`: [`Backoff`] from
/// [`RETRY_BASE`], capped by [`RETRY_CAP`] and by a quarter of `margin`
/// (never under [`RETRY_FLOOR`]).
pub(crate) fn retry_after(failures: u32, margin: Duration) -> Duration {
    let cap = (margin / 4).clamp(RETRY_FLOOR, RETRY_CAP);
    Backoff::new(RETRY_BASE, cap).delay(failures.saturating_sub(1))
}

impl GoogleSync {
    /// How long before expiry a channel is renewed; at most half its life
    /// (checked per channel in [`GoogleSync::renew_at`]).
    fn renew_margin(&self) -> Duration {
        self.cfg.renew_before.0.min(self.cfg.channel_ttl.0 / 2)
    }

    /// When a channel registered at `registered` that expires at `expiration` is renewed.
    fn renew_at(&self, expiration: OffsetDateTime, registered: Option<OffsetDateTime>) -> OffsetDateTime {
        let margin = time::Duration::try_from(self.cfg.renew_before.0).unwrap_or(time::Duration::DAY);
        let Some(registered) = registered else { return expiration - margin };
        let half_life = (expiration - registered) / 2;
        (expiration - margin.min(half_life)).max(registered + MIN_CHANNEL_AGE)
    }

    /// Users whose calendar syncs: a refresh token, and access not revoked.
    async fn connected_users(&self) -> Result<Vec<i64>, SyncError> {
        Ok(self.store.connected_google_users().await?)
    }

    /// Each ticked calendar of each connected user with its active, fully
    /// registered channel (the one expiring last, should there be two).
    async fn channel_views(&self) -> Result<Vec<ChannelView>, SyncError> {
        let rows = self.store.ticked_google_calendar_channels().await?.into_iter().map(|c| ChannelView {
            user_id: c.user_id,
            calendar_id: c.calendar_id,
            expiration: c.expiration.as_deref().and_then(timefmt::parse),
            registered_at: c.registered_at.as_deref().and_then(timefmt::parse),
            webhook_url: c.webhook_url,
        });
        let mut views: Vec<ChannelView> = Vec::new();
        for view in rows {
            // Ordered by expiration: a later row of the same calendar replaces the earlier.
            match views.last_mut() {
                Some(last) if last.user_id == view.user_id && last.calendar_id == view.calendar_id => *last = view,
                _ => views.push(view),
            }
        }
        Ok(views)
    }

    /// Make sure every connected user's calendar list has been read (after
    /// the upgrade that brought several calendars, nobody's has), so their
    /// ticked calendars are known. Returns the connected users.
    async fn resolve_calendars(self: &Arc<Self>) -> Result<Vec<i64>, SyncError> {
        let users = self.connected_users().await?;
        for &user_id in &users {
            if self.shutting_down() {
                return Err(SyncError::ShuttingDown);
            }
            if self.store.has_google_calendar_list(user_id).await? {
                continue;
            }
            let creds = self.credentials(user_id).await?;
            let Some(mut creds) = creds else { continue };
            if let Err(e) = self.ticked_calendars(user_id, &mut creds, &mut false).await {
                tracing::warn!(user = user_id, error = %e, "google catch-up: cannot read the user's calendar list; their sync will try again");
            }
        }
        Ok(users)
    }

    /// On start: stop leftovers, new channels where needed, then a sync
    /// for every connected user.
    pub(crate) async fn catch_up(self: &Arc<Self>) {
        let users = match self.resolve_calendars().await {
            Ok(u) => u,
            Err(SyncError::ShuttingDown) => return,
            Err(e) => {
                tracing::error!(error = %e, "google catch-up: cannot read the connected users; relying on renewal and the safety net");
                return;
            }
        };
        let views = match self.channel_views().await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "google catch-up: cannot read the channels; relying on renewal and the safety net");
                return;
            }
        };
        if users.is_empty() {
            return;
        }
        for &user_id in &users {
            if let Err(e) = self.stop_leftover_channels(user_id).await {
                tracing::warn!(user = user_id, error = %e, "google catch-up: could not stop leftover channels");
            }
        }
        let now = timefmt::now();
        let mut replace = Vec::new();
        let mut fine: HashSet<i64> = users.iter().copied().collect();
        for v in &views {
            let why = match (v.expiration, v.webhook_url.as_deref()) {
                (None, _) => Some("no live channel"),
                (Some(exp), _) if exp <= now => Some("the channel expired"),
                (_, Some(url)) if url != self.webhook_url => Some("the webhook address changed"),
                (Some(exp), _) if self.renew_at(exp, v.registered_at) <= now => Some("the channel is due for renewal"),
                _ => None,
            };
            if let Some(why) = why {
                // Channel first, then the sync: a change after the watch is
                // pushed, one before the sync's list is in it.
                replace.push((v.user_id, v.calendar_id.clone(), why));
                fine.remove(&v.user_id);
            }
        }
        for &user_id in &fine {
            self.enqueue_for(user_id, SyncTrigger::CatchUp);
        }
        tracing::info!(
            users = users.len(),
            new_channels = replace.len(),
            "google catch-up (start, or this node took the upkeep lease over): syncing every connected user"
        );
        let mut renewed: HashSet<i64> = HashSet::new();
        for (user_id, calendar_id, why) in replace {
            if self.shutting_down() {
                return;
            }
            self.renew(user_id, &calendar_id, why).await;
            renewed.insert(user_id);
        }
        for user_id in renewed {
            self.enqueue_for(user_id, SyncTrigger::CatchUp);
        }
    }

    /// What the renewal scheduler has to do, soonest first.
    async fn renewal_plan(&self) -> Result<Vec<Due>, SyncError> {
        let views = self.channel_views().await?;
        let ticked: HashSet<(i64, String)> = views.iter().map(|v| (v.user_id, v.calendar_id.clone())).collect();
        let retries = {
            let mut map = self.renewal_retries.lock().unwrap_or_else(|p| p.into_inner());
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
        Ok(plan)
    }

    /// Replace the channel of one of the user's calendars and record how it
    /// went. Returns whether it worked.
    pub(crate) async fn renew(self: &Arc<Self>, user_id: i64, calendar_id: &str, why: &str) -> bool {
        let key = (user_id, calendar_id.to_string());
        match self.replace_channel(user_id, calendar_id).await {
            Ok(info) => {
                self.renewal_retries.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                tracing::info!(
                    user = user_id,
                    channel = %info.channel_id,
                    expiration = info.expiration.as_deref().unwrap_or("unknown"),
                    "renewed the Google push channel ({why})"
                );
                self.record_renewal(user_id, None).await;
                true
            }
            Err(SyncError::ShuttingDown) => false,
            Err(e @ (SyncError::NeedsReconnect | SyncError::NotConnected)) => {
                self.renewal_retries.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                tracing::warn!(user = user_id, "google channel renewal skipped: {e}");
                false
            }
            Err(e) => {
                self.channel_failed(user_id, calendar_id, &e.to_string()).await;
                false
            }
        }
    }

    /// A channel could not be registered: schedule the next try with backoff
    /// and show the failure to admins.
    pub(crate) async fn channel_failed(&self, user_id: i64, calendar_id: &str, error: &str) {
        let wait = {
            let mut map = self.renewal_retries.lock().unwrap_or_else(|p| p.into_inner());
            let key = (user_id, calendar_id.to_string());
            let failures = map.get(&key).map_or(1, |r| r.failures.saturating_add(1));
            let wait = retry_after(failures, self.renew_margin());
            let at = timefmt::now() + time::Duration::try_from(wait).unwrap_or(time::Duration::MINUTE);
            map.insert(key, Retry { failures, at });
            Retry { failures, at }
        };
        let Retry { failures, at } = wait;
        let wait_s = to_std(at - timefmt::now()).as_secs_f64();
        tracing::warn!("google channel renewal for user {user_id} failed ({failures} in a row): {error}; next try in {wait_s:.1} s");
        let failure = RenewalFailure { failures, error: error.to_string(), next_attempt_at: Some(timefmt::format(at)) };
        self.record_renewal(user_id, Some(failure)).await;
        self.channels_changed.notify_one();
    }

    /// `google_sync_status`: a success (None) or a failure (failures in a
    /// row, error, next try).
    async fn record_renewal(&self, user_id: i64, failure: Option<RenewalFailure>) {
        if let Err(e) = self.store.record_channel_renewal(crate::model::Provider::Google, user_id, failure).await {
            tracing::debug!(user = user_id, error = %e, "could not record a channel renewal");
        }
    }
}

/// Renew channels as they come due, until shutdown.
async fn renewals(google: Arc<GoogleSync>) {
    let mut shutdown = google.shutdown.clone();
    loop {
        if google.shutting_down() {
            return;
        }
        let plan = match google.renewal_plan().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "google channel renewal: cannot read the channels; trying again in a minute");
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
            if google.shutting_down() {
                return;
            }
            let now = timefmt::now();
            let lapsed = d.expiration.is_none_or(|exp| exp <= now);
            let why = if lapsed { "the channel had lapsed" } else { "before expiry" };
            if google.renew(d.user_id, &d.calendar_id, why).await && lapsed {
                // Nothing was pushed while there was no live channel.
                google.enqueue_for(d.user_id, SyncTrigger::CatchUp);
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
            _ = google.channels_changed.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One safety-net sync per connected user every `google.safety_net_interval`.
async fn safety_net(google: Arc<GoogleSync>) {
    let every = google.cfg.safety_net_interval.0;
    if every.is_zero() {
        tracing::info!("the Google safety-net sync is off (google.safety_net_interval = 0s)");
        return;
    }
    let mut shutdown = google.shutdown.clone();
    let mut due: HashMap<i64, Instant> = HashMap::new();
    loop {
        if google.shutting_down() {
            return;
        }
        match google.connected_users().await {
            Ok(users) => {
                let now = Instant::now();
                let users: HashSet<i64> = users.into_iter().collect();
                due.retain(|u, _| users.contains(u));
                for &user_id in &users {
                    // A random place in the cycle per user spreads the syncs over the interval.
                    let at = due.entry(user_id).or_insert_with(|| now + every.mul_f64(rand::random::<f64>()));
                    if *at <= now {
                        google.enqueue_for(user_id, SyncTrigger::SafetyNet);
                        // Keep the user's place in the cycle; turns missed while busy are skipped.
                        let late = (now - *at).as_nanos() % every.as_nanos();
                        *at = now + every - Duration::from_nanos(late as u64);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "google safety net: cannot read the connected users"),
        }
        let now = Instant::now();
        let wait = due.values().min().map_or(every, |t| t.saturating_duration_since(now)).min(every).min(SAFETY_NET_RECHECK);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Syncs asked for on a node that died before serving them (it counted the
/// request, or held the user's sync lease): after a lease time nobody holds
/// that lease, and the upkeep node runs them.
async fn orphaned_syncs(google: Arc<GoogleSync>) {
    let mut tick = tokio::time::interval(google.leases.ttl());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = google.shutdown.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if google.enabled() {
            google.passes.orphaned(&google).await;
        }
    }
}

/// Drop used sign-in states once they have expired.
async fn prune_states(google: Arc<GoogleSync>) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    let mut shutdown = google.shutdown.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if google.shutting_down() {
            return;
        }
        match google.store.prune_google_oauth_states().await {
            Ok(n) if n > 0 => tracing::debug!(pruned = n, "dropped expired Google sign-in states"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not drop expired Google sign-in states"),
        }
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
