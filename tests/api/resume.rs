//! Realtime II: gap-free resume under churn, snapshot-then-live consistency,
//! slow consumers that catch up from the log or are closed with 4008, and the
//! `gap` signal when a resume point is older than the retained log.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use syncgate::store::records::{NewRecord, RecordChange, Visibility};
use syncgate::store::Table;

use crate::helpers::{spawn_app_with, TestApp, Ws};

fn all_tables() -> Value {
    json!([{"event": "*", "schema": "public"}])
}

/// Write `n` client inserts for the given owners (round robin) straight
/// through the writer, `concurrency` at a time.
async fn write_clients(app: &TestApp, owners: &[i64], n: usize, concurrency: usize) {
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let store = app.app.store.clone();
        let owners = owners.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while i < n {
                let owner = owners[i % owners.len()];
                let name = format!("client {i}");
                store.create_record(new_client(owner, name, None)).await.expect("write acknowledged");
                i += concurrency;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Seqs of logged changes owned by `user`, after `after`.
fn expected_seqs(app: &TestApp, user: i64, after: i64) -> Vec<i64> {
    app.changes().into_iter().filter(|c| c.4 == user && c.0 > after).map(|c| c.0).collect()
}

fn seq_of(f: &crate::helpers::Frame) -> Option<i64> {
    (f.event == "postgres_changes").then(|| f.payload["data"]["seq"].as_i64()).flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_reconnecting_with_resume_get_every_change_once_in_order() {
    // A small queue makes sessions overflow and catch up from the log too.
    let app = Arc::new(spawn_app_with(|c| c.realtime.queue_size = 32).await);
    let users: Vec<(i64, String)> = (0..5).map(|i| app.add_user(&format!("u{i}@example.com"), "user")).collect();
    let owners: Vec<i64> = users.iter().map(|u| u.0).collect();
    let done = Arc::new(AtomicBool::new(false));

    let mut clients = Vec::new();
    for c in 0..50usize {
        let app = app.clone();
        let (user, token) = users[c % users.len()].clone();
        let done = done.clone();
        clients.push(tokio::spawn(async move {
            let mut seen: Vec<i64> = Vec::new();
            let mut start: Option<i64> = None;
            let mut rounds = 0u64;
            loop {
                let finished = done.load(Ordering::Acquire);
                let mut ws = app.ws(&token, if c % 2 == 0 { "2.0.0" } else { "1.0.0" }).await;
                let config = match (start, seen.last()) {
                    (None, _) => json!({"postgres_changes": all_tables()}),
                    (Some(s), None) => json!({"postgres_changes": all_tables(), "resume": {"since": s}}),
                    (Some(_), Some(last)) => json!({"postgres_changes": all_tables(), "resume": {"since": last}}),
                };
                ws.join_with("realtime:churn", config, Some(&token)).await;
                let reply = ws.joined().await;
                if start.is_none() {
                    start = reply.payload["response"]["seq"].as_i64();
                }
                // Read for a pseudo-random while, then drop the connection abruptly.
                let budget = Duration::from_millis(30 + ((c as u64 * 7919 + rounds * 104729) % 250));
                let deadline = tokio::time::Instant::now() + if finished { Duration::from_secs(3) } else { budget };
                while let Some(f) = ws.recv_within(deadline.saturating_duration_since(tokio::time::Instant::now())).await {
                    assert_ne!(f.payload["status"], "gap", "no gap expected within retention");
                    if let Some(s) = seq_of(&f) {
                        assert_eq!(
                            f.payload["data"]["record"]["user_id"].as_i64().or(f.payload["data"]["old_record"]["user_id"].as_i64()),
                            Some(user)
                        );
                        seen.push(s);
                    }
                }
                drop(ws);
                rounds += 1;
                if finished {
                    let expected = expected_seqs(&app, user, start.unwrap_or(0));
                    if seen.len() >= expected.len() {
                        return (user, start.unwrap_or(0), seen, rounds);
                    }
                }
                tokio::time::sleep(Duration::from_millis((c as u64 * 31 + rounds * 17) % 60)).await;
            }
        }));
    }
    // Let every client join before the writes start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    write_clients(&app, &owners, 20_000, 32).await;
    done.store(true, Ordering::Release);

    for c in clients {
        let (user, start, seen, rounds) = c.await.unwrap();
        let expected = expected_seqs(&app, user, start);
        assert!(rounds > 1, "the client reconnected");
        assert_eq!(seen.len(), expected.len(), "user {user}: every visible change exactly once");
        assert_eq!(seen, expected, "user {user}: in seq order, no gap, no duplicate");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_live_ends_equal_to_the_table_while_writes_run() {
    let app = Arc::new(spawn_app_with(|c| c.realtime.queue_size = 64).await);
    let (ann, token) = app.add_user("ann@example.com", "user");
    let (bob, _) = app.add_user("bob@example.com", "user");
    write_clients(&app, &[ann, bob], 300, 4).await;

    // Inserts, renames and deletes keep running while the client joins.
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let app = app.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Acquire) {
                let store = app.app.store.clone();
                let owner = if i % 3 == 0 { bob } else { ann };
                let r = store.create_record(new_client(owner, format!("new {i}"), None)).await.unwrap();
                let id = r["id"].as_i64().unwrap_or(0);
                if i % 2 == 0 {
                    // Rows that are gone already are simply not there to change.
                    let _ = store
                        .change_record(RecordChange {
                            table: Table::Clients,
                            id: id - 5,
                            visible: Visibility::Everyone,
                            columns: vec![("name", json!(format!("renamed {i}")))],
                            client_id: None,
                        })
                        .await;
                }
                if i % 5 == 0 {
                    let _ = store.delete_record(Table::Clients, id - 7, Visibility::Everyone).await;
                }
                i += 1;
            }
            i
        })
    };

    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut ws = app.ws(&token, "2.0.0").await;
    ws.join_with(
        "realtime:snap",
        json!({"postgres_changes": [{"event": "*", "schema": "public", "table": "clients"}], "snapshot": true}),
        Some(&token),
    )
    .await;
    ws.joined().await;
    let mut state: BTreeMap<i64, Value> = BTreeMap::new();
    let mut snapshot_done = false;
    let mut last_seq = 0;
    let apply = |f: &crate::helpers::Frame, state: &mut BTreeMap<i64, Value>, snapshot_done: &mut bool, last_seq: &mut i64| {
        if f.event == "system" && f.payload["message"] == "snapshot complete" {
            *snapshot_done = true;
            *last_seq = f.payload["seq"].as_i64().unwrap();
            return;
        }
        if f.event != "postgres_changes" {
            return;
        }
        let d = &f.payload["data"];
        if d["snapshot"] == true {
            assert!(!*snapshot_done, "snapshot rows come before 'snapshot complete'");
            assert_eq!(d["type"], "INSERT");
        } else {
            assert!(*snapshot_done, "live changes come after the snapshot");
            let s = d["seq"].as_i64().unwrap();
            assert!(s > *last_seq, "live changes follow the snapshot's seq in order");
            *last_seq = s;
        }
        match d["type"].as_str().unwrap() {
            "DELETE" => {
                state.remove(&d["old_record"]["id"].as_i64().unwrap());
            }
            _ => {
                state.insert(d["record"]["id"].as_i64().unwrap(), d["record"].clone());
            }
        }
    };
    let read_until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < read_until {
        if let Some(f) = ws.recv_within(Duration::from_millis(100)).await {
            apply(&f, &mut state, &mut snapshot_done, &mut last_seq);
        }
    }
    stop.store(true, Ordering::Release);
    let writes = churn.await.unwrap();
    assert!(writes > 10, "writes ran during the join");
    let head = app.app.hub.head();
    while last_seq < head || !snapshot_done {
        match ws.recv_within(Duration::from_secs(5)).await {
            Some(f) => apply(&f, &mut state, &mut snapshot_done, &mut last_seq),
            None => break,
        }
        if expected_seqs(&app, ann, last_seq).is_empty() {
            break;
        }
    }
    // The client's state equals the table.
    let table: Vec<(i64, String)> = app.db().rows_as("SELECT id, name FROM clients WHERE user_id = ?1 ORDER BY id", &[json!(ann)]);
    let mine: Vec<(i64, String)> = state.iter().map(|(id, r)| (*id, r["name"].as_str().unwrap().to_string())).collect();
    assert_eq!(mine, table);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_delays_no_one_and_ends_caught_up_or_closed_4008() {
    let app = Arc::new(
        spawn_app_with(|c| {
            c.realtime.queue_size = 64;
            c.realtime.max_lag = 2_000;
        })
        .await,
    );
    let (ann, token) = app.add_user("ann@example.com", "user");
    // The slow client: a small receive buffer and no reads during the run.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(app.addr).await.unwrap();
    let url = format!("ws://{}/realtime/v1/websocket?apikey={token}&vsn=2.0.0", app.addr);
    let (inner, _) = tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream)).await.unwrap();
    let mut slow = Ws { inner, v2: true, next_ref: 1 };
    slow.join("realtime:slow", all_tables(), Some(&token)).await;
    let start = slow.joined().await.payload["response"]["seq"].as_i64().unwrap();

    // The reading client behaves like a browser: if it is ever closed it
    // reconnects and resumes from the last seq it saw.
    let fast_reader = {
        let app = app.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let mut seen: Vec<i64> = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while seen.len() < 6000 && tokio::time::Instant::now() < deadline {
                let mut ws = app.ws(&token, "2.0.0").await;
                let since = seen.last().copied().unwrap_or(start);
                ws.join_with("realtime:fast", json!({"postgres_changes": all_tables(), "resume": {"since": since}}), Some(&token)).await;
                ws.joined().await;
                while let Some(f) = ws.recv_within(Duration::from_secs(5)).await {
                    if let Some(s) = seq_of(&f) {
                        seen.push(s);
                    }
                    if seen.len() == 6000 {
                        break;
                    }
                }
            }
            seen
        })
    };

    // Big rows so the slow socket's buffers fill quickly.
    let notes = "x".repeat(2000);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = app.app.store.clone();
        let notes = notes.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..750 {
                let notes = notes.clone();
                store.create_record(new_client(ann, format!("c{t}-{i}"), Some(notes))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let expected = expected_seqs(&app, ann, start);
    assert_eq!(expected.len(), 6000);
    let fast_seen = fast_reader.await.unwrap();
    assert_eq!(fast_seen, expected, "the reading client got everything, in order, meanwhile");

    // Now read the slow one: an in-order prefix, then either all of it or a 4008 close.
    let mut seen = Vec::new();
    let mut closed = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), futures_util::StreamExt::next(&mut slow.inner)).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                let f = crate::helpers::parse_frame(t.as_str(), true);
                if let Some(s) = seq_of(&f) {
                    seen.push(s);
                    if seen.len() == expected.len() {
                        break;
                    }
                }
            }
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f)))) => {
                closed = f.map(|f| (u16::from(f.code), f.reason.to_string()));
                break;
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    assert_eq!(&expected[..seen.len()], &seen[..], "what the slow client got is in order with no gap");
    if seen.len() < expected.len() {
        assert_eq!(closed, Some((4008, "slow consumer".to_string())), "not caught up, so closed as a slow consumer");
        assert!(app.app.hub.stats.closed_slow.load(Ordering::Relaxed) >= 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_pauses_catches_up_from_the_log_without_loss() {
    let app = Arc::new(spawn_app_with(|c| c.realtime.queue_size = 4).await);
    let (ann, token) = app.add_user("ann@example.com", "user");
    let mut ws = app.ws(&token, "2.0.0").await;
    ws.join("realtime:p", all_tables(), Some(&token)).await;
    let start = ws.joined().await.payload["response"]["seq"].as_i64().unwrap();
    write_clients(&app, &[ann], 2000, 16).await;
    let mut seen = Vec::new();
    while let Some(f) = ws.recv_within(Duration::from_secs(5)).await {
        if let Some(s) = seq_of(&f) {
            seen.push(s);
        }
    }
    assert_eq!(seen, expected_seqs(&app, ann, start));
    assert!(app.app.hub.stats.lag_events.load(Ordering::Relaxed) >= 1, "the tiny queue overflowed, so the log path was used");
}

#[tokio::test]
async fn resuming_from_before_the_retained_log_says_gap_then_goes_live() {
    let app = spawn_app_with(|c| {
        c.changes.retention_rows = 10;
        c.changes.prune_interval = syncgate::duration::Dur::millis(100);
    })
    .await;
    let (ann, token) = app.add_user("ann@example.com", "user");
    write_clients(&app, &[ann], 50, 1).await;
    // Wait for the background prune.
    for _ in 0..100 {
        if app.changes().len() <= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let oldest = app.changes().first().unwrap().0;
    assert!(oldest > 2, "old changes were pruned");
    let mut ws = app.ws(&token, "2.0.0").await;
    ws.join_with("realtime:g", json!({"postgres_changes": all_tables(), "resume": {"since": 1}}), Some(&token)).await;
    ws.joined().await;
    let gap = loop {
        let f = ws.recv().await;
        if f.event == "system" && f.payload["status"] == "gap" {
            break f;
        }
        assert_ne!(f.event, "postgres_changes", "nothing is replayed across a gap");
    };
    assert_eq!(gap.payload["seq"].as_i64(), Some(oldest));
    assert_eq!(gap.payload["channel"], "g");
    // Still joined: live changes arrive.
    app.post("/api/clients", &token, &json!({"name": "live"})).await;
    let f = ws.recv_event("postgres_changes").await;
    assert_eq!(f.payload["data"]["record"]["name"], "live");

    // A resume inside the retained log replays exactly what followed.
    let mut ws2 = app.ws(&token, "1.0.0").await;
    let since = oldest + 3;
    ws2.join_with("realtime:r", json!({"postgres_changes": all_tables(), "resume": {"since": since}}), Some(&token)).await;
    ws2.joined().await;
    let want = expected_seqs(&app, ann, since);
    let mut got = Vec::new();
    while got.len() < want.len() {
        let f = ws2.recv().await;
        if let Some(s) = seq_of(&f) {
            got.push(s);
        }
    }
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_from_past_the_head_says_gap_and_skips_no_live_change() {
    // A browser that kept a seq from another database (a restored backup)
    // must be told to refetch, not silently miss every change up to its seq.
    let app = spawn_app_with(|_| {}).await;
    let (ann, token) = app.add_user("ann@example.com", "user");
    write_clients(&app, &[ann], 3, 1).await;
    let head = app.changes().last().unwrap().0;
    let mut ws = app.ws(&token, "2.0.0").await;
    ws.join_with("realtime:g", json!({"postgres_changes": all_tables(), "resume": {"since": head + 1000}}), Some(&token)).await;
    ws.joined().await;
    let gap = loop {
        let f = ws.recv().await;
        if f.event == "system" && f.payload["status"] == "gap" {
            break f;
        }
        assert_ne!(f.event, "postgres_changes", "nothing is replayed for an unknown seq");
    };
    assert!(gap.payload["message"].as_str().unwrap().contains("past this server's head"));
    app.post("/api/clients", &token, &json!({"name": "live"})).await;
    let f = ws.recv_event("postgres_changes").await;
    assert_eq!(f.payload["data"]["record"]["name"], "live", "the next change is delivered, not skipped");
    assert_eq!(seq_of(&f), Some(head + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_socket_far_behind_the_head_is_not_taken_for_a_slow_one() {
    // Tiny window and lag limit: Bob's writes push the head far past Ann's
    // last change, but Ann's socket owes nothing, so it stays open and live.
    let app = spawn_app_with(|c| {
        c.realtime.queue_size = 8;
        c.realtime.max_lag = 50;
    })
    .await;
    let (ann, ann_token) = app.add_user("ann@example.com", "user");
    let (bob, _) = app.add_user("bob@example.com", "user");
    let mut ws = app.ws(&ann_token, "2.0.0").await;
    ws.join("realtime:p", all_tables(), Some(&ann_token)).await;
    let start = ws.joined().await.payload["response"]["seq"].as_i64().unwrap();
    write_clients(&app, &[bob], 300, 4).await;
    // Several watchdog rounds pass with Ann 300 changes behind the head.
    tokio::time::sleep(Duration::from_millis(800)).await;
    write_clients(&app, &[ann], 3, 1).await;
    let mut seen = Vec::new();
    while let Some(f) = ws.recv_within(Duration::from_secs(2)).await {
        seen.extend(seq_of(&f));
    }
    assert_eq!(seen, expected_seqs(&app, ann, start), "Ann's three changes, live");
    assert_eq!(app.app.hub.stats.closed_slow.load(Ordering::Relaxed), 0, "nobody was closed as slow");
    ws.send(None, "phoenix", "heartbeat", json!({})).await;
    assert_eq!(ws.recv_event("phx_reply").await.payload["status"], "ok", "the socket is still open");
}

/// A client row for `owner`, as the REST create would store it.
fn new_client(owner: i64, name: String, notes: Option<String>) -> NewRecord {
    let mut columns = vec![("name", json!(name))];
    if let Some(n) = notes {
        columns.push(("notes", json!(n)));
    }
    NewRecord { table: Table::Clients, owner, columns, client_id: None }
}
