//! Push channels: register or replace the channel of one of a user's
//! ticked calendars (each has its own) and stop them, talking to Google
//! here and keeping the rows through the store (`store::watch_channels`).
//!
//! Replacing follows the order a renewal needs: the new row is written
//! (`active`) before `events.watch` is called, because Google's first `sync`
//! notification can arrive before the watch answer; the previous channel is
//! `retiring` meanwhile and notifications on either are accepted; then the old
//! one is stopped at Google and its row deleted. When to renew is decided
//! by [`super::upkeep`]; this module only does it.

use std::sync::Arc;

use serde::Serialize;

use super::client::CallError;
use super::sync::{Creds, SyncError};
use super::GoogleSync;
use crate::model::Provider;
use crate::provider::Secret;
use crate::store::timefmt;
use crate::store::watch_channels::{ChannelHandle, NewChannel};

/// A channel as the API shows it (never its token).
#[derive(Debug, Clone, Serialize)]
pub struct ChannelInfo {
    pub channel_id: String,
    pub calendar_id: String,
    pub resource_id: Option<String>,
    pub expiration: Option<String>,
    pub webhook_url: String,
    pub state: String,
}

/// Google's expiration (ms since the epoch, as a string or number) as a timestamp.
pub fn expiration_from_ms(v: Option<&serde_json::Value>) -> Option<String> {
    let ms: i64 = match v? {
        serde_json::Value::String(s) => s.trim().parse().ok()?,
        serde_json::Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    Some(timefmt::format(t))
}

impl GoogleSync {
    /// Register a new channel for every ticked calendar of the user (each
    /// replacing that calendar's previous one). The first error ends it.
    pub async fn replace_channels(self: &Arc<Self>, user_id: i64) -> Result<Vec<ChannelInfo>, SyncError> {
        let mut creds = self.credentials(user_id).await?.ok_or(SyncError::NotConnected)?;
        if creds.disabled {
            return Err(SyncError::NotConnected);
        }
        if creds.needs_reconnect {
            return Err(SyncError::NeedsReconnect);
        }
        let calendars = self.ticked_calendars(user_id, &mut creds, &mut false).await?;
        let mut out = Vec::with_capacity(calendars.len());
        for c in calendars {
            out.push(self.replace_channel(user_id, &c.calendar_id).await?);
        }
        Ok(out)
    }

    /// Register a new channel for one calendar of the user and stop the one it replaces.
    pub async fn replace_channel(self: &Arc<Self>, user_id: i64, calendar_id: &str) -> Result<ChannelInfo, SyncError> {
        let lock = self.channel_lock(user_id);
        let _held = lock.lock().await;
        let mut creds = self.credentials(user_id).await?.ok_or(SyncError::NotConnected)?;
        if creds.needs_reconnect {
            return Err(SyncError::NeedsReconnect);
        }
        if creds.disabled {
            return Err(SyncError::NotConnected);
        }
        let channel_id = uuid::Uuid::new_v4().to_string();
        let token = Secret::new(crate::auth::random_token(32));
        let calendar_id = calendar_id.to_string();
        let webhook_url = self.webhook_url.clone();
        let access = self.access_token(user_id, &mut creds, false).await?;

        let previous = self
            .store
            .open_channel(NewChannel {
                provider: Provider::Google,
                user_id,
                calendar_id: calendar_id.clone(),
                channel_id: channel_id.clone(),
                token: token.expose().to_string(),
                webhook_url: webhook_url.clone(),
            })
            .await?;

        let ttl = self.cfg.channel_ttl.as_secs().max(1);
        let mut refreshed = false;
        let mut attempt = 0u32;
        let mut access = access;
        let watched = loop {
            match self.api.watch(&access, &calendar_id, &channel_id, &token, &webhook_url, ttl).await {
                Ok(w) => break Ok(w),
                Err(CallError::Unauthorized) if !refreshed => {
                    refreshed = true;
                    match self.access_token(user_id, &mut creds, true).await {
                        Ok(a) => access = a,
                        Err(e) => break Err(e),
                    }
                }
                Err(e) if e.retryable() && attempt < 3 => {
                    let wait = super::sync::backoff(attempt, &e);
                    attempt += 1;
                    if let Err(e) = self.pause(wait).await {
                        break Err(e);
                    }
                }
                Err(e) => break Err(SyncError::Api(e)),
            }
        };
        let watched = match watched {
            Ok(w) => w,
            Err(e) => {
                // Undo: drop the new row, the previous channel stays in charge.
                let undo = self.store.abandon_channel(Provider::Google, user_id, &calendar_id, &channel_id).await;
                if let Err(u) = undo {
                    tracing::warn!(user = user_id, error = %u, "could not undo a failed channel registration");
                }
                tracing::warn!(user = user_id, error = %e, "Google refused to register the push channel");
                return Err(e);
            }
        };
        if watched.id.as_deref().is_some_and(|id| id != channel_id) {
            tracing::warn!(user = user_id, "Google answered the watch with another channel id");
        }
        let expiration = expiration_from_ms(watched.expiration.as_ref());
        let resource_id = watched.resource_id.clone();
        self.store.confirm_channel(&channel_id, resource_id.clone(), expiration.clone()).await?;
        tracing::info!(user = user_id, channel = %channel_id, expiration = expiration.as_deref().unwrap_or("unknown"), "registered Google push channel");

        for old in previous {
            self.stop_one(user_id, &mut creds, &old).await;
        }
        // The renewal scheduler plans from the stored expirations; tell it.
        self.renewals.changed();
        Ok(ChannelInfo { channel_id, calendar_id, resource_id, expiration, webhook_url, state: "active".into() })
    }

    /// Stop every channel of the user (all their calendars) at Google and
    /// delete the rows. Returns how many there were.
    pub async fn stop_channels(self: &Arc<Self>, user_id: i64) -> Result<usize, SyncError> {
        self.stop_channels_of(user_id, None).await
    }

    /// Stop the channels of one calendar of the user (it was unticked).
    pub async fn stop_calendar_channels(self: &Arc<Self>, user_id: i64, calendar_id: &str) -> Result<usize, SyncError> {
        self.stop_channels_of(user_id, Some(calendar_id.to_string())).await
    }

    async fn stop_channels_of(self: &Arc<Self>, user_id: i64, calendar_id: Option<String>) -> Result<usize, SyncError> {
        let lock = self.channel_lock(user_id);
        let _held = lock.lock().await;
        let channels = self.store.user_channels(Provider::Google, user_id, calendar_id.as_deref()).await?;
        let mut creds = self.credentials(user_id).await?.ok_or(SyncError::NotConnected)?;
        let n = channels.len();
        for channel in channels {
            self.stop_one(user_id, &mut creds, &channel).await;
        }
        // Push was turned off: a pending renewal retry must not bring it back.
        self.renewals.forget(user_id, calendar_id.as_deref());
        Ok(n)
    }

    /// Stop channels a previous run left behind: `retiring` rows (a renewal
    /// interrupted between registering the new channel and stopping the old
    /// one) and channels of a calendar that is not ticked (any more, or
    /// named `primary` before the upgrade that lists calendars by id).
    /// Orphaned channels keep firing at Google's end. Returns how many.
    pub async fn stop_leftover_channels(self: &Arc<Self>, user_id: i64) -> Result<usize, SyncError> {
        let lock = self.channel_lock(user_id);
        let _held = lock.lock().await;
        let channels = self.store.leftover_google_channels(user_id).await?;
        if channels.is_empty() {
            return Ok(0);
        }
        let mut creds = self.credentials(user_id).await?.ok_or(SyncError::NotConnected)?;
        let n = channels.len();
        for channel in channels {
            tracing::info!(user = user_id, channel = %channel.channel_id, "stopping a Google push channel left over from before the restart");
            self.stop_one(user_id, &mut creds, &channel).await;
        }
        Ok(n)
    }

    /// Stop one channel at Google (best effort: a channel Google no longer
    /// knows is as good as stopped) and delete its row.
    async fn stop_one(&self, user_id: i64, creds: &mut Creds, channel: &ChannelHandle) {
        let channel_id = channel.channel_id.as_str();
        if let Some(resource_id) = channel.resource_id.as_deref() {
            let stopped = match self.access_token(user_id, creds, false).await {
                Ok(access) => self.api.stop_channel(&access, channel_id, resource_id).await.map_err(SyncError::Api),
                Err(e) => Err(e),
            };
            match stopped {
                Ok(()) | Err(SyncError::Api(CallError::NotFound)) => {
                    tracing::info!(user = user_id, channel = %channel_id, "stopped Google push channel")
                }
                Err(e) => {
                    tracing::warn!(user = user_id, channel = %channel_id, error = %e, "could not stop a Google push channel; deleting it here anyway")
                }
            }
        }
        if let Err(e) = self.store.delete_channel(channel_id).await {
            tracing::warn!(user = user_id, channel = %channel_id, error = %e, "could not delete a stopped channel");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn expiration_is_milliseconds() {
        let v = serde_json::json!("1426325213000");
        assert_eq!(super::expiration_from_ms(Some(&v)).as_deref(), Some("2015-03-14T09:26:53.000Z"));
        assert_eq!(super::expiration_from_ms(Some(&serde_json::json!("soon"))), None);
        assert_eq!(super::expiration_from_ms(None), None);
    }
}
