//! The reads behind the webhook health alerts (`ops::alerts`), for each
//! calendar provider the same way: which channels are about to expire, who
//! has no channel, who must reconnect, whose pushes stopped, whose renewals
//! fail; and how many Calendly deliveries were refused. What each finding means is decided in `ops`.

use time::OffsetDateTime;

use super::cluster::sync_status_table;
use super::error::StoreResult;
use super::sql::{args, Conn, Row};
use super::{rejections, timefmt, Store};
use crate::model::Provider;

/// A user as an alert names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertUser {
    pub id: i64,
    pub email: String,
}

/// An active push channel that expires before the warning time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringChannel {
    pub user: AlertUser,
    pub channel_id: String,
    /// As stored (UTC, milliseconds, `Z`).
    pub expiration: String,
}

/// A user whose channel renewals keep failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailingRenewal {
    pub user: AlertUser,
    pub failures: i64,
    pub last_error: String,
}

/// The times the alert reads are relative to.
#[derive(Debug, Clone, Copy)]
pub struct AlertWindow {
    /// Active channels expiring before this are reported.
    pub expiring_before: OffsetDateTime,
    /// No notification since this, while safety-net syncs found changes: pushes stopped.
    pub quiet_since: OffsetDateTime,
    /// Calendly rejections counted from here on.
    pub rejections_since: OffsetDateTime,
}

/// One calendar provider's findings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderFacts {
    /// Active channels about to expire, of users who need no reconnect.
    pub expiring_channels: Vec<ExpiringChannel>,
    /// Connected, active users with no channel at all, or none for a ticked calendar.
    pub missing_channels: Vec<AlertUser>,
    /// Users whose access was revoked or expired.
    pub needs_reconnect: Vec<AlertUser>,
    /// Connected users with no notification for long while safety-net syncs keep finding changes.
    pub pushes_stopped: Vec<AlertUser>,
    pub failing_renewals: Vec<FailingRenewal>,
}

/// Everything the alert check reads, in one read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFacts {
    pub google: ProviderFacts,
    pub microsoft: ProviderFacts,
    /// Calendly deliveries refused since `rejections_since`.
    pub calendly_rejected: i64,
}

/// Where a provider keeps what its alerts read.
struct ProviderTables {
    provider: Provider,
    /// A condition on `users u`: connected, and access not revoked.
    connected: &'static str,
    /// A condition on `users u`: access not known to be revoked.
    not_revoked: &'static str,
    /// `id, email` of the users who must reconnect.
    needs_reconnect: &'static str,
    /// The provider's calendar table (`user_id`, `calendar_id`, `selected`).
    calendars: &'static str,
}

const GOOGLE: ProviderTables = ProviderTables {
    provider: Provider::Google,
    connected: "u.google_refresh_token IS NOT NULL AND NOT u.google_needs_reconnect",
    not_revoked: "NOT u.google_needs_reconnect",
    needs_reconnect: "SELECT id, email FROM users WHERE google_needs_reconnect ORDER BY id",
    calendars: "google_calendars",
};

const MICROSOFT: ProviderTables = ProviderTables {
    provider: Provider::Microsoft,
    connected:
        "EXISTS (SELECT 1 FROM microsoft_accounts a WHERE a.user_id = u.id AND a.refresh_token IS NOT NULL AND NOT a.needs_reconnect)",
    not_revoked: "NOT EXISTS (SELECT 1 FROM microsoft_accounts a WHERE a.user_id = u.id AND a.needs_reconnect)",
    needs_reconnect:
        "SELECT u.id, u.email FROM microsoft_accounts a JOIN users u ON u.id = a.user_id WHERE a.needs_reconnect ORDER BY u.id",
    calendars: "microsoft_calendars",
};

fn user(r: &Row) -> StoreResult<AlertUser> {
    Ok(AlertUser { id: r.get(0)?, email: r.get(1)? })
}

/// One provider's findings. Flags are tested as `flag` / `NOT flag`:
/// boolean on PostgreSQL, 0/1 on SQLite.
fn provider_facts(conn: &Conn<'_>, t: &ProviderTables, window: &AlertWindow) -> StoreResult<ProviderFacts> {
    let (provider, connected, not_revoked, calendars) = (t.provider.as_str(), t.connected, t.not_revoked, t.calendars);
    let status = sync_status_table(t.provider);
    let soon = timefmt::format(window.expiring_before);
    let expiring_channels = conn.query_map(
        &format!(
            "SELECT c.user_id, u.email, c.channel_id, c.expiration FROM calendar_watch_channels c JOIN users u ON u.id = c.user_id
             WHERE c.provider = ?2 AND c.state = 'active' AND c.expiration IS NOT NULL AND c.expiration < ?1
               AND {not_revoked} ORDER BY c.user_id"
        ),
        args![soon, provider],
        |r| Ok(ExpiringChannel { user: user(r)?, channel_id: r.get(2)?, expiration: r.get(3)? }),
    )?;
    let missing_channels = conn.query_map(
        &format!(
            "SELECT u.id, u.email FROM users u WHERE {connected} AND u.status = 'active'
             AND (NOT EXISTS (SELECT 1 FROM calendar_watch_channels c WHERE c.provider = ?1 AND c.user_id = u.id)
                  OR EXISTS (SELECT 1 FROM {calendars} g WHERE g.user_id = u.id AND g.selected
                             AND NOT EXISTS (SELECT 1 FROM calendar_watch_channels c
                                             WHERE c.provider = ?1 AND c.user_id = u.id AND c.calendar_id = g.calendar_id)))
             ORDER BY u.id"
        ),
        args![provider],
        user,
    )?;
    let needs_reconnect = conn.query_map(t.needs_reconnect, args![], user)?;
    // Safety-net changes after the last notification, or with no notification ever.
    let quiet_since = timefmt::format(window.quiet_since);
    let pushes_stopped = conn.query_map(
        &format!(
            "SELECT s.user_id, u.email FROM {status} s JOIN users u ON u.id = s.user_id
             WHERE {connected}
               AND (s.last_notification_at IS NULL OR s.last_notification_at < ?1)
               AND s.last_safety_net_changes_at IS NOT NULL
               AND (s.last_notification_at IS NULL OR s.last_safety_net_changes_at > s.last_notification_at)
             ORDER BY s.user_id"
        ),
        args![quiet_since],
        user,
    )?;
    let failing_renewals = conn.query_map(
        &format!(
            "SELECT s.user_id, u.email, s.renewal_failures, COALESCE(s.last_renewal_error, '') FROM {status} s JOIN users u ON u.id = s.user_id
             WHERE s.renewal_failures > 0 ORDER BY s.user_id"
        ),
        args![],
        |r| Ok(FailingRenewal { user: user(r)?, failures: r.get(2)?, last_error: r.get(3)? }),
    )?;
    Ok(ProviderFacts { expiring_channels, missing_channels, needs_reconnect, pushes_stopped, failing_renewals })
}

impl Store {
    /// Read what the webhook health alerts are decided from.
    pub async fn alert_facts(&self, window: AlertWindow) -> StoreResult<AlertFacts> {
        self.read(move |conn| {
            let google = provider_facts(conn, &GOOGLE, &window)?;
            let microsoft = provider_facts(conn, &MICROSOFT, &window)?;
            let calendly_rejected = rejections::count_since(conn, &timefmt::format(window.rejections_since))?;
            Ok(AlertFacts { google, microsoft, calendly_rejected })
        })
        .await
    }
}
