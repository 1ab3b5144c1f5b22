//! Rows of the synced tables as JSON: the one shape used by REST responses,
//! the `changes` log and realtime records, built from the column list in
//! [`tables`](super::tables) so the three can never disagree.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row};
use serde_json::{Map, Value};

use super::tables::{PgType, Table};

/// `SELECT col1, col2, ... FROM table` in column order.
pub fn select_sql(table: Table) -> String {
    let cols: Vec<&str> = table.columns().iter().map(|(n, _)| *n).collect();
    format!("SELECT {} FROM {}", cols.join(", "), table.name())
}

/// Convert a row selected with [`select_sql`] to its JSON object.
pub(super) fn row_to_json(table: Table, row: &Row<'_>) -> rusqlite::Result<Value> {
    let mut map = Map::with_capacity(table.columns().len());
    for (i, (name, ty)) in table.columns().iter().enumerate() {
        let v = match (row.get_ref(i)?, ty) {
            (ValueRef::Null, _) => Value::Null,
            (ValueRef::Integer(n), PgType::Bool) => Value::Bool(n != 0),
            (ValueRef::Integer(n), PgType::Float8) => serde_json::Number::from_f64(n as f64).map(Value::Number).unwrap_or(Value::Null),
            (ValueRef::Integer(n), _) => Value::from(n),
            (ValueRef::Real(f), _) => serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null),
            (ValueRef::Text(t), PgType::Jsonb) => serde_json::from_slice(t).unwrap_or(Value::Null),
            (ValueRef::Text(t), _) => Value::String(String::from_utf8_lossy(t).into_owned()),
            (ValueRef::Blob(_), _) => Value::Null,
        };
        map.insert((*name).to_string(), v);
    }
    Ok(Value::Object(map))
}

pub(super) fn get(conn: &Connection, table: Table, id: i64) -> rusqlite::Result<Option<Value>> {
    // Cached: the writer reads every row it writes back through here.
    conn.prepare_cached(&format!("{} WHERE id = ?1", select_sql(table)))?.query_row([id], |r| row_to_json(table, r)).optional()
}

/// The row's owner, from its JSON.
pub fn owner_of(record: &Value) -> i64 {
    record.get("user_id").and_then(Value::as_i64).unwrap_or(0)
}
