//! The reads behind the webhook health alerts (`ops::alerts`), for each
//! calendar provider the same way: which channels are about to expire, who
//! has no channel, who must reconnect, whose pushes stopped, whose renewals
//! fail; and how many Calendly deliveries were refused. What each finding means is decided in `ops`.

use time::OffsetDateTime;

use super::error::StoreResult;
use super::provider_accounts::{provider_sql, ProviderSql};
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

fn user(r: &Row) -> StoreResult<AlertUser> {
    Ok(AlertUser { id: r.get(0)?, email: r.get(1)? })
}

/// One provider's findings. Flags are tested as `flag` / `NOT flag`:
/// boolean on PostgreSQL, 0/1 on SQLite. A user's account columns are
/// reached by the provider's join after `users u`.
fn provider_facts(conn: &Conn<'_>, p: &ProviderSql, window: &AlertWindow) -> StoreResult<ProviderFacts> {
    let (provider, join, status, calendars) = (p.provider.as_str(), p.join, p.status_table, p.calendars);
    let (connected, revoked) = (p.connected(), p.needs_reconnect());
    let soon = timefmt::format(window.expiring_before);
    let expiring_channels = conn.query_map(
        &format!(
            "SELECT c.user_id, u.email, c.channel_id, c.expiration FROM calendar_watch_channels c JOIN users u ON u.id = c.user_id {join}
             WHERE c.provider = ?2 AND c.state = 'active' AND c.expiration IS NOT NULL AND c.expiration < ?1
               AND NOT {revoked} ORDER BY c.user_id"
        ),
        args![soon, provider],
        |r| Ok(ExpiringChannel { user: user(r)?, channel_id: r.get(2)?, expiration: r.get(3)? }),
    )?;
    let missing_channels = conn.query_map(
        &format!(
            "SELECT u.id, u.email FROM users u {join} WHERE {connected} AND u.status = 'active'
             AND (NOT EXISTS (SELECT 1 FROM calendar_watch_channels c WHERE c.provider = ?1 AND c.user_id = u.id)
                  OR EXISTS (SELECT 1 FROM {calendars} g WHERE g.user_id = u.id AND g.selected
                             AND NOT EXISTS (SELECT 1 FROM calendar_watch_channels c
                                             WHERE c.provider = ?1 AND c.user_id = u.id AND c.calendar_id = g.calendar_id)))
             ORDER BY u.id"
        ),
        args![provider],
        user,
    )?;
    let needs_reconnect =
        conn.query_map(&format!("SELECT u.id, u.email FROM users u {join} WHERE {revoked} ORDER BY u.id"), args![], user)?;
    // Safety-net changes after the last notification, or with no notification ever.
    let quiet_since = timefmt::format(window.quiet_since);
    let pushes_stopped = conn.query_map(
        &format!(
            "SELECT s.user_id, u.email FROM {status} s JOIN users u ON u.id = s.user_id {join}
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
            let google = provider_facts(conn, provider_sql(Provider::Google), &window)?;
            let microsoft = provider_facts(conn, provider_sql(Provider::Microsoft), &window)?;
            let calendly_rejected = rejections::count_since(conn, &timefmt::format(window.rejections_since))?;
            Ok(AlertFacts { google, microsoft, calendly_rejected })
        })
        .await
    }
}
