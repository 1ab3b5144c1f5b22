//! What both calendar syncs write the same way: a meeting's synced columns
//! as an event gives them ([`MeetingFields`], its texts [`clip`]ped and its
//! people gathered by [`Attendees`]), what a write did ([`SyncCounts`]), the
//! client an event's attendees name, and the steps every event takes — a
//! new meeting, an update, a booking's calendar copy, a cancellation.

use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use super::bookings::BookingMatch;
use super::sql::{args, Conn};
use super::{StoreError, StoreResult, Table, WriteTx};
use crate::model::MeetingStatus;

/// The most of each text a synced meeting keeps (characters), and of its
/// attendees: an event's fields are the provider's user's input, of any size.
pub const MAX_TITLE: usize = 500;
pub const MAX_DESCRIPTION: usize = 20_000;
pub const MAX_LOCATION: usize = 1_000;
pub const MAX_URL: usize = 2_000;
pub const MAX_ATTENDEES: usize = 500;
const MAX_NAME: usize = 200;
const MAX_ADDRESS: usize = 320;

/// Text as a meeting keeps it: trimmed, None when empty, cut at `max` characters.
pub fn clip(s: Option<&str>, max: usize) -> Option<String> {
    let s = s?.trim();
    if s.is_empty() {
        return None;
    }
    Some(s.chars().take(max).collect())
}

/// One person on an event, as a provider lists them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attendee<'a> {
    pub email: &'a str,
    pub name: Option<&'a str>,
    /// In Google's words (`accepted`, `declined`, `tentative`, `needsAction`),
    /// which the UI reads for every source.
    pub response_status: Option<&'a str>,
    pub organizer: bool,
    /// The syncing user themself.
    pub is_self: bool,
    /// A room or equipment: listed, never taken for a client.
    pub resource: bool,
}

/// A meeting's `attendees` (JSON, the same shape for every provider) and the
/// other people's addresses a client is linked by, gathered one person at
/// a time.
#[derive(Debug, Default)]
pub struct Attendees {
    listed: Vec<Value>,
    emails: Vec<String>,
}

impl Attendees {
    /// Add a person; one without an address is skipped, and past
    /// [`MAX_ATTENDEES`] nobody is added. True when added.
    pub fn push(&mut self, a: Attendee<'_>) -> bool {
        let Some(email) = clip(Some(a.email), MAX_ADDRESS) else { return false };
        if self.is_full() {
            return false;
        }
        let mut o = serde_json::Map::new();
        o.insert("email".into(), Value::String(email.clone()));
        if let Some(name) = clip(a.name, MAX_NAME) {
            o.insert("name".into(), Value::String(name));
        }
        if let Some(r) = a.response_status {
            o.insert("response_status".into(), Value::String(r.to_string()));
        }
        if a.organizer {
            o.insert("organizer".into(), Value::Bool(true));
        }
        if a.is_self {
            o.insert("self".into(), Value::Bool(true));
        } else if !a.resource {
            self.emails.push(email);
        }
        self.listed.push(Value::Object(o));
        true
    }

    pub fn is_full(&self) -> bool {
        self.listed.len() >= MAX_ATTENDEES
    }

    /// The `attendees` column and the addresses for client linking.
    pub fn into_parts(self) -> (Value, Vec<String>) {
        (Value::Array(self.listed), self.emails)
    }
}

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

/// Whose event a meeting is: its user, its source, and the event id with
/// the column that keeps it (`google_event_id`, `microsoft_event_id`).
pub(super) struct EventOf<'a> {
    pub user_id: i64,
    pub source: &'static str,
    pub event_id: &'a str,
    pub event_id_column: &'static str,
}

/// A new meeting of the event, with its client when an attendee is one.
/// `cols` are the event's columns ([`MeetingFields::columns`] and its calendar).
pub(super) fn insert_meeting(
    tx: &mut WriteTx<'_, '_>,
    event: &EventOf<'_>,
    mut cols: Vec<(&'static str, SqlValue)>,
    attendee_emails: &[String],
    counts: &mut SyncCounts,
) -> StoreResult<i64> {
    cols.push(("user_id", SqlValue::Integer(event.user_id)));
    cols.push(("source", SqlValue::Text(event.source.into())));
    cols.push(("external_id", SqlValue::Text(event.event_id.to_string())));
    cols.push((event.event_id_column, SqlValue::Text(event.event_id.to_string())));
    if let Some(c) = link_client(tx.conn(), event.user_id, attendee_emails)? {
        cols.push(("client_id", SqlValue::Integer(c)));
    }
    let row = tx.insert(Table::Meetings, &cols)?;
    let id = row.get("id").and_then(Value::as_i64).ok_or_else(|| StoreError::internal("inserted meeting has no id"))?;
    counts.created += 1;
    Ok(id)
}

/// The event's columns over its meeting `id` (as it was: `before`). The
/// client is the adviser's to set: filled only while empty.
pub(super) fn update_meeting(
    tx: &mut WriteTx<'_, '_>,
    user_id: i64,
    id: i64,
    before: &Value,
    mut cols: Vec<(&'static str, SqlValue)>,
    attendee_emails: &[String],
    counts: &mut SyncCounts,
) -> StoreResult<()> {
    if before.get("client_id").is_none_or(Value::is_null) {
        if let Some(c) = link_client(tx.conn(), user_id, attendee_emails)? {
            cols.push(("client_id", SqlValue::Integer(c)));
        }
    }
    if tx.update(Table::Meetings, id, &cols)?.as_ref() != Some(before) {
        counts.updated += 1;
    }
    Ok(())
}

/// The event is the calendar copy of a Calendly booking: the Calendly
/// meeting stays the booking, now and on every later edit of the event.
/// Found by time and address, it learns the event id so later edits match by id.
pub(super) fn leave_to_booking(
    tx: &mut WriteTx<'_, '_>,
    event: &EventOf<'_>,
    booking: BookingMatch,
    counts: &mut SyncCounts,
) -> StoreResult<()> {
    if !booking.by_event_id {
        tx.update(Table::Meetings, booking.meeting_id, &[(event.event_id_column, SqlValue::Text(event.event_id.to_string()))])?;
    }
    counts.skipped += 1;
    Ok(())
}

/// The meeting is canceled (once: an already canceled one is left as it is).
pub(super) fn cancel_meeting(tx: &mut WriteTx<'_, '_>, id: i64, counts: &mut SyncCounts) -> StoreResult<()> {
    let Some(before) = tx.get(Table::Meetings, id)? else { return Ok(()) };
    let canceled = MeetingStatus::Canceled.as_str();
    if before.get("status").and_then(Value::as_str) != Some(canceled) {
        tx.update(Table::Meetings, id, &[("status", SqlValue::Text(canceled.into()))])?;
        counts.canceled += 1;
    }
    Ok(())
}
