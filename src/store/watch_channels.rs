//! Reads of `calendar_watch_channels` on the notification path: one lookup
//! by the unique `channel_id` index per notification, nothing else.

use rusqlite::{Connection, OptionalExtension};

/// What a notification is checked against.
#[derive(Debug)]
pub struct NotifiedChannel {
    pub user_id: i64,
    pub token: String,
    pub resource_id: Option<String>,
    /// `active`, or `retiring` during a renewal's overlap (both still live).
    pub state: String,
    /// When Google stops sending on it (stored form), if known.
    pub expiration: Option<String>,
}

pub fn find_for_notification(conn: &Connection, channel_id: &str) -> rusqlite::Result<Option<NotifiedChannel>> {
    conn.prepare_cached("SELECT user_id, token, resource_id, state, expiration FROM calendar_watch_channels WHERE channel_id = ?1")?
        .query_row([channel_id], |r| {
            Ok(NotifiedChannel { user_id: r.get(0)?, token: r.get(1)?, resource_id: r.get(2)?, state: r.get(3)?, expiration: r.get(4)? })
        })
        .optional()
}
