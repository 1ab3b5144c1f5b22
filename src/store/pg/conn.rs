//! Connections to PostgreSQL for the store: a deadpool of tokio-postgres
//! clients whose I/O runs on a small runtime of its own, and [`PgConn`], the
//! blocking face [`sql::Conn`](crate::store::sql::Conn) uses on the writer's
//! thread and on blocking-pool threads. Store operations are blocking code
//! shared with SQLite; driving the async client from those threads keeps
//! every network wait off the server's async runtime, and the separate
//! runtime means a thread of the server's blocking pool never has to drive
//! the server's own reactor.
//!
//! Values: placeholders carry SQLite's dynamic values; [`PgArg`] converts
//! each to the type PostgreSQL inferred for its placeholder (text to
//! `timestamptz` or `jsonb`, 0/1 to `boolean`, …), and [`PgOut`] turns
//! result columns back into the same values SQLite would have returned.

use std::cell::Cell;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Pool, RecyclingMethod, Timeouts};
use rusqlite::types::Value as SqlValue;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

use super::url::PgUrl;
use crate::store::error::{StoreError, StoreResult};
use crate::store::sql::{to_pg_placeholders, Row, ToSqlValue};
use crate::store::timefmt;

type BoxError = Box<dyn StdError + Sync + Send>;

/// The runtime that drives every PostgreSQL connection of the process.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("syncgate-pg")
            .enable_all()
            .build()
            .expect("building the PostgreSQL runtime")
    })
}

/// Wait for `f` on the PostgreSQL runtime from blocking code (the writer's
/// thread, a blocking-pool thread).
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    runtime().handle().block_on(f)
}

/// Run blocking code that waits on PostgreSQL from anywhere, an async task
/// included (on a thread of its own then): for one-off work at startup and
/// in the CLI, where parking the caller's thread briefly is harmless.
pub(crate) fn blocking_anywhere<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| s.spawn(f).join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
}

/// A pool of connections to `url`, at most `size` of them.
pub(crate) fn pool(url: &PgUrl, size: usize, timeout: Duration) -> StoreResult<Pool> {
    pool_with(url, size, timeout, &[])
}

/// The same, each session started with these settings (`-c name=value`,
/// after whatever `options` the URL gives).
pub(crate) fn pool_with(url: &PgUrl, size: usize, timeout: Duration, settings: &[(&str, String)]) -> StoreResult<Pool> {
    let mut config = url.config().clone();
    if !settings.is_empty() {
        let mut options = config.get_options().unwrap_or_default().to_string();
        for (name, value) in settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        config.options(options.trim());
    }
    let manager = Manager::from_config(config, super::tls::connector(url)?, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size.max(1))
        .timeouts(Timeouts { wait: Some(timeout), create: Some(timeout), recycle: Some(timeout) })
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::internal(format!("cannot build the PostgreSQL pool: {e}")))
}

/// Take a connection from `pool`, blocking; a database that cannot be
/// reached is `Unavailable` (503), with a sentence that shows no password.
pub(crate) fn get(pool: &Pool) -> StoreResult<deadpool_postgres::Object> {
    block_on(pool.get()).map_err(pool_error)
}

pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => pg_error(e),
        PoolError::Timeout(_) => StoreError::Unavailable("the database did not answer in time".into()),
        other => StoreError::Unavailable(format!("the database is not reachable ({other})")),
    }
}

/// A borrowed PostgreSQL connection, used from blocking code.
pub struct PgConn<'a> {
    client: &'a ClientWrapper,
    /// A read transaction is open (the pool must not get the connection back mid-way).
    pub(crate) in_transaction: Cell<bool>,
}

impl<'a> PgConn<'a> {
    pub(crate) fn new(client: &'a ClientWrapper) -> PgConn<'a> {
        PgConn { client, in_transaction: Cell::new(false) }
    }

    fn statement(&self, sql: &str) -> StoreResult<tokio_postgres::Statement> {
        block_on(self.client.prepare_cached(&to_pg_placeholders(sql))).map_err(pg_error)
    }

    pub(crate) fn execute(&self, sql: &str, args: &[&dyn ToSqlValue]) -> StoreResult<usize> {
        let stmt = self.statement(sql)?;
        let values: Vec<PgArg> = args.iter().map(|a| PgArg(a.to_sql_value())).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        block_on(self.client.execute(&stmt, &refs)).map(|n| n as usize).map_err(pg_error)
    }

    pub(crate) fn query(&self, sql: &str, args: &[&dyn ToSqlValue]) -> StoreResult<Vec<Row>> {
        let stmt = self.statement(sql)?;
        let values: Vec<PgArg> = args.iter().map(|a| PgArg(a.to_sql_value())).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let rows = block_on(self.client.query(&stmt, &refs)).map_err(pg_error)?;
        rows.iter()
            .map(|r| (0..r.len()).map(|i| r.try_get::<_, PgOut>(i).map(|v| v.0)).collect::<Result<Vec<_>, _>>().map(Row))
            .collect::<Result<Vec<_>, _>>()
            .map_err(pg_error)
    }

    pub(crate) fn batch(&self, sql: &str) -> StoreResult<()> {
        block_on(self.client.batch_execute(sql)).map_err(pg_error)
    }

    /// Before the connection goes back to its pool: end a read transaction
    /// the read left open (it failed half-way), so the next user of the
    /// connection does not start inside it.
    pub(crate) fn release(&self) {
        if self.in_transaction.get() {
            let _ = self.batch("ROLLBACK");
            self.in_transaction.set(false);
        }
    }

    /// Whether the connection is gone (the server restarted, the network dropped).
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// PostgreSQL's errors in the store's words, as `sql::sqlite_error` does for
/// SQLite: a broken constraint is the caller's input problem; a lost
/// connection or a server going down is `Unavailable` (503, try again).
pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            let what = db.constraint().unwrap_or("a unique key");
            return StoreError::Conflict(format!("a row with the same unique value already exists ({what})"));
        }
        if *code == SqlState::FOREIGN_KEY_VIOLATION {
            return StoreError::Invalid("the row refers to something that does not exist".into());
        }
        if *code == SqlState::CHECK_VIOLATION || *code == SqlState::NOT_NULL_VIOLATION {
            return StoreError::Invalid(format!("the row breaks a rule of the table ({})", db.message()));
        }
        if [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code)
        {
            return StoreError::Unavailable(format!("the database cannot take the request now ({})", db.message()));
        }
        return StoreError::Internal(format!("{} ({})", db.message(), code.code()));
    }
    if e.is_closed() || e.source().is_some_and(|s| s.is::<std::io::Error>()) {
        return StoreError::Unavailable("the connection to the database was lost".into());
    }
    match e.source() {
        Some(cause) => StoreError::Internal(format!("{e}: {cause}")),
        None => StoreError::Internal(e.to_string()),
    }
}

/// A placeholder's value, converted to whatever type PostgreSQL inferred for it.
struct PgArg(SqlValue);

/// tokio-postgres logs each statement's parameters at debug level: a value
/// may be a secret (a Google token, a signing key), so only its kind shows.
impl std::fmt::Debug for PgArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            SqlValue::Null => f.write_str("NULL"),
            SqlValue::Integer(_) => f.write_str("<integer>"),
            SqlValue::Real(_) => f.write_str("<real>"),
            SqlValue::Text(t) => write!(f, "<text, {} bytes>", t.len()),
            SqlValue::Blob(b) => write!(f, "<blob, {} bytes>", b.len()),
        }
    }
}

impl ToSql for PgArg {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match &self.0 {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Integer(n) => integer_to_sql(*n, ty, out),
            SqlValue::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::INT8 if f.fract() == 0.0 => (*f as i64).to_sql(ty, out),
                _ => text_to_sql(&f.to_string(), ty, out),
            },
            SqlValue::Text(s) => text_to_sql(s, ty, out),
            SqlValue::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn integer_to_sql(n: i64, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    match *ty {
        Type::INT8 => n.to_sql(ty, out),
        Type::INT4 => i32::try_from(n)?.to_sql(ty, out),
        Type::INT2 => i16::try_from(n)?.to_sql(ty, out),
        Type::BOOL => (n != 0).to_sql(ty, out),
        Type::FLOAT8 => (n as f64).to_sql(ty, out),
        Type::FLOAT4 => (n as f32).to_sql(ty, out),
        Type::OID => u32::try_from(n)?.to_sql(ty, out),
        _ => text_to_sql(&n.to_string(), ty, out),
    }
}

/// Text as SQLite keeps every time, JSON document and number-as-text.
fn text_to_sql(s: &str, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    match *ty {
        Type::TIMESTAMPTZ => {
            let t = timefmt::parse(s).ok_or_else(|| format!("not a timestamp: {s:?}"))?;
            // Milliseconds, as SQLite's text keeps them: the column would round.
            let t = t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)?;
            t.to_sql(ty, out)
        }
        Type::JSONB | Type::JSON => serde_json::from_str::<serde_json::Value>(s)?.to_sql(ty, out),
        Type::INT8 => s.trim().parse::<i64>()?.to_sql(ty, out),
        Type::INT4 => s.trim().parse::<i32>()?.to_sql(ty, out),
        Type::FLOAT8 => s.trim().parse::<f64>()?.to_sql(ty, out),
        Type::BOOL => matches!(s.trim(), "1" | "true" | "t").to_sql(ty, out),
        Type::DATE => timefmt::parse_date(s).ok_or_else(|| format!("not a date: {s:?}"))?.to_sql(ty, out),
        _ => s.to_sql(&Type::TEXT, out),
    }
}

/// A result column as SQLite would have returned it.
struct PgOut(SqlValue);

impl<'a> FromSql<'a> for PgOut {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<PgOut, BoxError> {
        let v = match *ty {
            Type::BOOL => SqlValue::Integer(i64::from(bool::from_sql(ty, raw)?)),
            Type::INT2 => SqlValue::Integer(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => SqlValue::Integer(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => SqlValue::Integer(i64::from_sql(ty, raw)?),
            Type::OID => SqlValue::Integer(u32::from_sql(ty, raw)?.into()),
            Type::FLOAT4 => SqlValue::Real(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => SqlValue::Real(f64::from_sql(ty, raw)?),
            Type::TIMESTAMPTZ => SqlValue::Text(timefmt::format(time::OffsetDateTime::from_sql(ty, raw)?)),
            Type::TIMESTAMP => SqlValue::Text(timefmt::format(time::PrimitiveDateTime::from_sql(ty, raw)?.assume_utc())),
            Type::DATE => SqlValue::Text(timefmt::format_date(time::Date::from_sql(ty, raw)?)),
            Type::JSONB | Type::JSON => SqlValue::Text(serde_json::Value::from_sql(ty, raw)?.to_string()),
            Type::BYTEA => SqlValue::Blob(<Vec<u8>>::from_sql(ty, raw)?),
            Type::NUMERIC => return Err("a numeric column: cast it to bigint or double precision in the query".into()),
            _ => SqlValue::Text(String::from_sql(&Type::TEXT, raw)?),
        };
        Ok(PgOut(v))
    }

    fn from_sql_null(_: &Type) -> Result<PgOut, BoxError> {
        Ok(PgOut(SqlValue::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}
