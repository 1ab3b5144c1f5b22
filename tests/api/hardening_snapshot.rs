//! Snapshots are bounded: a join whose rows pass `realtime.snapshot_max_rows`
//! is refused with a sentence pointing to REST; a socket that joined with a
//! snapshot and never reads is closed as a slow consumer within
//! `realtime.flush_timeout` and gives its turn to the others.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// `n` meetings for `user` written straight into the file (setup only: the
/// snapshot reads the tables, whatever wrote them), each with `notes_len`
/// bytes of notes, the first `early` of them in 2026-01, the rest in 2026-06.
fn seed_meetings(app: &TestApp, user: i64, n: usize, early: usize, notes_len: usize) {
    let db = app.db();
    db.batch("BEGIN");
    let notes = "n".repeat(notes_len);
    for i in 0..n {
        let day = if i < early { "2026-01-10" } else { "2026-06-10" };
        db.execute(
            "INSERT INTO meetings (user_id, source, title, starts_at, ends_at, notes, created_at, updated_at)
             VALUES (?1, 'manual', ?2, ?3, ?4, ?5, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
            &[
                json!(user),
                json!(format!("m{i}")),
                json!(format!("{day}T10:00:00.000Z")),
                json!(format!("{day}T11:00:00.000Z")),
                json!(notes),
            ],
        );
    }
    db.batch("COMMIT");
}

fn meetings_binding(filter: Option<&str>) -> Value {
    let mut b = json!({"event": "*", "schema": "public", "table": "meetings"});
    if let Some(f) = filter {
        b["filter"] = json!(f);
    }
    json!([b])
}

/// Frames until "snapshot complete": (rows, the seq it names).
async fn take_snapshot(ws: &mut Ws) -> (usize, i64) {
    let mut rows = 0;
    loop {
        let f = ws.recv().await;
        if f.event == "postgres_changes" && f.payload["data"]["snapshot"] == true {
            rows += 1;
        }
        if f.event == "system" && f.payload["message"] == "snapshot complete" {
            return (rows, f.payload["seq"].as_i64().unwrap());
        }
    }
}

#[tokio::test]
async fn a_snapshot_past_the_cap_is_refused_with_a_pointer_to_rest() {
    let app = spawn_app_with(|c| c.realtime.snapshot_max_rows = 5).await;
    let (uid, token) = app.add_user("busy@example.com", "user");
    let (_, other) = app.add_user("quiet@example.com", "user");
    seed_meetings(&app, uid, 8, 3, 10);

    let mut ws = app.ws(&token, "2.0.0").await;
    ws.join_with("realtime:all", json!({"postgres_changes": meetings_binding(None), "snapshot": true}), Some(&token)).await;
    let reply = ws.recv_event("phx_reply").await;
    assert_eq!(reply.payload["status"], "error", "{:?}", reply.payload);
    let reason = reply.payload["response"]["reason"].as_str().unwrap();
    assert!(reason.contains("realtime.snapshot_max_rows") && reason.contains("REST"), "{reason}");

    // The socket stays usable: a filter that narrows to the cap gets its rows.
    ws.join_with(
        "realtime:window",
        json!({"postgres_changes": meetings_binding(Some("starts_at=lt.2026-02-01T00:00:00Z")), "snapshot": true}),
        Some(&token),
    )
    .await;
    ws.joined().await;
    assert_eq!(take_snapshot(&mut ws).await.0, 3);
    // And without a snapshot the join is fine whatever the count.
    ws.join("realtime:live", meetings_binding(None), Some(&token)).await;
    ws.joined().await;

    // Another user's rows do not count against this user's cap.
    let mut ws2 = app.ws(&other, "2.0.0").await;
    ws2.join_with("realtime:all", json!({"postgres_changes": meetings_binding(None), "snapshot": true}), Some(&other)).await;
    ws2.joined().await;
    assert_eq!(take_snapshot(&mut ws2).await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_never_reads_its_snapshot_is_closed_and_the_others_are_served() {
    let app = spawn_app_with(|c| {
        c.realtime.flush_timeout = syncgate::duration::Dur::secs(1);
        // One snapshot at a time: the reader behind the stalled one is served
        // only once the stalled one gave its turn back.
        c.realtime.concurrent_replays = 1;
    })
    .await;
    let (uid, token) = app.add_user("adviser@example.com", "user");
    // ~19 MB of rows: far more than the socket buffers between the two ends.
    seed_meetings(&app, uid, 1000, 0, 19 * 1024);

    let mut stalled = app.ws(&token, "2.0.0").await;
    stalled.join_with("realtime:m", json!({"postgres_changes": meetings_binding(None), "snapshot": true}), Some(&token)).await;
    // Let the stalled one take the turn first.
    let hub = app.app.hub.clone();
    for _ in 0..200 {
        if hub.replays.available_permits() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut reader = app.ws(&token, "2.0.0").await;
    reader.join_with("realtime:m", json!({"postgres_changes": meetings_binding(None), "snapshot": true}), Some(&token)).await;
    let reply = tokio::time::timeout(Duration::from_secs(60), reader.recv_event("phx_reply")).await.expect("the reader is served");
    assert_eq!(reply.payload["status"], "ok", "{:?}", reply.payload);
    let (rows, _) = take_snapshot(&mut reader).await;
    assert_eq!(rows, 1000);
    assert!(hub.stats.closed_slow.load(Ordering::Relaxed) >= 1, "the stalled socket was closed as a slow consumer");

    // The stalled socket, read at last, ends with the slow-consumer close.
    let closed = stalled.closed_with(Duration::from_secs(60)).await.expect("closed");
    assert_eq!(closed.0, 4008, "{closed:?}");
    // Every turn is back.
    assert_eq!(hub.replays.available_permits(), 1);
}
