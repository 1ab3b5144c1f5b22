//! A local fake of the Microsoft identity platform and Microsoft Graph that
//! behaves as `docs/microsoft-graph.md` says, failures included: the
//! authorize page per tenant (client id, registered redirect URI, the scopes,
//! PKCE with S256), the token endpoint (code exchange checking the
//! `code_verifier`, refresh with a new refresh token each time, `invalid_grant`
//! with AADSTS `error_codes` once revoked), an unsigned id_token with `tid`,
//! `oid`, `preferred_username`, `name` and, when a test sets one, an `email`
//! that proves nothing; `/v1.0/me`, `/v1.0/organization` (the tenant's
//! verified domains), `/v1.0/me/calendars`, calendar-view delta
//! for the default calendar and per calendar (window only on the first
//! request, pages of N with opaque `$skiptoken` links, a `$deltatoken` link
//! only on the last page, changes and `@removed` entries on the next round,
//! occurrences of a series as `type: occurrence` items with `seriesMasterId`
//! (edited ones as `type: exception`, cancelled ones `@removed`),
//! 410 `syncStateNotFound` for dead tokens), immutable ids on request, and
//! subscriptions (create and a notification-URL change run the validation
//! handshake, maximum lifetime enforced, PATCH renewal, DELETE, 404 once
//! gone). Tests drive it: accounts, events, answers, moves, revocation,
//! injected 429/503 with `Retry-After`; and it sends change notifications,
//! forged batches and lifecycle notifications, logging every delivery.
//!
//! What it leaves out: times are UTC only (`Prefer: outlook.timezone` is not
//! applied), a series repeats daily or weekly from its start (no
//! `daysOfWeek`; an edited or cancelled occurrence re-lists the whole
//! series on the next round, a replay Graph's pages allow), and it speaks plain HTTP on
//! loopback where Graph insists on HTTPS notification URLs.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::Digest;
use time::OffsetDateTime;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;

use crate::fake_service;

pub const CLIENT_ID: &str = "00001111-aaaa-2222-bbbb-3333cccc4444";
pub const CLIENT_SECRET: &str = "fake-graph-client-secret";
/// What syncgate must ask for; the authorize page refuses less.
pub const SCOPES: &str = "offline_access Calendars.Read User.Read openid profile";
/// Outlook event subscriptions: 10,080 minutes (under 7 days).
pub const MAX_SUBSCRIPTION_MINUTES: i64 = 10_080;

/// A subscription as Graph holds it.
#[derive(Debug, Clone)]
pub struct FakeSubscription {
    pub id: String,
    /// The account (its `preferred_username`) that created it.
    pub account: String,
    pub resource: String,
    /// The calendar id the resource names.
    pub calendar: String,
    pub change_type: String,
    pub notification_url: String,
    pub lifecycle_url: Option<String>,
    pub client_state: Option<String>,
    pub expiration: OffsetDateTime,
    /// Made with `Prefer: IdType="ImmutableId"`: its notifications carry immutable ids.
    pub immutable_ids: bool,
    /// Deleted by syncgate or removed by Graph (`subscriptionRemoved`).
    pub removed: bool,
    /// A `reauthorizationRequired` was sent and not yet answered.
    pub needs_reauth: bool,
    pub created: OffsetDateTime,
    pub renewals: u32,
}

impl FakeSubscription {
    pub fn active(&self) -> bool {
        !self.removed && self.expiration > OffsetDateTime::now_utc()
    }
}

/// One delta request as received.
#[derive(Debug, Clone)]
pub struct DeltaCall {
    pub account: String,
    pub calendar: String,
    pub delta_token: bool,
    pub skip_token: bool,
    pub window: bool,
    pub immutable_ids: bool,
    pub status: u16,
}

/// One POST the fake made to syncgate.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub url: String,
    /// `validation`, `change`, `lifecycle` or `batch` (sent by `send_batch`).
    pub kind: String,
    /// 0 when no answer came in time (3 s for notifications, 10 s for validation).
    pub status: u16,
    pub elapsed: Duration,
}

#[derive(Debug, Clone)]
struct Event {
    /// The ordinary id: a new one whenever the event moves to another calendar.
    rest_id: String,
    /// Stable while the event stays in the mailbox.
    immutable_id: String,
    body: Value,
    seq: u64,
    deleted: bool,
    /// A series' edited occurrences (by id suffix): the fields that differ;
    /// calendar view lists them as `type: exception`.
    exceptions: HashMap<String, Value>,
    /// A series' cancelled occurrences (by id suffix): no longer listed.
    cancelled: Vec<String>,
}

#[derive(Debug, Clone)]
struct Calendar {
    id: String,
    name: String,
    is_default: bool,
    events: Vec<Event>,
}

#[derive(Debug, Clone)]
struct Account {
    tid: String,
    oid: String,
    upn: String,
    name: String,
    /// The `email` claim when set: whatever the tenant's admin typed.
    email: Option<String>,
    calendars: Vec<Calendar>,
}

impl Account {
    fn calendar(&self, id: &str) -> Option<&Calendar> {
        self.calendars.iter().find(|c| c.id == id || (id == "default" && c.is_default))
    }
    fn calendar_mut(&mut self, id: &str) -> Option<&mut Calendar> {
        self.calendars.iter_mut().find(|c| c.id == id || (id == "default" && c.is_default))
    }
    /// The live event with this id (ordinary or immutable): (calendar index, event index).
    fn find(&self, id: &str) -> Option<(usize, usize)> {
        self.calendars
            .iter()
            .enumerate()
            .find_map(|(ci, c)| c.events.iter().position(|e| !e.deleted && (e.rest_id == id || e.immutable_id == id)).map(|ei| (ci, ei)))
    }
    /// Like `find`, also among deleted events (the latest first).
    fn find_any(&self, id: &str) -> Option<(usize, usize)> {
        self.find(id).or_else(|| {
            self.calendars
                .iter()
                .enumerate()
                .find_map(|(ci, c)| c.events.iter().rposition(|e| e.rest_id == id || e.immutable_id == id).map(|ei| (ci, ei)))
        })
    }
}

struct Code {
    upn: String,
    redirect_uri: String,
    challenge: String,
    issued: Instant,
}

struct DeltaToken {
    upn: String,
    calendar: String,
    start: i64,
    end: i64,
    seq: u64,
    valid: bool,
}

/// One entry of a delta round, rendered when its page is served (the id
/// format follows that request's `Prefer` header).
#[derive(Clone)]
struct Row {
    rest_id: String,
    immutable_id: String,
    /// For an occurrence: what follows the series' id in its own id.
    occurrence: Option<String>,
    /// `None`: a `@removed` entry.
    body: Option<Value>,
}

struct Pending {
    upn: String,
    calendar: String,
    rows: VecDeque<Row>,
    delta_token: String,
}

struct Failure {
    endpoint: String,
    status: u16,
    retry_after: Option<u64>,
    times: usize,
}

#[derive(Default)]
struct State {
    seq: u64,
    /// By `preferred_username`, lowercased.
    accounts: HashMap<String, Account>,
    redirect_uris: Vec<String>,
    consent_as: Option<String>,
    deny_next_consent: bool,
    codes: HashMap<String, Code>,
    /// refresh token → (account, revoked)
    refresh: HashMap<String, (String, bool)>,
    /// When set, a refresh token stops working once used (the spec lets the server do this).
    retire_used_refresh: bool,
    /// access token → (account, valid)
    access: HashMap<String, (String, bool)>,
    expires_in: i64,
    delta_tokens: HashMap<String, DeltaToken>,
    pages: HashMap<String, Pending>,
    page_size: usize,
    subscriptions: Vec<FakeSubscription>,
    max_minutes: i64,
    failures: Vec<Failure>,
    calls: HashMap<String, u64>,
    delta_log: Vec<DeltaCall>,
    deliveries: Vec<Delivery>,
    /// By tenant id (lowercased): the domains `GET /organization` lists as verified.
    verified_domains: HashMap<String, Vec<String>>,
    /// Delta rounds also list each series' master (see `list_series_masters`).
    list_series_masters: bool,
    /// How long each delta request takes to answer (latency, for overlap tests).
    delta_delay: Duration,
    /// Delta requests being answered now, and the most at once, per account.
    deltas_now: HashMap<String, u32>,
    deltas_max: HashMap<String, u32>,
}

struct Inner {
    state: Mutex<State>,
    http: reqwest::Client,
}

/// The running fake: the identity platform at `{base}/{tenant}/oauth2/v2.0/…`,
/// Graph at `{base}/v1.0/…`.
#[derive(Clone)]
pub struct FakeGraph {
    pub addr: SocketAddr,
    pub base: String,
    inner: Arc<Inner>,
}

fn rand_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `2026-12-08T10:00:00.0000000Z`, as Graph writes a DateTimeOffset.
fn graph_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{}.{:07}Z", naive(t), t.nanosecond() / 100)
}

/// `2026-12-08T10:00:00`, the date and time of a dateTimeTimeZone.
fn naive(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", t.year(), t.month() as u8, t.day(), t.hour(), t.minute(), t.second())
}

/// An ISO 8601 time as Graph takes it: with an offset or `Z`, or without
/// (then UTC, which is all the fake stores).
fn parse_time(s: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Some(t);
    }
    let head = s.get(..19)?;
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(head, f).ok().map(|t| t.assume_utc())
}

/// An event's start and end (Unix seconds) from its `start`/`end` dateTimeTimeZone.
fn span(ev: &Value) -> Option<(i64, i64)> {
    let s = parse_time(ev["start"]["dateTime"].as_str()?)?;
    let e = parse_time(ev["end"]["dateTime"].as_str()?)?;
    Some((s.unix_timestamp(), e.unix_timestamp()))
}

/// The occurrences of a series overlapping `[start, end)`: (start, suffix of
/// the occurrence id). A subset of patternedRecurrence: `daily` or `weekly`
/// with `interval`, ranges `numbered`, `endDate` and `noEnd`.
fn occurrences(series: &Value, start: i64, end: i64) -> Vec<(OffsetDateTime, String)> {
    let Some(first) = series["start"]["dateTime"].as_str().and_then(parse_time) else { return vec![] };
    let length = span(series).map(|(s, e)| e - s).unwrap_or(0);
    let pattern = &series["recurrence"]["pattern"];
    let range = &series["recurrence"]["range"];
    let step_days = if pattern["type"] == "daily" { 1 } else { 7 };
    let interval = pattern["interval"].as_i64().unwrap_or(1).max(1);
    let count = (range["type"] == "numbered").then(|| range["numberOfOccurrences"].as_u64().unwrap_or(1) as usize);
    let until =
        (range["type"] == "endDate").then(|| range["endDate"].as_str().and_then(|d| parse_time(&format!("{d}T23:59:59Z")))).flatten();
    let mut out = Vec::new();
    for k in 0..500usize {
        if count.is_some_and(|c| k >= c) {
            break;
        }
        let at = first + time::Duration::days(step_days * interval * k as i64);
        if until.is_some_and(|u| at > u) || at.unix_timestamp() >= end {
            break;
        }
        if at.unix_timestamp() + length > start {
            let t = at.to_offset(time::UtcOffset::UTC);
            out.push((at, format!("{:04}{:02}{:02}T{:02}{:02}", t.year(), t.month() as u8, t.day(), t.hour(), t.minute())));
        }
    }
    out
}

fn is_series(body: &Value) -> bool {
    body.get("recurrence").is_some_and(|r| !r.is_null())
}

/// One occurrence of a series, as calendar view lists it.
fn occurrence_body(series: &Value, at: OffsetDateTime, suffix: &str) -> Value {
    let length = span(series).map(|(s, e)| e - s).unwrap_or(0);
    let mut b = series.clone();
    b["recurrence"] = Value::Null;
    b["type"] = json!("occurrence");
    b["iCalUId"] = json!(format!("{}-{suffix}", series["iCalUId"].as_str().unwrap_or_default()));
    b["start"]["dateTime"] = json!(format!("{}.0000000", naive(at)));
    b["end"]["dateTime"] = json!(format!("{}.0000000", naive(at + time::Duration::seconds(length))));
    b
}

/// An edited occurrence: the occurrence with the fields that differ, as
/// calendar view lists it (`type: exception`, same id as the occurrence).
fn exception_body(series: &Value, at: OffsetDateTime, suffix: &str, patch: &Value) -> Value {
    let mut b = occurrence_body(series, at, suffix);
    for (k, v) in patch.as_object().into_iter().flatten() {
        b[k] = v.clone();
    }
    b["type"] = json!("exception");
    b
}

/// What a delta round holds for one calendar: on the first round the live
/// events and occurrences in the window; on a later one everything changed
/// after `since` — live ones in the window in full, the rest (deleted, or
/// changed outside the window) as `@removed`.
fn rows(cal: &Calendar, since: Option<u64>, start: i64, end: i64, with_masters: bool) -> Vec<Row> {
    let mut out = Vec::new();
    for e in &cal.events {
        if since.is_some_and(|s| e.seq <= s) || (since.is_none() && e.deleted) {
            continue;
        }
        let row = |occurrence: Option<String>, body: Option<Value>| Row {
            rest_id: e.rest_id.clone(),
            immutable_id: e.immutable_id.clone(),
            occurrence,
            body,
        };
        if is_series(&e.body) {
            if with_masters && !e.deleted {
                out.push(row(None, Some(e.body.clone())));
            }
            for (at, suffix) in occurrences(&e.body, start, end) {
                let body = (!e.deleted && !e.cancelled.contains(&suffix))
                    .then(|| match e.exceptions.get(&suffix) {
                        None => occurrence_body(&e.body, at, &suffix),
                        Some(patch) => exception_body(&e.body, at, &suffix, patch),
                    })
                    // An exception moved out of the window leaves it.
                    .filter(|b| span(b).is_some_and(|(s, en)| en > start && s < end));
                // A first round lists what is there; a later one also what went.
                if body.is_some() || since.is_some() {
                    out.push(row(Some(suffix), body));
                }
            }
            continue;
        }
        let inside = span(&e.body).is_some_and(|(s, en)| en > start && s < end);
        if !e.deleted && inside {
            out.push(row(None, Some(e.body.clone())));
        } else if since.is_some() {
            out.push(row(None, None));
        }
    }
    out
}

fn render(row: &Row, immutable: bool) -> Value {
    let master = if immutable { &row.immutable_id } else { &row.rest_id };
    let id = match &row.occurrence {
        Some(s) => format!("{master}_{s}"),
        None => master.clone(),
    };
    match &row.body {
        None => json!({"@odata.type": "#microsoft.graph.event", "id": id, "@removed": {"reason": "deleted"}}),
        Some(b) => {
            let mut b = b.clone();
            b["@odata.type"] = json!("#microsoft.graph.event");
            b["id"] = json!(id);
            if row.occurrence.is_some() {
                b["seriesMasterId"] = json!(master);
            }
            b
        }
    }
}

/// Graph's error body, with `Retry-After` when given.
fn graph_error(status: u16, code: &str, message: &str, retry_after: Option<u64>) -> Response {
    let body = json!({"error": {"code": code, "message": message, "innerError": {"date": graph_time(OffsetDateTime::now_utc()), "request-id": guid()}}});
    let mut res = reply(status, &body);
    if let Some(s) = retry_after {
        res.headers_mut().insert("retry-after", s.to_string().parse().unwrap());
    }
    res
}

/// The code Graph uses for an injected status.
fn code_for(status: u16) -> &'static str {
    match status {
        401 => "InvalidAuthenticationToken",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        _ => "InternalServerError",
    }
}

/// The identity platform's error body.
fn oauth_error(status: u16, error: &str, aadsts: Option<u32>, description: &str) -> Response {
    let codes: Vec<u32> = aadsts.into_iter().collect();
    let desc = match aadsts {
        Some(c) => format!("AADSTS{c}: {description}"),
        None => description.to_string(),
    };
    reply(
        status,
        &json!({"error": error, "error_description": desc, "error_codes": codes, "timestamp": graph_time(OffsetDateTime::now_utc()), "trace_id": guid(), "correlation_id": guid()}),
    )
}

fn reply(status: u16, body: &Value) -> Response {
    let mut res = Response::new(body.to_string().into());
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    res.headers_mut().insert("content-type", "application/json; charset=utf-8".parse().unwrap());
    res
}

fn no_content() -> Response {
    let mut res = Response::new(Default::default());
    *res.status_mut() = StatusCode::NO_CONTENT;
    res
}

/// The `Prefer` preferences of a request, over all its `Prefer` headers.
fn prefers(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()).collect::<Vec<_>>())
        .collect()
}

fn wants_immutable(headers: &HeaderMap) -> bool {
    prefers(headers).iter().any(|p| p.replace(' ', "").eq_ignore_ascii_case("IdType=\"ImmutableId\""))
}

fn max_page_size(headers: &HeaderMap) -> Option<usize> {
    prefers(headers).iter().find_map(|p| p.strip_prefix("odata.maxpagesize=").and_then(|n| n.trim().parse().ok()))
}

/// The PKCE S256 challenge of a verifier: BASE64URL(SHA256(verifier)), unpadded.
pub fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// The claims of an id_token (no signature check: the fake's are unsigned).
pub fn id_token_claims(id_token: &str) -> Value {
    let payload = id_token.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

impl FakeGraph {
    pub async fn start() -> FakeGraph {
        let (listener, addr) = fake_service::bind("fake graph").await;
        let inner = Arc::new(Inner {
            state: Mutex::new(State { page_size: 100, expires_in: 3599, max_minutes: MAX_SUBSCRIPTION_MINUTES, ..Default::default() }),
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        });
        let fake = FakeGraph { addr, base: format!("http://{addr}"), inner };
        let handler = fake.clone();
        fake_service::serve(listener, move |r| {
            let fake = handler.clone();
            async move { fake.handle(r.method, r.path, r.query, r.headers, r.body).await }
        });
        fake
    }

    /// `{base}/{tenant}/oauth2/v2.0/authorize`
    pub fn authorize_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/authorize", self.base)
    }

    /// `{base}/{tenant}/oauth2/v2.0/token`
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.base)
    }

    /// Graph's root, `{base}/v1.0`.
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base)
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Point syncgate's `[microsoft]` at this fake (tenant left as configured).
    /// The redirect URI is registered once the server knows its address:
    /// `register_redirect_uri(app.microsoft.redirect_url())`.
    pub fn configure(&self, c: &mut syncgate::config::Config) {
        c.microsoft.client_id = CLIENT_ID.into();
        c.microsoft.client_secret = CLIENT_SECRET.into();
        c.microsoft.login_base_url = self.base.clone();
        c.microsoft.graph_base_url = self.graph_url();
    }

    // ---- test controls -------------------------------------------------

    /// A work account in tenant `tid` with object id `oid`, signing in as
    /// `upn`, with its default calendar "Calendar".
    pub fn add_account(&self, tid: &str, oid: &str, upn: &str, name: &str) {
        let upn_l = upn.to_lowercase();
        self.st().accounts.entry(upn_l.clone()).or_insert_with(|| Account {
            tid: tid.into(),
            oid: oid.into(),
            upn: upn_l,
            name: name.into(),
            email: None,
            calendars: vec![Calendar { id: format!("AAMkCal{}", rand_hex()), name: "Calendar".into(), is_default: true, events: vec![] }],
        });
    }

    /// The `email` claim of the account's id_tokens (unverified: any value).
    pub fn set_email_claim(&self, upn: &str, email: Option<&str>) {
        self.account_mut(upn, |a| a.email = email.map(str::to_string));
    }

    /// The domains tenant `tid` has verified (`GET /organization`'s `verifiedDomains`).
    pub fn set_verified_domains(&self, tid: &str, domains: &[&str]) {
        self.st().verified_domains.insert(tid.to_lowercase(), domains.iter().map(|d| d.to_string()).collect());
    }

    /// Every access and refresh token issued so far (to prove none leaks).
    pub fn issued_tokens(&self) -> Vec<String> {
        let st = self.st();
        st.access.keys().chain(st.refresh.keys()).cloned().collect()
    }

    /// Another calendar of the account; returns its id.
    pub fn add_calendar(&self, upn: &str, name: &str) -> String {
        let id = format!("AAMkCal{}", rand_hex());
        let cal = Calendar { id: id.clone(), name: name.into(), is_default: false, events: vec![] };
        self.account_mut(upn, |a| a.calendars.push(cal));
        id
    }

    /// The id of the account's default calendar.
    pub fn default_calendar(&self, upn: &str) -> String {
        let st = self.st();
        st.accounts[&upn.to_lowercase()].calendars.iter().find(|c| c.is_default).unwrap().id.clone()
    }

    /// A redirect URI registered on the app.
    pub fn register_redirect_uri(&self, uri: &str) {
        self.st().redirect_uris.push(uri.to_string());
    }

    /// Who signs in (and consents) on the next authorize request.
    pub fn consent_as(&self, upn: &str) {
        self.st().consent_as = Some(upn.to_lowercase());
    }

    /// The next authorize request ends with `error=access_denied` (the user said no).
    pub fn deny_next_consent(&self) {
        self.st().deny_next_consent = true;
    }

    fn account_mut<R>(&self, upn: &str, f: impl FnOnce(&mut Account) -> R) -> R {
        let mut st = self.st();
        f(st.accounts.get_mut(&upn.to_lowercase()).expect("account exists"))
    }

    fn next_seq(&self) -> u64 {
        let mut st = self.st();
        st.seq += 1;
        st.seq
    }

    /// Add an event to a calendar (`"default"` or an id). Fields not given
    /// get Graph's usual values: `type` `singleInstance` (`seriesMaster`
    /// with a `recurrence`), `showAs` `busy`, not cancelled, and the account
    /// as organizer unless `organizer` names someone else (then
    /// `responseStatus` `notResponded`). Returns its immutable id.
    pub fn create_event(&self, upn: &str, calendar: &str, mut event: Value) -> String {
        let seq = self.next_seq();
        let (rest_id, immutable_id) = (format!("AAMkAD{}", rand_hex()), format!("AAkALg{}", rand_hex()));
        let upn_l = upn.to_lowercase();
        let now = graph_time(OffsetDateTime::now_utc());
        let organizer_is_me = event["organizer"]["emailAddress"]["address"].as_str().is_none_or(|a| a.eq_ignore_ascii_case(&upn_l));
        let defaults = json!({
            "iCalUId": format!("040000008200E00074C5B7101A82E008{}", rand_hex().to_uppercase()),
            "subject": "",
            "bodyPreview": "",
            "isAllDay": false,
            "isCancelled": false,
            "isOrganizer": organizer_is_me,
            "showAs": "busy",
            "type": if is_series(&event) { "seriesMaster" } else { "singleInstance" },
            "responseStatus": {"response": if organizer_is_me { "organizer" } else { "notResponded" }, "time": "0001-01-01T00:00:00Z"},
            "attendees": [],
            "location": {"displayName": ""},
            "isOnlineMeeting": false,
            "onlineMeeting": null,
            "seriesMasterId": null,
            "createdDateTime": now,
        });
        for (k, v) in defaults.as_object().unwrap() {
            if event.get(k).is_none() {
                event[k] = v.clone();
            }
        }
        if event.get("organizer").is_none() {
            self.account_mut(upn, |a| event["organizer"] = json!({"emailAddress": {"name": a.name, "address": a.upn}}));
        }
        event["lastModifiedDateTime"] = json!(now);
        event["@odata.etag"] = json!(format!("W/\"{seq}\""));
        let ev = Event {
            rest_id,
            immutable_id: immutable_id.clone(),
            body: event,
            seq,
            deleted: false,
            exceptions: HashMap::new(),
            cancelled: Vec::new(),
        };
        self.account_mut(upn, |a| a.calendar_mut(calendar).expect("calendar exists").events.push(ev));
        immutable_id
    }

    fn change(&self, upn: &str, id: &str, f: impl FnOnce(&mut Event)) {
        let seq = self.next_seq();
        self.account_mut(upn, |a| {
            let (ci, ei) = a.find(id).expect("live event");
            let ev = &mut a.calendars[ci].events[ei];
            f(ev);
            ev.seq = seq;
            ev.body["lastModifiedDateTime"] = json!(graph_time(OffsetDateTime::now_utc()));
            ev.body["@odata.etag"] = json!(format!("W/\"{seq}\""));
        });
    }

    /// Change top-level fields of an event (by either of its ids).
    pub fn update_event(&self, upn: &str, id: &str, patch: Value) {
        self.change(upn, id, |ev| {
            for (k, v) in patch.as_object().expect("patch is an object") {
                ev.body[k] = v.clone();
            }
        });
    }

    /// Edit one occurrence of a series (its id as a delta round lists it,
    /// `{series id}_{suffix}`, either id format): the fields in `patch`
    /// (a new `start`/`end` moves it). Later rounds list it as an
    /// `exception` with the same id.
    pub fn update_occurrence(&self, upn: &str, occurrence_id: &str, patch: Value) {
        let (series, suffix) = occurrence_id.rsplit_once('_').expect("an occurrence id");
        let suffix = suffix.to_string();
        self.change(upn, series, |ev| {
            let slot = ev.exceptions.entry(suffix).or_insert_with(|| json!({}));
            for (k, v) in patch.as_object().expect("patch is an object") {
                slot[k] = v.clone();
            }
        });
    }

    /// Cancel (delete) one occurrence of a series: later rounds list it as `@removed`.
    pub fn cancel_occurrence(&self, upn: &str, occurrence_id: &str) {
        let (series, suffix) = occurrence_id.rsplit_once('_').expect("an occurrence id");
        let suffix = suffix.to_string();
        self.change(upn, series, |ev| ev.cancelled.push(suffix));
    }

    /// Delta rounds also list each series' master (`type: seriesMaster`)
    /// beside its occurrences. The pages read do not say whether calendar
    /// view does; a test turns this on to show the master never becomes a meeting.
    pub fn list_series_masters(&self, on: bool) {
        self.st().list_series_masters = on;
    }

    /// Delete an event: later delta rounds list it as `@removed`.
    pub fn delete_event(&self, upn: &str, id: &str) {
        self.change(upn, id, |ev| ev.deleted = true);
    }

    /// The account's answer to an invitation (`accepted`, `tentativelyAccepted`,
    /// `declined`, …): its `responseStatus` and its own attendee entry.
    pub fn respond(&self, upn: &str, id: &str, response: &str) {
        let upn_l = upn.to_lowercase();
        self.change(upn, id, |ev| {
            let now = graph_time(OffsetDateTime::now_utc());
            ev.body["responseStatus"] = json!({"response": response, "time": now});
            if let Some(list) = ev.body["attendees"].as_array_mut() {
                for a in list.iter_mut().filter(|a| a["emailAddress"]["address"].as_str().is_some_and(|x| x.eq_ignore_ascii_case(&upn_l))) {
                    a["status"] = json!({"response": response, "time": now});
                }
            }
        });
    }

    /// Move an event to another calendar of the mailbox: it leaves its
    /// calendar (`@removed` there) and arrives in `to` under a new ordinary
    /// id; its immutable id stays.
    pub fn move_event(&self, upn: &str, id: &str, to: &str) {
        let (gone, arrived) = (self.next_seq(), self.next_seq());
        self.account_mut(upn, |a| {
            let (ci, ei) = a.find(id).expect("live event");
            let ev = &mut a.calendars[ci].events[ei];
            let mut copy = ev.clone();
            ev.deleted = true;
            ev.seq = gone;
            copy.rest_id = format!("AAMkAD{}", rand_hex());
            copy.seq = arrived;
            let dst = a.calendar_mut(to).expect("destination calendar");
            dst.events.retain(|e| e.immutable_id != copy.immutable_id);
            dst.events.push(copy);
        });
    }

    /// The event's current ordinary id (it changes on a move).
    pub fn rest_id(&self, upn: &str, id: &str) -> String {
        self.account_mut(upn, |a| {
            let (ci, ei) = a.find_any(id).expect("event");
            a.calendars[ci].events[ei].rest_id.clone()
        })
    }

    /// A refresh token for the account, as a consent long ago gave it.
    pub fn issue_refresh_token(&self, upn: &str) -> String {
        let t = format!("0.AAAA-fake-refresh-{}", rand_hex());
        self.st().refresh.insert(t.clone(), (upn.to_lowercase(), false));
        t
    }

    /// The user or an admin revoked the grant: refresh answers `invalid_grant`
    /// (AADSTS50173), access tokens 401.
    pub fn revoke(&self, upn: &str) {
        let upn = upn.to_lowercase();
        let mut st = self.st();
        for t in st.refresh.values_mut().filter(|t| t.0 == upn) {
            t.1 = true;
        }
        for t in st.access.values_mut().filter(|t| t.0 == upn) {
            t.1 = false;
        }
    }

    /// Access tokens stop working (401); refreshing works.
    pub fn expire_access_tokens(&self, upn: &str) {
        let upn = upn.to_lowercase();
        for t in self.st().access.values_mut().filter(|t| t.0 == upn) {
            t.1 = false;
        }
    }

    /// From now on a refresh token stops working once it has been used.
    pub fn retire_used_refresh_tokens(&self) {
        self.st().retire_used_refresh = true;
    }

    /// `expires_in` of access tokens issued from now on (Microsoft: 3599).
    pub fn set_access_token_lifetime(&self, secs: i64) {
        self.st().expires_in = secs;
    }

    /// The most events per delta page (a smaller `odata.maxpagesize` wins).
    pub fn set_page_size(&self, n: usize) {
        self.st().page_size = n.max(1);
    }

    /// Every delta token issued so far is dead: using one answers 410 `syncStateNotFound`.
    pub fn invalidate_delta_tokens(&self) {
        for t in self.st().delta_tokens.values_mut() {
            t.valid = false;
        }
    }

    /// The longest subscription lifetime accepted, in minutes.
    pub fn set_max_subscription_minutes(&self, minutes: i64) {
        self.st().max_minutes = minutes;
    }

    /// The subscription's expiration passes now (Graph deletes it).
    pub fn expire_subscription(&self, id: &str) {
        let mut st = self.st();
        let s = st.subscriptions.iter_mut().find(|s| s.id == id).expect("subscription");
        s.expiration = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    }

    /// The next `times` calls to `endpoint` answer `status`, with
    /// `Retry-After: {secs}` when given. Endpoints: `authorize`, `token`,
    /// `me`, `calendars`, `delta`, `subscribe` (POST), `renew` (PATCH),
    /// `unsubscribe` (DELETE), `reauthorize`.
    pub fn fail_next(&self, endpoint: &str, status: u16, retry_after_secs: Option<u64>, times: usize) {
        self.st().failures.push(Failure { endpoint: endpoint.into(), status, retry_after: retry_after_secs, times });
    }

    /// How many requests an endpoint got (names as for `fail_next`).
    pub fn calls(&self, endpoint: &str) -> u64 {
        self.st().calls.get(endpoint).copied().unwrap_or(0)
    }

    pub fn delta_log(&self) -> Vec<DeltaCall> {
        self.st().delta_log.clone()
    }

    /// Every delta request waits this long before it is answered.
    pub fn set_delta_delay(&self, delay: Duration) {
        self.st().delta_delay = delay;
    }

    /// The most delta requests of the account answered at the same time.
    pub fn max_concurrent_deltas(&self, upn: &str) -> u32 {
        self.st().deltas_max.get(&upn.to_lowercase()).copied().unwrap_or(0)
    }

    /// Delta passes of the account: delta requests that start a round (no `$skiptoken`).
    pub fn delta_passes(&self, upn: &str) -> usize {
        let upn = upn.to_lowercase();
        self.st().delta_log.iter().filter(|c| c.account == upn && !c.skip_token).count()
    }

    /// Every subscription the account ever made.
    pub fn subscriptions(&self, upn: &str) -> Vec<FakeSubscription> {
        let upn = upn.to_lowercase();
        self.st().subscriptions.iter().filter(|s| s.account == upn).cloned().collect()
    }

    /// The account's subscriptions that are neither removed nor expired.
    pub fn active_subscriptions(&self, upn: &str) -> Vec<FakeSubscription> {
        self.subscriptions(upn).into_iter().filter(FakeSubscription::active).collect()
    }

    /// Every POST the fake made to syncgate, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.st().deliveries.clone()
    }

    // ---- sending to syncgate ---------------------------------------------

    /// A change notification item of one subscription about one event
    /// (`event_id` either of its ids, or any string for an unknown event),
    /// with the subscription's clientState and id format.
    pub fn notification_item(&self, subscription_id: &str, change_type: &str, event_id: &str) -> Value {
        let st = self.st();
        let s = st.subscriptions.iter().find(|s| s.id == subscription_id).expect("subscription");
        let a = &st.accounts[&s.account];
        let id = a
            .find_any(event_id)
            .map(|(ci, ei)| {
                let e = &a.calendars[ci].events[ei];
                if s.immutable_ids {
                    e.immutable_id.clone()
                } else {
                    e.rest_id.clone()
                }
            })
            .unwrap_or_else(|| event_id.to_string());
        let path = format!("Users/{}/Events/{id}", a.oid);
        json!({
            "id": rand_hex(),
            "subscriptionId": s.id,
            "subscriptionExpirationDateTime": graph_time(s.expiration),
            "clientState": s.client_state,
            "changeType": change_type,
            "resource": path,
            "tenantId": a.tid,
            "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": path, "@odata.etag": format!("W/\"{}\"", rand_hex()), "id": id},
        })
    }

    /// Notify every active subscription of the account that covers the
    /// event's calendar (all of them when the event is unknown), one batch
    /// each. Returns what syncgate answered (0: nothing within 3 s).
    pub async fn notify(&self, upn: &str, change_type: &str, event_id: &str) -> Vec<u16> {
        let upn_l = upn.to_lowercase();
        let calendar = {
            let st = self.st();
            let a = &st.accounts[&upn_l];
            a.find_any(event_id).map(|(ci, _)| a.calendars[ci].id.clone())
        };
        let subs: Vec<FakeSubscription> =
            self.active_subscriptions(&upn_l).into_iter().filter(|s| calendar.as_ref().is_none_or(|c| *c == s.calendar)).collect();
        let mut out = Vec::new();
        for s in subs {
            let item = self.notification_item(&s.id, change_type, event_id);
            out.push(self.post_batch(&s.notification_url, vec![item], "change").await);
        }
        out
    }

    /// POST `{"value": items}` to `url` as Graph does (for forged batches).
    pub async fn send_batch(&self, url: &str, items: Vec<Value>) -> u16 {
        self.post_batch(url, items, "batch").await
    }

    /// A lifecycle notification (`reauthorizationRequired`,
    /// `subscriptionRemoved`, `missed`) to the subscription's
    /// lifecycleNotificationUrl; 0 when it has none (Graph sends nothing).
    /// `subscriptionRemoved` removes the subscription first.
    pub async fn lifecycle(&self, subscription_id: &str, event: &str) -> u16 {
        let (url, item) = {
            let mut st = self.st();
            let s = st.subscriptions.iter_mut().find(|s| s.id == subscription_id).expect("subscription");
            match event {
                "subscriptionRemoved" => s.removed = true,
                "reauthorizationRequired" => s.needs_reauth = true,
                _ => {}
            }
            let s = s.clone();
            let tid = st.accounts[&s.account].tid.clone();
            let item = json!({
                "subscriptionId": s.id,
                "subscriptionExpirationDateTime": graph_time(s.expiration),
                "tenantId": tid,
                "clientState": s.client_state,
                "lifecycleEvent": event,
            });
            (s.lifecycle_url, item)
        };
        match url {
            Some(url) => self.post_batch(&url, vec![item], "lifecycle").await,
            None => 0,
        }
    }

    async fn post_batch(&self, url: &str, items: Vec<Value>, kind: &str) -> u16 {
        let started = Instant::now();
        // Graph's HTTP client gives up after 3 seconds.
        let res = self.inner.http.post(url).timeout(Duration::from_secs(3)).json(&json!({"value": items})).send().await;
        let status = res.map(|r| r.status().as_u16()).unwrap_or(0);
        self.st().deliveries.push(Delivery { url: url.into(), kind: kind.into(), status, elapsed: started.elapsed() });
        status
    }

    /// The validation handshake: POST `{url}?validationToken=…` (form-encoded
    /// in the query) and expect, within 10 s, 200 `text/plain` with the
    /// decoded token as the whole body.
    async fn validate(&self, url: &str) -> bool {
        let token = format!("Validation: Testing client application reachability for subscription Request-Id: {}", guid());
        let Ok(mut target) = url::Url::parse(url) else { return false };
        target.query_pairs_mut().append_pair("validationToken", &token);
        let started = Instant::now();
        let res =
            self.inner.http.post(target).header("content-type", "text/plain; charset=utf-8").timeout(Duration::from_secs(10)).send().await;
        let (status, ok) = match res {
            Ok(r) => {
                let status = r.status().as_u16();
                let plain = r.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("text/plain"));
                let body = r.text().await.unwrap_or_default();
                (status, status == 200 && plain && body == token)
            }
            Err(_) => (0, false),
        };
        self.st().deliveries.push(Delivery { url: url.into(), kind: "validation".into(), status, elapsed: started.elapsed() });
        ok
    }

    // ---- the fake's HTTP side ---------------------------------------------

    fn take_failure(&self, endpoint: &str) -> Option<(u16, Option<u64>)> {
        let mut st = self.st();
        *st.calls.entry(endpoint.to_string()).or_default() += 1;
        let f = st.failures.iter_mut().find(|f| f.endpoint == endpoint && f.times > 0)?;
        f.times -= 1;
        Some((f.status, f.retry_after))
    }

    fn injected(status: u16, retry_after: Option<u64>) -> Response {
        graph_error(status, code_for(status), "injected failure", retry_after)
    }

    /// The account a bearer token is for, or Graph's 401.
    fn bearer(&self, headers: &HeaderMap) -> Result<String, Box<Response>> {
        let token = headers.get("authorization").and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer "));
        match token.and_then(|t| self.st().access.get(t).cloned()) {
            Some((upn, true)) => Ok(upn),
            _ => Err(Box::new(graph_error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.", None))),
        }
    }

    async fn handle(&self, method: Method, path: String, query: String, headers: HeaderMap, body: Bytes) -> Response {
        let q: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let segs: Vec<&str> =
            path.trim_matches('/').split('/').map(|s| if s.eq_ignore_ascii_case("calendarView") { "calendarView" } else { s }).collect();
        match (method.as_str(), segs.as_slice()) {
            ("GET", [tenant, "oauth2", "v2.0", "authorize"]) => self.authorize(tenant, &q),
            ("POST", [tenant, "oauth2", "v2.0", "token"]) => {
                let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
                self.token(tenant, &form)
            }
            ("GET", ["v1.0", "me"]) => self.me(&headers),
            ("GET", ["v1.0", "me", "calendars"]) => self.calendars(&headers),
            ("GET", ["v1.0", "organization"]) => self.organization(&headers),
            ("GET", ["v1.0", "me", "calendarView", "delta"]) => self.slow_delta(None, &q, &headers).await,
            ("GET", ["v1.0", "me", "calendars", id, "calendarView", "delta"]) => self.slow_delta(Some(id), &q, &headers).await,
            ("POST", ["v1.0", "subscriptions"]) => self.subscribe(&headers, &body).await,
            ("PATCH", ["v1.0", "subscriptions", id]) => self.renew(id, &headers, &body).await,
            ("DELETE", ["v1.0", "subscriptions", id]) => self.unsubscribe(id, &headers),
            ("POST", ["v1.0", "subscriptions", id, "reauthorize"]) => self.reauthorize(id, &headers),
            _ => graph_error(400, "BadRequest", &format!("Resource not found for the segment in {method} {path}."), None),
        }
    }

    /// The sign-in and consent page: the user set by `consent_as` signs in
    /// and agrees at once; the answer goes to the redirect URI.
    fn authorize(&self, tenant: &str, q: &HashMap<String, String>) -> Response {
        if let Some((s, ra)) = self.take_failure("authorize") {
            return Self::injected(s, ra);
        }
        let get = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
        let mut st = self.st();
        // Errors before a trusted redirect URI is known are shown, not redirected.
        if get("client_id") != CLIENT_ID {
            return oauth_error(400, "unauthorized_client", None, "Application not found in the directory.");
        }
        if !st.redirect_uris.iter().any(|u| u == get("redirect_uri")) {
            return oauth_error(
                400,
                "invalid_request",
                Some(50011),
                "The redirect URI does not match the redirect URIs configured for the application.",
            );
        }
        let scopes: Vec<&str> = get("scope").split(' ').collect();
        let missing: Vec<&str> = SCOPES.split(' ').filter(|s| !scopes.iter().any(|x| x.eq_ignore_ascii_case(s))).collect();
        // The fake insists on what syncgate must send: code, state, S256.
        if get("response_type") != "code" || get("state").is_empty() || !missing.is_empty() {
            return oauth_error(
                400,
                "invalid_request",
                None,
                &format!("response_type=code, state and scopes {SCOPES} are required; missing {missing:?}"),
            );
        }
        if get("code_challenge").is_empty() || get("code_challenge_method") != "S256" {
            return oauth_error(400, "invalid_request", None, "PKCE with code_challenge_method=S256 is required.");
        }
        let redirect = |pairs: &[(&str, &str)]| {
            let mut url = url::Url::parse(get("redirect_uri")).unwrap();
            for (k, v) in pairs {
                url.query_pairs_mut().append_pair(k, v);
            }
            let mut res = Response::new(Default::default());
            *res.status_mut() = StatusCode::FOUND;
            res.headers_mut().insert("location", url.as_str().parse().unwrap());
            res
        };
        if std::mem::take(&mut st.deny_next_consent) {
            return redirect(&[
                ("error", "access_denied"),
                ("error_description", "The user declined to consent."),
                ("state", get("state")),
            ]);
        }
        let Some(upn) = st.consent_as.clone() else { return oauth_error(400, "invalid_request", None, "nobody to sign in as") };
        let account = st.accounts.get(&upn).expect("consent_as names an account").clone();
        let tenant_ok = matches!(tenant, "common" | "organizations") || tenant.eq_ignore_ascii_case(&account.tid);
        if !tenant_ok {
            return oauth_error(400, "invalid_request", Some(50020), &format!("User account '{upn}' does not exist in tenant '{tenant}'."));
        }
        let code = format!("1.AAAA-fake-code-{}", rand_hex());
        st.codes.insert(
            code.clone(),
            Code { upn, redirect_uri: get("redirect_uri").into(), challenge: get("code_challenge").into(), issued: Instant::now() },
        );
        redirect(&[("code", &code), ("state", get("state")), ("session_state", &guid())])
    }

    fn issue_access(st: &mut State, upn: &str) -> String {
        let t = format!("eyJ0eXAiOiJKV1QiLCJub25jZSI6ImZha2UifQ.fake-access-{}", rand_hex());
        st.access.insert(t.clone(), (upn.to_string(), true));
        t
    }

    /// An unsigned id_token (`alg: none`): the refresh answer's id_token is
    /// documented as unsigned, and a token taken straight from the token
    /// endpoint over TLS needs no signature check for the code exchange.
    fn id_token(a: &Account) -> String {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = json!({
            "aud": CLIENT_ID, "iss": format!("https://login.microsoftonline.com/{}/v2.0", a.tid),
            "iat": now, "nbf": now, "exp": now + 3600, "ver": "2.0",
            "tid": a.tid, "oid": a.oid, "sub": format!("sub-{}", a.oid),
            "preferred_username": a.upn, "name": a.name,
        });
        if let Some(e) = &a.email {
            claims["email"] = json!(e);
        }
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", b64(&json!({"typ": "JWT", "alg": "none"})), b64(&claims))
    }

    fn token(&self, _tenant: &str, form: &HashMap<String, String>) -> Response {
        if let Some((s, ra)) = self.take_failure("token") {
            let mut res = oauth_error(s, "temporarily_unavailable", None, "injected failure");
            if let Some(secs) = ra {
                res.headers_mut().insert("retry-after", secs.to_string().parse().unwrap());
            }
            return res;
        }
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
        if get("client_id") != CLIENT_ID || get("client_secret") != CLIENT_SECRET {
            return oauth_error(401, "invalid_client", None, "Invalid client secret provided.");
        }
        let mut st = self.st();
        let upn = match get("grant_type") {
            "authorization_code" => {
                // A code is good for one redemption, right or wrong.
                let Some(code) = st.codes.remove(get("code")) else {
                    return oauth_error(
                        400,
                        "invalid_grant",
                        Some(70008),
                        "The provided authorization code or refresh token has expired or was revoked.",
                    );
                };
                if code.issued.elapsed() > Duration::from_secs(600) {
                    return oauth_error(400, "invalid_grant", Some(70008), "The provided authorization code has expired.");
                }
                if code.redirect_uri != get("redirect_uri") {
                    return oauth_error(
                        400,
                        "invalid_grant",
                        Some(50011),
                        "The redirect URI does not match the one of the authorization request.",
                    );
                }
                if s256(get("code_verifier")) != code.challenge {
                    return oauth_error(
                        400,
                        "invalid_grant",
                        Some(501481),
                        "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                    );
                }
                code.upn
            }
            "refresh_token" => {
                let rt = get("refresh_token").to_string();
                match st.refresh.get(&rt).cloned() {
                    Some((upn, false)) => {
                        if st.retire_used_refresh {
                            st.refresh.get_mut(&rt).unwrap().1 = true;
                        }
                        upn
                    }
                    _ => {
                        return oauth_error(
                            400,
                            "invalid_grant",
                            Some(50173),
                            "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
                        )
                    }
                }
            }
            _ => return oauth_error(400, "unsupported_grant_type", None, "The grant type is not supported."),
        };
        let access = Self::issue_access(&mut st, &upn);
        // Every answer carries a new refresh token; the caller keeps the newest.
        let refresh = format!("0.AAAA-fake-refresh-{}", rand_hex());
        st.refresh.insert(refresh.clone(), (upn.clone(), false));
        let id_token = Self::id_token(&st.accounts[&upn]);
        reply(
            200,
            &json!({
                "token_type": "Bearer", "scope": "Calendars.Read User.Read profile openid",
                "expires_in": st.expires_in, "ext_expires_in": st.expires_in,
                "access_token": access, "refresh_token": refresh, "id_token": id_token,
            }),
        )
    }

    /// `GET /v1.0/me`
    fn me(&self, headers: &HeaderMap) -> Response {
        if let Some((s, ra)) = self.take_failure("me") {
            return Self::injected(s, ra);
        }
        let upn = match self.bearer(headers) {
            Ok(u) => u,
            Err(r) => return *r,
        };
        let st = self.st();
        let a = &st.accounts[&upn];
        reply(
            200,
            &json!({"@odata.context": format!("{}/v1.0/$metadata#users/$entity", self.base), "id": a.oid, "userPrincipalName": a.upn, "displayName": a.name, "mail": a.email.clone().unwrap_or_else(|| a.upn.clone())}),
        )
    }

    /// `GET /v1.0/organization?$select=verifiedDomains`: the signed-in
    /// account's tenant and the domains it verified (the first is the default).
    fn organization(&self, headers: &HeaderMap) -> Response {
        if let Some((s, ra)) = self.take_failure("organization") {
            return Self::injected(s, ra);
        }
        let upn = match self.bearer(headers) {
            Ok(u) => u,
            Err(r) => return *r,
        };
        let st = self.st();
        let tid = st.accounts[&upn].tid.clone();
        let domains: Vec<Value> = st
            .verified_domains
            .get(&tid.to_lowercase())
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, d)| json!({"name": d, "isDefault": i == 0, "isInitial": false, "type": "Managed", "capabilities": "Email"}))
            .collect();
        reply(
            200,
            &json!({"@odata.context": format!("{}/v1.0/$metadata#organization(verifiedDomains)", self.base), "value": [{"id": tid, "verifiedDomains": domains}]}),
        )
    }

    /// `GET /v1.0/me/calendars`
    fn calendars(&self, headers: &HeaderMap) -> Response {
        if let Some((s, ra)) = self.take_failure("calendars") {
            return Self::injected(s, ra);
        }
        let upn = match self.bearer(headers) {
            Ok(u) => u,
            Err(r) => return *r,
        };
        let st = self.st();
        let a = &st.accounts[&upn];
        let value: Vec<Value> = a
            .calendars
            .iter()
            .map(|c| json!({"id": c.id, "name": c.name, "color": "auto", "isDefaultCalendar": c.is_default, "canEdit": true, "owner": {"name": a.name, "address": a.upn}}))
            .collect();
        reply(200, &json!({"@odata.context": format!("{}/v1.0/$metadata#users('{}')/calendars", self.base, a.oid), "value": value}))
    }

    /// A delta request answered after `set_delta_delay`, counted while it runs.
    async fn slow_delta(&self, calendar: Option<&str>, q: &HashMap<String, String>, headers: &HeaderMap) -> Response {
        let account = self.bearer(headers).ok().unwrap_or_default();
        let delay = {
            let mut st = self.st();
            let now = {
                let n = st.deltas_now.entry(account.clone()).or_default();
                *n += 1;
                *n
            };
            let max = st.deltas_max.entry(account.clone()).or_default();
            *max = (*max).max(now);
            st.delta_delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let res = self.delta(calendar, q, headers);
        *self.st().deltas_now.entry(account).or_default() -= 1;
        res
    }

    /// `GET /v1.0/me/calendarView/delta` (the default calendar) and
    /// `GET /v1.0/me/calendars/{id}/calendarView/delta`.
    fn delta(&self, calendar: Option<&str>, q: &HashMap<String, String>, headers: &HeaderMap) -> Response {
        let immutable = wants_immutable(headers);
        let token_of = |name: &str| q.iter().find(|(k, _)| k.trim_start_matches('$').eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        let (skip, delta_token) = (token_of("skiptoken"), token_of("deltatoken"));
        let window = q.keys().any(|k| k.eq_ignore_ascii_case("startDateTime") || k.eq_ignore_ascii_case("endDateTime"));
        let account = self.bearer(headers).ok().unwrap_or_default();
        let (status, res) = match self.take_failure("delta") {
            Some((s, ra)) => (s, Self::injected(s, ra)),
            None => match self.bearer(headers) {
                Err(r) => (401, *r),
                Ok(upn) => {
                    let page = self.delta_page(&upn, calendar, q, skip.as_deref(), delta_token.as_deref(), window, immutable, headers);
                    match page {
                        Ok(v) => (200, reply(200, &v)),
                        Err((s, r)) => (s, *r),
                    }
                }
            },
        };
        let calendar_name = calendar.unwrap_or("default").to_string();
        self.st().delta_log.push(DeltaCall {
            account,
            calendar: calendar_name,
            delta_token: delta_token.is_some(),
            skip_token: skip.is_some(),
            window,
            immutable_ids: immutable,
            status,
        });
        res
    }

    #[allow(clippy::too_many_arguments)]
    fn delta_page(
        &self,
        upn: &str,
        calendar: Option<&str>,
        q: &HashMap<String, String>,
        skip: Option<&str>,
        delta_token: Option<&str>,
        window: bool,
        immutable: bool,
        headers: &HeaderMap,
    ) -> Result<Value, (u16, Box<Response>)> {
        let bad = |msg: &str| (400, Box::new(graph_error(400, "BadRequest", msg, None)));
        let gone = || (410, Box::new(graph_error(410, "syncStateNotFound", "The sync state generation is not found.", None)));
        // The window lives in the tokens: repeating it on a link is a client bug.
        if window && (skip.is_some() || delta_token.is_some()) {
            return Err(bad("startDateTime and endDateTime belong to the first request of a round only."));
        }
        let mut st = self.st();
        let cal_id = {
            let a = &st.accounts[upn];
            let found = match calendar {
                None => a.calendars.iter().find(|c| c.is_default),
                Some(id) => a.calendars.iter().find(|c| c.id == id),
            };
            match found {
                Some(c) => c.id.clone(),
                None => {
                    return Err((
                        404,
                        Box::new(graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.", None)),
                    ))
                }
            }
        };
        let mut pending = if let Some(skip) = skip {
            match st.pages.remove(skip) {
                Some(p) if p.upn == upn && p.calendar == cal_id => p,
                _ => return Err(gone()),
            }
        } else {
            let (since, start, end) = if let Some(tok) = delta_token {
                match st.delta_tokens.get(tok) {
                    Some(t) if t.valid && t.upn == upn && t.calendar == cal_id => (Some(t.seq), t.start, t.end),
                    _ => return Err(gone()),
                }
            } else {
                let at = |k: &str| q.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).and_then(|(_, v)| parse_time(v));
                let (Some(start), Some(end)) = (at("startDateTime"), at("endDateTime")) else {
                    return Err(bad("This request requires startDateTime and endDateTime."));
                };
                (None, start.unix_timestamp(), end.unix_timestamp())
            };
            let seq = st.seq;
            let a = &st.accounts[upn];
            let rows = rows(a.calendar(&cal_id).unwrap(), since, start, end, st.list_series_masters);
            let next = rand_hex();
            st.delta_tokens.insert(next.clone(), DeltaToken { upn: upn.into(), calendar: cal_id.clone(), start, end, seq, valid: true });
            Pending { upn: upn.into(), calendar: cal_id.clone(), rows: rows.into(), delta_token: next }
        };
        let size = max_page_size(headers).unwrap_or(usize::MAX).min(st.page_size).max(1);
        let n = size.min(pending.rows.len());
        let value: Vec<Value> = pending.rows.drain(..n).map(|r| render(&r, immutable)).collect();
        let link_base = match calendar {
            None => format!("{}/v1.0/me/calendarView/delta", self.base),
            Some(id) => format!("{}/v1.0/me/calendars/{id}/calendarView/delta", self.base),
        };
        let mut out = json!({"@odata.context": format!("{}/v1.0/$metadata#Collection(event)", self.base), "value": value});
        if pending.rows.is_empty() {
            out["@odata.deltaLink"] = json!(format!("{link_base}?$deltatoken={}", pending.delta_token));
        } else {
            let skip = rand_hex();
            out["@odata.nextLink"] = json!(format!("{link_base}?$skiptoken={skip}"));
            st.pages.insert(skip, pending);
        }
        Ok(out)
    }

    fn subscription_json(&self, s: &FakeSubscription) -> Value {
        json!({
            "@odata.context": format!("{}/v1.0/$metadata#subscriptions/$entity", self.base),
            "id": s.id, "resource": s.resource, "applicationId": CLIENT_ID, "changeType": s.change_type,
            "clientState": s.client_state, "notificationUrl": s.notification_url,
            "lifecycleNotificationUrl": s.lifecycle_url, "expirationDateTime": graph_time(s.expiration),
            "creatorId": self.st().accounts[&s.account].oid, "latestSupportedTlsVersion": "v1_2",
            "notificationContentType": "application/json",
        })
    }

    /// An expiration within the allowed lifetime, or Graph's 400.
    fn check_expiration(&self, raw: Option<&str>) -> Result<OffsetDateTime, Box<Response>> {
        let max = self.st().max_minutes;
        let now = OffsetDateTime::now_utc();
        match raw.and_then(parse_time) {
            Some(t) if t > now && t <= now + time::Duration::minutes(max) => Ok(t),
            Some(_) => Err(Box::new(graph_error(
                400,
                "BadRequest",
                &format!("Subscription expiration can only be {max} minutes in the future and must not be in the past."),
                None,
            ))),
            None => Err(Box::new(graph_error(400, "BadRequest", "expirationDateTime is required.", None))),
        }
    }

    /// `POST /v1.0/subscriptions`: checks the request, then validates the
    /// notification (and lifecycle) URL before creating anything.
    async fn subscribe(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        if let Some((s, ra)) = self.take_failure("subscribe") {
            return Self::injected(s, ra);
        }
        let upn = match self.bearer(headers) {
            Ok(u) => u,
            Err(r) => return *r,
        };
        let Ok(req) = serde_json::from_slice::<Value>(body) else { return graph_error(400, "BadRequest", "Invalid JSON.", None) };
        let change_type = req["changeType"].as_str().unwrap_or_default().to_string();
        if change_type.is_empty() || !change_type.split(',').all(|c| matches!(c.trim(), "created" | "updated" | "deleted")) {
            return graph_error(400, "BadRequest", "changeType must be created, updated and/or deleted.", None);
        }
        let Some(notification_url) = req["notificationUrl"].as_str().map(str::to_string) else {
            return graph_error(400, "BadRequest", "notificationUrl is required.", None);
        };
        let lifecycle_url = req["lifecycleNotificationUrl"].as_str().map(str::to_string);
        let client_state = req["clientState"].as_str().map(str::to_string);
        if client_state.as_ref().is_some_and(|c| c.chars().count() > 128) {
            return graph_error(400, "BadRequest", "clientState is longer than 128 characters.", None);
        }
        let expiration = match self.check_expiration(req["expirationDateTime"].as_str()) {
            Ok(t) => t,
            Err(r) => return *r,
        };
        let resource = req["resource"].as_str().unwrap_or_default().to_string();
        let calendar = {
            let st = self.st();
            let a = &st.accounts[&upn];
            let parts: Vec<&str> = resource.trim_start_matches('/').split('/').collect();
            let found = match parts.as_slice() {
                [me, events] if me.eq_ignore_ascii_case("me") && events.eq_ignore_ascii_case("events") => {
                    a.calendars.iter().find(|c| c.is_default)
                }
                [me, cals, id, events]
                    if me.eq_ignore_ascii_case("me") && cals.eq_ignore_ascii_case("calendars") && events.eq_ignore_ascii_case("events") =>
                {
                    a.calendars.iter().find(|c| c.id == *id)
                }
                _ => return graph_error(400, "BadRequest", &format!("Unsupported resource '{resource}'."), None),
            };
            match found {
                Some(c) => c.id.clone(),
                None => return graph_error(404, "ResourceNotFound", "The calendar was not found.", None),
            }
        };
        // Graph checks the endpoints before it creates the subscription.
        let mut urls = vec![notification_url.clone()];
        urls.extend(lifecycle_url.clone());
        for url in urls {
            if !self.validate(&url).await {
                return graph_error(
                    400,
                    "ValidationError",
                    "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
                    None,
                );
            }
        }
        let s = FakeSubscription {
            id: guid(),
            account: upn,
            resource,
            calendar,
            change_type,
            notification_url,
            lifecycle_url,
            client_state,
            expiration,
            immutable_ids: wants_immutable(headers),
            removed: false,
            needs_reauth: false,
            created: OffsetDateTime::now_utc(),
            renewals: 0,
        };
        self.st().subscriptions.push(s.clone());
        reply(201, &self.subscription_json(&s))
    }

    /// The caller's subscription that Graph still has, or 404.
    fn live_subscription(&self, id: &str, upn: &str) -> Result<FakeSubscription, Box<Response>> {
        let st = self.st();
        match st.subscriptions.iter().find(|s| s.id == id && s.account == upn && s.active()) {
            Some(s) => Ok(s.clone()),
            None => Err(Box::new(graph_error(404, "ResourceNotFound", &format!("The object was not found: subscription {id}."), None))),
        }
    }

    /// What every call on one subscription checks first: an injected
    /// failure, the bearer, and that the subscription is the caller's and live.
    fn own_subscription(&self, call: &str, id: &str, headers: &HeaderMap) -> Result<FakeSubscription, Box<Response>> {
        if let Some((s, ra)) = self.take_failure(call) {
            return Err(Box::new(Self::injected(s, ra)));
        }
        let upn = self.bearer(headers)?;
        self.live_subscription(id, &upn)
    }

    /// `PATCH /v1.0/subscriptions/{id}`: a new expiration (which also
    /// reauthorizes); a changed notificationUrl is validated first.
    async fn renew(&self, id: &str, headers: &HeaderMap, body: &[u8]) -> Response {
        let current = match self.own_subscription("renew", id, headers) {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let expiration = match req["expirationDateTime"].as_str() {
            Some(raw) => match self.check_expiration(Some(raw)) {
                Ok(t) => Some(t),
                Err(r) => return *r,
            },
            None => None,
        };
        let new_url = req["notificationUrl"].as_str().filter(|u| *u != current.notification_url).map(str::to_string);
        if let Some(url) = &new_url {
            if !self.validate(url).await {
                return graph_error(400, "ValidationError", "Subscription validation request failed.", None);
            }
        }
        let updated = {
            let mut st = self.st();
            let s = st.subscriptions.iter_mut().find(|s| s.id == id).unwrap();
            if let Some(t) = expiration {
                s.expiration = t;
                s.renewals += 1;
                s.needs_reauth = false;
            }
            if let Some(url) = new_url {
                s.notification_url = url;
            }
            s.clone()
        };
        reply(200, &self.subscription_json(&updated))
    }

    /// `DELETE /v1.0/subscriptions/{id}`
    fn unsubscribe(&self, id: &str, headers: &HeaderMap) -> Response {
        if let Err(r) = self.own_subscription("unsubscribe", id, headers) {
            return *r;
        }
        self.st().subscriptions.iter_mut().find(|s| s.id == id).unwrap().removed = true;
        no_content()
    }

    /// `POST /v1.0/subscriptions/{id}/reauthorize`: answers a
    /// `reauthorizationRequired` without changing the expiration.
    fn reauthorize(&self, id: &str, headers: &HeaderMap) -> Response {
        if let Err(r) = self.own_subscription("reauthorize", id, headers) {
            return *r;
        }
        self.st().subscriptions.iter_mut().find(|s| s.id == id).unwrap().needs_reauth = false;
        no_content()
    }
}
