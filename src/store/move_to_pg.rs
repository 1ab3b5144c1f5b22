//! `syncgate move-to-postgres`: copy a team's SQLite file into an empty
//! PostgreSQL database, every row with its id — the change log with its
//! seqs, so browsers resume across the move without a gap — then move every
//! identity past the copied ids, and check the counts match.
//!
//! The copy holds the SQLite file's write lock from start to end (a server
//! still writing would make the copy stale the moment it finished), and is
//! one PostgreSQL transaction (a failed move leaves the target empty).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::error::StoreError;
use super::pg::{self, PgUrl};
use super::sql::{args, Conn, Row, ToSqlValue};
use crate::config::DatabaseConfig;

/// Every table syncgate keeps, parents before the tables that refer to
/// them. A unit test fails when a migration adds a table missing here.
pub const TABLES: &[&str] = &[
    "users",
    "login_links",
    "clients",
    "meetings",
    "pipeline",
    "calendar_watch_channels",
    "calendly_webhook_events",
    "changes",
    "calendly_signing_keys",
    "calendly_invitees",
    "google_oauth_states",
    "google_sync_status",
    "google_calendars",
    "google_event_links",
    "audit_log",
    "calendly_rejections",
    "seq_head",
    "microsoft_accounts",
    "microsoft_calendars",
    "microsoft_sync_status",
];

/// Tables that describe running nodes (their registry and leases), not
/// data: the PostgreSQL nodes fill them when they start.
pub const NOT_MOVED: &[&str] = &["cluster_nodes", "cluster_leases"];

/// Rows per INSERT statement.
const CHUNK: usize = 200;

/// What was moved: each table's row count, equal on both sides.
#[derive(Debug, Clone)]
pub struct Moved {
    pub tables: Vec<(&'static str, i64)>,
    /// The change log's head, now PostgreSQL's.
    pub seq_head: i64,
}

/// Why the move did not happen. Never shows the database password.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("there is no SQLite database at {}", .0.display())]
    NoSource(PathBuf),
    #[error(transparent)]
    Open(#[from] super::OpenError),
    #[error("cannot open {}: {error}", path.display())]
    Source { path: PathBuf, error: rusqlite::Error },
    #[error("another process is writing to {}: stop the server first (the move takes the file's write lock for the whole copy)", .0.display())]
    Busy(PathBuf),
    #[error(transparent)]
    Url(#[from] pg::PgUrlError),
    #[error(transparent)]
    Migration(#[from] pg::PgMigrationError),
    #[error("the PostgreSQL database {url} is not empty ({table} has {rows} rows): move into an empty database only")]
    NotEmpty { url: String, table: &'static str, rows: i64 },
    #[error("copying {table}: {error}")]
    Copy { table: &'static str, error: StoreError },
    #[error("after the copy {table} has {on_postgres} rows on PostgreSQL but {on_sqlite} on SQLite; nothing was committed")]
    Mismatch { table: &'static str, on_sqlite: i64, on_postgres: i64 },
    #[error("PostgreSQL at {url}: {error}")]
    Target { url: String, error: StoreError },
}

/// Copy the SQLite database of `sqlite` into the empty PostgreSQL database at `url`.
pub fn move_to_postgres(sqlite: &DatabaseConfig, url: &str) -> Result<Moved, MoveError> {
    pg::conn::blocking_anywhere(|| move_blocking(sqlite, url))
}

fn move_blocking(sqlite: &DatabaseConfig, url: &str) -> Result<Moved, MoveError> {
    let url = PgUrl::parse(url)?;
    let path = Path::new(&sqlite.path).to_path_buf();
    if !path.exists() {
        return Err(MoveError::NoSource(path));
    }
    // Bring the file to this binary's schema first (as `serve` would), so
    // its tables and columns are the ones PostgreSQL's migrations make.
    drop(super::open_connection(sqlite)?);
    let source = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|error| MoveError::Source { path: path.clone(), error })?;
    source.busy_timeout(Duration::ZERO).map_err(|error| MoveError::Source { path: path.clone(), error })?;
    match source.execute_batch("BEGIN IMMEDIATE") {
        Ok(()) => {}
        Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DatabaseBusy => return Err(MoveError::Busy(path)),
        Err(error) => return Err(MoveError::Source { path, error }),
    }
    let moved = copy(&Conn::Sqlite(&source), &url, sqlite.connect_timeout.0);
    // Read only: nothing to keep; ending the transaction releases the lock.
    let _ = source.execute_batch("ROLLBACK");
    moved
}

fn copy(source: &Conn<'_>, url: &PgUrl, timeout: Duration) -> Result<Moved, MoveError> {
    let shown = url.to_string();
    let target_error = |error: StoreError| MoveError::Target { url: shown.clone(), error };
    pg::conn::block_on(pg::migrations::migrate(url))?;
    let pool = pg::conn::pool(url, 1, timeout).map_err(target_error)?;
    let client = pg::conn::get(&pool).map_err(target_error)?;
    let target = Conn::Pg(pg::conn::PgConn::new(&client));
    for &table in TABLES.iter().filter(|t| **t != "seq_head") {
        let rows: i64 = target.value(&format!("SELECT COUNT(*) FROM {table}"), args![]).map_err(target_error)?;
        if rows > 0 {
            return Err(MoveError::NotEmpty { url: shown, table, rows });
        }
    }
    let head: i64 = target.value("SELECT seq FROM seq_head WHERE id = 1", args![]).map_err(target_error)?;
    if head > 0 {
        return Err(MoveError::NotEmpty { url: shown, table: "seq_head", rows: 1 });
    }
    target.batch("BEGIN").map_err(target_error)?;
    let copied = copy_tables(source, &target);
    let outcome = copied.and_then(|moved| {
        target.batch("COMMIT").map_err(target_error)?;
        Ok(moved)
    });
    if outcome.is_err() {
        let _ = target.batch("ROLLBACK");
    }
    outcome
}

fn copy_tables(source: &Conn<'_>, target: &Conn<'_>) -> Result<Moved, MoveError> {
    let mut counts = Vec::with_capacity(TABLES.len());
    for &table in TABLES {
        let failed = |error: StoreError| MoveError::Copy { table, error };
        let columns: Vec<String> =
            source.query_map(&format!("SELECT name FROM pragma_table_info('{table}')"), args![], |r| r.get(0)).map_err(failed)?;
        let list = columns.join(", ");
        if table == "seq_head" {
            let seq: i64 = source.value("SELECT seq FROM seq_head WHERE id = 1", args![]).map_err(failed)?;
            target.execute("UPDATE seq_head SET seq = ?1 WHERE id = 1", args![seq]).map_err(failed)?;
            counts.push((table, 1));
            continue;
        }
        // Keyset pages by rowid: the file may hold more rows than fit in memory.
        let mut after = i64::MIN;
        loop {
            let page = source
                .query(&format!("SELECT rowid, {list} FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT {CHUNK}"), args![after])
                .map_err(failed)?;
            let Some(last) = page.last() else { break };
            after = last.get(0).map_err(failed)?;
            insert_rows(target, table, &columns, &page).map_err(failed)?;
            if page.len() < CHUNK {
                break;
            }
        }
        let on_source: i64 = source.value(&format!("SELECT COUNT(*) FROM {table}"), args![]).map_err(failed)?;
        let on_target: i64 = target.value(&format!("SELECT COUNT(*) FROM {table}"), args![]).map_err(failed)?;
        if on_source != on_target {
            return Err(MoveError::Mismatch { table, on_sqlite: on_source, on_postgres: on_target });
        }
        counts.push((table, on_target));
    }
    // New rows must not collide with copied ids: every identity starts past them.
    let identities: Vec<(String, String)> = target
        .query_map(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND is_identity = 'YES'",
            args![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|error| MoveError::Copy { table: "identities", error })?;
    for (table, column) in identities {
        target
            .value::<i64>(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), (SELECT COALESCE(MAX({column}), 0) + 1 FROM {table}), false)"
                ),
                args![],
            )
            .map_err(|error| MoveError::Copy { table: "identities", error })?;
    }
    let seq_head =
        target.value("SELECT seq FROM seq_head WHERE id = 1", args![]).map_err(|error| MoveError::Copy { table: "seq_head", error })?;
    Ok(Moved { tables: counts, seq_head })
}

/// Insert `rows` (rowid first, then `columns`) in one statement.
fn insert_rows(target: &Conn<'_>, table: &str, columns: &[String], rows: &[Row]) -> Result<(), StoreError> {
    let width = columns.len();
    let tuples: Vec<String> = (0..rows.len())
        .map(|r| format!("({})", (1..=width).map(|c| format!("?{}", r * width + c)).collect::<Vec<_>>().join(", ")))
        .collect();
    let sql = format!("INSERT INTO {table} ({}) VALUES {}", columns.join(", "), tuples.join(", "));
    let values: Vec<&dyn ToSqlValue> = rows.iter().flat_map(|r| (1..=width).map(move |c| r.value(c) as &dyn ToSqlValue)).collect();
    target.execute(&sql, &values).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table a migration adds must be moved too (or be said not to be).
    #[test]
    fn every_table_is_moved() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut conn).unwrap();
        let mut tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let mut listed: Vec<String> = TABLES.iter().chain(NOT_MOVED).map(|t| t.to_string()).collect();
        tables.sort();
        listed.sort();
        assert_eq!(tables, listed);
    }
}
