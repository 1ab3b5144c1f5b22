//! Storage: the SQLite file, its migrations, a pool of read connections and
//! the single `writer::Writer`. All SQL lives under this module's children;
//! [`pg`] holds what exists of the PostgreSQL engine so far (its migrations).

pub mod accounts;
pub mod alerts;
pub mod backup;
pub mod bookings;
pub mod calendly;
pub mod change_log;
pub mod changes;
pub mod error;
pub mod google;
pub mod google_accounts;
pub mod google_status;
pub mod google_sync;
pub mod health;
pub mod login_links;
pub mod migrations;
pub mod pg;
pub mod records;
pub mod rejections;
pub mod retention;
pub mod rows;
pub mod snapshot;
pub mod stats;
pub mod tables;
pub mod timefmt;
pub mod users;
pub mod watch_channels;
pub mod writer;

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;

use crate::config::{files, DatabaseConfig};
pub use changes::{Change, ChangeBatch, Op};
pub use error::{StoreError, StoreResult};
pub use migrations::MigrationError;
pub use tables::{PgType, Table};
pub use writer::{LogHead, WriterStats};
use writer::{WriteTx, Writer};

type Pool = r2d2::Pool<SqliteConnectionManager>;

/// Handles to the database: cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    writer: Writer,
    /// Opens read-only connections outside the pool, for snapshots that hold
    /// a read transaction while a client takes the rows (see `snapshot`).
    readers: std::sync::Arc<SqliteConnectionManager>,
}

/// What `Store::open` hands to the server besides the store itself.
pub struct Opened {
    pub store: Store,
    /// Batches of committed changes, in seq order, for the realtime hub.
    pub feed: mpsc::UnboundedReceiver<ChangeBatch>,
    pub writer_thread: JoinHandle<()>,
}

fn pragmas(conn: &Connection, synchronous: &str) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    Ok(())
}

/// Why the database could not be opened, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the data folder {}: {source}", dir.display())]
    DataFolder { dir: PathBuf, source: std::io::Error },
    #[error("cannot create the database {}: {source}", path.display())]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot open the database {}: {source}", path.display())]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot switch {} to WAL: {source}", path.display())]
    Wal { path: PathBuf, source: rusqlite::Error },
    #[error("{0}")]
    Pragma(rusqlite::Error),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error("cannot open the read pool: {0}")]
    Pool(r2d2::Error),
}

/// A store that cannot be opened cannot take work; the sentence names the file.
impl From<OpenError> for StoreError {
    fn from(e: OpenError) -> StoreError {
        StoreError::Unavailable(e.to_string())
    }
}

/// Open a connection for a short-lived tool (CLI): migrated, WAL, waits on locks.
fn open_connection(cfg: &DatabaseConfig) -> Result<Connection, OpenError> {
    let path = Path::new(&cfg.path);
    if let Some(parent) = path.parent() {
        files::create_private_dir(parent).map_err(|source| OpenError::DataFolder { dir: parent.to_path_buf(), source })?;
    }
    // Made 0600 before SQLite opens it: SQLite gives -wal and -shm the database's mode.
    files::create_private_file(path).map_err(|source| OpenError::Create { path: path.to_path_buf(), source })?;
    for f in [path.to_path_buf(), suffixed(path, "-wal"), suffixed(path, "-shm")] {
        files::tighten_file(&f);
    }
    let mut conn = Connection::open(path).map_err(|source| OpenError::Open { path: path.to_path_buf(), source })?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(|source| OpenError::Wal { path: path.to_path_buf(), source })?;
    pragmas(&conn, &cfg.synchronous).map_err(OpenError::Pragma)?;
    migrations::migrate(&mut conn)?;
    Ok(conn)
}

/// `path` with `suffix` appended to its file name (`x.db` → `x.db-wal`).
pub fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

impl Store {
    /// Create the folder and file if needed, migrate, start the writer and the read pool.
    pub fn open(cfg: &DatabaseConfig) -> Result<Opened, OpenError> {
        let conn = open_connection(cfg)?;
        let read_only = || {
            let sync = cfg.synchronous.clone();
            SqliteConnectionManager::file(&cfg.path)
                .with_flags(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI)
                .with_init(move |c| {
                    pragmas(c, &sync)?;
                    c.pragma_update(None, "query_only", "ON")
                })
        };
        let manager = read_only();
        let readers = std::sync::Arc::new(read_only());
        let pool = r2d2::Pool::builder().max_size(cfg.read_pool_size).min_idle(Some(1)).build(manager).map_err(OpenError::Pool)?;
        let (feed_tx, feed) = mpsc::unbounded_channel();
        let (writer, writer_thread) = writer::spawn(conn, cfg.max_batch, feed_tx);
        Ok(Opened { store: Store { pool, writer, readers }, feed, writer_thread })
    }

    /// Run a read on a pooled connection off the async runtime.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.get()?;
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::internal(format!("read task failed: {e}")))?
    }
}
