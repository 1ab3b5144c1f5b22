//! Two nodes on one PostgreSQL database, in this test process: a change
//! written on one reaches a socket on the other; the nodes see each other
//! in `/api/admin/health`, with a warning when their shared settings differ;
//! a node that stops hands its leases to the other. (Several real `syncgate
//! serve` processes under load, killed and paused: `cluster`.)

use std::time::Duration;

use serde_json::{json, Value};
use syncgate::config::Config;
use syncgate::duration::Dur;

use crate::helpers::{on_postgres, spawn_app_with, within, TestApp};

fn short_intervals(c: &mut Config) {
    c.cluster.poll_interval = Dur::millis(200);
    c.cluster.lease_ttl = Dur::millis(900);
}

/// A second node on the first one's database.
async fn second_node(first: &TestApp, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let url = first.config.database.url.clone();
    spawn_app_with(move |c| {
        c.database.url = url;
        short_intervals(c);
        tweak(c);
    })
    .await
}

fn lease_holder(health: &Value, name: &str) -> Option<String> {
    health["cluster"]["leases"].as_array()?.iter().find(|l| l["name"] == name && l["live"] == true)?["holder"].as_str().map(String::from)
}

#[tokio::test]
async fn a_change_written_on_one_node_reaches_a_socket_on_the_other() {
    if !on_postgres() {
        return; // one SQLite file has one node
    }
    let a = spawn_app_with(short_intervals).await;
    let b = second_node(&a, |_| {}).await;
    let (_, token) = a.add_user("ann@example.com", "user");
    let mut ws = b.ws(&token, "2.0.0").await;
    ws.join("realtime:room", json!([{"event": "*", "schema": "public", "table": "clients"}]), Some(&token)).await;
    ws.joined().await;
    let (s, row) = a.post("/api/clients", &token, &json!({"name": "Written on A"})).await;
    assert_eq!(s, 201, "{row}");
    let f = tokio::time::timeout(Duration::from_secs(10), ws.recv_event("postgres_changes")).await.expect("B's socket hears A's write");
    assert_eq!(f.payload["data"]["record"], row);
    // And the other way round, in order after it.
    let (_, row2) = b.post("/api/clients", &token, &json!({"name": "Written on B"})).await;
    let f2 = tokio::time::timeout(Duration::from_secs(10), ws.recv_event("postgres_changes")).await.expect("B's own write");
    assert_eq!(f2.payload["data"]["record"], row2);
    assert!(f2.payload["data"]["seq"].as_i64() > f.payload["data"]["seq"].as_i64());
}

#[tokio::test]
async fn nodes_list_each_other_and_warn_when_their_shared_settings_differ() {
    if !on_postgres() {
        return;
    }
    let a = spawn_app_with(short_intervals).await;
    let b = second_node(&a, |c| c.auth.jwt_secret = "another-secret-another-secret-another-0123".into()).await;
    let (_, admin) = a.add_user("root@example.com", "admin");
    let health = within(10, "both nodes in A's registry", || async {
        let (_, h) = a.get("/api/admin/health", &admin).await;
        (h["cluster"]["nodes"].as_array().map_or(0, Vec::len) == 2).then_some(h)
    })
    .await;
    let nodes = health["cluster"]["nodes"].as_array().unwrap();
    let me = nodes.iter().find(|n| n["this_node"] == true).unwrap();
    let other = nodes.iter().find(|n| n["this_node"] == false).unwrap();
    assert_eq!(me["id"], a.app.node.id.as_str());
    assert_eq!(other["id"], b.app.node.id.as_str());
    assert_eq!(other["alive"], true);
    assert_eq!(other["settings_match"], false, "{health}");
    assert_eq!(me["settings_match"], true);
    let warnings = health["cluster"]["warnings"].to_string();
    assert!(warnings.contains(&b.app.node.id) && warnings.contains("auth.jwt_secret"), "{warnings}");
    assert!(!warnings.contains("another-secret"), "a setting is never shown");
}

#[tokio::test]
async fn a_node_that_stops_hands_its_leases_to_the_other() {
    if !on_postgres() {
        return;
    }
    let a = spawn_app_with(short_intervals).await;
    let (_, admin) = a.add_user("root@example.com", "admin");
    let b = second_node(&a, |_| {}).await;
    let (_, health) = b.get("/api/admin/health", &admin).await;
    // The first node up took every lease before it served.
    for name in ["google_upkeep", "retention", "alerts"] {
        assert_eq!(lease_holder(&health, name).as_deref(), Some(a.app.node.id.as_str()), "{name}: {health}");
    }
    let b_id = b.app.node.id.clone();
    a.stop().await;
    // A clean stop hands them back at once; B takes them at its next round.
    within(10, "B to hold every lease", || async {
        let (_, h) = b.get("/api/admin/health", &admin).await;
        ["google_upkeep", "retention", "alerts"].iter().all(|n| lease_holder(&h, n).as_deref() == Some(b_id.as_str())).then_some(())
    })
    .await;
    let (_, h) = b.get("/api/admin/health", &admin).await;
    let ids: Vec<&str> = h["cluster"]["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![b_id.as_str()], "a node that stopped cleanly leaves the registry");
}

#[tokio::test]
async fn without_its_listener_a_node_still_delivers_every_change_by_the_poll() {
    if !on_postgres() {
        return;
    }
    let a = spawn_app_with(short_intervals).await;
    // B's LISTEN connection can never open: every wake-up is lost.
    let b = second_node(&a, |c| c.database.listen_url = "postgres://nobody@127.0.0.1:1/none?sslmode=disable".into()).await;
    let (_, token) = a.add_user("ann@example.com", "user");
    let mut ws = b.ws(&token, "2.0.0").await;
    ws.join("realtime:room", json!([{"event": "*", "schema": "public", "table": "clients"}]), Some(&token)).await;
    ws.joined().await;
    let mut written = Vec::new();
    for i in 0..5 {
        let (s, row) = a.post("/api/clients", &token, &json!({"name": format!("client {i}")})).await;
        assert_eq!(s, 201, "{row}");
        written.push(row["id"].as_i64().unwrap());
    }
    let mut heard = Vec::new();
    while heard.len() < written.len() {
        let f = tokio::time::timeout(Duration::from_secs(10), ws.recv_event("postgres_changes")).await.expect("the poll delivers");
        heard.push(f.payload["data"]["record"]["id"].as_i64().unwrap());
    }
    assert_eq!(heard, written, "every change, in order");
    let (status, ready) = b.get("/health/ready", "").await;
    assert_eq!(status, 200, "a node whose listener is down still serves: {ready}");
}
