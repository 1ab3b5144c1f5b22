//! The HTTP calls syncgate makes to Google (token endpoint, userinfo,
//! events.list, events.watch, channels.stop) and what their failures mean.
//! Every URL comes from `[google]`; tokens go in headers and form bodies and
//! errors are built without URLs, so no credential reaches an error message.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{ExposeSecret, GoogleConfig};
use crate::counters::Metrics;
use crate::provider::Secret;

/// Why a call to Google failed, in the terms the caller acts on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// 401: the access token expired or was revoked; refresh once and retry.
    #[error("Google refused the access token (401)")]
    Unauthorized,
    /// 403 rateLimitExceeded / userRateLimitExceeded, or 429: back off.
    #[error("Google rate limit exceeded")]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx or a network failure: retry with backoff.
    #[error("Google is unavailable: {0}")]
    Transient(String),
    /// 410: the sync token is no longer valid; full sync.
    #[error("the sync token is no longer valid (410)")]
    Gone,
    /// 404: the calendar (or channel) does not exist.
    #[error("the calendar was not found (404)")]
    NotFound,
    /// The token endpoint said `invalid_grant`: access was revoked.
    #[error("Google access was revoked or expired (invalid_grant)")]
    InvalidGrant,
    /// Any other refusal (400, 403 without a rate-limit reason, ...).
    #[error("Google refused the request ({status}: {reason})")]
    Refused { status: u16, reason: String },
    /// Google answered something we could not read.
    #[error("unexpected answer from Google: {0}")]
    BadResponse(String),
}

impl CallError {
    /// Worth retrying after a pause.
    pub fn retryable(&self) -> bool {
        matches!(self, CallError::RateLimited { .. } | CallError::Transient(_))
    }
}

/// The HTTP client for Google could not be built (TLS set-up): startup stops.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client for Google: {0}")]
pub struct HttpClientError(#[from] reqwest::Error);

/// The token endpoint's answer.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    pub access_token: Secret,
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub refresh_token: Option<Secret>,
}

/// Who signed in.
#[derive(Debug, Deserialize)]
pub struct UserInfo {
    pub sub: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: Option<bool>,
    #[serde(default)]
    pub name: Option<String>,
}

/// One page of `events.list`.
#[derive(Debug)]
pub struct EventsPage {
    pub items: Vec<Value>,
    pub next_page_token: Option<String>,
    pub next_sync_token: Option<Secret>,
    /// The calendar's time zone, for events that name none.
    pub time_zone: Option<String>,
}

/// What `events.list` is asked: incremental (sync token) or a full window.
#[derive(Debug, Clone)]
pub enum ListMode {
    Incremental(Secret),
    Full { time_min: String, time_max: String },
}

/// One entry of `calendarList.list`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CalendarListEntry {
    pub id: String,
    #[serde(default)]
    pub summary: Option<String>,
    /// The name the user gave the calendar for themselves; shown before `summary`.
    #[serde(default)]
    pub summary_override: Option<String>,
    #[serde(default)]
    pub background_color: Option<String>,
    #[serde(default)]
    pub primary: Option<bool>,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub deleted: Option<bool>,
}

/// The channel Google registered.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchResponse {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub resource_id: Option<String>,
    /// Milliseconds since the epoch, as a string.
    #[serde(default)]
    pub expiration: Option<Value>,
}

pub const PAGE_SIZE: u32 = 250;

/// Google's endpoints and the OAuth client.
pub struct GoogleApi {
    http: reqwest::Client,
    api_base: String,
    pub(crate) auth_url: String,
    token_url: String,
    userinfo_url: String,
    pub(crate) client_id: String,
    client_secret: Secret,
    pub(crate) redirect_url: String,
    /// Counts every call by endpoint and status (`google_api_calls`).
    metrics: Option<Arc<Metrics>>,
}

impl GoogleApi {
    pub fn new(cfg: &GoogleConfig, redirect_url: &str, metrics: Option<Arc<Metrics>>) -> Result<GoogleApi, HttpClientError> {
        crate::provider::install_tls();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("syncgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(GoogleApi {
            http,
            api_base: cfg.api_base_url.trim_end_matches('/').to_string(),
            auth_url: cfg.auth_url.clone(),
            token_url: cfg.token_url.clone(),
            userinfo_url: cfg.userinfo_url.clone(),
            client_id: cfg.client_id.clone(),
            client_secret: Secret::new(cfg.client_secret.expose_secret()),
            redirect_url: redirect_url.to_string(),
            metrics,
        })
    }

    /// Send one request and count it as `endpoint` (token, userinfo,
    /// events_list, watch, stop) with its HTTP status, or `error` when no
    /// answer came.
    async fn send(&self, endpoint: &'static str, req: reqwest::RequestBuilder) -> Result<reqwest::Response, CallError> {
        let res = req.send().await;
        if let Some(m) = &self.metrics {
            let status = match &res {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            m.google_api_calls.with_label_values(&[endpoint, status.as_str()]).inc();
        }
        res.map_err(net)
    }

    /// `{api_base}/<segments...>`, each segment percent-encoded (calendar
    /// ids are often email addresses).
    fn api_url(&self, segments: &[&str]) -> Result<reqwest::Url, CallError> {
        let mut url = reqwest::Url::parse(&self.api_base).map_err(|_| CallError::BadResponse("google.api_base_url is not a URL".into()))?;
        url.path_segments_mut()
            .map_err(|_| CallError::BadResponse("google.api_base_url cannot take a path".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// `grant_type=authorization_code`.
    pub async fn exchange_code(&self, code: &str) -> Result<TokenResponse, CallError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_url.as_str()),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
        ];
        let res = self.send("token", self.http.post(&self.token_url).form(&form)).await?;
        json_or_error(res).await
    }

    /// `grant_type=refresh_token`; `invalid_grant` means "reconnect".
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<TokenResponse, CallError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
        ];
        let res = self.send("token", self.http.post(&self.token_url).form(&form)).await?;
        json_or_error(res).await
    }

    pub async fn userinfo(&self, access: &Secret) -> Result<UserInfo, CallError> {
        let res = self.send("userinfo", self.http.get(&self.userinfo_url).bearer_auth(access.expose())).await?;
        json_or_error(res).await
    }

    /// One page of `events.list` with `singleEvents=true`. Only the
    /// parameters Google allows with a sync token are sent with one.
    pub async fn list_events(
        &self,
        access: &Secret,
        calendar_id: &str,
        mode: &ListMode,
        page_token: Option<&str>,
    ) -> Result<EventsPage, CallError> {
        let url = self.api_url(&["calendars", calendar_id, "events"])?;
        let page_size = PAGE_SIZE.to_string();
        let mut q: Vec<(&str, &str)> = vec![("singleEvents", "true"), ("maxResults", &page_size)];
        match mode {
            ListMode::Incremental(token) => q.push(("syncToken", token.expose())),
            ListMode::Full { time_min, time_max } => {
                q.push(("timeMin", time_min));
                q.push(("timeMax", time_max));
            }
        }
        if let Some(p) = page_token {
            q.push(("pageToken", p));
        }
        let res = self.send("events_list", self.http.get(url).bearer_auth(access.expose()).query(&q)).await?;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            items: Option<Vec<Value>>,
            #[serde(default)]
            next_page_token: Option<String>,
            #[serde(default)]
            next_sync_token: Option<Secret>,
            #[serde(default)]
            time_zone: Option<String>,
        }
        let p: Page = json_or_error(res).await?;
        Ok(EventsPage {
            items: p.items.unwrap_or_default(),
            next_page_token: p.next_page_token,
            next_sync_token: p.next_sync_token,
            time_zone: p.time_zone,
        })
    }

    /// `calendarList.list`, every page: the calendars on the user's list.
    pub async fn calendar_list(&self, access: &Secret) -> Result<Vec<CalendarListEntry>, CallError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            items: Option<Vec<Value>>,
            #[serde(default)]
            next_page_token: Option<String>,
        }
        let url = self.api_url(&["users", "me", "calendarList"])?;
        let mut out = Vec::new();
        let mut page_token: Option<String> = None;
        // A user has at most a few hundred calendars; the guard stops a runaway.
        for _ in 0..20 {
            let mut q: Vec<(&str, &str)> = vec![("maxResults", "250")];
            if let Some(p) = page_token.as_deref() {
                q.push(("pageToken", p));
            }
            let res = self.send("calendar_list", self.http.get(url.clone()).bearer_auth(access.expose()).query(&q)).await?;
            let page: Page = json_or_error(res).await?;
            for item in page.items.unwrap_or_default() {
                match serde_json::from_value::<CalendarListEntry>(item) {
                    Ok(e) if !e.id.is_empty() && e.id.len() <= 1024 && e.deleted != Some(true) => out.push(e),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "skipping a calendar-list entry in an unexpected shape"),
                }
            }
            match page.next_page_token {
                Some(t) => page_token = Some(t),
                None => break,
            }
        }
        Ok(out)
    }

    /// `events.watch`: ask Google to push changes of `calendar_id` to `address`.
    pub async fn watch(
        &self,
        access: &Secret,
        calendar_id: &str,
        channel_id: &str,
        channel_token: &Secret,
        address: &str,
        ttl_secs: u64,
    ) -> Result<WatchResponse, CallError> {
        let url = self.api_url(&["calendars", calendar_id, "events", "watch"])?;
        let body = serde_json::json!({
            "id": channel_id,
            "type": "web_hook",
            "address": address,
            "token": channel_token.expose(),
            "params": {"ttl": ttl_secs.to_string()},
        });
        let res = self.send("watch", self.http.post(url).bearer_auth(access.expose()).json(&body)).await?;
        json_or_error(res).await
    }

    /// `channels.stop`.
    pub async fn stop_channel(&self, access: &Secret, channel_id: &str, resource_id: &str) -> Result<(), CallError> {
        let url = self.api_url(&["channels", "stop"])?;
        let body = serde_json::json!({"id": channel_id, "resourceId": resource_id});
        let res = self.send("stop", self.http.post(url).bearer_auth(access.expose()).json(&body)).await?;
        if res.status().is_success() {
            return Ok(());
        }
        Err(classify(res).await)
    }
}

/// A transport failure, described without the URL (it can carry a sync token).
fn net(e: reqwest::Error) -> CallError {
    let e = e.without_url();
    if e.is_timeout() {
        CallError::Transient("the request timed out".into())
    } else if e.is_connect() {
        CallError::Transient("cannot connect".into())
    } else {
        CallError::Transient(e.to_string())
    }
}

async fn json_or_error<T: serde::de::DeserializeOwned>(res: reqwest::Response) -> Result<T, CallError> {
    if !res.status().is_success() {
        return Err(classify(res).await);
    }
    let bytes = res.bytes().await.map_err(net)?;
    serde_json::from_slice(&bytes).map_err(|e| CallError::BadResponse(format!("cannot read the JSON: {e}")))
}

/// Map an error answer to what it means. Google's API errors look like
/// `{"error":{"code":403,"errors":[{"reason":"rateLimitExceeded"}],...}}`;
/// the token endpoint's like `{"error":"invalid_grant"}`.
async fn classify(res: reqwest::Response) -> CallError {
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = res.bytes().await.unwrap_or_default();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    classify_parts(status, &v, retry_after)
}

pub(crate) fn classify_parts(status: u16, v: &Value, retry_after: Option<Duration>) -> CallError {
    let oauth_error = v.get("error").and_then(Value::as_str);
    let reason = v
        .pointer("/error/errors/0/reason")
        .and_then(Value::as_str)
        .or_else(|| v.pointer("/error/status").and_then(Value::as_str))
        .or(oauth_error)
        .unwrap_or("")
        .chars()
        .take(100)
        .collect::<String>();
    if oauth_error == Some("invalid_grant") {
        return CallError::InvalidGrant;
    }
    match status {
        401 => CallError::Unauthorized,
        403 if reason == "rateLimitExceeded" || reason == "userRateLimitExceeded" || reason == "RESOURCE_EXHAUSTED" => {
            CallError::RateLimited { retry_after }
        }
        429 => CallError::RateLimited { retry_after },
        410 => CallError::Gone,
        404 => CallError::NotFound,
        500..=599 => CallError::Transient(format!("HTTP {status}")),
        _ => CallError::Refused { status, reason: if reason.is_empty() { "no reason given".into() } else { reason } },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_mean_what_the_guide_says() {
        let rate = json!({"error":{"code":403,"errors":[{"reason":"rateLimitExceeded"}]}});
        assert_eq!(classify_parts(403, &rate, None), CallError::RateLimited { retry_after: None });
        let forbidden = json!({"error":{"code":403,"errors":[{"reason":"forbidden"}]}});
        assert!(matches!(classify_parts(403, &forbidden, None), CallError::Refused { status: 403, .. }));
        assert_eq!(
            classify_parts(429, &Value::Null, Some(Duration::from_secs(2))),
            CallError::RateLimited { retry_after: Some(Duration::from_secs(2)) }
        );
        assert_eq!(classify_parts(400, &json!({"error":"invalid_grant"}), None), CallError::InvalidGrant);
        assert_eq!(classify_parts(410, &Value::Null, None), CallError::Gone);
        assert_eq!(classify_parts(401, &Value::Null, None), CallError::Unauthorized);
        assert!(classify_parts(503, &Value::Null, None).retryable());
    }

    #[test]
    fn calendar_ids_are_encoded_as_one_segment() {
        let cfg = GoogleConfig { api_base_url: "http://127.0.0.1:1/calendar/v3/".into(), ..Default::default() };
        let api = GoogleApi::new(&cfg, "http://x/cb", None).unwrap();
        let url = api.api_url(&["calendars", "a b/c@example.com", "events"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:1/calendar/v3/calendars/a%20b%2Fc@example.com/events");
    }
}
