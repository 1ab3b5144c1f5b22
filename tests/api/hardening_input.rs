//! Outside input that used to break things (issue 13, items 6, 9, 12, 13):
//! timestamps outside the stored range are a 422, not a dropped connection or
//! a dead writer; login links survive a GET by a mail scanner; chunked REST
//! bodies are read up to the limit; alerting counters exist from startup.

use serde_json::json;

use crate::helpers::{decode, spawn_app, spawn_app_with};
use crate::metrics::scrape;

/// What a person does with a login link: open it (GET, a page), press the
/// button (POST of the form). Returns the POST's answer, or the GET's when
/// the GET did not give the page.
pub async fn follow_login_link(http: &reqwest::Client, link: &str) -> reqwest::Response {
    let page = http.get(link).send().await.expect("GET the link");
    if page.status().as_u16() != 200 {
        return page;
    }
    let html = page.text().await.unwrap();
    let code = form_code(&html);
    let action = reqwest::Url::parse(link).unwrap().join(&form_action(&html)).unwrap();
    http.post(action).form(&[("code", code.as_str())]).send().await.expect("POST the form")
}

fn form_action(html: &str) -> String {
    let at = html.find("action=\"").expect("the page has a form with an action") + 8;
    html[at..at + html[at..].find('"').unwrap()].to_string()
}

fn form_code(html: &str) -> String {
    let at = html.find("name=\"code\" value=\"").expect("the form carries the code") + 19;
    html[at..at + html[at..].find('"').unwrap()].to_string()
}

// ---- item 6: timestamps ---------------------------------------------------

const PAST_9999: &str = "9999-12-31T23:59:59-23:59";

#[tokio::test]
async fn timestamps_past_year_9999_are_422_on_every_path_and_the_writer_lives() {
    let app = spawn_app_with(|c| c.calendly.signing_keys = vec!["input-signing-key".into()]).await;
    let (_, token) = app.add_user("ann@example.com", "user");

    let (s, body) = app.get(&format!("/api/meetings?from={}", urlencode(PAST_9999)), &token).await;
    assert_eq!((s, body["error"].as_str()), (422, Some("unprocessable")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("from"), "{body}");
    let (s, body) = app.get(&format!("/api/meetings?to={}", urlencode("0000-01-01T00:00:00+00:01")), &token).await;
    assert_eq!((s, body["error"].as_str()), (422, Some("unprocessable")), "{body}");

    let (s, body) =
        app.post("/api/meetings", &token, &json!({"title": "Far", "starts_at": "2026-01-01T10:00:00Z", "ends_at": PAST_9999})).await;
    assert_eq!((s, body["error"].as_str()), (422, Some("unprocessable")), "{body}");
    let (s, m) = app
        .post("/api/meetings", &token, &json!({"title": "Near", "starts_at": "2026-01-01T10:00:00Z", "ends_at": "2026-01-01T11:00:00Z"}))
        .await;
    assert_eq!(s, 201, "{m}");
    let (s, body) = app.patch(&format!("/api/meetings/{}", m["id"]), &token, &json!({"starts_at": PAST_9999})).await;
    assert_eq!((s, body["error"].as_str()), (422, Some("unprocessable")), "{body}");

    // A signed Calendly delivery with the same value: refused, and the writer still commits.
    let payload = json!({
        "event": "invitee.created",
        "created_at": "2026-01-01T00:00:00.000000Z",
        "payload": {
            "uri": "https://api.calendly.com/scheduled_events/E1/invitees/I1",
            "email": "client@example.com",
            "name": "Client",
            "status": "active",
            "scheduled_event": {
                "uri": "https://api.calendly.com/scheduled_events/E1",
                "name": "Intro",
                "start_time": "2026-01-01T10:00:00.000000Z",
                "end_time": PAST_9999,
                "status": "active",
                "event_memberships": [{"user_email": "ann@example.com"}]
            }
        }
    })
    .to_string();
    let t = syncgate::auth::unix_now();
    let sig = syncgate::calendly::signature::sign("input-signing-key", t, payload.as_bytes());
    let r = app
        .http
        .post(app.url("/api/calendly/webhook"))
        .header("Calendly-Webhook-Signature", sig)
        .header("content-type", "application/json")
        .body(payload)
        .send()
        .await
        .expect("the server answers, the connection is not dropped");
    assert!(r.status().is_client_error(), "a 4xx for the bad time: {}", r.status());

    // Everything still works: reads, and writes through the writer.
    let (s, m2) = app
        .post("/api/meetings", &token, &json!({"title": "After", "starts_at": "9999-12-31T10:00:00Z", "ends_at": "9999-12-31T23:59:59Z"}))
        .await;
    assert_eq!(s, 201, "the last representable day still works: {m2}");
    let (s, list) = app.get("/api/meetings", &token).await;
    assert_eq!(s, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let (s, _) = app.get("/health/ready", "").await;
    assert_eq!(s, 200, "the writer is alive");
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ---- item 9: login links --------------------------------------------------

#[tokio::test]
async fn a_get_of_a_login_link_does_not_use_it_up_and_only_the_post_signs_in_once() {
    let app = spawn_app().await;
    let (id, _) = app.add_user("ann@example.com", "user");
    let code = syncgate::auth::login_links::create(&app.app.store, id).await.unwrap();
    let link = app.url(&format!("/auth/link?code={code}"));

    // A mail scanner fetches it, twice, as a browser would.
    for _ in 0..2 {
        let r = app.http.get(&link).header("accept", "text/html").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(r.headers()["referrer-policy"], "no-referrer");
        let html = r.text().await.unwrap();
        assert!(html.contains("<form method=\"post\""), "{html}");
        assert!(!html.contains("<script") && !html.contains("style="), "no inline script or style (CSP): {html}");
        assert_eq!(form_code(&html), code);
    }
    let used: Option<String> = app.db().value("SELECT used_at FROM login_links", &[]);
    assert_eq!(used, None, "a GET never uses the code");

    // The person presses the button.
    let r = follow_login_link(&app.http, &link).await;
    assert_eq!(r.status().as_u16(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let jwt = location.strip_prefix("/#access_token=").expect("the token in the fragment");
    let (s, me) = app.get("/api/me", jwt).await;
    assert_eq!((s, me["id"].as_i64()), (200, Some(id)));

    // Used: the page says so (a browser gets HTML, a program JSON), and a second POST fails.
    let r = app.http.get(&link).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().await.unwrap().contains("already used"));
    let (s, body) = decode(app.http.get(&link).send().await.unwrap()).await;
    assert_eq!((s, body["error"].as_str()), (401, Some("unauthorized")));
    let (s, body) = decode(app.http.post(app.url("/auth/link")).form(&[("code", code.as_str())]).send().await.unwrap()).await;
    assert_eq!((s, body["error"].as_str()), (401, Some("unauthorized")), "a link works once");

    // A form posted from another site does not sign anyone in.
    let fresh = syncgate::auth::login_links::create(&app.app.store, id).await.unwrap();
    let r = app
        .http
        .post(app.url("/auth/link"))
        .header("origin", "https://evil.example")
        .form(&[("code", fresh.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = follow_login_link(&app.http, &app.url(&format!("/auth/link?code={fresh}"))).await;
    assert_eq!(r.status().as_u16(), 303, "the refused cross-site POST did not use the code");
    let (s, _) = decode(app.http.get(app.url("/auth/link?code=<script>")).send().await.unwrap()).await;
    assert_eq!(s, 400);
}

// ---- item 12: chunked bodies ----------------------------------------------

/// Send `body` with `Transfer-Encoding: chunked` (no Content-Length), as
/// `fetch` with a stream does, over a plain socket; returns (status, JSON).
async fn send_chunked(app: &crate::helpers::TestApp, method: &str, path: &str, token: &str, body: &[u8]) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.addr
    )
    .into_bytes();
    for chunk in body.chunks(1000) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The server may answer 413 and close before reading it all.
    let _ = s.write_all(&req).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status: u16 = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("an HTTP answer: {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // The answer itself may be chunked: take the JSON object out of it.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if b > a => serde_json::from_str(&body[a..=b]).unwrap_or(serde_json::Value::Null),
        _ => serde_json::Value::Null,
    };
    (status, json)
}

#[tokio::test]
async fn chunked_rest_bodies_are_read_up_to_64_kib_and_refused_past_it() {
    let app = spawn_app().await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let small = serde_json::to_vec(&json!({"name": "Chunked client", "notes": "x".repeat(1000)})).unwrap();
    let (s, row) = send_chunked(&app, "POST", "/api/clients", &token, &small).await;
    assert_eq!(s, 201, "{row}");
    assert_eq!(row["name"], "Chunked client");

    // Just under the limit is still read whole (the notes cap answers, not the body limit).
    let mut near = serde_json::to_vec(&json!({"name": "Near", "notes": ""})).unwrap();
    let pad = 64 * 1024 - near.len();
    near.splice(near.len() - 2..near.len() - 2, std::iter::repeat_n(b'y', pad));
    assert_eq!(near.len(), 64 * 1024);
    let (s, body) = send_chunked(&app, "POST", "/api/clients", &token, &near).await;
    assert_ne!(s, 413, "64 KiB exactly is within the limit: {body}");
    assert_ne!(s, 400, "{body}");

    let big = serde_json::to_vec(&json!({"name": "Big", "notes": "z".repeat(70 * 1024)})).unwrap();
    let (s, body) = send_chunked(&app, "POST", "/api/clients", &token, &big).await;
    assert_eq!((s, body["error"].as_str()), (413, Some("payload_too_large")), "{body}");
    let (s, body) = app.post_raw("/api/clients", &token, big).await;
    assert_eq!((s, body["error"].as_str()), (413, Some("payload_too_large")), "with a Content-Length too: {body}");

    let (s, list) = app.get("/api/clients", &token).await;
    assert_eq!(s, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "nothing was written by the refused ones: {list}");
    // PATCH reads chunked bodies the same way.
    let patch = serde_json::to_vec(&json!({"notes": "patched"})).unwrap();
    let (s, body) = send_chunked(&app, "PATCH", &format!("/api/clients/{}", row["id"]), &token, &patch).await;
    assert_eq!((s, body["notes"].as_str()), (200, Some("patched")), "{body}");
}

#[tokio::test]
async fn each_body_and_frame_limit_follows_its_config_key() {
    let app = spawn_app_with(|c| {
        c.server.max_body_bytes = 2048;
        c.calendly.max_body_bytes = 4096;
        c.realtime.max_frame_bytes = 4096;
    })
    .await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let fits = serde_json::to_vec(&json!({"name": "Fits", "notes": "x".repeat(1500)})).unwrap();
    let (s, body) = send_chunked(&app, "POST", "/api/clients", &token, &fits).await;
    assert_eq!(s, 201, "{body}");
    let over = serde_json::to_vec(&json!({"name": "Over", "notes": "x".repeat(3000)})).unwrap();
    let (s, body) = send_chunked(&app, "POST", "/api/clients", &token, &over).await;
    assert_eq!((s, body["error"].as_str()), (413, Some("payload_too_large")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("server.max_body_bytes"), "the answer names the key: {body}");
    let (s, _) = app.post_raw("/api/clients", &token, over).await;
    assert_eq!(s, 413, "with a Content-Length too");

    let r = app.http.post(app.url("/api/calendly/webhook")).body(vec![b' '; 5000]).send().await.unwrap();
    let (s, body) = decode(r).await;
    assert_eq!((s, body["error"].as_str()), (413, Some("payload_too_large")), "{body}");

    let mut ws = app.ws(&app.app.tokens.anon_key(), "2.0.0").await;
    ws.send_raw(&format!("[null,\"1\",\"phoenix\",\"heartbeat\",{{\"pad\":\"{}\"}}]", "p".repeat(5000))).await;
    assert!(ws.closed_with(std::time::Duration::from_secs(10)).await.is_some(), "a frame past realtime.max_frame_bytes ends the socket");
}

// ---- item 13: counters from startup ---------------------------------------

#[tokio::test]
async fn every_alerting_counter_is_exported_at_zero_from_startup() {
    let app = spawn_app().await;
    let m = scrape(&app, None).await;
    let mut missing = Vec::new();
    for (source, outcomes) in syncgate::counters::WEBHOOK_OUTCOMES {
        for outcome in *outcomes {
            let key = format!("syncgate_webhooks_received_total{{outcome={outcome},source={source}}}");
            match m.get(&key) {
                Some(v) => assert_eq!(*v, 0.0, "{key}"),
                None => missing.push(key),
            }
        }
    }
    for kind in syncgate::counters::SYNC_KINDS {
        for outcome in syncgate::counters::SYNC_OUTCOMES {
            let key = format!("syncgate_google_syncs_total{{kind={kind},outcome={outcome}}}");
            if m.get(&key) != Some(&0.0) {
                missing.push(key);
            }
        }
    }
    for key in [
        "syncgate_webhooks_received_total{outcome=rejected,source=calendly}",
        "syncgate_webhooks_received_total{outcome=unknown_channel,source=google}",
        "syncgate_webhooks_received_total{outcome=accepted,source=google}",
        "syncgate_google_syncs_total{kind=incremental,outcome=error}",
        "syncgate_realtime_sessions_closed_slow_total",
    ] {
        if m.get(key) != Some(&0.0) {
            missing.push(key.to_string());
        }
    }
    let found: Vec<&String> = m.keys().filter(|k| k.starts_with("syncgate_webhooks") || k.starts_with("syncgate_google_syncs")).collect();
    assert!(missing.is_empty(), "not exported at 0 from startup: {missing:?}\nexported: {found:?}");
}

#[tokio::test]
async fn a_resume_point_at_the_top_of_the_seq_range_does_not_kill_the_socket() {
    let app = spawn_app().await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let (s, _) = app.post("/api/clients", &token, &json!({"name": "one"})).await;
    assert_eq!(s, 201);
    let mut ws = app.ws(&token, "2.0.0").await;
    let bindings = json!([{"event": "*", "schema": "public", "table": "clients"}]);
    // `since + 1` overflowed here (a panic in debug builds, a wrap in release).
    ws.join_with("realtime:max", json!({"postgres_changes": bindings, "resume": {"since": i64::MAX}}), Some(&token)).await;
    let reply = ws.recv_event("phx_reply").await;
    assert!(reply.payload["status"].is_string(), "the join is answered: {:?}", reply.payload);
    ws.send(None, "phoenix", "heartbeat", json!({})).await;
    let hb = ws.recv_event("phx_reply").await;
    assert_eq!(hb.topic, "phoenix", "the socket is still served");
}
