//! Outlook events as Graph sends them ([`GraphEvent`]), which of them are
//! meetings ([`why_not_a_meeting`]) and what meeting one becomes
//! ([`to_meeting`]). The rule means what the Google one means (only real
//! meetings; the user's own refusal cancels); it is written down in
//! `docs/microsoft-graph.md` ("Which events become meetings"). Pure
//! functions: no I/O, and no input makes them panic.

use serde::Deserialize;

use crate::store::synced_meetings::{clip, Attendee, Attendees, MeetingFields, MAX_DESCRIPTION, MAX_LOCATION, MAX_TITLE, MAX_URL};
use crate::store::timefmt;

/// The fields of a Graph `event` syncgate reads. Everything is optional and
/// defaulted, so an event with odd or missing fields still deserializes and
/// the rule decides, instead of a serde error dropping the whole item.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphEvent {
    pub id: String,
    /// Differs per occurrence of a series (unlike Google's `iCalUID`).
    #[serde(rename = "iCalUId")]
    pub i_cal_uid: Option<String>,
    pub subject: Option<String>,
    pub body_preview: Option<String>,
    pub start: Option<GraphTime>,
    pub end: Option<GraphTime>,
    pub is_all_day: Option<bool>,
    /// `free`, `tentative`, `busy`, `oof`, `workingElsewhere`, `unknown`.
    pub show_as: Option<String>,
    /// `singleInstance`, `occurrence`, `exception`, `seriesMaster`.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub is_cancelled: Option<bool>,
    /// The signed-in user's own answer.
    pub response_status: Option<GraphResponse>,
    pub is_organizer: Option<bool>,
    pub organizer: Option<GraphRecipient>,
    pub attendees: Option<Vec<GraphAttendee>>,
    pub location: Option<GraphLocation>,
    pub is_online_meeting: Option<bool>,
    pub online_meeting: Option<GraphOnlineMeeting>,
    /// Deprecated by Graph in favour of `onlineMeeting.joinUrl`; still read as a fallback.
    pub online_meeting_url: Option<String>,
    pub series_master_id: Option<String>,
    pub last_modified_date_time: Option<String>,
}

/// A `dateTimeTimeZone`: a wall-clock time and the zone it is in. syncgate
/// asks for UTC (`Prefer: outlook.timezone="UTC"`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphTime {
    pub date_time: Option<String>,
    pub time_zone: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct GraphResponse {
    /// `none`, `organizer`, `tentativelyAccepted`, `accepted`, `declined`,
    /// `notResponded`, in whatever case Graph writes them.
    pub response: Option<String>,
    pub time: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphRecipient {
    pub email_address: Option<GraphEmail>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct GraphEmail {
    pub name: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphAttendee {
    pub email_address: Option<GraphEmail>,
    /// `required`, `optional`, `resource` (a room or equipment).
    #[serde(rename = "type")]
    pub attendee_type: Option<String>,
    pub status: Option<GraphResponse>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphLocation {
    pub display_name: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphOnlineMeeting {
    pub join_url: Option<String>,
}

fn is(value: Option<&str>, name: &str) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case(name))
}

impl GraphEvent {
    /// The user's own answer, case-insensitively `declined`: the top-level
    /// `responseStatus`, else their own entry among the attendees.
    pub fn declined_by(&self, self_address: &str) -> bool {
        match self.response_status.as_ref().and_then(|r| r.response.as_deref()).filter(|r| !r.trim().is_empty()) {
            Some(r) => is(Some(r), "declined"),
            None => self
                .attendees
                .iter()
                .flatten()
                .filter(|a| same_address(a.address(), self_address))
                .any(|a| is(a.status.as_ref().and_then(|s| s.response.as_deref()), "declined")),
        }
    }

    /// Which occurrence it is: the start, in the stored form. Graph gives
    /// each occurrence its own `iCalUId`, so (`iCalUId`, start) names it.
    pub fn occurrence(&self) -> Option<String> {
        instant(self.start.as_ref()?, self.is_all_day == Some(true))
    }
}

impl GraphAttendee {
    fn address(&self) -> Option<&str> {
        self.email_address.as_ref()?.address.as_deref().map(str::trim).filter(|a| !a.is_empty())
    }
}

fn same_address(a: Option<&str>, b: &str) -> bool {
    let b = b.trim();
    !b.is_empty() && a.is_some_and(|a| a.trim().eq_ignore_ascii_case(b))
}

/// Why an event is not a meeting, or None when it is one. Cancelled and
/// declined events are meetings here: they become `canceled` meetings (so a
/// meeting already synced is shown as cancelled, not removed).
///
/// - `type`: single events, occurrences and exceptions are meetings; a
///   `seriesMaster` is the series' template (calendar view lists its
///   occurrences, which are the meetings); an unknown type is left out, as
///   Google's unknown event types are.
/// - `showAs`: `oof` (out of office) and `workingElsewhere` are the
///   counterparts of Google's `outOfOffice` and `workingLocation` types:
///   not meetings. `busy`, `tentative`, `unknown` and no value are. `free`
///   is a meeting too: it is the user's availability, like Google's
///   `transparency: transparent`, which Google's rule does not look at; a
///   client meeting marked free still takes place, and a meeting must not
///   vanish because its owner flipped their availability. Any other value
///   is left out (a new kind of block, like Google's unknown types).
pub fn why_not_a_meeting(ev: &GraphEvent) -> Option<&'static str> {
    let kind = ev.event_type.as_deref().map(str::trim).filter(|t| !t.is_empty());
    match kind {
        None => {}
        Some(t) if ["singleInstance", "occurrence", "exception"].iter().any(|k| t.eq_ignore_ascii_case(k)) => {}
        Some(t) if t.eq_ignore_ascii_case("seriesMaster") => return Some("series master"),
        Some(_) => return Some("unknown event type"),
    }
    let show_as = ev.show_as.as_deref().map(str::trim).filter(|s| !s.is_empty());
    match show_as {
        None => None,
        Some(s) if ["busy", "tentative", "free", "unknown"].iter().any(|k| s.eq_ignore_ascii_case(k)) => None,
        Some(s) if s.eq_ignore_ascii_case("oof") => Some("out of office"),
        Some(s) if s.eq_ignore_ascii_case("workingElsewhere") => Some("working elsewhere"),
        Some(_) => Some("unknown showAs"),
    }
}

/// Is it a meeting? See [`why_not_a_meeting`].
pub fn is_meeting(ev: &GraphEvent) -> bool {
    why_not_a_meeting(ev).is_none()
}

/// Zone names that mean UTC. syncgate asks Graph for UTC; a time in any
/// other zone would need a Windows-zone table to convert, so it is treated
/// as unreadable rather than guessed.
fn is_utc(zone: Option<&str>) -> bool {
    match zone.map(str::trim).filter(|z| !z.is_empty()) {
        None => true,
        Some(z) => ["UTC", "Etc/UTC", "tzone://Microsoft/Utc", "Coordinated Universal Time"].iter().any(|u| z.eq_ignore_ascii_case(u)),
    }
}

/// A start or end in the stored form. All-day: the date, at midnight UTC
/// (the date is the same whatever zone the times are in). Otherwise Graph's
/// `2026-12-08T10:00:00.0000000` in UTC, or any RFC 3339 time with an offset.
fn instant(t: &GraphTime, all_day: bool) -> Option<String> {
    let raw = t.date_time.as_deref()?.trim();
    if all_day {
        // The whole text must be a time, whatever its zone; the date is what counts.
        timefmt::normalize(raw).or_else(|| wall_clock_utc(raw))?;
        let d = timefmt::parse_date(raw.get(..10)?)?;
        return Some(timefmt::format(d.midnight().assume_utc()));
    }
    if let Some(s) = timefmt::normalize(raw) {
        return Some(s);
    }
    // No offset: a wall-clock time in `timeZone`, readable only when that is UTC.
    if !is_utc(t.time_zone.as_deref()) {
        return None;
    }
    wall_clock_utc(raw)
}

/// `2026-12-08T10:00:00.0000000` (no offset) read as UTC.
fn wall_clock_utc(raw: &str) -> Option<String> {
    let plain = raw.len() >= 19 && raw.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b':' | b'T' | b'.'));
    if !plain {
        return None;
    }
    timefmt::normalize(&format!("{raw}Z"))
}

/// Graph's answer words in Google's, so clients read one vocabulary.
fn google_response(r: &str) -> &'static str {
    let r = r.trim();
    if r.eq_ignore_ascii_case("accepted") || r.eq_ignore_ascii_case("organizer") {
        "accepted"
    } else if r.eq_ignore_ascii_case("declined") {
        "declined"
    } else if r.eq_ignore_ascii_case("tentativelyAccepted") {
        "tentative"
    } else {
        "needsAction"
    }
}

/// The meeting an event is (call it for events [`is_meeting`] accepts).
/// `self_address` is the user's own address (their Microsoft sign-in): their
/// attendee entry is marked `self` and left out of the addresses used to
/// link a client. None when the times are unreadable.
///
/// `declined` is set when the user declined *or* Graph says the event is
/// cancelled (`isCancelled`): both make the meeting `canceled`, which is all
/// `MeetingFields` records of either.
pub fn to_meeting(ev: &GraphEvent, self_address: &str) -> Option<MeetingFields> {
    let all_day = ev.is_all_day == Some(true);
    let start = ev.start.as_ref()?;
    let starts_at = instant(start, all_day)?;
    let ends_at = match ev.end.as_ref().and_then(|e| instant(e, all_day)) {
        Some(e) if e > starts_at || (!all_day && e == starts_at) => e,
        // No (or an earlier) end: an all-day event lasts its day, others are instants.
        _ if all_day => timefmt::format(timefmt::add(timefmt::parse(&starts_at)?, time::Duration::days(1))?),
        _ => starts_at.clone(),
    };
    let timezone = start.time_zone.as_deref().map(str::trim).filter(|t| !t.is_empty() && t.len() <= 100).map(str::to_string);
    let meeting_url = [ev.online_meeting.as_ref().and_then(|m| m.join_url.as_deref()), ev.online_meeting_url.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|u| u.starts_with("https://") || u.starts_with("http://"))
        .map(|u| u.chars().take(MAX_URL).collect());
    let organizer = ev.organizer.as_ref().and_then(|o| o.email_address.as_ref());
    let organizer_address = organizer.and_then(|e| e.address.as_deref()).map(str::trim).filter(|a| !a.is_empty());
    let own_response = ev.response_status.as_ref().and_then(|r| r.response.as_deref()).filter(|r| !r.trim().is_empty());

    let mut attendees = Attendees::default();
    let mut listed_organizer = false;
    for a in ev.attendees.iter().flatten() {
        let Some(address) = a.address() else { continue };
        let mine = same_address(Some(address), self_address);
        let response = a.status.as_ref().and_then(|s| s.response.as_deref());
        let organizer = same_address(organizer_address, address);
        let added = attendees.push(Attendee {
            email: address,
            name: a.email_address.as_ref().and_then(|e| e.name.as_deref()),
            // The user's own answer is the top-level responseStatus; their
            // attendee entry may still say `none`.
            response_status: if mine { own_response.or(response) } else { response }.map(google_response),
            organizer,
            is_self: mine,
            resource: is(a.attendee_type.as_deref(), "resource"),
        });
        listed_organizer |= added && organizer;
    }
    // Outlook does not list the organizer among the attendees; Google does.
    // A client who sent the invitation is only known as its organizer.
    if let (Some(address), false) = (organizer_address, listed_organizer) {
        let is_self = same_address(Some(address), self_address);
        attendees.push(Attendee {
            email: address,
            name: organizer.and_then(|o| o.name.as_deref()),
            response_status: Some(google_response(if is_self { own_response.unwrap_or("organizer") } else { "organizer" })),
            organizer: true,
            is_self,
            resource: false,
        });
    }
    let (attendees, attendee_emails) = attendees.into_parts();

    Some(MeetingFields {
        title: clip(ev.subject.as_deref(), MAX_TITLE).unwrap_or_else(|| "(no title)".into()),
        description: clip(ev.body_preview.as_deref(), MAX_DESCRIPTION),
        location: clip(ev.location.as_ref().and_then(|l| l.display_name.as_deref()), MAX_LOCATION),
        meeting_url,
        starts_at,
        ends_at,
        all_day,
        timezone,
        attendees,
        attendee_emails,
        declined: ev.is_cancelled == Some(true) || ev.declined_by(self_address),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MeetingStatus;
    use crate::store::synced_meetings::MAX_ATTENDEES;
    use serde_json::{json, Value};

    const ME: &str = "ada@contoso.example";

    fn ev(v: Value) -> GraphEvent {
        serde_json::from_value(v).unwrap()
    }

    /// An event shaped like Graph's (as `fake_graph` and the docs write them).
    fn sample(extra: Value) -> GraphEvent {
        let mut base = json!({
            "@odata.type": "#microsoft.graph.event",
            "id": "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A",
            "iCalUId": "040000008200E00074C5B7101A82E00800000000",
            "subject": "Portfolio review",
            "bodyPreview": "Quarterly review",
            "start": {"dateTime": "2026-12-08T10:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-12-08T11:00:00.0000000", "timeZone": "UTC"},
            "isAllDay": false,
            "isCancelled": false,
            "isOrganizer": false,
            "showAs": "busy",
            "type": "singleInstance",
            "responseStatus": {"response": "accepted", "time": "2026-12-01T09:00:00Z"},
            "organizer": {"emailAddress": {"name": "Client", "address": "client@fabrikam.example"}},
            "attendees": [
                {"type": "required", "status": {"response": "none", "time": "0001-01-01T00:00:00Z"},
                 "emailAddress": {"name": "Ada", "address": "Ada@Contoso.example"}},
                {"type": "resource", "status": {"response": "accepted"},
                 "emailAddress": {"name": "Room 1", "address": "room1@contoso.example"}}
            ],
            "location": {"displayName": "Room 1"},
            "isOnlineMeeting": false,
            "onlineMeeting": null,
            "seriesMasterId": null,
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        ev(base)
    }

    #[test]
    fn a_single_meeting_becomes_a_utc_meeting() {
        let e = sample(json!({}));
        assert!(is_meeting(&e));
        let m = to_meeting(&e, ME).unwrap();
        assert_eq!((m.starts_at.as_str(), m.ends_at.as_str()), ("2026-12-08T10:00:00.000Z", "2026-12-08T11:00:00.000Z"));
        assert!(!m.all_day);
        assert_eq!(m.timezone.as_deref(), Some("UTC"));
        assert_eq!(m.title, "Portfolio review");
        assert_eq!(m.description.as_deref(), Some("Quarterly review"));
        assert_eq!(m.location.as_deref(), Some("Room 1"));
        assert_eq!(m.status(), MeetingStatus::Scheduled);
        // Ada (self, answer from responseStatus), the room (not linked), the organizer added.
        let a = m.attendees.as_array().unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[0]["self"], true);
        assert_eq!(a[0]["response_status"], "accepted");
        assert_eq!(a[2]["email"], "client@fabrikam.example");
        assert_eq!(a[2]["organizer"], true);
        assert_eq!(m.attendee_emails, vec!["client@fabrikam.example"], "not the user, not the room");
    }

    #[test]
    fn occurrences_and_exceptions_are_meetings_their_master_is_not() {
        let occ = sample(json!({"type": "occurrence", "id": "AAkAL_20261208T1000", "seriesMasterId": "AAkAL"}));
        assert!(is_meeting(&occ));
        assert_eq!(occ.occurrence().as_deref(), Some("2026-12-08T10:00:00.000Z"));
        let exc = sample(json!({"type": "exception", "seriesMasterId": "AAkAL"}));
        assert!(is_meeting(&exc));
        let master = sample(json!({"type": "seriesMaster"}));
        assert_eq!(why_not_a_meeting(&master), Some("series master"));
        assert_eq!(why_not_a_meeting(&sample(json!({"type": "somethingNew"}))), Some("unknown event type"));
        assert!(is_meeting(&sample(json!({"type": null}))), "no type: a single event");
    }

    #[test]
    fn availability_decides_which_blocks_are_not_meetings() {
        for s in ["busy", "tentative", "free", "unknown", "BUSY"] {
            assert!(is_meeting(&sample(json!({"showAs": s}))), "{s}");
        }
        assert!(is_meeting(&sample(json!({"showAs": null}))));
        assert_eq!(why_not_a_meeting(&sample(json!({"showAs": "oof"}))), Some("out of office"));
        assert_eq!(why_not_a_meeting(&sample(json!({"showAs": "workingElsewhere"}))), Some("working elsewhere"));
        assert_eq!(why_not_a_meeting(&sample(json!({"showAs": "focus"}))), Some("unknown showAs"));
    }

    #[test]
    fn cancelled_events_are_canceled_meetings() {
        let e = sample(json!({"isCancelled": true, "subject": "Canceled: Portfolio review"}));
        assert!(is_meeting(&e), "kept, so a synced meeting shows as cancelled");
        assert_eq!(to_meeting(&e, ME).unwrap().status(), MeetingStatus::Canceled);
    }

    #[test]
    fn the_users_own_refusal_cancels_in_any_case() {
        for r in ["declined", "Declined", "DECLINED"] {
            let e = sample(json!({"responseStatus": {"response": r}}));
            assert!(to_meeting(&e, ME).unwrap().declined, "{r}");
        }
        for r in ["accepted", "tentativelyAccepted", "none", "notResponded", "organizer", "NotResponded"] {
            let e = sample(json!({"responseStatus": {"response": r}}));
            assert!(!to_meeting(&e, ME).unwrap().declined, "{r}");
        }
        // Someone else's refusal does not count.
        let other = sample(json!({"responseStatus": {"response": "accepted"}, "attendees": [
            {"type": "required", "status": {"response": "declined"}, "emailAddress": {"address": "bob@contoso.example"}}]}));
        assert!(!to_meeting(&other, ME).unwrap().declined);
        // No top-level answer: the user's own attendee entry decides.
        let own = sample(json!({"responseStatus": null, "attendees": [
            {"type": "required", "status": {"response": "Declined"}, "emailAddress": {"address": "ADA@contoso.example"}}]}));
        assert!(to_meeting(&own, ME).unwrap().declined);
        let t = sample(json!({"responseStatus": {"response": "tentativelyAccepted"}}));
        assert_eq!(to_meeting(&t, ME).unwrap().attendees[0]["response_status"], "tentative");
    }

    #[test]
    fn all_day_events_are_dates_at_midnight_utc() {
        let e = sample(json!({"isAllDay": true, "showAs": "free",
            "start": {"dateTime": "2026-12-24T00:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-12-26T00:00:00.0000000", "timeZone": "UTC"}}));
        let m = to_meeting(&e, ME).unwrap();
        assert_eq!((m.starts_at.as_str(), m.ends_at.as_str(), m.all_day), ("2026-12-24T00:00:00.000Z", "2026-12-26T00:00:00.000Z", true));
        // A zone other than UTC does not shift an all-day date.
        let tz = sample(
            json!({"isAllDay": true, "start": {"dateTime": "2026-12-24T00:00:00.0000000", "timeZone": "Pacific Standard Time"}, "end": null}),
        );
        let m = to_meeting(&tz, ME).unwrap();
        assert_eq!((m.starts_at.as_str(), m.ends_at.as_str()), ("2026-12-24T00:00:00.000Z", "2026-12-25T00:00:00.000Z"), "no end: one day");
    }

    #[test]
    fn the_teams_link_is_the_meeting_url() {
        let teams = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0";
        let e = sample(json!({"isOnlineMeeting": true, "onlineMeeting": {"joinUrl": teams}, "onlineMeetingUrl": "https://old.example/x"}));
        assert_eq!(to_meeting(&e, ME).unwrap().meeting_url.as_deref(), Some(teams));
        let legacy = sample(json!({"onlineMeetingUrl": "https://meet.example/legacy"}));
        assert_eq!(to_meeting(&legacy, ME).unwrap().meeting_url.as_deref(), Some("https://meet.example/legacy"));
        let junk = sample(json!({"onlineMeeting": {"joinUrl": "javascript:alert(1)"}}));
        assert_eq!(to_meeting(&junk, ME).unwrap().meeting_url, None);
    }

    #[test]
    fn no_end_is_an_instant_and_an_earlier_end_too() {
        let e = sample(json!({"end": null}));
        let m = to_meeting(&e, ME).unwrap();
        assert_eq!(m.ends_at, m.starts_at);
        let back = sample(json!({"end": {"dateTime": "2026-12-08T09:00:00.0000000", "timeZone": "UTC"}}));
        let m = to_meeting(&back, ME).unwrap();
        assert_eq!(m.ends_at, m.starts_at);
    }

    #[test]
    fn offsets_are_read_and_other_zones_refused() {
        let e = sample(json!({"start": {"dateTime": "2026-12-08T11:00:00+01:00", "timeZone": "W. Europe Standard Time"}}));
        assert_eq!(to_meeting(&e, ME).unwrap().starts_at, "2026-12-08T10:00:00.000Z");
        let e = sample(json!({"start": {"dateTime": "2026-12-08T11:00:00.0000000", "timeZone": "W. Europe Standard Time"}}));
        assert!(to_meeting(&e, ME).is_none(), "a wall-clock time in a Windows zone is not guessed");
        let e = sample(json!({"start": {"dateTime": "2026-12-08T11:00:00"}}));
        assert_eq!(to_meeting(&e, ME).unwrap().starts_at, "2026-12-08T11:00:00.000Z", "no zone: UTC, as Graph's default");
    }

    #[test]
    fn unreadable_times_are_refused_not_panicked_on() {
        for start in [
            json!(null),
            json!({}),
            json!({"dateTime": "soon", "timeZone": "UTC"}),
            json!({"dateTime": "2026-02-30T10:00:00.0000000", "timeZone": "UTC"}),
            json!({"dateTime": "2026-12-08T10:00:00.0000000Zjunk", "timeZone": "UTC"}),
            json!({"dateTime": "9999-12-31T23:59:59.9999999-23:00", "timeZone": "UTC"}),
            json!({"dateTime": "é", "timeZone": "UTC"}),
        ] {
            assert!(to_meeting(&sample(json!({"start": start.clone()})), ME).is_none(), "{start}");
            assert!(to_meeting(&sample(json!({"start": start.clone(), "isAllDay": true})), ME).is_none(), "{start}");
        }
        let last_day = sample(json!({"isAllDay": true, "start": {"dateTime": "9999-12-31T00:00:00"}, "end": null}));
        assert!(to_meeting(&last_day, ME).is_none(), "its end is past the stored range");
        assert!(serde_json::from_value::<GraphEvent>(json!({"id": 5})).is_err());
    }

    #[test]
    fn lengths_are_clipped_and_blanks_defaulted() {
        let long = "x".repeat(30_000);
        let e = sample(json!({"subject": long, "bodyPreview": long, "location": {"displayName": long}}));
        let m = to_meeting(&e, ME).unwrap();
        assert_eq!((m.title.len(), m.description.unwrap().len(), m.location.unwrap().len()), (MAX_TITLE, MAX_DESCRIPTION, MAX_LOCATION));
        let blank = sample(json!({"subject": "  ", "bodyPreview": "", "location": {"displayName": ""}}));
        let m = to_meeting(&blank, ME).unwrap();
        assert_eq!((m.title.as_str(), m.description, m.location), ("(no title)", None, None));
        let many: Vec<Value> = (0..700).map(|i| json!({"emailAddress": {"address": format!("p{i}@x.example")}})).collect();
        let m = to_meeting(&sample(json!({"attendees": many})), ME).unwrap();
        assert_eq!(m.attendees.as_array().unwrap().len(), MAX_ATTENDEES);
    }
}
