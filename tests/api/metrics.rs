//! `/health/live`, `/health/ready` and `/metrics` (parsed with a Prometheus
//! text-format parser), with values that move as the server works.

use std::collections::HashMap;

use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

/// Scrape and parse; returns sample name (with sorted labels) → value.
/// Every sample must carry the server's `node` label, which the keys leave out.
pub async fn scrape(app: &TestApp, token: Option<&str>) -> HashMap<String, f64> {
    let mut req = app.http.get(app.url("/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    let mut out = HashMap::new();
    let node = app.app.node.id.as_str();
    for s in parsed.samples {
        assert_eq!(s.labels.get("node"), Some(node), "{} carries the node label", s.metric);
        let mut labels: Vec<String> = s.labels.iter().filter(|(k, _)| k.as_str() != "node").map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let key = if labels.is_empty() { s.metric.clone() } else { format!("{}{{{}}}", s.metric, labels.join(",")) };
        let v = match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key, v);
    }
    out
}

#[tokio::test]
async fn liveness_and_readiness() {
    let app = spawn_app().await;
    let (status, body) = app.get("/health/live", "").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = app.get("/health/ready", "").await;
    assert_eq!(status, 200);
    assert_eq!(body["checks"], json!({"database": "ok", "writer": "ok", "hub": "ok", "tail": "ok"}));
    assert_eq!(body["node"], app.app.node.id.as_str());
    assert_eq!(body["tail"], json!({"published": 0, "head": 0, "lag": 0}), "{body}");
    let (_, token) = app.add_user("ann@example.com", "user");
    app.post("/api/clients", &token, &json!({"name": "Grace"})).await;
    let (_, body) = app.get("/health/ready", "").await;
    assert_eq!(body["tail"], json!({"published": 1, "head": 1, "lag": 0}), "{body}");
}

#[tokio::test]
async fn readiness_fails_when_the_writer_has_stopped() {
    let app = spawn_app().await;
    app.app.store.shutdown_writer().await;
    let (status, body) = app.get("/health/ready", "").await;
    assert_eq!(status, 503);
    assert_ne!(body["checks"]["writer"], "ok");
    assert_eq!(body["checks"]["database"], "ok");
}

#[tokio::test]
async fn metrics_move_with_writes_and_sockets() {
    let app = spawn_app().await;
    let (_, token) = app.add_user("ann@example.com", "user");
    let before = scrape(&app, None).await;
    assert_eq!(before["syncgate_realtime_sockets"], 0.0);
    let mut ws = app.ws(&token, "2.0.0").await;
    ws.join(
        "realtime:m",
        json!([{"event": "*", "schema": "public"}, {"event": "*", "schema": "public", "table": "meetings"}]),
        Some(&token),
    )
    .await;
    ws.joined().await;
    for i in 0..5 {
        app.post("/api/clients", &token, &json!({"name": format!("c{i}")})).await;
    }
    for _ in 0..5 {
        ws.recv_event("postgres_changes").await;
    }
    let after = scrape(&app, None).await;
    assert_eq!(after["syncgate_realtime_sockets"], 1.0);
    assert_eq!(after["syncgate_realtime_channels"], 1.0);
    assert_eq!(after["syncgate_realtime_bindings"], 2.0);
    assert_eq!(after["syncgate_realtime_frames_delivered_total"] - before["syncgate_realtime_frames_delivered_total"], 5.0);
    assert_eq!(after["syncgate_changes_head_seq"], before["syncgate_changes_head_seq"] + 5.0);
    assert_eq!(after["syncgate_changes_retained_rows"], 5.0);
    assert!(after["syncgate_writer_batch_size_count"] >= 5.0);
    assert!(after.contains_key("syncgate_writer_commit_seconds_count"));
    drop(ws);
    for _ in 0..100 {
        if scrape(&app, None).await["syncgate_realtime_sockets"] == 0.0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("a closed socket is no longer counted");
}

#[tokio::test]
async fn metrics_token_is_required_when_configured() {
    let app = spawn_app_with(|c| c.metrics.token = "scrape-me".into()).await;
    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = app.http.get(app.url("/metrics")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let m = scrape(&app, Some("scrape-me")).await;
    assert!(m.contains_key("syncgate_uptime_seconds"));
}

#[tokio::test]
async fn webhook_counters_move_by_source_and_outcome() {
    let app = spawn_app_with(|c| {
        c.calendly.signing_keys = vec!["k".into()];
        c.google.client_id = "id".into();
        c.google.client_secret = "secret".into();
    })
    .await;
    let key = |m: &HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    let before = scrape(&app, None).await;
    for _ in 0..2 {
        let r = app
            .http
            .post(app.url("/api/calendly/webhook"))
            .header("Calendly-Webhook-Signature", "t=1,v1=00")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    let r = app
        .http
        .post(app.url("/api/calendar/webhook"))
        .header("X-Goog-Channel-ID", "no-such-channel")
        .header("X-Goog-Resource-State", "exists")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let after = scrape(&app, None).await;
    let rejected = "syncgate_webhooks_received_total{outcome=rejected,source=calendly}";
    let unknown = "syncgate_webhooks_received_total{outcome=unknown_channel,source=google}";
    assert_eq!(key(&after, rejected) - key(&before, rejected), 2.0);
    assert_eq!(key(&after, unknown) - key(&before, unknown), 1.0);
}
