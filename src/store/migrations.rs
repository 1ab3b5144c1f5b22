//! Numbered schema migrations embedded in the binary. Each runs in its own
//! transaction and bumps `PRAGMA user_version`, so an old data file upgrades
//! on start and a newer one is refused rather than misread.

use rusqlite::Connection;

/// In order; the schema version is the number of migrations applied.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_foundation", include_str!("migrations/0001_foundation.sql")),
    ("0002_booking_fields", include_str!("migrations/0002_booking_fields.sql")),
    ("0003_calendly", include_str!("migrations/0003_calendly.sql")),
    ("0004_google", include_str!("migrations/0004_google.sql")),
    ("0005_google_renewal", include_str!("migrations/0005_google_renewal.sql")),
    ("0006_google_calendars", include_str!("migrations/0006_google_calendars.sql")),
    ("0007_accounts", include_str!("migrations/0007_accounts.sql")),
    ("0008_calendly_rejections", include_str!("migrations/0008_calendly_rejections.sql")),
    ("0009_changes_by_user", include_str!("migrations/0009_changes_by_user.sql")),
    ("0010_seq_head", include_str!("migrations/0010_seq_head.sql")),
    ("0011_cluster", include_str!("migrations/0011_cluster.sql")),
    ("0012_microsoft", include_str!("migrations/0012_microsoft.sql")),
];

pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

pub(super) fn version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot read schema version: {0}")]
    Version(rusqlite::Error),
    /// A file written by a newer syncgate is refused rather than misread.
    #[error("the database has schema version {found}, newer than this syncgate knows ({known}); use a newer syncgate")]
    Newer { found: i64, known: i64 },
    #[error("migration {name} failed: {source}")]
    Failed { name: &'static str, source: rusqlite::Error },
    /// Opening, stamping or committing the migration's transaction failed.
    #[error("migration {name}: {source}")]
    Transaction { name: &'static str, source: rusqlite::Error },
}

/// Create (or bring) the database file at `path` to schema version `target`
/// and no further: the file an older syncgate left, for upgrade tests and
/// tools. Returns (from, to).
pub fn migrate_file_to(path: &std::path::Path, target: i64) -> Result<(i64, i64), MigrationError> {
    let mut conn = Connection::open(path).map_err(MigrationError::Version)?;
    migrate_to(&mut conn, target)
}

/// Apply every migration after the file's version. Returns (from, to).
pub(super) fn migrate(conn: &mut Connection) -> Result<(i64, i64), MigrationError> {
    migrate_to(conn, latest_version())
}

/// Apply migrations up to `target` (tests use this to build an old file).
pub(super) fn migrate_to(conn: &mut Connection, target: i64) -> Result<(i64, i64), MigrationError> {
    let from = version(conn).map_err(MigrationError::Version)?;
    if from > latest_version() {
        return Err(MigrationError::Newer { found: from, known: latest_version() });
    }
    for (i, &(name, sql)) in MIGRATIONS.iter().enumerate().take(target as usize).skip(from as usize) {
        let step = |source| MigrationError::Transaction { name, source };
        let tx = conn.transaction().map_err(step)?;
        tx.execute_batch(sql).map_err(|source| MigrationError::Failed { name, source })?;
        tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(step)?;
        tx.commit().map_err(step)?;
        tracing::info!(migration = name, version = i + 1, "applied migration");
    }
    Ok((from, version(conn).unwrap_or(target)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `schema.sql` at the top of the repository is the readable current
    /// schema; it must say exactly what the migrations build.
    #[test]
    fn schema_sql_matches_migrations() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let dumped = dump_schema(&conn);
        let file = include_str!("../../schema.sql");
        let mut from_file = Connection::open_in_memory().unwrap();
        from_file.execute_batch(file).unwrap();
        let _ = &mut from_file;
        assert_eq!(normalize(&dumped), normalize(&dump_schema(&from_file)), "schema.sql is out of date: regenerate it from the migrations");
    }

    fn dump_schema(conn: &Connection) -> String {
        let mut stmt =
            conn.prepare("SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name").unwrap();
        let mut out = String::new();
        let rows: Vec<(String, String, String)> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(|r| r.unwrap()).collect();
        for (ty, name, tbl) in rows {
            out.push_str(&format!("{ty} {name} on {tbl}\n"));
            if ty == "table" {
                let mut cols = conn.prepare(&format!("PRAGMA table_info(\"{name}\")")).unwrap();
                let c: Vec<String> = cols
                    .query_map([], |r| {
                        Ok(format!(
                            "  {} {} notnull={} default={:?} pk={}",
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, i64>(5)?
                        ))
                    })
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                let mut c = c;
                c.sort();
                out.push_str(&c.join("\n"));
                out.push('\n');
            }
        }
        out
    }

    fn normalize(s: &str) -> String {
        s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn an_old_file_upgrades() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 1).unwrap();
        assert_eq!(version(&conn).unwrap(), 1);
        let (from, to) = migrate(&mut conn).unwrap();
        assert_eq!((from, to), (1, latest_version()));
    }
}
