//! Realtime I: the Supabase-compatible socket over real sockets — upgrade
//! checks, joins, change frames, filters, isolation, tokens, caps, heartbeats,
//! leaving and malformed input.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Ws};

const QUIET: Duration = Duration::from_millis(600);

fn meetings_binding() -> Value {
    json!([{"event": "*", "schema": "public", "table": "meetings"}])
}

fn new_meeting(title: &str) -> Value {
    json!({"title": title, "starts_at": "2026-12-01T10:00:00Z", "ends_at": "2026-12-01T11:00:00Z"})
}

/// The next postgres_changes frame, skipping system messages and replies.
async fn next_change(ws: &mut Ws) -> crate::helpers::Frame {
    ws.recv_event("postgres_changes").await
}

/// No postgres_changes frame arrives within `QUIET`.
async fn assert_no_change(ws: &mut Ws) {
    while let Some(f) = ws.recv_within(QUIET).await {
        assert_ne!(f.event, "postgres_changes", "unexpected change frame: {:?}", f.payload);
    }
}

#[tokio::test]
async fn upgrade_requires_one_of_our_tokens_and_an_allowed_origin() {
    let app = spawn_app_with(|c| c.server.cors_origins = vec!["https://app.example.com".into()]).await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let url = |key: &str| format!("ws://{}/realtime/v1/websocket?apikey={key}&vsn=2.0.0", app.addr);

    // Refused before any upgrade, with a JSON body.
    for key in ["", "not-a-jwt", &format!("{token}x")] {
        let err = tokio_tungstenite::connect_async(url(key)).await.unwrap_err();
        match err {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                assert_eq!(resp.status().as_u16(), 401);
                let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["error"], "unauthorized");
            }
            other => panic!("expected an HTTP 401, got {other:?}"),
        }
    }
    let no_key = format!("ws://{}/realtime/v1/websocket?vsn=2.0.0", app.addr);
    assert!(tokio_tungstenite::connect_async(no_key).await.is_err());

    let with_origin = |origin: &str| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = url(&token).into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        req
    };
    match tokio_tungstenite::connect_async(with_origin("https://evil.example.com")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 403),
        other => panic!("a foreign origin must be refused, got {other:?}"),
    }
    assert!(tokio_tungstenite::connect_async(with_origin("https://app.example.com")).await.is_ok());
    assert!(tokio_tungstenite::connect_async(with_origin(&app.base)).await.is_ok(), "same origin is allowed");

    let bad_vsn = format!("ws://{}/realtime/v1/websocket?apikey={token}&vsn=9.9.9", app.addr);
    match tokio_tungstenite::connect_async(bad_vsn).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 400),
        other => panic!("unknown vsn must be refused, got {other:?}"),
    }
    // A plain GET (no upgrade) gets a JSON error too.
    let (status, body) = app.get("/realtime/v1/websocket", &token).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "bad_request");
}

async fn join_and_receive_changes(vsn: &str) {
    let app = spawn_app().await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let mut ws = app.ws(&token, vsn).await;
    let bindings = json!([
        {"event": "INSERT", "schema": "public", "table": "meetings"},
        {"event": "*", "schema": "public", "table": "clients", "filter": "name=eq.Zed"},
        {"event": "*", "schema": "public", "table": "meetings"}
    ]);
    let jr = ws.join("realtime:room", bindings.clone(), Some(&token)).await;
    let reply = ws.joined().await;
    assert_eq!(reply.join_ref.as_deref(), Some(jr.as_str()));
    assert_eq!(reply.topic, "realtime:room");
    let echoed = reply.payload["response"]["postgres_changes"].as_array().unwrap().clone();
    assert_eq!(echoed.len(), 3);
    let mut ids = vec![];
    for (sent, got) in bindings.as_array().unwrap().iter().zip(&echoed) {
        let mut without_id = got.as_object().unwrap().clone();
        let id = without_id.remove("id").expect("each binding gets an id");
        assert!(id.is_u64(), "ids are integers");
        ids.push(id.as_u64().unwrap());
        assert_eq!(&Value::Object(without_id), sent, "bindings are echoed exactly as sent");
    }
    assert!(echoed[0].get("filter").is_none(), "no filter sent, none echoed (not even null)");
    assert!(reply.payload["response"]["seq"].is_i64());
    let sys = ws.recv_event("system").await;
    assert_eq!(sys.payload["message"], "Subscribed to PostgreSQL");
    assert_eq!(sys.payload["status"], "ok");
    assert_eq!(sys.payload["extension"], "postgres_changes");
    assert_eq!(sys.payload["channel"], "room");

    // INSERT: both meeting bindings match; the clients one does not.
    let (status, row) = app.post("/api/meetings", &token, &new_meeting("Intro")).await;
    assert_eq!(status, 201);
    let f = next_change(&mut ws).await;
    assert_eq!(f.topic, "realtime:room");
    assert_eq!(f.join_ref, None);
    assert_eq!(f.reference, None);
    let got_ids: Vec<u64> = f.payload["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(got_ids, vec![ids[0], ids[2]]);
    let data = &f.payload["data"];
    assert_eq!(data["type"], "INSERT");
    assert_eq!(data["schema"], "public");
    assert_eq!(data["table"], "meetings");
    assert_eq!(data["record"], row, "the record is exactly the REST row");
    assert!(data.get("old_record").is_none());
    assert!(data["errors"].is_null());
    let ts = data["commit_timestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == "2026-11-23T10:00:00.123Z".len(), "UTC with milliseconds: {ts}");
    let columns = data["columns"].as_array().unwrap();
    let col = |name: &str| columns.iter().find(|c| c["name"] == name).map(|c| c["type"].clone());
    assert_eq!(col("id"), Some(json!("int8")));
    assert_eq!(col("title"), Some(json!("text")));
    assert_eq!(col("starts_at"), Some(json!("timestamptz")));
    assert_eq!(col("all_day"), Some(json!("bool")));
    assert_eq!(col("attendees"), Some(json!("jsonb")));
    let first_seq = data["seq"].as_i64().unwrap();

    // UPDATE: only the "*" binding; old_record is the previous row.
    let id = row["id"].as_i64().unwrap();
    let (_, updated) = app.patch(&format!("/api/meetings/{id}"), &token, &json!({"title": "Review"})).await;
    let f = next_change(&mut ws).await;
    assert_eq!(f.payload["ids"], json!([ids[2]]));
    assert_eq!(f.payload["data"]["type"], "UPDATE");
    assert_eq!(f.payload["data"]["record"], updated);
    assert_eq!(f.payload["data"]["old_record"], row);
    assert_eq!(f.payload["data"]["seq"].as_i64().unwrap(), first_seq + 1);

    // DELETE: only old_record.
    let (status, _) = app.delete(&format!("/api/meetings/{id}"), &token).await;
    assert_eq!(status, 204);
    let f = next_change(&mut ws).await;
    assert_eq!(f.payload["data"]["type"], "DELETE");
    assert!(f.payload["data"].get("record").is_none());
    assert_eq!(f.payload["data"]["old_record"], updated);
    assert!(f.payload["data"]["columns"].is_array());

    // A client named Zed matches the filtered clients binding only.
    app.post("/api/clients", &token, &json!({"name": "Zed"})).await;
    let f = next_change(&mut ws).await;
    assert_eq!(f.payload["ids"], json!([ids[1]]));
    app.post("/api/clients", &token, &json!({"name": "Amy"})).await;
    assert_no_change(&mut ws).await;
}

#[tokio::test]
async fn vsn2_join_and_change_frames() {
    join_and_receive_changes("2.0.0").await;
}

#[tokio::test]
async fn vsn1_join_and_change_frames() {
    join_and_receive_changes("1.0.0").await;
}

#[tokio::test]
async fn no_table_binding_sees_every_table() {
    let app = spawn_app().await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let mut ws = app.ws(&token, "2.0.0").await;
    ws.join("realtime:all", json!([{"event": "*", "schema": "public"}]), Some(&token)).await;
    ws.joined().await;
    app.post("/api/clients", &token, &new_client("Bo")).await;
    assert_eq!(next_change(&mut ws).await.payload["data"]["table"], "clients");
    app.post("/api/pipeline", &token, &json!({"title": "Deal"})).await;
    assert_eq!(next_change(&mut ws).await.payload["data"]["table"], "pipeline");
    app.post("/api/meetings", &token, &new_meeting("M")).await;
    assert_eq!(next_change(&mut ws).await.payload["data"]["table"], "meetings");
}

fn new_client(name: &str) -> Value {
    json!({"name": name})
}

#[tokio::test]
async fn filters_compare_as_the_column_type_and_rows_leaving_a_filter_are_delivered() {
    let app = spawn_app().await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let (_, c7) = app.post("/api/clients", &token, &new_client("Seven")).await;
    let (_, c8) = app.post("/api/clients", &token, &new_client("Eight")).await;
    let c7 = c7["id"].as_i64().unwrap();
    let c8 = c8["id"].as_i64().unwrap();
    let mut ws = app.ws(&token, "2.0.0").await;
    let filter = format!("client_id=eq.{c7}");
    ws.join("realtime:f", json!([{"event": "*", "schema": "public", "table": "meetings", "filter": filter}]), Some(&token)).await;
    ws.joined().await;

    let mut m = new_meeting("for seven");
    m["client_id"] = json!(c7);
    let (_, row) = app.post("/api/meetings", &token, &m).await;
    assert_eq!(next_change(&mut ws).await.payload["data"]["record"]["id"], row["id"]);

    let mut other = new_meeting("for eight");
    other["client_id"] = json!(c8);
    app.post("/api/meetings", &token, &other).await;
    assert_no_change(&mut ws).await;

    // Moving the meeting to client 8 leaves the filter: still delivered (old row matched).
    let id = row["id"].as_i64().unwrap();
    app.patch(&format!("/api/meetings/{id}"), &token, &json!({"client_id": c8})).await;
    let f = next_change(&mut ws).await;
    assert_eq!(f.payload["data"]["type"], "UPDATE");
    assert_eq!(f.payload["data"]["record"]["client_id"], c8);
    assert_eq!(f.payload["data"]["old_record"]["client_id"], c7);

    // Timestamps compare as instants, whatever the offset written in the filter.
    let mut ws2 = app.ws(&token, "2.0.0").await;
    ws2.join(
        "realtime:t",
        json!([{"event": "INSERT", "schema": "public", "table": "meetings", "filter": "starts_at=gte.2026-12-02T01:00:00+01:00"}]),
        Some(&token),
    )
    .await;
    ws2.joined().await;
    app.post("/api/meetings", &token, &new_meeting("early")).await; // 2026-12-01T10:00Z: before
    let late = json!({"title": "late", "starts_at": "2026-12-02T00:00:00Z", "ends_at": "2026-12-02T01:00:00Z"});
    let (_, late_row) = app.post("/api/meetings", &token, &late).await;
    let f = next_change(&mut ws2).await;
    assert_eq!(f.payload["data"]["record"]["id"], late_row["id"]);

    // `in` on text.
    let mut ws3 = app.ws(&token, "1.0.0").await;
    ws3.join(
        "realtime:in",
        json!([{"event": "*", "schema": "public", "table": "clients", "filter": "name=in.(Ann,\"Bo, Jr\")"}]),
        Some(&token),
    )
    .await;
    ws3.joined().await;
    app.post("/api/clients", &token, &new_client("Carl")).await;
    let (_, bo) = app.post("/api/clients", &token, &new_client("Bo, Jr")).await;
    assert_eq!(next_change(&mut ws3).await.payload["data"]["record"]["id"], bo["id"]);
}

#[tokio::test]
async fn bad_filters_get_a_system_error_and_bad_tables_an_error_reply() {
    let app = spawn_app().await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let mut ws = app.ws(&token, "2.0.0").await;

    ws.join("realtime:a", json!([{"event": "*", "schema": "public", "table": "invoices"}]), Some(&token)).await;
    let r = ws.recv_event("phx_reply").await;
    assert_eq!(r.payload["status"], "error");
    assert!(r.payload["response"]["reason"].as_str().unwrap().contains("invoices"));

    ws.join("realtime:b", json!([{"event": "*", "schema": "private", "table": "meetings"}]), Some(&token)).await;
    let r = ws.recv_event("phx_reply").await;
    assert_eq!(r.payload["status"], "error");

    ws.join("realtime:c", json!([{"event": "*", "schema": "public", "table": "meetings", "filter": "id=eq.abc"}]), Some(&token)).await;
    ws.joined().await;
    let mut saw_error = false;
    while let Some(f) = ws.recv_within(QUIET).await {
        if f.event == "system" && f.payload["status"] == "error" {
            assert!(f.payload["message"].as_str().unwrap().contains("int8"), "{:?}", f.payload);
            saw_error = true;
        }
    }
    assert!(saw_error, "a bad filter is reported as a system error");
    // The socket and channel stay usable.
    let hb = ws.send(None, "phoenix", "heartbeat", json!({})).await;
    let r = ws.recv_event("phx_reply").await;
    assert_eq!(r.reference.as_deref(), Some(hb.as_str()));
}

#[tokio::test]
async fn users_see_only_their_own_rows_and_admins_see_all() {
    let app = spawn_app().await;
    let (_, ann) = app.add_user("ann@example.com", "user");
    let (_, bob) = app.add_user("bob@example.com", "user");
    let (_, root) = app.add_user("root@example.com", "admin");
    let (_, ann_client) = app.post("/api/clients", &ann, &new_client("Ann's client")).await;
    let filter = format!("client_id=eq.{}", ann_client["id"]);

    let mut bob_ws = app.ws(&bob, "2.0.0").await;
    bob_ws.join("realtime:all", json!([{"event": "*", "schema": "public"}]), Some(&bob)).await;
    bob_ws.joined().await;
    bob_ws.join("realtime:m", meetings_binding(), Some(&bob)).await;
    bob_ws.joined().await;
    bob_ws.join("realtime:f", json!([{"event": "*", "schema": "public", "table": "meetings", "filter": filter}]), Some(&bob)).await;
    bob_ws.joined().await;
    let mut admin_ws = app.ws(&root, "2.0.0").await;
    admin_ws.join("realtime:m", meetings_binding(), Some(&root)).await;
    admin_ws.joined().await;
    // Drain the join system messages.
    while bob_ws.recv_within(Duration::from_millis(200)).await.is_some() {}

    let mut m = new_meeting("Ann only");
    m["client_id"] = ann_client["id"].clone();
    let (_, row) = app.post("/api/meetings", &ann, &m).await;
    let id = row["id"].as_i64().unwrap();
    app.patch(&format!("/api/meetings/{id}"), &ann, &json!({"notes": "secret"})).await;
    app.delete(&format!("/api/meetings/{id}"), &ann).await;

    // The admin sees all three; Bob sees nothing at all.
    for op in ["INSERT", "UPDATE", "DELETE"] {
        assert_eq!(next_change(&mut admin_ws).await.payload["data"]["type"], op);
    }
    assert!(bob_ws.recv_within(Duration::from_secs(1)).await.is_none(), "Bob's socket receives zero frames");
}

#[tokio::test]
async fn anon_key_connects_but_cannot_join_without_a_user_token() {
    let app = spawn_app().await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let anon = app.app.tokens.anon_key();
    let mut ws = app.ws(&anon, "2.0.0").await;
    ws.join("realtime:x", meetings_binding(), None).await;
    let r = ws.recv_event("phx_reply").await;
    assert_eq!(r.payload["status"], "error");
    ws.join("realtime:x", meetings_binding(), Some(&token)).await;
    ws.joined().await;
    app.post("/api/meetings", &token, &new_meeting("M")).await;
    next_change(&mut ws).await;
}

#[tokio::test]
async fn access_token_swaps_claims_and_expiry_closes_the_channel_on_a_timer() {
    let app = spawn_app().await;
    let (id, token) = app.add_user("ann@example.com", "user");
    let short = app.token_for(id, "user", 2);
    let mut ws = app.ws(&short, "2.0.0").await;
    let jr = ws.join("realtime:x", meetings_binding(), Some(&short)).await;
    ws.joined().await;
    // A fresh token before expiry keeps the channel alive past the old expiry.
    ws.send(Some(&jr), "realtime:x", "access_token", json!({"access_token": token})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.post("/api/meetings", &token, &new_meeting("after swap")).await;
    let f = next_change(&mut ws).await;
    assert_eq!(f.payload["data"]["record"]["title"], "after swap");

    // Without a refresh: system error then phx_close, with no change needed to trigger it.
    let mut ws2 = app.ws(&token, "2.0.0").await;
    let short = app.token_for(id, "user", 2);
    let jr2 = ws2.join("realtime:y", meetings_binding(), Some(&short)).await;
    ws2.joined().await;
    let err = loop {
        let f = ws2.recv().await;
        if f.event == "system" && f.payload["status"] == "error" {
            break f;
        }
    };
    assert!(err.payload["message"].as_str().unwrap().contains("Token has expired"));
    assert_eq!(err.payload["extension"], "system");
    let close = ws2.recv_event("phx_close").await;
    assert_eq!(close.reference.as_deref(), Some(jr2.as_str()), "phx_close carries ref == join_ref");
    assert_eq!(close.join_ref.as_deref(), Some(jr2.as_str()));
    app.post("/api/meetings", &token, &new_meeting("too late")).await;
    assert_no_change(&mut ws2).await;

    // An invalid token in access_token closes the channel too.
    let jr3 = ws.join("realtime:z", meetings_binding(), Some(&token)).await;
    ws.joined().await;
    ws.send(Some(&jr3), "realtime:z", "access_token", json!({"access_token": "garbage"})).await;
    let close = ws.recv_event("phx_close").await;
    assert_eq!(close.topic, "realtime:z");
    assert_eq!(close.reference.as_deref(), Some(jr3.as_str()));
}

#[tokio::test]
async fn caps_refuse_joins_with_a_sentence() {
    let app = spawn_app_with(|c| {
        c.realtime.max_channels_per_socket = 2;
        c.realtime.max_bindings_per_channel = 3;
        c.realtime.max_bindings_per_user = 4;
    })
    .await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let mut ws = app.ws(&token, "2.0.0").await;
    ws.join("realtime:1", meetings_binding(), Some(&token)).await;
    ws.joined().await;
    ws.join("realtime:2", meetings_binding(), Some(&token)).await;
    ws.joined().await;
    ws.join("realtime:3", meetings_binding(), Some(&token)).await;
    let r = ws.recv_event("phx_reply").await;
    assert_eq!(r.payload["status"], "error");
    assert!(r.payload["response"]["reason"].as_str().unwrap().contains("channels per socket"));

    let mut ws2 = app.ws(&token, "2.0.0").await;
    let four = json!([{"event": "*", "schema": "public"}, {"event": "*", "schema": "public"}, {"event": "*", "schema": "public"}, {"event": "*", "schema": "public"}]);
    ws2.join("realtime:big", four, Some(&token)).await;
    let r = ws2.recv_event("phx_reply").await;
    assert!(r.payload["response"]["reason"].as_str().unwrap().contains("per channel"));
    let three = json!([{"event": "*", "schema": "public"}, {"event": "*", "schema": "public"}, {"event": "*", "schema": "public"}]);
    ws2.join("realtime:three", three, Some(&token)).await;
    let r = ws2.recv_event("phx_reply").await;
    assert!(r.payload["response"]["reason"].as_str().unwrap().contains("per user"), "{:?}", r.payload);
}

#[tokio::test]
async fn heartbeat_leave_and_malformed_frames() {
    let app = spawn_app().await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let mut ws = app.ws(&token, "2.0.0").await;
    let r = ws.send(None, "phoenix", "heartbeat", json!({})).await;
    let reply = ws.recv().await;
    assert_eq!(reply.event, "phx_reply");
    assert_eq!(reply.topic, "phoenix");
    assert_eq!(reply.reference.as_deref(), Some(r.as_str()));
    assert_eq!(reply.payload, json!({"status": "ok", "response": {}}));

    // Malformed frames: error replies, the socket stays open.
    for bad in ["not json", "[1,2]", "{\"topic\":1}", "[null,\"9\",\"realtime:q\",\"phx_join\",\"payload\"]", "[[[[[[[[[[[[[[[[[[[["] {
        ws.send_raw(bad).await;
        let f = ws.recv().await;
        assert_eq!(f.event, "phx_reply", "for {bad}");
        assert_eq!(f.payload["status"], "error");
    }
    ws.inner.send(tokio_tungstenite::tungstenite::Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(ws.recv().await.payload["status"], "error");
    ws.send(None, "realtime:x", "broadcast", json!({})).await;
    assert_eq!(ws.recv().await.payload["status"], "error");

    let jr = ws.join("realtime:x", meetings_binding(), Some(&token)).await;
    ws.joined().await;
    let leave_ref = ws.send(Some(&jr), "realtime:x", "phx_leave", json!({})).await;
    let ok = ws.recv_event("phx_reply").await;
    assert_eq!(ok.reference.as_deref(), Some(leave_ref.as_str()));
    assert_eq!(ok.payload["status"], "ok");
    let close = ws.recv_event("phx_close").await;
    assert_eq!(close.join_ref.as_deref(), Some(jr.as_str()));
    assert_eq!(close.reference.as_deref(), Some(jr.as_str()));
    app.post("/api/meetings", &token, &new_meeting("after leave")).await;
    assert_no_change(&mut ws).await;
}

use futures_util::SinkExt;

#[tokio::test]
async fn a_silent_socket_is_closed() {
    let app = spawn_app_with(|c| c.realtime.idle_timeout = syncgate::duration::Dur::secs(1)).await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let mut ws = app.ws(&token, "2.0.0").await;
    let closed = ws.closed_with(Duration::from_secs(10)).await;
    let (code, _) = closed.expect("the server closes a silent socket");
    assert_eq!(code, 1000);
}

#[tokio::test]
async fn several_channels_on_one_socket_each_get_their_frames() {
    let app = spawn_app().await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let mut ws = app.ws(&token, "2.0.0").await;
    ws.join("realtime:meet", meetings_binding(), Some(&token)).await;
    ws.joined().await;
    ws.join("realtime:cli", json!([{"event": "*", "schema": "public", "table": "clients"}]), Some(&token)).await;
    ws.joined().await;
    app.post("/api/clients", &token, &new_client("C")).await;
    app.post("/api/meetings", &token, &new_meeting("M")).await;
    let a = next_change(&mut ws).await;
    let b = next_change(&mut ws).await;
    assert_eq!((a.topic.as_str(), b.topic.as_str()), ("realtime:cli", "realtime:meet"));
    assert!(a.payload["data"]["seq"].as_i64() < b.payload["data"]["seq"].as_i64());
}

#[tokio::test]
async fn sockets_sharing_a_topic_get_frames_in_their_own_version_with_their_own_ids() {
    let app = spawn_app().await;
    let (_, ann) = app.add_user("ann@example.com", "user");
    let mut v2 = app.ws(&ann, "2.0.0").await;
    let mut v1 = app.ws(&ann, "1.0.0").await;
    let mut other = app.ws(&ann, "2.0.0").await;
    let mut ids = Vec::new();
    for ws in [&mut v2, &mut v1] {
        ws.join("realtime:room", meetings_binding(), Some(&ann)).await;
        ids.push(ws.joined().await.payload["response"]["postgres_changes"][0]["id"].clone());
    }
    assert_eq!(ids[0], ids[1], "the same binding gets the same id on every socket");
    // Same topic, a binding that is not the same: its own id.
    other.join("realtime:room", json!([{"event": "INSERT", "schema": "public", "table": "meetings"}]), Some(&ann)).await;
    let other_id = other.joined().await.payload["response"]["postgres_changes"][0]["id"].clone();
    assert_ne!(other_id, ids[0]);

    let (_, row) = app.post("/api/meetings", &ann, &new_meeting("Shared")).await;
    for (ws, id) in [(&mut v2, &ids[0]), (&mut v1, &ids[1]), (&mut other, &other_id)] {
        let f = next_change(ws).await;
        assert_eq!(f.topic, "realtime:room");
        assert_eq!(f.payload["ids"], json!([id]));
        assert_eq!(f.payload["data"]["record"]["title"], "Shared");
    }
    // The parser for each version already checked the frame's shape; the
    // UPDATE reaches the two "*" sockets only.
    let id = row["id"].as_i64().unwrap();
    app.patch(&format!("/api/meetings/{id}"), &ann, &json!({"title": "Renamed"})).await;
    for ws in [&mut v2, &mut v1] {
        assert_eq!(next_change(ws).await.payload["data"]["type"], "UPDATE");
    }
    assert_no_change(&mut other).await;
}

#[tokio::test]
async fn an_access_token_that_makes_the_socket_an_admins_widens_what_it_sees_and_back() {
    let app = spawn_app().await;
    let (ann_id, ann) = app.add_user("ann@example.com", "admin");
    let (_, bob) = app.add_user("bob@example.com", "user");
    let as_user = app.token_for(ann_id, "user", 3600);
    let as_admin = app.token_for(ann_id, "admin", 3600);
    let mut ws = app.ws(&ann, "2.0.0").await;
    let jr = ws.join("realtime:m", meetings_binding(), Some(&as_user)).await;
    ws.joined().await;
    app.post("/api/meetings", &bob, &new_meeting("Bob 1")).await;
    assert_no_change(&mut ws).await;

    ws.send(Some(&jr), "realtime:m", "access_token", json!({"access_token": as_admin})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.post("/api/meetings", &bob, &new_meeting("Bob 2")).await;
    let f = next_change(&mut ws).await;
    assert_eq!(
        f.payload["data"]["record"]["title"], "Bob 2",
        "an admin's socket sees every user's changes, and nothing from before the swap"
    );

    ws.send(Some(&jr), "realtime:m", "access_token", json!({"access_token": as_user})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.post("/api/meetings", &bob, &new_meeting("Bob 3")).await;
    app.post("/api/meetings", &ann, &new_meeting("Ann 1")).await;
    let f = next_change(&mut ws).await;
    assert_eq!(f.payload["data"]["record"]["title"], "Ann 1", "back to the user's own changes only");
    assert_no_change(&mut ws).await;
}
