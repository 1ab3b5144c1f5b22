//! Operating syncgate on PostgreSQL: `check` reports connectivity and the
//! schema version, `backup` says pg_dump is the tool (and copies nothing),
//! a refused connection shows no password, and `/metrics` shows the pool.

use std::process::Output;

use crate::helpers;
use crate::pg_database::PgDatabase;

async fn syncgate(dir: &std::path::Path, url: &str, args: &[&str]) -> Output {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_syncgate"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SYNCGATE") {
            c.env_remove(k);
        }
    }
    c.current_dir(dir)
        .env("SYNCGATE_DATABASE__URL", url)
        .env("SYNCGATE_AUTH__JWT_SECRET", helpers::SECRET)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run syncgate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn check_and_backup_on_postgresql_say_what_they_do() {
    let Some(db) = PgDatabase::create("check_and_backup_on_postgresql").await else { return };
    let dir = tempfile::tempdir().unwrap();
    // A fresh database: check connects and says the schema is not there yet.
    let fresh = syncgate(dir.path(), &db.url, &["check"]).await;
    assert!(fresh.status.success(), "{}", text(&fresh.stderr));
    let out = text(&fresh.stdout);
    assert!(out.contains(": connected"), "{out}");
    assert!(out.contains("schema version 0"), "{out}");
    // Any command that opens the store migrates; then check reports the latest version.
    let added = syncgate(dir.path(), &db.url, &["user", "add", "--email", "ada@example.com"]).await;
    assert!(added.status.success(), "{}", text(&added.stderr));
    let out = text(&syncgate(dir.path(), &db.url, &["check"]).await.stdout);
    let latest = syncgate::store::pg::migrations::latest_version();
    assert!(out.contains(&format!("schema version {latest} (this syncgate: {latest})")), "{out}");
    assert!(out.contains("oldest syncgate this database allows"), "{out}");

    let to = dir.path().join("copy.db");
    let backup = syncgate(dir.path(), &db.url, &["backup", "--to", to.to_str().unwrap()]).await;
    assert!(!backup.status.success());
    assert!(text(&backup.stderr).contains("pg_dump"), "{}", text(&backup.stderr));
    assert!(!to.exists(), "nothing pretends to be a backup");
}

#[tokio::test]
async fn a_refused_database_never_shows_its_password() {
    let Some(db) = PgDatabase::create("a_refused_database_never_shows_its_password").await else { return };
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: the connection is refused.
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_password(Some("s3cret-pa55")).unwrap();
    url.set_port(Some(1)).unwrap();
    for args in [&["check"][..], &["user", "list"][..]] {
        let out = syncgate(dir.path(), url.as_str(), args).await;
        assert!(!out.status.success());
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(all.contains("127.0.0.1:1"), "the sentence names the database: {all}");
        assert!(!all.contains("s3cret-pa55"), "{all}");
    }
}

#[tokio::test]
async fn metrics_show_the_read_pool_of_the_engine() {
    let app = helpers::spawn_app().await;
    let (_, token) = app.add_user("ada@example.com", "user");
    app.get("/api/clients", &token).await;
    let m = crate::metrics::scrape(&app, None).await;
    let engine = if helpers::on_postgres() { "postgres" } else { "sqlite" };
    let max = m.get(&format!("syncgate_db_pool_max_connections{{engine={engine}}}")).copied();
    assert_eq!(max, Some(app.config.database.read_pool_size as f64), "{m:?}");
    let open = m[&format!("syncgate_db_pool_connections{{engine={engine}}}")];
    assert!(open >= 1.0, "a read was served from the pool: {open}");
}

/// Nodes sharing a database must share the signing secret: with
/// `database.url` set and no `auth.jwt_secret`, nothing starts and no
/// secret is generated into the data folder.
#[tokio::test]
async fn a_shared_database_needs_a_configured_secret() {
    let Some(db) = PgDatabase::create("a_shared_database_needs_a_configured_secret").await else { return };
    let dir = tempfile::tempdir().unwrap();
    for args in [&["serve"][..], &["token", "--anon"][..]] {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_syncgate"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SYNCGATE") {
                c.env_remove(k);
            }
        }
        let out = c
            .current_dir(dir.path())
            .env("SYNCGATE_DATABASE__URL", &db.url)
            .env("SYNCGATE_SERVER__BIND", "127.0.0.1:0")
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .expect("run syncgate");
        assert!(!out.status.success(), "{args:?} must refuse");
        assert!(text(&out.stderr).contains("auth.jwt_secret must be set when database.url is set"), "{}", text(&out.stderr));
    }
    assert!(!dir.path().join("data").join("jwt_secret").exists());
}
