//! The rows of the admins' health report of each calendar provider: per
//! user, how their sync is doing (from the provider's `*_sync_status`,
//! written through [`sync_status`](super::sync_status)), and every channel
//! of the provider. Never a token.

use serde::Serialize;

use super::provider_accounts::provider_sql;
use super::sql::args;

use super::{Store, StoreResult};
use crate::model::Provider;

/// One user's row of a provider's health report.
#[derive(Debug, Clone, Serialize)]
pub struct UserSyncStatus {
    pub user_id: i64,
    pub email: String,
    pub connected: bool,
    pub needs_reconnect: bool,
    pub has_sync_token: bool,
    pub last_notification_at: Option<String>,
    pub notifications: i64,
    pub last_sync_at: Option<String>,
    pub last_sync_kind: Option<String>,
    pub last_sync_outcome: Option<String>,
    pub last_error: Option<String>,
    pub last_full_sync_at: Option<String>,
    pub syncs: i64,
    pub failed_syncs: i64,
    pub created: i64,
    pub updated: i64,
    pub canceled: i64,
    pub renewals: i64,
    pub last_renewal_at: Option<String>,
    pub renewal_failures: i64,
    pub last_renewal_error: Option<String>,
    pub last_renewal_error_at: Option<String>,
    pub next_renewal_attempt_at: Option<String>,
    pub safety_net_syncs: i64,
    pub safety_net_changes: i64,
    pub last_safety_net_at: Option<String>,
    pub last_safety_net_changes_at: Option<String>,
}

/// A push channel as admins see it (never its token).
#[derive(Debug, Clone, Serialize)]
pub struct WatchChannelStatus {
    pub user_id: i64,
    pub channel_id: String,
    pub calendar_id: String,
    pub resource_id: Option<String>,
    pub expiration: Option<String>,
    pub state: String,
    pub webhook_url: String,
    pub created_at: String,
}

/// The rows of a provider's health report.
#[derive(Debug, Clone)]
pub struct HealthRows {
    /// Users who connected Google once, or have a status row.
    pub users: Vec<UserSyncStatus>,
    pub channels: Vec<WatchChannelStatus>,
    pub last_notification_at: Option<String>,
}

impl Store {
    /// Every connected (or once connected) user's status and every channel of the provider.
    pub async fn health_rows(&self, provider: Provider) -> StoreResult<HealthRows> {
        let p = provider_sql(provider);
        let (account, status, calendars, sync_state) = (p.join, p.status_table, p.calendars, p.sync_state);
        let (connected, needs_reconnect, linked) =
            (format!("{} IS NOT NULL", p.column(p.columns.refresh_token)), p.needs_reconnect(), p.linked);
        let has_sync_token =
            format!("EXISTS (SELECT 1 FROM {calendars} g WHERE g.user_id = u.id AND g.selected AND g.{sync_state} IS NOT NULL)");
        let known = format!("{linked} OR s.user_id IS NOT NULL");
        self.read(move |conn| {
            let users = conn.query_map(
                &format!(
                "SELECT u.id, u.email, {connected}, {needs_reconnect},
                        {has_sync_token},
                        s.last_notification_at, COALESCE(s.notifications, 0), s.last_sync_at, s.last_sync_kind, s.last_sync_outcome,
                        s.last_error, s.last_full_sync_at, COALESCE(s.syncs, 0), COALESCE(s.failed_syncs, 0),
                        COALESCE(s.created, 0), COALESCE(s.updated, 0), COALESCE(s.canceled, 0),
                        COALESCE(s.renewals, 0), s.last_renewal_at, COALESCE(s.renewal_failures, 0), s.last_renewal_error,
                        s.last_renewal_error_at, s.next_renewal_attempt_at,
                        COALESCE(s.safety_net_syncs, 0), COALESCE(s.safety_net_changes, 0), s.last_safety_net_at, s.last_safety_net_changes_at
                 FROM users u {account} LEFT JOIN {status} s ON s.user_id = u.id
                 WHERE {known}
                 ORDER BY u.id"
                ),
                args![],
                |r| {
                    Ok(UserSyncStatus {
                        user_id: r.get(0)?,
                        email: r.get(1)?,
                        connected: r.get(2)?,
                        needs_reconnect: r.get(3)?,
                        has_sync_token: r.get(4)?,
                        last_notification_at: r.get(5)?,
                        notifications: r.get(6)?,
                        last_sync_at: r.get(7)?,
                        last_sync_kind: r.get(8)?,
                        last_sync_outcome: r.get(9)?,
                        last_error: r.get(10)?,
                        last_full_sync_at: r.get(11)?,
                        syncs: r.get(12)?,
                        failed_syncs: r.get(13)?,
                        created: r.get(14)?,
                        updated: r.get(15)?,
                        canceled: r.get(16)?,
                        renewals: r.get(17)?,
                        last_renewal_at: r.get(18)?,
                        renewal_failures: r.get(19)?,
                        last_renewal_error: r.get(20)?,
                        last_renewal_error_at: r.get(21)?,
                        next_renewal_attempt_at: r.get(22)?,
                        safety_net_syncs: r.get(23)?,
                        safety_net_changes: r.get(24)?,
                        last_safety_net_at: r.get(25)?,
                        last_safety_net_changes_at: r.get(26)?,
                    })
                },
            )?;
            let channels = conn.query_map(
                "SELECT user_id, channel_id, calendar_id, resource_id, expiration, state, webhook_url, created_at
                 FROM calendar_watch_channels WHERE provider = ?1 ORDER BY user_id, id",
                args![provider.as_str()],
                |r| {
                    Ok(WatchChannelStatus {
                        user_id: r.get(0)?,
                        channel_id: r.get(1)?,
                        calendar_id: r.get(2)?,
                        resource_id: r.get(3)?,
                        expiration: r.get(4)?,
                        state: r.get(5)?,
                        webhook_url: r.get(6)?,
                        created_at: r.get(7)?,
                    })
                },
            )?;
            let last_notification_at = conn.value(&format!("SELECT MAX(last_notification_at) FROM {status}"), args![])?;
            Ok(HealthRows { users, channels, last_notification_at })
        })
        .await
    }
}
