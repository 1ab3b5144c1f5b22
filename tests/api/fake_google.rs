//! A local fake of Google's OAuth 2.0 and Calendar APIs that behaves as
//! `shared/google-calendar.md` says, failures included: the consent page,
//! the token endpoint (authorization code, refresh, `invalid_grant`),
//! userinfo, `calendarList.list` (the primary calendar under its email id
//! with `primary: true`, and any others the test adds), `events.list` per
//! calendar (pagination, sync tokens only on the last page and only good for
//! their calendar, cancelled entries, 410 for invalidated tokens, 400 for a
//! sync token with `timeMin`; `singleEvents=true` expands recurring series
//! into occurrences `<series>_<start>` with `recurringEventId`,
//! `originalStartTime` and the series' `iCalUID`, honouring cancelled and
//! edited occurrences and "this and following" splits; every event has an
//! `eventType`, and the account's own attendee entry is marked `self: true`),
//! `events.move` (cancelled in the first calendar, new with the same id in
//! the second), `events.watch` per calendar (the `sync` notification is sent
//! before the answer, as Google may), `channels.stop`, and push notifications
//! with the documented headers and an empty body. Tests drive it: create,
//! edit, move and delete events, invalidate sync tokens, revoke access,
//! inject 401 / 403 rateLimitExceeded / 429 / 5xx, slow lists down, and read
//! a call log.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;

use crate::fake_service;

pub const CLIENT_ID: &str = "fake-client-id.apps.googleusercontent.com";
pub const CLIENT_SECRET: &str = "fake-client-secret";
pub const CALENDAR_TZ: &str = "Europe/Berlin";

/// A channel as Google holds it.
#[derive(Debug, Clone)]
pub struct FakeChannel {
    pub id: String,
    /// The calendar watched (its id: the account's email for the primary).
    pub calendar: String,
    pub token: Option<String>,
    pub address: String,
    pub resource_id: String,
    pub email: String,
    pub expiration_ms: i64,
    pub stopped: bool,
    pub message_number: u64,
    /// When the watch call made it, and when `channels.stop` stopped it (ms since the epoch).
    pub created_ms: i64,
    pub stopped_ms: Option<i64>,
}

/// One `events.list` request as received.
#[derive(Debug, Clone)]
pub struct ListCall {
    pub email: String,
    pub calendar: String,
    pub sync_token: bool,
    pub page_token: bool,
    pub time_min: bool,
    pub status: u16,
}

#[derive(Debug, Clone)]
struct Event {
    body: Value,
    seq: u64,
    cancelled: bool,
    /// Occurrences of a recurring series that were edited or cancelled, by
    /// occurrence id.
    exceptions: BTreeMap<String, Exception>,
}

#[derive(Debug, Clone)]
struct Exception {
    patch: Value,
    cancelled: bool,
    seq: u64,
}

#[derive(Debug, Clone)]
struct Calendar {
    id: String,
    summary: String,
    color: String,
    primary: bool,
    time_zone: String,
    events: Vec<Event>,
    /// Readable, but not on the account's calendar list.
    unlisted: bool,
}

#[derive(Debug, Default)]
struct Account {
    sub: String,
    name: String,
    calendars: Vec<Calendar>,
}

impl Account {
    fn calendar(&self, id: &str) -> Option<&Calendar> {
        self.calendars.iter().find(|c| c.id.eq_ignore_ascii_case(id))
    }
    fn calendar_mut(&mut self, id: &str) -> Option<&mut Calendar> {
        self.calendars.iter_mut().find(|c| c.id.eq_ignore_ascii_case(id))
    }
    /// The calendar holding a live event with this id (else any holding it).
    fn calendar_of_event(&mut self, id: &str) -> &mut Calendar {
        let i = self
            .calendars
            .iter()
            .position(|c| c.events.iter().any(|e| e.body["id"] == id && !e.cancelled))
            .or_else(|| self.calendars.iter().position(|c| c.events.iter().any(|e| e.body["id"] == id)))
            .expect("event exists");
        &mut self.calendars[i]
    }
}

/// How far ahead an endless series is expanded when it is listed without a
/// time range (a sync token): well past any test's window.
const SERIES_HORIZON_DAYS: i64 = 730;
const SERIES_MAX_OCCURRENCES: usize = 500;

struct Pending {
    email: String,
    calendar: String,
    signature: String,
    chunks: VecDeque<Vec<Value>>,
    sync_token: String,
}

#[derive(Default)]
struct State {
    seq: u64,
    accounts: HashMap<String, Account>,
    consent_as: Option<String>,
    codes: HashMap<String, String>,
    redirect_uris: HashMap<String, String>,
    refresh: HashMap<String, (String, bool)>,
    access: HashMap<String, (String, bool)>,
    /// token → (account, calendar, seq, valid)
    sync_tokens: HashMap<String, (String, String, u64, bool)>,
    pages: HashMap<String, Pending>,
    channels: Vec<FakeChannel>,
    failures: Vec<(String, u16, String, usize, usize)>,
    calls: HashMap<String, u64>,
    list_log: Vec<ListCall>,
    in_flight: HashMap<String, u32>,
    max_in_flight: HashMap<String, u32>,
    /// `events.list` requests in flight over all accounts, and the most at once.
    in_flight_all: u32,
    max_in_flight_all: u32,
    list_delay: Duration,
    /// How long `events.watch` takes to answer (a renewal in flight).
    watch_delay: Duration,
    page_size: usize,
    expires_in: i64,
    issued: Vec<String>,
    /// When set, a `channels.stop` of a live channel first sends this
    /// notification on it (the last push before the stop takes effect).
    notify_before_stop: Option<String>,
    before_stop_answers: Vec<u16>,
}

struct Inner {
    state: Mutex<State>,
    http: reqwest::Client,
}

/// The running fake. Its URLs go into `[google]`.
#[derive(Clone)]
pub struct FakeGoogle {
    pub addr: SocketAddr,
    pub base: String,
    inner: Arc<Inner>,
}

fn rand_str() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn api_error(status: u16, reason: &str, message: &str) -> (u16, Value) {
    (status, json!({"error": {"code": status, "message": message, "errors": [{"domain": "global", "reason": reason, "message": message}]}}))
}

fn reply(status: u16, body: &Value) -> Response {
    let mut res = Response::new(body.to_string().into());
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    res.headers_mut().insert("content-type", "application/json; charset=UTF-8".parse().unwrap());
    res
}

/// An event's start and end as Unix seconds (date-only = midnight UTC).
fn span(ev: &Value) -> Option<(i64, i64)> {
    let at = |t: &Value| -> Option<i64> {
        if let Some(dt) = t.get("dateTime").and_then(Value::as_str) {
            return time::OffsetDateTime::parse(dt, &time::format_description::well_known::Rfc3339).ok().map(|t| t.unix_timestamp());
        }
        let d = t.get("date").and_then(Value::as_str)?;
        let d = time::Date::parse(d, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
        Some(d.midnight().assume_utc().unix_timestamp())
    };
    Some((at(ev.get("start")?)?, at(ev.get("end")?)?))
}

fn rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok().map(|t| t.unix_timestamp())
}

fn parse_dt(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

fn rfc(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

/// `20261201T100000Z`, as occurrence ids and `UNTIL` write a UTC time.
fn basic(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:04}{:02}{:02}T{:02}{:02}{:02}Z", t.year(), t.month() as u8, t.day(), t.hour(), t.minute(), t.second())
}

fn parse_basic(s: &str) -> Option<time::OffsetDateTime> {
    let f = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(s, f).ok().map(|t| t.assume_utc())
}

/// A series' occurrences (start, occurrence id) from its `RRULE` (`FREQ`
/// DAILY or WEEKLY, `INTERVAL`, `COUNT`, `UNTIL`), overlapping `[min, max)`
/// when given, never past the horizon.
fn occurrences(series: &Value, min: Option<i64>, max: Option<i64>) -> Vec<(time::OffsetDateTime, String)> {
    let Some(rule) = series["recurrence"][0].as_str().and_then(|r| r.strip_prefix("RRULE:")) else { return vec![] };
    let Some(first) = series["start"]["dateTime"].as_str().and_then(parse_dt) else { return vec![] };
    let length = span(series).map(|(s, e)| e - s).unwrap_or(0);
    let (mut step_days, mut interval, mut count, mut until) = (7i64, 1i64, None::<usize>, None::<time::OffsetDateTime>);
    for part in rule.split(';') {
        match part.split_once('=') {
            Some(("FREQ", "DAILY")) => step_days = 1,
            Some(("FREQ", "WEEKLY")) => step_days = 7,
            Some(("INTERVAL", n)) => interval = n.parse().unwrap_or(1),
            Some(("COUNT", n)) => count = n.parse().ok(),
            Some(("UNTIL", u)) => until = parse_basic(u),
            _ => {}
        }
    }
    let horizon = time::OffsetDateTime::now_utc() + time::Duration::days(SERIES_HORIZON_DAYS);
    let id = series["id"].as_str().unwrap_or_default();
    let mut out = Vec::new();
    for k in 0..SERIES_MAX_OCCURRENCES {
        if count.is_some_and(|c| k >= c) {
            break;
        }
        let start = first + time::Duration::days(step_days * interval * k as i64);
        if until.is_some_and(|u| start > u) || start > horizon {
            break;
        }
        let (s, e) = (start.unix_timestamp(), start.unix_timestamp() + length);
        if min.is_none_or(|m| e > m) && max.is_none_or(|m| s < m) {
            out.push((start, format!("{id}_{}", basic(start))));
        }
    }
    out
}

/// One occurrence of a series as `singleEvents=true` lists it.
fn occurrence_body(series: &Value, start: time::OffsetDateTime, occurrence_id: &str, patch: Option<&Value>) -> Value {
    let length = span(series).map(|(s, e)| e - s).unwrap_or(0);
    let mut b = series.clone();
    if let Some(o) = b.as_object_mut() {
        o.remove("recurrence");
    }
    b["id"] = json!(occurrence_id);
    b["recurringEventId"] = series["id"].clone();
    b["originalStartTime"] = json!({"dateTime": rfc(start), "timeZone": series["start"]["timeZone"]});
    b["start"]["dateTime"] = json!(rfc(start));
    b["end"]["dateTime"] = json!(rfc((start + time::Duration::seconds(length)).to_offset(start.offset())));
    if let Some(p) = patch.and_then(Value::as_object) {
        for (k, v) in p {
            b[k] = v.clone();
        }
    }
    b
}

/// A cancelled entry, as Google lists a deleted event or occurrence.
fn cancelled_entry(id: &str, series: Option<(&Value, time::OffsetDateTime)>) -> Value {
    let mut v = json!({"kind": "calendar#event", "id": id, "status": "cancelled"});
    if let Some((series, start)) = series {
        v["recurringEventId"] = series["id"].clone();
        v["originalStartTime"] = json!({"dateTime": rfc(start), "timeZone": series["start"]["timeZone"]});
    }
    v
}

/// What one calendar's listing holds: for a full listing (no sync token)
/// the live events and occurrences overlapping the range; for an
/// incremental one everything changed after `since`, deletions as
/// cancelled entries.
fn listing(cal: &Calendar, since: Option<u64>, min: Option<i64>, max: Option<i64>) -> Vec<Value> {
    let mut out: Vec<(u64, Value)> = Vec::new();
    for e in &cal.events {
        let recurring = e.body.get("recurrence").is_some();
        match since {
            None => {
                if e.cancelled {
                    continue;
                }
                if recurring {
                    for (start, occ) in occurrences(&e.body, None, None) {
                        let exc = e.exceptions.get(&occ);
                        if exc.is_some_and(|x| x.cancelled) {
                            continue;
                        }
                        let b = occurrence_body(&e.body, start, &occ, exc.map(|x| &x.patch));
                        if let Some((s, en)) = span(&b) {
                            if min.is_none_or(|m| en > m) && max.is_none_or(|m| s < m) {
                                out.push((e.seq, b));
                            }
                        }
                    }
                } else if span(&e.body).is_none_or(|(s, en)| min.is_none_or(|m| en > m) && max.is_none_or(|m| s < m)) {
                    out.push((e.seq, e.body.clone()));
                }
            }
            Some(since) => {
                if e.cancelled {
                    if e.seq > since {
                        out.push((e.seq, cancelled_entry(e.body["id"].as_str().unwrap_or_default(), None)));
                    }
                    continue;
                }
                if !recurring {
                    if e.seq > since {
                        out.push((e.seq, e.body.clone()));
                    }
                    continue;
                }
                let series_changed = e.seq > since;
                let mut listed = std::collections::HashSet::new();
                for (start, occ) in occurrences(&e.body, None, None) {
                    let exc = e.exceptions.get(&occ);
                    if !series_changed && exc.is_none_or(|x| x.seq <= since) {
                        continue;
                    }
                    listed.insert(occ.clone());
                    let seq = exc.map_or(e.seq, |x| x.seq.max(e.seq));
                    match exc {
                        Some(x) if x.cancelled => out.push((seq, cancelled_entry(&occ, Some((&e.body, start))))),
                        _ => out.push((seq, occurrence_body(&e.body, start, &occ, exc.map(|x| &x.patch)))),
                    }
                }
                // Occurrences the rule no longer has (cut by a split) are cancelled entries.
                for (occ, x) in &e.exceptions {
                    if x.cancelled && x.seq > since && !listed.contains(occ) {
                        let start = occ.rsplit('_').next().and_then(parse_basic).unwrap_or_else(time::OffsetDateTime::now_utc);
                        out.push((x.seq, cancelled_entry(occ, Some((&e.body, start)))));
                    }
                }
            }
        }
    }
    out.sort_by_key(|(seq, _)| *seq);
    out.into_iter().map(|(_, v)| v).collect()
}

/// An event as the account sees it: its own attendee entry says `self: true`.
fn present(mut ev: Value, email: &str) -> Value {
    if let Some(attendees) = ev.get_mut("attendees").and_then(Value::as_array_mut) {
        for a in attendees {
            if a["email"].as_str().is_some_and(|e| e.eq_ignore_ascii_case(email)) {
                a["self"] = json!(true);
            }
        }
    }
    ev
}

/// Walk a browser through "Sign in with Google" on the server at `base`
/// (whose Google settings point at the fake, which consents as whoever
/// `consent_as` named): start, the fake's consent page, the callback with
/// the state cookie. Returns the callback's answer (303 when signed in).
pub async fn sign_in(http: &reqwest::Client, base: &str) -> reqwest::Response {
    let r = http.get(format!("{base}/api/auth/google")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = state_cookie(&r);
    let r = http.get(location(&r)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 302, "the fake consent page accepts the request");
    http.get(location(&r)).header("cookie", cookie).header("accept", "text/html").send().await.unwrap()
}

/// The `syncgate_google_state=…` cookie a sign-in start sets.
pub fn state_cookie(r: &reqwest::Response) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("syncgate_google_state="))
        .and_then(|c| c.split(';').next())
        .expect("a state cookie")
        .to_string()
}

/// Where a redirect points.
pub fn location(r: &reqwest::Response) -> String {
    r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

impl FakeGoogle {
    pub async fn start() -> FakeGoogle {
        let (listener, addr) = fake_service::bind("fake google").await;
        let inner = Arc::new(Inner {
            state: Mutex::new(State { page_size: 250, expires_in: 3599, ..Default::default() }),
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        });
        let fake = FakeGoogle { addr, base: format!("http://{addr}"), inner };
        let handler = fake.clone();
        fake_service::serve(listener, move |r| {
            let fake = handler.clone();
            async move { fake.handle(r.method, r.path, r.query, r.headers, r.body).await }
        });
        fake
    }

    /// Point syncgate's `[google]` at this fake.
    pub fn configure(&self, c: &mut syncgate::config::Config) {
        c.google.client_id = CLIENT_ID.into();
        c.google.client_secret = CLIENT_SECRET.into();
        c.google.api_base_url = format!("{}/calendar/v3", self.base);
        c.google.auth_url = format!("{}/o/oauth2/v2/auth", self.base);
        c.google.token_url = format!("{}/token", self.base);
        c.google.userinfo_url = format!("{}/v1/userinfo", self.base);
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- test controls -------------------------------------------------

    pub fn add_account(&self, email: &str, name: &str) {
        let mut st = self.st();
        let email = email.to_lowercase();
        st.accounts.entry(email.clone()).or_insert_with(|| Account {
            sub: format!("1{:019}", rand::random::<u64>() % 10u64.pow(19)),
            name: name.into(),
            calendars: vec![Calendar {
                id: email.clone(),
                summary: email.clone(),
                color: "#9fe1e7".into(),
                primary: true,
                time_zone: CALENDAR_TZ.into(),
                events: vec![],
                unlisted: false,
            }],
        });
    }

    /// Another calendar on the account's calendar list (a secondary calendar
    /// or one shared with the account). Returns its id.
    pub fn add_calendar(&self, email: &str, id: &str, summary: &str, color: &str) -> String {
        let mut st = self.st();
        let acct = st.accounts.get_mut(&email.to_lowercase()).expect("account exists");
        acct.calendars.push(Calendar {
            id: id.into(),
            summary: summary.into(),
            color: color.into(),
            primary: false,
            time_zone: CALENDAR_TZ.into(),
            events: vec![],
            unlisted: false,
        });
        id.to_string()
    }

    /// A calendar the account can read (by its id) that is not on its calendar list.
    pub fn unlist_calendar(&self, email: &str, id: &str) {
        let mut st = self.st();
        st.accounts.get_mut(&email.to_lowercase()).and_then(|a| a.calendar_mut(id)).expect("calendar exists").unlisted = true;
    }

    /// The calendar is deleted at Google: listing or watching it answers 404.
    pub fn remove_calendar(&self, email: &str, id: &str) {
        let mut st = self.st();
        st.accounts.get_mut(&email.to_lowercase()).expect("account exists").calendars.retain(|c| !c.id.eq_ignore_ascii_case(id));
    }

    /// Who signs in on the next consent.
    pub fn consent_as(&self, email: &str) {
        self.st().consent_as = Some(email.to_lowercase());
    }

    /// Add an event to the account's primary calendar; returns its id.
    pub fn create_event(&self, email: &str, event: Value) -> String {
        let email = email.to_lowercase();
        self.create_event_in(&email, &email, event)
    }

    /// Add an event (an `id` is made when absent; `eventType` is `default`
    /// unless given; a `recurrence` makes it a series) to one calendar.
    pub fn create_event_in(&self, email: &str, calendar: &str, mut event: Value) -> String {
        let mut st = self.st();
        st.seq += 1;
        let seq = st.seq;
        let id = event.get("id").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| format!("ev{}", rand_str()));
        event["id"] = json!(id);
        event["kind"] = json!("calendar#event");
        if event.get("status").is_none() {
            event["status"] = json!("confirmed");
        }
        if event.get("eventType").is_none() {
            event["eventType"] = json!("default");
        }
        if event.get("iCalUID").is_none() {
            event["iCalUID"] = json!(format!("{id}@google.com"));
        }
        event["updated"] = json!(time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap());
        let acct = st.accounts.get_mut(&email.to_lowercase()).expect("account exists");
        let cal = acct.calendar_mut(calendar).expect("calendar exists");
        cal.events.push(Event { body: event, seq, cancelled: false, exceptions: BTreeMap::new() });
        id
    }

    /// Change top-level fields of an event (in whichever calendar holds it).
    pub fn update_event(&self, email: &str, id: &str, patch: Value) {
        let mut st = self.st();
        st.seq += 1;
        let seq = st.seq;
        let acct = st.accounts.get_mut(&email.to_lowercase()).expect("account exists");
        let ev = acct.calendar_of_event(id).events.iter_mut().find(|e| e.body["id"] == id).expect("event exists");
        for (k, v) in patch.as_object().expect("patch is an object") {
            ev.body[k] = v.clone();
        }
        ev.seq = seq;
    }

    /// Delete an event: it stays as a `cancelled` entry for incremental syncs.
    pub fn delete_event(&self, email: &str, id: &str) {
        let mut st = self.st();
        st.seq += 1;
        let seq = st.seq;
        let acct = st.accounts.get_mut(&email.to_lowercase()).expect("account exists");
        let ev = acct.calendar_of_event(id).events.iter_mut().find(|e| e.body["id"] == id).expect("event exists");
        ev.cancelled = true;
        ev.seq = seq;
    }

    /// The account's own answer to an invitation: its attendee entry's
    /// `responseStatus` (`accepted`, `declined`, `tentative`, `needsAction`).
    pub fn respond(&self, email: &str, id: &str, response: &str) {
        let email_l = email.to_lowercase();
        let mut st = self.st();
        st.seq += 1;
        let seq = st.seq;
        let acct = st.accounts.get_mut(&email_l).expect("account exists");
        let ev = acct.calendar_of_event(id).events.iter_mut().find(|e| e.body["id"] == id).expect("event exists");
        let attendees = ev.body["attendees"].as_array_mut().expect("the event has attendees");
        let me = attendees.iter_mut().find(|a| a["email"].as_str().is_some_and(|e| e.eq_ignore_ascii_case(&email_l))).expect("invited");
        me["responseStatus"] = json!(response);
        ev.seq = seq;
    }

    /// `events.move`: the event leaves `from` (a cancelled entry there) and
    /// appears in `to` with the same id.
    pub fn move_event(&self, email: &str, from: &str, id: &str, to: &str) {
        let mut st = self.st();
        st.seq += 1;
        let gone = st.seq;
        st.seq += 1;
        let arrived = st.seq;
        let acct = st.accounts.get_mut(&email.to_lowercase()).expect("account exists");
        let src = acct.calendar_mut(from).expect("source calendar");
        let ev = src.events.iter_mut().find(|e| e.body["id"] == id && !e.cancelled).expect("event in the source calendar");
        let mut copy = ev.clone();
        ev.cancelled = true;
        ev.seq = gone;
        copy.seq = arrived;
        let dst = acct.calendar_mut(to).expect("destination calendar");
        dst.events.retain(|e| e.body["id"] != id);
        dst.events.push(copy);
    }

    /// Edit one occurrence of a series ("this event"): fields of `patch`
    /// override the series' for it. `occurrence` is its id.
    pub fn edit_occurrence(&self, email: &str, series: &str, occurrence: &str, patch: Value) {
        self.set_exception(email, series, occurrence, patch, false);
    }

    /// Delete one occurrence of a series.
    pub fn cancel_occurrence(&self, email: &str, series: &str, occurrence: &str) {
        self.set_exception(email, series, occurrence, json!({}), true);
    }

    fn set_exception(&self, email: &str, series: &str, occurrence: &str, patch: Value, cancelled: bool) {
        let mut st = self.st();
        st.seq += 1;
        let seq = st.seq;
        let acct = st.accounts.get_mut(&email.to_lowercase()).expect("account exists");
        let ev = acct.calendar_of_event(series).events.iter_mut().find(|e| e.body["id"] == series).expect("series exists");
        ev.exceptions.insert(occurrence.to_string(), Exception { patch, cancelled, seq });
    }

    /// "This and following events": the series ends before the occurrence
    /// starting at `from` (those after it are cancelled entries), and a new
    /// series with the same rule and `patch` applied starts there. Returns
    /// the new series' id (`<old>_R<start>`, as Google names it).
    pub fn split_series(&self, email: &str, series: &str, from: &str, patch: Value) -> String {
        let email_l = email.to_lowercase();
        let from_t = parse_dt(from).expect("from is RFC 3339");
        let (calendar, new_body) = {
            let mut st = self.st();
            st.seq += 1;
            let seq = st.seq;
            let acct = st.accounts.get_mut(&email_l).expect("account exists");
            let cal = acct.calendar_of_event(series);
            let calendar = cal.id.clone();
            let ev = cal.events.iter_mut().find(|e| e.body["id"] == series).expect("series exists");
            let later: Vec<String> =
                occurrences(&ev.body, None, None).into_iter().filter(|(start, _)| *start >= from_t).map(|(_, id)| id).collect();
            for occ in later {
                ev.exceptions.insert(occ, Exception { patch: json!({}), cancelled: true, seq });
            }
            let until = (from_t - time::Duration::seconds(1)).to_offset(time::UtcOffset::UTC);
            let rule = ev.body["recurrence"][0].as_str().unwrap_or_default().to_string();
            let new_rule = rule.split(';').filter(|p| !p.starts_with("COUNT=") && !p.starts_with("UNTIL=")).collect::<Vec<_>>().join(";");
            ev.body["recurrence"] = json!([format!("{new_rule};UNTIL={}", basic(until))]);
            ev.seq = seq;
            // The new series: the old rule (without its end) from `from` on.
            let mut body = ev.body.clone();
            let length = span(&ev.body).map(|(s, e)| e - s).unwrap_or(3600);
            let offset = from_t.offset();
            let start = from_t;
            let end = (start + time::Duration::seconds(length)).to_offset(offset);
            let new_id = format!("{series}_R{}", basic(start.to_offset(time::UtcOffset::UTC)));
            body["id"] = json!(new_id);
            body["iCalUID"] = json!(format!("{new_id}@google.com"));
            body["recurrence"] = json!([rule.split(';').filter(|p| !p.starts_with("UNTIL=")).collect::<Vec<_>>().join(";")]);
            body["start"]["dateTime"] = json!(rfc(start));
            body["end"]["dateTime"] = json!(rfc(end));
            for (k, v) in patch.as_object().expect("patch is an object") {
                body[k] = v.clone();
            }
            (calendar, body)
        };
        self.create_event_in(&email_l, &calendar, new_body)
    }

    /// A refresh token for the account, as a consent long ago gave it (for
    /// tests that build a database by hand).
    pub fn issue_refresh_token(&self, email: &str) -> String {
        let mut st = self.st();
        let t = format!("1//fake-refresh-{}", rand_str());
        st.refresh.insert(t.clone(), (email.to_lowercase(), false));
        st.issued.push(t.clone());
        t
    }

    /// Every sync token issued so far answers 410 from now on.
    pub fn invalidate_sync_tokens(&self) {
        for t in self.st().sync_tokens.values_mut() {
            t.3 = false;
        }
    }

    /// The user revoked access: refresh gives `invalid_grant`, access tokens 401.
    pub fn revoke(&self, email: &str) {
        let mut st = self.st();
        let email = email.to_lowercase();
        for t in st.refresh.values_mut().filter(|t| t.0 == email) {
            t.1 = true;
        }
        for t in st.access.values_mut().filter(|t| t.0 == email) {
            t.1 = false;
        }
    }

    /// Access tokens stop working (401); refreshing works.
    pub fn expire_access_tokens(&self, email: &str) {
        let email = email.to_lowercase();
        for t in self.st().access.values_mut().filter(|t| t.0 == email) {
            t.1 = false;
        }
    }

    /// The next `times` calls to `endpoint` (token, userinfo, list, watch,
    /// stop) answer `status` with `reason` (e.g. 403 "rateLimitExceeded",
    /// 401 "authError", 429 "rateLimitExceeded", 503 "backendError").
    pub fn fail_next(&self, endpoint: &str, status: u16, reason: &str, times: usize) {
        self.fail_after(endpoint, 0, status, reason, times);
    }

    /// Let `skip` calls to `endpoint` through, then fail the next `times`.
    pub fn fail_after(&self, endpoint: &str, skip: usize, status: u16, reason: &str, times: usize) {
        self.st().failures.push((endpoint.into(), status, reason.into(), skip, times));
    }

    pub fn set_page_size(&self, n: usize) {
        self.st().page_size = n.max(1);
    }

    pub fn set_list_delay(&self, d: Duration) {
        self.st().list_delay = d;
    }

    /// Make every `events.watch` take `d` before it answers.
    pub fn set_watch_delay(&self, d: Duration) {
        self.st().watch_delay = d;
    }

    /// `expires_in` of access tokens issued from now on (Google: 3599).
    pub fn set_access_token_lifetime(&self, secs: i64) {
        self.st().expires_in = secs;
    }

    /// From now on, every `channels.stop` of a live channel first sends a
    /// `state` notification on that channel, as a push racing the stop.
    pub fn notify_before_stop(&self, state: &str) {
        self.st().notify_before_stop = Some(state.to_string());
    }

    /// What syncgate answered to the notifications sent by `notify_before_stop`.
    pub fn before_stop_answers(&self) -> Vec<u16> {
        self.st().before_stop_answers.clone()
    }

    /// How many calls an endpoint got (token, userinfo, list, watch, stop, consent).
    pub fn calls(&self, endpoint: &str) -> u64 {
        self.st().calls.get(endpoint).copied().unwrap_or(0)
    }

    pub fn list_log(&self) -> Vec<ListCall> {
        self.st().list_log.clone()
    }

    /// List passes: `events.list` calls without a page token.
    pub fn list_passes(&self, email: &str) -> usize {
        self.st().list_log.iter().filter(|c| c.email == email.to_lowercase() && !c.page_token).count()
    }

    /// Most `events.list` requests of one account that were in flight at once.
    pub fn max_concurrent_lists(&self, email: &str) -> u32 {
        self.st().max_in_flight.get(&email.to_lowercase()).copied().unwrap_or(0)
    }

    /// Most `events.list` requests in flight at once, over all accounts.
    pub fn max_concurrent_lists_all(&self) -> u32 {
        self.st().max_in_flight_all
    }

    pub fn channels(&self, email: &str) -> Vec<FakeChannel> {
        let email = email.to_lowercase();
        self.st().channels.iter().filter(|c| c.email == email).cloned().collect()
    }

    pub fn active_channels(&self, email: &str) -> Vec<FakeChannel> {
        self.channels(email).into_iter().filter(|c| !c.stopped).collect()
    }

    /// Every credential this fake issued (access, refresh and sync tokens, codes).
    pub fn issued_secrets(&self) -> Vec<String> {
        self.st().issued.clone()
    }

    /// Tell every live channel of the account (not stopped, not expired)
    /// that something changed, as Google does: documented headers, empty
    /// body. Returns the status codes syncgate answered.
    pub async fn notify(&self, email: &str, state: &str) -> Vec<u16> {
        // An expired channel is dead at Google: it sends nothing.
        let now = now_ms();
        let channels: Vec<FakeChannel> = self.active_channels(email).into_iter().filter(|c| c.expiration_ms > now).collect();
        let mut out = Vec::new();
        for c in channels {
            out.push(self.notify_channel(&c.id, state).await);
        }
        out
    }

    /// Tell the live channels of one calendar of the account that something changed.
    pub async fn notify_calendar(&self, email: &str, calendar: &str, state: &str) -> Vec<u16> {
        let now = now_ms();
        let channels: Vec<FakeChannel> = self
            .active_channels(email)
            .into_iter()
            .filter(|c| c.expiration_ms > now && c.calendar.eq_ignore_ascii_case(calendar))
            .collect();
        let mut out = Vec::new();
        for c in channels {
            out.push(self.notify_channel(&c.id, state).await);
        }
        out
    }

    /// One notification on one channel.
    pub async fn notify_channel(&self, channel_id: &str, state: &str) -> u16 {
        let (c, number) = {
            let mut st = self.st();
            let c = st.channels.iter_mut().find(|c| c.id == channel_id).expect("channel exists");
            // Grows, not by one.
            c.message_number += 1 + rand::random::<u64>() % 5;
            (c.clone(), c.message_number)
        };
        self.send_notification(&c.address, &c.id, c.token.as_deref(), &c.resource_id, state, number, c.expiration_ms).await
    }

    /// A notification with exactly these headers (for forged ones).
    #[allow(clippy::too_many_arguments)]
    pub async fn send_notification(
        &self,
        address: &str,
        channel_id: &str,
        token: Option<&str>,
        resource_id: &str,
        state: &str,
        number: u64,
        expiration_ms: i64,
    ) -> u16 {
        let expiration = time::OffsetDateTime::from_unix_timestamp(expiration_ms / 1000)
            .unwrap()
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap_or_default();
        let mut req = self
            .inner
            .http
            .post(address)
            .header("X-Goog-Channel-ID", channel_id)
            .header("X-Goog-Channel-Expiration", expiration)
            .header("X-Goog-Resource-ID", resource_id)
            .header("X-Goog-Resource-URI", format!("{}/calendar/v3/calendars/primary/events?alt=json", self.base))
            .header("X-Goog-Resource-State", state)
            .header("X-Goog-Message-Number", number.to_string())
            .header("Content-Length", "0");
        if let Some(t) = token {
            req = req.header("X-Goog-Channel-Token", t);
        }
        match req.send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    // ---- the fake's HTTP side ---------------------------------------------

    fn take_failure(&self, endpoint: &str) -> Option<(u16, String)> {
        let mut st = self.st();
        *st.calls.entry(endpoint.to_string()).or_default() += 1;
        // Every pending failure counts the call against its skip; the first
        // one with nothing left to skip fires.
        let mut hit = None;
        for f in st.failures.iter_mut().filter(|f| f.0 == endpoint && f.4 > 0) {
            if f.3 > 0 {
                f.3 -= 1;
            } else if hit.is_none() {
                f.4 -= 1;
                hit = Some((f.1, f.2.clone()));
            }
        }
        hit
    }

    fn bearer_email(&self, headers: &HeaderMap) -> Option<String> {
        let h = headers.get("authorization")?.to_str().ok()?;
        let t = h.strip_prefix("Bearer ")?;
        match self.st().access.get(t) {
            Some((email, true)) => Some(email.clone()),
            _ => None,
        }
    }

    async fn handle(&self, method: Method, path: String, query: String, headers: HeaderMap, body: Bytes) -> Response {
        let q: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method.as_str(), segs.as_slice()) {
            ("GET", ["o", "oauth2", "v2", "auth"]) => self.consent(&q),
            ("POST", ["token"]) => {
                let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
                let (s, v) = self.token(&form);
                reply(s, &v)
            }
            ("GET", ["v1", "userinfo"]) => {
                if let Some((s, reason)) = self.take_failure("userinfo") {
                    let (s, v) = api_error(s, &reason, "injected");
                    return reply(s, &v);
                }
                let Some(email) = self.bearer_email(&headers) else {
                    let (s, v) = api_error(401, "authError", "Invalid Credentials");
                    return reply(s, &v);
                };
                let st = self.st();
                let a = &st.accounts[&email];
                reply(200, &json!({"sub": a.sub, "email": email, "email_verified": true, "name": a.name}))
            }
            ("GET", ["calendar", "v3", "calendars", cal, "events"]) => {
                let cal = cal.to_string();
                self.list(&cal, &q, &headers).await
            }
            ("GET", ["calendar", "v3", "users", "me", "calendarList"]) => {
                let (s, v) = self.calendar_list(&headers);
                reply(s, &v)
            }
            ("POST", ["calendar", "v3", "calendars", cal, "events", id, "move"]) => {
                let (s, v) = self.move_http(cal, id, &q, &headers);
                reply(s, &v)
            }
            ("POST", ["calendar", "v3", "calendars", cal, "events", "watch"]) => {
                let cal = cal.to_string();
                self.watch(&cal, &headers, &body).await
            }
            ("POST", ["calendar", "v3", "channels", "stop"]) => {
                self.before_stop(&body).await;
                self.stop(&headers, &body)
            }
            _ => reply(404, &json!({"error": {"code": 404, "message": format!("fake google has no {method} {path}")}})),
        }
    }

    /// The consent page: the user (set by `consent_as`) agrees at once.
    fn consent(&self, q: &HashMap<String, String>) -> Response {
        *self.st().calls.entry("consent".into()).or_default() += 1;
        let ok = q.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            && q.get("response_type").map(String::as_str) == Some("code")
            && q.get("access_type").map(String::as_str) == Some("offline")
            && q.get("scope")
                .is_some_and(|s| s.split(' ').any(|x| x == "https://www.googleapis.com/auth/calendar.readonly") && s.contains("email"))
            && q.contains_key("state")
            && q.contains_key("redirect_uri");
        if !ok {
            return reply(400, &json!({"error": "invalid_request", "query": q}));
        }
        let mut st = self.st();
        let Some(email) = st.consent_as.clone() else { return reply(400, &json!({"error": "nobody to sign in as"})) };
        let code = format!("4/fake-code-{}", rand_str());
        st.codes.insert(code.clone(), email);
        st.redirect_uris.insert(code.clone(), q["redirect_uri"].clone());
        st.issued.push(code.clone());
        let mut url = url::Url::parse(&q["redirect_uri"]).unwrap();
        url.query_pairs_mut().append_pair("code", &code).append_pair("state", &q["state"]).append_pair("scope", &q["scope"]);
        let mut res = Response::new(Default::default());
        *res.status_mut() = StatusCode::FOUND;
        res.headers_mut().insert("location", url.as_str().parse().unwrap());
        res
    }

    fn issue_access(st: &mut State, email: &str) -> String {
        let t = format!("ya29.fake-access-{}", rand_str());
        st.access.insert(t.clone(), (email.to_string(), true));
        st.issued.push(t.clone());
        t
    }

    fn token(&self, form: &HashMap<String, String>) -> (u16, Value) {
        if let Some((s, reason)) = self.take_failure("token") {
            return (s, json!({"error": reason}));
        }
        if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
            || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
        {
            return (401, json!({"error": "invalid_client"}));
        }
        let mut st = self.st();
        let expires_in = st.expires_in;
        match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => {
                let code = form.get("code").cloned().unwrap_or_default();
                let Some(email) = st.codes.remove(&code) else {
                    return (400, json!({"error": "invalid_grant", "error_description": "Bad Request"}));
                };
                if st.redirect_uris.get(&code) != form.get("redirect_uri") {
                    return (400, json!({"error": "redirect_uri_mismatch"}));
                }
                let access = Self::issue_access(&mut st, &email);
                let refresh = format!("1//fake-refresh-{}", rand_str());
                st.refresh.insert(refresh.clone(), (email, false));
                st.issued.push(refresh.clone());
                (
                    200,
                    json!({"access_token": access, "expires_in": expires_in, "refresh_token": refresh, "scope": "openid email profile https://www.googleapis.com/auth/calendar.readonly", "token_type": "Bearer", "id_token": "fake.id.token"}),
                )
            }
            Some("refresh_token") => {
                let rt = form.get("refresh_token").cloned().unwrap_or_default();
                match st.refresh.get(&rt).cloned() {
                    Some((email, false)) => {
                        let access = Self::issue_access(&mut st, &email);
                        (200, json!({"access_token": access, "expires_in": expires_in, "token_type": "Bearer"}))
                    }
                    _ => (400, json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})),
                }
            }
            _ => (400, json!({"error": "unsupported_grant_type"})),
        }
    }

    /// The account a bearer token is for, and the calendar `cal` names
    /// on it (`primary`: the account's primary calendar, under its id).
    fn account_for(&self, cal: &str, headers: &HeaderMap) -> Result<(String, String), (u16, Value)> {
        let email = self.bearer_email(headers).ok_or_else(|| api_error(401, "authError", "Invalid Credentials"))?;
        let st = self.st();
        let acct = st.accounts.get(&email).ok_or_else(|| api_error(404, "notFound", "Not Found"))?;
        let found = if cal == "primary" { acct.calendars.iter().find(|c| c.primary) } else { acct.calendar(cal) };
        match found {
            Some(c) => Ok((email.clone(), c.id.clone())),
            None => Err(api_error(404, "notFound", "Not Found")),
        }
    }

    /// `calendarList.list`: the account's calendars.
    fn calendar_list(&self, headers: &HeaderMap) -> (u16, Value) {
        if let Some((s, reason)) = self.take_failure("calendar_list") {
            return api_error(s, &reason, "injected failure");
        }
        let Some(email) = self.bearer_email(headers) else { return api_error(401, "authError", "Invalid Credentials") };
        let st = self.st();
        let acct = &st.accounts[&email];
        let items: Vec<Value> = acct
            .calendars
            .iter()
            .filter(|c| !c.unlisted)
            .map(|c| {
                let mut v = json!({
                    "kind": "calendar#calendarListEntry", "id": c.id, "summary": c.summary, "timeZone": c.time_zone,
                    "backgroundColor": c.color, "foregroundColor": "#000000", "selected": true,
                    "accessRole": if c.primary { "owner" } else { "reader" },
                });
                if c.primary {
                    v["primary"] = json!(true);
                }
                v
            })
            .collect();
        (200, json!({"kind": "calendar#calendarList", "items": items, "nextSyncToken": format!("fake-list-{}", rand_str())}))
    }

    async fn list(&self, cal: &str, q: &HashMap<String, String>, headers: &HeaderMap) -> Response {
        let email_for_log = self.bearer_email(headers).unwrap_or_default();
        let delay = {
            let mut st = self.st();
            let n = st.in_flight.entry(email_for_log.clone()).or_default();
            *n += 1;
            let now = *n;
            let max = st.max_in_flight.entry(email_for_log.clone()).or_default();
            *max = (*max).max(now);
            st.in_flight_all += 1;
            st.max_in_flight_all = st.max_in_flight_all.max(st.in_flight_all);
            st.list_delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let (status, body) = match self.take_failure("list") {
            Some((s, reason)) => api_error(s, &reason, "injected failure"),
            None => match self.account_for(cal, headers) {
                Err(e) => e,
                Ok((email, calendar)) => self.list_page(&email, &calendar, q),
            },
        };
        let mut st = self.st();
        if let Some(n) = st.in_flight.get_mut(&email_for_log) {
            *n -= 1;
        }
        st.in_flight_all -= 1;
        st.list_log.push(ListCall {
            email: email_for_log,
            calendar: cal.to_string(),
            sync_token: q.contains_key("syncToken"),
            page_token: q.contains_key("pageToken"),
            time_min: q.contains_key("timeMin"),
            status,
        });
        reply(status, &body)
    }

    fn list_page(&self, email: &str, calendar: &str, q: &HashMap<String, String>) -> (u16, Value) {
        if q.contains_key("syncToken") && ["timeMin", "timeMax", "updatedMin", "orderBy", "q", "iCalUID"].iter().any(|k| q.contains_key(*k))
        {
            return api_error(400, "invalid", "Sync token cannot be used with other parameters.");
        }
        if q.get("singleEvents").map(String::as_str) != Some("true") {
            // syncgate always asks for occurrences; the fake only serves that.
            return api_error(400, "invalid", "The fake serves singleEvents=true only.");
        }
        let mut st = self.st();
        let signature = format!("{:?}|{:?}|{:?}", q.get("syncToken"), q.get("timeMin"), q.get("timeMax"));
        let max_results = q.get("maxResults").and_then(|m| m.parse::<usize>().ok()).unwrap_or(250).clamp(1, 2500);
        let page_size = st.page_size.min(max_results);
        let pending = if let Some(pt) = q.get("pageToken") {
            match st.pages.remove(pt) {
                Some(p) if p.email == email && p.calendar == calendar && p.signature == signature => p,
                _ => return api_error(400, "invalid", "Invalid page token or a different query."),
            }
        } else {
            let acct = st.accounts.get(email).expect("account");
            let cal = acct.calendar(calendar).expect("calendar");
            let items: Vec<Value> = if let Some(tok) = q.get("syncToken") {
                let Some((owner, tok_cal, since, valid)) = st.sync_tokens.get(tok).cloned() else {
                    return api_error(410, "fullSyncRequired", "Sync token is no longer valid, a full sync is required.");
                };
                if !valid || owner != email || tok_cal != calendar {
                    return api_error(410, "fullSyncRequired", "Sync token is no longer valid, a full sync is required.");
                }
                listing(cal, Some(since), None, None)
            } else {
                let min = q.get("timeMin").and_then(|t| rfc3339(t));
                let max = q.get("timeMax").and_then(|t| rfc3339(t));
                listing(cal, None, min, max)
            };
            let items: Vec<Value> = items.into_iter().map(|v| present(v, email)).collect();
            let sync_token = format!("fake-sync-{}", rand_str());
            let seq = st.seq;
            st.sync_tokens.insert(sync_token.clone(), (email.to_string(), calendar.to_string(), seq, true));
            st.issued.push(sync_token.clone());
            let mut chunks: VecDeque<Vec<Value>> = items.chunks(page_size).map(|c| c.to_vec()).collect();
            if chunks.is_empty() {
                chunks.push_back(vec![]);
            }
            Pending { email: email.to_string(), calendar: calendar.to_string(), signature, chunks, sync_token }
        };
        let mut pending = pending;
        let items = pending.chunks.pop_front().unwrap_or_default();
        let (summary, tz) = st
            .accounts
            .get(email)
            .and_then(|a| a.calendar(calendar))
            .map_or((calendar.to_string(), CALENDAR_TZ.to_string()), |c| (c.summary.clone(), c.time_zone.clone()));
        let mut out = json!({"kind": "calendar#events", "summary": summary, "timeZone": tz, "items": items});
        if pending.chunks.is_empty() {
            out["nextSyncToken"] = json!(pending.sync_token);
        } else {
            let pt = format!("fake-page-{}", rand_str());
            out["nextPageToken"] = json!(pt);
            st.pages.insert(pt, pending);
        }
        (200, out)
    }

    /// `events.move` over HTTP: `POST .../calendars/{from}/events/{id}/move?destination={to}`.
    fn move_http(&self, cal: &str, id: &str, q: &HashMap<String, String>, headers: &HeaderMap) -> (u16, Value) {
        let (email, from) = match self.account_for(cal, headers) {
            Ok(x) => x,
            Err(e) => return e,
        };
        let Some(dest) = q.get("destination") else { return api_error(400, "required", "Required parameter: destination") };
        let to = match self.account_for(dest, headers) {
            Ok((_, to)) => to,
            Err(e) => return e,
        };
        let exists =
            self.st().accounts[&email].calendar(&from).is_some_and(|c| c.events.iter().any(|e| e.body["id"] == id && !e.cancelled));
        if !exists {
            return api_error(404, "notFound", "Not Found");
        }
        self.move_event(&email, &from, id, &to);
        let st = self.st();
        let body = st.accounts[&email].calendar(&to).and_then(|c| c.events.iter().find(|e| e.body["id"] == id)).map(|e| e.body.clone());
        (200, body.unwrap_or(Value::Null))
    }

    async fn watch(&self, cal: &str, headers: &HeaderMap, body: &[u8]) -> Response {
        // Counted (in `take_failure`) as it arrives, answered after the delay.
        let failure = self.take_failure("watch");
        let delay = self.st().watch_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some((s, reason)) = failure {
            let (s, v) = api_error(s, &reason, "injected failure");
            return reply(s, &v);
        }
        let (email, calendar) = match self.account_for(cal, headers) {
            Ok(e) => e,
            Err((s, v)) => return reply(s, &v),
        };
        let Ok(req) = serde_json::from_slice::<Value>(body) else {
            let (s, v) = api_error(400, "parseError", "Parse Error");
            return reply(s, &v);
        };
        let id = req["id"].as_str().unwrap_or_default().to_string();
        let address = req["address"].as_str().unwrap_or_default().to_string();
        if id.is_empty() || id.len() > 64 || req["type"] != "web_hook" || address.is_empty() {
            let (s, v) = api_error(400, "invalid", "Invalid channel");
            return reply(s, &v);
        }
        let token = req["token"].as_str().map(str::to_string);
        if token.as_ref().is_some_and(|t| t.len() > 256) {
            let (s, v) = api_error(400, "invalid", "Channel token too long");
            return reply(s, &v);
        }
        let ttl: i64 = req["params"]["ttl"].as_str().and_then(|t| t.parse().ok()).unwrap_or(604_800);
        let channel = {
            let mut st = self.st();
            if st.channels.iter().any(|c| c.id == id) {
                let (s, v) = api_error(400, "channelIdNotUnique", "Channel id not unique");
                return reply(s, &v);
            }
            let c = FakeChannel {
                id: id.clone(),
                calendar: calendar.clone(),
                token,
                address,
                resource_id: format!("res-{}", calendar.replace(['@', '.'], "-")),
                email,
                expiration_ms: now_ms() + ttl.min(2_592_000) * 1000,
                stopped: false,
                message_number: 1,
                created_ms: now_ms(),
                stopped_ms: None,
            };
            st.channels.push(c.clone());
            c
        };
        // Google may confirm the channel before it answers the watch call.
        self.send_notification(
            &channel.address,
            &channel.id,
            channel.token.as_deref(),
            &channel.resource_id,
            "sync",
            1,
            channel.expiration_ms,
        )
        .await;
        reply(
            200,
            &json!({
                "kind": "api#channel",
                "id": channel.id,
                "resourceId": channel.resource_id,
                "resourceUri": format!("{}/calendar/v3/calendars/{calendar}/events?alt=json", self.base),
                "token": channel.token,
                "expiration": channel.expiration_ms.to_string(),
            }),
        )
    }

    /// The `notify_before_stop` hook: one notification on the channel being
    /// stopped, while it is still live.
    async fn before_stop(&self, body: &[u8]) {
        let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let (state, live) = {
            let st = self.st();
            let live = st.channels.iter().any(|c| c.id == req["id"] && !c.stopped);
            (st.notify_before_stop.clone(), live)
        };
        if let (Some(state), true) = (state, live) {
            let id = req["id"].as_str().unwrap_or_default().to_string();
            let answer = self.notify_channel(&id, &state).await;
            self.st().before_stop_answers.push(answer);
        }
    }

    fn stop(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        if let Some((s, reason)) = self.take_failure("stop") {
            let (s, v) = api_error(s, &reason, "injected failure");
            return reply(s, &v);
        }
        let Some(email) = self.bearer_email(headers) else {
            let (s, v) = api_error(401, "authError", "Invalid Credentials");
            return reply(s, &v);
        };
        let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut st = self.st();
        match st.channels.iter_mut().find(|c| c.id == req["id"] && c.resource_id == req["resourceId"] && c.email == email && !c.stopped) {
            Some(c) => {
                c.stopped = true;
                c.stopped_ms = Some(now_ms());
                let mut res = Response::new(Default::default());
                *res.status_mut() = StatusCode::NO_CONTENT;
                res
            }
            None => {
                let (s, v) = api_error(404, "notFound", "Channel not found");
                reply(s, &v)
            }
        }
    }
}

/// Self-checks: the fake must refuse what Google refuses, or the suite
/// would not notice syncgate asking for it.
#[tokio::test]
async fn fake_refuses_a_sync_token_with_time_min_and_dead_tokens() {
    let fake = FakeGoogle::start().await;
    fake.add_account("self@example.com", "Self");
    let access = {
        let mut st = fake.st();
        FakeGoogle::issue_access(&mut st, "self@example.com")
    };
    let http = reqwest::Client::new();
    let list = |q: &'static str| {
        let http = http.clone();
        let url = format!("{}/calendar/v3/calendars/primary/events?{q}", fake.base);
        let access = access.clone();
        async move {
            let r = http.get(url).bearer_auth(access).send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, first) = list("singleEvents=true").await;
    assert_eq!(s, 200);
    let token = first["nextSyncToken"].as_str().unwrap().to_string();
    let with_min = format!("singleEvents=true&syncToken={token}&timeMin=2026-01-01T00:00:00Z");
    let r = http.get(format!("{}/calendar/v3/calendars/primary/events?{with_min}", fake.base)).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    fake.invalidate_sync_tokens();
    let r = http
        .get(format!("{}/calendar/v3/calendars/primary/events?singleEvents=true&syncToken={token}", fake.base))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 410);
    let r = http.get(format!("{}/calendar/v3/calendars/primary/events", fake.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
}
