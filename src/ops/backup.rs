//! The `backup` and `check` commands: a consistent copy of the database taken
//! while the server runs (never over an existing file, and only kept when the
//! copy checks out), and the schema version with SQLite's integrity verdict.

use std::path::Path;

use crate::config::DatabaseConfig;
use crate::store::backup::{self, BackupError, Integrity};

/// Copy the database to `to`, a file that must not exist yet.
pub fn backup(db: &DatabaseConfig, to: &Path) -> Result<(), BackupError> {
    if to.exists() {
        return Err(BackupError::TargetExists(to.to_path_buf()));
    }
    let copy = backup::copy_database(db, to)?;
    match copy.problems.first().map(String::as_str) {
        Some("ok") => Ok(()),
        other => Err(BackupError::CopyDamaged { path: to.to_path_buf(), verdict: other.unwrap_or_default().to_string() }),
    }
}

/// The database's schema version and integrity; `Integrity::is_ok` says
/// whether the file is sound.
pub fn check(db: &DatabaseConfig) -> Result<Integrity, BackupError> {
    let path = Path::new(&db.path);
    if !path.exists() {
        return Err(BackupError::NoDatabase(path.to_path_buf()));
    }
    backup::integrity(path)
}

impl Integrity {
    /// What `check` prints: the version line, then `integrity ok` or each problem.
    pub fn report(&self) -> Vec<String> {
        let mut lines = vec![format!("schema version {} (this syncgate: {})", self.version, self.latest)];
        if self.is_ok() {
            lines.push("integrity ok".into());
        } else {
            lines.extend(self.problems.iter().cloned());
        }
        lines
    }
}
