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
//! When renewals run, how failed ones are retried, and the safety net's
//! schedule are the providers' shared [`crate::provider::upkeep`]; this
//! module says what they mean for Google. Every loop ends when the server
//! shuts down.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::sync::SyncError;
use super::GoogleSync;
use crate::model::Provider;
use crate::provider::scheduler::SyncTrigger;
use crate::provider::upkeep::{orphaned_syncs, renewals, safety_net, views_from, ChannelView, Channels, Renewals};
use crate::store::{timefmt, StoreResult};

/// How often used sign-in states are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
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
        let every = google.cfg.safety_net_interval.0;
        let net = async {
            if every.is_zero() {
                tracing::info!("the Google safety-net sync is off (google.safety_net_interval = 0s)");
            } else {
                safety_net(google.clone(), every).await;
            }
        };
        tokio::join!(net, renewals(google.clone()), orphaned_syncs(google.clone(), google.passes.clone(), google.leases.ttl()));
    };
    tokio::join!(prune_states(google.clone()), upkeep);
}

impl GoogleSync {
    /// Each ticked calendar of each connected user with its active, fully
    /// registered channel (the one expiring last, should there be two).
    async fn channel_views(&self) -> StoreResult<Vec<ChannelView>> {
        Ok(views_from(self.store.ticked_calendar_channels(Provider::Google).await?))
    }

    /// Make sure every connected user's calendar list has been read (after
    /// the upgrade that brought several calendars, nobody's has), so their
    /// ticked calendars are known. Returns the connected users.
    async fn resolve_calendars(self: &Arc<Self>) -> Result<Vec<i64>, SyncError> {
        let users = self.store.connected_users(Provider::Google).await?;
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

    /// On start: stop leftovers (and the channels of users disabled while
    /// no server ran), new channels where needed, then a sync for every
    /// connected user.
    pub(crate) async fn catch_up(self: &Arc<Self>) {
        match self.store.disabled_users_with_channels(Provider::Google).await {
            Ok(disabled) => {
                for user_id in disabled {
                    match self.stop_channels(user_id).await {
                        Ok(n) => tracing::info!(user = user_id, channels = n, "google catch-up: a disabled user's channels stopped"),
                        Err(e) => {
                            tracing::warn!(user = user_id, error = %e, "google catch-up: a disabled user's channels could not be stopped")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "google catch-up: cannot read disabled users' channels"),
        }
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
                (Some(exp), _) if self.renewals.renew_at(exp, v.registered_at) <= now => Some("the channel is due for renewal"),
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
            self.renew_channel(user_id, &calendar_id, why).await;
            renewed.insert(user_id);
        }
        for user_id in renewed {
            self.enqueue_for(user_id, SyncTrigger::CatchUp);
        }
    }

    /// Replace the channel of one of the user's calendars and record how it
    /// went. Returns whether it worked.
    pub(crate) async fn renew_channel(self: &Arc<Self>, user_id: i64, calendar_id: &str, why: &str) -> bool {
        match self.replace_channel(user_id, calendar_id).await {
            Ok(info) => {
                tracing::info!(
                    user = user_id,
                    channel = %info.channel_id,
                    expiration = info.expiration.as_deref().unwrap_or("unknown"),
                    "renewed the Google push channel ({why})"
                );
                self.renewals.succeeded(user_id, calendar_id).await;
                true
            }
            Err(SyncError::ShuttingDown) => false,
            Err(e @ (SyncError::NeedsReconnect | SyncError::NotConnected)) => {
                self.renewals.forget(user_id, Some(calendar_id));
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
        self.renewals.failed(user_id, calendar_id, error, None).await;
    }
}

impl Channels for GoogleSync {
    fn renewals(&self) -> &Renewals {
        &self.renewals
    }

    async fn views(&self) -> StoreResult<Vec<ChannelView>> {
        self.channel_views().await
    }

    async fn renew(self: &Arc<Self>, user_id: i64, calendar_id: &str, why: &'static str) -> bool {
        self.renew_channel(user_id, calendar_id, why).await
    }

    async fn connected_users(&self) -> StoreResult<Vec<i64>> {
        self.store.connected_users(Provider::Google).await
    }

    fn enqueue_for(self: &Arc<Self>, user_id: i64, trigger: SyncTrigger) {
        GoogleSync::enqueue_for(self, user_id, trigger);
    }

    fn shutdown(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.clone()
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
