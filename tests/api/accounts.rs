//! Accounts over real sockets: disabling, removing, demoting and signing a
//! user out everywhere take effect on REST and on open realtime channels
//! (closed, or narrowed on demotion, and nothing more they may no longer
//! see), new joins are refused; removal logs a DELETE per row and leaves no
//! orphan; the last admin stays; sign-out survives a restart; a change made
//! straight in the database reaches sockets within `auth.user_cache`; admins
//! see `users` changes live; the audit log records who did what.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, start, Frame, TestApp, Ws};

const SLACK: Duration = Duration::from_secs(10);

fn meetings_binding() -> Value {
    json!([{"event": "*", "schema": "public", "table": "meetings"}])
}

async fn client_meeting_deal(app: &TestApp, tok: &str, tag: &str) -> (Value, Value, Value) {
    let (s, c) = app.post("/api/clients", tok, &json!({"name": format!("{tag} client")})).await;
    assert_eq!(s, 201, "{c}");
    let (s, m) = app
        .post(
            "/api/meetings",
            tok,
            &json!({"title": format!("{tag} meeting"), "starts_at": "2026-11-23T10:00:00Z", "ends_at": "2026-11-23T11:00:00Z", "client_id": c["id"]}),
        )
        .await;
    assert_eq!(s, 201, "{m}");
    let (s, d) = app.post("/api/pipeline", tok, &json!({"title": format!("{tag} deal"), "client_id": c["id"]})).await;
    assert_eq!(s, 201, "{d}");
    (c, m, d)
}

async fn new_meeting(app: &TestApp, admin: &str, owner: i64, title: &str) -> Value {
    let (s, m) = app
        .post(
            "/api/meetings",
            admin,
            &json!({"user_id": owner, "title": title, "starts_at": "2026-11-24T10:00:00Z", "ends_at": "2026-11-24T11:00:00Z"}),
        )
        .await;
    assert_eq!(s, 201, "{m}");
    m
}

/// A socket joined to `topic` with `bindings` as `token`.
async fn joined(app: &TestApp, token: &str, topic: &str, bindings: Value) -> Ws {
    let mut ws = app.ws(token, "2.0.0").await;
    ws.join(topic, bindings, Some(token)).await;
    ws.joined().await;
    ws
}

/// Wait for the channel's `system` error and then its `phx_close`; no
/// change frame may come first. Returns the error message.
async fn expect_revoked(ws: &mut Ws, topic: &str) -> String {
    let mut message = None;
    loop {
        let f: Frame = ws.recv_within(SLACK).await.expect("the channel is closed within the slack");
        assert_ne!(f.event, "postgres_changes", "no change after revocation: {:?}", f.payload);
        if f.event == "system" && f.payload["status"] == "error" {
            assert_eq!(f.topic, topic);
            message = f.payload["message"].as_str().map(str::to_string);
        }
        if f.event == "phx_close" {
            assert_eq!(f.topic, topic);
            return message.expect("a system error before phx_close");
        }
    }
}

/// No change frame arrives within a second.
async fn expect_no_change(ws: &mut Ws) {
    while let Some(f) = ws.recv_within(Duration::from_secs(1)).await {
        assert_ne!(f.event, "postgres_changes", "unexpected change: {:?}", f.payload);
    }
}

/// The next change frame's record (or old_record).
async fn next_change(ws: &mut Ws) -> Value {
    loop {
        let f = ws.recv_within(SLACK).await.expect("a change within the slack");
        if f.event == "postgres_changes" {
            return f.payload["data"].clone();
        }
    }
}

/// A join as `token` on a fresh socket: the reply's status and reason.
async fn join_reply(app: &TestApp, token: &str) -> (String, String) {
    let mut ws = app.ws(token, "2.0.0").await;
    ws.join("realtime:again", meetings_binding(), Some(token)).await;
    let r = ws.recv_event("phx_reply").await;
    (r.payload["status"].as_str().unwrap_or_default().into(), r.payload["response"]["reason"].as_str().unwrap_or_default().into())
}

#[tokio::test]
async fn disabling_a_user_refuses_their_token_closes_their_channels_and_enabling_lets_them_back() {
    let app = spawn_app().await;
    let (_, admin) = app.add_user("boss@example.com", "admin");
    let (uid, user) = app.add_user("ann@example.com", "user");
    assert_eq!(app.get("/api/meetings", &user).await.0, 200);
    let mut ws = joined(&app, &user, "realtime:mine", meetings_binding()).await;

    let (s, body) = app.patch(&format!("/api/admin/users/{uid}"), &admin, &json!({"status": "disabled"})).await;
    assert_eq!((s, body["status"].as_str()), (200, Some("disabled")), "{body}");
    let (s, e) = app.get("/api/meetings", &user).await;
    assert_eq!((s, e["error"].as_str()), (401, Some("unauthorized")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("disabled"), "{e}");
    let why = expect_revoked(&mut ws, "realtime:mine").await;
    assert!(why.contains("disabled"), "{why}");
    new_meeting(&app, &admin, uid, "after disable").await;
    expect_no_change(&mut ws).await;
    let (status, reason) = join_reply(&app, &user).await;
    assert_eq!(status, "error");
    assert!(reason.contains("disabled"), "{reason}");
    // The data stays.
    let (_, list) = app.get("/api/meetings?limit=10", &admin).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    let (s, body) = app.patch(&format!("/api/admin/users/{uid}"), &admin, &json!({"status": "active"})).await;
    assert_eq!((s, body["status"].as_str()), (200, Some("active")), "{body}");
    assert_eq!(app.get("/api/meetings", &user).await.0, 200, "the same token works again once enabled");
}

#[tokio::test]
async fn signing_out_everywhere_refuses_every_earlier_token_but_not_a_new_one() {
    let app = spawn_app().await;
    let (_, admin) = app.add_user("boss@example.com", "admin");
    let (uid, user) = app.add_user("ann@example.com", "user");
    let other_device = app.token_for(uid, "user", 3600);
    let mut ws = joined(&app, &other_device, "realtime:phone", meetings_binding()).await;

    let r = app.http.post(app.url("/api/me/signout")).bearer_auth(&user).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    for tok in [&user, &other_device] {
        let (s, e) = app.get("/api/meetings", tok).await;
        assert_eq!(s, 401, "{e}");
        assert!(e["message"].as_str().unwrap().contains("signed out"), "{e}");
    }
    let why = expect_revoked(&mut ws, "realtime:phone").await;
    assert!(why.contains("signed out"), "{why}");
    new_meeting(&app, &admin, uid, "after sign-out").await;
    expect_no_change(&mut ws).await;
    assert_eq!(join_reply(&app, &user).await.0, "error");

    // A token issued after the sign-out (the same second included) is good.
    let fresh = app.token_for(uid, "user", 3600);
    assert_eq!(app.get("/api/meetings", &fresh).await.0, 200);
    let mut ws = joined(&app, &fresh, "realtime:new", meetings_binding()).await;

    // An admin can do it for them too.
    let r = app.http.post(app.url(&format!("/api/admin/users/{uid}/signout"))).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(app.get("/api/meetings", &fresh).await.0, 401);
    expect_revoked(&mut ws, "realtime:new").await;
}

#[tokio::test]
async fn demoting_an_admin_narrows_their_open_channel_to_their_own_rows() {
    let app = spawn_app().await;
    let (_, boss) = app.add_user("boss@example.com", "admin");
    let (deputy_id, deputy) = app.add_user("deputy@example.com", "admin");
    let (ann_id, _) = app.add_user("ann@example.com", "user");
    let mut ws = joined(&app, &deputy, "realtime:all", meetings_binding()).await;
    new_meeting(&app, &boss, ann_id, "seen while admin").await;
    assert_eq!(next_change(&mut ws).await["record"]["title"], "seen while admin");

    let (s, body) = app.patch(&format!("/api/admin/users/{deputy_id}"), &boss, &json!({"role": "user"})).await;
    assert_eq!((s, body["role"].as_str()), (200, Some("user")), "{body}");
    let (s, _) = app.get("/api/admin/health", &deputy).await;
    assert_eq!(s, 403, "the admin token is narrowed to an ordinary user");
    let (s, list) = app.get("/api/meetings", &deputy).await;
    assert_eq!((s, list["items"].as_array().unwrap().len()), (200, 0), "{list}");

    new_meeting(&app, &boss, ann_id, "not for the deputy").await;
    new_meeting(&app, &boss, deputy_id, "the deputy's own").await;
    let data = next_change(&mut ws).await;
    assert_eq!(data["record"]["title"], "the deputy's own", "only their own rows now: {data}");
    // A new join with the old admin token is accepted, as an ordinary user.
    let mut again = joined(&app, &deputy, "realtime:again", meetings_binding()).await;
    new_meeting(&app, &boss, ann_id, "still not for the deputy").await;
    expect_no_change(&mut again).await;
}

#[tokio::test]
async fn removing_a_user_deletes_every_row_through_the_log_and_closes_their_channels() {
    let app = spawn_app().await;
    let (_, boss) = app.add_user("boss@example.com", "admin");
    let (uid, user) = app.add_user("ann@example.com", "user");
    let (bob_id, bob) = app.add_user("bob@example.com", "user");
    let (c, m, d) = client_meeting_deal(&app, &user, "ann").await;
    client_meeting_deal(&app, &user, "ann2").await;
    let (_, bob_meeting, _) = client_meeting_deal(&app, &bob, "bob").await;
    let mut theirs = joined(&app, &user, "realtime:mine", meetings_binding()).await;
    let mut watcher = joined(&app, &boss, "realtime:everything", json!([{"event": "*", "schema": "public"}])).await;
    let before = app.changes().last().map(|c| c.0).unwrap_or(0);

    let (s, body) = app.delete(&format!("/api/admin/users/{uid}"), &boss).await;
    assert_eq!((s, body["rows_deleted"].as_i64()), (200, Some(6)), "{body}");

    // The admin's socket gets a DELETE for each row, in the log too.
    let mut deleted = Vec::new();
    while deleted.len() < 6 {
        let data = next_change(&mut watcher).await;
        assert_eq!(data["type"], "DELETE", "{data}");
        assert_eq!(data["old_record"]["user_id"], uid);
        deleted.push((data["table"].as_str().unwrap().to_string(), data["old_record"]["id"].as_i64().unwrap()));
    }
    for (table, row) in [("clients", &c), ("meetings", &m), ("pipeline", &d)] {
        assert!(deleted.contains(&(table.to_string(), row["id"].as_i64().unwrap())), "{table} {row} in {deleted:?}");
    }
    let logged: Vec<_> = app.changes().into_iter().filter(|c| c.0 > before && c.2 == "DELETE" && c.1 != "users").collect();
    assert_eq!(logged.len(), 6, "{logged:?}");
    let db = app.db();
    for table in ["clients", "meetings", "pipeline", "login_links", "google_sync_status", "calendar_watch_channels", "calendly_invitees"] {
        let n: i64 = db.value(&format!("SELECT COUNT(*) FROM {table} WHERE user_id = ?1"), &[json!(uid)]);
        assert_eq!(n, 0, "no {table} row of the removed user is left");
    }
    let n: i64 = db.value("SELECT COUNT(*) FROM users WHERE id = ?1", &[json!(uid)]);
    assert_eq!(n, 0);
    // SQLite checks its foreign keys on request; PostgreSQL never commits a dangling one.
    if db.engine() == crate::helpers::Engine::Sqlite {
        let fk: i64 = db.value("SELECT COUNT(*) FROM pragma_foreign_key_check", &[]);
        assert_eq!(fk, 0, "no dangling reference");
    }
    // Bob's rows are untouched.
    assert_eq!(app.get(&format!("/api/meetings/{}", bob_meeting["id"]), &bob).await.0, 200);
    let _ = bob_id;

    let (s, e) = app.get("/api/meetings", &user).await;
    assert_eq!(s, 401, "{e}");
    let why = expect_revoked(&mut theirs, "realtime:mine").await;
    assert!(why.contains("does not exist") || why.contains("removed"), "{why}");
    assert_eq!(join_reply(&app, &user).await.0, "error");
    assert_eq!(app.delete(&format!("/api/admin/users/{uid}"), &boss).await.0, 404);
}

#[tokio::test]
async fn the_last_admin_cannot_be_demoted_disabled_or_removed_even_by_two_at_once() {
    let app = spawn_app().await;
    let (a_id, a) = app.add_user("a@example.com", "admin");
    for (method, body) in [("PATCH", json!({"role": "user"})), ("PATCH", json!({"status": "disabled"})), ("DELETE", Value::Null)] {
        let path = format!("/api/admin/users/{a_id}");
        let (s, e) = if method == "PATCH" { app.patch(&path, &a, &body).await } else { app.delete(&path, &a).await };
        assert_eq!((s, e["error"].as_str()), (409, Some("conflict")), "{method} {body}: {e}");
        assert!(e["message"].as_str().unwrap().contains("last active admin"), "{e}");
    }

    // Two admins demote each other at the same moment: one of them stays.
    let (b_id, b) = app.add_user("b@example.com", "admin");
    let pa = format!("/api/admin/users/{b_id}");
    let pb = format!("/api/admin/users/{a_id}");
    let body = json!({"role": "user"});
    let (ra, rb) = tokio::join!(app.patch(&pa, &a, &body), app.patch(&pb, &b, &body));
    let mut statuses = [ra.0, rb.0];
    statuses.sort();
    // The second either loses the race at the rule (409) or, demoted first, is no longer an admin (403).
    assert!(statuses == [200, 409] || statuses == [200, 403], "{ra:?} {rb:?}");
    let admins: i64 = app.db().value("SELECT COUNT(*) FROM users WHERE role = 'admin' AND status = 'active'", &[]);
    assert_eq!(admins, 1);
}

#[tokio::test]
async fn sign_out_everywhere_survives_a_restart() {
    let app = spawn_app().await;
    let (uid, user) = app.add_user("ann@example.com", "user");
    let r = app.http.post(app.url("/api/me/signout")).bearer_auth(&user).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (config, dir) = app.stop().await;
    let app = start(config, dir).await;
    assert_eq!(app.get("/api/meetings", &user).await.0, 401);
    assert_eq!(app.get("/api/meetings", &app.token_for(uid, "user", 60)).await.0, 200);
}

#[tokio::test]
async fn a_change_made_straight_in_the_database_reaches_rest_and_sockets_within_the_user_cache() {
    let app = spawn_app_with(|c| c.auth.user_cache = syncgate::duration::Dur::millis(500)).await;
    let (_, boss) = app.add_user("boss@example.com", "admin");
    let (uid, user) = app.add_user("ann@example.com", "user");
    let mut ws = joined(&app, &user, "realtime:mine", meetings_binding()).await;
    app.db().execute("UPDATE users SET status = 'disabled' WHERE id = ?1", &[json!(uid)]);
    // No notification from the server: the session checks again when its cached answer runs out.
    let why = expect_revoked(&mut ws, "realtime:mine").await;
    assert!(why.contains("disabled"), "{why}");
    new_meeting(&app, &boss, uid, "after").await;
    expect_no_change(&mut ws).await;
    assert_eq!(app.get("/api/meetings", &user).await.0, 401);
}

#[tokio::test]
async fn admins_see_users_changes_live_without_secrets_and_only_when_they_ask() {
    let app = spawn_app().await;
    let (_, boss) = app.add_user("boss@example.com", "admin");
    let (_, user) = app.add_user("ann@example.com", "user");
    let mut team = joined(&app, &boss, "realtime:team", json!([{"event": "*", "schema": "public", "table": "users"}])).await;
    let mut data_only = joined(&app, &boss, "realtime:data", json!([{"event": "*", "schema": "public"}])).await;
    // An ordinary user may not bind users.
    let mut ws = app.ws(&user, "2.0.0").await;
    ws.join("realtime:peek", json!([{"event": "*", "schema": "public", "table": "users"}]), Some(&user)).await;
    let r = ws.recv_event("phx_reply").await;
    assert_eq!(r.payload["status"], "error");

    let (s, made) = app.post("/api/admin/users", &boss, &json!({"email": "new@example.com", "name": "New Person"})).await;
    assert_eq!(s, 201, "{made}");
    let link = made["link"].as_str().unwrap();
    assert!(link.starts_with(&format!("{}/auth/link?code=", app.base)), "{link}");
    let new_id = made["user"]["id"].as_i64().unwrap();
    let data = next_change(&mut team).await;
    assert_eq!((data["table"].as_str(), data["type"].as_str()), (Some("users"), Some("INSERT")), "{data}");
    assert_eq!(data["record"]["email"], "new@example.com");
    let keys: Vec<&str> = data["record"].as_object().unwrap().keys().map(String::as_str).collect();
    for secret in ["google_refresh_token", "google_access_token", "google_sync_token", "google_sub", "last_seen"] {
        assert!(!keys.contains(&secret), "{secret} in {keys:?}");
    }
    app.patch(&format!("/api/admin/users/{new_id}"), &boss, &json!({"role": "admin"})).await;
    let data = next_change(&mut team).await;
    assert_eq!((data["type"].as_str(), data["record"]["role"].as_str()), (Some("UPDATE"), Some("admin")));
    expect_no_change(&mut data_only).await;

    // Every change is in the audit log, newest first, with who did it.
    let (s, audit) = app.get("/api/admin/audit", &boss).await;
    assert_eq!(s, 200, "{audit}");
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items[0]["action"], "role");
    assert_eq!(items[0]["actor"], "boss@example.com");
    assert_eq!(items[0]["target_id"], new_id);
    assert_eq!(items[1]["action"], "invite");
    assert_eq!(app.get("/api/admin/audit", &user).await.0, 403);
    let (s, list) = app.get("/api/admin/users", &boss).await;
    assert_eq!(s, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    assert_eq!(list["items"][2]["status"], "active");
    assert_eq!(app.get("/api/admin/users", &user).await.0, 403);
}

#[tokio::test]
async fn bad_account_requests_are_answered_and_write_nothing() {
    let app = spawn_app().await;
    let (_, boss) = app.add_user("boss@example.com", "admin");
    let (uid, _) = app.add_user("ann@example.com", "user");
    let before = app.changes().len();
    let path = format!("/api/admin/users/{uid}");
    for (body, code) in
        [(json!({"role": "owner"}), 422), (json!({"status": "gone"}), 422), (json!({"colour": "red"}), 400), (json!({}), 400)]
    {
        let (s, e) = app.patch(&path, &boss, &body).await;
        assert_eq!(s, code, "{body}: {e}");
        assert!(e["message"].is_string());
    }
    for (body, code) in [(json!({"email": "not-an-email"}), 422), (json!({"email": "ann@example.com"}), 409), (json!({"name": "x"}), 400)] {
        let (s, e) = app.post("/api/admin/users", &boss, &body).await;
        assert_eq!(s, code, "{body}: {e}");
    }
    // Role and status change together or not at all.
    let (s, _) = app.patch(&path, &boss, &json!({"role": "admin", "status": "gone"})).await;
    assert_eq!(s, 422);
    let (_, list) = app.get("/api/admin/users", &boss).await;
    assert_eq!(list["items"][1]["role"], "user", "{list}");
    assert_eq!(app.patch("/api/admin/users/999", &boss, &json!({"role": "user"})).await.0, 404);
    assert_eq!(app.patch("/api/admin/users/abc", &boss, &json!({"role": "user"})).await.0, 400);
    assert_eq!(app.changes().len(), before);
}

#[tokio::test]
async fn last_seen_is_kept_at_most_once_a_minute_and_never_logged_as_a_change() {
    let app = spawn_app().await;
    let (uid, user) = app.add_user("ann@example.com", "user");
    let seen = || -> Option<String> { app.db().value("SELECT last_seen FROM users WHERE id = ?1", &[json!(uid)]) };
    assert_eq!(seen(), None);
    assert_eq!(app.get("/api/meetings", &user).await.0, 200);
    let deadline = std::time::Instant::now() + SLACK;
    while seen().is_none() {
        assert!(std::time::Instant::now() < deadline, "last_seen is written");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let first = seen();
    assert_eq!(app.get("/api/meetings", &user).await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen(), first, "not again within the minute");
    assert!(app.changes().iter().all(|c| c.1 != "users"), "last_seen is not a change");
}

#[tokio::test]
async fn audit_entries_are_deleted_after_the_retention() {
    // Long enough that the entry is still there when first counted, even on
    // a loaded machine; short enough that the prune comes within the slack.
    let app = spawn_app_with(|c| {
        c.auth.audit_retention = syncgate::duration::Dur::millis(3000);
        c.changes.prune_interval = syncgate::duration::Dur::millis(100);
    })
    .await;
    let (_, boss) = app.add_user("boss@example.com", "admin");
    let (s, _) = app.post("/api/admin/users", &boss, &json!({"email": "new@example.com"})).await;
    assert_eq!(s, 201);
    let count = || -> i64 { app.db().value("SELECT COUNT(*) FROM audit_log", &[]) };
    assert_eq!(count(), 1);
    let deadline = std::time::Instant::now() + SLACK + Duration::from_secs(3);
    while count() > 0 {
        assert!(std::time::Instant::now() < deadline, "the old entry is pruned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
