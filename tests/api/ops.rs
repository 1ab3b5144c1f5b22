//! Operating syncgate: `backup` under write load, `check`, and a clean
//! shutdown under load that loses no acknowledged write.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_app, start};

fn cli(app_db: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_syncgate"))
        .args(args)
        .env("SYNCGATE_DATABASE__PATH", app_db)
        .env("SYNCGATE_AUTH__JWT_SECRET", crate::helpers::SECRET)
        .env("SYNCGATE_LOG", "warn")
        .output()
        .expect("run syncgate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_write_load_is_consistent_and_has_every_earlier_write() {
    // `backup` copies the SQLite file (and `check` runs SQLite's integrity check);
    // a PostgreSQL database is backed up with PostgreSQL's own tools.
    if crate::helpers::sqlite_only(
        "a_backup_taken_under_write_load_is_consistent_and_has_every_earlier_write",
        "backup and check of the SQLite file",
    ) {
        return;
    }
    let app = Arc::new(spawn_app().await);
    let (_, token) = app.add_user("ann@example.com", "user");
    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (app, token, acked, stop) = (app.clone(), token.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                let (status, row) = app.post("/api/clients", &token, &json!({"name": format!("w{w}-{i}")})).await;
                assert_eq!(status, 201);
                acked.lock().unwrap().push(row["id"].as_i64().unwrap());
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<i64> = acked.lock().unwrap().clone();
    let file = app.dir.path().join("backup.db");
    let db = app.config.database.path.clone();
    let file_s = file.to_string_lossy().into_owned();
    let out = tokio::task::spawn_blocking(move || cli(&db, &["backup", "--to", &file_s])).await.unwrap();
    assert!(out.status.success(), "backup failed: {}", String::from_utf8_lossy(&out.stderr));
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Release);
    for w in writers {
        w.await.unwrap();
    }
    assert!(before.len() > 10, "writes were running");
    let copy = rusqlite::Connection::open(&file).unwrap();
    let ok: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    for id in &before {
        let n: i64 = copy.query_row("SELECT COUNT(*) FROM clients WHERE id = ?1", [id], |r| r.get(0)).unwrap();
        assert_eq!(n, 1, "client {id} was acknowledged before the backup began");
    }
    // Every client in the copy has its change logged in the copy (one transaction each).
    let orphans: i64 = copy
        .query_row(
            "SELECT COUNT(*) FROM clients c WHERE NOT EXISTS (SELECT 1 FROM changes WHERE table_name = 'clients' AND row_id = c.id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);

    let out = cli(&app.config.database.path, &["check"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("schema version {}", syncgate::store::migrations::latest_version())), "{text}");
    assert!(text.contains("integrity ok"), "{text}");

    // A backup never overwrites.
    let out = cli(&app.config.database.path, &["backup", "--to", &file.to_string_lossy()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_loses_no_acknowledged_write() {
    let app = Arc::new(spawn_app().await);
    let (_, token) = app.add_user("ann@example.com", "user");
    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..16 {
        let (app, token, acked) = (app.clone(), token.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let r = app.http.post(app.url("/api/clients")).bearer_auth(&token).json(&json!({"name": format!("w{w}-{i}")})).send().await;
                match r {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let row: serde_json::Value = r.json().await.unwrap();
                        acked.lock().unwrap().push(row["id"].as_i64().unwrap());
                    }
                    _ => break,
                }
            }
        }));
    }
    let mut ws = app.ws(&token, "2.0.0").await;
    ws.join("realtime:x", json!([{"event": "*", "schema": "public"}]), Some(&token)).await;
    ws.joined().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.begin_stop();
    // Sockets are told why they close.
    let closed = ws.closed_with(Duration::from_secs(10)).await;
    assert_eq!(closed, Some((1001, "server shutting down".to_string())), "realtime sockets get 1001 on shutdown");
    app.wait_stopped().await;
    for w in writers {
        let _ = w.await;
    }
    let app = Arc::try_unwrap(app).unwrap_or_else(|_| panic!("the writers are done"));
    let (config, dir) = app.stop().await;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "writes were acknowledged before the shutdown");
    let app = start(config, dir).await;
    let conn = app.db();
    for id in acked {
        let n: i64 = conn.value("SELECT COUNT(*) FROM clients WHERE id = ?1", &[json!(id)]);
        assert_eq!(n, 1, "acknowledged client {id} survived the shutdown");
    }
}

#[tokio::test]
async fn old_calendly_payloads_are_dropped_and_their_outcome_rows_kept() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.calendly.keep_payloads = syncgate::duration::Dur::secs(3600);
        c.changes.prune_interval = syncgate::duration::Dur::millis(100);
    })
    .await;
    let db = app.db();
    let now = syncgate::store::timefmt::now();
    let old = syncgate::store::timefmt::format(now - time::Duration::hours(2));
    let fresh = syncgate::store::timefmt::format(now - time::Duration::minutes(5));
    for (key, at) in [("old", &old), ("fresh", &fresh)] {
        db.execute(
            "INSERT INTO calendly_webhook_events (event, invitee_uri, dedupe_key, received_at, outcome, payload)
             VALUES ('invitee.created', 'https://api.calendly.com/x', ?1, ?2, 'accepted', '{\"email\":\"someone@example.com\"}')",
            &[json!(key), json!(at)],
        );
    }
    let mut reduced = false;
    for _ in 0..100 {
        let p: Option<String> = db.value("SELECT payload FROM calendly_webhook_events WHERE dedupe_key = 'old'", &[]);
        if p.is_none() {
            reduced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reduced, "the old payload was dropped");
    let (outcome, event): (String, String) = db.row_as("SELECT outcome, event FROM calendly_webhook_events WHERE dedupe_key = 'old'", &[]);
    assert_eq!((outcome.as_str(), event.as_str()), ("accepted", "invitee.created"), "the outcome row stays");
    let p: Option<String> = db.value("SELECT payload FROM calendly_webhook_events WHERE dedupe_key = 'fresh'", &[]);
    assert!(p.is_some(), "a recent payload is kept");
}
