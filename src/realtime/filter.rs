//! Supabase-style row filters on a `postgres_changes` binding
//! (`column=op.value`, op one of eq, neq, lt, lte, gt, gte, in). This module
//! owns parsing a filter string, checking it against a table's columns and
//! types, and matching a REST-shaped record against it. Deciding which
//! records (new and/or old row) to test is the caller's business.

use std::cmp::Ordering;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime};

use super::protocol::Refusal;
use crate::store::tables::{PgType, Table, ALL_TABLES};

/// Most values an `in` list may hold (the same cap Supabase applies).
pub const MAX_IN_VALUES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "in" => Op::In,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Neq => "neq",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::In => "in",
        }
    }
}

/// An operand parsed as its column's type, so matching does no text parsing
/// except for the record's own value where that is a string (timestamps,
/// dates).
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    /// Nanoseconds since the Unix epoch, UTC: instants compare as integers
    /// whatever offset they were written with.
    Instant(i128),
    Date(Date),
    Json(Value),
}

/// The operands prepared for one table's column.
#[derive(Debug, Clone)]
struct Compiled {
    ty: PgType,
    operands: Vec<Operand>,
}

/// A parsed filter, kept by the binding it belongs to. Operands are typed
/// once here so `matches` does no parsing of the filter text.
#[derive(Debug, Clone)]
pub struct RowFilter {
    column: String,
    op: Op,
    /// The operand(s) as written (after `in` list unquoting), kept so a
    /// table the filter was not prepared for can still be checked.
    raw: Vec<String>,
    /// Per table: the operands typed for that table's column, or None when
    /// the table lacks the column or the value is not valid for its type
    /// (the filter then never matches that table's rows).
    compiled: Vec<(Table, Option<Compiled>)>,
}

impl RowFilter {
    /// Parses `column=op.value`.
    ///
    /// `table` is Some when the binding names a table: then the column must
    /// exist in it and every value must parse as the column's type, else an
    /// Err with a sentence a user can act on. When `table` is None (a
    /// binding on all tables) nothing is checked against columns here; the
    /// operands are prepared for every table up front and a table whose
    /// column is missing or whose type rejects the value never matches.
    pub fn parse(filter: &str, table: Option<Table>) -> Result<RowFilter, Refusal> {
        let Some((column, rest)) = filter.split_once('=') else {
            return Err(format!("filter {} must look like column=op.value (for example id=eq.7)", quote(filter)).into());
        };
        if column.is_empty() {
            return Err(format!("filter {} names no column before \"=\"", quote(filter)).into());
        }
        let Some((op_text, value)) = rest.split_once('.') else {
            return Err(format!("filter {} must look like column=op.value: there is no \".\" after the operator", quote(filter)).into());
        };
        let Some(op) = Op::parse(op_text) else {
            return Err(format!(
                "unknown filter operator {} in {}: use one of eq, neq, lt, lte, gt, gte, in",
                quote(op_text),
                quote(filter)
            )
            .into());
        };
        let raw = if op == Op::In { parse_in_list(value)? } else { vec![value.to_owned()] };

        let compiled = match table {
            Some(t) => {
                let Some(ty) = t.column_type(column) else {
                    return Err(format!("column {} does not exist in table {}", quote(column), t.name()).into());
                };
                let operands = raw
                    .iter()
                    .map(|v| {
                        parse_operand(ty, v).ok_or_else(|| {
                            Refusal(format!(
                                "filter value {} is not a valid {} for column {}{}",
                                quote(v),
                                ty.name(),
                                column,
                                type_hint(ty)
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, Refusal>>()?;
                vec![(t, Some(Compiled { ty, operands }))]
            }
            None => ALL_TABLES.iter().map(|&t| (t, compile(t, column, &raw))).collect(),
        };

        Ok(RowFilter { column: column.to_owned(), op, raw, compiled })
    }

    /// The column the filter tests.
    pub fn column(&self) -> &str {
        &self.column
    }

    /// The operator as written (`eq`, `in`, ...).
    pub fn op_name(&self) -> &'static str {
        self.op.name()
    }

    /// Does this record (a JSON object: the REST row of `table`) match?
    ///
    /// Values compare as the column's type. A null or absent value never
    /// matches any operator, `neq` included, as in SQL.
    pub fn matches(&self, table: Table, record: &Value) -> bool {
        let found = self.compiled.iter().find(|(t, _)| *t == table);
        match found {
            Some((_, Some(c))) => self.eval(c, record),
            Some((_, None)) => false,
            // Not prepared for this table (a filter parsed for another
            // table, or a table added after parse): prepare it now.
            None => match compile(table, &self.column, &self.raw) {
                Some(c) => self.eval(&c, record),
                None => false,
            },
        }
    }

    fn eval(&self, c: &Compiled, record: &Value) -> bool {
        let Some(value) = record.get(&self.column) else {
            return false;
        };
        if value.is_null() {
            return false;
        }
        if c.ty == PgType::Jsonb {
            // jsonb has only equality here: ordering JSON documents has no
            // meaning a user could rely on.
            return match self.op {
                Op::Eq | Op::In => c.operands.iter().any(|o| matches!(o, Operand::Json(j) if json_eq(value, j))),
                Op::Neq => c.operands.iter().all(|o| matches!(o, Operand::Json(j) if !json_eq(value, j))),
                Op::Lt | Op::Lte | Op::Gt | Op::Gte => false,
            };
        }
        let Some(rec) = RecordValue::read(c.ty, value) else {
            return false;
        };
        let cmp = |o: &Operand| rec.compare(o);
        match self.op {
            Op::In => c.operands.iter().any(|o| cmp(o) == Some(Ordering::Equal)),
            op => {
                let Some(ord) = c.operands.first().and_then(cmp) else {
                    return false;
                };
                match op {
                    Op::Eq => ord == Ordering::Equal,
                    Op::Neq => ord != Ordering::Equal,
                    Op::Lt => ord == Ordering::Less,
                    Op::Lte => ord != Ordering::Greater,
                    Op::Gt => ord == Ordering::Greater,
                    Op::Gte => ord != Ordering::Less,
                    Op::In => false,
                }
            }
        }
    }
}

/// Prepares the operands for `table`, or None when the table lacks the
/// column or a value is not valid for the column's type.
fn compile(table: Table, column: &str, raw: &[String]) -> Option<Compiled> {
    let ty = table.column_type(column)?;
    let operands = raw.iter().map(|v| parse_operand(ty, v)).collect::<Option<Vec<_>>>()?;
    Some(Compiled { ty, operands })
}

/// A record's value read as its column's type, borrowing where it can.
enum RecordValue<'a> {
    Int(i64),
    Float(f64),
    Text(&'a str),
    Bool(bool),
    Instant(i128),
    Date(Date),
}

impl<'a> RecordValue<'a> {
    fn read(ty: PgType, v: &'a Value) -> Option<RecordValue<'a>> {
        Some(match ty {
            PgType::Int8 => match v.as_i64() {
                Some(i) => RecordValue::Int(i),
                // A u64 above i64::MAX or a float in an int column: compare
                // by value rather than refuse.
                None => RecordValue::Float(v.as_f64()?),
            },
            PgType::Float8 => RecordValue::Float(v.as_f64()?),
            PgType::Text => RecordValue::Text(v.as_str()?),
            PgType::Bool => RecordValue::Bool(v.as_bool()?),
            PgType::Timestamptz => RecordValue::Instant(parse_instant(v.as_str()?)?),
            PgType::Date => RecordValue::Date(parse_date(v.as_str()?)?),
            PgType::Jsonb => return None,
        })
    }

    /// The record value's order relative to the operand; None when they
    /// cannot be compared (which then never matches).
    fn compare(&self, o: &Operand) -> Option<Ordering> {
        match (self, o) {
            (RecordValue::Int(a), Operand::Int(b)) => Some(a.cmp(b)),
            (RecordValue::Float(a), Operand::Int(b)) => a.partial_cmp(&(*b as f64)),
            (RecordValue::Int(a), Operand::Float(b)) => (*a as f64).partial_cmp(b),
            (RecordValue::Float(a), Operand::Float(b)) => a.partial_cmp(b),
            // Byte order, like Postgres' "C" collation; str's Ord is that.
            (RecordValue::Text(a), Operand::Text(b)) => Some((*a).cmp(b.as_str())),
            (RecordValue::Bool(a), Operand::Bool(b)) => Some(a.cmp(b)),
            (RecordValue::Instant(a), Operand::Instant(b)) => Some(a.cmp(b)),
            (RecordValue::Date(a), Operand::Date(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// Parses one operand as `ty`. Non-text types tolerate surrounding
/// whitespace, as Postgres' input functions do.
fn parse_operand(ty: PgType, raw: &str) -> Option<Operand> {
    let t = raw.trim();
    Some(match ty {
        PgType::Int8 => Operand::Int(t.parse::<i64>().ok()?),
        PgType::Float8 => {
            let f = t.parse::<f64>().ok()?;
            // NaN compares as nothing; refusing it keeps neq honest.
            if f.is_nan() {
                return None;
            }
            Operand::Float(f)
        }
        PgType::Text => Operand::Text(raw.to_owned()),
        PgType::Bool => Operand::Bool(parse_bool(t)?),
        PgType::Timestamptz => Operand::Instant(parse_instant(t)?),
        PgType::Date => Operand::Date(parse_date(t)?),
        // Operand as JSON text; anything that is not JSON is meant as a
        // JSON string (`status=eq.open` for `"open"`).
        PgType::Jsonb => Operand::Json(serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))),
    })
}

fn parse_bool(s: &str) -> Option<bool> {
    // The spellings Postgres' boolean input accepts (whole words only).
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "on" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// `YYYY-MM-DD`, exactly.
fn parse_date(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let year = i32::try_from(num(0..4)?).ok()?;
    let month = Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let day = u8::try_from(num(8..10)?).ok()?;
    Date::from_calendar_date(year, month, day).ok()
}

/// An instant as Unix nanoseconds. Accepts RFC 3339 with any offset, plus
/// the spellings Postgres itself prints or accepts that users paste into
/// filters: a space for `T`, `+HH` / `+HHMM` offsets, no offset (UTC, the
/// server's time zone) and a bare date (its midnight, UTC).
fn parse_instant(s: &str) -> Option<i128> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.unix_timestamp_nanos());
    }
    if s.len() == 10 {
        let d = parse_date(s)?;
        return Some(d.midnight().assume_utc().unix_timestamp_nanos());
    }
    // Date and time separated by a space: byte 10 is ASCII, so slicing
    // around it stays on char boundaries.
    let normalized = match (s.as_bytes().get(10), s.get(..10), s.get(11..)) {
        (Some(b' '), Some(date), Some(time)) => format!("{date}T{time}"),
        _ => s.to_owned(),
    };
    let candidates =
        [normalized.clone(), format!("{normalized}Z"), format!("{normalized}:00"), insert_offset_colon(&normalized).unwrap_or_default()];
    candidates
        .iter()
        .filter(|c| !c.is_empty())
        .find_map(|c| OffsetDateTime::parse(c, &Rfc3339).ok())
        .map(OffsetDateTime::unix_timestamp_nanos)
}

/// `...+0100` → `...+01:00`; None when the text does not end that way.
fn insert_offset_colon(s: &str) -> Option<String> {
    let n = s.len();
    let tail = s.get(n.checked_sub(5)?..)?;
    let tb = tail.as_bytes();
    let sign_ok = matches!(tb.first(), Some(b'+' | b'-'));
    if !sign_ok || !tb.iter().skip(1).all(u8::is_ascii_digit) {
        return None;
    }
    Some(format!("{}:{}", s.get(..n - 2)?, s.get(n - 2..)?))
}

/// Splits `(a,b,"c,d")` into its values: commas separate, double quotes
/// protect commas and parentheses, `\` escapes the next character inside
/// quotes, and whitespace around an unquoted value is dropped (the rules of
/// a Postgres array literal, which is what Supabase turns the list into).
fn parse_in_list(value: &str) -> Result<Vec<String>, Refusal> {
    let inner = value
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| format!("an in filter needs a parenthesized list like in.(a,b,c), got {}", quote(value)))?;
    if inner.trim().is_empty() {
        return Err(format!("an in filter needs between 1 and {MAX_IN_VALUES} values, got none").into());
    }
    let mut items: Vec<String> = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        // One item: skip leading whitespace, then quoted or bare.
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        let item = if chars.peek() == Some(&'"') {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    None => return Err(format!("an in filter has an unterminated quoted value in {}", quote(value)).into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => s.push(c),
                        None => return Err(format!("an in filter has an unterminated quoted value in {}", quote(value)).into()),
                    },
                    Some(c) => s.push(c),
                }
            }
            while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                chars.next();
            }
            if !matches!(chars.peek(), None | Some(',')) {
                return Err(format!("an in filter has text after a closing quote in {}: separate values with commas", quote(value)).into());
            }
            s
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                s.push(c);
                chars.next();
            }
            s.trim_end_matches(|c: char| c.is_ascii_whitespace()).to_owned()
        };
        items.push(item);
        if items.len() > MAX_IN_VALUES {
            // Count the rest only to report it; no more allocation.
            let more = count_remaining_items(&mut chars);
            return Err(format!("an in filter takes at most {MAX_IN_VALUES} values, got {}", items.len() + more).into());
        }
        match chars.next() {
            None => break,
            Some(',') => continue,
            // Unreachable: both branches stop only at a comma or the end.
            Some(_) => break,
        }
    }
    Ok(items)
}

/// Counts the values left after the current one (approximate where quotes
/// are malformed; only used in an error message).
fn count_remaining_items(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> usize {
    let mut count = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for c in chars {
        if escaped {
            escaped = false;
        } else if in_quotes && c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if c == ',' && !in_quotes {
            count += 1;
        }
    }
    count
}

/// Extra guidance for the types whose spelling users most often get wrong.
fn type_hint(ty: PgType) -> &'static str {
    match ty {
        PgType::Timestamptz => " (use RFC 3339, e.g. 2026-11-23T10:00:00Z)",
        PgType::Date => " (use YYYY-MM-DD)",
        PgType::Bool => " (use true or false)",
        _ => "",
    }
}

/// A user-supplied string quoted for an error sentence, shortened so a huge
/// filter cannot produce a huge message.
fn quote(s: &str) -> String {
    const MAX: usize = 60;
    let shown = match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or("")),
        None => s.to_owned(),
    };
    format!("{shown:?}")
}

/// JSON equality as jsonb sees it: numbers by value (1 equals 1.0), object
/// keys unordered. Iterative so no record, however deep, can exhaust the
/// stack.
fn json_eq(a: &Value, b: &Value) -> bool {
    let mut stack: Vec<(&Value, &Value)> = vec![(a, b)];
    while let Some((x, y)) = stack.pop() {
        match (x, y) {
            (Value::Null, Value::Null) => {}
            (Value::Bool(p), Value::Bool(q)) => {
                if p != q {
                    return false;
                }
            }
            (Value::Number(p), Value::Number(q)) => {
                let same = match (p.as_i64(), q.as_i64(), p.as_u64(), q.as_u64()) {
                    (Some(i), Some(j), _, _) => i == j,
                    (_, _, Some(i), Some(j)) => i == j,
                    _ => match (p.as_f64(), q.as_f64()) {
                        (Some(f), Some(g)) => f == g,
                        _ => false,
                    },
                };
                if !same {
                    return false;
                }
            }
            (Value::String(p), Value::String(q)) => {
                if p != q {
                    return false;
                }
            }
            (Value::Array(p), Value::Array(q)) => {
                if p.len() != q.len() {
                    return false;
                }
                stack.extend(p.iter().zip(q.iter()));
            }
            (Value::Object(p), Value::Object(q)) => {
                if p.len() != q.len() {
                    return false;
                }
                for (k, v) in p {
                    match q.get(k) {
                        Some(w) => stack.push((v, w)),
                        None => return false,
                    }
                }
            }
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(s: &str, t: Option<Table>) -> RowFilter {
        match RowFilter::parse(s, t) {
            Ok(f) => f,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn err(s: &str, t: Option<Table>) -> String {
        match RowFilter::parse(s, t) {
            Ok(f) => panic!("{s} parsed: {f:?}"),
            Err(e) => e.0,
        }
    }

    /// Checks a filter on `table` against a single column value, both with
    /// the table known at parse time and with table None.
    fn check(table: Table, filter: &str, column: &str, value: Value) -> bool {
        let rec = json!({ column: value });
        let known = f(filter, Some(table)).matches(table, &rec);
        let lazy = f(filter, None).matches(table, &rec);
        assert_eq!(known, lazy, "{filter} on {rec}");
        known
    }

    const M: Table = Table::Meetings;
    const P: Table = Table::Pipeline;

    #[test]
    fn int8_ops() {
        assert!(check(M, "id=eq.7", "id", json!(7)));
        assert!(!check(M, "id=eq.7", "id", json!(8)));
        assert!(check(M, "id=neq.7", "id", json!(8)));
        assert!(!check(M, "id=neq.7", "id", json!(7)));
        assert!(check(M, "id=lt.7", "id", json!(6)));
        assert!(!check(M, "id=lt.7", "id", json!(7)));
        assert!(check(M, "id=lte.7", "id", json!(7)));
        assert!(!check(M, "id=lte.7", "id", json!(8)));
        assert!(check(M, "id=gt.7", "id", json!(8)));
        assert!(!check(M, "id=gt.7", "id", json!(7)));
        assert!(check(M, "id=gte.7", "id", json!(7)));
        assert!(!check(M, "id=gte.7", "id", json!(6)));
        assert!(check(M, "id=in.(1,7,9)", "id", json!(7)));
        assert!(!check(M, "id=in.(1,9)", "id", json!(7)));
        assert!(check(M, "id=in.( 1 , 7 )", "id", json!(7)));
        assert!(check(M, "id=eq.-9223372036854775808", "id", json!(i64::MIN)));
        assert!(check(M, "id=lt.0", "id", json!(-1)));
        // Big ints compare exactly, not via f64.
        assert!(!check(M, "id=eq.9007199254740993", "id", json!(9007199254740992i64)));
        // A string in an int column is not a number.
        assert!(!check(M, "id=eq.7", "id", json!("7")));
    }

    #[test]
    fn float8_ops() {
        assert!(check(P, "value=eq.1.5", "value", json!(1.5)));
        assert!(check(P, "value=eq.2", "value", json!(2.0)));
        assert!(check(P, "value=eq.2", "value", json!(2)));
        assert!(check(P, "value=gt.1000", "value", json!(1000.5)));
        assert!(check(P, "value=lte.1e3", "value", json!(1000)));
        assert!(check(P, "value=neq.1", "value", json!(1.1)));
        assert!(check(P, "value=lt.-0.5", "value", json!(-1)));
        assert!(check(P, "value=in.(1.5,2.5)", "value", json!(2.5)));
        assert!(!check(P, "value=gte.3", "value", json!(2.999)));
        assert!(check(P, "value=lt.inf", "value", json!(1e300)));
        assert!(err("value=eq.NaN", Some(P)).contains("float8"));
        assert!(err("value=eq.abc", Some(P)).contains("not a valid float8 for column value"));
    }

    #[test]
    fn text_ops() {
        assert!(check(M, "title=eq.Review", "title", json!("Review")));
        assert!(!check(M, "title=eq.review", "title", json!("Review")));
        assert!(check(M, "title=neq.a", "title", json!("b")));
        // Byte order: uppercase sorts before lowercase.
        assert!(check(M, "title=lt.a", "title", json!("Z")));
        assert!(check(M, "title=gt.Z", "title", json!("a")));
        assert!(check(M, "title=lte.abc", "title", json!("abc")));
        assert!(check(M, "title=gte.abc", "title", json!("abd")));
        assert!(check(M, "title=gt.\u{e9}", "title", json!("\u{1f600}")));
        // The value is everything after the first dot.
        assert!(check(M, "title=eq.a.b", "title", json!("a.b")));
        assert!(check(M, "title=eq.", "title", json!("")));
        // Text keeps its whitespace; `=` in the value is fine.
        assert!(check(M, "title=eq. x=y ", "title", json!(" x=y ")));
        // Operand null is not special.
        assert!(check(M, "title=eq.null", "title", json!("null")));
        assert!(!check(M, "title=eq.7", "title", json!(7)));
    }

    #[test]
    fn bool_ops() {
        assert!(check(M, "all_day=eq.true", "all_day", json!(true)));
        assert!(!check(M, "all_day=eq.true", "all_day", json!(false)));
        assert!(check(M, "all_day=neq.true", "all_day", json!(false)));
        assert!(check(M, "all_day=eq.FALSE", "all_day", json!(false)));
        assert!(check(M, "all_day=lt.true", "all_day", json!(false)));
        assert!(check(M, "all_day=in.(true,false)", "all_day", json!(false)));
        assert!(!check(M, "all_day=eq.true", "all_day", json!("true")));
        let e = err("all_day=eq.maybe", Some(M));
        assert!(e.contains("not a valid bool for column all_day"), "{e}");
    }

    #[test]
    fn timestamptz_ops() {
        let c = "starts_at";
        // The same instant written with different offsets.
        assert!(check(M, "starts_at=eq.2026-11-23T10:00:00+01:00", c, json!("2026-11-23T09:00:00.000Z")));
        assert!(check(M, "starts_at=eq.2026-11-23T09:00:00Z", c, json!("2026-11-23T04:00:00-05:00")));
        assert!(!check(M, "starts_at=eq.2026-11-23T09:00:00Z", c, json!("2026-11-23T09:00:00.001Z")));
        assert!(check(M, "starts_at=neq.2026-11-23T09:00:00Z", c, json!("2026-11-23T09:00:00.001Z")));
        assert!(check(M, "starts_at=gt.2026-11-23T10:00:00+01:00", c, json!("2026-11-23T09:30:00Z")));
        assert!(check(M, "starts_at=lt.2026-11-23T10:00:00+01:00", c, json!("2026-11-23T08:59:59.999Z")));
        assert!(check(M, "starts_at=gte.2026-11-23T09:00:00Z", c, json!("2026-11-23T09:00:00Z")));
        assert!(check(M, "starts_at=lte.2026-11-23T09:00:00Z", c, json!("2026-11-23T09:00:00Z")));
        assert!(check(M, "starts_at=in.(2026-01-01T00:00:00Z,2026-11-23T10:00:00+01:00)", c, json!("2026-11-23T09:00:00Z")));
        // Postgres-style spellings.
        assert!(check(M, "starts_at=eq.2026-11-23 10:00:00+01", c, json!("2026-11-23T09:00:00Z")));
        assert!(check(M, "starts_at=eq.2026-11-23 10:00:00+0100", c, json!("2026-11-23T09:00:00Z")));
        assert!(check(M, "starts_at=eq.2026-11-23T09:00:00", c, json!("2026-11-23T09:00:00Z")));
        assert!(check(M, "starts_at=gte.2026-11-23", c, json!("2026-11-23T00:00:00Z")));
        assert!(!check(M, "starts_at=gte.2026-11-23", c, json!("2026-11-22T23:59:59Z")));
        // A record value that is not a timestamp never matches.
        assert!(!check(M, "starts_at=neq.2026-11-23T09:00:00Z", c, json!("soon")));
        for bad in ["abc", "2026-13-01T00:00:00Z", "2026-11-23T25:00:00Z", "1700000000", "2026-11-23T10:00Z+"] {
            let e = err(&format!("starts_at=eq.{bad}"), Some(M));
            assert!(e.contains("not a valid timestamptz for column starts_at"), "{e}");
        }
    }

    #[test]
    fn date_ops() {
        let c = "expected_close";
        assert!(check(P, "expected_close=eq.2026-11-23", c, json!("2026-11-23")));
        assert!(check(P, "expected_close=lt.2026-11-23", c, json!("2026-11-22")));
        assert!(check(P, "expected_close=gt.2026-09-30", c, json!("2026-10-01")));
        assert!(check(P, "expected_close=lte.2026-11-23", c, json!("2026-11-23")));
        assert!(check(P, "expected_close=gte.2026-11-23", c, json!("2027-01-01")));
        assert!(check(P, "expected_close=neq.2026-11-23", c, json!("2026-11-24")));
        assert!(check(P, "expected_close=in.(2026-01-01,2026-11-23)", c, json!("2026-11-23")));
        for bad in ["2026-02-30", "26-11-23", "2026/11/23", "2026-1-23", "+202-11-23", "today"] {
            let e = err(&format!("expected_close=eq.{bad}"), Some(P));
            assert!(e.contains("not a valid date for column expected_close"), "{e}");
        }
    }

    #[test]
    fn jsonb_ops() {
        let c = "attendees";
        assert!(check(M, r#"attendees=eq.["a@x.com"]"#, c, json!(["a@x.com"])));
        assert!(check(M, r#"attendees=eq.{"b":1.0,"a":[true,null]}"#, c, json!({"a":[true,null],"b":1})));
        assert!(!check(M, r#"attendees=eq.{"a":1}"#, c, json!({"a":1,"b":2})));
        assert!(check(M, r#"attendees=neq.{"a":1}"#, c, json!({"a":2})));
        assert!(!check(M, r#"attendees=neq.{"a":1}"#, c, json!({"a":1})));
        // Not JSON: taken as a JSON string.
        assert!(check(M, "attendees=eq.open", c, json!("open")));
        assert!(check(M, r#"attendees=eq."open""#, c, json!("open")));
        assert!(check(M, "attendees=eq.5", c, json!(5)));
        assert!(!check(M, "attendees=eq.5", c, json!("5")));
        assert!(check(M, "attendees=in.(1,2)", c, json!(2)));
        // Ordering on jsonb never matches.
        for op in ["lt", "lte", "gt", "gte"] {
            assert!(!check(M, &format!("attendees={op}.5"), c, json!(5)));
            assert!(!check(M, &format!("attendees={op}.5"), c, json!(1)));
        }
    }

    #[test]
    fn nulls_never_match() {
        for filter in ["id=eq.7", "id=neq.7", "id=lt.7", "id=gte.7", "id=in.(7)"] {
            assert!(!check(M, filter, "id", Value::Null), "{filter}");
            // Absent column.
            assert!(!f(filter, Some(M)).matches(M, &json!({"title": "x"})));
        }
        assert!(!check(M, "attendees=neq.null", "attendees", Value::Null));
        assert!(!check(M, "attendees=eq.null", "attendees", Value::Null));
        assert!(!check(M, "title=neq.x", "title", Value::Null));
        // Not an object at all.
        for rec in [json!(null), json!([1]), json!("id"), json!(7)] {
            assert!(!f("id=eq.7", Some(M)).matches(M, &rec));
        }
    }

    #[test]
    fn in_lists() {
        assert!(check(M, r#"title=in.("a,b",c)"#, "title", json!("a,b")));
        assert!(check(M, r#"title=in.("a,b",c)"#, "title", json!("c")));
        assert!(!check(M, r#"title=in.("a,b",c)"#, "title", json!("a")));
        assert!(check(M, r#"title=in.("say \"hi\"", "x\\y")"#, "title", json!("say \"hi\"")));
        assert!(check(M, r#"title=in.("say \"hi\"", "x\\y")"#, "title", json!("x\\y")));
        assert!(check(M, r#"title=in.("(p)")"#, "title", json!("(p)")));
        assert!(check(M, r#"title=in.(" padded ")"#, "title", json!(" padded ")));
        assert!(check(M, "title=in.(a,,b)", "title", json!("")));
        assert!(check(M, "title=in.(single)", "title", json!("single")));
        assert!(check(M, "title=in.(a, b)", "title", json!("b")));
        assert!(check(M, r#"client_id=in.("7")"#, "client_id", json!(7)));

        let hundred: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let ok = format!("id=in.({})", hundred.join(","));
        assert!(f(&ok, Some(M)).matches(M, &json!({"id": 99})));
        let over: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        let e = err(&format!("id=in.({})", over.join(",")), Some(M));
        assert!(e.contains("at most 100") && e.contains("101"), "{e}");
        let many: Vec<String> = (0..5000).map(|i| format!("\"{i},x\"")).collect();
        let e = err(&format!("title=in.({})", many.join(",")), None);
        assert!(e.contains("got 5000"), "{e}");

        assert!(err("id=in.()", Some(M)).contains("between 1 and 100"));
        assert!(err("id=in.1,2", Some(M)).contains("parenthesized"));
        assert!(err("id=in.(1,2", Some(M)).contains("parenthesized"));
        assert!(err(r#"title=in.("a,b)"#, Some(M)).contains("unterminated"));
        assert!(err(r#"title=in.("a\)"#, Some(M)).contains("unterminated"));
        assert!(err(r#"title=in.("a"b)"#, Some(M)).contains("after a closing quote"));
        let e = err("id=in.(1,x,3)", Some(M));
        assert!(e.contains("\"x\" is not a valid int8 for column id"), "{e}");
    }

    #[test]
    fn syntax_errors() {
        let e = err("id", Some(M));
        assert!(e.contains("column=op.value"), "{e}");
        let e = err("id=eq", Some(M));
        assert!(e.contains("no \".\""), "{e}");
        let e = err("id=like.7", Some(M));
        assert!(e.contains("unknown filter operator \"like\""), "{e}");
        let e = err("id=EQ.7", None);
        assert!(e.contains("unknown filter operator"), "{e}");
        let e = err("=eq.7", None);
        assert!(e.contains("no column"), "{e}");
        let e = err("", None);
        assert!(e.contains("column=op.value"), "{e}");
        let e = err("nope=eq.7", Some(M));
        assert_eq!(e, "column \"nope\" does not exist in table meetings");
        let e = err("id=eq.abc", Some(M));
        assert_eq!(e, "filter value \"abc\" is not a valid int8 for column id");
        let e = err("id=eq.1.5", Some(M));
        assert!(e.contains("not a valid int8"), "{e}");
        let e = err("id=eq.99999999999999999999", Some(M));
        assert!(e.contains("not a valid int8"), "{e}");
        // Huge input gives a short message.
        let long = format!("id=eq.{}", "9".repeat(100_000));
        assert!(err(&long, Some(M)).len() < 300);
    }

    #[test]
    fn accessors() {
        let x = f("client_id=in.(1,2)", Some(M));
        assert_eq!(x.column(), "client_id");
        assert_eq!(x.op_name(), "in");
    }

    #[test]
    fn table_none() {
        // `value` exists only in pipeline.
        let x = f("value=gt.10", None);
        assert!(x.matches(P, &json!({"value": 11.0})));
        assert!(!x.matches(M, &json!({"value": 11.0})));
        assert!(!x.matches(Table::Clients, &json!({"value": 11})));
        // Unknown everywhere: parses, never matches.
        let x = f("nope=neq.1", None);
        for t in ALL_TABLES {
            assert!(!x.matches(t, &json!({"nope": 2})));
        }
        // Valid for one table's type, not another's: `title` is text in
        // meetings and pipeline; `client_id` int8.
        let x = f("client_id=eq.abc", None);
        assert!(!x.matches(M, &json!({"client_id": "abc"})));
        // Filter parsed for one table still answers for another.
        let x = f("title=eq.Q", Some(M));
        assert!(x.matches(P, &json!({"title": "Q"})));
        assert!(!x.matches(Table::Clients, &json!({"title": "Q"})));
    }

    #[test]
    fn json_eq_deep_does_not_overflow() {
        let mut a = json!(1);
        let mut b = json!(1);
        for _ in 0..100_000 {
            a = Value::Array(vec![a]);
            b = Value::Array(vec![b]);
        }
        assert!(json_eq(&a, &b));
        // Dropping such a tree recursively would overflow; leak it instead.
        std::mem::forget(a);
        std::mem::forget(b);
    }

    #[test]
    fn never_panics_on_odd_filters() {
        let odd = [
            "=",
            "==",
            "=.",
            "a=.",
            "a=in.",
            "a=in.(",
            "a=in.)",
            "a=in.(\"",
            "a=in.(\\",
            "a=in.(\"\\",
            "é=eq.é",
            "title=eq.\u{0}",
            "starts_at=eq.\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
            "starts_at=eq.2026-11-2é",
            "starts_at=eq.2026-11-23 é",
            "starts_at=eq.é+0100",
            "starts_at=eq.+0100",
            "expected_close=eq.éééé-é",
        ];
        for s in odd {
            for t in [None, Some(M), Some(P)] {
                if let Ok(x) = RowFilter::parse(s, t) {
                    for table in ALL_TABLES {
                        let _ = x.matches(table, &json!({"a": 1, "title": "x", "starts_at": "é"}));
                    }
                }
            }
        }
    }
}
