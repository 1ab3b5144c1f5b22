//! What admins (and `/api/admin/health`) see about Google: connected users,
//! who needs to reconnect, how their last syncs went, when Google last
//! pushed, and every channel with its expiry. Never a token.

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
        "SELECT u.id, u.email, u.google_refresh_token IS NOT NULL, u.google_needs_reconnect, u.google_sync_token IS NOT NULL,
                s.last_notification_at, COALESCE(s.notifications, 0), s.last_sync_at, s.last_sync_kind, s.last_sync_outcome,
                s.last_error, s.last_full_sync_at, COALESCE(s.syncs, 0), COALESCE(s.failed_syncs, 0),
                COALESCE(s.created, 0), COALESCE(s.updated, 0), COALESCE(s.canceled, 0)
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
            }))
        })?
        .collect::<Result<_, _>>()?;
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
                "state": r.get::<_, String>(5)?,
                "webhook_url": r.get::<_, String>(6)?,
                "created_at": r.get::<_, String>(7)?,
            }))
        })?
        .collect::<Result<_, _>>()?;
    let needs_reconnect: Vec<Value> = users.iter().filter(|u| u["needs_reconnect"] == true).map(|u| u["user_id"].clone()).collect();
    Ok(json!({
        "connected_users": users.iter().filter(|u| u["connected"] == true).count(),
        "needs_reconnect": needs_reconnect,
        "last_notification_at": last_notification_at(conn)?,
        "users": users,
        "channels": channels,
    }))
}
