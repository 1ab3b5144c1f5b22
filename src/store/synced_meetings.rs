//! What both calendar syncs write the same way: a meeting's synced columns
//! as an event gives them ([`MeetingFields`]), what a write did
//! ([`SyncCounts`]), and the client an event's attendees name.

use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use super::sql::{args, Conn};
use super::StoreResult;
use crate::model::MeetingStatus;

/// A meeting's synced columns, as a calendar event gives them.
#[derive(Debug, PartialEq)]
pub struct MeetingFields {
    pub title: String,
    pub description: Option<String>,
    pub location: Option<String>,
    pub meeting_url: Option<String>,
    pub starts_at: String,
    pub ends_at: String,
    pub all_day: bool,
    pub timezone: Option<String>,
    pub attendees: Value,
    /// Other people's addresses, for linking a client.
    pub attendee_emails: Vec<String>,
    /// The user declined the invitation: the meeting is `canceled`.
    pub declined: bool,
}

impl MeetingFields {
    /// Confirmed and tentative events both show as scheduled; one the user
    /// declined does not take place for them.
    pub fn status(&self) -> MeetingStatus {
        if self.declined {
            MeetingStatus::Canceled
        } else {
            MeetingStatus::Scheduled
        }
    }

    pub(super) fn columns(&self) -> Vec<(&'static str, SqlValue)> {
        let text = |v: &Option<String>| v.clone().map(SqlValue::Text).unwrap_or(SqlValue::Null);
        vec![
            ("title", SqlValue::Text(self.title.clone())),
            ("description", text(&self.description)),
            ("location", text(&self.location)),
            ("meeting_url", text(&self.meeting_url)),
            ("starts_at", SqlValue::Text(self.starts_at.clone())),
            ("ends_at", SqlValue::Text(self.ends_at.clone())),
            ("all_day", SqlValue::Integer(self.all_day as i64)),
            ("timezone", text(&self.timezone)),
            ("status", SqlValue::Text(self.status().as_str().into())),
            ("attendees", SqlValue::Text(self.attendees.to_string())),
        ]
    }
}

/// What a write of the sync did to meetings.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncCounts {
    pub created: u64,
    pub updated: u64,
    pub canceled: u64,
    /// Rows removed: events that are not meetings, imported by an earlier version.
    pub removed: u64,
    /// Events left alone (owned by Calendly, not meetings, unreadable, deletions of unknown events).
    pub skipped: u64,
}

/// The first of the user's clients whose email is an attendee's.
/// (`lower()` on both sides is SQLite's `COLLATE NOCASE` of the column, on both engines.)
pub(super) fn link_client(conn: &Conn<'_>, user_id: i64, emails: &[String]) -> StoreResult<Option<i64>> {
    for e in emails {
        let found = conn
            .value_opt("SELECT id FROM clients WHERE user_id = ?1 AND lower(email) = lower(?2) ORDER BY id LIMIT 1", args![user_id, e])?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}
