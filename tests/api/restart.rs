//! Restart and upgrade: data and `seq` survive a clean stop and start, an old
//! schema upgrades on start, and configuration comes from environment names
//! with a single `_` after `SYNCGATE` and from partial files.

use std::path::Path;

use serde_json::json;
use syncgate::config::{Config, ExposeSecret};
use syncgate::store::migrations;

use crate::helpers::{self, spawn_app, start, test_config, Engine};

#[tokio::test]
async fn restart_keeps_data_and_continues_seq() {
    let app = spawn_app().await;
    let (uid, tok) = app.add_user("ada@example.com", "user");
    let (_, c) = app.post("/api/clients", &tok, &json!({"name": "Grace"})).await;
    let (_, m) = app
        .post(
            "/api/meetings",
            &tok,
            &json!({"title": "Intro", "starts_at": "2026-11-23T10:00:00Z", "ends_at": "2026-11-23T11:00:00Z", "client_id": c["id"]}),
        )
        .await;
    let (_, d) = app.post("/api/pipeline", &tok, &json!({"title": "Plan"})).await;
    // End on a delete, so the newest seq is not the newest row's id.
    let (s, _) = app.delete(&format!("/api/pipeline/{}", d["id"]), &tok).await;
    assert_eq!(s, 204);
    let before = app.changes();
    let max_seq = before.last().unwrap().0;
    assert_eq!(max_seq, 4);

    let (config, dir) = app.stop().await;
    let app = start(config, dir).await;

    let (s, c2) = app.get(&format!("/api/clients/{}", c["id"]), &tok).await;
    assert_eq!(s, 200, "the same token works after a restart (same secret)");
    assert_eq!(c2, c);
    let (_, m2) = app.get(&format!("/api/meetings/{}", m["id"]), &tok).await;
    assert_eq!(m2, m);
    let (s, _) = app.get(&format!("/api/pipeline/{}", d["id"]), &tok).await;
    assert_eq!(s, 404, "a delete stays deleted");
    assert_eq!(app.changes(), before, "the log is kept as it was");
    assert_eq!(app.app.store.log_head().get(), max_seq, "the writer knows the head");

    let (s, c3) = app.post("/api/clients", &tok, &json!({"name": "Alan"})).await;
    assert_eq!(s, 201);
    let after = app.changes();
    assert_eq!(after.len(), before.len() + 1);
    let last = after.last().unwrap();
    assert_eq!(last.0, max_seq + 1, "seq continues from where it was");
    assert_eq!(last.5.as_ref(), Some(&c3));
    assert_eq!(last.4, uid);

    // And once more, after a restart that wrote nothing.
    let (config, dir) = app.stop().await;
    let app = start(config, dir).await;
    app.patch(&format!("/api/clients/{}", c3["id"]), &tok, &json!({"notes": "x"})).await;
    assert_eq!(app.changes().last().unwrap().0, max_seq + 2);
}

#[tokio::test]
async fn an_old_schema_upgrades_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    // A data file at schema version 1, with a row in it.
    let (user, meeting) = {
        helpers::migrate_to(&config, 1);
        let conn = helpers::open_db(&config);
        assert_eq!(helpers::schema_version(&conn), 1);
        // Ids as the database gives them (an explicit id would not move PostgreSQL's identity on).
        let user: i64 = conn.value(
            "INSERT INTO users (email, role, created_at, updated_at) VALUES ('ada@example.com', 'user', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z') RETURNING id",
            &[],
        );
        let meeting: i64 = conn.value(
            "INSERT INTO meetings (user_id, source, title, starts_at, ends_at, created_at, updated_at)
               VALUES (?1, 'manual', 'Old', '2026-11-23T10:00:00.000Z', '2026-11-23T11:00:00.000Z', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z') RETURNING id",
            &[json!(user)],
        );
        (user, meeting)
    };
    assert!(migrations::latest_version() > 1, "there is something to upgrade");

    let app = start(config, dir).await;
    let v = helpers::schema_version(&app.db());
    assert_eq!(v, migrations::latest_version(), "upgraded to the latest schema");

    let tok = app.token_for(user, "user", 3600);
    let (s, m) = app.get(&format!("/api/meetings/{meeting}"), &tok).await;
    assert_eq!(s, 200, "the old row reads through the new schema: {m}");
    assert_eq!(m["title"], "Old");
    assert_eq!(m["starts_at"], "2026-11-23T10:00:00.000Z");
    let (s, p) = app.patch(&format!("/api/meetings/{meeting}"), &tok, &json!({"notes": "after upgrade"})).await;
    assert_eq!(s, 200, "{p}");
    let (s, n) = app
        .post("/api/meetings", &tok, &json!({"title": "New", "starts_at": "2026-11-24T10:00:00Z", "ends_at": "2026-11-24T11:00:00Z"}))
        .await;
    assert_eq!(s, 201, "{n}");
    let ch = app.changes();
    assert_eq!(ch.len(), 2);
    assert_eq!(ch[0].6.as_ref(), Some(&m), "old_record is the upgraded row as REST showed it");

    // Starting again on the upgraded file changes nothing.
    let (config, dir) = app.stop().await;
    let app = start(config, dir).await;
    let v = helpers::schema_version(&app.db());
    assert_eq!(v, migrations::latest_version());
    let (s, _) = app.get(&format!("/api/meetings/{}", n["id"]), &tok).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    {
        helpers::migrate_to(&config, migrations::latest_version());
        let conn = helpers::open_db(&config);
        match conn.engine() {
            Engine::Sqlite => conn.batch(&format!("PRAGMA user_version = {}", migrations::latest_version() + 1)),
            // PostgreSQL refuses a database whose newest migration needs a newer binary.
            Engine::Postgres => {
                conn.execute(
                    "INSERT INTO syncgate_schema (version, name, min_binary_version) VALUES (?1, 'from_the_future', '99.0.0')",
                    &[json!(migrations::latest_version() + 1)],
                );
            }
        }
    }
    let err = match syncgate::startup::Server::build(config).await {
        Ok(_) => panic!("a file from a newer syncgate must not be opened"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("newer"), "{err}");
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn environment_names_have_a_single_underscore_after_syncgate() {
    let none = Path::new("/nonexistent/config.toml");
    let l = Config::load_from(
        None,
        env(&[
            ("SYNCGATE_SERVER__BIND", "127.0.0.1:9123"),
            ("SYNCGATE_DATABASE__PATH", "elsewhere/x.db"),
            ("SYNCGATE_DATABASE__MAX_BATCH", "32"),
            ("SYNCGATE_AUTH__JWT_SECRET", "from-the-environment-0123456789abcdef"),
            ("SYNCGATE_AUTH__TOKEN_TTL", "2h"),
            ("SYNCGATE_CALENDLY__SIGNING_KEYS", "k1,k2"),
            ("SYNCGATE_SERVER__CORS_ORIGINS", "https://a.example.com, https://b.example.com"),
            ("OTHER_SERVER__BIND", "0.0.0.0:1"),
        ]),
        none,
    )
    .unwrap();
    let c = l.config;
    assert_eq!(c.server.bind, "127.0.0.1:9123");
    assert_eq!(c.database.path, "elsewhere/x.db");
    assert_eq!(c.database.max_batch, 32);
    assert_eq!(c.auth.jwt_secret.expose_secret(), "from-the-environment-0123456789abcdef");
    assert_eq!(c.auth.token_ttl.as_secs(), 7200);
    assert_eq!(syncgate::config::present(&c.calendly.signing_keys).collect::<Vec<_>>(), vec!["k1", "k2"]);
    assert_eq!(c.server.cors_origins, vec!["https://a.example.com", "https://b.example.com"]);

    // A double underscore after the prefix is not the documented name; it must not silently apply.
    let l = Config::load_from(None, env(&[("SYNCGATE__SERVER__BIND", "127.0.0.1:9999")]), none).unwrap();
    assert_eq!(l.config.server.bind, "127.0.0.1:8080");
    assert!(!l.warnings.is_empty(), "a misspelt name is warned about");
    // Unknown keys warn and do not stop startup.
    let l = Config::load_from(None, env(&[("SYNCGATE_SERVER__NOPE", "1")]), none).unwrap();
    assert!(l.warnings.iter().any(|w| w.contains("SYNCGATE_SERVER__NOPE")), "{:?}", l.warnings);
    // Bad values stop it, naming the key.
    let e = Config::load_from(None, env(&[("SYNCGATE_DATABASE__MAX_BATCH", "lots")]), none).unwrap_err();
    assert!(e.to_string().contains("database.max_batch"), "{e}");
}

#[test]
fn partial_config_files_and_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let default_file = dir.path().join("config.toml");
    std::fs::write(&default_file, "# only two keys\n[server]\nbind = \"127.0.0.1:7001\"\n\n[database]\nsynchronous = \"normal\"\n")
        .unwrap();
    let l = Config::load_from(None, vec![], &default_file).unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(l.config.server.bind, "127.0.0.1:7001");
    assert_eq!(l.config.database.synchronous, "normal");
    let d = Config::default();
    assert_eq!(l.config.database.path, d.database.path, "keys the file leaves out keep their defaults");
    assert_eq!(l.config.database.max_batch, d.database.max_batch);
    assert_eq!(l.config.calendly.tolerance, d.calendly.tolerance);

    // --config beats ./config.toml (which is then not read at all); env beats both.
    let explicit = dir.path().join("other.toml");
    std::fs::write(&explicit, "[database]\nmax_batch = 8\n[made_up]\nx = 1\n").unwrap();
    let l = Config::load_from(Some(&explicit), vec![], &default_file).unwrap();
    assert_eq!(l.config.server.bind, d.server.bind, "./config.toml is not read when --config is given");
    assert_eq!(l.config.database.max_batch, 8);
    assert!(l.warnings.iter().any(|w| w.contains("made_up")), "unknown sections warn: {:?}", l.warnings);
    let l = Config::load_from(Some(&explicit), env(&[("SYNCGATE_DATABASE__MAX_BATCH", "16")]), &default_file).unwrap();
    assert_eq!(l.config.database.max_batch, 16);

    // An empty file is a valid partial file.
    std::fs::write(&explicit, "").unwrap();
    let l = Config::load_from(Some(&explicit), vec![], &default_file).unwrap();
    assert_eq!(toml::Value::try_from(&l.config).unwrap(), toml::Value::try_from(&d).unwrap());
}

#[tokio::test]
async fn a_server_runs_on_a_partial_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("from-file.db");
    let file = dir.path().join("syncgate.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\n[database]\npath = {:?}\nmax_batch = 4\n[auth]\njwt_secret = \"a-secret-from-a-file-0123456789abcdef\"\n",
            db.to_string_lossy()
        ),
    )
    .unwrap();
    let loaded = Config::load_from(Some(&file), env(&[("SYNCGATE_DATABASE__SYNCHRONOUS", "normal")]), Path::new("/nonexistent")).unwrap();
    assert_eq!(loaded.config.database.synchronous, "normal");
    let app = start(loaded.config, dir).await;
    assert!(db.exists(), "the data folder and file are created where the file says");
    let (_, tok) = app.add_user("ada@example.com", "user");
    let (s, _) = app.post("/api/clients", &tok, &json!({"name": "Grace"})).await;
    assert_eq!(s, 201);
    let (s, h) = app.get("/health", &tok).await;
    assert_eq!(s, 200);
    assert_eq!(h["status"], "ok");
}
