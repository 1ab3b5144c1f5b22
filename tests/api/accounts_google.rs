//! Accounts and Google Calendar: disabling a user stops their push channels
//! and sync (their data stays); enabling re-creates the channel and runs a
//! catch-up sync that brings in what changed meanwhile; removing a user stops
//! their channels at Google before the account is deleted; a user disabled
//! while no server ran has their channels stopped when the server starts.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::fake_google::FakeGoogle;
use crate::helpers::{spawn_app_with, TestApp};

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn channel_rows(app: &TestApp, user: i64) -> i64 {
    app.db().value("SELECT COUNT(*) FROM calendar_watch_channels WHERE user_id = ?1", &[json!(user)])
}

fn google_meeting(app: &TestApp, summary: &str) -> bool {
    app.db().value_opt::<i64>("SELECT id FROM meetings WHERE source = 'google' AND title = ?1", &[json!(summary)]).is_some()
}

/// Sign `email` in with Google (an existing user) and wait for the channel.
async fn connect(app: &TestApp, fake: &FakeGoogle, email: &str) -> i64 {
    fake.add_account(email, "Ada Adviser");
    let (id, _) = app.add_user(email, "user");
    fake.consent_as(email);
    let r = crate::fake_google::sign_in(&app.http, &app.base).await;
    assert_eq!(r.status().as_u16(), 303);
    eventually("the push channel", || {
        !fake.active_channels(email).is_empty() && channel_rows(app, id) == 1 && !app.app.google.sync_pending(id)
    })
    .await;
    id
}

fn event(summary: &str) -> serde_json::Value {
    let d = (time::OffsetDateTime::now_utc() + time::Duration::days(2)).date();
    json!({
        "summary": summary,
        "start": {"dateTime": format!("{d}T10:00:00+01:00"), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": format!("{d}T11:00:00+01:00"), "timeZone": "Europe/Berlin"},
    })
}

#[tokio::test]
async fn disabling_stops_google_sync_and_enabling_restarts_it_with_a_catch_up() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| fake.configure(c)).await;
    let (_, boss) = app.add_user("boss@example.com", "admin");
    let email = "ada@example.com";
    let id = connect(&app, &fake, email).await;

    let (s, _) = app.patch(&format!("/api/admin/users/{id}"), &boss, &json!({"status": "disabled"})).await;
    assert_eq!(s, 200);
    eventually("the channel stopped at Google and deleted here", || fake.active_channels(email).is_empty() && channel_rows(&app, id) == 0)
        .await;
    fake.create_event(email, event("Booked while disabled"));
    // Nothing syncs it while the account is disabled.
    app.app.google.enqueue(id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!google_meeting(&app, "Booked while disabled"));

    let (s, _) = app.patch(&format!("/api/admin/users/{id}"), &boss, &json!({"status": "active"})).await;
    assert_eq!(s, 200);
    eventually("a new channel and the catch-up sync", || {
        fake.active_channels(email).len() == 1 && channel_rows(&app, id) == 1 && google_meeting(&app, "Booked while disabled")
    })
    .await;
}

#[tokio::test]
async fn removing_a_user_stops_their_google_channels() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| fake.configure(c)).await;
    let (_, boss) = app.add_user("boss@example.com", "admin");
    let email = "ada@example.com";
    let id = connect(&app, &fake, email).await;
    let (s, body) = app.delete(&format!("/api/admin/users/{id}"), &boss).await;
    assert_eq!(s, 200, "{body}");
    assert!(fake.active_channels(email).is_empty(), "stopped at Google before the account went");
    assert_eq!(channel_rows(&app, id), 0);
    assert_eq!(fake.notify(email, "exists").await, Vec::<u16>::new());
}

#[tokio::test]
async fn a_google_sign_up_reaches_admins_watching_users() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| {
        fake.configure(c);
        c.auth.allowed_domains = vec!["example.org".into()];
    })
    .await;
    let (_, boss) = app.add_user("boss@example.com", "admin");
    let mut ws = app.ws(&boss, "2.0.0").await;
    ws.join("realtime:team", json!([{"event": "*", "schema": "public", "table": "users"}]), Some(&boss)).await;
    ws.joined().await;

    let email = "newcomer@example.org";
    fake.add_account(email, "New Comer");
    fake.consent_as(email);
    let r = crate::fake_google::sign_in(&app.http, &app.base).await;
    assert_eq!(r.status().as_u16(), 303);
    let f = ws.recv_event("postgres_changes").await;
    let data = &f.payload["data"];
    assert_eq!((data["table"].as_str(), data["type"].as_str()), (Some("users"), Some("INSERT")), "{data}");
    assert_eq!(data["record"]["email"], email);
    assert!(data["record"].get("google_refresh_token").is_none());
}

#[tokio::test]
async fn a_user_disabled_while_no_server_ran_has_their_channels_stopped_at_the_next_start() {
    let fake = FakeGoogle::start().await;
    let app = spawn_app_with(|c| fake.configure(c)).await;
    let email = "ada@example.com";
    let id = connect(&app, &fake, email).await;
    let (config, dir) = app.stop().await;
    let out = crate::microsoft_account_changes::cli_on(&config, &["user", "disable", &id.to_string()]).await;
    assert!(out.status.success(), "disabled offline: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fake.active_channels(email).len(), 1, "no server ran to tell Google");

    let app = crate::helpers::start(config, dir).await;
    eventually("the channel stopped at Google and deleted here by the start", || {
        fake.active_channels(email).is_empty() && channel_rows(&app, id) == 0
    })
    .await;
}
