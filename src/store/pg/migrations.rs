//! PostgreSQL schema migrations: the numbered files in `pg/migrations/`, one
//! for each SQLite migration (same number, same name), tracked in the table
//! `syncgate_schema`, each in its own transaction, all under one session-level
//! advisory lock so that two nodes starting together apply each migration once.
//!
//! Each migration also records the oldest syncgate that can use a database
//! that has it. A binary refuses a database only when it is older than that
//! minimum — not merely because the database knows migrations it does not —
//! so a rolling deploy can migrate first and still run the previous binary.

use std::fmt;
use std::str::FromStr;

use tokio_postgres::Client;

use super::tls::ConnectError;
use super::url::PgUrl;

/// One numbered step of the PostgreSQL schema.
#[derive(Debug, Clone, Copy)]
pub struct PgMigration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
    /// The oldest syncgate that can use a database with this migration: the
    /// crate version when the migration was written, unless the change is
    /// one older binaries can live with. Never lowered once released.
    pub min_binary_version: &'static str,
}

/// The crate version that wrote migrations 0001–0009 (all of them additive
/// for the binaries of their time; the first PostgreSQL-capable syncgate).
const V0_1_0: &str = "0.1.0";

/// In order; the numbers and names match `store::migrations::MIGRATIONS`.
pub const MIGRATIONS: &[PgMigration] = &[
    PgMigration { version: 1, name: "0001_foundation", sql: include_str!("migrations/0001_foundation.sql"), min_binary_version: V0_1_0 },
    PgMigration {
        version: 2,
        name: "0002_booking_fields",
        sql: include_str!("migrations/0002_booking_fields.sql"),
        min_binary_version: V0_1_0,
    },
    PgMigration { version: 3, name: "0003_calendly", sql: include_str!("migrations/0003_calendly.sql"), min_binary_version: V0_1_0 },
    PgMigration { version: 4, name: "0004_google", sql: include_str!("migrations/0004_google.sql"), min_binary_version: V0_1_0 },
    PgMigration {
        version: 5,
        name: "0005_google_renewal",
        sql: include_str!("migrations/0005_google_renewal.sql"),
        min_binary_version: V0_1_0,
    },
    PgMigration {
        version: 6,
        name: "0006_google_calendars",
        sql: include_str!("migrations/0006_google_calendars.sql"),
        min_binary_version: V0_1_0,
    },
    PgMigration { version: 7, name: "0007_accounts", sql: include_str!("migrations/0007_accounts.sql"), min_binary_version: V0_1_0 },
    PgMigration {
        version: 8,
        name: "0008_calendly_rejections",
        sql: include_str!("migrations/0008_calendly_rejections.sql"),
        min_binary_version: V0_1_0,
    },
    PgMigration {
        version: 9,
        name: "0009_changes_by_user",
        sql: include_str!("migrations/0009_changes_by_user.sql"),
        min_binary_version: V0_1_0,
    },
    PgMigration { version: 10, name: "0010_seq_head", sql: include_str!("migrations/0010_seq_head.sql"), min_binary_version: V0_1_0 },
    PgMigration { version: 11, name: "0011_cluster", sql: include_str!("migrations/0011_cluster.sql"), min_binary_version: V0_1_0 },
    PgMigration { version: 12, name: "0012_microsoft", sql: include_str!("migrations/0012_microsoft.sql"), min_binary_version: V0_1_0 },
];

pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The key of the advisory lock migrations run under ("syncgate" in ASCII).
/// Advisory locks are per database, so any fixed number no other program
/// on the same database uses will do.
const MIGRATION_LOCK: i64 = 0x7379_6e63_6761_7465;

/// Created under the lock: `CREATE TABLE IF NOT EXISTS` is not safe against a
/// concurrent creator on its own (both may pass the check; one then fails).
const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS syncgate_schema (
    version            integer PRIMARY KEY,
    name               text NOT NULL,
    min_binary_version text NOT NULL,
    applied_at         timestamptz NOT NULL DEFAULT now()
)";

/// A syncgate release number, `major.minor.patch`, compared as numbers. A
/// pre-release suffix (`-rc1`) is ignored: it counts as its release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BinaryVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl BinaryVersion {
    /// This binary's version, from Cargo.toml.
    pub fn this_binary() -> BinaryVersion {
        env!("CARGO_PKG_VERSION").parse().unwrap_or(BinaryVersion { major: 0, minor: 0, patch: 0 })
    }
}

/// A text that is not `major.minor.patch`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a version number like 1.2.3")]
pub struct NotAVersion(pub String);

impl FromStr for BinaryVersion {
    type Err = NotAVersion;
    fn from_str(text: &str) -> Result<BinaryVersion, NotAVersion> {
        let bad = || NotAVersion(text.to_string());
        let release = text.trim().split(['-', '+']).next().unwrap_or_default();
        let mut parts = release.split('.').map(|p| p.parse::<u64>().map_err(|_| bad()));
        let version = BinaryVersion {
            major: parts.next().ok_or_else(bad)??,
            minor: parts.next().ok_or_else(bad)??,
            patch: parts.next().ok_or_else(bad)??,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(version)
    }
}

impl fmt::Display for BinaryVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What the database says about its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSchema {
    /// The highest migration applied (0 for an empty database).
    pub version: i32,
    /// The oldest syncgate that can use it: the highest minimum of its migrations.
    pub min_binary_version: Option<BinaryVersion>,
}

/// A database this binary is too old for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the database {url} has schema version {schema_version}, which needs syncgate {required} or newer; \
     this is syncgate {this}: start a newer syncgate on this database"
)]
pub struct IncompatibleDatabase {
    /// Redacted (no password).
    pub url: String,
    pub schema_version: i32,
    pub required: BinaryVersion,
    pub this: BinaryVersion,
}

/// Why the PostgreSQL schema could not be checked or brought up to date. The
/// URL in every sentence is the redacted one.
#[derive(Debug, thiserror::Error)]
pub enum PgMigrationError {
    #[error("cannot connect to the database {url}: {}", why(.source))]
    Connect { url: String, source: tokio_postgres::Error },
    #[error("cannot set up TLS for the database {url}: {reason}")]
    Tls { url: String, reason: String },
    #[error("cannot take the migration lock on the database {url}: {}", why(.source))]
    Lock { url: String, source: tokio_postgres::Error },
    #[error("cannot read the schema version of the database {url}: {}", why(.source))]
    Version { url: String, source: tokio_postgres::Error },
    #[error("the database {url} records migration {version} as needing syncgate {text:?}, which is not a version number")]
    BadMinimum { url: String, version: i32, text: String },
    #[error(transparent)]
    Incompatible(#[from] IncompatibleDatabase),
    #[error("migration {name} failed on the database {url}: {}", why(.source))]
    Failed { name: &'static str, url: String, source: tokio_postgres::Error },
}

/// What went wrong, in full: tokio-postgres's own `Display` says only "db
/// error" for an error the server reported, and keeps the server's sentence
/// (which never holds a password) in the error's source.
fn why(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// What one run of [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The schema version before and after.
    pub from: i32,
    pub to: i32,
    /// The migrations this run applied (another node may have applied others).
    pub applied: Vec<&'static str>,
}

/// Bring the database to the latest schema this binary knows.
pub async fn migrate(url: &PgUrl) -> Result<Migrated, PgMigrationError> {
    migrate_to(url, latest_version()).await
}

/// Apply this binary's migrations up to `target` that the database lacks,
/// after checking the binary is not too old for the database. Runs on a
/// connection of its own, not a pooled one: the session-level lock is then
/// released with the connection whatever happens, never handed on to a pool.
pub async fn migrate_to(url: &PgUrl, target: i32) -> Result<Migrated, PgMigrationError> {
    let shown = url.to_string();
    let mut client = connect(url).await?;
    let lock = |source| PgMigrationError::Lock { url: shown.clone(), source };
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(lock)?;
    let outcome = migrate_locked(&mut client, &shown, target).await;
    // Dropping the connection releases the lock too; unlocking first lets the
    // next node go on without waiting for the connection to close.
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    let migrated = outcome?;
    unlocked.map_err(lock)?;
    Ok(migrated)
}

async fn migrate_locked(client: &mut Client, shown: &str, target: i32) -> Result<Migrated, PgMigrationError> {
    let version = |source| PgMigrationError::Version { url: shown.to_string(), source };
    client.batch_execute(SCHEMA_TABLE).await.map_err(version)?;
    let before = read_schema(client, shown).await?;
    let applied_versions: Vec<i32> =
        client.query("SELECT version FROM syncgate_schema", &[]).await.map_err(version)?.iter().map(|r| r.get(0)).collect();
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version <= target && !applied_versions.contains(&m.version)) {
        let failed = |source| PgMigrationError::Failed { name: m.name, url: shown.to_string(), source };
        let tx = client.transaction().await.map_err(failed)?;
        tx.batch_execute(m.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO syncgate_schema (version, name, min_binary_version) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &m.min_binary_version],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(migration = m.name, version = m.version, database = %shown, "applied PostgreSQL migration");
        applied.push(m.name);
    }
    let after = read_schema(client, shown).await?;
    Ok(Migrated { from: before.version, to: after.version, applied })
}

/// Refuse the database if this binary is older than the oldest syncgate its
/// schema allows; otherwise say what the schema is. Does not migrate.
pub async fn check_compatible(url: &PgUrl) -> Result<DatabaseSchema, PgMigrationError> {
    let shown = url.to_string();
    let client = connect(url).await?;
    read_schema(&client, &shown).await
}

/// Whether a binary of version `this` can use a database that needs `required`.
pub fn can_use(this: BinaryVersion, required: Option<BinaryVersion>) -> bool {
    required.is_none_or(|r| this >= r)
}

/// The schema version and minimum binary, refusing a database this binary is too old for.
async fn read_schema(client: &Client, shown: &str) -> Result<DatabaseSchema, PgMigrationError> {
    let version = |source| PgMigrationError::Version { url: shown.to_string(), source };
    let exists: bool = client.query_one("SELECT to_regclass('syncgate_schema') IS NOT NULL", &[]).await.map_err(version)?.get(0);
    if !exists {
        return Ok(DatabaseSchema { version: 0, min_binary_version: None });
    }
    let rows = client.query("SELECT version, min_binary_version FROM syncgate_schema", &[]).await.map_err(version)?;
    let mut schema = DatabaseSchema { version: 0, min_binary_version: None };
    for row in rows {
        let (v, text): (i32, String) = (row.get(0), row.get(1));
        let min = text.parse::<BinaryVersion>().map_err(|_| PgMigrationError::BadMinimum { url: shown.to_string(), version: v, text })?;
        schema.version = schema.version.max(v);
        schema.min_binary_version = schema.min_binary_version.max(Some(min));
    }
    let this = BinaryVersion::this_binary();
    if !can_use(this, schema.min_binary_version) {
        let required = schema.min_binary_version.unwrap_or(this);
        return Err(IncompatibleDatabase { url: shown.to_string(), schema_version: schema.version, required, this }.into());
    }
    Ok(schema)
}

/// A connection of its own, driven on a task until the client is dropped,
/// encrypted and verified as the pool's connections (`tls`).
async fn connect(url: &PgUrl) -> Result<Client, PgMigrationError> {
    super::tls::connect(url).await.map_err(|e| match e {
        ConnectError::Connect(source) => PgMigrationError::Connect { url: url.to_string(), source },
        ConnectError::Tls(reason) => PgMigrationError::Tls { url: url.to_string(), reason: reason.to_string() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every migration exists for both engines, under the same number and name.
    #[test]
    fn every_sqlite_migration_has_its_postgresql_twin() {
        let sqlite: Vec<&str> = crate::store::migrations::MIGRATIONS.iter().map(|(name, _)| *name).collect();
        let pg: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(sqlite, pg);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{} is out of order", m.name);
            assert!(m.name.starts_with(&format!("{:04}_", m.version)), "{} does not start with its number", m.name);
            m.min_binary_version.parse::<BinaryVersion>().unwrap();
        }
        assert_eq!(latest_version() as i64, crate::store::migrations::latest_version());
    }

    /// Invariant 8, read from the files: no cascades, no triggers.
    #[test]
    fn no_migration_hides_a_write() {
        for m in MIGRATIONS {
            let sql = m.sql.to_ascii_uppercase();
            for forbidden in ["ON DELETE", "ON UPDATE", "CREATE TRIGGER", "CREATE RULE"] {
                let code: String = sql.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
                assert!(!code.contains(forbidden), "{} uses {forbidden}", m.name);
            }
        }
    }

    #[test]
    fn versions_compare_as_numbers() {
        let v = |s: &str| s.parse::<BinaryVersion>().unwrap();
        assert!(v("0.10.0") > v("0.9.3"));
        assert_eq!(v("1.2.3-rc1"), v("1.2.3"));
        assert!("1.2".parse::<BinaryVersion>().is_err());
        assert!("1.2.3.4".parse::<BinaryVersion>().is_err());
        assert!("one".parse::<BinaryVersion>().is_err());
        assert_eq!(BinaryVersion::this_binary().to_string(), env!("CARGO_PKG_VERSION"));
    }

    /// Only a binary older than the database's minimum is refused: a newer
    /// schema whose migrations older binaries can live with is used as is.
    #[test]
    fn only_an_older_binary_is_refused() {
        let v = |s: &str| s.parse::<BinaryVersion>().unwrap();
        assert!(can_use(v("0.1.0"), None));
        assert!(can_use(v("0.1.0"), Some(v("0.1.0"))));
        assert!(can_use(v("0.2.0"), Some(v("0.1.0"))));
        assert!(!can_use(v("0.1.0"), Some(v("0.2.0"))));
        let e =
            IncompatibleDatabase { url: "postgres://sg:***@db:5432/sg".into(), schema_version: 12, required: v("0.3.0"), this: v("0.2.1") };
        assert_eq!(
            e.to_string(),
            "the database postgres://sg:***@db:5432/sg has schema version 12, which needs syncgate 0.3.0 or newer; \
             this is syncgate 0.2.1: start a newer syncgate on this database"
        );
    }
}
