//! The Google sync's writes: one events page of a calendar, the end of a
//! pass (cancellations, reconciling full listings, each calendar's new sync
//! token and window), and letting go of a calendar. What an event *is*
//! (meeting or not, declined, which occurrence) was decided by
//! `google::sync` before it gets here; this module decides which meeting
//! row it is and writes it, rows and their change rows in one transaction.
//!
//! - **One meeting per event, whatever lists it.** `google_event_links` maps
//!   (calendar, event id) → meeting. An event is matched by that, else by
//!   its id in another calendar, else by `iCalUID` *and* occurrence (never
//!   the UID alone, which every occurrence of a series shares). A meeting is
//!   canceled only when no ticked calendar lists it any more; an event moved
//!   between two ticked calendars stays the same meeting with its
//!   `calendar_id` updated, never a DELETE+INSERT.
//! - **One meeting per booking.** The Google copy of a Calendly booking is
//!   left to the Calendly meeting (see [`super::bookings`]).
//! - Replays are silent: `WriteTx::update` writes nothing when nothing differs.

use std::collections::HashSet;

use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use super::google::{self as rows, EventLink, LinkKeys};

use super::synced_meetings::{cancel_meeting, insert_meeting, leave_to_booking, update_meeting, EventOf, MeetingFields, SyncCounts};
use super::{bookings, Store, StoreResult, Table, WriteTx};

/// A meeting-type event with readable times, and what identifies it across calendars.
#[derive(Debug)]
pub struct EventMeeting {
    pub event_id: String,
    pub ical_uid: Option<String>,
    /// Which occurrence of its `iCalUID` it is: the original start of an
    /// occurrence of a series, else its start.
    pub occurrence: String,
    /// For an occurrence of a recurring series: the series' id.
    pub series_id: Option<String>,
    pub fields: MeetingFields,
}

/// One live (not cancelled) entry of an events page, as the sync read it.
#[derive(Debug)]
pub enum PageEntry {
    Meeting(Box<EventMeeting>),
    /// Focus time, out of office, …: a row an earlier version made of it goes.
    NotAMeeting {
        event_id: String,
    },
    /// Left alone (an unusable id, unreadable times).
    Skipped,
}

/// A page of live events of one calendar, with what applying it needs.
#[derive(Debug)]
pub struct CalendarPage {
    pub calendar_id: String,
    pub calendar_name: String,
    /// New meetings are not made for events starting at or after this.
    pub window_end: Option<String>,
    /// (calendar, event id) of every cancelled entry the pass listed so far:
    /// a meeting these leave is not kept in their calendar when another lists it.
    pub pending: HashSet<(String, String)>,
    pub entries: Vec<PageEntry>,
}

/// One ticked calendar as a pass listed it, for the end of the pass.
#[derive(Debug, Clone)]
pub struct CalendarListing {
    pub calendar_id: String,
    /// The window end the calendar's incremental listing imports up to.
    pub window_end: Option<String>,
    /// The window, when the calendar was listed in full to the last page.
    pub full: Option<(String, String)>,
    /// Event ids a full listing saw.
    pub seen: HashSet<String>,
    /// Ids of cancelled entries.
    pub cancelled: Vec<String>,
    /// The last page's `nextSyncToken` (Some(None): the last page had none).
    pub next_sync_token: Option<Option<String>>,
}

impl Store {
    /// Apply a page of a calendar's live events in one writer request. A
    /// calendar unticked while the pass was listing it is skipped: its
    /// meetings were let go of already.
    pub async fn apply_google_events(&self, user_id: i64, page: CalendarPage) -> StoreResult<SyncCounts> {
        self.writer.write(move |tx| apply_events(tx, user_id, &page)).await
    }

    /// The end of a pass, in one writer request: reconcile full listings
    /// (what a calendar no longer lists counts as cancelled there), apply
    /// every cancellation now that all ticked calendars were read, cancel
    /// rows from before the upgrade that no full listing found
    /// (`legacy_window`), and store each calendar's new sync token and window.
    /// A crash before this leaves the old tokens, so the next pass lists the
    /// same changes again.
    pub async fn finish_google_pass(
        &self,
        user_id: i64,
        listings: Vec<CalendarListing>,
        legacy_window: Option<(String, String)>,
    ) -> StoreResult<SyncCounts> {
        self.writer.write(move |tx| finish_pass(tx, user_id, &listings, legacy_window)).await
    }
}

/// The meeting, if it is still a `google` one (a Calendly delivery may have
/// taken a Google meeting over as its booking; then it is Calendly's).
fn google_meeting(tx: &WriteTx<'_, '_>, id: i64) -> StoreResult<Option<Value>> {
    Ok(tx.get(Table::Meetings, id)?.filter(|m| m.get("source").and_then(Value::as_str) == Some("google")))
}

fn apply_events(tx: &mut WriteTx<'_, '_>, user_id: i64, page: &CalendarPage) -> StoreResult<SyncCounts> {
    let mut counts = SyncCounts::default();
    let still_ticked = rows::ticked(tx.conn(), user_id)?.iter().any(|c| c.calendar_id == page.calendar_id);
    if !still_ticked {
        counts.skipped += page.entries.len() as u64;
        return Ok(counts);
    }
    for entry in &page.entries {
        match entry {
            PageEntry::Skipped => counts.skipped += 1,
            PageEntry::NotAMeeting { event_id } => remove_non_meeting(tx, user_id, &page.calendar_id, event_id, &mut counts)?,
            PageEntry::Meeting(ev) => upsert_event(tx, user_id, page, ev, &mut counts)?,
        }
    }
    Ok(counts)
}

/// An event that is not a meeting: if an earlier version of syncgate made a
/// meeting of it, that row goes (a DELETE: it never was a meeting).
fn remove_non_meeting(
    tx: &mut WriteTx<'_, '_>,
    user_id: i64,
    calendar_id: &str,
    event_id: &str,
    counts: &mut SyncCounts,
) -> StoreResult<()> {
    let mut meetings: Vec<i64> = rows::links_by_event(tx.conn(), user_id, event_id)?.into_iter().map(|l| l.meeting_id).collect();
    if let Some(id) = rows::meeting_by_external_id(tx.conn(), user_id, event_id)? {
        meetings.push(id);
    }
    meetings.sort_unstable();
    meetings.dedup();
    for id in meetings {
        rows::delete_links_of_meeting(tx.conn(), id)?;
        if google_meeting(tx, id)?.is_some() && tx.delete(Table::Meetings, id)?.is_some() {
            counts.removed += 1;
        }
    }
    rows::delete_link(tx.conn(), user_id, calendar_id, event_id)?;
    counts.skipped += 1;
    Ok(())
}

/// The existing meeting an event is: by (calendar, event id), else the same
/// event id in another calendar, else the same iCalendar UID *and*
/// occurrence, else a row from before links existed. Links to meetings that
/// no longer exist (deleted through REST) are dropped on the way.
fn find_meeting(tx: &mut WriteTx<'_, '_>, user_id: i64, calendar_id: &str, ev: &EventMeeting) -> StoreResult<Option<(i64, Value)>> {
    let mut candidates: Vec<EventLink> = Vec::new();
    candidates.extend(rows::link(tx.conn(), user_id, calendar_id, &ev.event_id)?);
    candidates.extend(rows::links_by_event(tx.conn(), user_id, &ev.event_id)?);
    if let Some(uid) = ev.ical_uid.as_deref().filter(|u| !u.is_empty()) {
        candidates.extend(rows::links_by_ical(tx.conn(), user_id, uid, &ev.occurrence)?);
    }
    for l in candidates {
        match google_meeting(tx, l.meeting_id)? {
            Some(m) => return Ok(Some((l.meeting_id, m))),
            None => rows::delete_link(tx.conn(), user_id, &l.calendar_id, &l.event_id)?,
        }
    }
    if let Some(id) = rows::meeting_by_external_id(tx.conn(), user_id, &ev.event_id)? {
        if let Some(m) = google_meeting(tx, id)? {
            return Ok(Some((id, m)));
        }
    }
    Ok(None)
}

fn upsert_event(
    tx: &mut WriteTx<'_, '_>,
    user_id: i64,
    page: &CalendarPage,
    ev: &EventMeeting,
    counts: &mut SyncCounts,
) -> StoreResult<()> {
    let calendar_id = page.calendar_id.as_str();
    let fields = &ev.fields;
    let keys = LinkKeys {
        ical_uid: ev.ical_uid.as_deref().filter(|u| !u.is_empty()),
        occurrence: Some(ev.occurrence.as_str()),
        series_id: ev.series_id.as_deref(),
    };
    let mut cols = fields.columns();
    match find_meeting(tx, user_id, calendar_id, ev)? {
        Some((id, before)) => {
            rows::save_link(tx.conn(), user_id, calendar_id, &ev.event_id, id, &keys)?;
            let home = before.get("calendar_id").and_then(Value::as_str).map(str::to_string);
            // One calendar's copy speaks for the meeting: its home calendar's,
            // or this one's when the home no longer lists it (moved here).
            let home_lists_it = match home.as_deref() {
                None => false,
                Some(h) if h == calendar_id => true,
                Some(h) => rows::links_of_meeting(tx.conn(), id)?
                    .iter()
                    .any(|l| l.calendar_id == h && !page.pending.contains(&(l.calendar_id.clone(), l.event_id.clone()))),
            };
            if home_lists_it && home.as_deref() != Some(calendar_id) {
                return Ok(());
            }
            cols.push(("calendar_id", SqlValue::Text(calendar_id.to_string())));
            cols.push(("calendar_name", SqlValue::Text(page.calendar_name.clone())));
            update_meeting(tx, user_id, id, &before, cols, &fields.attendee_emails, counts)?;
        }
        None => {
            // An endless series is imported only up to the window's end; the
            // window moving forward brings the rest.
            if page.window_end.as_deref().is_some_and(|end| fields.starts_at.as_str() >= end) {
                counts.skipped += 1;
                return Ok(());
            }
            let event = EventOf { user_id, source: "google", event_id: &ev.event_id, event_id_column: "google_event_id" };
            if let Some(booking) =
                bookings::calendly_meeting_for_event(tx.conn(), user_id, &ev.event_id, &fields.starts_at, &fields.attendee_emails)?
            {
                return leave_to_booking(tx, &event, booking, counts);
            }
            cols.push(("calendar_id", SqlValue::Text(calendar_id.to_string())));
            cols.push(("calendar_name", SqlValue::Text(page.calendar_name.clone())));
            let id = insert_meeting(tx, &event, cols, &fields.attendee_emails, counts)?;
            rows::save_link(tx.conn(), user_id, calendar_id, &ev.event_id, id, &keys)?;
        }
    }
    Ok(())
}

/// A calendar no longer lists an event: drop its link, and cancel the
/// meeting unless another ticked calendar still lists it (then that one
/// becomes its home). A cancelled id that names a recurring series also
/// covers the occurrences of it this calendar listed.
fn apply_cancellation(
    tx: &mut WriteTx<'_, '_>,
    user_id: i64,
    calendar_id: &str,
    event_id: &str,
    counts: &mut SyncCounts,
) -> StoreResult<()> {
    let mut links: Vec<EventLink> = rows::link(tx.conn(), user_id, calendar_id, event_id)?.into_iter().collect();
    links.extend(rows::links_of_series(tx.conn(), user_id, calendar_id, event_id)?);
    if links.is_empty() {
        // A row from before links existed.
        if let Some(id) = rows::meeting_by_external_id(tx.conn(), user_id, event_id)? {
            if rows::links_of_meeting(tx.conn(), id)?.is_empty() {
                cancel_meeting(tx, id, counts)?;
                return Ok(());
            }
        }
        // A deletion of an event we never had (outside the window, or Calendly's).
        counts.skipped += 1;
        return Ok(());
    }
    for l in links {
        rows::delete_link(tx.conn(), user_id, &l.calendar_id, &l.event_id)?;
        if google_meeting(tx, l.meeting_id)?.is_none() {
            continue;
        }
        let rest = rows::links_of_meeting(tx.conn(), l.meeting_id)?;
        match rest.first() {
            None => cancel_meeting(tx, l.meeting_id, counts)?,
            Some(other) => rehome(tx, user_id, l.meeting_id, calendar_id, &other.calendar_id, counts)?,
        }
    }
    Ok(())
}

/// The meeting's home calendar `from` let it go; `to` still lists it.
fn rehome(tx: &mut WriteTx<'_, '_>, user_id: i64, id: i64, from: &str, to: &str, counts: &mut SyncCounts) -> StoreResult<()> {
    let Some(before) = tx.get(Table::Meetings, id)? else { return Ok(()) };
    if before.get("calendar_id").and_then(Value::as_str).is_some_and(|h| h != from) {
        return Ok(());
    }
    let name = rows::calendars(tx.conn(), user_id)?.into_iter().find(|c| c.calendar_id == to).map_or_else(|| to.to_string(), |c| c.name);
    let after =
        tx.update(Table::Meetings, id, &[("calendar_id", SqlValue::Text(to.to_string())), ("calendar_name", SqlValue::Text(name))])?;
    if after.as_ref() != Some(&before) {
        counts.updated += 1;
    }
    Ok(())
}

/// Let go of an unticked (or vanished) calendar: its links go; a meeting
/// only it listed is removed (a DELETE), one another ticked calendar lists
/// moves there. Returns how many meetings changed.
pub(super) fn release_calendar(tx: &mut WriteTx<'_, '_>, user_id: i64, calendar_id: &str) -> StoreResult<u64> {
    let mut counts = SyncCounts::default();
    for l in rows::links_of_calendar(tx.conn(), user_id, calendar_id)? {
        rows::delete_link(tx.conn(), user_id, &l.calendar_id, &l.event_id)?;
        if google_meeting(tx, l.meeting_id)?.is_none() {
            continue;
        }
        let rest = rows::links_of_meeting(tx.conn(), l.meeting_id)?;
        match rest.first() {
            None => {
                if tx.delete(Table::Meetings, l.meeting_id)?.is_some() {
                    counts.removed += 1;
                }
            }
            Some(other) => rehome(tx, user_id, l.meeting_id, calendar_id, &other.calendar_id, &mut counts)?,
        }
    }
    for id in rows::unlinked_meetings_of_calendar(tx.conn(), user_id, calendar_id)? {
        if tx.delete(Table::Meetings, id)?.is_some() {
            counts.removed += 1;
        }
    }
    Ok(counts.removed + counts.updated)
}

fn finish_pass(
    tx: &mut WriteTx<'_, '_>,
    user_id: i64,
    listings: &[CalendarListing],
    legacy_window: Option<(String, String)>,
) -> StoreResult<SyncCounts> {
    let mut counts = SyncCounts::default();
    let ticked: HashSet<String> = rows::ticked(tx.conn(), user_id)?.into_iter().map(|c| c.calendar_id).collect();
    for l in listings {
        if !ticked.contains(&l.calendar_id) {
            continue;
        }
        let mut gone: Vec<String> = l.cancelled.clone();
        if let Some((from, to)) = &l.full {
            for link in rows::links_in_window(tx.conn(), user_id, &l.calendar_id, from, to)? {
                if !l.seen.contains(&link.event_id) {
                    gone.push(link.event_id);
                }
            }
        }
        for event_id in gone {
            apply_cancellation(tx, user_id, &l.calendar_id, &event_id, &mut counts)?;
        }
    }
    if let Some((from, to)) = legacy_window {
        for id in rows::unlinked_meetings_in_window(tx.conn(), user_id, &from, &to)? {
            cancel_meeting(tx, id, &mut counts)?;
        }
    }
    for l in listings {
        if let Some(next) = &l.next_sync_token {
            rows::save_sync_token(tx.conn(), user_id, &l.calendar_id, next.as_deref())?;
        }
        let end = l.full.as_ref().map(|(_, to)| to.clone()).or_else(|| l.window_end.clone());
        if let Some(end) = end {
            rows::save_window_end(tx.conn(), user_id, &l.calendar_id, &end)?;
        }
    }
    Ok(counts)
}
