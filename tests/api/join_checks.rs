//! Every join is checked now, not at connect time: a join that falls back to
//! the socket's `apikey` re-verifies it (`exp`, `nbf`), so an expired token
//! gets the join error and no row, snapshot or replay; joining does not keep
//! an idle socket open; a token without `iat` is older than any sign-out.

use std::time::Duration;

use serde_json::json;
use syncgate::auth::{unix_now, Claims};

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn a_join_on_an_apikey_that_expired_since_connecting_is_refused_with_no_rows() {
    let app = spawn_app().await;
    let (uid, long) = app.add_user("ann@example.com", "user");
    let (s, _) = app
        .post("/api/meetings", &long, &json!({"title": "T", "starts_at": "2026-11-23T10:00:00Z", "ends_at": "2026-11-23T11:00:00Z"}))
        .await;
    assert_eq!(s, 201);
    // At least two seconds to connect and join while it is valid.
    let short = app.token_for(uid, "user", 3);
    let exp = app.app.tokens.verify(&short).unwrap().exp;
    let mut ws = app.ws(&short, "2.0.0").await;
    // Valid now: the join works.
    ws.join_with("realtime:a", json!({"postgres_changes": [{"event": "*", "schema": "public"}], "snapshot": true}), None).await;
    ws.joined().await;
    ws.send(None, "realtime:a", "phx_leave", json!({})).await;
    ws.recv_event("phx_close").await;
    while unix_now() < exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for config in [
        json!({"postgres_changes": [{"event": "*", "schema": "public"}], "snapshot": true}),
        json!({"postgres_changes": [{"event": "*", "schema": "public"}], "resume": {"since": 0}}),
    ] {
        ws.join_with("realtime:b", config, None).await;
        loop {
            let f = ws.recv().await;
            assert_ne!(f.event, "postgres_changes", "no row for an expired token: {:?}", f.payload);
            if f.event == "phx_reply" && f.topic == "realtime:b" {
                assert_eq!(f.payload["status"], "error", "{:?}", f.payload);
                assert!(f.payload["response"]["reason"].as_str().unwrap().contains("expired"), "{:?}", f.payload);
                break;
            }
        }
    }
    assert!(ws.recv_within(Duration::from_millis(500)).await.is_none_or(|f| f.event != "postgres_changes"));
}

#[tokio::test]
async fn a_token_not_valid_yet_cannot_join() {
    let app = spawn_app().await;
    let (uid, _) = app.add_user("ann@example.com", "user");
    let early = app.app.tokens.sign(&Claims {
        sub: Some(uid.to_string()),
        exp: unix_now() + 3600,
        role: None,
        iat: Some(unix_now() as f64),
        nbf: Some((unix_now() + 600) as f64),
    });
    let anon = app.app.tokens.anon_key();
    let mut ws = app.ws(&anon, "2.0.0").await;
    ws.join("realtime:a", json!([{"event": "*", "schema": "public"}]), Some(&early)).await;
    let r = ws.recv_event("phx_reply").await;
    assert_eq!(r.payload["status"], "error");
    assert!(r.payload["response"]["reason"].as_str().unwrap().contains("not valid yet"), "{:?}", r.payload);
    assert_eq!(app.get("/api/meetings", &early).await.0, 401);
}

#[tokio::test]
async fn joining_over_and_over_does_not_keep_an_idle_socket_open() {
    let app = spawn_app_with(|c| c.realtime.idle_timeout = syncgate::duration::Dur::secs(1)).await;
    let anon = app.app.tokens.anon_key();
    let mut ws = app.ws(&anon, "2.0.0").await;
    let mut closed = None;
    for _ in 0..40 {
        // Refused (the anon key cannot join), but a frame all the same.
        ws.join("realtime:a", json!([]), None).await;
        if let Some(c) = ws.closed_with(Duration::from_millis(200)).await {
            closed = Some(c);
            break;
        }
    }
    let (code, reason) = closed.expect("the idle socket is closed although it keeps joining");
    assert_eq!(code, 1000, "{reason}");
}

#[tokio::test]
async fn a_token_without_iat_counts_as_older_than_any_sign_out() {
    let app = spawn_app().await;
    let (uid, user) = app.add_user("ann@example.com", "user");
    let no_iat = app.app.tokens.sign(&Claims { sub: Some(uid.to_string()), exp: unix_now() + 3600, role: None, iat: None, nbf: None });
    assert_eq!(app.get("/api/meetings", &no_iat).await.0, 200, "fine until the user signs out everywhere");
    let r = app.http.post(app.url("/api/me/signout")).bearer_auth(&user).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(app.get("/api/meetings", &no_iat).await.0, 401);
}
