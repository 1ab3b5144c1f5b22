//! The background work that keeps the Outlook sync from failing quietly,
//! on the node that holds the `microsoft_upkeep` lease. The schedules are
//! the providers' shared ones ([`crate::provider::upkeep`]); this module
//! says what they mean for Graph:
//!
//! - **Catch-up on start** (or on taking the lease over): every connected
//!   user's calendar list is read, each ticked calendar gets a subscription
//!   when it has no live one, one is due, or it was made for another
//!   webhook address, and every connected user is synced (their delta links
//!   make that cheap).
//! - **Renewal before expiry**: a subscription is extended in place
//!   `microsoft.renew_before` ahead (at the latest halfway through its
//!   life), recreated only when Graph says it is gone; failures back off
//!   and show to admins.
//! - **Safety net**: a delta sync per connected user every
//!   `microsoft.safety_net_interval`, staggered.
//! - Sync requests counted by a node that died are served here.

use std::sync::Arc;

use super::sync::SyncError;
use super::MicrosoftSync;
use crate::model::Provider;
use crate::provider::scheduler::SyncTrigger;
use crate::provider::upkeep::{orphaned_syncs, renewals, safety_net, views_from, ChannelView, Channels, Renewals};
use crate::store::{timefmt, StoreResult};

/// Run the upkeep until shutdown (or until this node loses the lease).
pub async fn run(ms: Arc<MicrosoftSync>) {
    if !ms.enabled() {
        return;
    }
    ms.catch_up().await;
    let every = ms.cfg.safety_net_interval.0;
    let net = async {
        if every.is_zero() {
            tracing::info!("the Microsoft safety-net sync is off (microsoft.safety_net_interval = 0s)");
        } else {
            safety_net(ms.clone(), every).await;
        }
    };
    tokio::join!(net, renewals(ms.clone()), orphaned_syncs(ms.clone(), ms.passes.clone(), ms.leases.ttl()));
}

impl MicrosoftSync {
    async fn channel_views(&self) -> StoreResult<Vec<ChannelView>> {
        Ok(views_from(self.store.ticked_calendar_channels(Provider::Microsoft).await?))
    }

    /// On start: the subscriptions of users disabled while no server ran
    /// deleted, calendar lists, subscriptions where needed, then a sync of
    /// every connected user.
    pub(crate) async fn catch_up(self: &Arc<Self>) {
        match self.store.disabled_users_with_channels(Provider::Microsoft).await {
            Ok(disabled) => {
                for user_id in disabled {
                    let n = self.unsubscribe_all(user_id).await;
                    tracing::info!(user = user_id, subscriptions = n, "microsoft catch-up: a disabled user's subscriptions deleted");
                }
            }
            Err(e) => tracing::warn!(error = %e, "microsoft catch-up: cannot read disabled users' subscriptions"),
        }
        let users = match self.store.connected_users(Provider::Microsoft).await {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "microsoft catch-up: cannot read the connected users; relying on renewal and the safety net");
                return;
            }
        };
        if users.is_empty() {
            return;
        }
        for &user_id in &users {
            if self.shutting_down() {
                return;
            }
            let listed = async {
                let token = self.access_token(user_id).await?;
                self.refresh_calendars(user_id, &token).await
            };
            if let Err(e) = listed.await {
                tracing::warn!(user = user_id, "microsoft catch-up: cannot read the user's calendar list: {e}");
            }
        }
        let views = match self.channel_views().await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "microsoft catch-up: cannot read the subscriptions; relying on renewal and the safety net");
                return;
            }
        };
        let now = timefmt::now();
        let mut replaced = 0;
        for v in &views {
            // A subscription's URL is fixed at creation: another address needs a new one.
            let moved = v.webhook_url.as_deref().is_some_and(|url| url != self.webhook_url);
            let why = match v.expiration {
                None => "no live subscription",
                Some(exp) if exp <= now => "the subscription expired",
                _ if moved => "the webhook address changed",
                Some(exp) if self.renewals.renew_at(exp, v.registered_at) <= now => "the subscription is due for renewal",
                _ => continue,
            };
            if self.shutting_down() {
                return;
            }
            let made = if moved {
                match self.store.outlook_calendars(v.user_id).await {
                    Ok(cals) => match cals.into_iter().find(|c| c.calendar_id == v.calendar_id) {
                        Some(cal) => self.subscribe(v.user_id, &cal).await.map(|_| true),
                        None => Ok(false),
                    },
                    Err(e) => Err(SyncError::Store(e)),
                }
            } else {
                self.extend_subscription(v.user_id, &v.calendar_id).await
            };
            match made {
                Ok(_) => {
                    replaced += 1;
                    self.renewals.succeeded(v.user_id, &v.calendar_id).await;
                }
                Err(e) => self.renewals.failed(v.user_id, &v.calendar_id, &format!("{e} ({why})"), e.retry_after()).await,
            }
        }
        for &user_id in &users {
            self.enqueue_for(user_id, SyncTrigger::CatchUp);
        }
        tracing::info!(
            users = users.len(),
            subscriptions = replaced,
            "microsoft catch-up (start, or this node took the upkeep lease over): syncing every connected user"
        );
    }
}

impl Channels for MicrosoftSync {
    fn renewals(&self) -> &Renewals {
        &self.renewals
    }

    async fn views(&self) -> StoreResult<Vec<ChannelView>> {
        self.channel_views().await
    }

    async fn renew(self: &Arc<Self>, user_id: i64, calendar_id: &str, why: &'static str) -> bool {
        match self.extend_subscription(user_id, calendar_id).await {
            Ok(recreated) => {
                self.renewals.succeeded(user_id, calendar_id).await;
                if recreated {
                    // Graph had dropped it: what changed meanwhile was not announced.
                    self.enqueue_for(user_id, SyncTrigger::CatchUp);
                }
                true
            }
            Err(SyncError::ShuttingDown) => false,
            Err(e @ (SyncError::NeedsReconnect | SyncError::NotConnected)) => {
                self.renewals.forget(user_id, Some(calendar_id));
                tracing::warn!(user = user_id, "microsoft subscription renewal skipped ({why}): {e}");
                false
            }
            Err(e) => {
                self.renewals.failed(user_id, calendar_id, &e.to_string(), e.retry_after()).await;
                false
            }
        }
    }

    async fn connected_users(&self) -> StoreResult<Vec<i64>> {
        self.store.connected_users(Provider::Microsoft).await
    }

    fn enqueue_for(self: &Arc<Self>, user_id: i64, trigger: SyncTrigger) {
        MicrosoftSync::enqueue_for(self, user_id, trigger);
    }

    fn shutdown(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.clone()
    }
}
