//! The database file as a whole, for the `backup` and `check` commands:
//! SQLite's online backup (a consistent copy taken page by page while the
//! server runs) and its integrity check. These work on files, not on an open
//! [`Store`](super::Store): the commands run beside a server, or without one.
//!
//! They are SQLite's: a PostgreSQL database is backed up with its own tools
//! (pg_dump, the provider's backups), and `copy_database` says so rather than
//! copy a SQLite file that is not the data.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::error::StoreError;
use crate::config::DatabaseConfig;

/// Why `backup` refuses on PostgreSQL.
const PG_BACKUP_REFUSAL: &str =
    "on PostgreSQL, back up with pg_dump (or your provider's backups); syncgate backup copies SQLite files only";

/// Why a backup or a check could not be done.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{} already exists; choose a new file", .0.display())]
    TargetExists(PathBuf),
    #[error("there is no database at {}", .0.display())]
    NoDatabase(PathBuf),
    #[error("{0}")]
    OpenSource(String),
    #[error("cannot open {}: {cause}", .path.display())]
    Open { path: PathBuf, cause: String },
    #[error("cannot create {}: {cause}", .path.display())]
    Create { path: PathBuf, cause: String },
    #[error("cannot start the backup: {0}")]
    Start(String),
    #[error("the backup failed: {0}")]
    Copy(String),
    #[error("the copy in {} failed its integrity check: {verdict}", .path.display())]
    CopyDamaged { path: PathBuf, verdict: String },
    #[error("reading {}: {cause}", .path.display())]
    Read { path: PathBuf, cause: String },
    /// The operation does not apply to the configured database (PostgreSQL).
    #[error(transparent)]
    Refused(StoreError),
}

/// Copy the configured database to a new file `to` (created 0600: it holds
/// the same secrets), consistent as of the moment the copy finishes; returns
/// the copy's integrity check.
pub fn copy_database(db: &DatabaseConfig, to: &Path) -> Result<Integrity, BackupError> {
    if super::config_names_postgres(db) {
        return Err(BackupError::Refused(StoreError::Invalid(PG_BACKUP_REFUSAL.into())));
    }
    let src = super::open_connection(db).map_err(|e| BackupError::OpenSource(e.to_string()))?;
    let create = |cause: String| BackupError::Create { path: to.to_path_buf(), cause };
    super::files::create_private_file(to).map_err(|e| create(e.to_string()))?;
    let mut dst = Connection::open(to).map_err(|e| create(e.to_string()))?;
    let backup = rusqlite::backup::Backup::new(&src, &mut dst).map_err(|e| BackupError::Start(e.to_string()))?;
    backup.run_to_completion(256, std::time::Duration::from_millis(5), None).map_err(|e| BackupError::Copy(e.to_string()))?;
    drop(backup);
    check(&dst, to)
}

/// What SQLite's integrity check says of a database file, and its schema version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrity {
    /// The file's schema version.
    pub version: i64,
    /// The schema version this build migrates to.
    pub latest: i64,
    /// `["ok"]` when the file is sound, else one line per problem.
    pub problems: Vec<String>,
}

impl Integrity {
    pub fn is_ok(&self) -> bool {
        self.problems == ["ok"]
    }
}

/// Open the file at `path` read-only and run SQLite's integrity check.
pub fn integrity(path: &Path) -> Result<Integrity, BackupError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| BackupError::Open { path: path.to_path_buf(), cause: e.to_string() })?;
    check(&conn, path)
}

fn check(conn: &Connection, path: &Path) -> Result<Integrity, BackupError> {
    let read = |e: rusqlite::Error| BackupError::Read { path: path.to_path_buf(), cause: e.to_string() };
    let version = super::migrations::version(conn).map_err(read)?;
    let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(read)?;
    let problems: Vec<String> = stmt.query_map([], |r| r.get(0)).map_err(read)?.filter_map(Result::ok).collect();
    Ok(Integrity { version, latest: super::migrations::latest_version(), problems })
}
