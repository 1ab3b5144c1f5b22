//! One meeting per booking. Calendly writes every booking into the
//! adviser's Google or Outlook calendar, so one booking arrives twice: as a
//! Calendly delivery and as a calendar event. It is ONE meeting, source
//! `calendly`, with the event's id in `google_event_id` (Google) or
//! `microsoft_event_id` (Outlook), whichever comes first:
//!
//! - **Calendly first.** The Google sync finds the Calendly meeting
//!   (`calendly_meeting_for_event`) and leaves the event to it: no second
//!   meeting, now or on later edits of the event. A match made by time and
//!   email stores the event id on the meeting, so later edits match by id.
//! - **Google first.** The Calendly delivery finds the `google` meeting
//!   (`calendar_copy`) and takes it over: one UPDATE turns it into the
//!   Calendly meeting (source, external id, Calendly's fields), keeping its
//!   id, its notes and its client link.
//! - **Outlook** is the same both ways (`calendly_meeting_for_outlook_event`,
//!   `calendar_copy`). The Outlook meeting carries its event id in
//!   `microsoft_event_id` from the start, and a takeover keeps that column.
//!
//! A booking is recognised by the Google event id Calendly reports
//! (`calendar_event.external_id`, for Google calendars only); without one
//! (always for Outlook: Calendly reports Outlook's ordinary id, not the
//! immutable one syncgate asks Graph for), by the same start time and an
//! attendee whose email is the invitee's. Only lookups live here; both
//! callers run inside the store's writer, so the two sides never race. They
//! live in the store because both sides' writes need them inside their
//! transaction, and neither feature may import the other.

use serde_json::Value;

use super::error::StoreResult;
use super::sql::{args, Conn};

/// The Calendly meeting a Google event is the copy of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookingMatch {
    pub meeting_id: i64,
    /// Found by the stored Google event id; false when found by time and email
    /// (the caller then stores the event id on the meeting).
    pub by_event_id: bool,
}

/// For the Google sync: the user's Calendly meeting this event belongs to.
/// By `google_event_id` first; else a Calendly meeting without one that
/// starts at `starts_at` (UTC, as stored) and lists one of `attendee_emails`
/// among its invitees.
pub(super) fn calendly_meeting_for_event(
    conn: &Conn<'_>,
    user_id: i64,
    event_id: &str,
    starts_at: &str,
    attendee_emails: &[String],
) -> StoreResult<Option<BookingMatch>> {
    calendly_meeting_by(conn, "google_event_id", "google_event_id IS NULL", user_id, event_id, starts_at, attendee_emails)
}

/// For the Outlook sync: the same, by `microsoft_event_id`; a booking
/// already linked to a calendar event of either kind is not taken again.
pub(super) fn calendly_meeting_for_outlook_event(
    conn: &Conn<'_>,
    user_id: i64,
    event_id: &str,
    starts_at: &str,
    attendee_emails: &[String],
) -> StoreResult<Option<BookingMatch>> {
    let unlinked = "microsoft_event_id IS NULL AND google_event_id IS NULL";
    calendly_meeting_by(conn, "microsoft_event_id", unlinked, user_id, event_id, starts_at, attendee_emails)
}

/// The Calendly meeting whose `id_column` is `event_id`; else one matching
/// `unlinked` at `starts_at` that lists one of `attendee_emails`.
fn calendly_meeting_by(
    conn: &Conn<'_>,
    id_column: &'static str,
    unlinked: &'static str,
    user_id: i64,
    event_id: &str,
    starts_at: &str,
    attendee_emails: &[String],
) -> StoreResult<Option<BookingMatch>> {
    let by_id: Option<i64> = conn.value_opt(
        &format!("SELECT id FROM meetings WHERE user_id = ?1 AND source = 'calendly' AND {id_column} = ?2 ORDER BY id LIMIT 1"),
        args![user_id, event_id],
    )?;
    if let Some(meeting_id) = by_id {
        return Ok(Some(BookingMatch { meeting_id, by_event_id: true }));
    }
    let candidates = people_at(
        conn,
        &format!(
            "SELECT id, invitees FROM meetings
             WHERE user_id = ?1 AND source = 'calendly' AND {unlinked} AND starts_at = ?2 AND status <> 'canceled'
             ORDER BY id"
        ),
        user_id,
        starts_at,
    )?;
    for email in attendee_emails {
        if let Some((meeting_id, _)) = candidates.iter().find(|(_, people)| lists_email(people, email)) {
            return Ok(Some(BookingMatch { meeting_id: *meeting_id, by_event_id: false }));
        }
    }
    Ok(None)
}

/// For a Calendly delivery that has no meeting yet: the user's `google` or
/// `microsoft` meeting that is this booking's calendar copy. By the Google
/// event id when Calendly reports one; without it, a meeting of either
/// calendar that is not canceled, starts at `starts_at` (UTC, as stored) and
/// has the invitee among its attendees.
pub(super) fn calendar_copy(
    conn: &Conn<'_>,
    user_id: i64,
    google_event_id: Option<&str>,
    starts_at: &str,
    invitee_email: Option<&str>,
) -> StoreResult<Option<i64>> {
    if let Some(event_id) = google_event_id {
        return conn.value_opt(
            "SELECT id FROM meetings WHERE user_id = ?1 AND source = 'google' AND (external_id = ?2 OR google_event_id = ?2)
             ORDER BY id LIMIT 1",
            args![user_id, event_id],
        );
    }
    let Some(email) = invitee_email.filter(|e| !e.is_empty()) else { return Ok(None) };
    let candidates = people_at(
        conn,
        "SELECT id, attendees FROM meetings
         WHERE user_id = ?1 AND source IN ('google', 'microsoft') AND starts_at = ?2 AND status <> 'canceled'
         ORDER BY id",
        user_id,
        starts_at,
    )?;
    Ok(candidates.into_iter().find(|(_, people)| lists_email(people, email)).map(|(id, _)| id))
}

/// The meetings `sql` selects (id, a people column) for a user at a start
/// time, lowest id first, with their people lists parsed. The email match is
/// made here rather than in SQL because the JSON functions differ (SQLite's
/// json_each over text, PostgreSQL's jsonb_array_elements), and a start time
/// narrows the candidates to a handful. A malformed value must not fail the
/// caller (a Google sync, a delivery): it then lists nobody.
fn people_at(conn: &Conn<'_>, sql: &str, user_id: i64, starts_at: &str) -> StoreResult<Vec<(i64, Value)>> {
    conn.query_map(sql, args![user_id, starts_at], |r| {
        let people = r.get::<Option<String>>(1)?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
        Ok((r.get(0)?, people))
    })
}

/// Whether a people list (a JSON array of objects) has one whose `email` is
/// `email`, compared without regard to ASCII case as SQLite's lower() did.
fn lists_email(people: &Value, email: &str) -> bool {
    people
        .as_array()
        .is_some_and(|list| list.iter().any(|p| p.get("email").and_then(Value::as_str).is_some_and(|e| e.eq_ignore_ascii_case(email))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> rusqlite::Connection {
        let mut c = rusqlite::Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut c).unwrap();
        c.execute_batch(
            "INSERT INTO users (id, email, role, created_at, updated_at) VALUES (1, 'a@x.com', 'user', 't', 't'), (2, 'b@x.com', 'user', 't', 't');",
        )
        .unwrap();
        c
    }

    #[allow(clippy::too_many_arguments)]
    fn meeting(c: &Conn<'_>, user: i64, source: &str, ext: &str, gev: Option<&str>, start: &str, people: &str, status: &str) -> i64 {
        let col = if source == "calendly" { "invitees" } else { "attendees" };
        c.value(
            &format!(
                "INSERT INTO meetings (user_id, source, external_id, google_event_id, title, starts_at, ends_at, status, {col}, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'm', ?5, ?5, ?6, ?7, 't', 't') RETURNING id"
            ),
            args![user, source, ext, gev, start, status, people],
        )
        .unwrap()
    }

    const T: &str = "2026-12-01T10:00:00.000Z";

    #[test]
    fn a_google_event_finds_its_calendly_booking_by_id_then_by_time_and_email() {
        let db = db();
        let c = Conn::Sqlite(&db);
        let by_id = meeting(&c, 1, "calendly", "https://cal/ev1", Some("g1"), T, "[]", "scheduled");
        let plain = meeting(&c, 1, "calendly", "https://cal/ev2", None, T, r#"[{"uri":"u","email":"Client@Y.com"}]"#, "scheduled");
        meeting(&c, 1, "calendly", "https://cal/ev3", None, T, "not json", "scheduled");
        meeting(&c, 1, "calendly", "https://cal/ev4", None, T, r#"["client@y.com"]"#, "scheduled");
        meeting(&c, 1, "calendly", "https://cal/ev5", None, T, r#"{"email":"client@y.com"}"#, "scheduled");
        let emails = vec!["client@y.com".to_string()];
        assert_eq!(calendly_meeting_for_event(&c, 1, "g1", T, &[]).unwrap(), Some(BookingMatch { meeting_id: by_id, by_event_id: true }));
        assert_eq!(
            calendly_meeting_for_event(&c, 1, "g2", T, &emails).unwrap(),
            Some(BookingMatch { meeting_id: plain, by_event_id: false })
        );
        assert_eq!(calendly_meeting_for_event(&c, 1, "g2", "2026-12-01T11:00:00.000Z", &emails).unwrap(), None, "another time");
        assert_eq!(calendly_meeting_for_event(&c, 1, "g2", T, &["other@y.com".into()]).unwrap(), None, "another person");
        assert_eq!(
            calendly_meeting_for_event(&c, 1, "g2", T, &["nobody@y.com".into(), "CLIENT@y.com".into()]).unwrap(),
            Some(BookingMatch { meeting_id: plain, by_event_id: false }),
            "any of the attendees"
        );
        assert_eq!(calendly_meeting_for_event(&c, 2, "g1", T, &emails).unwrap(), None, "another adviser");
    }

    #[test]
    fn a_calendly_booking_finds_its_calendar_copy() {
        let db = db();
        let c = Conn::Sqlite(&db);
        let g =
            meeting(&c, 1, "google", "g1", Some("g1"), T, r#"[{"email":"me@x.com","self":true},{"email":"client@y.com"}]"#, "scheduled");
        meeting(&c, 1, "google", "g9", Some("g9"), T, r#"[{"email":"client@y.com"}]"#, "canceled");
        assert_eq!(calendar_copy(&c, 1, Some("g1"), "whenever", None).unwrap(), Some(g));
        assert_eq!(calendar_copy(&c, 1, Some("g2"), T, Some("client@y.com")).unwrap(), None, "an id that names no copy");
        assert_eq!(calendar_copy(&c, 1, None, T, Some("CLIENT@y.com")).unwrap(), Some(g));
        assert_eq!(calendar_copy(&c, 1, None, T, Some("someone@y.com")).unwrap(), None);
        assert_eq!(calendar_copy(&c, 1, None, T, None).unwrap(), None);
        assert_eq!(calendar_copy(&c, 2, Some("g1"), T, None).unwrap(), None, "another adviser");
        let outlook = meeting(&c, 2, "microsoft", "AAMk1", None, T, r#"[{"email":"client@y.com"}]"#, "scheduled");
        assert_eq!(calendar_copy(&c, 2, None, T, Some("client@y.com")).unwrap(), Some(outlook), "an Outlook copy by time and email");
    }

    #[test]
    fn an_outlook_event_finds_its_calendly_booking_by_id_then_by_time_and_email() {
        let db = db();
        let c = Conn::Sqlite(&db);
        let plain = meeting(&c, 1, "calendly", "https://cal/ev2", None, T, r#"[{"uri":"u","email":"client@y.com"}]"#, "scheduled");
        let emails = vec!["client@y.com".to_string()];
        assert_eq!(
            calendly_meeting_for_outlook_event(&c, 1, "AAMk1", T, &emails).unwrap(),
            Some(BookingMatch { meeting_id: plain, by_event_id: false })
        );
        c.execute("UPDATE meetings SET microsoft_event_id = 'AAMk1' WHERE id = ?1", args![plain]).unwrap();
        assert_eq!(
            calendly_meeting_for_outlook_event(&c, 1, "AAMk1", "2027-01-01T00:00:00.000Z", &[]).unwrap(),
            Some(BookingMatch { meeting_id: plain, by_event_id: true }),
            "by id, even after the booking moved"
        );
        assert_eq!(calendly_meeting_for_outlook_event(&c, 1, "AAMk2", T, &emails).unwrap(), None, "the booking has its event");
    }
}
