//! The calls syncgate makes to Microsoft Graph (calendars, calendar-view
//! delta pages, subscriptions) and what their failures mean ([`CallError`]).
//! Every call asks for immutable ids and UTC times; `Retry-After` is
//! honoured here when the wait is short. Access tokens go in headers and
//! delta links are [`Secret`]s (they carry Graph's state tokens); errors are
//! built without URLs or bodies, so no credential reaches a message.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::events::GraphEvent;
use crate::backoff::Backoff;
use crate::config::MicrosoftConfig;
use crate::counters::Metrics;
use crate::provider::Secret;
use crate::store::timefmt;

/// Ids that stay the same when an event moves to another calendar.
const IMMUTABLE_IDS: &str = "IdType=\"ImmutableId\"";
/// Times in UTC, so [`super::events`] needs no Windows-zone table.
const UTC_TIMES: &str = "outlook.timezone=\"UTC\"";
/// Tries of one call while Graph throttles (the first included).
const MAX_TRIES: u32 = 3;
/// The first wait when a throttling answer names none (then doubled, jittered).
const THROTTLE_FIRST_WAIT: Duration = Duration::from_secs(1);
/// A runaway guard for the calendar list (a mailbox has a few dozen).
const MAX_CALENDAR_PAGES: usize = 20;

/// Why a call to Graph failed, in the terms the caller acts on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// 401: the access token expired or was revoked; refresh once and retry.
    #[error("Microsoft Graph refused the access token (401)")]
    Unauthorized,
    /// 410, or `syncStateNotFound`: the delta link is dead; one full sync.
    #[error("the delta state is gone; a full sync is needed")]
    DeltaStateGone,
    /// 404: the calendar or subscription does not exist (any more).
    #[error("not found in Microsoft Graph (404)")]
    NotFound,
    /// 429/503/504 that outlasted the short waits of the call; come back after `retry_after`.
    #[error("Microsoft Graph is throttling{}", retry_after.map(|d| format!(" (retry after {} s)", d.as_secs())).unwrap_or_default())]
    Throttled { retry_after: Option<Duration> },
    /// Any other refusal: the status and Graph's `error.code`.
    #[error("Microsoft Graph refused the request ({status}: {code})")]
    Http { status: u16, code: String },
    /// No answer: connection, TLS or timeout.
    #[error("cannot reach Microsoft Graph: {0}")]
    Network(String),
    /// An answer that could not be read, or a link to somewhere other than Graph.
    #[error("unexpected answer from Microsoft Graph: {0}")]
    BadResponse(String),
}

impl CallError {
    /// Worth trying again later (the sync's own backoff).
    pub fn retryable(&self) -> bool {
        matches!(self, CallError::Throttled { .. } | CallError::Network(_))
            || matches!(self, CallError::Http { status, .. } if *status >= 500)
    }

    /// The subscription create (or URL change) failed because Graph's
    /// validation request to the notification URL did not get its echo.
    pub fn is_validation_failure(&self) -> bool {
        matches!(self, CallError::Http { status: 400, code } if code.eq_ignore_ascii_case("ValidationError"))
    }

    /// The label `outcome` of `syncgate_microsoft_api_calls_total`.
    fn outcome(&self) -> &'static str {
        match self {
            CallError::Unauthorized => "unauthorized",
            CallError::DeltaStateGone => "state_gone",
            CallError::NotFound => "not_found",
            CallError::Throttled { .. } => "throttled",
            CallError::Http { .. } => "refused",
            CallError::Network(_) => "network",
            CallError::BadResponse(_) => "bad_response",
        }
    }
}

/// The HTTP client for Graph could not be built (TLS set-up): startup stops.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client for Microsoft Graph: {0}")]
pub struct HttpClientError(#[from] reqwest::Error);

/// One of the user's calendars (`GET /me/calendars`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GraphCalendar {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// `auto`, `lightBlue`, …
    #[serde(default)]
    pub color: Option<String>,
    #[serde(default)]
    pub is_default_calendar: Option<bool>,
}

/// Where a delta page request starts.
#[derive(Debug, Clone)]
pub enum DeltaStart {
    /// The first request of a full round: `calendar` (`primary` for the
    /// default one, else its id) over `[start, end)` (RFC 3339).
    Window { calendar: String, start: String, end: String },
    /// A link Graph gave back (`@odata.nextLink` or `@odata.deltaLink`),
    /// followed exactly as given: it carries the window and the state.
    Link(Secret),
}

/// One page of a delta round.
#[derive(Debug, Default)]
pub struct DeltaPage {
    /// Added or changed events (occurrences and exceptions of a series each on its own).
    pub events: Vec<GraphEvent>,
    /// Ids of `@removed` entries: deleted, or changed to outside the window.
    pub removed: Vec<String>,
    /// Entries in a shape that could not be read, left out.
    pub unreadable: usize,
    /// `@odata.nextLink`: more pages of this round.
    pub next_link: Option<Secret>,
    /// `@odata.deltaLink`, on the last page only: where the next round starts.
    pub delta_link: Option<Secret>,
}

/// What a new subscription is for.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    /// `primary` (the default calendar) or a calendar id.
    pub calendar: String,
    pub notification_url: String,
    pub lifecycle_url: String,
    /// Sent back on every notification; how syncgate knows a POST is Graph's.
    pub client_state: Secret,
    pub expiration: OffsetDateTime,
}

/// A subscription as Graph answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphSubscription {
    pub id: String,
    pub resource: String,
    /// In the stored form (UTC, milliseconds), when Graph's is readable.
    pub expires_at: Option<String>,
}

/// One page of a Graph collection: its items, the link to the next page,
/// and on a delta round's last page the link the next round starts from.
#[derive(Deserialize)]
struct ODataPage {
    #[serde(default)]
    value: Vec<Value>,
    #[serde(default, rename = "@odata.nextLink")]
    next_link: Option<Secret>,
    #[serde(default, rename = "@odata.deltaLink")]
    delta_link: Option<Secret>,
}

/// Microsoft Graph, reached with a user's access token.
pub struct GraphApi {
    http: reqwest::Client,
    /// `https://graph.microsoft.com/v1.0`, no trailing slash.
    base: reqwest::Url,
    page_size: usize,
    /// A `Retry-After` up to this long (`microsoft.max_retry_wait`) is waited
    /// out inside the call; a longer one is handed back
    /// ([`CallError::Throttled`]) for the sync or renewal to come back later.
    max_inline_wait: Duration,
    /// Counts every attempt by call and outcome (`microsoft_api_calls`).
    metrics: Option<Arc<Metrics>>,
}

impl GraphApi {
    pub fn new(cfg: &MicrosoftConfig, metrics: Option<Arc<Metrics>>) -> Result<GraphApi, HttpClientError> {
        crate::provider::install_tls();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            // Links are followed by the caller, after the same-host check.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("syncgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        // The config check refuses a base that is not a URL; a bad one here
        // makes every call a BadResponse rather than a startup panic.
        let base = reqwest::Url::parse(cfg.graph_base_url.trim().trim_end_matches('/'))
            .unwrap_or_else(|_| reqwest::Url::parse("https://graph.microsoft.com/v1.0").expect("a URL"));
        Ok(GraphApi { http, base, page_size: cfg.page_size.clamp(1, 1000), max_inline_wait: cfg.max_retry_wait.0, metrics })
    }

    /// `{base}/<segments...>`, each segment percent-encoded (ids may hold `/`, `+`, `=`).
    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, CallError> {
        let mut url = self.base.clone();
        url.path_segments_mut().map_err(|_| CallError::BadResponse("microsoft.graph_base_url cannot take a path".into()))?.extend(segments);
        Ok(url)
    }

    /// A link Graph gave back, if it points at Graph itself: the access
    /// token goes with it, so it must not go anywhere else.
    fn link(&self, link: &Secret) -> Result<reqwest::Url, CallError> {
        let url = reqwest::Url::parse(link.expose()).map_err(|_| CallError::BadResponse("a link that is not a URL".into()))?;
        let same = url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
            && url.path().starts_with(self.base.path());
        if !same {
            return Err(CallError::BadResponse("a link outside microsoft.graph_base_url".into()));
        }
        Ok(url)
    }

    /// Send a request built by `build` (again on each try), with the
    /// bearer token and the `Prefer` headers every call takes. Throttling
    /// answers are retried here while the wait is at most
    /// `max_inline_wait`, [`MAX_TRIES`] tries in all; every try is counted.
    async fn send(
        &self,
        call: &'static str,
        token: &Secret,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CallError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let req = build().bearer_auth(token.expose()).header("Prefer", IMMUTABLE_IDS).header("Prefer", UTC_TIMES);
            let res = match req.send().await {
                Ok(res) if res.status().is_success() => {
                    self.count(call, "ok");
                    return Ok(res);
                }
                Ok(res) => classify(res).await,
                Err(e) => net(e),
            };
            self.count(call, res.outcome());
            match res {
                CallError::Throttled { retry_after } if attempt < MAX_TRIES => {
                    let wait = retry_after.unwrap_or_else(|| Backoff::new(THROTTLE_FIRST_WAIT, self.max_inline_wait).delay(attempt - 1));
                    if wait > self.max_inline_wait {
                        return Err(res);
                    }
                    tracing::debug!(call, wait_ms = wait.as_millis() as u64, "Microsoft Graph is throttling; waiting as asked");
                    tokio::time::sleep(wait).await;
                }
                e => return Err(e),
            }
        }
    }

    fn count(&self, call: &'static str, outcome: &str) {
        if let Some(m) = &self.metrics {
            m.microsoft_api_calls.with_label_values(&[call, outcome]).inc();
        }
    }

    /// `GET /me/calendars`, every page: the user's own calendars.
    pub async fn calendars(&self, token: &Secret) -> Result<Vec<GraphCalendar>, CallError> {
        let mut url = self.url(&["me", "calendars"])?;
        let mut out = Vec::new();
        for _ in 0..MAX_CALENDAR_PAGES {
            let res = self.send("calendars", token, || self.http.get(url.clone())).await?;
            let page: ODataPage = read_json(res).await?;
            for item in page.value {
                match serde_json::from_value::<GraphCalendar>(item) {
                    Ok(c) if !c.id.is_empty() && c.id.len() <= 1024 => out.push(c),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "skipping a Microsoft calendar in an unexpected shape"),
                }
            }
            match page.next_link {
                Some(link) => url = self.link(&link)?,
                None => break,
            }
        }
        Ok(out)
    }

    /// One page of a calendar-view delta round (see [`DeltaStart`]).
    pub async fn delta_page(&self, token: &Secret, start: &DeltaStart) -> Result<DeltaPage, CallError> {
        let url = match start {
            DeltaStart::Window { calendar, start, end } => {
                let mut url = if calendar == "primary" {
                    self.url(&["me", "calendarView", "delta"])?
                } else {
                    self.url(&["me", "calendars", calendar, "calendarView", "delta"])?
                };
                url.query_pairs_mut().append_pair("startDateTime", start).append_pair("endDateTime", end);
                url
            }
            DeltaStart::Link(link) => self.link(link)?,
        };
        let page_size = format!("odata.maxpagesize={}", self.page_size);
        let res = self.send("delta", token, || self.http.get(url.clone()).header("Prefer", page_size.as_str())).await?;
        let raw: ODataPage = read_json(res).await?;
        let mut page = DeltaPage { next_link: raw.next_link, delta_link: raw.delta_link, ..DeltaPage::default() };
        for item in raw.value {
            if item.get("@removed").is_some() {
                match item.get("id").and_then(Value::as_str).filter(|id| !id.is_empty() && id.len() <= 1024) {
                    Some(id) => page.removed.push(id.to_string()),
                    None => page.unreadable += 1,
                }
                continue;
            }
            match serde_json::from_value::<GraphEvent>(item) {
                Ok(ev) if !ev.id.is_empty() && ev.id.len() <= 1024 => page.events.push(ev),
                _ => page.unreadable += 1,
            }
        }
        if page.unreadable > 0 {
            tracing::warn!(count = page.unreadable, "skipping Microsoft events in an unexpected shape");
        }
        Ok(page)
    }

    /// `POST /subscriptions` for created, updated and deleted events of one
    /// calendar. Graph first sends the validation request to both URLs; if
    /// that fails the answer is 400 ([`CallError::is_validation_failure`]).
    pub async fn create_subscription(&self, token: &Secret, new: &NewSubscription) -> Result<GraphSubscription, CallError> {
        let url = self.url(&["subscriptions"])?;
        let body = serde_json::json!({
            "changeType": "created,updated,deleted",
            "notificationUrl": new.notification_url,
            "lifecycleNotificationUrl": new.lifecycle_url,
            "resource": resource(&new.calendar),
            "expirationDateTime": graph_time(new.expiration),
            "clientState": new.client_state.expose(),
        });
        let res = self.send("subscribe", token, || self.http.post(url.clone()).json(&body)).await?;
        read_subscription(res).await
    }

    /// `PATCH /subscriptions/{id}` with a new expiration: renews in place
    /// (and reauthorizes). [`CallError::NotFound`]: Graph removed it.
    pub async fn renew_subscription(&self, token: &Secret, id: &str, expiration: OffsetDateTime) -> Result<GraphSubscription, CallError> {
        let url = self.url(&["subscriptions", id])?;
        let body = serde_json::json!({"expirationDateTime": graph_time(expiration)});
        let res = self.send("renew", token, || self.http.patch(url.clone()).json(&body)).await?;
        read_subscription(res).await
    }

    /// `POST /subscriptions/{id}/reauthorize`: the answer to a
    /// `reauthorizationRequired` lifecycle notification.
    pub async fn reauthorize_subscription(&self, token: &Secret, id: &str) -> Result<(), CallError> {
        let url = self.url(&["subscriptions", id, "reauthorize"])?;
        self.send("reauthorize", token, || self.http.post(url.clone()).header("content-length", "0")).await?;
        Ok(())
    }

    /// `DELETE /subscriptions/{id}`. One Graph no longer has (404) is as
    /// good as deleted.
    pub async fn delete_subscription(&self, token: &Secret, id: &str) -> Result<(), CallError> {
        let url = self.url(&["subscriptions", id])?;
        match self.send("unsubscribe", token, || self.http.delete(url.clone())).await {
            Ok(_) | Err(CallError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The subscription resource of a calendar's events.
pub fn resource(calendar: &str) -> String {
    if calendar == "primary" {
        "me/events".to_string()
    } else {
        format!("me/calendars/{calendar}/events")
    }
}

/// `2026-12-08T10:00:00.000Z`: ISO 8601 in UTC, as Graph takes a DateTimeOffset.
fn graph_time(t: OffsetDateTime) -> String {
    timefmt::format(t)
}

async fn read_subscription(res: reqwest::Response) -> Result<GraphSubscription, CallError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Sub {
        id: String,
        #[serde(default)]
        resource: Option<String>,
        #[serde(default)]
        expiration_date_time: Option<String>,
    }
    let s: Sub = read_json(res).await?;
    if s.id.is_empty() || s.id.len() > 1024 {
        return Err(CallError::BadResponse("a subscription without a usable id".into()));
    }
    Ok(GraphSubscription {
        id: s.id,
        resource: s.resource.unwrap_or_default(),
        expires_at: s.expiration_date_time.as_deref().and_then(timefmt::normalize),
    })
}

/// A transport failure, described without the URL (a link carries a token).
fn net(e: reqwest::Error) -> CallError {
    let e = e.without_url();
    if e.is_timeout() {
        CallError::Network("the request timed out".into())
    } else if e.is_connect() {
        CallError::Network("cannot connect".into())
    } else {
        CallError::Network(e.to_string())
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(res: reqwest::Response) -> Result<T, CallError> {
    let bytes = res.bytes().await.map_err(net)?;
    // The serde error names a position and an expected type, never the text.
    serde_json::from_slice(&bytes).map_err(|e| CallError::BadResponse(format!("cannot read the JSON: {e}")))
}

/// What an error answer means. Graph's look like
/// `{"error":{"code":"syncStateNotFound","message":"…"}}`.
async fn classify(res: reqwest::Response) -> CallError {
    let status = res.status().as_u16();
    let retry_after = res.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
    let body = res.bytes().await.unwrap_or_default();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    classify_parts(status, &v, retry_after)
}

/// `Retry-After` in seconds (what Graph sends); an HTTP date is not used by Graph.
fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(|s| Duration::from_secs(s.min(86_400)))
}

pub(crate) fn classify_parts(status: u16, v: &Value, retry_after: Option<Duration>) -> CallError {
    // Only the code, and only its safe characters: the message may quote the request.
    let code: String = v
        .pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(100)
        .collect();
    // `resyncRequired` is the older name of the same condition in delta docs.
    let state_gone = ["syncStateNotFound", "resyncRequired", "syncStateInvalid"].iter().any(|c| code.eq_ignore_ascii_case(c));
    match status {
        410 => CallError::DeltaStateGone,
        400..=499 if state_gone => CallError::DeltaStateGone,
        401 => CallError::Unauthorized,
        404 => CallError::NotFound,
        429 | 503 | 504 => CallError::Throttled { retry_after },
        _ => CallError::Http { status, code: if code.is_empty() { "none".into() } else { code } },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_mean_what_the_docs_say() {
        let gone = json!({"error": {"code": "syncStateNotFound", "message": "The sync state generation is not found."}});
        assert_eq!(classify_parts(410, &gone, None), CallError::DeltaStateGone);
        assert_eq!(classify_parts(400, &gone, None), CallError::DeltaStateGone, "a 40X with the code");
        assert_eq!(classify_parts(410, &Value::Null, None), CallError::DeltaStateGone, "maintenance: 410 with a Location");
        let auth = json!({"error": {"code": "InvalidAuthenticationToken"}});
        assert_eq!(classify_parts(401, &auth, None), CallError::Unauthorized);
        assert_eq!(classify_parts(404, &json!({"error": {"code": "ResourceNotFound"}}), None), CallError::NotFound);
        for s in [429, 503, 504] {
            let e = classify_parts(s, &Value::Null, Some(Duration::from_secs(7)));
            assert_eq!(e, CallError::Throttled { retry_after: Some(Duration::from_secs(7)) });
            assert!(e.retryable());
        }
        let v = classify_parts(400, &json!({"error": {"code": "ValidationError", "message": "x"}}), None);
        assert!(v.is_validation_failure());
        assert_eq!(v.to_string(), "Microsoft Graph refused the request (400: ValidationError)");
        let odd = classify_parts(403, &json!({"error": {"code": "Bearer eyJ0 <script>", "message": "token eyJ0"}}), None);
        assert_eq!(odd, CallError::Http { status: 403, code: "BearereyJ0script".into() });
        assert_eq!(classify_parts(500, &json!("html"), None), CallError::Http { status: 500, code: "none".into() });
        assert!(classify_parts(500, &Value::Null, None).retryable());
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn throttled_says_how_long_without_anything_else() {
        assert_eq!(
            CallError::Throttled { retry_after: Some(Duration::from_secs(60)) }.to_string(),
            "Microsoft Graph is throttling (retry after 60 s)"
        );
        assert_eq!(CallError::Throttled { retry_after: None }.to_string(), "Microsoft Graph is throttling");
    }

    fn api(base: &str) -> GraphApi {
        let cfg = MicrosoftConfig { graph_base_url: base.into(), ..Default::default() };
        GraphApi::new(&cfg, None).unwrap()
    }

    #[test]
    fn ids_are_one_encoded_segment_and_resources_name_the_calendar() {
        let a = api("http://127.0.0.1:1/v1.0/");
        let url = a.url(&["me", "calendars", "AAMk/a+b=", "calendarView", "delta"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:1/v1.0/me/calendars/AAMk%2Fa+b=/calendarView/delta");
        assert_eq!(resource("primary"), "me/events");
        assert_eq!(resource("AAMkCal1"), "me/calendars/AAMkCal1/events");
    }

    #[test]
    fn links_are_followed_only_on_graph() {
        let a = api("https://graph.microsoft.com/v1.0");
        let ok = Secret::new("https://graph.microsoft.com/v1.0/me/calendarView/delta?$deltatoken=abc");
        assert!(a.link(&ok).is_ok());
        for bad in [
            "https://evil.example/v1.0/me/calendarView/delta?$deltatoken=abc",
            "http://graph.microsoft.com/v1.0/me/calendarView/delta",
            "https://graph.microsoft.com:8443/v1.0/x",
            "https://graph.microsoft.com/beta/me/calendarView/delta",
            "not a url",
        ] {
            let e = a.link(&Secret::new(bad)).unwrap_err();
            assert!(matches!(e, CallError::BadResponse(_)), "{bad}");
            assert!(!e.to_string().contains("abc") && !e.to_string().contains("evil"), "{e}");
        }
    }
}
