//! A parsed PostgREST query made into the store's terms for one table:
//! every column name checked against the table (`42703` when it has no such
//! column, which also keeps request text out of SQL), every value turned
//! into the column's type as PostgreSQL would read it (`22P02` when it is
//! not one), the `order` terms with PostgreSQL's NULL placement, and the
//! `select` list that shapes each returned row.

use serde_json::Value;

use super::error::{RestError, RestResult};
use super::query::{Filter, IsValue, Nulls, Op, Order};
use crate::store::matching::{Comparison, Condition, IsTest, OrderBy, Scalar};
use crate::store::tables::{PgType, Table};
use crate::store::timefmt;
use warp::http::StatusCode;

/// The table's own spelling of a column (a `&'static str`), or `42703`.
pub fn column(table: Table, name: &str) -> RestResult<(&'static str, PgType)> {
    table.columns().iter().find(|(n, _)| *n == name).copied().ok_or_else(|| RestError::no_column(table.name(), name))
}

/// The top-level filters (all must hold) as one condition.
pub fn condition(table: Table, filters: &[Filter]) -> RestResult<Condition> {
    Ok(Condition::All(filters.iter().map(|f| filter(table, f)).collect::<RestResult<_>>()?))
}

fn filter(table: Table, f: &Filter) -> RestResult<Condition> {
    let (c, negated) = match f {
        Filter::Cond { column: name, negated, op } => (comparison(table, name, op)?, *negated),
        Filter::Group { any, negated, items } => {
            let items = items.iter().map(|i| filter(table, i)).collect::<RestResult<Vec<_>>>()?;
            (if *any { Condition::Any(items) } else { Condition::All(items) }, *negated)
        }
    };
    Ok(if negated { Condition::Not(Box::new(c)) } else { c })
}

fn comparison(table: Table, name: &str, op: &Op) -> RestResult<Condition> {
    let (column, ty) = column(table, name)?;
    let compare = |cmp: Comparison, v: &str| -> RestResult<Condition> {
        not_json(table, column, ty, "=")?;
        Ok(Condition::Compare { column, cmp, value: scalar(ty, v)? })
    };
    match op {
        Op::Eq(v) => compare(Comparison::Eq, v),
        Op::Neq(v) => compare(Comparison::Neq, v),
        Op::Gt(v) => compare(Comparison::Gt, v),
        Op::Gte(v) => compare(Comparison::Gte, v),
        Op::Lt(v) => compare(Comparison::Lt, v),
        Op::Lte(v) => compare(Comparison::Lte, v),
        Op::Like(p) | Op::ILike(p) => {
            if ty != PgType::Text {
                return Err(no_operator(table, column, ty, if matches!(op, Op::Like(_)) { "~~" } else { "~~*" }));
            }
            if ends_in_lone_escape(p) {
                return Err(RestError::new(StatusCode::BAD_REQUEST, "22025", "LIKE pattern must not end with escape character"));
            }
            Ok(Condition::Like { column, pattern: p.clone(), ignore_case: matches!(op, Op::ILike(_)) })
        }
        Op::Is(IsValue::Null) => Ok(Condition::Is { column, test: IsTest::Null }),
        Op::Is(v) => {
            if ty != PgType::Bool {
                return Err(RestError::new(
                    StatusCode::BAD_REQUEST,
                    "42804",
                    format!("argument of IS {} must be type boolean, not type {}", is_word(*v), ty.name()),
                ));
            }
            Ok(Condition::Is {
                column,
                test: match v {
                    IsValue::True => IsTest::True,
                    IsValue::False => IsTest::False,
                    IsValue::Null | IsValue::Unknown => IsTest::Null,
                },
            })
        }
        Op::In(values) => {
            not_json(table, column, ty, "=")?;
            Ok(Condition::In { column, values: values.iter().map(|v| scalar(ty, v)).collect::<RestResult<_>>()? })
        }
    }
}

fn is_word(v: IsValue) -> &'static str {
    match v {
        IsValue::Null => "NULL",
        IsValue::True => "TRUE",
        IsValue::False => "FALSE",
        IsValue::Unknown => "UNKNOWN",
    }
}

/// JSON columns are filtered only with `is.null` (their stored text is not
/// comparable the same way on both engines).
fn not_json(table: Table, column: &str, ty: PgType, op: &str) -> RestResult<()> {
    if ty == PgType::Jsonb {
        return Err(no_operator(table, column, ty, op));
    }
    Ok(())
}

fn no_operator(table: Table, column: &str, ty: PgType, op: &str) -> RestError {
    RestError::new(StatusCode::BAD_REQUEST, "42883", format!("operator does not exist: {} {op} unknown", ty.name()))
        .hint(format!("{}.{column} cannot be filtered that way here", table.name()))
}

/// A pattern whose last character is an unescaped `\`.
fn ends_in_lone_escape(p: &str) -> bool {
    p.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

/// A filter value read as the column's type, as PostgreSQL reads a literal.
pub fn scalar(ty: PgType, v: &str) -> RestResult<Scalar> {
    let bad = || RestError::bad_value(type_word(ty), v);
    match ty {
        PgType::Int8 => v.trim().parse::<i64>().map(Scalar::Int).map_err(|_| bad()),
        PgType::Float8 => v.trim().parse::<f64>().ok().filter(|f| f.is_finite()).map(Scalar::Real).ok_or_else(bad),
        PgType::Bool => match v.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "on" | "1" => Ok(Scalar::Bool(true)),
            "false" | "f" | "no" | "n" | "off" | "0" => Ok(Scalar::Bool(false)),
            _ => Err(bad()),
        },
        PgType::Timestamptz => timestamp(v).map(Scalar::Text).ok_or_else(bad),
        PgType::Date => timefmt::parse_date(v.trim()).map(|d| Scalar::Text(timefmt::format_date(d))).ok_or_else(bad),
        PgType::Text | PgType::Jsonb => Ok(Scalar::Text(v.to_string())),
    }
}

/// PostgreSQL's name of the type in its "invalid input syntax" message.
fn type_word(ty: PgType) -> &'static str {
    match ty {
        PgType::Int8 => "bigint",
        PgType::Float8 => "double precision",
        PgType::Bool => "boolean",
        PgType::Timestamptz => "timestamp with time zone",
        PgType::Date => "date",
        PgType::Text => "text",
        PgType::Jsonb => "json",
    }
}

/// A timestamp as PostgreSQL takes one in a filter: RFC 3339, or without an
/// offset (read as UTC, the session zone of a Supabase project), with a
/// space for the `T`, or a bare date (its midnight, UTC). In the stored form.
fn timestamp(v: &str) -> Option<String> {
    let v = v.trim().replacen(' ', "T", 1);
    let candidates = [v.clone(), format!("{v}Z"), format!("{v}T00:00:00Z")];
    candidates.iter().find_map(|c| timefmt::parse_checked(c).ok()).map(timefmt::format)
}

/// The `order` terms; NULLs where PostgreSQL puts them unless the term says.
pub fn order(table: Table, terms: &[Order]) -> RestResult<Vec<OrderBy>> {
    terms
        .iter()
        .map(|o| {
            let (column, ty) = column(table, &o.column)?;
            if ty == PgType::Jsonb {
                return Err(no_operator(table, column, ty, "<"));
            }
            let nulls_first = match o.nulls {
                Some(Nulls::First) => true,
                Some(Nulls::Last) => false,
                None => o.descending,
            };
            Ok(OrderBy { column, descending: o.descending, nulls_first })
        })
        .collect()
}

/// The `select` list checked: None keeps every column.
pub fn projection(table: Table, select: Option<&[String]>) -> RestResult<Option<Vec<&'static str>>> {
    select.map(|cols| cols.iter().map(|c| column(table, c).map(|(name, _)| name)).collect()).transpose()
}

/// A row as the request asked to see it: only the selected columns, in the
/// order asked, and without nulls when `strip_nulls`.
pub fn shape(row: Value, columns: Option<&[&'static str]>, strip_nulls: bool) -> Value {
    let Value::Object(map) = row else { return row };
    let mut out = serde_json::Map::new();
    match columns {
        Some(cols) => {
            for c in cols {
                if let Some(v) = map.get(*c) {
                    out.insert((*c).to_string(), v.clone());
                }
            }
        }
        None => out = map,
    }
    if strip_nulls {
        out.retain(|_, v| !v.is_null());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rest_v1::query::{parse, Limits};

    fn translate(table: Table, pairs: &[(&str, &str)]) -> RestResult<Condition> {
        let owned: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        condition(table, &parse(&owned, Limits::default())?.filters)
    }

    #[test]
    fn values_take_their_column_s_type() {
        let c = translate(Table::Meetings, &[("client_id", "eq.7"), ("starts_at", "gte.2026-12-01"), ("all_day", "is.false")]).unwrap();
        assert_eq!(
            c,
            Condition::All(vec![
                Condition::Compare { column: "client_id", cmp: Comparison::Eq, value: Scalar::Int(7) },
                Condition::Compare { column: "starts_at", cmp: Comparison::Gte, value: Scalar::Text("2026-12-01T00:00:00.000Z".into()) },
                Condition::Is { column: "all_day", test: IsTest::False },
            ])
        );
        let offset = translate(Table::Meetings, &[("starts_at", "lt.2026-12-01T10:00:00+01:00")]).unwrap();
        assert!(format!("{offset:?}").contains("2026-12-01T09:00:00.000Z"), "{offset:?}");
    }

    #[test]
    fn wrong_columns_types_and_operators_are_postgres_s_errors() {
        let code = |pairs: &[(&str, &str)]| translate(Table::Meetings, pairs).unwrap_err().code;
        assert_eq!(code(&[("colour", "eq.red")]), "42703");
        assert_eq!(code(&[("client_id", "eq.seven")]), "22P02");
        assert_eq!(code(&[("starts_at", "gt.tomorrow")]), "22P02");
        assert_eq!(code(&[("client_id", "like.1*")]), "42883");
        assert_eq!(code(&[("attendees", "eq.[]")]), "42883");
        assert_eq!(code(&[("title", "is.true")]), "42804");
        assert_eq!(code(&[("title", "like.a\\")]), "22025");
        assert_eq!(code(&[("or", "(title.eq.a,colour.eq.b)")]), "42703");
        assert!(translate(Table::Meetings, &[("title", "like.100\\\\")]).is_ok());
        assert_eq!(order(Table::Clients, &[Order { column: "colour".into(), descending: false, nulls: None }]).unwrap_err().code, "42703");
    }

    #[test]
    fn rows_are_shaped_as_selected() {
        let row = serde_json::json!({"id": 1, "name": "Ann", "email": null});
        assert_eq!(shape(row.clone(), Some(&["name", "id"]), false), serde_json::json!({"name": "Ann", "id": 1}));
        assert_eq!(shape(row, None, true), serde_json::json!({"id": 1, "name": "Ann"}));
    }
}
