//! A local fake of Calendly's API v2, as much as `syncgate calendly
//! subscribe|status` uses and as `shared/calendly.md` describes it:
//! `GET /users/me`, `POST /webhook_subscriptions` (409 for a URL already
//! subscribed), `GET /webhook_subscriptions` (organization and scope
//! required; organization scope refused with 403 for non-admins). Every call
//! needs the bearer token; a wrong one gets Calendly's 401 body. Tests
//! disable subscriptions (as Calendly does after 24 h of failures), inject
//! error answers, and read what was asked.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{json, Value};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::path::FullPath;
use warp::reply::Response;
use warp::Filter;

pub const TOKEN: &str = "fake-calendly-personal-access-token";
pub const USER_URI: &str = "https://api.calendly.com/users/BBBBBBBBBBBBBBBB";
pub const ORG_URI: &str = "https://api.calendly.com/organizations/AAAAAAAAAAAAAAAA";
pub const EMAIL: &str = "adviser@example.com";

#[derive(Debug, Default)]
pub struct FakeState {
    /// Subscriptions as Calendly holds them (`resource` objects).
    pub subscriptions: Vec<Value>,
    /// Signing keys Calendly was given, by subscription URI.
    pub signing_keys: Vec<(String, String)>,
    /// Bodies of `POST /webhook_subscriptions`, as received.
    pub created: Vec<Value>,
    /// "METHOD /path?query" of every call.
    pub calls: Vec<String>,
    /// The next `POST /webhook_subscriptions` gets this answer instead.
    pub fail_create: Option<(u16, Value)>,
    /// The token's user is not an organization admin.
    pub not_org_admin: bool,
}

pub struct FakeCalendly {
    pub addr: SocketAddr,
    pub base: String,
    pub state: Arc<Mutex<FakeState>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FakeCalendly {
    pub async fn start() -> FakeCalendly {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake");
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let st = state.clone();
        let b = base.clone();
        let routes = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(move |m: Method, p: FullPath, q: String, h: HeaderMap, body: Bytes| handle(&st, &b, m, p.as_str(), &q, &h, &body));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.await;
            };
            warp::serve(routes).incoming(listener).graceful(stop).run().await;
        });
        FakeCalendly { addr, base, state, _stop: tx }
    }

    /// Calendly disables a subscription after 24 h of failed deliveries.
    pub fn disable(&self, uri: &str) {
        for s in self.state.lock().unwrap().subscriptions.iter_mut() {
            if s["uri"] == uri {
                s["state"] = json!("disabled");
            }
        }
    }

    /// Add a subscription made elsewhere (another tool, another server).
    pub fn add_subscription(&self, callback_url: &str, state: &str, scope: &str) -> String {
        let mut st = self.state.lock().unwrap();
        let uri = format!("https://api.calendly.com/webhook_subscriptions/SUB{}", st.subscriptions.len() + 1);
        st.subscriptions.push(resource(&uri, callback_url, state, scope, &json!(["invitee.created"])));
        uri
    }
}

fn resource(uri: &str, url: &str, state: &str, scope: &str, events: &Value) -> Value {
    json!({
        "uri": uri,
        "callback_url": url,
        "created_at": "2026-11-23T10:00:00.000000Z",
        "updated_at": "2026-11-23T10:00:00.000000Z",
        "retry_started_at": null,
        "state": state,
        "events": events,
        "scope": scope,
        "organization": ORG_URI,
        "user": if scope == "user" { json!(USER_URI) } else { Value::Null },
        "creator": USER_URI,
    })
}

fn answer(status: u16, body: Value) -> Response {
    let mut res = Response::new(body.to_string().into());
    *res.status_mut() = StatusCode::from_u16(status).unwrap();
    res.headers_mut().insert("content-type", "application/json".parse().unwrap());
    res
}

fn handle(state: &Mutex<FakeState>, base: &str, method: Method, path: &str, query: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let mut st = state.lock().unwrap();
    st.calls.push(if query.is_empty() { format!("{method} {path}") } else { format!("{method} {path}?{query}") });
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if auth != format!("Bearer {TOKEN}") {
        return answer(401, json!({"title": "Unauthenticated", "message": "The access token is invalid"}));
    }
    let q: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let param = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match (method.as_str(), path) {
        ("GET", "/users/me") => answer(
            200,
            json!({"resource": {
                "uri": USER_URI, "name": "Ann Adviser", "slug": "ann-adviser", "email": EMAIL,
                "scheduling_url": "https://calendly.com/ann-adviser", "timezone": "Europe/Berlin",
                "current_organization": ORG_URI, "resource_type": "User"
            }}),
        ),
        ("POST", "/webhook_subscriptions") => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            st.created.push(v.clone());
            if let Some((status, body)) = st.fail_create.take() {
                return answer(status, body);
            }
            let url = v["url"].as_str().unwrap_or_default().to_string();
            let scope = v["scope"].as_str().unwrap_or_default().to_string();
            let mut problems = Vec::new();
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                problems.push(json!({"parameter": "url", "message": "is not a valid URL"}));
            }
            if v["events"].as_array().is_none_or(|e| e.is_empty()) {
                problems.push(json!({"parameter": "events", "message": "must be a non-empty list"}));
            }
            if v["organization"] != ORG_URI {
                problems.push(json!({"parameter": "organization", "message": "is not the token's organization"}));
            }
            if scope != "user" && scope != "organization" {
                problems.push(json!({"parameter": "scope", "message": "must be user or organization"}));
            }
            if scope == "user" && v["user"] != USER_URI {
                problems.push(json!({"parameter": "user", "message": "is required for user scope"}));
            }
            if !problems.is_empty() {
                return answer(
                    400,
                    json!({"title": "Invalid Argument", "message": "The supplied parameters are invalid.", "details": problems}),
                );
            }
            if st.subscriptions.iter().any(|s| s["callback_url"] == url.as_str()) {
                return answer(409, json!({"title": "Already Exists", "message": "Hook with this url already exists"}));
            }
            let uri = format!("https://api.calendly.com/webhook_subscriptions/SUB{}", st.subscriptions.len() + 1);
            let r = resource(&uri, &url, "active", &scope, &v["events"]);
            if let Some(k) = v["signing_key"].as_str() {
                st.signing_keys.push((uri.clone(), k.to_string()));
            }
            st.subscriptions.push(r.clone());
            answer(201, json!({"resource": r}))
        }
        ("GET", "/webhook_subscriptions") => {
            let (Some(org), Some(scope)) = (param("organization"), param("scope")) else {
                return answer(400, json!({"title": "Invalid Argument", "message": "organization and scope are required"}));
            };
            if org != ORG_URI {
                return answer(
                    403,
                    json!({"title": "Permission Denied", "message": "You do not have permission to access this resource."}),
                );
            }
            if scope == "organization" && st.not_org_admin {
                return answer(
                    403,
                    json!({"title": "Permission Denied", "message": "You do not have permission to access this resource."}),
                );
            }
            let user = param("user");
            let items: Vec<Value> = st
                .subscriptions
                .iter()
                .filter(|s| s["scope"] == scope.as_str() && (scope != "user" || user.as_deref() == s["user"].as_str()))
                .cloned()
                .collect();
            let _ = base;
            answer(200, json!({"collection": items, "pagination": {"count": items.len(), "next_page": null, "previous_page": null}}))
        }
        _ => answer(404, json!({"title": "Resource Not Found", "message": "The server could not find the requested resource."})),
    }
}
