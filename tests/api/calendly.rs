//! Calendly webhooks end to end: signed deliveries shaped like Calendly's
//! documented payloads (bookings, cancellations, group events, reschedules
//! in both orders, no-shows, `invitee.updated`, unknown events), idempotency
//! (duplicates, ten concurrent copies), refusals (unknown host, altered body,
//! wrong key, stale and future `t`, malformed header, too large), rotated and
//! stored keys, the status endpoints, the realtime fanout of a delivery, and
//! `syncgate calendly subscribe|status` against a local fake Calendly API.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use syncgate::calendly::signature;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::fake_calendly::{self, FakeCalendly};
use crate::helpers::{decode, spawn_app_with, TestApp};

const KEY: &str = "calendly-signing-key-current-0123456789";
const OLD_KEY: &str = "calendly-signing-key-previous-987654321";
const HOST_URI: &str = "https://api.calendly.com/users/HOSTAAAAAAAAAAAA";
const HOST_EMAIL: &str = "ann.adviser@example.com";
const PATH: &str = "/api/calendly/webhook";
const QUIET: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------- payloads

/// A scheduled event (one syncgate meeting).
#[derive(Clone)]
struct Ev {
    uri: String,
    name: String,
    start: String,
    end: String,
    status: &'static str,
    host_uri: String,
    host_email: String,
}

fn sched(id: &str, start: &str, end: &str) -> Ev {
    Ev {
        uri: format!("https://api.calendly.com/scheduled_events/{id}"),
        name: "Financial review (30 min)".into(),
        start: start.into(),
        end: end.into(),
        status: "active",
        host_uri: HOST_URI.into(),
        host_email: HOST_EMAIL.into(),
    }
}

fn ev1() -> Ev {
    sched("EV1AAAAAAAAAAAAA", "2026-12-01T10:00:00.000000Z", "2026-12-01T10:30:00.000000Z")
}

fn inv_uri(ev: &Ev, id: &str) -> String {
    format!("{}/invitees/{id}", ev.uri)
}

/// A delivery as Calendly documents it (`invitee.created` / `.canceled` /
/// `invitee_no_show.*` / `invitee.updated`), about invitee `id` of `ev`.
fn delivery(event: &str, ev: &Ev, id: &str, email: &str, name: &str) -> Value {
    let canceled = event == "invitee.canceled";
    let scheduled_event = json!({
        "uri": ev.uri,
        "name": ev.name,
        "meeting_notes_plain": null,
        "status": ev.status,
        "start_time": ev.start,
        "end_time": ev.end,
        "event_type": "https://api.calendly.com/event_types/ETAAAAAAAAAAAAAA",
        "location": {"type": "google_conference", "status": "pushed", "join_url": "https://meet.google.com/abc-defg-hij"},
        "invitees_counter": {"total": 1, "active": if canceled { 0 } else { 1 }, "limit": 1},
        "created_at": "2026-11-23T17:51:18.327602Z",
        "updated_at": "2026-11-23T17:51:18.327602Z",
        "event_memberships": [{"user": ev.host_uri, "user_email": ev.host_email, "user_name": "Ann Adviser"}],
        "event_guests": [],
        "calendar_event": {"kind": "google", "external_id": format!("gcal-{}", id.to_lowercase())}
    });
    json!({
        "event": event,
        "created_at": "2026-11-23T17:54:22.000000Z",
        "created_by": ev.host_uri,
        "payload": {
            "uri": inv_uri(ev, id),
            "email": email,
            "first_name": null,
            "last_name": null,
            "name": name,
            "status": if canceled { "canceled" } else { "active" },
            "timezone": "Europe/Berlin",
            "rescheduled": false,
            "old_invitee": null,
            "new_invitee": null,
            "event": ev.uri,
            "cancel_url": format!("https://calendly.com/cancellations/{id}"),
            "reschedule_url": format!("https://calendly.com/reschedulings/{id}"),
            "questions_and_answers": [{"question": "Anything to prepare?", "answer": "My pension papers", "position": 0}],
            "tracking": {"utm_campaign": null, "utm_source": null, "utm_medium": null, "utm_content": null, "utm_term": null, "salesforce_uuid": null},
            "text_reminder_number": null,
            "no_show": null,
            "reconfirmation": null,
            "payment": null,
            "cancellation": if canceled {
                json!({"canceled_by": name, "reason": "Meeting Conflict", "canceler_type": "invitee", "created_at": "2026-11-23T17:54:22.356897Z"})
            } else { Value::Null },
            "created_at": "2026-11-23T17:51:18.327602Z",
            "updated_at": "2026-11-23T17:54:22.356897Z",
            "scheduled_event": scheduled_event
        }
    })
}

fn created(ev: &Ev, id: &str, email: &str, name: &str) -> Value {
    delivery("invitee.created", ev, id, email, name)
}

fn canceled(ev: &Ev, id: &str, email: &str, name: &str) -> Value {
    delivery("invitee.canceled", ev, id, email, name)
}

// ---------------------------------------------------------------- sending

async fn app() -> TestApp {
    spawn_app_with(|c| c.calendly.signing_keys = vec![KEY.into()]).await
}

/// The adviser whose Calendly user is the host; returns (id, token).
fn adviser(app: &TestApp) -> (i64, String) {
    let (id, token) = app.add_user(HOST_EMAIL, "user");
    app.db().execute("UPDATE users SET calendly_user_uri = ?1 WHERE id = ?2", &[json!(HOST_URI), json!(id)]);
    (id, token)
}

fn now() -> i64 {
    syncgate::auth::unix_now()
}

async fn post_signed(app: &TestApp, body: &[u8], header: Option<String>) -> (u16, Value) {
    let mut req = app.http.post(app.url(PATH)).header("content-type", "application/json").body(body.to_vec());
    if let Some(h) = header {
        req = req.header("Calendly-Webhook-Signature", h);
    }
    decode(req.send().await.expect("request")).await
}

/// Post a delivery signed with `KEY` now, as Calendly does.
async fn deliver(app: &TestApp, body: &Value) -> (u16, Value) {
    let raw = serde_json::to_vec(body).unwrap();
    post_signed(app, &raw, Some(signature::sign(KEY, now(), &raw))).await
}

/// Deliver and insist it was accepted.
async fn accept(app: &TestApp, body: &Value) -> Value {
    let (status, v) = deliver(app, body).await;
    assert_eq!((status, v["outcome"].as_str()), (200, Some("accepted")), "{body}\n{v}");
    v
}

/// The adviser's Calendly meetings, as the REST API shows them.
async fn meetings(app: &TestApp, token: &str) -> Vec<Value> {
    let (status, v) = app.get("/api/meetings?source=calendly", token).await;
    assert_eq!(status, 200, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

async fn only_meeting(app: &TestApp, token: &str) -> Value {
    let mut m = meetings(app, token).await;
    assert_eq!(m.len(), 1, "exactly one meeting: {m:?}");
    m.remove(0)
}

async fn clients(app: &TestApp, token: &str) -> Vec<Value> {
    let (status, v) = app.get("/api/clients", token).await;
    assert_eq!(status, 200, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

/// (outcome, error) of every logged delivery, oldest first.
fn event_log(app: &TestApp) -> Vec<(String, Option<String>)> {
    app.db().rows_as("SELECT outcome, error FROM calendly_webhook_events ORDER BY id", &[])
}

fn statuses(inv: &Value) -> Vec<(String, String)> {
    inv.as_array()
        .unwrap()
        .iter()
        .map(|e| (e["uri"].as_str().unwrap().rsplit('/').next().unwrap().to_string(), e["status"].as_str().unwrap().to_string()))
        .collect()
}

// ---------------------------------------------------------------- bookings

#[tokio::test]
async fn a_booking_becomes_a_meeting_and_a_client() {
    let app = app().await;
    let (uid, token) = adviser(&app);
    let ev = ev1();
    let v = accept(&app, &created(&ev, "IN1AAAAAAAAAAAAA", "Jane.Client@Example.com", "Jane Client")).await;

    let m = only_meeting(&app, &token).await;
    assert_eq!(v["meeting_id"], m["id"]);
    assert_eq!(m["user_id"], uid);
    assert_eq!(m["source"], "calendly");
    assert_eq!(m["external_id"], ev.uri);
    assert_eq!(m["title"], "Financial review (30 min)");
    assert_eq!(m["starts_at"], "2026-12-01T10:00:00.000Z");
    assert_eq!(m["ends_at"], "2026-12-01T10:30:00.000Z");
    assert_eq!(m["status"], "scheduled");
    assert_eq!(m["meeting_url"], "https://meet.google.com/abc-defg-hij");
    assert_eq!(m["google_event_id"], "gcal-in1aaaaaaaaaaaaa");
    assert_eq!(m["cancel_url"], "https://calendly.com/cancellations/IN1AAAAAAAAAAAAA");
    assert_eq!(m["reschedule_url"], "https://calendly.com/reschedulings/IN1AAAAAAAAAAAAA");
    assert_eq!(m["previous_starts_at"], Value::Null);
    let inv = &m["invitees"][0];
    assert_eq!(inv["uri"], inv_uri(&ev, "IN1AAAAAAAAAAAAA"));
    assert_eq!(
        (inv["name"].as_str(), inv["email"].as_str(), inv["status"].as_str()),
        (Some("Jane Client"), Some("Jane.Client@Example.com"), Some("active"))
    );

    let c = clients(&app, &token).await;
    assert_eq!(c.len(), 1);
    assert_eq!((c[0]["name"].as_str(), c[0]["email"].as_str()), (Some("Jane Client"), Some("Jane.Client@Example.com")));
    assert_eq!(m["client_id"], c[0]["id"]);
    assert_eq!(inv["client_id"], c[0]["id"]);

    // The adviser renames the client; a second booking by the same email
    // (any case) links the same client and keeps the adviser's name.
    let cid = c[0]["id"].as_i64().unwrap();
    let (s, _) = app.patch(&format!("/api/clients/{cid}"), &token, &json!({"name": "Jane (pension)"})).await;
    assert_eq!(s, 200);
    let ev2 = sched("EV2AAAAAAAAAAAAA", "2026-12-08T10:00:00Z", "2026-12-08T10:30:00Z");
    accept(&app, &created(&ev2, "IN2AAAAAAAAAAAAA", "jane.client@example.com", "J. Client")).await;
    let c = clients(&app, &token).await;
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0]["name"], "Jane (pension)");
    let all = meetings(&app, &token).await;
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|m| m["client_id"] == cid));
    assert_eq!(event_log(&app).iter().filter(|(o, _)| o == "accepted").count(), 2);
}

#[tokio::test]
async fn a_cancellation_keeps_the_meeting_with_reason_and_canceler() {
    let app = app().await;
    let (_, token) = adviser(&app);
    let mut ev = ev1();
    accept(&app, &created(&ev, "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client")).await;
    ev.status = "canceled";
    accept(&app, &canceled(&ev, "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client")).await;

    let m = only_meeting(&app, &token).await;
    assert_eq!(m["status"], "canceled");
    assert_eq!(m["cancel_reason"], "Meeting Conflict");
    assert_eq!(m["canceled_by"], "Jane Client");
    assert_eq!(statuses(&m["invitees"]), vec![("IN1AAAAAAAAAAAAA".to_string(), "canceled".to_string())]);
    assert_eq!(m["invitees"][0]["cancel_reason"], "Meeting Conflict");
}

#[tokio::test]
async fn a_group_event_is_canceled_only_by_its_last_invitee() {
    let app = app().await;
    let (_, token) = adviser(&app);
    let mut ev = sched("GROUPAAAAAAAAAAA", "2026-12-03T16:00:00Z", "2026-12-03T17:00:00Z");
    ev.name = "Retirement workshop".into();
    accept(&app, &created(&ev, "INAAAAAAAAAAAAAA", "a@example.com", "Alex")).await;
    accept(&app, &created(&ev, "INBBBBBBBBBBBBBB", "b@example.com", "Bea")).await;
    let m = only_meeting(&app, &token).await;
    assert_eq!(m["invitees"].as_array().unwrap().len(), 2);
    assert_eq!(clients(&app, &token).await.len(), 2);

    // One of two cancels: the event is still active in Calendly.
    let mut a = canceled(&ev, "INAAAAAAAAAAAAAA", "a@example.com", "Alex");
    a["payload"]["cancellation"]["reason"] = json!("Sick");
    accept(&app, &a).await;
    let m = only_meeting(&app, &token).await;
    assert_eq!(m["status"], "scheduled");
    assert_eq!(m["cancel_reason"], Value::Null);
    assert_eq!(
        statuses(&m["invitees"]),
        vec![("INAAAAAAAAAAAAAA".into(), "canceled".into()), ("INBBBBBBBBBBBBBB".into(), "active".into())]
    );

    // The last one cancels: the meeting is canceled with that reason and canceler.
    let mut b = canceled(&ev, "INBBBBBBBBBBBBBB", "b@example.com", "Bea");
    b["payload"]["cancellation"] = json!({"canceled_by": "Bea", "reason": "Travelling", "canceler_type": "invitee"});
    accept(&app, &b).await;
    let m = only_meeting(&app, &token).await;
    assert_eq!(m["status"], "canceled");
    assert_eq!((m["cancel_reason"].as_str(), m["canceled_by"].as_str()), (Some("Travelling"), Some("Bea")));
}

/// The two deliveries of a 1:1 reschedule from EV1 (Dec 1, 10:00) to EV2
/// (Dec 2, 15:00): old invitee canceled with `rescheduled`, new one created
/// with `old_invitee`.
fn reschedule_pair() -> (Value, Value) {
    let mut old_ev = ev1();
    old_ev.status = "canceled";
    let new_ev = sched("EV2BBBBBBBBBBBBB", "2026-12-02T15:00:00.000000Z", "2026-12-02T15:30:00.000000Z");
    let mut cancel = canceled(&old_ev, "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client");
    cancel["payload"]["rescheduled"] = json!(true);
    cancel["payload"]["new_invitee"] = json!(inv_uri(&new_ev, "IN2BBBBBBBBBBBBB"));
    cancel["payload"]["cancellation"] = json!({"canceled_by": "Jane Client", "reason": null, "canceler_type": "invitee"});
    let mut create = created(&new_ev, "IN2BBBBBBBBBBBBB", "jane@example.com", "Jane Client");
    create["payload"]["old_invitee"] = json!(inv_uri(&ev1(), "IN1AAAAAAAAAAAAA"));
    (cancel, create)
}

/// Book (unless `unknown_before`), then deliver the reschedule pair in the
/// given order; returns the final meeting. Checks on the way that there is
/// one meeting and that it never showed as canceled.
async fn reschedule(cancel_first: bool, unknown_before: bool) -> Value {
    let app = app().await;
    let (uid, token) = adviser(&app);
    if !unknown_before {
        accept(&app, &created(&ev1(), "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client")).await;
    }
    let (cancel, create) = reschedule_pair();
    let order = if cancel_first { [cancel, create] } else { [create, cancel] };
    for d in &order {
        accept(&app, d).await;
        let m = only_meeting(&app, &token).await;
        assert_eq!(m["status"], "scheduled", "between the two deliveries too: {m}");
    }
    let m = only_meeting(&app, &token).await;
    for (_, table, _, row_id, owner, record, _) in app.changes() {
        if table == "meetings" {
            assert_eq!((row_id, owner), (m["id"].as_i64().unwrap(), uid), "one meeting, never a second one");
            assert_ne!(record.unwrap()["status"], "canceled", "the meeting never showed as canceled");
        }
    }
    assert_eq!(m["external_id"], "https://api.calendly.com/scheduled_events/EV2BBBBBBBBBBBBB");
    assert_eq!(m["starts_at"], "2026-12-02T15:00:00.000Z");
    assert_eq!(m["ends_at"], "2026-12-02T15:30:00.000Z");
    assert_eq!(m["previous_starts_at"], "2026-12-01T10:00:00.000Z");
    assert_eq!(m["status"], "scheduled");
    assert_eq!(m["cancel_reason"], Value::Null);
    assert_eq!(m["reschedule_url"], "https://calendly.com/reschedulings/IN2BBBBBBBBBBBBB");
    assert_eq!(statuses(&m["invitees"]), vec![("IN2BBBBBBBBBBBBB".to_string(), "active".to_string())]);
    assert_eq!(clients(&app, &token).await.len(), 1);
    m
}

/// The row without what differs between two runs by construction.
fn comparable(mut m: Value) -> Value {
    for k in ["created_at", "updated_at"] {
        m.as_object_mut().unwrap().remove(k);
    }
    m
}

#[tokio::test]
async fn a_reschedule_moves_one_meeting_whichever_delivery_comes_first() {
    let cancel_first = reschedule(true, false).await;
    let create_first = reschedule(false, false).await;
    assert_eq!(comparable(cancel_first), comparable(create_first));
}

#[tokio::test]
async fn a_reschedule_of_a_booking_never_seen_before_ends_the_same_in_both_orders() {
    let cancel_first = reschedule(true, true).await;
    let create_first = reschedule(false, true).await;
    assert_eq!(comparable(cancel_first), comparable(create_first));
}

/// A group invitee who reschedules leaves the group meeting (which stays
/// scheduled for the others) and gets a meeting at the new slot, in both orders.
#[tokio::test]
async fn a_group_invitee_who_reschedules_leaves_the_group_meeting() {
    let mut finals = Vec::new();
    for cancel_first in [true, false] {
        let app = app().await;
        let (_, token) = adviser(&app);
        let group = sched("GROUPAAAAAAAAAAA", "2026-12-03T16:00:00Z", "2026-12-03T17:00:00Z");
        let slot = sched("SLOTBBBBBBBBBBBB", "2026-12-10T16:00:00Z", "2026-12-10T17:00:00Z");
        accept(&app, &created(&group, "INAAAAAAAAAAAAAA", "a@example.com", "Alex")).await;
        accept(&app, &created(&group, "INBBBBBBBBBBBBBB", "b@example.com", "Bea")).await;
        let mut cancel = canceled(&group, "INAAAAAAAAAAAAAA", "a@example.com", "Alex");
        cancel["payload"]["rescheduled"] = json!(true);
        cancel["payload"]["new_invitee"] = json!(inv_uri(&slot, "INA2AAAAAAAAAAAA"));
        let mut create = created(&slot, "INA2AAAAAAAAAAAA", "a@example.com", "Alex");
        create["payload"]["old_invitee"] = json!(inv_uri(&group, "INAAAAAAAAAAAAAA"));
        let order = if cancel_first { [cancel, create] } else { [create, cancel] };
        for d in &order {
            accept(&app, d).await;
        }
        let all = meetings(&app, &token).await;
        assert_eq!(all.len(), 2, "{all:?}");
        let g = all.iter().find(|m| m["external_id"] == group.uri).unwrap();
        let n = all.iter().find(|m| m["external_id"] == slot.uri).unwrap();
        assert_eq!(g["status"], "scheduled");
        assert_eq!(
            statuses(&g["invitees"]),
            vec![("INAAAAAAAAAAAAAA".into(), "rescheduled".into()), ("INBBBBBBBBBBBBBB".into(), "active".into())]
        );
        assert_eq!(n["status"], "scheduled");
        assert_eq!(statuses(&n["invitees"]), vec![("INA2AAAAAAAAAAAA".into(), "active".into())]);
        finals.push(
            all.into_iter()
                .map(comparable)
                .map(|mut m| {
                    m.as_object_mut().unwrap().remove("id");
                    m
                })
                .collect::<Vec<_>>(),
        );
    }
    let mut a = finals.remove(0);
    let mut b = finals.remove(0);
    a.sort_by_key(|m| m["external_id"].to_string());
    b.sort_by_key(|m| m["external_id"].to_string());
    assert_eq!(a, b);
}

/// Rescheduled to a slot of another adviser (round robin): the first
/// adviser's meeting is canceled as rescheduled, the second gets the booking.
#[tokio::test]
async fn a_reschedule_to_another_host_moves_the_booking_between_advisers() {
    for cancel_first in [true, false] {
        let app = app().await;
        let (_, ann) = adviser(&app);
        let (bob_id, bob) = app.add_user("bob.adviser@example.com", "user");
        let (cancel, mut create) = reschedule_pair();
        create["payload"]["scheduled_event"]["event_memberships"] =
            json!([{"user": "https://api.calendly.com/users/BOBAAAAAAAAAAAAA", "user_email": "bob.adviser@example.com"}]);
        accept(&app, &created(&ev1(), "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client")).await;
        let order = if cancel_first { [cancel, create] } else { [create, cancel] };
        for d in &order {
            accept(&app, d).await;
        }
        let a = only_meeting(&app, &ann).await;
        assert_eq!((a["status"].as_str(), a["cancel_reason"].as_str()), (Some("canceled"), Some("rescheduled")), "{a}");
        let b = only_meeting(&app, &bob).await;
        assert_eq!((b["status"].as_str(), b["user_id"].as_i64()), (Some("scheduled"), Some(bob_id)));
        assert_eq!(b["starts_at"], "2026-12-02T15:00:00.000Z");
    }
}

/// Deliveries are retried, so a booking can arrive after its cancellation:
/// a canceled invitee is never revived.
#[tokio::test]
async fn a_late_booking_does_not_revive_a_cancellation() {
    let app = app().await;
    let (_, token) = adviser(&app);
    let mut ev = ev1();
    ev.status = "canceled";
    accept(&app, &canceled(&ev, "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client")).await;
    let m = only_meeting(&app, &token).await;
    assert_eq!((m["status"].as_str(), m["cancel_reason"].as_str()), (Some("canceled"), Some("Meeting Conflict")));
    accept(&app, &created(&ev1(), "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client")).await;
    let m = only_meeting(&app, &token).await;
    assert_eq!((m["status"].as_str(), m["cancel_reason"].as_str()), (Some("canceled"), Some("Meeting Conflict")));
    assert_eq!(statuses(&m["invitees"]), vec![("IN1AAAAAAAAAAAAA".into(), "canceled".into())]);
    // The adviser may still delete it (no key ties the invitee links to it).
    let (s, _) = app.delete(&format!("/api/meetings/{}", m["id"]), &token).await;
    assert_eq!(s, 204);
}

/// The Google sync may have stored the booking's Google copy first: the
/// delivery takes that row over (one meeting, same id, notes kept), found by
/// `calendar_event.external_id`, or without it by start time and email.
#[tokio::test]
async fn a_booking_takes_over_its_google_copy() {
    for with_event_id in [true, false] {
        let app = app().await;
        let (uid, token) = adviser(&app);
        let db = app.db();
        let google_id: i64 = db.value("INSERT INTO meetings (user_id, source, external_id, title, starts_at, ends_at, attendees, notes, created_at, updated_at)
             VALUES (?1, 'google', 'gcal-in1aaaaaaaaaaaaa', 'Financial review', '2026-12-01T10:00:00.000Z', '2026-12-01T10:30:00.000Z',
                     '[{\"email\":\"jane@example.com\"}]', 'bring the pension papers', '2026-11-23T00:00:00.000Z', '2026-11-23T00:00:00.000Z') RETURNING id", &[json!(uid)]);
        let mut body = created(&ev1(), "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client");
        if !with_event_id {
            body["payload"]["scheduled_event"]["calendar_event"] = Value::Null;
        }
        accept(&app, &body).await;
        let (_, all) = app.get("/api/meetings", &token).await;
        let all = all["items"].as_array().unwrap();
        assert_eq!(all.len(), 1, "one meeting per booking: {all:?}");
        let m = &all[0];
        assert_eq!(m["id"], google_id);
        assert_eq!((m["source"].as_str(), m["external_id"].as_str()), (Some("calendly"), Some(ev1().uri.as_str())));
        assert_eq!(m["google_event_id"], "gcal-in1aaaaaaaaaaaaa");
        assert_eq!(m["notes"], "bring the pension papers");
        assert_eq!(statuses(&m["invitees"]), vec![("IN1AAAAAAAAAAAAA".into(), "active".into())]);
        let ops: Vec<(String, String)> = app.changes().into_iter().map(|c| (c.1, c.2)).collect();
        assert_eq!(ops, vec![("clients".into(), "INSERT".into()), ("meetings".into(), "UPDATE".into())]);
    }
}

#[tokio::test]
async fn a_no_show_and_its_removal() {
    let app = app().await;
    let (_, token) = adviser(&app);
    let ev = ev1();
    accept(&app, &created(&ev, "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client")).await;
    let mut ns = delivery("invitee_no_show.created", &ev, "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client");
    ns["payload"]["no_show"] =
        json!({"uri": "https://api.calendly.com/invitee_no_shows/NS1AAAAAAAAAAAAA", "created_at": "2026-12-01T10:20:00.000000Z"});
    accept(&app, &ns).await;
    let m = only_meeting(&app, &token).await;
    assert_eq!(m["status"], "no_show");
    assert_eq!(statuses(&m["invitees"]), vec![("IN1AAAAAAAAAAAAA".into(), "no_show".into())]);

    let mut del = ns.clone();
    del["event"] = json!("invitee_no_show.deleted");
    accept(&app, &del).await;
    let m = only_meeting(&app, &token).await;
    assert_eq!(m["status"], "scheduled");
    assert_eq!(statuses(&m["invitees"]), vec![("IN1AAAAAAAAAAAAA".into(), "active".into())]);

    // A second no-show (a new no-show resource) is a new delivery, not a duplicate.
    let mut again = ns.clone();
    again["payload"]["no_show"]["uri"] = json!("https://api.calendly.com/invitee_no_shows/NS2AAAAAAAAAAAAA");
    accept(&app, &again).await;
    assert_eq!(only_meeting(&app, &token).await["status"], "no_show");
}

#[tokio::test]
async fn invitee_updated_is_an_upsert_of_that_invitee() {
    let app = app().await;
    let (_, token) = adviser(&app);
    let mut ev = ev1();
    accept(&app, &delivery("invitee.updated", &ev, "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane")).await;
    let m = only_meeting(&app, &token).await;
    assert_eq!((m["status"].as_str(), m["starts_at"].as_str()), (Some("scheduled"), Some("2026-12-01T10:00:00.000Z")));
    assert_eq!(m["invitees"][0]["name"], "Jane");

    ev.start = "2026-12-01T11:00:00Z".into();
    ev.end = "2026-12-01T11:30:00Z".into();
    accept(&app, &delivery("invitee.updated", &ev, "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client")).await;
    let after = only_meeting(&app, &token).await;
    assert_eq!(after["id"], m["id"]);
    assert_eq!(after["starts_at"], "2026-12-01T11:00:00.000Z");
    assert_eq!(after["invitees"][0]["name"], "Jane Client");
    assert_eq!(after["invitees"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_unknown_event_is_logged_and_ignored() {
    let app = app().await;
    let (_, token) = adviser(&app);
    let body = json!({"event": "routing_form_submission.created", "created_at": "2026-11-23T17:54:22.000000Z",
        "payload": {"uri": "https://api.calendly.com/routing_form_submissions/RF1", "questions_and_answers": []}});
    let (status, v) = deliver(&app, &body).await;
    assert_eq!((status, v["outcome"].as_str()), (200, Some("ignored")), "{v}");
    assert!(meetings(&app, &token).await.is_empty());
    assert!(app.changes().is_empty());
    assert_eq!(event_log(&app), vec![("ignored".to_string(), None)]);
}

// ---------------------------------------------------------------- idempotency

#[tokio::test]
async fn a_duplicate_delivery_changes_nothing() {
    let app = app().await;
    let (_, token) = adviser(&app);
    let body = created(&ev1(), "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client");
    accept(&app, &body).await;
    let before = (only_meeting(&app, &token).await, app.changes().len(), event_log(&app).len());
    // Calendly's retry carries the same body under a fresh signature.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, v) = deliver(&app, &body).await;
    assert_eq!((status, v["outcome"].as_str()), (200, Some("duplicate")), "{v}");
    let after = (only_meeting(&app, &token).await, app.changes().len(), event_log(&app).len());
    assert_eq!(before, after);
    // A cancellation replayed after it was applied does not touch the row either.
    let mut ev = ev1();
    ev.status = "canceled";
    let cancel = canceled(&ev, "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client");
    accept(&app, &cancel).await;
    let n = app.changes().len();
    assert_eq!(deliver(&app, &cancel).await.1["outcome"], "duplicate");
    assert_eq!(app.changes().len(), n);
}

#[tokio::test]
async fn ten_concurrent_copies_apply_once() {
    let app = app().await;
    let (_, token) = adviser(&app);
    let body = created(&ev1(), "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client");
    let raw = serde_json::to_vec(&body).unwrap();
    let header = signature::sign(KEY, now(), &raw);
    let sends = (0..10).map(|_| post_signed(&app, &raw, Some(header.clone())));
    let answers = futures_util::future::join_all(sends).await;
    let mut outcomes: Vec<&str> = answers
        .iter()
        .map(|(s, v)| {
            assert_eq!(*s, 200, "{v}");
            v["outcome"].as_str().unwrap()
        })
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, [vec!["accepted"], vec!["duplicate"; 9]].concat());
    only_meeting(&app, &token).await;
    assert_eq!(clients(&app, &token).await.len(), 1);
    let changes: Vec<(String, String)> = app.changes().into_iter().map(|c| (c.1, c.2)).collect();
    assert_eq!(changes, vec![("clients".to_string(), "INSERT".to_string()), ("meetings".to_string(), "INSERT".to_string())]);
}

// ---------------------------------------------------------------- refusals

#[tokio::test]
async fn an_unknown_host_is_acknowledged_but_nothing_is_written() {
    let app = app().await;
    let (_, token) = adviser(&app);
    let (_, admin) = app.add_user("root@example.com", "admin");
    let mut ev = ev1();
    ev.host_uri = "https://api.calendly.com/users/STRANGERAAAAAAAA".into();
    ev.host_email = "stranger@elsewhere.example".into();
    let body = created(&ev, "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client");
    let (status, v) = deliver(&app, &body).await;
    assert_eq!((status, v["outcome"].as_str()), (200, Some("unmatched")), "{v}");
    assert!(meetings(&app, &admin).await.is_empty());
    assert!(clients(&app, &admin).await.is_empty());
    assert!(app.changes().is_empty());

    let (s, h) = app.get("/api/admin/health/calendly", &admin).await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["outcomes_24h"]["unmatched"], 1);
    assert_eq!(h["unmatched_hosts_7d"][0]["host"], "https://api.calendly.com/users/STRANGERAAAAAAAA");

    // Once an adviser has that email, Calendly's redelivery is applied (an
    // unmatched delivery does not count as seen).
    app.add_user("stranger@elsewhere.example", "user");
    accept(&app, &body).await;
    assert!(meetings(&app, &token).await.is_empty(), "it is the other adviser's meeting");
    assert_eq!(meetings(&app, &admin).await.len(), 1);
}

/// Every refused delivery: 401 JSON, recorded as rejected with its reason,
/// nothing else written.
#[tokio::test]
async fn forged_stale_and_malformed_signatures_are_refused() {
    let app = app().await;
    let (_, token) = adviser(&app);
    let body = serde_json::to_vec(&created(&ev1(), "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client")).unwrap();
    let t = now();
    let good = signature::sign(KEY, t, &body);
    let v1 = good.split("v1=").nth(1).unwrap().to_string();
    let mut altered = body.clone();
    let i = altered.iter().position(|b| *b == b'J').unwrap();
    altered[i] = b'K';

    let cases: Vec<(&str, Vec<u8>, Option<String>, &str)> = vec![
        ("body altered by one byte", altered, Some(good.clone()), "mismatch"),
        ("wrong key", body.clone(), Some(signature::sign("not-the-key", t, &body)), "mismatch"),
        ("stale t", body.clone(), Some(signature::sign(KEY, t - 600, &body)), "stale"),
        ("future t", body.clone(), Some(signature::sign(KEY, t + 600, &body)), "future"),
        ("no header", body.clone(), None, "missing"),
        ("no v1", body.clone(), Some(format!("t={t}")), "malformed"),
        ("no t", body.clone(), Some(format!("v1={v1}")), "malformed"),
        ("t not a number", body.clone(), Some(format!("t=yesterday,v1={v1}")), "malformed"),
        ("v1 not hex", body.clone(), Some(format!("t={t},v1={}", "zz".repeat(32))), "malformed"),
        ("v1 too short", body.clone(), Some(format!("t={t},v1={}", &v1[..40])), "malformed"),
        ("not key=value", body.clone(), Some("sha256 deadbeef".into()), "malformed"),
    ];
    for (what, b, h, _) in &cases {
        let (status, v) = post_signed(&app, b, h.clone()).await;
        assert_eq!(status, 401, "{what}: {v}");
        assert_eq!(v["error"], "unauthorized", "{what}");
        assert!(v["message"].as_str().is_some_and(|m| !m.contains(KEY)), "{what}: {v}");
    }
    assert!(meetings(&app, &token).await.is_empty());
    assert!(app.changes().is_empty());
    // No row of their own: counted per minute and reason.
    assert!(event_log(&app).is_empty(), "refused deliveries wrote rows: {:?}", event_log(&app));
    let counted: Vec<(String, i64)> =
        app.db().rows_as("SELECT reason, CAST(SUM(count) AS BIGINT) FROM calendly_rejections GROUP BY reason ORDER BY reason", &[]);
    let mut expected: std::collections::BTreeMap<String, i64> = Default::default();
    for (_, _, _, code) in &cases {
        *expected.entry(code.to_string()).or_default() += 1;
    }
    assert_eq!(counted, expected.into_iter().collect::<Vec<_>>());
    // The genuine delivery still goes through.
    let (status, v) = post_signed(&app, &body, Some(good)).await;
    assert_eq!((status, v["outcome"].as_str()), (200, Some("accepted")), "{v}");
}

#[tokio::test]
async fn a_signed_body_that_is_not_a_calendly_event_is_400() {
    let app = app().await;
    adviser(&app);
    for body in [&b"not json"[..], br#"{"event":"invitee.created","payload":{"uri":"nope"}}"#, br#"[1,2]"#] {
        let (status, v) = post_signed(&app, body, Some(signature::sign(KEY, now(), body))).await;
        assert_eq!((status, v["error"].as_str()), (400, Some("bad_request")), "{v}");
    }
    assert!(app.changes().is_empty());
    assert!(event_log(&app).iter().all(|(o, _)| o == "invalid"));
}

#[tokio::test]
async fn a_body_over_256_kib_is_413() {
    let app = app().await;
    let (_, token) = adviser(&app);
    let mut body = created(&ev1(), "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client");
    body["payload"]["questions_and_answers"][0]["answer"] = json!("x".repeat(300 * 1024));
    let (status, v) = deliver(&app, &body).await;
    assert_eq!((status, v["error"].as_str()), (413, Some("payload_too_large")), "{v}");
    // Chunked, without a Content-Length, too (raw HTTP/1.1: reqwest here cannot stream a body).
    let raw = serde_json::to_vec(&body).unwrap();
    let header = signature::sign(KEY, now(), &raw);
    let mut req = format!(
        "POST {PATH} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nCalendly-Webhook-Signature: {header}\r\nConnection: close\r\n\r\n",
        app.addr
    )
    .into_bytes();
    for c in raw.chunks(16 * 1024) {
        req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        req.extend_from_slice(c);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // The server may answer and close before reading everything.
    let _ = stream.write_all(&req).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert!(meetings(&app, &token).await.is_empty());
}

#[tokio::test]
async fn rotated_and_stored_keys_are_accepted() {
    // During a rotation both the new and the previous key are configured.
    let app = spawn_app_with(|c| c.calendly.signing_keys = vec![KEY.into(), OLD_KEY.into()]).await;
    let (_, token) = adviser(&app);
    let a = serde_json::to_vec(&created(&ev1(), "IN1AAAAAAAAAAAAA", "a@example.com", "A")).unwrap();
    let b = serde_json::to_vec(&created(&ev1(), "IN2AAAAAAAAAAAAA", "b@example.com", "B")).unwrap();
    assert_eq!(post_signed(&app, &a, Some(signature::sign(OLD_KEY, now(), &a))).await.0, 200);
    assert_eq!(post_signed(&app, &b, Some(signature::sign(KEY, now(), &b))).await.0, 200);

    // A key stored by `syncgate calendly subscribe` while the server runs works at once.
    let c = serde_json::to_vec(&created(&ev1(), "IN3AAAAAAAAAAAAA", "c@example.com", "C")).unwrap();
    let stored = "stored-by-subscribe-0123456789abcdef";
    assert_eq!(post_signed(&app, &c, Some(signature::sign(stored, now(), &c))).await.0, 401);
    app.db()
        .execute("INSERT INTO calendly_signing_keys (signing_key, callback_url, scope, created_at) VALUES (?1, 'http://x/api/calendly/webhook', 'user', '2026-01-01T00:00:00.000Z')", &[json!(stored)]);
    assert_eq!(post_signed(&app, &c, Some(signature::sign(stored, now(), &c))).await.0, 200);
    assert_eq!(only_meeting(&app, &token).await["invitees"].as_array().unwrap().len(), 3);
}

// ---------------------------------------------------------------- status

#[tokio::test]
async fn the_public_status_is_minimal_and_admin_details_need_an_admin() {
    let bare = spawn_app_with(|_| {}).await;
    let (s, v) = bare.get("/api/calendly/webhook/test", "").await;
    assert_eq!(s, 200);
    assert_eq!(v, json!({"reachable": true, "configured": false, "last_accepted_at": null}));

    let app = app().await;
    let (_, user) = adviser(&app);
    let (_, admin) = app.add_user("root@example.com", "admin");
    accept(&app, &created(&ev1(), "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client")).await;
    post_signed(&app, b"{}", Some("t=1,v1=00".into())).await;
    let r = app.http.get(app.url("/api/calendly/webhook/test")).send().await.unwrap();
    let (s, v) = decode(r).await;
    assert_eq!(s, 200);
    let keys: HashSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, HashSet::from(["reachable", "configured", "last_accepted_at"]));
    assert_eq!(v["configured"], true);
    assert!(v["last_accepted_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");

    let r = app.http.get(app.url("/api/admin/health/calendly")).send().await.unwrap();
    assert_eq!(decode(r).await.0, 401);
    let (s, v) = app.get("/api/admin/health/calendly", &user).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")));
    let (s, v) = app.get("/api/admin/health/calendly", &admin).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["outcomes_24h"]["accepted"], 1);
    assert_eq!(v["outcomes_24h"]["rejected"], 1);
    assert_eq!(v["rejected_by_reason_24h"]["malformed"], 1);
    // The refused one is counted, not stored: the last stored is the accepted one.
    assert_eq!(v["last_delivery"]["outcome"], "accepted");
    assert!(v["last_accepted_at"].is_string());
    assert!(!v.to_string().contains(KEY), "never a key");
    assert!(!v.to_string().contains("jane@example.com"), "never a payload");
}

// ---------------------------------------------------------------- realtime

fn is_change(f: &Option<crate::helpers::Frame>) -> bool {
    f.as_ref().is_some_and(|f| f.event == "postgres_changes")
}

#[tokio::test]
async fn a_signed_delivery_reaches_the_advisers_subscriber_and_nobody_else() {
    let app = app().await;
    let (_, token) = adviser(&app);
    let (_, other) = app.add_user("other.adviser@example.com", "user");
    let bindings = json!([{"event": "*", "schema": "public", "table": "meetings"}]);
    let mut mine = app.ws(&token, "2.0.0").await;
    mine.join("realtime:mine", bindings.clone(), Some(&token)).await;
    mine.joined().await;
    let mut theirs = app.ws(&other, "2.0.0").await;
    theirs.join("realtime:theirs", bindings, Some(&other)).await;
    theirs.joined().await;

    let ev = ev1();
    let body = created(&ev, "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client");
    accept(&app, &body).await;
    let f = mine.recv_event("postgres_changes").await;
    let data = &f.payload["data"];
    assert_eq!(data["type"], "INSERT");
    assert_eq!(data["table"], "meetings");
    assert_eq!(data["record"]["external_id"], ev.uri);
    assert_eq!(data["record"]["source"], "calendly");
    assert_eq!(data["record"]["invitees"][0]["email"], "jane@example.com");
    let n = app.changes().len();

    // A rejected delivery and a duplicate produce no change event.
    let mut forged = created(&ev, "IN9AAAAAAAAAAAAA", "eve@example.com", "Eve");
    forged["payload"]["name"] = json!("Eve");
    let raw = serde_json::to_vec(&forged).unwrap();
    assert_eq!(post_signed(&app, &raw, Some(signature::sign("forged", now(), &raw))).await.0, 401);
    assert_eq!(deliver(&app, &body).await.1["outcome"], "duplicate");
    let mut seen = mine.recv_within(QUIET).await;
    while seen.as_ref().is_some_and(|f| f.event != "postgres_changes") {
        seen = mine.recv_within(QUIET).await;
    }
    assert!(!is_change(&seen), "no change event after a rejected or duplicate delivery: {seen:?}");
    assert_eq!(app.changes().len(), n);

    // The other adviser's subscriber saw nothing at all.
    let mut seen = theirs.recv_within(QUIET).await;
    while seen.as_ref().is_some_and(|f| f.event != "postgres_changes") {
        seen = theirs.recv_within(QUIET).await;
    }
    assert!(!is_change(&seen), "another adviser's subscriber got {seen:?}");
}

// ---------------------------------------------------------------- CLI

/// `syncgate` run in `dir` with only the given SYNCGATE_* settings.
fn syncgate(dir: &Path, fake: &FakeCalendly) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_syncgate"));
    c.current_dir(dir);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SYNCGATE") {
            c.env_remove(k);
        }
    }
    c.envs(crate::helpers::engine_env(dir));
    c.env("SYNCGATE_DATABASE__PATH", dir.join("data").join("syncgate.db"))
        .env("SYNCGATE_SERVER__BIND", "127.0.0.1:0")
        .env("SYNCGATE_SERVER__PUBLIC_URL", "https://sync.example.com")
        .env("SYNCGATE_AUTH__JWT_SECRET", "calendly-cli-secret-calendly-cli-secret-00")
        .env("SYNCGATE_CALENDLY__API_BASE_URL", &fake.base)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

async fn run(mut cmd: Command, args: &[&str]) -> (bool, String, String) {
    cmd.args(args);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output()).await.expect("finishes").expect("runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn db(dir: &Path) -> crate::helpers::TestDb {
    crate::helpers::open_db_in(dir, &dir.join("data").join("syncgate.db"))
}

#[tokio::test]
async fn subscribe_creates_a_subscription_and_stores_its_key_and_the_users_uri() {
    let fake = FakeCalendly::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(syncgate(dir.path(), &fake), &["user", "add", "--email", "someone@example.com"]).await;
    assert!(ok, "{err}");
    let uid: i64 = out.trim().parse().unwrap();

    let (ok, out, err) =
        run(syncgate(dir.path(), &fake), &["calendly", "subscribe", "--token", fake_calendly::TOKEN, "--user", &uid.to_string()]).await;
    assert!(ok, "{err}");
    let sub_uri = out.trim().to_string();
    assert_eq!(sub_uri, "https://api.calendly.com/webhook_subscriptions/SUB1");
    assert!(!out.contains(fake_calendly::TOKEN) && !err.contains(fake_calendly::TOKEN), "the token is never printed");

    let (sent, key) = {
        let st = fake.state.lock().unwrap();
        (st.created[0].clone(), st.signing_keys[0].1.clone())
    };
    assert_eq!(sent["url"], "https://sync.example.com/api/calendly/webhook");
    assert_eq!(sent["events"], json!(["invitee.created", "invitee.canceled", "invitee_no_show.created", "invitee_no_show.deleted"]));
    assert_eq!((sent["scope"].as_str(), sent["user"].as_str()), (Some("user"), Some(fake_calendly::USER_URI)));
    assert_eq!(sent["organization"], fake_calendly::ORG_URI);
    assert!(key.len() >= 32, "a fresh, long signing key");
    assert!(!out.contains(&key) && !err.contains(&key), "the signing key is never printed");

    let conn = db(dir.path());
    let (stored, stored_sub): (String, String) = conn.row_as("SELECT signing_key, subscription_uri FROM calendly_signing_keys", &[]);
    assert_eq!((stored.as_str(), stored_sub.as_str()), (key.as_str(), sub_uri.as_str()));
    let linked: String = conn.value("SELECT calendly_user_uri FROM users WHERE id = ?1", &[json!(uid)]);
    assert_eq!(linked, fake_calendly::USER_URI);

    // A second subscribe with a fresh key for an organization-wide hook, URL given as the full webhook URL.
    let (ok, _, err) = run(
        syncgate(dir.path(), &fake),
        &[
            "calendly",
            "subscribe",
            "--token",
            fake_calendly::TOKEN,
            "--scope",
            "organization",
            "--url",
            "https://other.example.com/api/calendly/webhook",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let sent = fake.state.lock().unwrap().created[1].clone();
    assert_eq!(
        (sent["url"].as_str(), sent["scope"].as_str()),
        (Some("https://other.example.com/api/calendly/webhook"), Some("organization"))
    );
    assert!(sent.get("user").is_none());
    let n: i64 = conn.value("SELECT COUNT(DISTINCT signing_key) FROM calendly_signing_keys", &[]);
    assert_eq!(n, 2);
}

#[tokio::test]
async fn subscribe_reports_calendlys_errors_and_keeps_no_key() {
    let fake = FakeCalendly::start().await;
    let dir = tempfile::tempdir().unwrap();

    let (ok, out, err) = run(syncgate(dir.path(), &fake), &["calendly", "subscribe", "--token", "wrong-token"]).await;
    assert!(!ok && out.is_empty(), "{out}");
    assert!(err.contains("401") && err.contains("The access token is invalid"), "{err}");
    assert!(!err.contains("wrong-token"));

    fake.add_subscription("https://sync.example.com/api/calendly/webhook", "active", "user");
    let (ok, _, err) = run(syncgate(dir.path(), &fake), &["calendly", "subscribe", "--token", fake_calendly::TOKEN]).await;
    assert!(!ok);
    assert!(err.contains("409") && err.contains("Hook with this url already exists"), "{err}");

    fake.state.lock().unwrap().fail_create = Some((500, json!({"title": "Internal Server Error", "message": "try later"})));
    let (ok, _, err) =
        run(syncgate(dir.path(), &fake), &["calendly", "subscribe", "--token", fake_calendly::TOKEN, "--url", "https://x.example.com"])
            .await;
    assert!(!ok);
    assert!(err.contains("500"), "{err}");

    let (ok, _, err) =
        run(syncgate(dir.path(), &fake), &["calendly", "subscribe", "--token", fake_calendly::TOKEN, "--scope", "team"]).await;
    assert!(!ok && err.contains("--scope"), "{err}");

    let n: i64 = db(dir.path()).value("SELECT COUNT(*) FROM calendly_signing_keys", &[]);
    assert_eq!(n, 0, "a key Calendly never accepted is not kept");
}

#[tokio::test]
async fn status_lists_subscriptions_and_flags_disabled_ones() {
    let fake = FakeCalendly::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(syncgate(dir.path(), &fake), &["calendly", "subscribe", "--token", fake_calendly::TOKEN]).await;
    assert!(ok, "{err}");
    let ours = out.trim().to_string();
    let org = fake.add_subscription("https://old.example.com/api/calendly/webhook", "active", "organization");
    fake.disable(&ours);

    let (ok, out, err) = run(syncgate(dir.path(), &fake), &["calendly", "status", "--token", fake_calendly::TOKEN]).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let line = lines.iter().find(|l| l.contains(&ours)).expect("our subscription is listed");
    assert!(line.starts_with("disabled\tuser\thttps://sync.example.com/api/calendly/webhook\t"), "{line}");
    assert!(line.contains("DISABLED") && line.contains("syncgate calendly subscribe"), "{line}");
    let line = lines.iter().find(|l| l.contains(&org)).unwrap();
    assert!(line.starts_with("active\torganization\t") && !line.contains("DISABLED"), "{line}");

    // A token that may not list organization subscriptions still sees its own.
    fake.state.lock().unwrap().not_org_admin = true;
    let (ok, out, err) = run(syncgate(dir.path(), &fake), &["calendly", "status", "--token", fake_calendly::TOKEN]).await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(err.contains("organization"), "{err}");

    let (ok, _, err) = run(syncgate(dir.path(), &fake), &["calendly", "status", "--token", "nope"]).await;
    assert!(!ok && err.contains("401"), "{err}");
}

/// The real binary: a subscription made by the CLI, then a delivery signed
/// with the key Calendly received is accepted by `syncgate serve` (keys
/// also from SYNCGATE_CALENDLY__SIGNING_KEYS), with one greppable log line.
#[tokio::test]
async fn serve_accepts_deliveries_signed_with_the_subscribed_key_and_logs_one_line() {
    let fake = FakeCalendly::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(syncgate(dir.path(), &fake), &["user", "add", "--email", fake_calendly::EMAIL]).await;
    assert!(ok, "{err}");
    let uid = out.trim().to_string();
    let (ok, _, err) = run(syncgate(dir.path(), &fake), &["calendly", "subscribe", "--token", fake_calendly::TOKEN]).await;
    assert!(ok, "{err}");
    assert!(err.contains(&format!("syncgate user {uid} is linked")), "matched by the token owner's email: {err}");
    let key = fake.state.lock().unwrap().signing_keys[0].1.clone();

    let mut cmd = syncgate(dir.path(), &fake);
    cmd.env("SYNCGATE_CALENDLY__SIGNING_KEYS", "configured-key-one, configured-key-two").stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.arg("serve");
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), stdout.next_line()).await.expect("listening line").unwrap().unwrap();
    let base = line.strip_prefix("syncgate listening on ").expect("the listening line").to_string();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();

    let mut ev = ev1();
    ev.host_uri = fake_calendly::USER_URI.into();
    syncgate::provider::install_tls();
    let http = reqwest::Client::new();
    for (k, id) in [(key.as_str(), "IN1AAAAAAAAAAAAA"), ("configured-key-two", "IN2AAAAAAAAAAAAA")] {
        let raw = serde_json::to_vec(&created(&ev, id, "jane@example.com", "Jane Client")).unwrap();
        let res = http
            .post(format!("{base}{PATH}"))
            .header("Calendly-Webhook-Signature", signature::sign(k, now(), &raw))
            .body(raw)
            .send()
            .await
            .unwrap();
        let (status, v) = decode(res).await;
        assert_eq!((status, v["outcome"].as_str()), (200, Some("accepted")), "{v}");
    }
    let want = "calendly webhook invitee.created: accepted, meeting 1 created";
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(l)) = stderr.next_line().await {
            if l.contains(want) {
                return l;
            }
        }
        String::new()
    })
    .await
    .expect("the log line within 10 s");
    assert!(found.contains("client 1 created"), "{found}");
    assert!(!found.contains(&key));
    let _ = child.start_kill();
}

#[tokio::test]
async fn a_disabled_advisers_bookings_are_still_verified_and_stored() {
    let app = app().await;
    let (uid, token) = adviser(&app);
    let (_, boss) = app.add_user("boss@example.com", "admin");
    let (s, _) = app.patch(&format!("/api/admin/users/{uid}"), &boss, &json!({"status": "disabled"})).await;
    assert_eq!(s, 200);
    let v = accept(&app, &created(&ev1(), "IN1AAAAAAAAAAAAA", "jane@example.com", "Jane Client")).await;
    assert_eq!(app.get("/api/meetings", &token).await.0, 401, "the adviser is still refused");
    let (s, m) = app.get(&format!("/api/meetings/{}", v["meeting_id"]), &boss).await;
    assert_eq!((s, m["user_id"].as_i64()), (200, Some(uid)), "the firm's booking is kept: {m}");
    // Enabled again, the adviser finds it.
    app.patch(&format!("/api/admin/users/{uid}"), &boss, &json!({"status": "active"})).await;
    assert_eq!(only_meeting(&app, &token).await["id"], v["meeting_id"]);
}
