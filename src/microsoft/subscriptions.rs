//! Graph subscriptions, one per ticked calendar, kept as channels of
//! provider `microsoft` (`channel_id`: the subscription's id, `token`: its
//! secret `clientState`). Created with the notification URL also as the
//! lifecycle URL; extended in place before expiry (a PATCH of its
//! expiration, which also reauthorizes it); recreated only when Graph says
//! it is gone (404). Never two live for one calendar: a new one is stored
//! as the calendar's active channel, and the one it replaces is deleted at
//! Graph and here. Changes of one user's subscriptions run one at a time on
//! this node, and under the user's short lease across nodes.

use std::sync::Arc;

use super::client::{CallError, NewSubscription};
use super::sync::SyncError;
use super::MicrosoftSync;
use crate::model::Provider;
use crate::provider::Secret;
use crate::store::microsoft_sync::OutlookCalendar;
use crate::store::timefmt;
use crate::store::watch_channels::NewChannel;

/// Leases of one user's subscription changes: `microsoft_subscriptions:<user id>`.
const SUBSCRIPTION_LEASE_PREFIX: &str = "microsoft_subscriptions:";

impl MicrosoftSync {
    /// When a subscription made (or extended) now expires.
    fn expiration(&self) -> time::OffsetDateTime {
        timefmt::now() + time::Duration::try_from(self.cfg.subscription_ttl.0).unwrap_or(time::Duration::days(2))
    }

    /// A call to Graph with the user's token; when Graph refuses the token
    /// before its time (401), the token counts as expired and the call is
    /// made once more with a fresh one. Returns the call's answer and the
    /// token it used.
    async fn with_token<T, F, Fut>(self: &Arc<Self>, user_id: i64, call: F) -> Result<(T, Secret), SyncError>
    where
        F: Fn(Secret) -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        let token = self.access_token(user_id).await?;
        match call(token.clone()).await {
            Err(CallError::Unauthorized) => {
                self.store.expire_microsoft_access_token(user_id, token.expose().to_string()).await?;
                let token = self.access_token(user_id).await?;
                Ok((call(token.clone()).await?, token))
            }
            other => Ok((other?, token)),
        }
    }

    /// Run `f` holding the user's subscription lock here and their lease
    /// across nodes; None when another node is changing them right now.
    async fn one_at_a_time<T>(self: &Arc<Self>, user_id: i64, f: impl std::future::Future<Output = T>) -> Option<T> {
        let lock = self.subscription_locks.lock(user_id);
        let _held = lock.lock().await;
        let fence = self.leases.try_take(&format!("{SUBSCRIPTION_LEASE_PREFIX}{user_id}")).await?;
        let out = crate::store::cluster::fenced(fence.clone(), f).await;
        self.leases.give_back(&fence).await;
        Some(out)
    }

    /// The user connected Outlook (or signed in with it, or was enabled
    /// again): subscriptions for their calendars, then a sync. In the
    /// background; a subscription that cannot be made now is retried by
    /// the renewal scheduler, and the sync runs either way.
    pub fn connected(self: &Arc<Self>, user_id: i64) {
        if !self.enabled() {
            return;
        }
        let me = self.clone();
        self.tasks.spawn(async move {
            match me.ensure_subscriptions(user_id).await {
                Ok(n) if n > 0 => tracing::info!(user = user_id, subscriptions = n, "Outlook connected: subscribed to its calendars"),
                Ok(_) | Err(SyncError::NotConnected) | Err(SyncError::ShuttingDown) => {}
                Err(e) => tracing::warn!(user = user_id, "Outlook connected, but a subscription could not be made yet: {e}"),
            }
            me.renewals.changed();
            me.enqueue_for(user_id, crate::provider::scheduler::SyncTrigger::CatchUp);
        });
    }

    /// A subscription for every ticked calendar that has no live one (after
    /// a connect, on start). Returns how many were made.
    pub async fn ensure_subscriptions(self: &Arc<Self>, user_id: i64) -> Result<usize, SyncError> {
        let token = self.access_token(user_id).await?;
        let calendars = self.store.outlook_calendars(user_id).await?;
        let calendars = if calendars.is_empty() { self.refresh_calendars(user_id, &token).await? } else { calendars };
        let mut made = 0;
        let mut first_error = None;
        for cal in calendars.into_iter().filter(|c| c.selected) {
            if self.store.active_channel(Provider::Microsoft, user_id, &cal.calendar_id).await?.is_some() {
                continue;
            }
            match self.subscribe(user_id, &cal).await {
                Ok(_) => made += 1,
                Err(e @ (SyncError::NotConnected | SyncError::NeedsReconnect | SyncError::ShuttingDown)) => return Err(e),
                // Another node is making this user's subscriptions right now.
                Err(SyncError::Busy) => {}
                Err(e) => {
                    // Failed renewals are the renewal scheduler's to retry
                    // (with backoff); without this one the calendar would
                    // stay without a subscription until the next restart.
                    self.renewals.failed(user_id, &cal.calendar_id, &e.to_string(), e.retry_after()).await;
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(made),
        }
    }

    /// Make a new subscription for the calendar; the one it replaces (if
    /// any) is deleted at Graph. Returns the new subscription's id.
    pub async fn subscribe(self: &Arc<Self>, user_id: i64, cal: &OutlookCalendar) -> Result<String, SyncError> {
        let me = self.clone();
        let cal = cal.clone();
        self.one_at_a_time(user_id, async move { me.subscribe_now(user_id, &cal).await }).await.unwrap_or(Err(SyncError::Busy))
    }

    async fn subscribe_now(self: &Arc<Self>, user_id: i64, cal: &OutlookCalendar) -> Result<String, SyncError> {
        let client_state = Secret::new(crate::auth::random_token(32));
        let new = NewSubscription {
            calendar: if cal.primary { "primary".into() } else { cal.calendar_id.clone() },
            notification_url: self.webhook_url.clone(),
            lifecycle_url: self.webhook_url.clone(),
            client_state: client_state.clone(),
            expiration: self.expiration(),
        };
        let (sub, token) = self
            .with_token(user_id, |token| {
                let (me, new) = (self.clone(), new.clone());
                async move { me.api.create_subscription(&token, &new).await }
            })
            .await?;
        let replaced = self
            .store
            .open_channel(NewChannel {
                provider: Provider::Microsoft,
                user_id,
                calendar_id: cal.calendar_id.clone(),
                channel_id: sub.id.clone(),
                token: client_state.expose().to_string(),
                webhook_url: self.webhook_url.clone(),
            })
            .await?;
        self.store.confirm_channel(&sub.id, None, sub.expires_at.clone()).await?;
        tracing::info!(
            user = user_id,
            calendar = %cal.calendar_id,
            subscription = %sub.id,
            expiration = sub.expires_at.as_deref().unwrap_or("unknown"),
            "created the Microsoft Graph subscription"
        );
        for old in replaced {
            self.drop_subscription(user_id, &token, &old.channel_id).await;
        }
        self.renewals.changed();
        Ok(sub.id)
    }

    /// Delete a subscription at Graph (gone already counts) and its row.
    async fn drop_subscription(&self, user_id: i64, token: &Secret, id: &str) {
        match self.api.delete_subscription(token, id).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(user = user_id, subscription = %id, "could not delete a Microsoft Graph subscription: {e}"),
        }
        if let Err(e) = self.store.delete_channel(id).await {
            tracing::warn!(user = user_id, subscription = %id, error = %e, "could not forget a Microsoft Graph subscription");
        }
    }

    /// Extend the calendar's subscription in place; recreate it when Graph
    /// no longer has it (or there is none). Returns whether it had to be
    /// recreated (changes may have gone unannounced meanwhile).
    pub async fn extend_subscription(self: &Arc<Self>, user_id: i64, calendar_id: &str) -> Result<bool, SyncError> {
        let me = self.clone();
        let calendar_id = calendar_id.to_string();
        self.one_at_a_time(user_id, async move { me.extend_now(user_id, &calendar_id).await }).await.unwrap_or(Err(SyncError::Busy))
    }

    async fn extend_now(self: &Arc<Self>, user_id: i64, calendar_id: &str) -> Result<bool, SyncError> {
        let current = self.store.active_channel(Provider::Microsoft, user_id, calendar_id).await?;
        if let Some(channel) = current {
            let extended = self
                .with_token(user_id, |token| {
                    let (me, id) = (self.clone(), channel.channel_id.clone());
                    async move { me.api.renew_subscription(&token, &id, me.expiration()).await }
                })
                .await;
            match extended.map(|(sub, _)| sub) {
                Ok(sub) => {
                    self.store.confirm_channel(&sub.id, None, sub.expires_at.clone()).await?;
                    tracing::info!(
                        user = user_id,
                        subscription = %sub.id,
                        expiration = sub.expires_at.as_deref().unwrap_or("unknown"),
                        "extended the Microsoft Graph subscription"
                    );
                    self.renewals.changed();
                    return Ok(false);
                }
                Err(SyncError::Api(CallError::NotFound)) => {
                    tracing::info!(user = user_id, subscription = %channel.channel_id, "Microsoft Graph no longer has the subscription; making a new one");
                    if let Err(e) = self.store.delete_channel(&channel.channel_id).await {
                        tracing::warn!(user = user_id, error = %e, "could not forget a gone Microsoft Graph subscription");
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let Some(cal) = self.store.outlook_calendars(user_id).await?.into_iter().find(|c| c.calendar_id == calendar_id && c.selected)
        else {
            return Ok(false);
        };
        self.subscribe_now(user_id, &cal).await?;
        Ok(true)
    }

    /// Delete every subscription of the user (disconnect, account disabled
    /// or removed), at Graph while the tokens still work, and here.
    pub async fn unsubscribe_all(self: &Arc<Self>, user_id: i64) -> usize {
        let channels = match self.store.user_channels(Provider::Microsoft, user_id, None).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(user = user_id, error = %e, "could not read the user's Microsoft Graph subscriptions");
                return 0;
            }
        };
        // The account may be disabled already: that is why these go.
        let token = self.access_token_to_clean_up(user_id).await.ok();
        for channel in &channels {
            match &token {
                Some(token) => self.drop_subscription(user_id, token, &channel.channel_id).await,
                // Without a token Graph cannot be told; the subscription lapses there on its own.
                None => {
                    if let Err(e) = self.store.delete_channel(&channel.channel_id).await {
                        tracing::warn!(user = user_id, error = %e, "could not forget a Microsoft Graph subscription");
                    }
                }
            }
        }
        self.renewals.forget(user_id, None);
        channels.len()
    }
}
