//! The advisers' records behind REST (`clients`, `meetings`, `pipeline`):
//! a page of them, one, and a create, change or delete — each write in one
//! writer transaction with its change rows. The caller has already turned
//! the request into checked values; what needs the data itself (whose rows
//! the caller may see, whether a client belongs to the row's owner, what a
//! deleted client takes with it) is checked here, inside the transaction.

use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use super::error::{StoreError, StoreResult};
use super::rows;
use super::sql::{args, ToSqlValue};
use super::tables::{PgType, Table};
use super::writer::WriteTx;
use super::Store;
use crate::model::MeetingStatus;

/// Whose records a caller may read and change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// An admin: everyone's.
    Everyone,
    /// An ordinary user: their own.
    OwnerOnly(i64),
}

impl Visibility {
    fn allows(self, record: &Value) -> bool {
        match self {
            Visibility::Everyone => true,
            Visibility::OwnerOnly(id) => rows::owner_of(record) == id,
        }
    }
}

/// One value of a list's sort key (cursor paging).
#[derive(Debug, Clone, PartialEq)]
pub enum SortValue {
    Int(i64),
    Text(String),
}

/// A condition a list request adds (all of them must hold).
#[derive(Debug, Clone, PartialEq)]
pub enum RecordFilter {
    /// Clients whose name, email or phone contains the text.
    Mentions(String),
    /// Meetings ending after this timestamp.
    EndsAfter(String),
    /// Meetings starting before this timestamp.
    StartsBefore(String),
    Status(MeetingStatus),
    /// `google`, `calendly` or `manual`.
    Source(String),
    /// A pipeline stage.
    Stage(String),
    ClientId(i64),
}

/// A page of one table, in the order of `order` (the last key is `id`).
#[derive(Debug, Clone)]
pub struct RecordQuery {
    pub table: Table,
    pub visible: Visibility,
    pub filters: Vec<RecordFilter>,
    pub order: &'static [&'static str],
    /// The sort-key values of the last row of the previous page.
    pub after: Option<Vec<SortValue>>,
    pub limit: usize,
}

/// A new record: its checked columns (as JSON values), owned by `owner`.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub table: Table,
    pub owner: i64,
    pub columns: Vec<(&'static str, Value)>,
    /// A client the record names; it must be one of the owner's.
    pub client_id: Option<i64>,
}

/// Checked columns to change on one record.
#[derive(Debug, Clone)]
pub struct RecordChange {
    pub table: Table,
    pub id: i64,
    pub visible: Visibility,
    pub columns: Vec<(&'static str, Value)>,
    /// A new client link (`Some(None)` clears it); it must name one of the owner's clients.
    pub client_id: Option<Option<i64>>,
}

fn singular(table: Table) -> &'static str {
    match table {
        Table::Clients => "client",
        Table::Meetings => "meeting",
        Table::Pipeline => "pipeline entry",
        Table::Users => "user",
    }
}

fn not_found(table: Table, id: i64) -> StoreError {
    StoreError::NotFound(format!("{} {id} does not exist", singular(table)))
}

/// A JSON value as the column stores it.
fn column_value(table: Table, column: &str, v: &Value) -> SqlValue {
    match (v, table.column_type(column)) {
        (Value::Null, _) => SqlValue::Null,
        (Value::Bool(b), _) => SqlValue::Integer(*b as i64),
        (v, Some(PgType::Jsonb)) => SqlValue::Text(v.to_string()),
        (Value::Number(n), Some(PgType::Float8)) => n.as_f64().map_or(SqlValue::Null, SqlValue::Real),
        (Value::Number(n), _) => n.as_i64().map(SqlValue::Integer).or_else(|| n.as_f64().map(SqlValue::Real)).unwrap_or(SqlValue::Null),
        (Value::String(s), _) => SqlValue::Text(s.clone()),
        (other, _) => SqlValue::Text(other.to_string()),
    }
}

fn sort_value(v: &SortValue) -> SqlValue {
    match v {
        SortValue::Int(n) => SqlValue::Integer(*n),
        SortValue::Text(s) => SqlValue::Text(s.clone()),
    }
}

/// The WHERE condition of a filter, with its one parameter written `$`.
/// `like` is the engine's case-insensitive LIKE (a search ignores case on both).
fn condition(filter: &RecordFilter, like: &str) -> (String, SqlValue) {
    let fixed = |cond: &str, v: SqlValue| (cond.to_string(), v);
    match filter {
        RecordFilter::Mentions(text) => {
            let pattern = format!("%{}%", text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
            (format!("(name {like} $ ESCAPE '\\' OR email {like} $ ESCAPE '\\' OR phone {like} $ ESCAPE '\\')"), SqlValue::Text(pattern))
        }
        RecordFilter::EndsAfter(t) => fixed("ends_at > $", SqlValue::Text(t.clone())),
        RecordFilter::StartsBefore(t) => fixed("starts_at < $", SqlValue::Text(t.clone())),
        RecordFilter::Status(s) => fixed("status = $", SqlValue::Text(s.as_str().into())),
        RecordFilter::Source(s) => fixed("source = $", SqlValue::Text(s.clone())),
        RecordFilter::Stage(s) => fixed("stage = $", SqlValue::Text(s.clone())),
        RecordFilter::ClientId(id) => fixed("client_id = $", SqlValue::Integer(*id)),
    }
}

/// A client id on a record must name one of the record owner's clients.
fn check_client(tx: &WriteTx<'_, '_>, client_id: i64, owner: i64) -> StoreResult<()> {
    let found: Option<i64> = tx.conn().value_opt("SELECT user_id FROM clients WHERE id = ?1", args![client_id])?;
    match found {
        Some(o) if o == owner => Ok(()),
        _ => Err(StoreError::Invalid(format!("client_id {client_id} is not one of this user's clients"))),
    }
}

fn ids_where(tx: &WriteTx<'_, '_>, sql: &str, id: i64) -> StoreResult<Vec<i64>> {
    tx.conn().query_map(sql, args![id], |r| r.get(0))
}

/// The visible row, or NotFound (another user's row is not told apart from a missing one).
fn visible_row(tx: &WriteTx<'_, '_>, table: Table, id: i64, visible: Visibility) -> StoreResult<Value> {
    match tx.get(table, id)? {
        Some(r) if visible.allows(&r) => Ok(r),
        _ => Err(not_found(table, id)),
    }
}

impl Store {
    /// Up to `limit` records matching the query, after its cursor.
    pub async fn records_page(&self, q: RecordQuery) -> StoreResult<Vec<Value>> {
        self.read(move |conn| {
            let mut sql = rows::select_sql(q.table);
            let mut params: Vec<SqlValue> = Vec::new();
            let mut conds: Vec<String> = Vec::new();
            if let Visibility::OwnerOnly(id) = q.visible {
                params.push(SqlValue::Integer(id));
                conds.push(format!("user_id = ?{}", params.len()));
            }
            for f in &q.filters {
                let (cond, v) = condition(f, conn.like());
                params.push(v);
                conds.push(cond.replace('$', &format!("?{}", params.len())));
            }
            if let Some(after) = &q.after {
                // (a, b, id) > (x, y, z) as a row-value comparison.
                let mut ph = Vec::new();
                for v in after {
                    params.push(sort_value(v));
                    ph.push(format!("?{}", params.len()));
                }
                conds.push(format!("({}) > ({})", q.order.join(", "), ph.join(", ")));
            }
            if !conds.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&conds.join(" AND "));
            }
            sql.push_str(&format!(" ORDER BY {} LIMIT {}", q.order.join(", "), q.limit));
            let args: Vec<&dyn ToSqlValue> = params.iter().map(|p| p as &dyn ToSqlValue).collect();
            conn.query_map(&sql, &args, |r| Ok(rows::row_to_json(q.table, r)))
        })
        .await
    }

    /// One record, if it exists.
    pub async fn record(&self, table: Table, id: i64) -> StoreResult<Option<Value>> {
        self.read(move |c| rows::get(c, table, id)).await
    }

    /// Insert a record (and its change row); returns it as stored.
    pub async fn create_record(&self, new: NewRecord) -> StoreResult<Value> {
        self.writer.write(move |tx| insert_in(tx, &new)).await
    }

    /// Change a visible record (and log it); returns it after the change.
    pub async fn change_record(&self, change: RecordChange) -> StoreResult<Value> {
        self.writer.write(move |tx| change_in(tx, &change)).await
    }

    /// Delete a visible record (and log it). A client takes its pipeline
    /// entries with it and is cleared from its meetings, each change logged.
    pub async fn delete_record(&self, table: Table, id: i64, visible: Visibility) -> StoreResult<()> {
        self.writer
            .write(move |tx| {
                visible_row(tx, table, id, visible)?;
                delete_in(tx, table, id)?;
                Ok(())
            })
            .await
    }
}

/// Insert a record in the writer's transaction (its client checked).
pub(super) fn insert_in(tx: &mut WriteTx<'_, '_>, new: &NewRecord) -> StoreResult<Value> {
    if let Some(c) = new.client_id {
        check_client(tx, c, new.owner)?;
    }
    let mut values: Vec<(&str, SqlValue)> = vec![("user_id", SqlValue::Integer(new.owner))];
    values.extend(new.columns.iter().map(|(c, v)| (*c, column_value(new.table, c, v))));
    if let Some(c) = new.client_id {
        values.push(("client_id", SqlValue::Integer(c)));
    }
    tx.insert(new.table, &values)
}

/// Change a visible record in the writer's transaction; NotFound if it is gone or not the caller's.
pub(super) fn change_in(tx: &mut WriteTx<'_, '_>, change: &RecordChange) -> StoreResult<Value> {
    let (table, id) = (change.table, change.id);
    let existing = visible_row(tx, table, id, change.visible)?;
    let mut values: Vec<(&str, SqlValue)> = change.columns.iter().map(|(c, v)| (*c, column_value(table, c, v))).collect();
    if let Some(client) = change.client_id {
        if let Some(c) = client {
            check_client(tx, c, rows::owner_of(&existing))?;
        }
        values.push(("client_id", client.map_or(SqlValue::Null, SqlValue::Integer)));
    }
    tx.update(table, id, &values)?.ok_or_else(|| not_found(table, id))
}

/// Delete a record in the writer's transaction (the caller checked it may);
/// a client takes its pipeline entries with it and is cleared from its
/// meetings, each change logged. Returns the deleted row, if there was one.
pub(super) fn delete_in(tx: &mut WriteTx<'_, '_>, table: Table, id: i64) -> StoreResult<Option<Value>> {
    if table == Table::Clients {
        for m in ids_where(tx, "SELECT id FROM meetings WHERE client_id = ?1 ORDER BY id", id)? {
            tx.update(Table::Meetings, m, &[("client_id", SqlValue::Null)])?;
        }
        for d in ids_where(tx, "SELECT id FROM pipeline WHERE client_id = ?1 ORDER BY id", id)? {
            tx.delete(Table::Pipeline, d)?;
        }
    }
    tx.delete(table, id)
}
