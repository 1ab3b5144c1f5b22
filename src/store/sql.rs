//! One way to run SQL on either engine. Store operations are written once,
//! as blocking code over a [`Conn`] (they run on the writer's thread or a
//! blocking-pool thread, never on the async runtime), in SQLite's dialect
//! with `?N` placeholders; on PostgreSQL the placeholders become `$N` and
//! values are converted to the column types the server asks for, so a
//! timestamp is the same `2026-11-23T10:00:00.123Z` text on both sides of
//! the store whichever engine holds it. The few statements the dialects
//! cannot share branch on [`Conn::engine`].
//!
//! Values travel as SQLite's own dynamic [`SqlValue`] (null, integer, real,
//! text, blob): a boolean is 0/1 and JSON is text, exactly as SQLite keeps
//! them, and the PostgreSQL side maps `boolean`, `timestamptz` and `jsonb`
//! to and from that.

use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use super::error::{StoreError, StoreResult};
use super::pg::conn::PgConn;

/// Which engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A value that can be bound to a placeholder.
pub trait ToSqlValue {
    fn to_sql_value(&self) -> SqlValue;
}

macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToSqlValue for $t {
            fn to_sql_value(&self) -> SqlValue {
                SqlValue::Integer(*self as i64)
            }
        }
    )*};
}
int_to_value!(i64, i32, u32, u16, u8);

impl ToSqlValue for usize {
    fn to_sql_value(&self) -> SqlValue {
        SqlValue::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToSqlValue for u64 {
    fn to_sql_value(&self) -> SqlValue {
        SqlValue::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToSqlValue for bool {
    fn to_sql_value(&self) -> SqlValue {
        SqlValue::Integer(i64::from(*self))
    }
}
impl ToSqlValue for f64 {
    fn to_sql_value(&self) -> SqlValue {
        SqlValue::Real(*self)
    }
}
impl ToSqlValue for str {
    fn to_sql_value(&self) -> SqlValue {
        SqlValue::Text(self.to_string())
    }
}
impl ToSqlValue for String {
    fn to_sql_value(&self) -> SqlValue {
        SqlValue::Text(self.clone())
    }
}
impl ToSqlValue for SqlValue {
    fn to_sql_value(&self) -> SqlValue {
        self.clone()
    }
}
/// JSON is stored as its text (SQLite `TEXT`, PostgreSQL `jsonb`).
impl ToSqlValue for Value {
    fn to_sql_value(&self) -> SqlValue {
        SqlValue::Text(self.to_string())
    }
}
impl<T: ToSqlValue + ?Sized> ToSqlValue for &T {
    fn to_sql_value(&self) -> SqlValue {
        (**self).to_sql_value()
    }
}
impl<T: ToSqlValue> ToSqlValue for Option<T> {
    fn to_sql_value(&self) -> SqlValue {
        self.as_ref().map_or(SqlValue::Null, ToSqlValue::to_sql_value)
    }
}

/// A result column that does not hold what the reader expects: a bug of
/// ours (the query and its reader disagree), never the caller's input.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct WrongType(String);

/// A value read from a result column.
pub trait FromSqlValue: Sized {
    fn from_sql_value(v: &SqlValue) -> Result<Self, WrongType>;
}

impl FromSqlValue for i64 {
    fn from_sql_value(v: &SqlValue) -> Result<i64, WrongType> {
        match v {
            SqlValue::Integer(n) => Ok(*n),
            SqlValue::Real(f) if f.fract() == 0.0 => Ok(*f as i64),
            other => Err(WrongType(format!("expected an integer, found {}", kind(other)))),
        }
    }
}
macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromSqlValue for $t {
            fn from_sql_value(v: &SqlValue) -> Result<$t, WrongType> {
                let n = i64::from_sql_value(v)?;
                <$t>::try_from(n).map_err(|_| WrongType(format!("{n} is out of range")))
            }
        }
    )*};
}
int_from_value!(i32, u32, u64, usize, u16);

impl FromSqlValue for bool {
    fn from_sql_value(v: &SqlValue) -> Result<bool, WrongType> {
        Ok(i64::from_sql_value(v)? != 0)
    }
}
impl FromSqlValue for f64 {
    fn from_sql_value(v: &SqlValue) -> Result<f64, WrongType> {
        match v {
            SqlValue::Real(f) => Ok(*f),
            SqlValue::Integer(n) => Ok(*n as f64),
            other => Err(WrongType(format!("expected a number, found {}", kind(other)))),
        }
    }
}
impl FromSqlValue for String {
    fn from_sql_value(v: &SqlValue) -> Result<String, WrongType> {
        match v {
            SqlValue::Text(s) => Ok(s.clone()),
            SqlValue::Integer(n) => Ok(n.to_string()),
            other => Err(WrongType(format!("expected text, found {}", kind(other)))),
        }
    }
}
impl FromSqlValue for SqlValue {
    fn from_sql_value(v: &SqlValue) -> Result<SqlValue, WrongType> {
        Ok(v.clone())
    }
}
/// A JSON column (text holding JSON); NULL reads as `null`.
impl FromSqlValue for Value {
    fn from_sql_value(v: &SqlValue) -> Result<Value, WrongType> {
        match v {
            SqlValue::Null => Ok(Value::Null),
            SqlValue::Text(s) => serde_json::from_str(s).map_err(|e| WrongType(format!("not JSON: {e}"))),
            other => Err(WrongType(format!("expected JSON text, found {}", kind(other)))),
        }
    }
}
impl<T: FromSqlValue> FromSqlValue for Option<T> {
    fn from_sql_value(v: &SqlValue) -> Result<Option<T>, WrongType> {
        match v {
            SqlValue::Null => Ok(None),
            other => T::from_sql_value(other).map(Some),
        }
    }
}

/// What a value is, never the value itself (it may be a secret).
fn kind(v: &SqlValue) -> &'static str {
    match v {
        SqlValue::Null => "NULL",
        SqlValue::Integer(_) => "an integer",
        SqlValue::Real(_) => "a real",
        SqlValue::Text(_) => "text",
        SqlValue::Blob(_) => "a blob",
    }
}

/// One result row: its values in select-list order.
#[derive(Debug, Clone)]
pub struct Row(pub(super) Vec<SqlValue>);

impl Row {
    /// Column `i`, converted; a type mismatch is a bug of ours, reported as internal.
    pub fn get<T: FromSqlValue>(&self, i: usize) -> StoreResult<T> {
        let v = self.0.get(i).ok_or_else(|| StoreError::internal(format!("the result has no column {i}")))?;
        T::from_sql_value(v).map_err(|e| StoreError::internal(format!("column {i}: {e}")))
    }

    /// Column `i` as stored.
    pub fn value(&self, i: usize) -> &SqlValue {
        self.0.get(i).unwrap_or(&SqlValue::Null)
    }
}

/// Placeholder arguments: `args![id, now]`.
macro_rules! args {
    () => { &[] as &[&dyn $crate::store::sql::ToSqlValue] };
    ($($a:expr),+ $(,)?) => { &[$(&$a as &dyn $crate::store::sql::ToSqlValue),+] as &[&dyn $crate::store::sql::ToSqlValue] };
}
pub(crate) use args;

/// An open connection of either engine. Borrowed for one read or one write
/// batch; never held across an `.await`.
pub enum Conn<'a> {
    Sqlite(&'a rusqlite::Connection),
    Pg(PgConn<'a>),
}

impl Conn<'_> {
    pub fn engine(&self) -> Engine {
        match self {
            Conn::Sqlite(_) => Engine::Sqlite,
            Conn::Pg(_) => Engine::Postgres,
        }
    }

    /// Run one statement; returns how many rows it changed.
    pub fn execute(&self, sql: &str, args: &[&dyn ToSqlValue]) -> StoreResult<usize> {
        match self {
            Conn::Sqlite(c) => {
                let values: Vec<SqlValue> = args.iter().map(|a| a.to_sql_value()).collect();
                c.prepare_cached(sql).map_err(sqlite_error)?.execute(rusqlite::params_from_iter(values.iter())).map_err(sqlite_error)
            }
            Conn::Pg(c) => c.execute(sql, args),
        }
    }

    /// Run a query and collect its rows.
    pub fn query(&self, sql: &str, args: &[&dyn ToSqlValue]) -> StoreResult<Vec<Row>> {
        match self {
            Conn::Sqlite(c) => {
                let values: Vec<SqlValue> = args.iter().map(|a| a.to_sql_value()).collect();
                let mut stmt = c.prepare_cached(sql).map_err(sqlite_error)?;
                let width = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(values.iter())).map_err(sqlite_error)?;
                let mut out = Vec::new();
                while let Some(r) = rows.next().map_err(sqlite_error)? {
                    let mut values = Vec::with_capacity(width);
                    for i in 0..width {
                        values.push(r.get::<_, SqlValue>(i).map_err(sqlite_error)?);
                    }
                    out.push(Row(values));
                }
                Ok(out)
            }
            Conn::Pg(c) => c.query(sql, args),
        }
    }

    /// Run a query and convert each row with `f`.
    pub fn query_map<T>(&self, sql: &str, args: &[&dyn ToSqlValue], f: impl FnMut(&Row) -> StoreResult<T>) -> StoreResult<Vec<T>> {
        self.query(sql, args)?.iter().map(f).collect()
    }

    /// The first row, if any.
    pub fn query_opt(&self, sql: &str, args: &[&dyn ToSqlValue]) -> StoreResult<Option<Row>> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// Exactly the first row: a query that must return one (an aggregate).
    pub fn query_one(&self, sql: &str, args: &[&dyn ToSqlValue]) -> StoreResult<Row> {
        self.query_opt(sql, args)?.ok_or_else(|| StoreError::internal("a query that returns one row returned none"))
    }

    /// Column 0 of the first row, if there is a row.
    pub fn value_opt<T: FromSqlValue>(&self, sql: &str, args: &[&dyn ToSqlValue]) -> StoreResult<Option<T>> {
        self.query_opt(sql, args)?.map(|r| r.get(0)).transpose()
    }

    /// Column 0 of the one row.
    pub fn value<T: FromSqlValue>(&self, sql: &str, args: &[&dyn ToSqlValue]) -> StoreResult<T> {
        self.query_one(sql, args)?.get(0)
    }

    /// Statements without arguments, separated by `;` (transaction control, DDL).
    pub fn batch(&self, sql: &str) -> StoreResult<()> {
        match self {
            Conn::Sqlite(c) => c.execute_batch(sql).map_err(sqlite_error),
            Conn::Pg(c) => c.batch(sql),
        }
    }

    /// Open a read-only transaction whose reads all see one moment (a
    /// snapshot): SQLite's deferred transaction, PostgreSQL's repeatable read.
    pub fn begin_snapshot(&self) -> StoreResult<()> {
        match self {
            Conn::Sqlite(c) => c.execute_batch("BEGIN").map_err(sqlite_error),
            Conn::Pg(c) => {
                c.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
                c.in_transaction.set(true);
                Ok(())
            }
        }
    }

    /// End the transaction [`Conn::begin_snapshot`] opened.
    pub fn end_snapshot(&self) -> StoreResult<()> {
        match self {
            Conn::Sqlite(c) => c.execute_batch("COMMIT").map_err(sqlite_error),
            Conn::Pg(c) => {
                c.in_transaction.set(false);
                c.batch("COMMIT")
            }
        }
    }

    /// `column LIKE pattern` compared without regard to ASCII case, as
    /// SQLite's LIKE does; PostgreSQL's LIKE is case-sensitive, its ILIKE is not.
    pub fn like(&self) -> &'static str {
        match self.engine() {
            Engine::Sqlite => "LIKE",
            Engine::Postgres => "ILIKE",
        }
    }
}

/// SQLite's errors in the store's words: a broken constraint is the
/// caller's input problem, a busy database a temporary one.
pub(super) fn sqlite_error(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, msg) = &e {
        let m = msg.clone().unwrap_or_default();
        match f.code {
            rusqlite::ErrorCode::ConstraintViolation if m.contains("UNIQUE") => {
                return StoreError::Conflict(format!("a row with the same unique value already exists ({})", unique_columns(&m)));
            }
            rusqlite::ErrorCode::ConstraintViolation if m.contains("FOREIGN KEY") => {
                return StoreError::Invalid("the row refers to something that does not exist".into());
            }
            rusqlite::ErrorCode::ConstraintViolation => return StoreError::Invalid(format!("the row breaks a rule of the table ({m})")),
            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                return StoreError::Unavailable("the database is busy; try again".into())
            }
            _ => {}
        }
    }
    StoreError::Internal(e.to_string())
}

/// `UNIQUE constraint failed: clients.user_id, clients.email` → `clients.user_id, clients.email`.
fn unique_columns(message: &str) -> &str {
    message.rsplit_once(": ").map_or(message, |(_, cols)| cols)
}

/// `?N` placeholders (outside quotes) as PostgreSQL's `$N`.
pub(super) fn to_pg_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollar_numbers_outside_quotes() {
        assert_eq!(to_pg_placeholders("SELECT ?1, '?2', \"a?3\" WHERE x = ?12"), "SELECT $1, '?2', \"a?3\" WHERE x = $12");
    }

    #[test]
    fn sqlite_runs_the_neutral_api() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let conn = Conn::Sqlite(&c);
        conn.batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, flag INTEGER)").unwrap();
        assert_eq!(conn.execute("INSERT INTO t (name, flag) VALUES (?1, ?2)", args!["a", true]).unwrap(), 1);
        let e = conn.execute("INSERT INTO t (name, flag) VALUES (?1, ?2)", args!["a", false]).unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        let row = conn.query_one("SELECT id, name, flag FROM t WHERE name = ?1", args!["a"]).unwrap();
        assert_eq!((row.get::<i64>(0).unwrap(), row.get::<String>(1).unwrap(), row.get::<bool>(2).unwrap()), (1, "a".into(), true));
        assert_eq!(conn.value_opt::<i64>("SELECT id FROM t WHERE name = ?1", args!["b"]).unwrap(), None);
        let none: Option<&str> = None;
        assert_eq!(conn.value::<Option<String>>("SELECT ?1", args![none]).unwrap(), None);
    }
}
