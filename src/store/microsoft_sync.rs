//! The Outlook sync's writes: a user's calendars and which of them sync,
//! and one delta page of a calendar with, on its last page, the calendar's
//! new delta link — in the same transaction, so a crash between pages
//! replays them from the old link (replays write nothing new) and never
//! skips one. What an event *is* was decided by `microsoft::events`
//! before it gets here; this module decides which meeting row it is.
//!
//! - **One meeting per event.** Graph gives immutable ids (asked for on
//!   every call), so an event keeps its id when it moves to another of the
//!   user's calendars: it is matched by `(user, 'microsoft', external_id)`.
//!   A move is a removal in one calendar's delta and an entry in the
//!   other's, in either order; a removal cancels the meeting only while
//!   the meeting's calendar is the one that removed it.
//! - **A full round sweeps.** A round that began from the window (no delta
//!   link, or an expired one) lists every event; meetings of that calendar
//!   in the window it did not list were deleted meanwhile and are
//!   canceled, in the transaction of the last page.
//! - **One meeting per booking.** The Outlook copy of a Calendly booking is
//!   left to the Calendly meeting (see [`super::bookings`]).

use std::collections::HashSet;

use rusqlite::types::Value as SqlValue;

use super::sql::{args, Conn};
use super::synced_meetings::{cancel_meeting, insert_meeting, leave_to_booking, update_meeting, EventOf, MeetingFields, SyncCounts};
use super::{bookings, Store, StoreResult, Table, WriteTx};
use crate::model::MeetingStatus;

const SOURCE: &str = "microsoft";

/// One of the user's Outlook calendars as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlookCalendar {
    pub calendar_id: String,
    pub name: String,
    pub color: Option<String>,
    pub primary: bool,
    pub selected: bool,
    /// Where the next round starts; None: from the window (a full round).
    pub delta_link: Option<String>,
}

/// A calendar as Graph lists it.
#[derive(Debug, Clone)]
pub struct ListedCalendar {
    pub calendar_id: String,
    pub name: String,
    pub color: Option<String>,
    pub primary: bool,
}

/// One item of a delta page, as the sync read it.
#[derive(Debug)]
pub enum OutlookEntry {
    /// A meeting (its fields say whether it is canceled for the user).
    Meeting { event_id: String, fields: Box<MeetingFields> },
    /// Out of office, free time, …: a row made of it earlier goes.
    NotAMeeting { event_id: String },
    /// `@removed`, or cancelled by the organizer: the meeting is canceled.
    Removed { event_id: String },
    /// Left alone (unreadable times, an unusable id).
    Skipped,
}

/// One delta page of one calendar.
#[derive(Debug)]
pub struct OutlookPage {
    pub calendar_id: String,
    pub calendar_name: String,
    pub entries: Vec<OutlookEntry>,
}

/// What the last page of a round also writes.
#[derive(Debug)]
pub struct RoundEnd {
    /// The `@odata.deltaLink` the next round starts from.
    pub delta_link: String,
    /// For a round that listed the whole window: the window and every event
    /// id the round saw (meetings of the calendar in the window it did not
    /// see are canceled).
    pub full: Option<(String, String, HashSet<String>)>,
}

const CALENDAR_SELECT: &str = "SELECT calendar_id, name, color, is_primary, selected, delta_link FROM microsoft_calendars";

fn calendar_from_row(r: &super::sql::Row) -> StoreResult<OutlookCalendar> {
    Ok(OutlookCalendar {
        calendar_id: r.get(0)?,
        name: r.get(1)?,
        color: r.get(2)?,
        primary: r.get(3)?,
        selected: r.get(4)?,
        delta_link: r.get(5)?,
    })
}

fn calendars(conn: &Conn<'_>, user_id: i64) -> StoreResult<Vec<OutlookCalendar>> {
    conn.query_map(
        &format!("{CALENDAR_SELECT} WHERE user_id = ?1 ORDER BY is_primary DESC, calendar_id"),
        args![user_id],
        calendar_from_row,
    )
}

impl Store {
    /// The user's Outlook calendars (the default one first).
    pub async fn outlook_calendars(&self, user_id: i64) -> StoreResult<Vec<OutlookCalendar>> {
        self.read(move |c| calendars(c, user_id)).await
    }

    /// Store the calendar list Graph gave. A calendar seen for the first
    /// time is ticked when `tick` says so (the configured set); calendars
    /// Graph no longer lists are dropped, and their meetings with them.
    pub async fn save_outlook_calendars(
        &self,
        user_id: i64,
        listed: Vec<ListedCalendar>,
        tick: impl Fn(&ListedCalendar) -> bool + Send + 'static,
    ) -> StoreResult<Vec<OutlookCalendar>> {
        self.writer
            .write(move |tx| {
                let before = calendars(tx.conn(), user_id)?;
                for cal in &listed {
                    let known = before.iter().find(|b| b.calendar_id == cal.calendar_id);
                    let selected = known.map_or_else(|| tick(cal), |k| k.selected);
                    tx.conn().execute(
                        "INSERT INTO microsoft_calendars (user_id, calendar_id, name, color, is_primary, selected, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT (user_id, calendar_id) DO UPDATE SET name = excluded.name, color = excluded.color,
                             is_primary = excluded.is_primary, updated_at = excluded.updated_at",
                        args![user_id, cal.calendar_id, cal.name, cal.color, cal.primary, selected, tx.now()],
                    )?;
                }
                for gone in before.iter().filter(|b| !listed.iter().any(|l| l.calendar_id == b.calendar_id)) {
                    release_calendar(tx, user_id, &gone.calendar_id)?;
                    tx.conn().execute(
                        "DELETE FROM microsoft_calendars WHERE user_id = ?1 AND calendar_id = ?2",
                        args![user_id, gone.calendar_id],
                    )?;
                }
                calendars(tx.conn(), user_id)
            })
            .await
    }

    /// The address the user's Microsoft account signs in with (its
    /// `preferred_username`): how the user is told apart among an event's attendees.
    pub async fn outlook_address(&self, user_id: i64) -> StoreResult<Option<String>> {
        self.read(move |c| {
            Ok(c.value_opt::<Option<String>>("SELECT username FROM microsoft_accounts WHERE user_id = ?1", args![user_id])?.flatten())
        })
        .await
    }

    /// A notification item for this user carried a wrong `clientState`: it was
    /// not Graph's, and was dropped (admins see the count).
    pub async fn record_dropped_notifications(&self, user_id: i64, items: u64) -> StoreResult<()> {
        self.bookkeeping(move |conn, _| {
            conn.execute(
                "INSERT INTO microsoft_sync_status (user_id, dropped_notifications) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET dropped_notifications = microsoft_sync_status.dropped_notifications + ?2",
                args![user_id, items],
            )?;
            Ok(())
        })
        .await
    }

    /// Graph refused this access token (401) before its time: if it is still
    /// the stored one, it counts as expired, so the next use refreshes it.
    pub async fn expire_microsoft_access_token(&self, user_id: i64, access_token: String) -> StoreResult<()> {
        self.bookkeeping(move |conn, now| {
            conn.execute(
                "UPDATE microsoft_accounts SET token_expires_at = ?3 WHERE user_id = ?1 AND access_token = ?2",
                args![user_id, access_token, now],
            )?;
            Ok(())
        })
        .await
    }

    /// Forget a calendar's delta link: its next round lists the window in full.
    pub async fn forget_delta_link(&self, user_id: i64, calendar_id: &str) -> StoreResult<()> {
        let calendar_id = calendar_id.to_string();
        self.writer
            .write(move |tx| {
                tx.conn().execute(
                    "UPDATE microsoft_calendars SET delta_link = NULL WHERE user_id = ?1 AND calendar_id = ?2",
                    args![user_id, calendar_id],
                )?;
                Ok(())
            })
            .await
    }

    /// Apply one delta page of a calendar in one writer request; with `end`,
    /// also the round's sweep and the calendar's new delta link. A calendar
    /// unticked while the round read it is skipped.
    pub async fn apply_outlook_page(&self, user_id: i64, page: OutlookPage, end: Option<RoundEnd>) -> StoreResult<SyncCounts> {
        self.writer.write(move |tx| apply_page(tx, user_id, &page, end.as_ref())).await
    }
}

/// The meeting an Outlook event is, if it is still a `microsoft` one.
fn outlook_meeting(conn: &Conn<'_>, user_id: i64, event_id: &str) -> StoreResult<Option<i64>> {
    conn.value_opt("SELECT id FROM meetings WHERE user_id = ?1 AND source = ?2 AND external_id = ?3", args![user_id, SOURCE, event_id])
}

fn apply_page(tx: &mut WriteTx<'_, '_>, user_id: i64, page: &OutlookPage, end: Option<&RoundEnd>) -> StoreResult<SyncCounts> {
    let mut counts = SyncCounts::default();
    let ticked = calendars(tx.conn(), user_id)?.into_iter().any(|c| c.selected && c.calendar_id == page.calendar_id);
    if !ticked {
        counts.skipped += page.entries.len() as u64;
        return Ok(counts);
    }
    for entry in &page.entries {
        match entry {
            OutlookEntry::Skipped => counts.skipped += 1,
            OutlookEntry::Meeting { event_id, fields } => upsert(tx, user_id, page, event_id, fields, &mut counts)?,
            OutlookEntry::Removed { event_id } => cancel_in(tx, user_id, &page.calendar_id, event_id, &mut counts)?,
            OutlookEntry::NotAMeeting { event_id } => {
                if let Some(id) = outlook_meeting(tx.conn(), user_id, event_id)? {
                    if tx.delete(Table::Meetings, id)?.is_some() {
                        counts.removed += 1;
                    }
                } else {
                    counts.skipped += 1;
                }
            }
        }
    }
    if let Some(end) = end {
        if let Some((from, to, seen)) = &end.full {
            let listed: Vec<(i64, String)> = tx.conn().query_map(
                "SELECT id, external_id FROM meetings
                 WHERE user_id = ?1 AND source = ?2 AND calendar_id = ?3 AND ends_at > ?4 AND starts_at < ?5 AND status <> ?6",
                args![user_id, SOURCE, page.calendar_id, from, to, MeetingStatus::Canceled.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            for (id, event_id) in listed {
                if !seen.contains(&event_id) {
                    cancel_meeting(tx, id, &mut counts)?;
                }
            }
        }
        tx.conn().execute(
            "UPDATE microsoft_calendars SET delta_link = ?3, updated_at = ?4 WHERE user_id = ?1 AND calendar_id = ?2",
            args![user_id, page.calendar_id, end.delta_link, tx.now()],
        )?;
    }
    Ok(counts)
}

fn upsert(
    tx: &mut WriteTx<'_, '_>,
    user_id: i64,
    page: &OutlookPage,
    event_id: &str,
    fields: &MeetingFields,
    counts: &mut SyncCounts,
) -> StoreResult<()> {
    let mut cols = fields.columns();
    cols.push(("calendar_id", SqlValue::Text(page.calendar_id.clone())));
    cols.push(("calendar_name", SqlValue::Text(page.calendar_name.clone())));
    let event = EventOf { user_id, source: SOURCE, event_id, event_id_column: "microsoft_event_id" };
    match outlook_meeting(tx.conn(), user_id, event_id)? {
        Some(id) => {
            let Some(before) = tx.get(Table::Meetings, id)? else { return Ok(()) };
            update_meeting(tx, user_id, id, &before, cols, &fields.attendee_emails, counts)?;
        }
        None => {
            if let Some(booking) =
                bookings::calendly_meeting_for_outlook_event(tx.conn(), user_id, event_id, &fields.starts_at, &fields.attendee_emails)?
            {
                return leave_to_booking(tx, &event, booking, counts);
            }
            // A canceled event we never had a meeting for stays out.
            if fields.status() == MeetingStatus::Canceled {
                counts.skipped += 1;
                return Ok(());
            }
            insert_meeting(tx, &event, cols, &fields.attendee_emails, counts)?;
        }
    }
    Ok(())
}

/// `calendar_id` removed the event: its meeting is canceled, unless the
/// meeting now belongs to another calendar (the event moved there first).
fn cancel_in(tx: &mut WriteTx<'_, '_>, user_id: i64, calendar_id: &str, event_id: &str, counts: &mut SyncCounts) -> StoreResult<()> {
    let Some(id) = outlook_meeting(tx.conn(), user_id, event_id)? else {
        // A removal of an event we never had (outside the window, or Calendly's).
        counts.skipped += 1;
        return Ok(());
    };
    let home: Option<String> = tx.conn().value("SELECT calendar_id FROM meetings WHERE id = ?1", args![id])?;
    if home.as_deref().is_some_and(|h| h != calendar_id) {
        counts.skipped += 1;
        return Ok(());
    }
    cancel_meeting(tx, id, counts)
}

/// Let go of a calendar that no longer syncs: its meetings are removed (a
/// DELETE: they are not canceled meetings, they are no longer synced).
fn release_calendar(tx: &mut WriteTx<'_, '_>, user_id: i64, calendar_id: &str) -> StoreResult<u64> {
    let ids: Vec<i64> = tx.conn().query_map(
        "SELECT id FROM meetings WHERE user_id = ?1 AND source = ?2 AND calendar_id = ?3 ORDER BY id",
        args![user_id, SOURCE, calendar_id],
        |r| r.get(0),
    )?;
    let mut removed = 0;
    for id in ids {
        if tx.delete(Table::Meetings, id)?.is_some() {
            removed += 1;
        }
    }
    Ok(removed)
}
