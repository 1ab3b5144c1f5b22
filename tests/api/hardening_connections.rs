//! Connections are bounded: a request head or body that stalls, more
//! connections than `server.max_connections`, realtime sockets that never
//! join or pile up unjoined. Short limits are set through config.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Read until the peer closes (Ok(bytes)) or `wait` passes (Err).
async fn read_until_closed(s: &mut TcpStream, wait: Duration) -> Result<Vec<u8>, ()> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return Err(()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_request_head_that_never_completes_is_closed_after_header_timeout() {
    let app = spawn_app_with(|c| c.server.header_timeout = syncgate::duration::Dur::secs(1)).await;
    let mut stalled = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        stalled.push(s);
    }
    for s in &mut stalled {
        let got = read_until_closed(s, Duration::from_secs(20)).await;
        assert!(got.is_ok(), "a connection with half a request head stayed open");
    }
    // The server still answers.
    let r = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_request_body_that_stalls_gets_408() {
    let app = spawn_app_with(|c| c.server.body_timeout = syncgate::duration::Dur::secs(1)).await;
    let (_, token) = app.add_user("body@example.com", "user");
    for (path, auth) in [("/api/clients", format!("Authorization: Bearer {token}\r\n")), ("/api/calendly/webhook", String::new())] {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        let head =
            format!("POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":");
        s.write_all(head.as_bytes()).await.unwrap();
        let got = read_until_closed(&mut s, Duration::from_secs(20)).await.expect("answered and closed");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
        let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or_default()).expect("JSON body");
        assert_eq!(body["error"], "request_timeout", "{body}");
    }
    assert_eq!(app.db().count("clients"), 0);
}

#[tokio::test]
async fn connections_past_max_connections_wait_until_one_closes() {
    let app = spawn_app_with(|c| c.server.max_connections = 2).await;
    let first = TcpStream::connect(app.addr).await.unwrap();
    let second = TcpStream::connect(app.addr).await.unwrap();
    // The third is accepted by the kernel but not served while two are open.
    let mut third = TcpStream::connect(app.addr).await.unwrap();
    third.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "a connection past server.max_connections was served");
    drop(first);
    let got = read_until_closed(&mut third, Duration::from_secs(20)).await.expect("served once a connection closed");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    drop(second);
}

#[tokio::test]
async fn a_socket_that_joins_nothing_is_closed_after_join_timeout() {
    let app = spawn_app_with(|c| c.realtime.join_timeout = syncgate::duration::Dur::secs(1)).await;
    let (_, token) = app.add_user("join@example.com", "user");
    let anon = app.app.tokens.anon_key();
    let mut idle = app.ws(&anon, "2.0.0").await;
    let mut joined = app.ws(&anon, "2.0.0").await;
    joined.join("realtime:a", json!([{"event": "*", "schema": "public", "table": "meetings"}]), Some(&token)).await;
    joined.joined().await;
    // Heartbeats do not count as joining.
    idle.send(None, "phoenix", "heartbeat", json!({})).await;
    let closed = idle.closed_with(Duration::from_secs(20)).await.expect("the unjoined socket is closed");
    assert_eq!(closed.0, 1008, "{closed:?}");
    // The joined one stays: it answers a heartbeat after the deadline.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = joined.send(None, "phoenix", "heartbeat", json!({})).await;
    let reply = joined.recv_event("phx_reply").await;
    assert_eq!(reply.reference.as_deref(), Some(r.as_str()));
}

#[tokio::test]
async fn upgrades_past_max_unjoined_get_503_until_a_socket_joins() {
    let app = spawn_app_with(|c| c.realtime.max_unjoined = 2).await;
    let (_, token) = app.add_user("many@example.com", "user");
    let anon = app.app.tokens.anon_key();
    let mut a = app.ws(&anon, "2.0.0").await;
    let _b = app.ws(&anon, "2.0.0").await;
    let m = crate::metrics::scrape(&app, None).await;
    assert_eq!(m.get("syncgate_realtime_unjoined_sockets"), Some(&2.0));
    let url = format!("ws://{}/realtime/v1/websocket?apikey={anon}&vsn=2.0.0", app.addr);
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 503);
            let body: Value = serde_json::from_slice(res.body().as_deref().unwrap_or_default()).expect("JSON error");
            assert_eq!(body["error"], "unavailable", "{body}");
            assert!(body["message"].as_str().unwrap().contains("realtime.max_unjoined"), "{body}");
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    // Once one joins, there is room again.
    a.join("realtime:a", json!([{"event": "*", "schema": "public", "table": "meetings"}]), Some(&token)).await;
    a.joined().await;
    let (_c, res) = tokio_tungstenite::connect_async(&url).await.expect("room after a join");
    assert_eq!(res.status(), 101);
}
