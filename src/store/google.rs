//! A user's Google calendars (`google_calendars`: the calendar list, the
//! ticks, each ticked calendar's sync token and window) and which meeting
//! each (calendar, event) is (`google_event_links`). The operations callers
//! use are the `impl Store` block at the top; the row helpers below it are
//! the store's own, shared with [`super::google_sync`]. Meetings themselves
//! are written only through the writer's logged calls, never here.

use std::collections::HashSet;

use super::sql::{args, Conn, Row};
use super::{google_sync, Store, StoreResult};

/// The calendar list as stored after a read of Google's.
#[derive(Debug, Clone)]
pub struct SavedCalendarList {
    /// Every calendar on the list, the primary first, then by name.
    pub calendars: Vec<CalendarRow>,
    /// Ticked calendars that left Google's list: let go of like an untick.
    pub gone: Vec<String>,
}

/// What a new set of ticks changed.
#[derive(Debug, Clone, Default)]
pub struct SelectionChange {
    pub added: Vec<String>,
    pub dropped: Vec<String>,
}

impl Store {
    /// Every calendar on the user's list, the primary first, then by name.
    pub async fn google_calendars(&self, user_id: i64) -> StoreResult<Vec<CalendarRow>> {
        self.read(move |c| calendars(c, user_id)).await
    }

    /// The user's ticked calendars.
    pub async fn ticked_google_calendars(&self, user_id: i64) -> StoreResult<Vec<CalendarRow>> {
        self.read(move |c| ticked(c, user_id)).await
    }

    /// Has the user's calendar list been read at least once?
    pub async fn has_google_calendar_list(&self, user_id: i64) -> StoreResult<bool> {
        self.read(move |c| has_calendar_list(c, user_id)).await
    }

    /// Store the calendar list Google gave. The first time a user's list is
    /// stored, the calendars in `configured` (ids) are ticked; after that
    /// the user's ticks rule. Ticked calendars Google no longer lists are
    /// let go of (their meetings, as for an untick) in the same transaction.
    pub async fn save_google_calendar_list(
        &self,
        user_id: i64,
        listed: Vec<ListedCalendar>,
        configured: HashSet<String>,
    ) -> StoreResult<SavedCalendarList> {
        self.writer
            .write(move |tx| {
                let first = !has_calendar_list(tx.conn(), user_id)?;
                let now = tx.now().to_string();
                let tick = |c: &ListedCalendar| first && configured.contains(&c.calendar_id);
                let gone = save_calendar_list(tx.conn(), user_id, &listed, &tick, &now)?;
                for cal in &gone {
                    google_sync::release_calendar(tx, user_id, cal)?;
                }
                Ok(SavedCalendarList { calendars: calendars(tx.conn(), user_id)?, gone })
            })
            .await
    }

    /// Tick exactly the calendars in `chosen` (ids on the user's list). A
    /// newly ticked calendar starts with a full listing; an unticked one lets
    /// go of the meetings only it listed, in the same transaction.
    pub async fn select_google_calendars(&self, user_id: i64, chosen: Vec<String>) -> StoreResult<SelectionChange> {
        self.writer
            .write(move |tx| {
                let now = tx.now().to_string();
                let mut change = SelectionChange::default();
                for c in calendars(tx.conn(), user_id)? {
                    let want = chosen.contains(&c.calendar_id);
                    if want && !c.selected {
                        set_selected(tx.conn(), user_id, &c.calendar_id, true, &now)?;
                        change.added.push(c.calendar_id);
                    } else if !want && c.selected {
                        set_selected(tx.conn(), user_id, &c.calendar_id, false, &now)?;
                        google_sync::release_calendar(tx, user_id, &c.calendar_id)?;
                        change.dropped.push(c.calendar_id);
                    }
                }
                Ok(change)
            })
            .await
    }

    /// Forget one calendar's sync token (Google answered 410): it is listed in full next.
    pub async fn forget_google_sync_token(&self, user_id: i64, calendar_id: &str) -> StoreResult<()> {
        let calendar_id = calendar_id.to_string();
        self.writer.write(move |tx| clear_sync_tokens(tx.conn(), user_id, Some(&calendar_id))).await
    }
}

/// A calendar on a user's list.
#[derive(Debug, Clone, PartialEq)]
pub struct CalendarRow {
    pub calendar_id: String,
    pub name: String,
    pub color: Option<String>,
    pub primary: bool,
    pub selected: bool,
    pub sync_token: Option<String>,
    pub window_end: Option<String>,
    pub time_zone: Option<String>,
}

/// A calendar as `calendarList.list` describes it.
#[derive(Debug, Clone)]
pub struct ListedCalendar {
    pub calendar_id: String,
    pub name: String,
    pub color: Option<String>,
    pub primary: bool,
    pub time_zone: Option<String>,
}

fn calendar_from_row(r: &Row) -> StoreResult<CalendarRow> {
    Ok(CalendarRow {
        calendar_id: r.get(0)?,
        name: r.get(1)?,
        color: r.get(2)?,
        primary: r.get(3)?,
        selected: r.get(4)?,
        sync_token: r.get(5)?,
        window_end: r.get(6)?,
        time_zone: r.get(7)?,
    })
}

const CALENDAR_SELECT: &str =
    "SELECT calendar_id, name, color, is_primary, selected, sync_token, window_end, time_zone FROM google_calendars";

/// Every calendar on the user's list, the primary first, then by name.
/// (`lower(name)` is SQLite's `COLLATE NOCASE` on both engines; the
/// calendar id, unique per user, breaks ties.)
pub(super) fn calendars(conn: &Conn<'_>, user_id: i64) -> StoreResult<Vec<CalendarRow>> {
    conn.query_map(
        &format!("{CALENDAR_SELECT} WHERE user_id = ?1 ORDER BY is_primary DESC, lower(name), calendar_id"),
        args![user_id],
        calendar_from_row,
    )
}

/// The user's ticked calendars.
pub(super) fn ticked(conn: &Conn<'_>, user_id: i64) -> StoreResult<Vec<CalendarRow>> {
    Ok(calendars(conn, user_id)?.into_iter().filter(|c| c.selected).collect())
}

/// Has the user's calendar list been read at least once?
pub(super) fn has_calendar_list(conn: &Conn<'_>, user_id: i64) -> StoreResult<bool> {
    conn.value("SELECT EXISTS (SELECT 1 FROM google_calendars WHERE user_id = ?1)", args![user_id])
}

/// Store the calendar list Google gave. New entries are ticked when `tick`
/// says so (the configured set, the first time only); entries Google no
/// longer lists are removed. Returns the ids of removed entries that were
/// ticked, so their meetings can be let go as for an untick.
pub(super) fn save_calendar_list(
    conn: &Conn<'_>,
    user_id: i64,
    listed: &[ListedCalendar],
    tick: &dyn Fn(&ListedCalendar) -> bool,
    now: &str,
) -> StoreResult<Vec<String>> {
    let known: Vec<CalendarRow> = calendars(conn, user_id)?;
    for c in listed {
        let selected = tick(c);
        conn.execute(
            "INSERT INTO google_calendars (user_id, calendar_id, name, color, is_primary, selected, time_zone, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (user_id, calendar_id) DO UPDATE SET name = excluded.name, color = excluded.color,
                 is_primary = excluded.is_primary, time_zone = excluded.time_zone, updated_at = excluded.updated_at",
            args![user_id, c.calendar_id, c.name, c.color, c.primary, selected, c.time_zone, now],
        )?;
    }
    let mut gone_ticked = Vec::new();
    for k in known {
        if !listed.iter().any(|c| c.calendar_id == k.calendar_id) {
            conn.execute("DELETE FROM google_calendars WHERE user_id = ?1 AND calendar_id = ?2", args![user_id, k.calendar_id])?;
            if k.selected {
                gone_ticked.push(k.calendar_id);
            }
        }
    }
    Ok(gone_ticked)
}

/// Tick or untick a calendar. Either way its sync token and window are
/// forgotten: a ticked calendar starts with a full sync.
pub(super) fn set_selected(conn: &Conn<'_>, user_id: i64, calendar_id: &str, selected: bool, now: &str) -> StoreResult<usize> {
    conn.execute(
        "UPDATE google_calendars SET selected = ?3, sync_token = NULL, window_end = NULL, updated_at = ?4
         WHERE user_id = ?1 AND calendar_id = ?2",
        args![user_id, calendar_id, selected, now],
    )
}

/// What the last page of a calendar's listing commits.
pub(super) fn save_sync_token(conn: &Conn<'_>, user_id: i64, calendar_id: &str, token: Option<&str>) -> StoreResult<()> {
    conn.execute(
        "UPDATE google_calendars SET sync_token = ?3 WHERE user_id = ?1 AND calendar_id = ?2 AND selected",
        args![user_id, calendar_id, token],
    )?;
    Ok(())
}

pub(super) fn save_window_end(conn: &Conn<'_>, user_id: i64, calendar_id: &str, window_end: &str) -> StoreResult<()> {
    conn.execute(
        "UPDATE google_calendars SET window_end = ?3 WHERE user_id = ?1 AND calendar_id = ?2 AND selected",
        args![user_id, calendar_id, window_end],
    )?;
    Ok(())
}

/// Forget every sync token of the user (a 410, or another Google account).
pub(super) fn clear_sync_tokens(conn: &Conn<'_>, user_id: i64, calendar_id: Option<&str>) -> StoreResult<()> {
    conn.execute(
        "UPDATE google_calendars SET sync_token = NULL WHERE user_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR calendar_id = ?2)",
        args![user_id, calendar_id],
    )?;
    Ok(())
}

/// Another Google account was connected: its calendars are listed afresh.
pub(super) fn forget_calendars(conn: &Conn<'_>, user_id: i64) -> StoreResult<()> {
    conn.execute("DELETE FROM google_calendars WHERE user_id = ?1", args![user_id])?;
    conn.execute("DELETE FROM google_event_links WHERE user_id = ?1", args![user_id])?;
    Ok(())
}

/// One (calendar, event) → meeting entry.
#[derive(Debug, Clone, PartialEq)]
pub struct EventLink {
    pub calendar_id: String,
    pub event_id: String,
    pub meeting_id: i64,
}

fn link_from_row(r: &Row) -> StoreResult<EventLink> {
    Ok(EventLink { calendar_id: r.get(0)?, event_id: r.get(1)?, meeting_id: r.get(2)? })
}

/// The meeting a calendar's event is linked to.
pub(super) fn link(conn: &Conn<'_>, user_id: i64, calendar_id: &str, event_id: &str) -> StoreResult<Option<EventLink>> {
    conn.query_opt(
        "SELECT calendar_id, event_id, meeting_id FROM google_event_links WHERE user_id = ?1 AND calendar_id = ?2 AND event_id = ?3",
        args![user_id, calendar_id, event_id],
    )?
    .map(|r| link_from_row(&r))
    .transpose()
}

/// Links of the same event id in any calendar of the user.
pub(super) fn links_by_event(conn: &Conn<'_>, user_id: i64, event_id: &str) -> StoreResult<Vec<EventLink>> {
    conn.query_map(
        "SELECT calendar_id, event_id, meeting_id FROM google_event_links WHERE user_id = ?1 AND event_id = ?2 ORDER BY calendar_id",
        args![user_id, event_id],
        link_from_row,
    )
}

/// Links of the same iCalendar UID *and* occurrence (never the UID alone:
/// every occurrence of a series shares it).
pub(super) fn links_by_ical(conn: &Conn<'_>, user_id: i64, ical_uid: &str, occurrence: &str) -> StoreResult<Vec<EventLink>> {
    conn.query_map(
        "SELECT calendar_id, event_id, meeting_id FROM google_event_links
         WHERE user_id = ?1 AND ical_uid = ?2 AND occurrence = ?3 ORDER BY calendar_id, event_id",
        args![user_id, ical_uid, occurrence],
        link_from_row,
    )
}

/// Every link to a meeting.
pub(super) fn links_of_meeting(conn: &Conn<'_>, meeting_id: i64) -> StoreResult<Vec<EventLink>> {
    conn.query_map(
        "SELECT calendar_id, event_id, meeting_id FROM google_event_links WHERE meeting_id = ?1 ORDER BY calendar_id",
        args![meeting_id],
        link_from_row,
    )
}

/// Every link of one calendar.
pub(super) fn links_of_calendar(conn: &Conn<'_>, user_id: i64, calendar_id: &str) -> StoreResult<Vec<EventLink>> {
    conn.query_map(
        "SELECT calendar_id, event_id, meeting_id FROM google_event_links WHERE user_id = ?1 AND calendar_id = ?2 ORDER BY event_id",
        args![user_id, calendar_id],
        link_from_row,
    )
}

/// Links of one calendar to occurrences of a recurring series.
pub(super) fn links_of_series(conn: &Conn<'_>, user_id: i64, calendar_id: &str, series_id: &str) -> StoreResult<Vec<EventLink>> {
    conn.query_map(
        "SELECT calendar_id, event_id, meeting_id FROM google_event_links WHERE user_id = ?1 AND calendar_id = ?2 AND series_id = ?3",
        args![user_id, calendar_id, series_id],
        link_from_row,
    )
}

/// Links of one calendar whose meeting overlaps `[from, to)`.
pub(super) fn links_in_window(conn: &Conn<'_>, user_id: i64, calendar_id: &str, from: &str, to: &str) -> StoreResult<Vec<EventLink>> {
    conn.query_map(
        "SELECT l.calendar_id, l.event_id, l.meeting_id FROM google_event_links l JOIN meetings m ON m.id = l.meeting_id
         WHERE l.user_id = ?1 AND l.calendar_id = ?2 AND m.ends_at > ?3 AND m.starts_at < ?4",
        args![user_id, calendar_id, from, to],
        link_from_row,
    )
}

/// What identifies an event across calendars besides its id.
#[derive(Debug, Clone, Default)]
pub struct LinkKeys<'a> {
    pub ical_uid: Option<&'a str>,
    pub occurrence: Option<&'a str>,
    pub series_id: Option<&'a str>,
}

pub(super) fn save_link(
    conn: &Conn<'_>,
    user_id: i64,
    calendar_id: &str,
    event_id: &str,
    meeting_id: i64,
    keys: &LinkKeys<'_>,
) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO google_event_links (user_id, calendar_id, event_id, meeting_id, ical_uid, occurrence, series_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (user_id, calendar_id, event_id) DO UPDATE SET meeting_id = excluded.meeting_id,
             ical_uid = excluded.ical_uid, occurrence = excluded.occurrence, series_id = excluded.series_id",
        args![user_id, calendar_id, event_id, meeting_id, keys.ical_uid, keys.occurrence, keys.series_id],
    )?;
    Ok(())
}

pub(super) fn delete_link(conn: &Conn<'_>, user_id: i64, calendar_id: &str, event_id: &str) -> StoreResult<()> {
    conn.execute(
        "DELETE FROM google_event_links WHERE user_id = ?1 AND calendar_id = ?2 AND event_id = ?3",
        args![user_id, calendar_id, event_id],
    )?;
    Ok(())
}

pub(super) fn delete_links_of_meeting(conn: &Conn<'_>, meeting_id: i64) -> StoreResult<()> {
    conn.execute("DELETE FROM google_event_links WHERE meeting_id = ?1", args![meeting_id])?;
    Ok(())
}

/// A `google` meeting imported before links existed (by its event id), or
/// one whose links all went (a canceled meeting that comes back).
pub(super) fn meeting_by_external_id(conn: &Conn<'_>, user_id: i64, event_id: &str) -> StoreResult<Option<i64>> {
    conn.value_opt("SELECT id FROM meetings WHERE user_id = ?1 AND source = 'google' AND external_id = ?2", args![user_id, event_id])
}

/// `google` meetings in `[from, to)` that no calendar links, not canceled:
/// rows imported before the upgrade that a full sync did not list again.
pub(super) fn unlinked_meetings_in_window(conn: &Conn<'_>, user_id: i64, from: &str, to: &str) -> StoreResult<Vec<i64>> {
    conn.query_map(
        "SELECT m.id FROM meetings m
         WHERE m.user_id = ?1 AND m.source = 'google' AND m.status <> 'canceled' AND m.ends_at > ?2 AND m.starts_at < ?3
           AND NOT EXISTS (SELECT 1 FROM google_event_links l WHERE l.meeting_id = m.id)",
        args![user_id, from, to],
        |r| r.get(0),
    )
}

/// `google` meetings whose home is this calendar and that no calendar
/// links any more (canceled there earlier): they go when it is unticked.
pub(super) fn unlinked_meetings_of_calendar(conn: &Conn<'_>, user_id: i64, calendar_id: &str) -> StoreResult<Vec<i64>> {
    conn.query_map(
        "SELECT m.id FROM meetings m
         WHERE m.user_id = ?1 AND m.source = 'google' AND m.calendar_id = ?2
           AND NOT EXISTS (SELECT 1 FROM google_event_links l WHERE l.meeting_id = m.id)",
        args![user_id, calendar_id],
        |r| r.get(0),
    )
}
