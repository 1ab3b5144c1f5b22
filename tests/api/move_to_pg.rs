//! `syncgate move-to-postgres`: a team's populated SQLite file moves into an
//! empty PostgreSQL database with its ids and its change log, and a browser
//! that was away resumes on PostgreSQL from the seq it last saw with exactly
//! the changes after it. The move refuses a non-empty target and a file a
//! server still serves.

use std::process::Output;

use serde_json::{json, Value};

use crate::helpers::{self, Ws};
use crate::pg_database::PgDatabase;

fn move_command(config: &syncgate::config::Config, url: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_syncgate"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SYNCGATE") {
            c.env_remove(k);
        }
    }
    c.env("SYNCGATE_DATABASE__PATH", &config.database.path)
        .env("SYNCGATE_AUTH__JWT_SECRET", helpers::SECRET)
        .args(["move-to-postgres", "--url", url])
        .kill_on_drop(true);
    c
}

async fn run(mut c: tokio::process::Command) -> Output {
    c.output().await.expect("run syncgate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A client-table change frame's (seq, op, name).
async fn next_change(ws: &mut Ws) -> (i64, String, String) {
    let f = ws.recv_event("postgres_changes").await;
    let data = &f.payload["data"];
    let name = data["record"]["name"].as_str().or(data["old_record"]["name"].as_str()).unwrap_or_default().to_string();
    (data["seq"].as_i64().expect("seq"), data["type"].as_str().unwrap_or_default().to_string(), name)
}

fn clients_binding() -> Value {
    json!([{"event": "*", "schema": "public", "table": "clients"}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_populated_sqlite_database_moves_and_browsers_resume_without_a_gap() {
    let Some(target) = PgDatabase::create("a_populated_sqlite_database_moves").await else { return };
    // The team's server, on SQLite whatever engine the suite runs on.
    let app = helpers::spawn_app_with(|c| c.database.url = Default::default()).await;
    let (ada, token) = app.add_user("ada@example.com", "user");
    let mut ws = app.ws(&token, "2.0.0").await;
    ws.join_with("realtime:clients", json!({"postgres_changes": clients_binding()}), Some(&token)).await;
    ws.joined().await;
    let (_, a) = app.post("/api/clients", &token, &json!({"name": "Ann", "email": "ann@example.com"})).await;
    let (_, b) = app.post("/api/clients", &token, &json!({"name": "Ben"})).await;
    app.post(
        "/api/meetings",
        &token,
        &json!({"title": "Review", "starts_at": "2026-12-02T10:00:00Z", "ends_at": "2026-12-02T11:00:00Z", "client_id": a["id"]}),
    )
    .await;
    next_change(&mut ws).await;
    let (seen, _, name) = next_change(&mut ws).await;
    assert_eq!(name, "Ben");
    drop(ws);
    // While the browser is away: a change, an update and a delete.
    app.post("/api/clients", &token, &json!({"name": "Cem"})).await;
    app.patch(&format!("/api/clients/{}", a["id"]), &token, &json!({"phone": "+44 20 7946 0000"})).await;
    app.delete(&format!("/api/clients/{}", b["id"]), &token).await;
    let (_, before) = app.get("/api/clients", &token).await;

    // A server still serving the file: refused, nothing copied.
    let busy = run(move_command(&app.config, &target.url)).await;
    assert!(!busy.status.success());
    assert!(text(&busy.stderr).contains("stop it first"), "{}", text(&busy.stderr));
    let (config, dir) = app.stop().await;

    let moved = run(move_command(&config, &target.url)).await;
    assert!(moved.status.success(), "move failed: {}", text(&moved.stderr));
    let out = text(&moved.stdout);
    for line in ["users\t1", "clients\t2", "meetings\t1", "changes\t"] {
        assert!(out.lines().any(|l| l.starts_with(line)), "{line:?} missing from:\n{out}");
    }
    assert!(out.contains("the change log's head is seq"), "{out}");
    // The target is no longer empty: a second move is refused.
    let again = run(move_command(&config, &target.url)).await;
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("is not empty"), "{}", text(&again.stderr));

    // The same team on PostgreSQL.
    let mut config = config;
    config.database.url = target.url.clone().into();
    let app = helpers::start(config, dir).await;
    let (_, after) = app.get("/api/clients", &token).await;
    assert_eq!(after, before, "the same clients with the same ids");
    let (status, dan) = app.post("/api/clients", &token, &json!({"name": "Dan"})).await;
    assert_eq!(status, 201, "{dan}");
    let ids: Vec<i64> = before["items"].as_array().unwrap().iter().map(|c| c["id"].as_i64().unwrap()).collect();
    assert!(ids.iter().all(|id| *id < dan["id"].as_i64().unwrap()), "new ids start past the moved ones");
    let (status, _) = app.post("/api/clients", &token, &json!({"name": "Other Ann", "email": "ANN@example.com"})).await;
    assert_eq!(status, 409, "the moved client's email is still unique without regard to case");

    // The browser comes back and resumes from the last seq it saw.
    let mut ws = app.ws(&token, "2.0.0").await;
    ws.join_with("realtime:clients", json!({"postgres_changes": clients_binding(), "resume": {"since": seen}}), Some(&token)).await;
    ws.joined().await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next_change(&mut ws).await);
    }
    let seqs: Vec<i64> = got.iter().map(|g| g.0).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]) && seqs[0] > seen, "in order, after {seen}: {seqs:?}");
    let what: Vec<(String, String)> = got.into_iter().map(|(_, op, name)| (op, name)).collect();
    assert_eq!(
        what,
        [("INSERT", "Cem"), ("UPDATE", "Ann"), ("DELETE", "Ben"), ("INSERT", "Dan")].map(|(o, n)| (o.to_string(), n.to_string())).to_vec(),
        "exactly the changes after the browser's seq, across the move"
    );
    assert!(ws.recv_within(std::time::Duration::from_millis(300)).await.is_none_or(|f| f.event != "postgres_changes"), "nothing twice");
    let _ = ada;
    app.stop().await;
}
