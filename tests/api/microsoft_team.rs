//! Who has Outlook connected, as admins see it: `GET /api/admin/users`
//! (`microsoft_connected`, `microsoft_needs_reconnect`) and `syncgate user
//! list` (its last column), through a real connect against the fake Graph,
//! a revoked grant found by a sync, and a disconnect. Each of the three is
//! an UPDATE of the user's row on an admin's `users` channel, so the Team
//! page reads the list again at once.

use serde_json::{json, Value};

use crate::accounts_cli::ok;
use crate::fake_graph::FakeGraph;
use crate::helpers::{within, TestApp, Ws};
use crate::microsoft_connect::{connect_as, ms_app, O1, T1};

const UPN: &str = "ann@contoso.example";

/// The admin list's entry for `user`.
async fn listed(app: &TestApp, admin: &str, user: i64) -> Value {
    let (s, body) = app.get("/api/admin/users", admin).await;
    assert_eq!(s, 200, "{body}");
    body["items"].as_array().unwrap().iter().find(|u| u["id"] == user).cloned().expect("the user is listed")
}

/// The Outlook part of an admin list entry.
fn outlook(u: &Value) -> Value {
    json!({"connected": u["microsoft_connected"], "needs_reconnect": u["microsoft_needs_reconnect"]})
}

/// `syncgate user list`'s columns for `user`.
async fn cli_line(app: &TestApp, user: i64) -> Vec<String> {
    let list = ok(app, &["user", "list"]).await;
    list.lines()
        .map(|l| l.split('\t').map(str::to_string).collect::<Vec<_>>())
        .find(|cols| cols[0] == user.to_string())
        .unwrap_or_else(|| panic!("user {user} is in the list: {list}"))
}

/// The next change on an admin's `users` channel: it is about `user`, an UPDATE.
async fn updated(team: &mut Ws, user: i64, why: &str) {
    let data = loop {
        let f = team.recv_within(std::time::Duration::from_secs(10)).await.unwrap_or_else(|| panic!("{why}: a users change"));
        if f.event == "postgres_changes" {
            break f.payload["data"].clone();
        }
    };
    assert_eq!(
        (data["table"].as_str(), data["type"].as_str(), data["record"]["id"].as_i64()),
        (Some("users"), Some("UPDATE"), Some(user)),
        "{why}: {data}"
    );
}

#[tokio::test]
async fn admins_see_outlook_connected_then_needs_reconnect_then_gone_in_the_api_and_the_cli() {
    let fake = FakeGraph::start().await;
    fake.add_account(T1, O1, UPN, "Ann Adviser");
    let app = ms_app(&fake, |_| {}).await;
    let (boss, admin) = app.add_user("boss@contoso.example", "admin");
    let (ann, token) = app.add_user(UPN, "user");
    let not_connected = json!({"connected": false, "needs_reconnect": false});
    let mut team = app.ws(&admin, "2.0.0").await;
    team.join("realtime:team", json!([{"event": "*", "schema": "public", "table": "users"}]), Some(&admin)).await;
    team.joined().await;

    assert_eq!(outlook(&listed(&app, &admin, ann).await), not_connected);
    assert_eq!(cli_line(&app, ann).await[8], "no");

    // Ann connects Outlook: admins see it; the Google and Calendly fields are untouched.
    let r = connect_as(&app, &fake, &token, UPN).await;
    assert_eq!(r.status().as_u16(), 303, "connected");
    updated(&mut team, ann, "connect").await;
    let u = listed(&app, &admin, ann).await;
    assert_eq!(outlook(&u), json!({"connected": true, "needs_reconnect": false}), "{u}");
    assert_eq!((u["google_connected"].as_bool(), u["calendly_connected"].as_bool()), (Some(false), Some(false)), "{u}");
    assert_eq!(outlook(&listed(&app, &admin, boss).await), not_connected, "only Ann's row says Outlook");
    let cols = cli_line(&app, ann).await;
    assert_eq!(cols.len(), 9, "{cols:?}");
    assert_eq!((cols[6].as_str(), cols[7].as_str(), cols[8].as_str()), ("no", "no", "yes"), "google, calendly, outlook: {cols:?}");
    assert_eq!(cli_line(&app, boss).await[8], "no");
    // The user a PATCH returns (and the CLI prints through the server) says it too.
    let (s, patched) = app.patch(&format!("/api/admin/users/{ann}"), &admin, &json!({"status": "active"})).await;
    assert_eq!(s, 200, "{patched}");
    assert_eq!(outlook(&patched), json!({"connected": true, "needs_reconnect": false}), "{patched}");
    let line = ok(&app, &["user", "enable", &ann.to_string()]).await;
    assert_eq!(line.trim_end().split('\t').next_back(), Some("yes"), "{line}");

    // Access revoked at Microsoft: the next sync gets invalid_grant and the
    // admin list says Ann must reconnect.
    within(10, "the first sync", || async { (fake.delta_passes(UPN) >= 1).then_some(()) }).await;
    fake.revoke(UPN);
    fake.expire_access_tokens(UPN);
    fake.notify(UPN, "updated", "unknown-event").await;
    let u = within(10, "needs reconnect in the admin list", || async {
        let u = listed(&app, &admin, ann).await;
        (u["microsoft_needs_reconnect"] == true).then_some(u)
    })
    .await;
    assert_eq!(outlook(&u), json!({"connected": true, "needs_reconnect": true}), "{u}");
    updated(&mut team, ann, "needs reconnect").await;
    assert_eq!(cli_line(&app, ann).await[8], "reconnect");
    for t in fake.issued_tokens() {
        assert!(!u.to_string().contains(&t), "a Microsoft token reached the admin list");
    }

    // Ann disconnects Outlook: gone from the list.
    let (s, _) = app.delete("/api/me/microsoft", &token).await;
    assert_eq!(s, 204);
    updated(&mut team, ann, "disconnect").await;
    assert_eq!(outlook(&listed(&app, &admin, ann).await), not_connected);
    assert_eq!(cli_line(&app, ann).await[8], "no");
}
