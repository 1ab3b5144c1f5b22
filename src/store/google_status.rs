//! `google_sync_status`: per user, how their Google sync is doing (last
//! notification, last pass and its outcome, channel renewals, what the
//! safety net found), and the rows of the admins' Google health report.
//! Never a token.

use serde::Serialize;

use super::sql::{args, Conn};

use super::{Store, StoreResult};
use crate::model::{SyncKind, SyncOutcome};

/// How one sync pass went, for the user's status row.
#[derive(Debug, Clone)]
pub struct SyncRecord {
    /// What the pass did; None when it failed before it knew.
    pub kind: Option<SyncKind>,
    pub outcome: SyncOutcome,
    pub error: Option<String>,
    /// The pass listed a calendar in full (and succeeded).
    pub full: bool,
    /// The pass was the safety net's.
    pub safety_net: bool,
    pub created: u64,
    pub updated: u64,
    pub canceled: u64,
    /// Meeting changes the pass made (created, updated, canceled, removed).
    pub changes: u64,
}

/// A channel renewal that failed, and when it is tried again.
#[derive(Debug, Clone)]
pub struct RenewalFailure {
    /// Failures in a row.
    pub failures: u32,
    pub error: String,
    pub next_attempt_at: Option<String>,
}

/// One user's row of the Google health report.
#[derive(Debug, Clone, Serialize)]
pub struct GoogleUserStatus {
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

/// The rows of the Google health report.
#[derive(Debug, Clone)]
pub struct GoogleHealthRows {
    /// Users who connected Google once, or have a status row.
    pub users: Vec<GoogleUserStatus>,
    pub channels: Vec<WatchChannelStatus>,
    pub last_notification_at: Option<String>,
}

/// The `last_sync_outcome` column's words, which admins read: a failure has
/// been stored as `failed` since the column exists (the metric says `error`).
fn stored_outcome(outcome: SyncOutcome) -> &'static str {
    match outcome {
        SyncOutcome::Error => "failed",
        other => other.as_str(),
    }
}

impl Store {
    /// Google pushed for this user.
    pub async fn record_google_notification(&self, user_id: i64) -> StoreResult<()> {
        self.writer
            .write(move |tx| {
                tx.conn().execute(
                    "INSERT INTO google_sync_status (user_id, last_notification_at, notifications) VALUES (?1, ?2, 1)
                     ON CONFLICT (user_id) DO UPDATE SET last_notification_at = excluded.last_notification_at,
                         notifications = google_sync_status.notifications + 1",
                    args![user_id, tx.now()],
                )?;
                Ok(())
            })
            .await
    }

    /// A sync pass of this user ended.
    pub async fn record_google_sync(&self, user_id: i64, pass: SyncRecord) -> StoreResult<()> {
        self.writer
            .write(move |tx| {
                let now = tx.now().to_string();
                let ok = pass.outcome == SyncOutcome::Ok;
                tx.conn()
                    .execute("INSERT INTO google_sync_status (user_id) VALUES (?1) ON CONFLICT (user_id) DO NOTHING", args![user_id])?;
                tx.conn().execute(
                    "UPDATE google_sync_status SET
                        last_sync_at = ?2,
                        last_sync_kind = COALESCE(CAST(?3 AS TEXT), last_sync_kind),
                        last_sync_outcome = ?4,
                        last_error = ?5,
                        last_full_sync_at = CASE WHEN ?6 THEN ?2 ELSE last_full_sync_at END,
                        syncs = syncs + 1,
                        failed_syncs = failed_syncs + ?7,
                        created = created + ?8,
                        updated = updated + ?9,
                        canceled = canceled + ?10,
                        safety_net_syncs = safety_net_syncs + ?11,
                        safety_net_changes = safety_net_changes + ?12,
                        last_safety_net_at = CASE WHEN ?13 THEN ?2 ELSE last_safety_net_at END,
                        last_safety_net_changes_at = CASE WHEN ?13 AND ?12 > 0 THEN ?2 ELSE last_safety_net_changes_at END
                     WHERE user_id = ?1",
                    args![
                        user_id,
                        now,
                        pass.kind.map(SyncKind::as_str),
                        stored_outcome(pass.outcome),
                        pass.error,
                        ok && pass.full,
                        (!ok) as i64,
                        pass.created as i64,
                        pass.updated as i64,
                        pass.canceled as i64,
                        pass.safety_net as i64,
                        if pass.safety_net { pass.changes as i64 } else { 0 },
                        // ?11 is a count on PostgreSQL (bigint); the CASEs need a boolean of their own.
                        pass.safety_net
                    ],
                )?;
                Ok(())
            })
            .await
    }

    /// A channel renewal of this user worked (None) or failed.
    pub async fn record_channel_renewal(&self, user_id: i64, failure: Option<RenewalFailure>) -> StoreResult<()> {
        self.writer
            .write(move |tx| {
                let now = tx.now().to_string();
                let conn = tx.conn();
                conn.execute("INSERT INTO google_sync_status (user_id) VALUES (?1) ON CONFLICT (user_id) DO NOTHING", args![user_id])?;
                match &failure {
                    None => conn.execute(
                        "UPDATE google_sync_status SET renewals = renewals + 1, last_renewal_at = ?2, renewal_failures = 0,
                            next_renewal_attempt_at = NULL WHERE user_id = ?1",
                        args![user_id, now],
                    )?,
                    Some(f) => conn.execute(
                        "UPDATE google_sync_status SET renewal_failures = ?2, last_renewal_error = ?3, last_renewal_error_at = ?4,
                            next_renewal_attempt_at = ?5 WHERE user_id = ?1",
                        args![user_id, f.failures, f.error, now, f.next_attempt_at],
                    )?,
                };
                Ok(())
            })
            .await
    }

    /// When Google last pushed, for anyone (the public status page).
    pub async fn last_google_notification_at(&self) -> StoreResult<Option<String>> {
        self.read(last_notification_at).await
    }

    /// Every connected (or once connected) user's status and every channel.
    pub async fn google_health_rows(&self) -> StoreResult<GoogleHealthRows> {
        self.read(|conn| {
            let users = conn.query_map(
                "SELECT u.id, u.email, u.google_refresh_token IS NOT NULL, u.google_needs_reconnect,
                        EXISTS (SELECT 1 FROM google_calendars g WHERE g.user_id = u.id AND g.selected AND g.sync_token IS NOT NULL),
                        s.last_notification_at, COALESCE(s.notifications, 0), s.last_sync_at, s.last_sync_kind, s.last_sync_outcome,
                        s.last_error, s.last_full_sync_at, COALESCE(s.syncs, 0), COALESCE(s.failed_syncs, 0),
                        COALESCE(s.created, 0), COALESCE(s.updated, 0), COALESCE(s.canceled, 0),
                        COALESCE(s.renewals, 0), s.last_renewal_at, COALESCE(s.renewal_failures, 0), s.last_renewal_error,
                        s.last_renewal_error_at, s.next_renewal_attempt_at,
                        COALESCE(s.safety_net_syncs, 0), COALESCE(s.safety_net_changes, 0), s.last_safety_net_at, s.last_safety_net_changes_at
                 FROM users u LEFT JOIN google_sync_status s ON s.user_id = u.id
                 WHERE u.google_sub IS NOT NULL OR u.google_refresh_token IS NOT NULL OR s.user_id IS NOT NULL
                 ORDER BY u.id",
                args![],
                |r| {
                    Ok(GoogleUserStatus {
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
                 FROM calendar_watch_channels WHERE provider = 'google' ORDER BY user_id, id",
                args![],
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
            Ok(GoogleHealthRows { users, channels, last_notification_at: last_notification_at(conn)? })
        })
        .await
    }
}

fn last_notification_at(conn: &Conn<'_>) -> StoreResult<Option<String>> {
    conn.value("SELECT MAX(last_notification_at) FROM google_sync_status", args![])
}
