//! The change-log tail: a change committed by another writer (another node
//! on the same database, played here by the test's own connection writing
//! the row, its seq and its `changes` row in one transaction, as a node's
//! writer does) reaches this node's sockets, in seq order, even when this
//! node's own next change is already in hand.

use std::time::Duration;

use serde_json::{json, Value};
use syncgate::duration::Dur;

use crate::helpers::{on_postgres, spawn_app_with, TestApp, Ws};

/// Commit a client for `user_id` the way another node's writer does: the
/// row, the next seq from `seq_head` and its change, in one transaction.
/// With `notify`, also the wake-up a node sends (PostgreSQL only).
fn commit_elsewhere(app: &TestApp, user_id: i64, name: &str, notify: bool) -> (i64, i64) {
    let db = app.db();
    let now = syncgate::store::timefmt::format(syncgate::store::timefmt::now());
    db.batch("BEGIN");
    let id: i64 = db.value(
        "INSERT INTO clients (user_id, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) RETURNING id",
        &[json!(user_id), json!(name), json!(now)],
    );
    let seq: i64 = db.value("UPDATE seq_head SET seq = seq + 1 WHERE id = 1 RETURNING seq", &[]);
    let record = json!({"id": id, "user_id": user_id, "name": name, "email": null, "phone": null, "notes": null, "created_at": now, "updated_at": now});
    db.execute(
        "INSERT INTO changes (seq, table_name, op, row_id, user_id, record, old_record, committed_at) VALUES (?1, 'clients', 'INSERT', ?2, ?3, ?4, NULL, ?5)",
        &[json!(seq), json!(id), json!(user_id), json!(record.to_string()), json!(now)],
    );
    if notify {
        db.batch("NOTIFY syncgate_changes");
    }
    db.batch("COMMIT");
    (id, seq)
}

async fn subscribed(app: &TestApp, token: &str) -> Ws {
    let mut ws = app.ws(token, "2.0.0").await;
    ws.join("realtime:tail", json!([{"event": "*", "schema": "public", "table": "clients"}]), Some(token)).await;
    ws.joined().await;
    ws
}

/// The next change frame's (seq, client name).
async fn next_change(ws: &mut Ws) -> (i64, String) {
    let f = ws.recv_event("postgres_changes").await;
    let data: &Value = &f.payload["data"];
    (data["seq"].as_i64().unwrap(), data["record"]["name"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn another_writers_change_goes_out_before_this_nodes_next_one() {
    // No poll and no wake-up in time: only the tail's rule (an own change
    // that does not follow the published seq waits for a read of the log)
    // can deliver the other writer's change, and before ours.
    let app = spawn_app_with(|c| c.cluster.poll_interval = Dur::secs(600)).await;
    let (uid, token) = app.add_user("ann@example.com", "user");
    let mut ws = subscribed(&app, &token).await;
    // Let the tail's first poll (at start) pass.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (_, other) = commit_elsewhere(&app, uid, "From another node", false);
    let (s, own) = app.post("/api/clients", &token, &json!({"name": "From this node"})).await;
    assert_eq!(s, 201, "{own}");

    let first = tokio::time::timeout(Duration::from_secs(10), next_change(&mut ws)).await.expect("the other node's change arrives");
    assert_eq!(first, (other, "From another node".to_string()), "the other node's change comes first, in seq order");
    let second = tokio::time::timeout(Duration::from_secs(10), next_change(&mut ws)).await.expect("this node's change arrives");
    assert_eq!(second, (other + 1, "From this node".to_string()));
}

#[tokio::test]
async fn a_change_committed_elsewhere_arrives_by_the_poll() {
    let app = spawn_app_with(|c| c.cluster.poll_interval = Dur::millis(200)).await;
    let (uid, token) = app.add_user("ann@example.com", "user");
    let mut ws = subscribed(&app, &token).await;
    let (_, seq) = commit_elsewhere(&app, uid, "Polled", false);
    let got = tokio::time::timeout(Duration::from_secs(10), next_change(&mut ws)).await.expect("the poll finds it");
    assert_eq!(got, (seq, "Polled".to_string()));
}

#[tokio::test]
async fn a_notification_wakes_the_tail_without_waiting_for_the_poll() {
    if !on_postgres() {
        return; // LISTEN/NOTIFY is PostgreSQL's; SQLite has one node.
    }
    let app = spawn_app_with(|c| c.cluster.poll_interval = Dur::secs(600)).await;
    let (uid, token) = app.add_user("ann@example.com", "user");
    let mut ws = subscribed(&app, &token).await;
    // The listener is up once readiness shows a caught-up tail; give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, seq) = commit_elsewhere(&app, uid, "Notified", true);
    let got = tokio::time::timeout(Duration::from_secs(10), next_change(&mut ws)).await.expect("the NOTIFY wakes the tail");
    assert_eq!(got, (seq, "Notified".to_string()));
    let (status, ready) = app.get("/health/ready", "").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["tail"]["lag"], 0, "{ready}");
    assert_eq!(ready["tail"]["published"], seq, "{ready}");
}
