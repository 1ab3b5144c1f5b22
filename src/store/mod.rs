//! Storage on either engine: an embedded SQLite file (the default) or a
//! PostgreSQL database (`database.url`), each with its migrations, a pool of
//! read connections and the single `writer::Writer`. All SQL lives under this
//! module's children, written once over [`sql::Conn`]; [`pg`] holds what only
//! PostgreSQL needs (connections, TLS, migrations, the URL that hides its
//! password).

pub mod accounts;
pub mod alerts;
pub mod backup;
pub mod bookings;
pub mod calendly;
pub mod change_log;
pub mod changes;
pub mod cluster;
pub mod error;
pub mod google;
pub mod google_accounts;
pub mod google_sync;
pub mod health;
pub mod login_links;
pub mod matching;
pub mod microsoft_accounts;
pub mod microsoft_sync;
pub mod migrations;
pub mod move_to_pg;
pub mod pg;
pub mod provider_accounts;
pub mod records;
pub mod rejections;
pub mod retention;
pub mod rows;
pub mod snapshot;
pub(crate) mod sql;
pub mod stats;
pub mod sync_health;
pub mod sync_status;
pub mod synced_meetings;
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
use secrecy::ExposeSecret;
use tokio::sync::mpsc;

use crate::config::{files, DatabaseConfig};
pub use changes::{Change, ChangeBatch, Op};
pub use error::{StoreError, StoreResult};
pub use migrations::MigrationError;
use sql::Conn;
pub use sql::Engine;
pub use tables::{PgType, Table};
pub use writer::{LogHead, WriterStats};
use writer::{WriteTx, Writer};

type Pool = r2d2::Pool<SqliteConnectionManager>;

/// Handles to the database: cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Db,
    writer: Writer,
}

/// The engine behind a store, with its read connections.
#[derive(Clone)]
enum Db {
    Sqlite {
        pool: Pool,
        /// Opens read-only connections outside the pool, for snapshots that
        /// hold a read transaction while a client takes the rows (see `snapshot`).
        readers: std::sync::Arc<SqliteConnectionManager>,
    },
    Postgres {
        /// Reads of REST requests, sessions and background tasks.
        pool: deadpool_postgres::Pool,
        /// Snapshot reads, which hold a transaction while a client takes the
        /// rows: a pool of their own, so stalled clients never drain `pool`.
        snapshots: deadpool_postgres::Pool,
        /// Where the node LISTENs for other nodes' commits (`database.listen_url`, else `url`).
        listen: std::sync::Arc<pg::PgUrl>,
    },
}

/// The read pool's connections (see [`Store::pool_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub open: usize,
    pub idle: usize,
    pub max: usize,
    /// Readers waiting for a connection (PostgreSQL; SQLite's pool does not count them).
    pub waiting: usize,
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

/// Why the database could not be opened, naming the file (or the
/// PostgreSQL URL, password hidden).
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
    #[error(transparent)]
    PgUrl(#[from] pg::PgUrlError),
    #[error(transparent)]
    PgMigration(#[from] pg::PgMigrationError),
    #[error("cannot use the PostgreSQL database {url}: {reason}")]
    Postgres { url: String, reason: String },
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
    /// Open the configured engine: PostgreSQL when `database.url` is set,
    /// else the SQLite file (created with its folder if needed). Migrates,
    /// then starts the writer and the read pool.
    pub fn open(cfg: &DatabaseConfig) -> Result<Opened, OpenError> {
        if config_names_postgres(cfg) {
            return Store::open_postgres(cfg);
        }
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
        let (writer, writer_thread) = writer::spawn_sqlite(conn, cfg.max_batch, feed_tx);
        Ok(Opened { store: Store { db: Db::Sqlite { pool, readers }, writer }, feed, writer_thread })
    }

    /// Connect to PostgreSQL, migrate it (under the migration lock, refusing
    /// a database this binary is too old for), and start the writer and pools.
    fn open_postgres(cfg: &DatabaseConfig) -> Result<Opened, OpenError> {
        pg::conn::blocking_anywhere(|| Store::open_postgres_blocking(cfg))
    }

    fn open_postgres_blocking(cfg: &DatabaseConfig) -> Result<Opened, OpenError> {
        let url = pg::PgUrl::parse(cfg.url.expose_secret())?;
        let listen = match cfg.listen_url.expose_secret().trim() {
            "" => url.clone(),
            other => pg::PgUrl::parse(other)?,
        };
        // The data folder still holds what is per node: `server.json` (how
        // the CLI finds this server) and a generated secret on loopback.
        if let Some(dir) = Path::new(&cfg.path).parent().filter(|d| !d.as_os_str().is_empty()) {
            files::create_private_dir(dir).map_err(|source| OpenError::DataFolder { dir: dir.to_path_buf(), source })?;
        }
        let shown = url.to_string();
        let timeout = cfg.connect_timeout.0;
        let migrated = pg::conn::block_on(async {
            tokio::time::timeout(timeout, pg::migrations::migrate(&url))
                .await
                .map_err(|_| OpenError::Postgres { url: shown.clone(), reason: format!("no answer within {timeout:?}") })?
                .map_err(OpenError::from)
        })?;
        tracing::info!(database = %shown, schema = migrated.to, applied = migrated.applied.len(), "PostgreSQL database ready");
        let failed = |e: StoreError| OpenError::Postgres { url: shown.clone(), reason: e.to_string() };
        let pool = pg::conn::pool(&url, cfg.read_pool_size as usize, timeout).map_err(failed)?;
        let snapshots = pg::conn::pool(&url, cfg.read_pool_size as usize, timeout).map_err(failed)?;
        // A writer stopped inside a transaction (its node paused, or cut off
        // before ROLLBACK) would hold its row locks, and so every other
        // node's writer, until PostgreSQL ends its session.
        let stalled = cfg.stalled_writer_timeout.0.as_millis().max(1);
        let writer_pool =
            pg::conn::pool_with(&url, 1, timeout, &[("idle_in_transaction_session_timeout", stalled.to_string())]).map_err(failed)?;
        let (feed_tx, feed) = mpsc::unbounded_channel();
        let (writer, writer_thread) = writer::spawn_postgres(writer_pool, cfg.max_batch, feed_tx).map_err(failed)?;
        Ok(Opened {
            store: Store { db: Db::Postgres { pool, snapshots, listen: std::sync::Arc::new(listen) }, writer },
            feed,
            writer_thread,
        })
    }

    /// The read connections now: how many are open, how many idle, the
    /// most there may be, and how many readers wait for one (`/metrics`).
    pub fn pool_status(&self) -> PoolStatus {
        match &self.db {
            Db::Sqlite { pool, .. } => {
                let state = pool.state();
                PoolStatus {
                    open: state.connections as usize,
                    idle: state.idle_connections as usize,
                    max: pool.max_size() as usize,
                    waiting: 0,
                }
            }
            Db::Postgres { pool, .. } => {
                let status = pool.status();
                PoolStatus { open: status.size, idle: status.available, max: status.max_size, waiting: status.waiting }
            }
        }
    }

    /// On PostgreSQL, the task that wakes `wake` whenever any node commits
    /// changes (and after each reconnect), until `shutdown`; None on SQLite,
    /// where this process is the only writer.
    pub fn change_listener(
        &self,
        wake: std::sync::Arc<tokio::sync::Notify>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        match &self.db {
            Db::Sqlite { .. } => None,
            Db::Postgres { listen, .. } => Some(pg::listen::listen(listen.as_ref().clone(), writer::CHANGES_CHANNEL, wake, shutdown)),
        }
    }

    /// Which engine holds the data.
    pub fn engine(&self) -> Engine {
        match self.db {
            Db::Sqlite { .. } => Engine::Sqlite,
            Db::Postgres { .. } => Engine::Postgres,
        }
    }

    /// Bookkeeping that must not wait behind the data writer or hold locks
    /// in its batches: leases, the node registry, counts of Google syncs
    /// asked for, `last_seen`. On PostgreSQL each statement commits on its
    /// own (one row lock at a time, so it cannot close a deadlock between
    /// nodes' batches, and a writer queue under load does not delay a
    /// heartbeat into a lost lease); on SQLite, where this process is the
    /// only writer, it is one request of the writer. `f` gets the
    /// connection and the time now.
    async fn bookkeeping<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Conn<'_>, &str) -> StoreResult<T> + Send + 'static,
    {
        match self.db {
            Db::Sqlite { .. } => self.writer.write_unfenced(move |tx| f(tx.conn(), tx.now())).await,
            Db::Postgres { .. } => {
                self.read(move |c| {
                    let now = timefmt::format(timefmt::now());
                    f(c, &now)
                })
                .await
            }
        }
    }

    /// Run a read on a pooled connection off the async runtime.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Conn<'_>) -> StoreResult<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || match db {
            Db::Sqlite { pool, .. } => {
                let conn = pool.get()?;
                f(&Conn::Sqlite(&conn))
            }
            Db::Postgres { pool, .. } => {
                let client = pg::conn::get(&pool)?;
                let conn = Conn::Pg(pg::conn::PgConn::new(&client));
                let result = f(&conn);
                if let Conn::Pg(c) = &conn {
                    c.release();
                }
                result
            }
        })
        .await
        .map_err(|e| StoreError::internal(format!("read task failed: {e}")))?
    }
}

/// Whether the configuration selects PostgreSQL (a non-blank `database.url`).
pub fn config_names_postgres(cfg: &DatabaseConfig) -> bool {
    !cfg.url.expose_secret().trim().is_empty()
}
