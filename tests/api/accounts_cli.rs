//! `syncgate user …` as operators use it: while a server runs, changes go
//! through it (so an open realtime subscriber gets them); with no server
//! they are written directly, with the same rules and audit entries.

use std::process::Output;
use std::time::Duration;

use serde_json::json;

use syncgate::config::Config;

use crate::helpers::{spawn_app, start, TestApp, SECRET};

pub(crate) async fn syncgate(config: &Config, args: &[&str]) -> Output {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_syncgate"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SYNCGATE") {
            c.env_remove(k);
        }
    }
    c.envs(crate::helpers::config_env(config));
    c.env("SYNCGATE_DATABASE__PATH", &config.database.path)
        .env("SYNCGATE_AUTH__JWT_SECRET", SECRET)
        .env("SYNCGATE_SERVER__BIND", "127.0.0.1:0")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(30), c.output()).await.expect("the command finishes").expect("runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) async fn ok(app: &TestApp, args: &[&str]) -> String {
    let o = syncgate(&app.config, args).await;
    assert!(o.status.success(), "syncgate {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    stdout(&o)
}

#[tokio::test]
async fn cli_user_commands_go_through_the_running_server_and_reach_open_sockets() {
    let app = spawn_app().await;
    let (boss_id, boss) = app.add_user("boss@example.com", "admin");
    let (uid, user) = app.add_user("ann@example.com", "user");
    for title in ["one", "two"] {
        let (s, _) = app
            .post("/api/meetings", &user, &json!({"title": title, "starts_at": "2026-11-23T10:00:00Z", "ends_at": "2026-11-23T11:00:00Z"}))
            .await;
        assert_eq!(s, 201);
    }
    let mut ws = app.ws(&boss, "2.0.0").await;
    ws.join("realtime:all", json!([{"event": "*", "schema": "public", "table": "meetings"}]), Some(&boss)).await;
    ws.joined().await;

    // `user list`: one tab-separated line per user.
    let list = ok(&app, &["user", "list"]).await;
    let lines: Vec<Vec<&str>> = list.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert_eq!(lines[1][..5], [uid.to_string().as_str(), "ann@example.com", "Test User", "user", "active"], "{list}");
    assert_eq!(lines[1].len(), 9, "{list}");

    // The last admin rule, through the server: a clear error and a failing exit.
    let o = syncgate(&app.config, &["user", "role", &boss_id.to_string(), "user"]).await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("last active admin"), "{}", String::from_utf8_lossy(&o.stderr));

    let o = syncgate(&app.config, &["user", "remove", &uid.to_string()]).await;
    assert!(!o.status.success(), "remove needs --yes");
    assert_eq!(ok(&app, &["user", "remove", &uid.to_string(), "--yes"]).await.trim(), uid.to_string());
    for _ in 0..2 {
        let f = ws.recv_event("postgres_changes").await;
        assert_eq!(f.payload["data"]["type"], "DELETE", "{:?}", f.payload);
        assert_eq!(f.payload["data"]["old_record"]["user_id"], uid);
    }
    let (s, audit) = app.get("/api/admin/audit", &boss).await;
    assert_eq!(s, 200);
    assert_eq!((audit["items"][0]["action"].as_str(), audit["items"][0]["actor"].as_str()), (Some("remove"), Some("cli")), "{audit}");

    let link = ok(&app, &["user", "invite", "--email", "new@example.com"]).await;
    assert!(link.trim().starts_with(&format!("{}/auth/link?code=", app.base)), "the link names the running server: {link}");
    let id: i64 = ok(&app, &["user", "add", "--email", "other@example.com"]).await.trim().parse().expect("digits only");
    assert!(id > uid);
}

#[tokio::test]
async fn cli_user_commands_write_directly_when_no_server_runs() {
    let app = spawn_app().await;
    let (boss_id, _) = app.add_user("boss@example.com", "admin");
    let (uid, user) = app.add_user("ann@example.com", "user");
    let (config, dir) = app.stop().await;
    let db = config.clone();
    assert!(!dir.path().join("server.json").exists(), "a clean stop removes the server file");
    let run = |args: Vec<String>| {
        let db = db.clone();
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            syncgate(&db, &a).await
        }
    };
    let o = run(vec!["user".into(), "disable".into(), uid.to_string()]).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line = stdout(&o);
    assert_eq!(line.split('\t').nth(4), Some("disabled"), "{line}");
    let o = run(vec!["user".into(), "disable".into(), boss_id.to_string()]).await;
    assert!(!o.status.success(), "the last admin stays");
    let o = run(vec!["user".into(), "signout".into(), "999".into()]).await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));

    let app = start(config, dir).await;
    let (s, e) = app.get("/api/meetings", &user).await;
    assert_eq!(s, 401, "{e}");
    let changes = app.changes();
    let last = changes.last().unwrap();
    assert_eq!((last.1.as_str(), last.2.as_str(), last.3), ("users", "UPDATE", uid), "the direct write is in the log for resume");
}
