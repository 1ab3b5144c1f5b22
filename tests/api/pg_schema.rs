//! The PostgreSQL schema against the SQLite one, and the PostgreSQL migration
//! runner: idempotent, applied once under concurrency, refusing a database
//! only when this binary is older than the database allows. Each test that
//! needs PostgreSQL has a database of its own (`pg_database`).

use syncgate::store::migrations::{latest_version, migrate_file_to};
use syncgate::store::pg::migrations::{self as pg_migrations, MIGRATIONS};
use syncgate::store::pg::{PgMigrationError, PgUrl};
use syncgate::store::Table;

use crate::pg_database::PgDatabase;
use crate::schema_shape;

async fn migrated(test: &str) -> Option<(PgDatabase, PgUrl)> {
    let db = PgDatabase::create(test).await?;
    let url = PgUrl::parse(&db.url).unwrap();
    pg_migrations::migrate(&url).await.unwrap();
    Some((db, url))
}

async fn recorded_versions(client: &tokio_postgres::Client) -> Vec<i32> {
    client.query("SELECT version FROM syncgate_schema ORDER BY version", &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn postgresql_schema_matches_sqlite() {
    let Some((db, _url)) = migrated("postgresql_schema_matches_sqlite").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("syncgate.db");
    migrate_file_to(&file, latest_version()).unwrap();

    let sqlite = schema_shape::from_sqlite(&file);
    let client = db.connect().await;
    let postgres = schema_shape::from_postgres(&client).await;
    let differences = schema_shape::differences("SQLite", &sqlite, "PostgreSQL", &postgres);
    assert!(differences.is_empty(), "the engines' schemas differ:\n{}", differences.join("\n"));
    assert!(postgres.len() >= 15, "too few tables read: {:?}", postgres.keys());

    // The realtime protocol reports PostgreSQL type names for the synced
    // tables' columns (store/tables.rs); on PostgreSQL they are the real ones.
    for table in [Table::Clients, Table::Meetings, Table::Pipeline, Table::Users] {
        for (column, pg_type) in table.columns() {
            let row = client
                .query_one(
                    "SELECT udt_name::text FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2",
                    &[&table.name(), column],
                )
                .await
                .unwrap_or_else(|e| panic!("{}.{column}: {e}", table.name()));
            assert_eq!(row.get::<_, String>(0), pg_type.name(), "{}.{column}", table.name());
        }
    }

    // Invariant 8: nothing writes behind the writer's back.
    let triggers: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND NOT t.tgisinternal",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(triggers, 0, "triggers on syncgate's tables");
    for (table, shape) in &postgres {
        for fk in &shape.foreign_keys {
            assert_eq!(fk.on_delete, "NO ACTION", "{table}: {fk:?}");
        }
    }
}

#[tokio::test]
async fn migrations_run_twice_are_a_no_op() {
    let Some((db, url)) = migrated("migrations_run_twice_are_a_no_op").await else { return };
    let client = db.connect().await;
    let before = schema_shape::from_postgres(&client).await;
    let again = pg_migrations::migrate(&url).await.unwrap();
    assert_eq!((again.from, again.to), (pg_migrations::latest_version(), pg_migrations::latest_version()));
    assert!(again.applied.is_empty(), "applied again: {:?}", again.applied);
    assert_eq!(schema_shape::from_postgres(&client).await, before);
    assert_eq!(recorded_versions(&client).await, (1..=pg_migrations::latest_version()).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_old_database_upgrades() {
    let Some(db) = PgDatabase::create("an_old_database_upgrades").await else { return };
    let url = PgUrl::parse(&db.url).unwrap();
    let first = pg_migrations::migrate_to(&url, 5).await.unwrap();
    assert_eq!((first.from, first.to, first.applied.len()), (0, 5, 5));
    let rest = pg_migrations::migrate(&url).await.unwrap();
    assert_eq!((rest.from, rest.to), (5, pg_migrations::latest_version()));
    assert_eq!(rest.applied, MIGRATIONS[5..].iter().map(|m| m.name).collect::<Vec<_>>());
}

/// A migration that fails leaves nothing of itself, is not recorded, and the
/// error carries the server's own sentence.
#[tokio::test]
async fn a_failing_migration_rolls_back_and_says_why() {
    let Some(db) = PgDatabase::create("a_failing_migration_rolls_back_and_says_why").await else { return };
    let client = db.connect().await;
    client.batch_execute("CREATE TABLE changes (seq bigint)").await.unwrap();
    let url = PgUrl::parse(&db.url).unwrap();
    let e = pg_migrations::migrate(&url).await.unwrap_err();
    assert!(matches!(e, PgMigrationError::Failed { name: "0001_foundation", .. }), "{e}");
    assert!(e.to_string().contains(r#"relation "changes" already exists"#), "{e}");
    assert!(recorded_versions(&client).await.is_empty());
    let users: Option<String> = client.query_one("SELECT to_regclass('users')::text", &[]).await.unwrap().get(0);
    assert_eq!(users, None, "0001 rolled back whole");
}

/// Nodes starting together: each migration is applied by exactly one runner
/// (the others wait on the lock, then find it done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runners_apply_each_migration_once() {
    let Some(db) = PgDatabase::create("concurrent_runners_apply_each_migration_once").await else { return };
    let url = PgUrl::parse(&db.url).unwrap();
    let runners: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { pg_migrations::migrate(&url).await })
        })
        .collect();
    let mut applied = Vec::new();
    for runner in runners {
        let migrated = runner.await.unwrap().unwrap_or_else(|e| panic!("a concurrent runner failed: {e}"));
        assert_eq!(migrated.to, pg_migrations::latest_version());
        applied.extend(migrated.applied);
    }
    applied.sort();
    assert_eq!(applied, MIGRATIONS.iter().map(|m| m.name).collect::<Vec<_>>(), "each migration applied exactly once");
    assert_eq!(recorded_versions(&db.connect().await).await, (1..=pg_migrations::latest_version()).collect::<Vec<_>>());
}

/// A database whose migrations need a newer syncgate is refused with a
/// sentence, before anything is applied; one that is merely newer is used.
#[tokio::test]
async fn a_binary_older_than_the_database_allows_is_refused() {
    let Some((db, url)) = migrated("a_binary_older_than_the_database_allows_is_refused").await else { return };
    let client = db.connect().await;
    // A later migration, written by a newer syncgate that older binaries can live with.
    client
        .execute("INSERT INTO syncgate_schema (version, name, min_binary_version) VALUES (99, '0099_additive', '0.1.0')", &[])
        .await
        .unwrap();
    let schema = pg_migrations::check_compatible(&url).await.unwrap();
    assert_eq!(schema.version, 99);
    assert!(pg_migrations::migrate(&url).await.unwrap().applied.is_empty());

    // A later migration this binary cannot live with.
    client
        .execute("INSERT INTO syncgate_schema (version, name, min_binary_version) VALUES (100, '0100_breaking', '999.0.0')", &[])
        .await
        .unwrap();
    let this = env!("CARGO_PKG_VERSION");
    let expected = format!(
        "the database {} has schema version 100, which needs syncgate 999.0.0 or newer; this is syncgate {this}: start a newer syncgate on this database",
        url
    );
    for refused in [pg_migrations::check_compatible(&url).await.map(|_| ()), pg_migrations::migrate(&url).await.map(|_| ())] {
        match refused {
            Err(e @ PgMigrationError::Incompatible(_)) => assert_eq!(e.to_string(), expected),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

const AT: &str = "'2026-12-01T09:00:00.000Z'";

/// Runs one statement on either engine; true when it was refused by a unique key.
enum Engine<'a> {
    Sqlite(&'a rusqlite::Connection),
    Postgres(&'a tokio_postgres::Client),
}

impl Engine<'_> {
    async fn insert(&self, sql: &str) -> Result<(), &'static str> {
        match self {
            Engine::Sqlite(conn) => match conn.execute(sql, []) {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE => Err("unique"),
                Err(e) => panic!("SQLite: {sql}: {e}"),
            },
            Engine::Postgres(client) => match client.execute(sql, &[]).await {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => Err("unique"),
                Err(e) => panic!("PostgreSQL: {sql}: {e}"),
            },
        }
    }
}

/// The same statements on both engines: emails are unique whatever their case,
/// for users and for one adviser's clients; a missing email is not a duplicate.
async fn email_uniqueness(engine: Engine<'_>) {
    let user = |id: i64, email: &str| format!("INSERT INTO users (id, email, created_at, updated_at) VALUES ({id}, '{email}', {AT}, {AT})");
    let client = |user_id: i64, email: &str| {
        let email = if email == "NULL" { "NULL".to_string() } else { format!("'{email}'") };
        format!("INSERT INTO clients (user_id, name, email, created_at, updated_at) VALUES ({user_id}, 'Ann', {email}, {AT}, {AT})")
    };
    assert_eq!(engine.insert(&user(1, "Ann@Example.com")).await, Ok(()));
    assert_eq!(engine.insert(&user(2, "ann@EXAMPLE.COM")).await, Err("unique"));
    assert_eq!(engine.insert(&user(3, "bob@example.com")).await, Ok(()));
    assert_eq!(engine.insert(&client(1, "Client@Example.com")).await, Ok(()));
    assert_eq!(engine.insert(&client(1, "client@example.COM")).await, Err("unique"));
    assert_eq!(engine.insert(&client(3, "client@example.com")).await, Ok(()), "another adviser's client");
    assert_eq!(engine.insert(&client(1, "NULL")).await, Ok(()));
    assert_eq!(engine.insert(&client(1, "NULL")).await, Ok(()), "clients without an email");
}

#[tokio::test]
async fn emails_are_unique_case_insensitively_on_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("syncgate.db");
    migrate_file_to(&file, latest_version()).unwrap();
    let conn = rusqlite::Connection::open(&file).unwrap();
    email_uniqueness(Engine::Sqlite(&conn)).await;

    let Some((db, _url)) = migrated("emails_are_unique_case_insensitively_on_both_engines").await else { return };
    let client = db.connect().await;
    email_uniqueness(Engine::Postgres(&client)).await;
}

/// No PostgreSQL needed: a refused connection names the database without its password.
#[tokio::test]
async fn a_refused_connection_never_shows_the_password() {
    let url = PgUrl::parse("postgres://syncgate:hunter2@127.0.0.1:1/syncgate").unwrap();
    let e = pg_migrations::migrate(&url).await.unwrap_err();
    let shown = format!("{e} / {e:?}");
    assert!(matches!(e, PgMigrationError::Connect { .. }), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("postgres://syncgate:***@127.0.0.1:1/syncgate"), "{shown}");
    assert!(e.to_string().contains("refused"), "the sentence says why: {e}");
}
