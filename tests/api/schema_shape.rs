//! A schema as the two engines can be compared: tables, columns with a type
//! family and nullability, unique keys as column sets (with which columns
//! compare case-insensitively), plain indexes and foreign keys. Read from a
//! SQLite file or a PostgreSQL database; engine details (SQLite's type
//! affinities, PostgreSQL's bookkeeping table) are normalized away here.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

/// What a column holds, whatever the engine calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Integer,
    Real,
    Text,
    Timestamp,
    Date,
    Json,
    Bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub family: Family,
    pub nullable: bool,
}

/// A unique key: its columns, each marked when it compares case-insensitively,
/// and whether it holds only for rows matching a condition (a partial index).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UniqueKey {
    pub columns: BTreeSet<(String, CaseRule)>,
    pub partial: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CaseRule {
    Exact,
    CaseInsensitive,
}

/// A foreign key: columns, the table they point to, and the ON DELETE action.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ForeignKey {
    pub columns: Vec<String>,
    pub references: String,
    pub on_delete: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableShape {
    pub columns: BTreeMap<String, Column>,
    pub unique_keys: BTreeSet<UniqueKey>,
    /// Non-unique indexes by name, with their columns in order.
    pub indexes: BTreeMap<String, Vec<String>>,
    pub foreign_keys: BTreeSet<ForeignKey>,
}

pub type SchemaShape = BTreeMap<String, TableShape>;

/// SQLite has no timestamp, date, JSON or boolean type: syncgate stores
/// timestamps and dates as text (store/timefmt.rs), JSON as text and flags as
/// 0/1. What such a column holds is told by its name (`…_at`) or listed here.
const SQLITE_TIMESTAMPS: &[&str] = &["at", "expiration", "window_end", "minute", "tokens_valid_after", "last_seen"];
const SQLITE_DATES: &[(&str, &str)] = &[("pipeline", "expected_close")];
const SQLITE_JSON: &[(&str, &str)] =
    &[("meetings", "attendees"), ("meetings", "invitees"), ("changes", "record"), ("changes", "old_record"), ("audit_log", "detail")];
const SQLITE_FLAGS: &[(&str, &str)] = &[
    ("users", "google_needs_reconnect"),
    ("meetings", "all_day"),
    ("google_calendars", "is_primary"),
    ("google_calendars", "selected"),
    ("microsoft_accounts", "needs_reconnect"),
    ("microsoft_calendars", "is_primary"),
    ("microsoft_calendars", "selected"),
];

fn sqlite_family(table: &str, column: &str, declared: &str) -> Family {
    let listed = |list: &[(&str, &str)]| list.contains(&(table, column));
    match declared.to_ascii_uppercase().as_str() {
        "INTEGER" if listed(SQLITE_FLAGS) => Family::Bool,
        "INTEGER" => Family::Integer,
        "REAL" => Family::Real,
        "TEXT" if listed(SQLITE_JSON) => Family::Json,
        "TEXT" if listed(SQLITE_DATES) => Family::Date,
        "TEXT" if column.ends_with("_at") || SQLITE_TIMESTAMPS.contains(&column) => Family::Timestamp,
        "TEXT" => Family::Text,
        other => panic!("{table}.{column}: SQLite type {other} has no family here"),
    }
}

fn pg_family(table: &str, column: &str, udt: &str) -> Family {
    match udt {
        "int2" | "int4" | "int8" => Family::Integer,
        "float4" | "float8" | "numeric" => Family::Real,
        "text" | "varchar" => Family::Text,
        "timestamptz" | "timestamp" => Family::Timestamp,
        "date" => Family::Date,
        "json" | "jsonb" => Family::Json,
        "bool" => Family::Bool,
        other => panic!("{table}.{column}: PostgreSQL type {other} has no family here"),
    }
}

/// The schema of the SQLite file at `path`.
pub fn from_sqlite(path: &std::path::Path) -> SchemaShape {
    let conn = rusqlite::Connection::open(path).unwrap();
    let strings = |sql: &str| -> Vec<String> {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let mut shape = SchemaShape::new();
    for table in strings("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'") {
        let mut t = TableShape::default();
        let mut stmt = conn.prepare(&format!("PRAGMA table_info(\"{table}\")")).unwrap();
        let cols: Vec<(String, String, bool, i64)> =
            stmt.query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? == 1, r.get(5)?))).unwrap().map(Result::unwrap).collect();
        let mut primary_key: Vec<(i64, String)> = Vec::new();
        for (name, declared, not_null, pk) in cols {
            // SQLite lets a non-INTEGER PRIMARY KEY column hold NULL (a
            // historical quirk); syncgate never stores one, and PostgreSQL
            // makes every key column NOT NULL, which is what is meant.
            let nullable = !not_null && pk == 0;
            t.columns.insert(name.clone(), Column { family: sqlite_family(&table, &name, &declared), nullable });
            if pk > 0 {
                primary_key.push((pk, name));
            }
        }
        let mut stmt = conn.prepare(&format!("PRAGMA index_list(\"{table}\")")).unwrap();
        let indexes: Vec<(String, bool, String, bool)> = stmt
            .query_map([], |r| Ok((r.get(1)?, r.get::<_, i64>(2)? == 1, r.get(3)?, r.get::<_, i64>(4)? == 1)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut key_from_index = false;
        for (index, unique, origin, partial) in indexes {
            let mut stmt = conn.prepare(&format!("PRAGMA index_xinfo(\"{index}\")")).unwrap();
            // (name, collation, is key column); xinfo also lists the rowid.
            let cols: Vec<(Option<String>, String, bool)> = stmt
                .query_map([], |r| Ok((r.get(2)?, r.get(4)?, r.get::<_, i64>(5)? == 1)))
                .unwrap()
                .map(Result::unwrap)
                .filter(|c: &(Option<String>, String, bool)| c.2)
                .collect();
            if unique {
                key_from_index |= origin == "pk";
                let columns = cols
                    .into_iter()
                    .map(|(name, coll, _)| {
                        let rule = if coll.eq_ignore_ascii_case("NOCASE") { CaseRule::CaseInsensitive } else { CaseRule::Exact };
                        (name.expect("an expression in a SQLite unique index"), rule)
                    })
                    .collect();
                t.unique_keys.insert(UniqueKey { columns, partial });
            } else {
                t.indexes.insert(index, cols.into_iter().map(|c| c.0.expect("an expression in a SQLite index")).collect());
            }
        }
        // An INTEGER PRIMARY KEY is the rowid itself and has no index of its own.
        if !primary_key.is_empty() && !key_from_index {
            primary_key.sort();
            let columns = primary_key.into_iter().map(|(_, c)| (c, CaseRule::Exact)).collect();
            t.unique_keys.insert(UniqueKey { columns, partial: false });
        }
        let mut stmt = conn.prepare(&format!("PRAGMA foreign_key_list(\"{table}\")")).unwrap();
        // (id, seq, table, from, on_delete)
        let fks: Vec<(i64, i64, String, String, String)> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(6)?))).unwrap().map(Result::unwrap).collect();
        let mut by_id: BTreeMap<i64, ForeignKey> = BTreeMap::new();
        for (id, _seq, references, from, on_delete) in fks {
            let fk = by_id.entry(id).or_insert_with(|| ForeignKey { columns: Vec::new(), references, on_delete: on_delete.to_uppercase() });
            fk.columns.push(from);
        }
        t.foreign_keys = by_id.into_values().collect();
        shape.insert(table, t);
    }
    shape
}

/// Tables of PostgreSQL's that are bookkeeping, not syncgate's data (SQLite
/// keeps the same in `PRAGMA user_version`).
const PG_BOOKKEEPING: &[&str] = &["syncgate_schema"];

/// The schema of the current schema (`public`) of a PostgreSQL database.
pub async fn from_postgres(client: &tokio_postgres::Client) -> SchemaShape {
    let mut shape = SchemaShape::new();
    let columns = client
        .query(
            "SELECT table_name::text, column_name::text, udt_name::text, is_nullable::text = 'YES'
             FROM information_schema.columns c
             WHERE table_schema = current_schema()
               AND EXISTS (SELECT 1 FROM information_schema.tables t
                           WHERE t.table_schema = c.table_schema AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE')",
            &[],
        )
        .await
        .unwrap();
    for row in columns {
        let (table, column, udt, nullable): (String, String, String, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
        if PG_BOOKKEEPING.contains(&table.as_str()) {
            continue;
        }
        let family = pg_family(&table, &column, &udt);
        shape.entry(table).or_default().columns.insert(column, Column { family, nullable });
    }
    let indexes = client
        .query(
            "SELECT t.relname::text, i.relname::text, ix.indisunique, ix.indpred IS NOT NULL,
                    array(SELECT pg_get_indexdef(ix.indexrelid, k, true) FROM generate_series(1, ix.indnkeyatts) k ORDER BY k)
             FROM pg_index ix
             JOIN pg_class i ON i.oid = ix.indexrelid
             JOIN pg_class t ON t.oid = ix.indrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE n.nspname = current_schema()",
            &[],
        )
        .await
        .unwrap();
    for row in indexes {
        let (table, index, unique, partial, keys): (String, String, bool, bool, Vec<String>) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let Some(t) = shape.get_mut(&table) else { continue };
        if unique {
            let columns = keys
                .into_iter()
                .map(|k| match k.strip_prefix("lower(").and_then(|k| k.strip_suffix(')')) {
                    Some(inner) => (inner.to_string(), CaseRule::CaseInsensitive),
                    None => (k, CaseRule::Exact),
                })
                .collect();
            t.unique_keys.insert(UniqueKey { columns, partial });
        } else {
            t.indexes.insert(index, keys);
        }
    }
    let fks = client
        .query(
            "SELECT t.relname::text, r.relname::text, c.confdeltype::text,
                    array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(attnum, pos)
                          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.pos)
             FROM pg_constraint c
             JOIN pg_class t ON t.oid = c.conrelid
             JOIN pg_class r ON r.oid = c.confrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE c.contype = 'f' AND n.nspname = current_schema()",
            &[],
        )
        .await
        .unwrap();
    for row in fks {
        let (table, references, action, columns): (String, String, String, Vec<String>) = (row.get(0), row.get(1), row.get(2), row.get(3));
        let on_delete = match action.as_str() {
            "a" => "NO ACTION",
            "r" => "RESTRICT",
            "c" => "CASCADE",
            "n" => "SET NULL",
            "d" => "SET DEFAULT",
            other => panic!("unknown ON DELETE action {other}"),
        };
        if let Some(t) = shape.get_mut(&table) {
            t.foreign_keys.insert(ForeignKey { columns, references, on_delete: on_delete.to_string() });
        }
    }
    shape
}

/// Every difference between two shapes, one line each (empty when they agree).
pub fn differences(left_name: &str, left: &SchemaShape, right_name: &str, right: &SchemaShape) -> Vec<String> {
    let mut out = Vec::new();
    let tables: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    for table in tables {
        let (Some(l), Some(r)) = (left.get(table), right.get(table)) else {
            let only = if left.contains_key(table) { left_name } else { right_name };
            out.push(format!("table {table}: only on {only}"));
            continue;
        };
        let columns: BTreeSet<&String> = l.columns.keys().chain(r.columns.keys()).collect();
        for c in columns {
            match (l.columns.get(c), r.columns.get(c)) {
                (Some(a), Some(b)) if a == b => {}
                (a, b) => out.push(format!("{table}.{c}: {left_name} {a:?}, {right_name} {b:?}")),
            }
        }
        for k in l.unique_keys.symmetric_difference(&r.unique_keys) {
            let only = if l.unique_keys.contains(k) { left_name } else { right_name };
            out.push(format!("{table}: unique key {k:?} only on {only}"));
        }
        let names: BTreeSet<&String> = l.indexes.keys().chain(r.indexes.keys()).collect();
        for i in names {
            if l.indexes.get(i) != r.indexes.get(i) {
                out.push(format!("{table}: index {i}: {left_name} {:?}, {right_name} {:?}", l.indexes.get(i), r.indexes.get(i)));
            }
        }
        for fk in l.foreign_keys.symmetric_difference(&r.foreign_keys) {
            let only = if l.foreign_keys.contains(fk) { left_name } else { right_name };
            out.push(format!("{table}: foreign key {fk:?} only on {only}"));
        }
    }
    out
}
