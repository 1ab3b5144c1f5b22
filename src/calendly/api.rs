//! The client for Calendly's API v2 behind `syncgate calendly subscribe` and
//! `syncgate calendly status`: who the token belongs to (`/users/me`), and
//! webhook subscriptions (create, list). The base URL is
//! `calendly.api_base_url`, so tests point it at a local fake. The personal
//! access token and the generated signing key never appear in output or errors.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::Config;
use crate::store::calendly::NewSigningKey;
use crate::store::{Store, StoreError};

/// The deliveries syncgate acts on (the others Calendly would only log).
pub const EVENTS: [&str; 4] = ["invitee.created", "invitee.canceled", "invitee_no_show.created", "invitee_no_show.deleted"];

/// The path deliveries are posted to, under `server.public_url`.
pub const WEBHOOK_PATH: &str = "/api/calendly/webhook";

/// The token's owner, from `GET /users/me`.
#[derive(Debug, Clone)]
pub struct Me {
    pub uri: String,
    pub organization: String,
    pub email: Option<String>,
}

/// A webhook subscription as Calendly reports it.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub uri: String,
    pub callback_url: String,
    /// `active` or `disabled` (after 24 h of failed deliveries).
    pub state: String,
    pub scope: String,
    pub events: Vec<String>,
}

impl Subscription {
    fn from_json(v: &Value) -> Subscription {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        Subscription {
            uri: s("uri"),
            callback_url: s("callback_url"),
            state: s("state"),
            scope: s("scope"),
            events: v
                .get("events")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default(),
        }
    }

    pub fn is_disabled(&self) -> bool {
        self.state == "disabled"
    }
}

/// Calendly's API with one personal access token.
pub struct CalendlyApi {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// Why a Calendly command or check failed, as a sentence for the operator
/// (never with the token or the signing key in it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CalendlyApiError {
    /// What was asked cannot work: no token, a URL that is not one, an unknown scope.
    #[error("{0}")]
    Usage(String),
    /// Calendly was not reached, or its answer lacks what we need.
    #[error("{0}")]
    Unreachable(String),
    /// Calendly answered with an error status.
    #[error("{message}")]
    Refused { status: u16, message: String },
    /// Storing or reading the signing key failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl CalendlyApi {
    pub fn new(base: &str, token: &str) -> Result<CalendlyApi, CalendlyApiError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(CalendlyApiError::Usage("give a Calendly personal access token with --token (or set calendly.token)".into()));
        }
        let base = base.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(CalendlyApiError::Usage(format!("calendly.api_base_url must be an http(s) URL, not \"{base}\"")));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("syncgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CalendlyApiError::Usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(CalendlyApi { base, token: token.to_string(), http })
    }

    async fn call(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Value, CalendlyApiError> {
        let res =
            req.bearer_auth(&self.token).send().await.map_err(|e| {
                CalendlyApiError::Unreachable(format!("cannot reach Calendly at {} to {what}: {}", self.base, e.without_url()))
            })?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        // Calendly's errors are {"title": …, "message": …, "details": [...]}.
        let title = body.get("title").and_then(Value::as_str).unwrap_or_default();
        let message = body.get("message").and_then(Value::as_str).unwrap_or_default();
        let detail = match (title.is_empty(), message.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!(": {title}"),
            (true, false) => format!(": {message}"),
            (false, false) => format!(": {title}: {message}"),
        };
        let hint = match status.as_u16() {
            401 => " (the personal access token is wrong, expired or revoked)",
            403 => " (the token's user may not do this; organization scope needs an organization admin)",
            409 => " (a subscription for this URL already exists; `syncgate calendly status` lists it)",
            _ => "",
        };
        Err(CalendlyApiError::Refused {
            status: status.as_u16(),
            message: format!("Calendly refused to {what}: HTTP {}{detail}{hint}", status.as_u16()),
        })
    }

    /// `GET /users/me`
    pub async fn me(&self) -> Result<Me, CalendlyApiError> {
        let v = self.call(self.http.get(format!("{}/users/me", self.base)), "say who the token belongs to").await?;
        let r = v.get("resource").unwrap_or(&Value::Null);
        let s = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
        match (s("uri"), s("current_organization")) {
            (Some(uri), Some(organization)) => Ok(Me { uri, organization, email: s("email") }),
            _ => Err(CalendlyApiError::Unreachable("Calendly's /users/me answer lacks the user's uri or organization".into())),
        }
    }

    /// `POST /webhook_subscriptions`
    pub async fn create_subscription(
        &self,
        callback_url: &str,
        me: &Me,
        scope: &str,
        signing_key: &str,
    ) -> Result<Subscription, CalendlyApiError> {
        let mut body = json!({
            "url": callback_url,
            "events": EVENTS,
            "organization": me.organization,
            "scope": scope,
            "signing_key": signing_key,
        });
        if scope == "user" {
            body["user"] = json!(me.uri);
        }
        let v = self
            .call(self.http.post(format!("{}/webhook_subscriptions", self.base)).json(&body), "create the webhook subscription")
            .await?;
        Ok(Subscription::from_json(v.get("resource").unwrap_or(&Value::Null)))
    }

    /// `GET /webhook_subscriptions` for one scope, every page.
    pub async fn subscriptions(&self, me: &Me, scope: &str) -> Result<Vec<Subscription>, CalendlyApiError> {
        let mut query = vec![("organization", me.organization.as_str()), ("scope", scope), ("count", "100")];
        if scope == "user" {
            query.push(("user", me.uri.as_str()));
        }
        let mut out = Vec::new();
        let mut req = self.http.get(format!("{}/webhook_subscriptions", self.base)).query(&query);
        for _ in 0..50 {
            let v = self.call(req, "list webhook subscriptions").await?;
            if let Some(items) = v.get("collection").and_then(Value::as_array) {
                out.extend(items.iter().map(Subscription::from_json));
            }
            // Follow the next page only on the same API (never send the token elsewhere).
            match v.pointer("/pagination/next_page").and_then(Value::as_str) {
                Some(next) if next.starts_with(&format!("{}/", self.base)) => req = self.http.get(next),
                _ => break,
            }
        }
        Ok(out)
    }
}

/// What `syncgate calendly subscribe` was asked to do.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    pub token: String,
    /// The server's public URL, or the full webhook URL.
    pub url: Option<String>,
    /// `user` or `organization`.
    pub scope: String,
    /// The syncgate user the Calendly account belongs to.
    pub user: Option<i64>,
}

/// The webhook URL: `PUBLIC_URL/api/calendly/webhook` (a full webhook URL is taken as is).
pub fn callback_url(config: &Config, url: Option<&str>) -> Result<String, CalendlyApiError> {
    let base = match url {
        Some(u) => u.trim().trim_end_matches('/').to_string(),
        None => config.public_url(config.bind_addr().map_err(|e| CalendlyApiError::Usage(e.to_string()))?),
    };
    if !(base.starts_with("https://") || base.starts_with("http://")) {
        return Err(CalendlyApiError::Usage(format!("--url must be an http(s) URL, not \"{base}\"")));
    }
    Ok(if base.ends_with(WEBHOOK_PATH) { base } else { format!("{base}{WEBHOOK_PATH}") })
}

/// Create a subscription with a fresh signing key, store the key (so the
/// running server accepts its deliveries) and the user's Calendly URI.
/// Returns the subscription and lines for the operator.
pub async fn subscribe(config: &Config, store: &Store, opts: SubscribeOptions) -> Result<(Subscription, Vec<String>), CalendlyApiError> {
    if opts.scope != "user" && opts.scope != "organization" {
        return Err(CalendlyApiError::Usage(format!("--scope must be user or organization, not \"{}\"", opts.scope)));
    }
    let url = callback_url(config, opts.url.as_deref())?;
    let api = CalendlyApi::new(&config.calendly.api_base_url, &opts.token)?;
    let me = api.me().await?;
    let mut notes = Vec::new();

    let signing_key = crate::auth::random_token(32);
    // Stored before Calendly can use it, so the first delivery verifies.
    let key = store
        .add_calendly_signing_key(NewSigningKey {
            signing_key: signing_key.clone(),
            callback_url: url.clone(),
            scope: opts.scope.clone(),
            calendly_user_uri: me.uri.clone(),
            user_id: opts.user,
            owner_email: me.email.clone(),
        })
        .await?;
    let sub = match api.create_subscription(&url, &me, &opts.scope, &signing_key).await {
        Ok(sub) => {
            store.confirm_calendly_subscription(key, sub.uri.clone(), me.uri.clone()).await?;
            sub
        }
        Err(e) => {
            store.drop_calendly_signing_key(key).await?;
            return Err(e);
        }
    };

    notes.push(format!("Calendly will post {} to {url} ({} scope, state {}).", EVENTS.join(", "), opts.scope, sub.state));
    notes.push("A new signing key is stored in the database; the running server uses it at once.".into());
    match key.user_id {
        Some(id) => notes.push(format!("syncgate user {id} is linked to Calendly user {}.", me.uri)),
        None => notes.push(format!(
            "No syncgate user has the token owner's email; deliveries are matched by each host's email (or rerun with --user ID to link {}).",
            me.uri
        )),
    }
    Ok((sub, notes))
}

/// Every subscription the token can see: the user's, and the organization's
/// when the token may list them. Returns (subscriptions, notes).
pub async fn status(config: &Config, token: &str) -> Result<(Vec<Subscription>, Vec<String>), CalendlyApiError> {
    let api = CalendlyApi::new(&config.calendly.api_base_url, token)?;
    let me = api.me().await?;
    let mut subs = api.subscriptions(&me, "user").await?;
    let mut notes = Vec::new();
    match api.subscriptions(&me, "organization").await {
        Ok(more) => subs.extend(more.into_iter().filter(|s| !subs.iter().any(|x| x.uri == s.uri)).collect::<Vec<_>>()),
        Err(CalendlyApiError::Refused { status: 403, .. }) => {
            notes.push("organization subscriptions not listed: the token's user is not an organization admin".into())
        }
        Err(e) => return Err(e),
    }
    Ok((subs, notes))
}

/// One line per subscription for `syncgate calendly status`; disabled ones are flagged.
pub fn status_line(s: &Subscription) -> String {
    let flag = if s.is_disabled() {
        "\tDISABLED: Calendly stopped delivering after 24 h of failures; recreate it with `syncgate calendly subscribe`"
    } else {
        ""
    };
    format!("{}\t{}\t{}\t{}\t{}{flag}", s.state, s.scope, s.callback_url, s.events.join(","), s.uri)
}
