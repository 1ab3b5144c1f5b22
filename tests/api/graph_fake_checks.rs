//! Checks that `fake_graph` behaves as `docs/microsoft-graph.md` says, so
//! the Outlook tests built on it test syncgate against Microsoft's rules
//! and not the fake's own: PKCE code exchange, refresh-token rotation and
//! `invalid_grant` after a revoke, delta rounds, immutable ids, the
//! subscription validation handshake, the lifetime limit and `Retry-After`.
//! A tiny receiver on 127.0.0.1 plays syncgate's webhook.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{json, Value};
use warp::Filter;

use crate::fake_graph::{id_token_claims, s256, FakeGraph, CLIENT_ID, CLIENT_SECRET, MAX_SUBSCRIPTION_MINUTES, SCOPES};

const TID: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";
const OID: &str = "00000000-0000-0000-0000-0000000000a1";
const UPN: &str = "ada@contoso.example";
const REDIRECT: &str = "http://127.0.0.1:9/api/microsoft/callback";

/// What the receiver was sent: notification batches (the parsed bodies).
#[derive(Clone, Default)]
struct Receiver {
    url: String,
    batches: Arc<Mutex<Vec<Value>>>,
}

/// A webhook on 127.0.0.1 that answers validation requests (echoing the
/// token when `echo`, else answering something else) and 202 to batches.
async fn receiver(echo: bool) -> Receiver {
    let batches: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = batches.clone();
    let route = warp::post().and(warp::query::<HashMap<String, String>>()).and(warp::body::bytes()).and_then(
        move |q: HashMap<String, String>, body: Bytes| {
            let seen = seen.clone();
            async move {
                let res = match q.get("validationToken") {
                    Some(t) if echo => warp::http::Response::builder().status(200).header("content-type", "text/plain").body(t.clone()),
                    Some(_) => warp::http::Response::builder().status(200).header("content-type", "text/plain").body("hello".to_string()),
                    None => {
                        seen.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        warp::http::Response::builder().status(202).body(String::new())
                    }
                };
                Ok::<_, Infallible>(res.unwrap())
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    Receiver { url: format!("http://{addr}/api/microsoft/webhook"), batches }
}

async fn fake() -> (FakeGraph, reqwest::Client) {
    let fake = FakeGraph::start().await;
    fake.add_account(TID, OID, UPN, "Ada Lovelace");
    fake.register_redirect_uri(REDIRECT);
    fake.consent_as(UPN);
    (fake, reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap())
}

/// Runs the authorize page with a challenge for `verifier`; returns the code.
async fn authorize(fake: &FakeGraph, http: &reqwest::Client, verifier: &str) -> String {
    let r = http
        .get(fake.authorize_url("organizations"))
        .query(&[
            ("client_id", CLIENT_ID),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("response_mode", "query"),
            ("scope", SCOPES),
            ("state", "st-1"),
            ("code_challenge", &s256(verifier)),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let location = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let q: HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st-1");
    q["code"].clone()
}

async fn token(fake: &FakeGraph, http: &reqwest::Client, form: &[(&str, &str)]) -> (u16, Value) {
    let mut all = vec![("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)];
    all.extend_from_slice(form);
    let r = http.post(fake.token_url("organizations")).form(&all).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Signs in through the code flow; returns the token answer.
async fn sign_in(fake: &FakeGraph, http: &reqwest::Client) -> Value {
    let verifier = "a-verifier-of-at-least-43-characters-0123456789";
    let code = authorize(fake, http, verifier).await;
    let (s, v) = token(
        fake,
        http,
        &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT), ("code_verifier", verifier)],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v
}

#[tokio::test]
async fn graph_fake_pkce_code_exchange_checks_the_verifier() {
    let (fake, http) = fake().await;
    let code = authorize(&fake, &http, "the-right-verifier-0123456789-0123456789-abcd").await;
    let (s, v) = token(
        &fake,
        &http,
        &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT), ("code_verifier", "a-wrong-verifier")],
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(v["error_codes"], json!([501481]));

    fake.set_email_claim(UPN, Some("ceo@another-tenant.example"));
    let v = sign_in(&fake, &http).await;
    assert!(v["refresh_token"].is_string() && v["access_token"].is_string());
    let claims = id_token_claims(v["id_token"].as_str().unwrap());
    assert_eq!((claims["tid"].as_str(), claims["oid"].as_str()), (Some(TID), Some(OID)));
    assert_eq!(claims["preferred_username"], UPN);
    assert_eq!(claims["email"], "ceo@another-tenant.example", "the email claim is whatever the tenant says");

    // No PKCE, or an unregistered redirect URI: refused on the page itself.
    let r = http
        .get(fake.authorize_url("organizations"))
        .query(&[("client_id", CLIENT_ID), ("response_type", "code"), ("redirect_uri", REDIRECT), ("scope", SCOPES), ("state", "s")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let me = http.get(format!("{}/me", fake.graph_url())).bearer_auth(v["access_token"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(me.json::<Value>().await.unwrap()["id"], OID);
}

#[tokio::test]
async fn graph_fake_refresh_rotates_and_revoke_gives_invalid_grant() {
    let (fake, http) = fake().await;
    let first = sign_in(&fake, &http).await;
    let rt = first["refresh_token"].as_str().unwrap();
    let (s, second) = token(&fake, &http, &[("grant_type", "refresh_token"), ("refresh_token", rt)]).await;
    assert_eq!(s, 200);
    let rt2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(rt, rt2, "each refresh answer carries a new refresh token");

    fake.revoke(UPN);
    let (s, v) = token(&fake, &http, &[("grant_type", "refresh_token"), ("refresh_token", rt2)]).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(v["error_codes"], json!([50173]));
    let r = http.get(format!("{}/me", fake.graph_url())).bearer_auth(second["access_token"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

async fn get(http: &reqwest::Client, url: &str, access: &str, immutable: bool) -> (u16, Value) {
    let mut req = http.get(url).bearer_auth(access).header("Prefer", "odata.maxpagesize=50");
    if immutable {
        req = req.header("Prefer", "IdType=\"ImmutableId\"");
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Follows `@odata.nextLink`s to the end of a round: (items, deltaLink, pages).
async fn round(http: &reqwest::Client, first: &str, access: &str, immutable: bool) -> (Vec<Value>, String, usize) {
    let (mut url, mut items, mut pages) = (first.to_string(), Vec::new(), 0);
    loop {
        let (s, v) = get(http, &url, access, immutable).await;
        assert_eq!(s, 200, "{v}");
        pages += 1;
        items.extend(v["value"].as_array().unwrap().iter().cloned());
        match (v["@odata.nextLink"].as_str(), v["@odata.deltaLink"].as_str()) {
            (Some(next), None) => url = next.to_string(),
            (None, Some(delta)) => return (items, delta.to_string(), pages),
            _ => panic!("a page carries exactly one of nextLink and deltaLink: {v}"),
        }
    }
}

fn event(subject: &str, day: u32) -> Value {
    json!({"subject": subject, "start": {"dateTime": format!("2026-12-{day:02}T10:00:00.0000000"), "timeZone": "UTC"},
           "end": {"dateTime": format!("2026-12-{day:02}T11:00:00.0000000"), "timeZone": "UTC"}})
}

#[tokio::test]
async fn graph_fake_delta_round_pages_changes_and_dead_tokens() {
    let (fake, http) = fake().await;
    let access = sign_in(&fake, &http).await["access_token"].as_str().unwrap().to_string();
    let ids: Vec<String> = (1..=5).map(|d| fake.create_event(UPN, "default", event(&format!("e{d}"), d))).collect();
    fake.create_event(UPN, "default", event("outside", 28));
    let mut series = event("standup", 7);
    series["recurrence"] = json!({"pattern": {"type": "daily", "interval": 1}, "range": {"type": "numbered", "startDate": "2026-12-07", "numberOfOccurrences": 3}});
    let series_id = fake.create_event(UPN, "default", series);
    fake.set_page_size(2);

    let base = format!("{}/me/calendarView/delta", fake.graph_url());
    let (s, _) = get(&http, &base, &access, true).await;
    assert_eq!(s, 400, "the first request needs the window");
    let first = format!("{base}?startDateTime=2026-12-01T00:00:00Z&endDateTime=2026-12-20T00:00:00Z");
    let (items, delta_link, pages) = round(&http, &first, &access, true).await;
    assert_eq!((items.len(), pages), (8, 4), "5 events and 3 occurrences, 2 a page");
    let occurrences: Vec<&Value> = items.iter().filter(|i| i["type"] == "occurrence").collect();
    assert_eq!(occurrences.len(), 3);
    assert!(occurrences.iter().all(|o| o["seriesMasterId"] == series_id.as_str()));

    fake.update_event(UPN, &ids[0], json!({"subject": "moved on"}));
    fake.delete_event(UPN, &ids[1]);
    let (items, next_delta, _) = round(&http, &delta_link, &access, true).await;
    assert_eq!(items.len(), 2, "only what changed: {items:?}");
    assert!(items.iter().any(|i| i["id"] == ids[0].as_str() && i["subject"] == "moved on"));
    assert!(items.iter().any(|i| i["id"] == ids[1].as_str() && i["@removed"]["reason"] == "deleted"));
    let (s, _) = get(&http, &format!("{next_delta}&startDateTime=2026-12-01T00:00:00Z"), &access, true).await;
    assert_eq!(s, 400, "the window is not repeated on a link");

    fake.invalidate_delta_tokens();
    let (s, v) = get(&http, &next_delta, &access, true).await;
    assert_eq!((s, v["error"]["code"].as_str()), (410, Some("syncStateNotFound")));
    assert_eq!(fake.delta_passes(UPN), 5);
}

#[tokio::test]
async fn graph_fake_ids_change_on_a_move_unless_immutable() {
    let (fake, http) = fake().await;
    let access = sign_in(&fake, &http).await["access_token"].as_str().unwrap().to_string();
    let other = fake.add_calendar(UPN, "Archive");
    let id = fake.create_event(UPN, "default", event("meeting", 3));
    let before = fake.rest_id(UPN, &id);
    fake.move_event(UPN, &id, &other);
    assert_ne!(fake.rest_id(UPN, &id), before, "an ordinary id changes on a move");
    let url = format!(
        "{}/me/calendars/{other}/calendarView/delta?startDateTime=2026-12-01T00:00:00Z&endDateTime=2026-12-20T00:00:00Z",
        fake.graph_url()
    );
    let (items, _, _) = round(&http, &url, &access, true).await;
    assert_eq!(items[0]["id"], id.as_str(), "the immutable id stays");
    let (items, _, _) = round(&http, &url, &access, false).await;
    assert_eq!(items[0]["id"], fake.rest_id(UPN, &id).as_str());
}

async fn subscribe(fake: &FakeGraph, http: &reqwest::Client, access: &str, url: &str, minutes: i64) -> (u16, Value) {
    let expiration = time::OffsetDateTime::now_utc() + time::Duration::minutes(minutes);
    let body = json!({
        "changeType": "created,updated,deleted", "notificationUrl": url, "lifecycleNotificationUrl": url,
        "resource": "me/events", "clientState": "s3cret",
        "expirationDateTime": expiration.format(&time::format_description::well_known::Rfc3339).unwrap(),
    });
    let r = http
        .post(format!("{}/subscriptions", fake.graph_url()))
        .bearer_auth(access)
        .header("Prefer", "IdType=\"ImmutableId\"")
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn graph_fake_subscription_handshake_notifications_and_lifetime() {
    let (fake, http) = fake().await;
    let access = sign_in(&fake, &http).await["access_token"].as_str().unwrap().to_string();

    let silent = receiver(false).await;
    let (s, v) = subscribe(&fake, &http, &access, &silent.url, 60).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("ValidationError")));
    assert!(fake.subscriptions(UPN).is_empty(), "no subscription without a validated endpoint");

    let hook = receiver(true).await;
    let (s, v) = subscribe(&fake, &http, &access, &hook.url, MAX_SUBSCRIPTION_MINUTES + 5).await;
    assert_eq!(s, 400, "beyond the maximum lifetime: {v}");
    let (s, sub) = subscribe(&fake, &http, &access, &hook.url, MAX_SUBSCRIPTION_MINUTES - 5).await;
    assert_eq!(s, 201, "{sub}");
    let sub_id = sub["id"].as_str().unwrap().to_string();
    assert_eq!(fake.deliveries().iter().filter(|d| d.kind == "validation" && d.status == 200).count(), 3);

    let ev = fake.create_event(UPN, "default", event("call", 4));
    assert_eq!(fake.notify(UPN, "created", &ev).await, vec![202]);
    let batch = hook.batches.lock().unwrap()[0].clone();
    let item = &batch["value"][0];
    assert_eq!((item["clientState"].as_str(), item["changeType"].as_str()), (Some("s3cret"), Some("created")));
    assert_eq!((item["resourceData"]["id"].as_str(), item["tenantId"].as_str()), (Some(ev.as_str()), Some(TID)));

    let patch = |minutes: i64| {
        let at = time::OffsetDateTime::now_utc() + time::Duration::minutes(minutes);
        let body = json!({"expirationDateTime": at.format(&time::format_description::well_known::Rfc3339).unwrap()});
        http.patch(format!("{}/subscriptions/{sub_id}", fake.graph_url())).bearer_auth(&access).json(&body).send()
    };
    assert_eq!(patch(MAX_SUBSCRIPTION_MINUTES - 1).await.unwrap().status().as_u16(), 200);
    assert_eq!(patch(MAX_SUBSCRIPTION_MINUTES + 60).await.unwrap().status().as_u16(), 400);

    assert_eq!(fake.lifecycle(&sub_id, "subscriptionRemoved").await, 202);
    assert_eq!(hook.batches.lock().unwrap()[1]["value"][0]["lifecycleEvent"], "subscriptionRemoved");
    assert_eq!(patch(60).await.unwrap().status().as_u16(), 404, "gone once removed");
    assert!(fake.active_subscriptions(UPN).is_empty());
}

#[tokio::test]
async fn graph_fake_throttles_with_retry_after() {
    let (fake, http) = fake().await;
    let access = sign_in(&fake, &http).await["access_token"].as_str().unwrap().to_string();
    fake.fail_next("delta", 429, Some(7), 1);
    let url = format!("{}/me/calendarView/delta?startDateTime=2026-12-01T00:00:00Z&endDateTime=2026-12-20T00:00:00Z", fake.graph_url());
    let r = http.get(&url).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "TooManyRequests");
    let r = http.get(&url).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(fake.calls("delta"), 2);
}
