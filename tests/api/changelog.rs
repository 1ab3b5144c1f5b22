//! The change log: every write produces exactly its `changes` rows (op, table,
//! owner, record = the REST row, old_record = the row before) in the same
//! transaction; failed writes leave neither row nor change; deleting a client
//! logs what it does to meetings and pipeline; source-owned meeting fields;
//! and 64 concurrent writers get a gap-free, commit-ordered `seq`. (That a
//! failing request in a batch rolls back alone is a unit test of the writer.)

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::helpers::{decode, spawn_app, TestApp};

type ChangeRow = (i64, String, String, i64, i64, Option<Value>, Option<Value>);

/// The changes logged after `before` of them.
fn new_changes(app: &TestApp, before: usize) -> Vec<ChangeRow> {
    app.changes().split_off(before)
}

fn count(app: &TestApp, table: &str) -> i64 {
    app.db().count(table)
}

fn assert_one_change(changes: &[ChangeRow], table: &str, op: &str, owner: i64, record: Option<&Value>, old: Option<&Value>) {
    assert_eq!(changes.len(), 1, "exactly one change for one {op} on {table}: {changes:?}");
    let (_, t, o, row_id, user_id, rec, old_rec) = &changes[0];
    assert_eq!(t, table);
    assert_eq!(o, op);
    assert_eq!(*user_id, owner, "logged under the row's owner");
    assert_eq!(rec.as_ref(), record, "record is the REST row");
    assert_eq!(old_rec.as_ref(), old, "old_record is the row before");
    let id = record.or(old).and_then(|r| r["id"].as_i64()).unwrap();
    assert_eq!(*row_id, id);
}

#[tokio::test]
async fn every_write_logs_exactly_its_change() {
    let app = spawn_app().await;
    let (uid, tok) = app.add_user("ada@example.com", "user");
    assert!(app.changes().is_empty(), "adding users is not a synced change");

    let mut client_row = Value::Null;
    for (table, create, patch) in [
        ("clients", json!({"name": "Grace", "email": "grace@example.com"}), json!({"notes": "vip"})),
        (
            "meetings",
            json!({"title": "Intro", "starts_at": "2026-11-23T10:00:00+01:00", "ends_at": "2026-11-23T10:30:00+01:00"}),
            json!({"status": "canceled"}),
        ),
        ("pipeline", json!({"title": "Plan", "value": 10}), json!({"stage": "proposal"})),
    ] {
        let n = app.changes().len();
        let (s, row) = app.post(&format!("/api/{table}"), &tok, &create).await;
        assert_eq!(s, 201, "{row}");
        assert_one_change(&new_changes(&app, n), table, "INSERT", uid, Some(&row), None);
        let id = row["id"].as_i64().unwrap();

        let n = app.changes().len();
        let (s, patched) = app.patch(&format!("/api/{table}/{id}"), &tok, &patch).await;
        assert_eq!(s, 200, "{patched}");
        assert_one_change(&new_changes(&app, n), table, "UPDATE", uid, Some(&patched), Some(&row));

        // A PATCH that changes nothing is answered but logs nothing.
        let n = app.changes().len();
        let (s, same) = app.patch(&format!("/api/{table}/{id}"), &tok, &patch).await;
        assert_eq!(s, 200);
        assert_eq!(same, patched, "a no-op PATCH returns the unchanged row");
        assert!(new_changes(&app, n).is_empty(), "a no-op PATCH logs no change");

        if table == "clients" {
            client_row = patched;
            continue;
        }
        let n = app.changes().len();
        let (s, _) = app.delete(&format!("/api/{table}/{id}"), &tok).await;
        assert_eq!(s, 204);
        assert_one_change(&new_changes(&app, n), table, "DELETE", uid, None, Some(&patched));
    }

    let n = app.changes().len();
    let (s, _) = app.delete(&format!("/api/clients/{}", client_row["id"]), &tok).await;
    assert_eq!(s, 204);
    assert_one_change(&new_changes(&app, n), "clients", "DELETE", uid, None, Some(&client_row));

    // The log is gap-free from 1.
    let seqs: Vec<i64> = app.changes().iter().map(|c| c.0).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
}

#[tokio::test]
async fn failed_writes_leave_neither_row_nor_change() {
    let app = spawn_app().await;
    let (_uid, tok) = app.add_user("ada@example.com", "user");
    let (s, c) = app.post("/api/clients", &tok, &json!({"name": "Grace", "email": "grace@example.com"})).await;
    assert_eq!(s, 201);
    let (s, m) = app
        .post("/api/meetings", &tok, &json!({"title": "Intro", "starts_at": "2026-11-23T10:00:00Z", "ends_at": "2026-11-23T11:00:00Z"}))
        .await;
    assert_eq!(s, 201);
    let (s, c2) = app.post("/api/clients", &tok, &json!({"name": "Alan", "email": "alan@example.com"})).await;
    assert_eq!(s, 201);
    let n = app.changes().len();
    let rows = || (count(&app, "clients"), count(&app, "meetings"), count(&app, "pipeline"));
    let before = rows();

    // Duplicate email for the same owner (the unique index says no; case-insensitively).
    let (s, e) = app.post("/api/clients", &tok, &json!({"name": "Grace again", "email": "GRACE@example.com"})).await;
    assert_eq!((s, e["error"].as_str()), (409, Some("conflict")), "{e}");
    let (s, e) = app.patch(&format!("/api/clients/{}", c2["id"]), &tok, &json!({"email": "grace@example.com", "notes": "x"})).await;
    assert_eq!((s, e["error"].as_str()), (409, Some("conflict")), "{e}");
    let (_, still) = app.get(&format!("/api/clients/{}", c2["id"]), &tok).await;
    assert_eq!(still, c2, "a refused PATCH changes no field, not even the valid ones");

    // Well-formed but invalid.
    let (s, e) = app
        .post("/api/meetings", &tok, &json!({"title": "Backwards", "starts_at": "2026-11-23T10:00:00Z", "ends_at": "2026-11-23T09:00:00Z"}))
        .await;
    assert_eq!((s, e["error"].as_str()), (422, Some("unprocessable")), "{e}");
    let (s, e) =
        app.patch(&format!("/api/meetings/{}", m["id"]), &tok, &json!({"notes": "kept?", "ends_at": "2026-11-23T09:00:00Z"})).await;
    assert_eq!((s, e["error"].as_str()), (422, Some("unprocessable")), "{e}");
    let (s, e) = app.post("/api/clients", &tok, &json!({"name": "   "})).await;
    assert_eq!((s, e["error"].as_str()), (422, Some("unprocessable")), "{e}");
    let (s, e) = app.post("/api/pipeline", &tok, &json!({"title": "Neg", "value": -5})).await;
    assert_eq!((s, e["error"].as_str()), (422, Some("unprocessable")), "{e}");
    let (s, e) = app.post("/api/pipeline", &tok, &json!({"title": "Gone", "client_id": c["id"].as_i64().unwrap() + 1000})).await;
    assert_eq!((s, e["error"].as_str()), (422, Some("unprocessable")), "{e}");

    assert_eq!(app.changes().len(), n, "no change logged for a refused write");
    assert_eq!(rows(), before, "no row written for a refused write");
    let (_, m_now) = app.get(&format!("/api/meetings/{}", m["id"]), &tok).await;
    assert_eq!(m_now, m);
}

#[tokio::test]
async fn deleting_a_client_logs_what_it_does_to_meetings_and_pipeline() {
    let app = spawn_app().await;
    let (uid, tok) = app.add_user("ada@example.com", "user");
    let (_, c) = app.post("/api/clients", &tok, &json!({"name": "Grace"})).await;
    let (_, other) = app.post("/api/clients", &tok, &json!({"name": "Alan"})).await;
    let meeting = |title: &str, client: &Value| json!({"title": title, "starts_at": "2026-11-23T10:00:00Z", "ends_at": "2026-11-23T11:00:00Z", "client_id": client["id"]});
    let (_, m1) = app.post("/api/meetings", &tok, &meeting("one", &c)).await;
    let (_, m2) = app.post("/api/meetings", &tok, &meeting("two", &c)).await;
    let (_, m_other) = app.post("/api/meetings", &tok, &meeting("other", &other)).await;
    let (_, d1) = app.post("/api/pipeline", &tok, &json!({"title": "d1", "client_id": c["id"]})).await;
    let (_, d2) = app.post("/api/pipeline", &tok, &json!({"title": "d2", "client_id": c["id"]})).await;
    let (_, d_other) = app.post("/api/pipeline", &tok, &json!({"title": "d3", "client_id": other["id"]})).await;
    let n = app.changes().len();

    let (s, _) = app.delete(&format!("/api/clients/{}", c["id"]), &tok).await;
    assert_eq!(s, 204);

    let ch = new_changes(&app, n);
    let summary: Vec<(&str, &str, i64)> = ch.iter().map(|c| (c.1.as_str(), c.2.as_str(), c.3)).collect();
    let id = |v: &Value| v["id"].as_i64().unwrap();
    assert_eq!(
        summary,
        vec![
            ("meetings", "UPDATE", id(&m1)),
            ("meetings", "UPDATE", id(&m2)),
            ("pipeline", "DELETE", id(&d1)),
            ("pipeline", "DELETE", id(&d2)),
            ("clients", "DELETE", id(&c)),
        ],
        "the dependent changes, then the client, each logged"
    );
    let seqs: Vec<i64> = ch.iter().map(|c| c.0).collect();
    assert_eq!(seqs, (seqs[0]..seqs[0] + 5).collect::<Vec<_>>(), "consecutive: one transaction");
    for (i, m) in [&m1, &m2].into_iter().enumerate() {
        let (_, now) = app.get(&format!("/api/meetings/{}", m["id"]), &tok).await;
        assert_eq!(now["client_id"], Value::Null, "the meeting stays, without the client");
        assert_eq!(ch[i].5.as_ref(), Some(&now), "record is the meeting as REST shows it now");
        assert_eq!(ch[i].6.as_ref(), Some(m), "old_record still has the client");
        assert_eq!(ch[i].4, uid);
    }
    for (i, d) in [(2, &d1), (3, &d2)] {
        let (s, _) = app.get(&format!("/api/pipeline/{}", d["id"]), &tok).await;
        assert_eq!(s, 404);
        assert_eq!(ch[i].5, None);
        assert_eq!(ch[i].6.as_ref(), Some(d));
    }
    assert_eq!(ch[4].6.as_ref(), Some(&c));
    // The other client's rows are untouched.
    let (_, mo) = app.get(&format!("/api/meetings/{}", m_other["id"]), &tok).await;
    assert_eq!(mo, m_other);
    let (_, d_now) = app.get(&format!("/api/pipeline/{}", d_other["id"]), &tok).await;
    assert_eq!(d_now, d_other);
}

#[tokio::test]
async fn source_owned_meeting_fields_cannot_change_here() {
    let app = spawn_app().await;
    let (uid, tok) = app.add_user("ada@example.com", "user");
    let (_, client) = app.post("/api/clients", &tok, &json!({"name": "Grace"})).await;
    // A meeting Google synced in (written straight to the file: the sync is not under test).
    let now = "2026-11-20T08:00:00.000Z";
    let db = app.db();
    let id: i64 = db.value(
        "INSERT INTO meetings (user_id, source, external_id, title, starts_at, ends_at, created_at, updated_at)
         VALUES (?1, 'google', 'evt-1', 'Synced call', '2026-11-23T10:00:00.000Z', '2026-11-23T11:00:00.000Z', ?2, ?2) RETURNING id",
        &[json!(uid), json!(now)],
    );
    let (_, g) = app.get(&format!("/api/meetings/{id}"), &tok).await;
    let path = format!("/api/meetings/{}", g["id"]);
    let (s, got) = app.get(&path, &tok).await;
    assert_eq!(s, 200);
    assert_eq!(got, g);
    assert_eq!(got["source"], "google");
    let n = app.changes().len();

    for body in [
        json!({"title": "Renamed"}),
        json!({"starts_at": "2026-11-23T09:00:00Z"}),
        json!({"ends_at": "2026-11-23T12:00:00Z"}),
        json!({"location": "Elsewhere"}),
        json!({"status": "canceled"}),
        json!({"notes": "would be fine", "title": "but not this"}),
    ] {
        let (s, e) = app.patch(&path, &tok, &body).await;
        assert_eq!((s, e["error"].as_str()), (409, Some("conflict")), "{body}: {e}");
        assert!(e["message"].as_str().unwrap().contains("google"), "the message says the source owns it: {e}");
    }
    let (s, e) = app.patch(&path, &tok, &json!({"source": "manual"})).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("bad_request")), "source is read-only: {e}");
    assert_eq!(app.changes().len(), n, "refused PATCHes log nothing");
    let (_, still) = app.get(&path, &tok).await;
    assert_eq!(still, g);

    // Local fields change, and repeating a source field unchanged is not a conflict.
    let (s, p) = app.patch(&path, &tok, &json!({"notes": "prep the deck", "client_id": client["id"], "title": "Synced call"})).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["notes"], "prep the deck");
    assert_eq!(p["client_id"], client["id"]);
    assert_eq!(p["title"], "Synced call");
    assert_one_change(&new_changes(&app, n), "meetings", "UPDATE", uid, Some(&p), Some(&g));
    let (s, p2) = app.patch(&path, &tok, &json!({"client_id": null})).await;
    assert_eq!(s, 200);
    assert_eq!(p2["client_id"], Value::Null);

    // A manual meeting's same fields are editable.
    let (_, m) = app
        .post("/api/meetings", &tok, &json!({"title": "Mine", "starts_at": "2026-11-23T10:00:00Z", "ends_at": "2026-11-23T11:00:00Z"}))
        .await;
    let (s, mp) = app.patch(&format!("/api/meetings/{}", m["id"]), &tok, &json!({"title": "Renamed", "status": "canceled"})).await;
    assert_eq!(s, 200, "{mp}");
    assert_eq!(mp["title"], "Renamed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_get_every_ack_logged_in_gap_free_order() {
    const TASKS: usize = 64;
    const WRITES: usize = 50;
    let app = spawn_app().await;
    let users: Vec<(i64, String)> = (0..8).map(|i| app.add_user(&format!("u{i}@example.com"), "user")).collect();
    let users = Arc::new(users);
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let http = app.http.clone();
        let url = app.url("/api/clients");
        let users = users.clone();
        handles.push(tokio::spawn(async move {
            let (uid, tok) = users[t % users.len()].clone();
            let mut acked: Vec<Value> = Vec::new();
            let mut refused = 0;
            for w in 0..WRITES {
                // Every tenth write repeats the task's first email: a 409 that
                // must roll back alone, never taking batch-mates with it.
                let email = if w % 10 == 9 { format!("t{t}w0@example.com") } else { format!("t{t}w{w}@example.com") };
                let r = http
                    .post(&url)
                    .bearer_auth(&tok)
                    .json(&json!({"name": format!("t{t} w{w}"), "email": email}))
                    .send()
                    .await
                    .expect("request");
                let (s, body) = decode(r).await;
                match s {
                    201 => {
                        assert_eq!(body["user_id"], uid);
                        acked.push(body);
                    }
                    409 => refused += 1,
                    other => panic!("unexpected {other}: {body}"),
                }
            }
            (acked, refused)
        }));
    }
    let mut acked_by_task: Vec<Vec<Value>> = Vec::new();
    let mut refused = 0;
    for h in handles {
        let (a, r) = h.await.expect("writer task");
        acked_by_task.push(a);
        refused += r;
    }
    let total: usize = acked_by_task.iter().map(Vec::len).sum();
    assert_eq!(total, TASKS * (WRITES - WRITES / 10), "every valid write was acknowledged");
    assert_eq!(refused, TASKS * (WRITES / 10), "every duplicate was refused");

    let changes = app.changes();
    let seqs: Vec<i64> = changes.iter().map(|c| c.0).collect();
    assert_eq!(seqs, (1..=total as i64).collect::<Vec<_>>(), "seq strictly increasing with no gaps, one per acknowledged write");
    let by_row: HashMap<i64, &ChangeRow> = changes.iter().map(|c| (c.3, c)).collect();
    assert_eq!(count(&app, "clients") as usize, total, "no unacknowledged row was kept");
    for acked in &acked_by_task {
        let mut last_seq = 0;
        for row in acked {
            let id = row["id"].as_i64().unwrap();
            let c = by_row.get(&id).unwrap_or_else(|| panic!("the change of acknowledged row {id} is logged"));
            assert_eq!((c.1.as_str(), c.2.as_str(), c.4), ("clients", "INSERT", row["user_id"].as_i64().unwrap()));
            assert_eq!(c.5.as_ref(), Some(row), "logged record == acknowledged row");
            let owner_token = &users.iter().find(|(u, _)| *u == c.4).expect("the row's owner").1;
            let (s, stored) = app.get(&format!("/api/clients/{id}"), owner_token).await;
            assert_eq!(s, 200);
            assert_eq!(&stored, row, "acknowledged row {id} is stored");
            assert!(c.0 > last_seq, "one caller's writes are logged in the order they were acknowledged");
            last_seq = c.0;
        }
    }
}
