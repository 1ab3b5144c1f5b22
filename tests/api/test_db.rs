//! The harness itself: the tests' own database handle (`helpers::TestDb`)
//! answers alike on both engines (integers as numbers, flags as 0/1, times as
//! our `…T09:00:00.100Z` text, JSON columns as their text), and on PostgreSQL
//! each test's server has a schema of its own that outlives a restart.

use serde_json::{json, Value};
use syncgate::config::ExposeSecret;

use crate::helpers::{self, spawn_app, start, Engine};

#[tokio::test]
async fn the_tests_database_handle_reads_and_writes_alike_on_both_engines() {
    let app = spawn_app().await;
    let (uid, _) = app.add_user("Ada@Example.com", "user");
    let db = app.db();

    // Flags: bound as booleans (or 0/1), read back as 0/1, or as bool.
    db.execute("UPDATE users SET google_needs_reconnect = ?2 WHERE id = ?1", &[json!(uid), json!(true)]);
    assert_eq!(db.value::<i64>("SELECT google_needs_reconnect FROM users WHERE id = ?1", &[json!(uid)]), 1);
    assert!(db.value::<bool>("SELECT google_needs_reconnect FROM users WHERE id = ?1", &[json!(uid)]));
    assert_eq!(db.value::<i64>("SELECT COUNT(*) FROM users WHERE google_needs_reconnect = ?1", &[json!(1)]), 1);
    assert_eq!(db.value::<i64>("SELECT COUNT(*) FROM users WHERE NOT google_needs_reconnect", &[]), 0);
    // Emails compared as the schema does.
    assert_eq!(db.value::<i64>("SELECT id FROM users WHERE lower(email) = lower(?1)", &[json!("ada@example.COM")]), uid);
    assert!(
        db.try_execute(
            "INSERT INTO users (email, role, created_at, updated_at) VALUES ('ADA@example.com', 'user', ?1, ?1)",
            &[json!("2026-01-01T00:00:00.000Z")]
        )
        .is_err(),
        "the same email twice is refused"
    );

    // Times, reals, dates and NULL, as SQLite keeps them.
    let id: i64 = db.value(
        "INSERT INTO pipeline (user_id, title, value, expected_close, created_at, updated_at) VALUES (?1, 'Plan', ?2, ?3, ?4, ?4) RETURNING id",
        &[json!(uid), json!(1.5), json!("2026-12-24"), json!("2026-11-23T09:00:00.100Z")],
    );
    let row = db.row("SELECT id, title, value, expected_close, notes, created_at FROM pipeline WHERE id = ?1", &[json!(id)]);
    assert_eq!(row, vec![json!(id), json!("Plan"), json!(1.5), json!("2026-12-24"), Value::Null, json!("2026-11-23T09:00:00.100Z")]);
    let latest: Option<String> =
        db.value("SELECT MAX(created_at) FROM pipeline WHERE created_at > ?1", &[json!("2026-11-23T09:00:00.000Z")]);
    assert_eq!(latest.as_deref(), Some("2026-11-23T09:00:00.100Z"));
    assert_eq!(db.value::<f64>("SELECT CAST(SUM(value) AS DOUBLE PRECISION) FROM pipeline", &[]), 1.5);
    assert_eq!(db.value::<i64>("SELECT CAST(SUM(id) AS BIGINT) FROM pipeline", &[]), id);

    // JSON columns: bound as text or as a value, read back as their text.
    let meeting: i64 = db.value(
        "INSERT INTO meetings (user_id, source, title, starts_at, ends_at, attendees, created_at, updated_at)
         VALUES (?1, 'manual', 'Call', '2026-11-23T10:00:00.000Z', '2026-11-23T11:00:00.000Z', ?2, ?3, ?3) RETURNING id",
        &[json!(uid), json!(r#"[{"email":"jane@example.com"}]"#), json!("2026-11-23T08:00:00.000Z")],
    );
    let (attendees, starts_at): (String, String) = db.row_as("SELECT attendees, starts_at FROM meetings WHERE id = ?1", &[json!(meeting)]);
    assert_eq!(serde_json::from_str::<Value>(&attendees).unwrap(), json!([{"email": "jane@example.com"}]));
    assert_eq!(starts_at, "2026-11-23T10:00:00.000Z");
    db.execute("UPDATE meetings SET attendees = ?2 WHERE id = ?1", &[json!(meeting), json!([{"email": "joe@example.com"}])]);
    let attendees: String = db.value("SELECT attendees FROM meetings WHERE id = ?1", &[json!(meeting)]);
    assert_eq!(serde_json::from_str::<Value>(&attendees).unwrap(), json!([{"email": "joe@example.com"}]));
    assert_eq!(db.value_opt::<i64>("SELECT id FROM meetings WHERE id = ?1", &[json!(meeting + 1000)]), None);
    assert_eq!(db.column::<String>("SELECT title FROM meetings ORDER BY id", &[]), vec!["Call".to_string()]);

    // A transaction of the test's own.
    db.batch("BEGIN");
    db.execute("DELETE FROM meetings WHERE id = ?1", &[json!(meeting)]);
    db.batch("ROLLBACK");
    assert_eq!(db.count("meetings"), 1);

    // The engine's place outlives a restart of the test's server.
    let engine = db.engine();
    drop(db);
    let (config, dir) = app.stop().await;
    assert_eq!(
        helpers::test_config(dir.path()).database.url.expose_secret(),
        config.database.url.expose_secret(),
        "one place per data folder"
    );
    let app = start(config, dir).await;
    assert_eq!(app.db().value::<String>("SELECT title FROM pipeline WHERE id = ?1", &[json!(id)]), "Plan");
    assert_eq!(helpers::schema_version(&app.db()), syncgate::store::migrations::latest_version());

    match engine {
        Engine::Sqlite => assert!(!helpers::on_postgres()),
        Engine::Postgres => {
            // The server's tables are in the test's own schema, not in `public`.
            let schema: String = app.db().value("SELECT current_schema()", &[]);
            assert!(schema.starts_with("sg_t_"), "{schema}");
            let tables: i64 = app.db().value(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ?1 AND table_name IN ('users', 'changes', 'meetings')",
                &[json!(schema)],
            );
            assert_eq!(tables, 3);
            let other = spawn_app().await;
            assert_ne!(other.db().value::<String>("SELECT current_schema()", &[]), schema, "each test's server has a place of its own");
            assert_eq!(other.db().count("users"), 0, "and it starts empty");
        }
    }
}
