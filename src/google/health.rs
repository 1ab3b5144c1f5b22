//! What admins (and `/api/admin/health`) see about Google: connected users,
//! who needs to reconnect, how their last syncs went, when Google last
//! pushed, every channel with its expiry, channel renewals and their
//! failures, and what the safety-net sync found. Never a token.
//!
//! `push_gap_suspected` flags a user whose last safety-net find is newer than
//! Google's last notification: changes are happening that no push announced.

use rusqlite::Connection;
use serde_json::{json, Value};

/// The Google part of the admin health report.
pub fn admin_health(conn: &Connection) -> Value {
    match report(conn) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the Google health report");
            json!({"error": "the Google health report could not be read"})
        }
    }
}

/// The time of the last notification from Google, for the public status page.
pub fn last_notification_at(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT MAX(last_notification_at) FROM google_sync_status", [], |r| r.get(0))
}

fn report(conn: &Connection) -> rusqlite::Result<Value> {
    let mut stmt = conn.prepare(
        "SELECT u.id, u.email, u.google_refresh_token IS NOT NULL, u.google_needs_reconnect,
                EXISTS (SELECT 1 FROM google_calendars g WHERE g.user_id = u.id AND g.selected = 1 AND g.sync_token IS NOT NULL),
                s.last_notification_at, COALESCE(s.notifications, 0), s.last_sync_at, s.last_sync_kind, s.last_sync_outcome,
                s.last_error, s.last_full_sync_at, COALESCE(s.syncs, 0), COALESCE(s.failed_syncs, 0),
                COALESCE(s.created, 0), COALESCE(s.updated, 0), COALESCE(s.canceled, 0),
                COALESCE(s.renewals, 0), s.last_renewal_at, COALESCE(s.renewal_failures, 0), s.last_renewal_error,
                s.last_renewal_error_at, s.next_renewal_attempt_at,
                COALESCE(s.safety_net_syncs, 0), COALESCE(s.safety_net_changes, 0), s.last_safety_net_at, s.last_safety_net_changes_at
         FROM users u LEFT JOIN google_sync_status s ON s.user_id = u.id
         WHERE u.google_sub IS NOT NULL OR u.google_refresh_token IS NOT NULL OR s.user_id IS NOT NULL
         ORDER BY u.id",
    )?;
    let users: Vec<Value> = stmt
        .query_map([], |r| {
            Ok(json!({
                "user_id": r.get::<_, i64>(0)?,
                "email": r.get::<_, String>(1)?,
                "connected": r.get::<_, bool>(2)?,
                "needs_reconnect": r.get::<_, i64>(3)? != 0,
                "has_sync_token": r.get::<_, bool>(4)?,
                "last_notification_at": r.get::<_, Option<String>>(5)?,
                "notifications": r.get::<_, i64>(6)?,
                "last_sync_at": r.get::<_, Option<String>>(7)?,
                "last_sync_kind": r.get::<_, Option<String>>(8)?,
                "last_sync_outcome": r.get::<_, Option<String>>(9)?,
                "last_error": r.get::<_, Option<String>>(10)?,
                "last_full_sync_at": r.get::<_, Option<String>>(11)?,
                "syncs": r.get::<_, i64>(12)?,
                "failed_syncs": r.get::<_, i64>(13)?,
                "created": r.get::<_, i64>(14)?,
                "updated": r.get::<_, i64>(15)?,
                "canceled": r.get::<_, i64>(16)?,
                "renewals": r.get::<_, i64>(17)?,
                "last_renewal_at": r.get::<_, Option<String>>(18)?,
                "renewal_failures": r.get::<_, i64>(19)?,
                "last_renewal_error": r.get::<_, Option<String>>(20)?,
                "last_renewal_error_at": r.get::<_, Option<String>>(21)?,
                "next_renewal_attempt_at": r.get::<_, Option<String>>(22)?,
                "safety_net_syncs": r.get::<_, i64>(23)?,
                "safety_net_changes": r.get::<_, i64>(24)?,
                "last_safety_net_at": r.get::<_, Option<String>>(25)?,
                "last_safety_net_changes_at": r.get::<_, Option<String>>(26)?,
                "push_gap_suspected": push_gap(r.get::<_, Option<String>>(26)?.as_deref(), r.get::<_, Option<String>>(5)?.as_deref()),
            }))
        })?
        .collect::<Result<_, _>>()?;
    let now = crate::store::timefmt::format(crate::store::timefmt::now());
    let mut stmt = conn.prepare(
        "SELECT user_id, channel_id, calendar_id, resource_id, expiration, state, webhook_url, created_at
         FROM calendar_watch_channels ORDER BY user_id, id",
    )?;
    let channels: Vec<Value> = stmt
        .query_map([], |r| {
            Ok(json!({
                "user_id": r.get::<_, i64>(0)?,
                "channel_id": r.get::<_, String>(1)?,
                "calendar_id": r.get::<_, String>(2)?,
                "resource_id": r.get::<_, Option<String>>(3)?,
                "expiration": r.get::<_, Option<String>>(4)?,
                "expired": r.get::<_, Option<String>>(4)?.is_some_and(|e| e <= now),
                "state": r.get::<_, String>(5)?,
                "webhook_url": r.get::<_, String>(6)?,
                "created_at": r.get::<_, String>(7)?,
            }))
        })?
        .collect::<Result<_, _>>()?;
    let ids = |f: &dyn Fn(&Value) -> bool| -> Vec<Value> { users.iter().filter(|u| f(u)).map(|u| u["user_id"].clone()).collect() };
    let needs_reconnect = ids(&|u| u["needs_reconnect"] == true);
    let renewal_failing = ids(&|u| u["renewal_failures"].as_i64().unwrap_or(0) > 0);
    let push_gap_suspected = ids(&|u| u["push_gap_suspected"] == true);
    Ok(json!({
        "connected_users": users.iter().filter(|u| u["connected"] == true).count(),
        "needs_reconnect": needs_reconnect,
        "renewal_failing": renewal_failing,
        "push_gap_suspected": push_gap_suspected,
        "expired_channels": channels.iter().filter(|c| c["expired"] == true).count(),
        "last_notification_at": last_notification_at(conn)?,
        "users": users,
        "channels": channels,
    }))
}

/// The safety net found changes after Google's last push (or Google never
/// pushed): notifications are probably not arriving.
fn push_gap(last_safety_net_find: Option<&str>, last_notification: Option<&str>) -> bool {
    match (last_safety_net_find, last_notification) {
        (Some(found), Some(pushed)) => found > pushed,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_push_gap_is_a_safety_net_find_after_the_last_push() {
        let (early, late) = ("2026-01-01T10:00:00.000Z", "2026-01-01T11:00:00.000Z");
        assert!(super::push_gap(Some(late), Some(early)));
        assert!(super::push_gap(Some(late), None));
        assert!(!super::push_gap(Some(early), Some(late)));
        assert!(!super::push_gap(None, Some(late)));
    }
}
