//! Rows picked by a condition tree rather than by id: the reads and the
//! bulk writes behind Supabase's data API (`/rest/v1`). The caller has
//! already checked every column name against the table and turned every
//! value into the column's type ([`Condition`] holds `&'static str` column
//! names from [`Table::columns`], so no text from a request ever becomes
//! SQL); this module writes the SQL both engines run the same way, reads a
//! page and its exact count from one snapshot, and writes many rows in one
//! writer transaction, each logged as `/api` writes are.
//!
//! How the two dialects are made to agree: NULLs sort as PostgreSQL sorts
//! them (last ascending, first descending) because every ORDER BY says so;
//! `like` is case-sensitive on both (SQLite's LIKE ignores ASCII case, so
//! there it becomes a GLOB); `is.unknown` is `IS NULL` (SQLite has no
//! `IS UNKNOWN`); and a pattern's `\` escapes the next character on both.

use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use super::error::StoreResult;
use super::records::{self, NewRecord, RecordChange, Visibility};
use super::rows;
use super::sql::{Conn, Engine, ToSqlValue};
use super::tables::Table;
use super::Store;

/// A value already in its column's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Int(i64),
    Real(f64),
    Bool(bool),
    /// Text, a timestamp in the stored form, or a date.
    Text(String),
}

impl Scalar {
    fn sql(&self) -> SqlValue {
        match self {
            Scalar::Int(n) => SqlValue::Integer(*n),
            Scalar::Real(f) => SqlValue::Real(*f),
            Scalar::Bool(b) => SqlValue::Integer(i64::from(*b)),
            Scalar::Text(s) => SqlValue::Text(s.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Comparison {
    fn sql(self) -> &'static str {
        match self {
            Comparison::Eq => "=",
            Comparison::Neq => "<>",
            Comparison::Gt => ">",
            Comparison::Gte => ">=",
            Comparison::Lt => "<",
            Comparison::Lte => "<=",
        }
    }
}

/// What `IS` tests for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsTest {
    /// NULL, and a boolean's UNKNOWN (the same thing).
    Null,
    True,
    False,
}

/// A condition on rows; a tree of them.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Compare {
        column: &'static str,
        cmp: Comparison,
        value: Scalar,
    },
    /// A LIKE pattern (`%`, `_`, `\` escapes), case-sensitive unless `ignore_case`.
    Like {
        column: &'static str,
        pattern: String,
        ignore_case: bool,
    },
    Is {
        column: &'static str,
        test: IsTest,
    },
    /// `column IN (…)`; an empty list matches nothing.
    In {
        column: &'static str,
        values: Vec<Scalar>,
    },
    Not(Box<Condition>),
    All(Vec<Condition>),
    Any(Vec<Condition>),
}

/// One ORDER BY term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderBy {
    pub column: &'static str,
    pub descending: bool,
    pub nulls_first: bool,
}

/// A page of matching rows.
#[derive(Debug, Clone)]
pub struct RowsQuery {
    pub table: Table,
    pub visible: Visibility,
    pub condition: Condition,
    pub order: Vec<OrderBy>,
    pub limit: usize,
    pub offset: u64,
    /// Also count every matching row (not only the page's).
    pub count: bool,
}

/// The page, and the count when one was asked for.
#[derive(Debug, Clone)]
pub struct Rows {
    pub rows: Vec<Value>,
    pub total: Option<u64>,
}

/// What a bulk write did.
#[derive(Debug, Clone)]
pub enum Affected {
    /// The rows as written (after an insert or update, before a delete).
    Rows(Vec<Value>),
    /// This many rows matched, more than the write may touch; nothing was written.
    TooMany(u64),
    /// Exactly one row was required and this many matched; nothing was written.
    NotOne(usize),
}

/// SQL for a condition, its values appended to `params` as `?N`.
struct SqlBuilder<'p> {
    engine: Engine,
    params: &'p mut Vec<SqlValue>,
}

impl SqlBuilder<'_> {
    fn bind(&mut self, v: SqlValue) -> String {
        self.params.push(v);
        format!("?{}", self.params.len())
    }

    fn condition(&mut self, c: &Condition) -> String {
        match c {
            Condition::Compare { column, cmp, value } => {
                let p = self.bind(value.sql());
                format!("{column} {} {p}", cmp.sql())
            }
            Condition::Like { column, pattern, ignore_case } => match (self.engine, ignore_case) {
                (Engine::Postgres, false) => format!("{column} LIKE {} ESCAPE '\\'", self.bind(SqlValue::Text(pattern.clone()))),
                (Engine::Postgres, true) => format!("{column} ILIKE {} ESCAPE '\\'", self.bind(SqlValue::Text(pattern.clone()))),
                (Engine::Sqlite, false) => format!("{column} GLOB {}", self.bind(SqlValue::Text(like_to_glob(pattern)))),
                (Engine::Sqlite, true) => format!("{column} LIKE {} ESCAPE '\\'", self.bind(SqlValue::Text(pattern.clone()))),
            },
            Condition::Is { column, test } => match test {
                IsTest::Null => format!("{column} IS NULL"),
                IsTest::True => format!("{column} IS TRUE"),
                IsTest::False => format!("{column} IS FALSE"),
            },
            Condition::In { values, .. } if values.is_empty() => "1 = 0".into(),
            Condition::In { column, values } => {
                let ps: Vec<String> = values.iter().map(|v| self.bind(v.sql())).collect();
                format!("{column} IN ({})", ps.join(", "))
            }
            Condition::Not(inner) => format!("NOT ({})", self.condition(inner)),
            Condition::All(items) if items.is_empty() => "1 = 1".into(),
            Condition::Any(items) if items.is_empty() => "1 = 0".into(),
            Condition::All(items) => self.joined(items, " AND "),
            Condition::Any(items) => self.joined(items, " OR "),
        }
    }

    fn joined(&mut self, items: &[Condition], with: &str) -> String {
        let parts: Vec<String> = items.iter().map(|i| format!("({})", self.condition(i))).collect();
        parts.join(with)
    }

    /// `WHERE` for the visible rows that match.
    fn where_clause(&mut self, visible: Visibility, condition: &Condition) -> String {
        let mut w = format!("({})", self.condition(condition));
        if let Visibility::OwnerOnly(id) = visible {
            w = format!("user_id = {} AND {w}", self.bind(SqlValue::Integer(id)));
        }
        w
    }
}

/// A LIKE pattern as a GLOB: `%`→`*`, `_`→`?`, and GLOB's own specials
/// (and anything `\`-escaped) matched literally by a one-character class.
fn like_to_glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let literal = match c {
            '%' => {
                out.push('*');
                continue;
            }
            '_' => {
                out.push('?');
                continue;
            }
            '\\' => chars.next().unwrap_or('\\'),
            other => other,
        };
        match literal {
            '*' | '?' | '[' => {
                out.push('[');
                out.push(literal);
                out.push(']');
            }
            other => out.push(other),
        }
    }
    out
}

/// `ORDER BY …` with NULLs placed explicitly, then `id` so pages are stable.
fn order_sql(order: &[OrderBy]) -> String {
    let mut terms: Vec<String> = order
        .iter()
        .map(|o| {
            format!("{} {} NULLS {}", o.column, if o.descending { "DESC" } else { "ASC" }, if o.nulls_first { "FIRST" } else { "LAST" })
        })
        .collect();
    if !order.iter().any(|o| o.column == "id") {
        terms.push("id ASC".into());
    }
    terms.join(", ")
}

fn bound(params: &[SqlValue]) -> Vec<&dyn ToSqlValue> {
    params.iter().map(|p| p as &dyn ToSqlValue).collect()
}

/// The visible rows matching, in order, at most `limit` after `offset`.
fn select_rows(conn: &Conn<'_>, q: &RowsQuery) -> StoreResult<Vec<Value>> {
    let mut params = Vec::new();
    let mut b = SqlBuilder { engine: conn.engine(), params: &mut params };
    let w = b.where_clause(q.visible, &q.condition);
    let sql = format!(
        "{} WHERE {w} ORDER BY {} LIMIT {} OFFSET {}",
        rows::select_sql(q.table),
        order_sql(&q.order),
        q.limit,
        q.offset.min(i64::MAX as u64)
    );
    conn.query_map(&sql, &bound(&params), |r| Ok(rows::row_to_json(q.table, r)))
}

fn count_rows(conn: &Conn<'_>, table: Table, visible: Visibility, condition: &Condition) -> StoreResult<u64> {
    let mut params = Vec::new();
    let mut b = SqlBuilder { engine: conn.engine(), params: &mut params };
    let w = b.where_clause(visible, condition);
    conn.value(&format!("SELECT count(*) FROM {} WHERE {w}", table.name()), &bound(&params))
}

/// Ids of the visible rows matching, by id, at most `cap`.
fn matching_ids(conn: &Conn<'_>, table: Table, visible: Visibility, condition: &Condition, cap: usize) -> StoreResult<Vec<i64>> {
    let mut params = Vec::new();
    let mut b = SqlBuilder { engine: conn.engine(), params: &mut params };
    let w = b.where_clause(visible, condition);
    conn.query_map(&format!("SELECT id FROM {} WHERE {w} ORDER BY id LIMIT {cap}", table.name()), &bound(&params), |r| r.get(0))
}

impl Store {
    /// A page of matching rows and, if asked, how many match in all, both
    /// from one snapshot so the count agrees with the page.
    pub async fn matching_rows(&self, q: RowsQuery) -> StoreResult<Rows> {
        self.read(move |conn| {
            if !q.count {
                return Ok(Rows { rows: select_rows(conn, &q)?, total: None });
            }
            conn.begin_snapshot()?;
            let result = select_rows(conn, &q).and_then(|rows| {
                let total = count_rows(conn, q.table, q.visible, &q.condition)?;
                Ok(Rows { rows, total: Some(total) })
            });
            let ended = conn.end_snapshot();
            let rows = result?;
            ended?;
            Ok(rows)
        })
        .await
    }

    /// Insert every record in one transaction (all or none), each logged.
    pub async fn create_records(&self, new: Vec<NewRecord>) -> StoreResult<Vec<Value>> {
        self.writer.write(move |tx| new.iter().map(|n| records::insert_in(tx, n)).collect()).await
    }

    /// Apply each change in one transaction, each only if its row is still
    /// visible and still matches `condition` (a row changed to no longer
    /// match since it was read is left alone). Returns the rows after.
    pub async fn change_matching(&self, condition: Condition, changes: Vec<RecordChange>) -> StoreResult<Vec<Value>> {
        self.writer
            .write(move |tx| {
                let mut out = Vec::with_capacity(changes.len());
                for change in &changes {
                    let still = Condition::All(vec![
                        Condition::Compare { column: "id", cmp: Comparison::Eq, value: Scalar::Int(change.id) },
                        condition.clone(),
                    ]);
                    if matching_ids(tx.conn(), change.table, change.visible, &still, 1)?.is_empty() {
                        continue;
                    }
                    out.push(records::change_in(tx, change)?);
                }
                Ok(out)
            })
            .await
    }

    /// Delete the visible rows matching, in one transaction, each as
    /// `/api`'s delete does (a client takes its pipeline entries and leaves
    /// its meetings). At most `max` rows; with `single`, exactly one.
    pub async fn delete_matching(
        &self,
        table: Table,
        visible: Visibility,
        condition: Condition,
        max: usize,
        single: bool,
    ) -> StoreResult<Affected> {
        self.writer
            .write(move |tx| {
                let ids = matching_ids(tx.conn(), table, visible, &condition, max.saturating_add(1))?;
                if single && ids.len() != 1 {
                    return Ok(Affected::NotOne(ids.len()));
                }
                if ids.len() > max {
                    return Ok(Affected::TooMany(count_rows(tx.conn(), table, visible, &condition)?));
                }
                let mut gone = Vec::with_capacity(ids.len());
                for id in ids {
                    gone.extend(records::delete_in(tx, table, id)?);
                }
                Ok(Affected::Rows(gone))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_become_globs_that_match_the_same_text() {
        assert_eq!(like_to_glob("Intro%"), "Intro*");
        assert_eq!(like_to_glob("a_c"), "a?c");
        assert_eq!(like_to_glob("100\\%"), "100%");
        assert_eq!(like_to_glob("what?*[x]"), "what[?][*][[]x]");
        assert_eq!(like_to_glob("end\\"), "end\\");
    }

    #[test]
    fn order_always_ends_on_id_and_says_where_nulls_go() {
        let o = [OrderBy { column: "starts_at", descending: true, nulls_first: true }];
        assert_eq!(order_sql(&o), "starts_at DESC NULLS FIRST, id ASC");
        assert_eq!(order_sql(&[]), "id ASC");
    }
}
