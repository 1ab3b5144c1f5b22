//! Rows of the synced tables as JSON: the one shape used by REST responses,
//! the `changes` log and realtime records, built from the column list in
//! [`tables`](super::tables) so the three can never disagree.

use rusqlite::types::Value as SqlValue;
use serde_json::{Map, Value};

use super::error::StoreResult;
use super::sql::{args, Conn, Row};
use super::tables::{PgType, Table};

/// `col1, col2, ...` in column order.
pub fn column_list(table: Table) -> String {
    let cols: Vec<&str> = table.columns().iter().map(|(n, _)| *n).collect();
    cols.join(", ")
}

/// `SELECT col1, col2, ... FROM table` in column order.
pub fn select_sql(table: Table) -> String {
    format!("SELECT {} FROM {}", column_list(table), table.name())
}

/// Convert a row selected with [`select_sql`] to its JSON object.
pub(super) fn row_to_json(table: Table, row: &Row) -> Value {
    let mut map = Map::with_capacity(table.columns().len());
    for (i, (name, ty)) in table.columns().iter().enumerate() {
        let v = match (row.value(i), ty) {
            (SqlValue::Null, _) => Value::Null,
            (SqlValue::Integer(n), PgType::Bool) => Value::Bool(*n != 0),
            (SqlValue::Integer(n), PgType::Float8) => serde_json::Number::from_f64(*n as f64).map(Value::Number).unwrap_or(Value::Null),
            (SqlValue::Integer(n), _) => Value::from(*n),
            (SqlValue::Real(f), _) => serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
            (SqlValue::Text(t), PgType::Jsonb) => serde_json::from_str(t).unwrap_or(Value::Null),
            (SqlValue::Text(t), _) => Value::String(t.clone()),
            (SqlValue::Blob(_), _) => Value::Null,
        };
        map.insert((*name).to_string(), v);
    }
    Value::Object(map)
}

pub(super) fn get(conn: &Conn<'_>, table: Table, id: i64) -> StoreResult<Option<Value>> {
    let row = conn.query_opt(&format!("{} WHERE id = ?1", select_sql(table)), args![id])?;
    Ok(row.map(|r| row_to_json(table, &r)))
}

/// The row's owner, from its JSON.
pub fn owner_of(record: &Value) -> i64 {
    record.get("user_id").and_then(Value::as_i64).unwrap_or(0)
}
