//! `microsoft::client::GraphApi` against `fake_graph` on 127.0.0.1: the
//! calendar list, delta rounds over pages to the delta link and the changes
//! of the next round, a dead delta link, `Retry-After`, the subscription
//! calls (with a tiny webhook that answers the validation handshake),
//! immutable ids, and no token in any error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use syncgate::config::MicrosoftConfig;
use syncgate::counters::Metrics;
use syncgate::microsoft::client::{CallError, DeltaPage, DeltaStart, GraphApi, NewSubscription};
use syncgate::microsoft::events::{is_meeting, to_meeting};
use syncgate::provider::Secret;
use syncgate::store::WriterStats;
use time::OffsetDateTime;
use warp::Filter;

use crate::fake_graph::{FakeGraph, CLIENT_ID, CLIENT_SECRET};

const TID: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";
const OID: &str = "00000000-0000-0000-0000-0000000000b2";
const UPN: &str = "grace@contoso.example";
const START: &str = "2026-11-01T00:00:00Z";
const END: &str = "2027-03-01T00:00:00Z";

/// The fake with one account, a client for it, and an access token.
async fn setup(page_size: usize) -> (FakeGraph, GraphApi, Secret) {
    let fake = FakeGraph::start().await;
    fake.add_account(TID, OID, UPN, "Grace Hopper");
    let cfg = MicrosoftConfig { graph_base_url: fake.graph_url(), page_size, ..Default::default() };
    let api = GraphApi::new(&cfg, None).unwrap();
    let token = access_token(&fake).await;
    (fake, api, token)
}

/// An access token the way syncgate gets one: a refresh at the token endpoint.
async fn access_token(fake: &FakeGraph) -> Secret {
    let refresh = fake.issue_refresh_token(UPN);
    let form = [("grant_type", "refresh_token"), ("refresh_token", &refresh), ("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)];
    let v: Value = reqwest::Client::new().post(fake.token_url("organizations")).form(&form).send().await.unwrap().json().await.unwrap();
    Secret::new(v["access_token"].as_str().unwrap())
}

fn meeting(subject: &str, day: u32) -> Value {
    json!({
        "subject": subject,
        "start": {"dateTime": format!("2026-12-{day:02}T10:00:00.0000000"), "timeZone": "UTC"},
        "end": {"dateTime": format!("2026-12-{day:02}T11:00:00.0000000"), "timeZone": "UTC"},
        "attendees": [{"type": "required", "status": {"response": "none"}, "emailAddress": {"name": "Client", "address": "client@fabrikam.example"}}],
    })
}

fn window(calendar: &str) -> DeltaStart {
    DeltaStart::Window { calendar: calendar.into(), start: START.into(), end: END.into() }
}

/// Every page of a round from `start`: (pages, last page's delta link).
async fn round(api: &GraphApi, token: &Secret, start: DeltaStart) -> (Vec<DeltaPage>, Secret) {
    let mut pages = Vec::new();
    let mut next = start;
    loop {
        let page = api.delta_page(token, &next).await.unwrap();
        match (page.next_link.clone(), page.delta_link.clone()) {
            (Some(link), None) => {
                pages.push(page);
                next = DeltaStart::Link(link);
            }
            (None, Some(delta)) => {
                pages.push(page);
                return (pages, delta);
            }
            other => panic!("a page has exactly one of nextLink and deltaLink: {other:?}"),
        }
        assert!(pages.len() < 50, "a runaway round");
    }
}

/// No credential appears in what an error prints.
fn assert_clean(e: &CallError, secrets: &[&str]) {
    let shown = format!("{e} {e:?}");
    for s in secrets {
        assert!(!shown.contains(s), "{shown} shows a secret");
    }
}

#[tokio::test]
async fn calendars_are_listed_with_the_default_marked() {
    let (fake, api, token) = setup(100).await;
    let other = fake.add_calendar(UPN, "Clients");
    let cals = api.calendars(&token).await.unwrap();
    assert_eq!(cals.len(), 2);
    let default = cals.iter().find(|c| c.is_default_calendar == Some(true)).unwrap();
    assert_eq!((default.id.clone(), default.name.as_deref()), (fake.default_calendar(UPN), Some("Calendar")));
    let clients = cals.iter().find(|c| c.id == other).unwrap();
    assert_eq!(
        (clients.name.as_deref(), clients.color.as_deref(), clients.is_default_calendar),
        (Some("Clients"), Some("auto"), Some(false))
    );

    let e = api.calendars(&Secret::new("eyJ-not-a-token")).await.unwrap_err();
    assert_eq!(e, CallError::Unauthorized);
    assert_clean(&e, &["eyJ-not-a-token"]);
}

#[tokio::test]
async fn a_delta_round_goes_over_pages_to_the_delta_link_and_the_next_brings_changes() {
    let (fake, api, token) = setup(2).await;
    let ids: Vec<String> = (1..=5).map(|d| fake.create_event(UPN, "default", meeting(&format!("M{d}"), d))).collect();

    let (pages, delta) = round(&api, &token, window("primary")).await;
    assert_eq!(pages.len(), 3, "5 events, 2 a page");
    assert!(pages.iter().all(|p| p.events.len() <= 2 && p.removed.is_empty()));
    let mut seen: Vec<String> = pages.iter().flat_map(|p| p.events.iter().map(|e| e.id.clone())).collect();
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want, "immutable ids, every event once");
    let first = &pages[0].events[0];
    assert!(is_meeting(first));
    let m = to_meeting(first, UPN).unwrap();
    assert_eq!(m.attendee_emails, vec!["client@fabrikam.example"]);
    assert!(m.attendees.as_array().unwrap().iter().any(|a| a["email"] == UPN && a["organizer"] == true), "the organizer, Grace");
    // The window went on the first request only, and every request asked for immutable ids.
    let log = fake.delta_log();
    assert_eq!(log.iter().filter(|c| c.window).count(), 1);
    assert!(log.iter().all(|c| c.immutable_ids && c.status == 200), "{log:?}");

    // Nothing changed: the next round is empty and gives a new delta link.
    let (pages, delta) = round(&api, &token, DeltaStart::Link(delta)).await;
    assert_eq!((pages.len(), pages[0].events.len(), pages[0].removed.len()), (1, 0, 0));

    fake.update_event(UPN, &ids[1], json!({"subject": "M2, moved to the afternoon"}));
    fake.delete_event(UPN, &ids[3]);
    let (pages, _) = round(&api, &token, DeltaStart::Link(delta)).await;
    let events: Vec<_> = pages.iter().flat_map(|p| p.events.iter()).collect();
    let removed: Vec<_> = pages.iter().flat_map(|p| p.removed.iter()).collect();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].id.as_str(), events[0].subject.as_deref()), (ids[1].as_str(), Some("M2, moved to the afternoon")));
    assert_eq!(removed, vec![&ids[3]]);
}

#[tokio::test]
async fn another_calendar_and_its_series_occurrences() {
    let (fake, api, token) = setup(100).await;
    let cal = fake.add_calendar(UPN, "Clients");
    let mut weekly = meeting("Weekly", 1);
    weekly["recurrence"] = json!({"pattern": {"type": "weekly", "interval": 1}, "range": {"type": "numbered", "numberOfOccurrences": 3}});
    let series = fake.create_event(UPN, &cal, weekly);
    let (pages, _) = round(&api, &token, window(&cal)).await;
    let events: Vec<_> = pages.iter().flat_map(|p| p.events.iter()).collect();
    assert_eq!(events.len(), 3);
    for e in &events {
        assert_eq!((e.event_type.as_deref(), e.series_master_id.as_deref()), (Some("occurrence"), Some(series.as_str())));
        assert!(is_meeting(e));
    }
    assert!(fake.delta_log().iter().all(|c| c.calendar == cal));
}

#[tokio::test]
async fn a_dead_delta_link_means_the_state_is_gone() {
    let (fake, api, token) = setup(100).await;
    fake.create_event(UPN, "default", meeting("M", 3));
    let (_, delta) = round(&api, &token, window("primary")).await;
    fake.invalidate_delta_tokens();
    let e = api.delta_page(&token, &DeltaStart::Link(delta.clone())).await.unwrap_err();
    assert_eq!(e, CallError::DeltaStateGone);
    assert_clean(&e, &[delta.expose(), token.expose()]);
    // A full round works again.
    let (pages, _) = round(&api, &token, window("primary")).await;
    assert_eq!(pages[0].events.len(), 1);
}

#[tokio::test]
async fn a_short_retry_after_is_waited_out_in_the_call() {
    let (fake, _, token) = setup(100).await;
    let metrics = Arc::new(Metrics::new(&WriterStats::default()));
    let cfg = MicrosoftConfig { graph_base_url: fake.graph_url(), ..Default::default() };
    let api = GraphApi::new(&cfg, Some(metrics.clone())).unwrap();
    fake.create_event(UPN, "default", meeting("M", 3));
    fake.fail_next("delta", 429, Some(1), 1);
    let page = api.delta_page(&token, &window("primary")).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(fake.calls("delta"), 2, "the throttled call and its retry");

    // 503 too, and a wait longer than the call may take is handed back.
    fake.fail_next("calendars", 503, Some(1), 1);
    assert_eq!(api.calendars(&token).await.unwrap().len(), 1);
    assert_eq!(fake.calls("calendars"), 2);
    fake.fail_next("calendars", 429, Some(120), 1);
    let e = api.calendars(&token).await.unwrap_err();
    assert_eq!(e, CallError::Throttled { retry_after: Some(Duration::from_secs(120)) });
    assert_eq!(fake.calls("calendars"), 3, "no wait of two minutes inside the call");
    // Still throttled after three tries: handed back.
    fake.fail_next("calendars", 429, Some(1), 3);
    assert_eq!(api.calendars(&token).await.unwrap_err(), CallError::Throttled { retry_after: Some(Duration::from_secs(1)) });
    assert_eq!(fake.calls("calendars"), 6);
    // Every try is counted, the throttled ones as such.
    let count = |call: &str, outcome: &str| metrics.microsoft_api_calls.with_label_values(&[call, outcome]).get();
    assert_eq!((count("delta", "throttled"), count("delta", "ok")), (1, 1));
    assert_eq!((count("calendars", "throttled"), count("calendars", "ok")), (5, 1));
}

/// A webhook on 127.0.0.1 that answers Graph's validation request with the
/// decoded token as plain text.
async fn echo_webhook() -> String {
    let route = warp::post().and(warp::query::<HashMap<String, String>>()).map(|q: HashMap<String, String>| {
        let res = match q.get("validationToken") {
            Some(t) => warp::http::Response::builder().status(200).header("content-type", "text/plain").body(t.clone()),
            None => warp::http::Response::builder().status(202).body(String::new()),
        };
        res.unwrap()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    format!("http://{addr}/api/microsoft/webhook")
}

#[tokio::test]
async fn subscriptions_are_created_renewed_reauthorized_and_deleted() {
    let (fake, api, token) = setup(100).await;
    let hook = echo_webhook().await;
    let state = Secret::new("client-state-0123456789abcdef");
    let new = |calendar: &str, minutes: i64| NewSubscription {
        calendar: calendar.into(),
        notification_url: hook.clone(),
        lifecycle_url: format!("{hook}?lifecycle=1"),
        client_state: state.clone(),
        expiration: OffsetDateTime::now_utc() + time::Duration::minutes(minutes),
    };

    let sub = api.create_subscription(&token, &new("primary", 60)).await.unwrap();
    assert_eq!(sub.resource, "me/events");
    assert!(sub.expires_at.is_some());
    let held = fake.active_subscriptions(UPN);
    assert_eq!(held.len(), 1);
    let s = &held[0];
    assert_eq!(
        (s.id.as_str(), s.change_type.as_str(), s.calendar.clone()),
        (sub.id.as_str(), "created,updated,deleted", fake.default_calendar(UPN))
    );
    assert_eq!((s.client_state.as_deref(), s.notification_url.as_str()), (Some(state.expose()), hook.as_str()));
    assert_eq!(s.lifecycle_url.as_deref(), Some(format!("{hook}?lifecycle=1").as_str()));
    assert!(s.immutable_ids, "notifications will name events by immutable id");
    assert_eq!(fake.deliveries().iter().filter(|d| d.kind == "validation" && d.status == 200).count(), 2, "both URLs validated");

    let cal = fake.add_calendar(UPN, "Clients");
    let other = api.create_subscription(&token, &new(&cal, 60)).await.unwrap();
    assert_eq!(other.resource, format!("me/calendars/{cal}/events"));
    assert_eq!(fake.active_subscriptions(UPN).iter().find(|s| s.id == other.id).unwrap().calendar, cal);

    // Longer than Graph allows: refused, not a panic or a silent cap.
    let e = api.create_subscription(&token, &new("primary", 20_000)).await.unwrap_err();
    assert_eq!(e, CallError::Http { status: 400, code: "BadRequest".into() });

    let renewed = api.renew_subscription(&token, &sub.id, OffsetDateTime::now_utc() + time::Duration::days(6)).await.unwrap();
    assert_eq!(renewed.id, sub.id);
    assert!(renewed.expires_at > sub.expires_at);
    assert_eq!(fake.active_subscriptions(UPN).iter().find(|s| s.id == sub.id).unwrap().renewals, 1);

    api.reauthorize_subscription(&token, &sub.id).await.unwrap();
    assert_eq!(fake.calls("reauthorize"), 1);

    api.delete_subscription(&token, &sub.id).await.unwrap();
    assert!(fake.active_subscriptions(UPN).iter().all(|s| s.id != sub.id));
    // Deleting one Graph no longer has is done, not an error; renewing it says it is gone.
    api.delete_subscription(&token, &sub.id).await.unwrap();
    assert_eq!(fake.calls("unsubscribe"), 2);
    let e = api.renew_subscription(&token, &sub.id, OffsetDateTime::now_utc() + time::Duration::days(1)).await.unwrap_err();
    assert_eq!(e, CallError::NotFound);
    fake.expire_subscription(&other.id);
    assert_eq!(api.reauthorize_subscription(&token, &other.id).await.unwrap_err(), CallError::NotFound);
    assert_clean(&e, &[token.expose(), state.expose()]);
}

#[tokio::test]
async fn a_webhook_that_does_not_echo_fails_validation() {
    let (fake, api, token) = setup(100).await;
    let sub = NewSubscription {
        calendar: "primary".into(),
        // Nothing listens there.
        notification_url: "http://127.0.0.1:9/api/microsoft/webhook".into(),
        lifecycle_url: "http://127.0.0.1:9/api/microsoft/webhook".into(),
        client_state: Secret::new("state"),
        expiration: OffsetDateTime::now_utc() + time::Duration::hours(1),
    };
    let e = api.create_subscription(&token, &sub).await.unwrap_err();
    assert!(e.is_validation_failure(), "{e:?}");
    assert!(fake.active_subscriptions(UPN).is_empty());
}

#[tokio::test]
async fn ids_stay_the_same_across_a_move_because_immutable_ids_are_asked_for() {
    let (fake, api, token) = setup(100).await;
    let other = fake.add_calendar(UPN, "Clients");
    let id = fake.create_event(UPN, "default", meeting("Moving", 4));
    let (pages, _) = round(&api, &token, window("primary")).await;
    assert_eq!(pages[0].events[0].id, id);
    let (_, other_delta) = round(&api, &token, window(&other)).await;

    fake.move_event(UPN, &id, &other);
    assert_ne!(fake.rest_id(UPN, &id), id, "the ordinary id changed with the move");
    let (pages, _) = round(&api, &token, DeltaStart::Link(other_delta)).await;
    let arrived: Vec<_> = pages.iter().flat_map(|p| p.events.iter().map(|e| e.id.clone())).collect();
    assert_eq!(arrived, vec![id], "the same id in its new calendar");
    assert!(fake.delta_log().iter().all(|c| c.immutable_ids));
}

#[tokio::test]
async fn a_link_to_another_host_is_not_followed_with_the_token() {
    let (_fake, api, token) = setup(100).await;
    let elsewhere = Secret::new("http://127.0.0.1:9/v1.0/me/calendarView/delta?$deltatoken=stolen");
    let e = api.delta_page(&token, &DeltaStart::Link(elsewhere)).await.unwrap_err();
    assert!(matches!(e, CallError::BadResponse(_)), "{e:?}");
    assert_clean(&e, &["stolen", token.expose()]);
}

#[tokio::test]
async fn network_failures_name_no_url() {
    let cfg = MicrosoftConfig { graph_base_url: "http://127.0.0.1:9/v1.0".into(), ..Default::default() };
    let api = GraphApi::new(&cfg, None).unwrap();
    let link = Secret::new("http://127.0.0.1:9/v1.0/me/calendarView/delta?$deltatoken=secret-state");
    let e = api.delta_page(&Secret::new("access-secret"), &DeltaStart::Link(link)).await.unwrap_err();
    assert!(matches!(e, CallError::Network(_)), "{e:?}");
    assert_clean(&e, &["secret-state", "access-secret", "deltatoken"]);
}
