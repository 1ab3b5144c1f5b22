//! The PostgREST query string, parsed: `select=`, filters (`col=op.value`,
//! `not.` on each, `or=(…)` / `and=(…)` trees), `order=`, `limit`,
//! `offset` and `columns=` — what `@supabase/postgrest-js` sends. Only
//! the syntax is checked here; which columns exist and what may be read is
//! the caller's (and the store's) to decide.
//!
//! The facts this follows (PostgREST's API reference): a filter is
//! `op.value`; `like`/`ilike` take `*` for `%`; `is` takes `null`, `true`,
//! `false` or `unknown`; `in.(a,b)` lists values, a value with `,`, `(`,
//! `)` or `"` in it is double-quoted, with `\` escaping inside the quotes;
//! in a logic tree each condition is `col.op.value` (or `col.not.op.value`),
//! separated by commas, nested as `or(…)`/`and(…)`/`not.or(…)`. A
//! malformed parameter is a 400 with code `PGRST100`, never a panic, and
//! every list has a bound, so no query string can cost more than its length.

use serde::Serialize;

/// What a query may hold at most (a query string is also bounded in length
/// by the HTTP edge).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Conditions in all filters and logic trees together.
    pub max_conditions: usize,
    /// Nesting of `or(…)`/`and(…)`.
    pub max_depth: usize,
    /// Values in one `in.(…)`.
    pub max_in_values: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_conditions: 64, max_depth: 8, max_in_values: 500 }
    }
}

/// A PostgREST-shaped error: `{"code","details","hint","message"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryError {
    pub code: &'static str,
    pub details: Option<String>,
    pub hint: Option<String>,
    pub message: String,
}

impl QueryError {
    fn parse(what: &str, input: &str, details: impl Into<String>) -> QueryError {
        let shown: String = input.chars().take(200).collect();
        QueryError { code: "PGRST100", details: Some(details.into()), hint: None, message: format!("failed to parse {what} ({shown})") }
    }
}

/// One comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Eq(String),
    Neq(String),
    Gt(String),
    Gte(String),
    Lt(String),
    Lte(String),
    /// The pattern with `*` already turned into `%`.
    Like(String),
    ILike(String),
    Is(IsValue),
    In(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsValue {
    Null,
    True,
    False,
    Unknown,
}

/// A condition or a tree of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Cond {
        column: String,
        negated: bool,
        op: Op,
    },
    /// `and(…)` when `any` is false, `or(…)` when true.
    Group {
        any: bool,
        negated: bool,
        items: Vec<Filter>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nulls {
    First,
    Last,
}

/// One `order=` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub column: String,
    pub descending: bool,
    /// None: PostgreSQL's default (last ascending, first descending).
    pub nulls: Option<Nulls>,
}

/// Everything a request's query string asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// None: `*` (or no `select`).
    pub select: Option<Vec<String>>,
    /// All must hold (the top level is an AND).
    pub filters: Vec<Filter>,
    pub order: Vec<Order>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    /// `columns=` of an insert (the columns to take from each object).
    pub columns: Option<Vec<String>>,
    /// `on_conflict=` of an upsert (refused by the routes: no upserts here).
    pub on_conflict: Option<Vec<String>>,
}

/// A column name as PostgREST takes it here: letters, digits, `_`.
fn column(s: &str) -> Option<String> {
    let ok = !s.is_empty() && s.len() <= 63 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then(|| s.to_string())
}

/// Parse the decoded query pairs of a request.
pub fn parse(pairs: &[(String, String)], limits: Limits) -> Result<Query, QueryError> {
    let mut q = Query::default();
    let mut conditions = 0usize;
    for (key, value) in pairs {
        match key.as_str() {
            "select" => q.select = select(value)?,
            "order" => q.order.extend(order(value)?),
            "limit" => q.limit = Some(number("limit", value)?),
            "offset" => q.offset = Some(number("offset", value)?),
            "columns" => q.columns = Some(column_list("columns", value)?),
            "on_conflict" => q.on_conflict = Some(column_list("on_conflict", value)?),
            "or" | "and" | "not.or" | "not.and" => {
                let tree = format!("{key}{value}");
                let mut p = TreeParser { text: &tree, pos: 0, limits, conditions: &mut conditions };
                let f = p.group(false, 1)?;
                if p.pos != tree.len() {
                    return Err(QueryError::parse("logic tree", &tree, format!("unexpected text at position {}", p.pos + 1)));
                }
                q.filters.push(f);
            }
            _ => {
                let col = column(key).ok_or_else(|| QueryError::parse("filter", key, "a column name is letters, digits and _"))?;
                let (negated, op) = condition(value, false).map_err(|why| QueryError::parse("filter", &format!("{key}={value}"), why))?;
                if matches!(&op, Op::In(values) if values.len() > limits.max_in_values) {
                    return Err(QueryError::parse("filter", key, format!("at most {} values in one in.(…)", limits.max_in_values)));
                }
                conditions += 1;
                q.filters.push(Filter::Cond { column: col, negated, op });
            }
        }
        if conditions > limits.max_conditions {
            return Err(QueryError::parse("filter", key, format!("at most {} conditions in one request", limits.max_conditions)));
        }
    }
    Ok(q)
}

fn number(what: &str, value: &str) -> Result<u64, QueryError> {
    value.parse::<u64>().map_err(|_| QueryError::parse(what, value, "a whole number of 0 or more"))
}

fn column_list(what: &str, value: &str) -> Result<Vec<String>, QueryError> {
    value
        .split(',')
        .map(|c| column(c.trim().trim_matches('"')).ok_or_else(|| QueryError::parse(what, value, "a list of column names")))
        .collect()
}

fn select(value: &str) -> Result<Option<Vec<String>>, QueryError> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim) {
        if item == "*" {
            return Ok(None);
        }
        if item.contains('(') || item.contains('!') {
            return Err(QueryError::parse("select parameter", value, "embedded resources (joins) are not supported here"));
        }
        out.push(column(item).ok_or_else(|| QueryError::parse("select parameter", value, "a list of column names, or *"))?);
    }
    Ok(Some(out))
}

fn order(value: &str) -> Result<Vec<Order>, QueryError> {
    value
        .split(',')
        .map(|term| {
            let mut parts = term.trim().split('.');
            let col = parts
                .next()
                .and_then(column)
                .ok_or_else(|| QueryError::parse("order", value, "col[.asc|.desc][.nullsfirst|.nullslast]"))?;
            let mut o = Order { column: col, descending: false, nulls: None };
            let mut seen_dir = false;
            for p in parts {
                match p {
                    "asc" | "desc" if !seen_dir && o.nulls.is_none() => {
                        o.descending = p == "desc";
                        seen_dir = true;
                    }
                    "nullsfirst" | "nullslast" if o.nulls.is_none() => {
                        o.nulls = Some(if p == "nullsfirst" { Nulls::First } else { Nulls::Last })
                    }
                    _ => return Err(QueryError::parse("order", value, "col[.asc|.desc][.nullsfirst|.nullslast]")),
                }
            }
            Ok(o)
        })
        .collect()
}

/// Why a piece of a parameter does not parse (becomes `details`).
#[derive(Debug)]
struct Malformed(String);

impl From<&str> for Malformed {
    fn from(why: &str) -> Malformed {
        Malformed(why.to_string())
    }
}

impl From<String> for Malformed {
    fn from(why: String) -> Malformed {
        Malformed(why)
    }
}

impl From<Malformed> for String {
    fn from(m: Malformed) -> String {
        m.0
    }
}

/// `[not.]op.value` (in a logic tree the value may be double-quoted).
fn condition(text: &str, in_tree: bool) -> Result<(bool, Op), Malformed> {
    let (negated, rest) = match text.strip_prefix("not.") {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (name, value) = rest.split_once('.').ok_or("expected op.value")?;
    let plain = |v: &str| -> Result<String, Malformed> {
        if in_tree {
            unquote(v)
        } else {
            Ok(v.to_string())
        }
    };
    let op = match name {
        "eq" => Op::Eq(plain(value)?),
        "neq" => Op::Neq(plain(value)?),
        "gt" => Op::Gt(plain(value)?),
        "gte" => Op::Gte(plain(value)?),
        "lt" => Op::Lt(plain(value)?),
        "lte" => Op::Lte(plain(value)?),
        "like" => Op::Like(plain(value)?.replace('*', "%")),
        "ilike" => Op::ILike(plain(value)?.replace('*', "%")),
        "is" => Op::Is(match value.to_ascii_lowercase().as_str() {
            "null" => IsValue::Null,
            "true" => IsValue::True,
            "false" => IsValue::False,
            "unknown" => IsValue::Unknown,
            _ => return Err("is takes null, true, false or unknown".into()),
        }),
        "in" => Op::In(in_list(value)?),
        other => return Err(format!("unknown or unsupported operator {other:?}").into()),
    };
    Ok((negated, op))
}

/// A value that may be double-quoted (`"a,b"`, with `\"` and `\\`).
fn unquote(v: &str) -> Result<String, Malformed> {
    let Some(inner) = v.strip_prefix('"') else { return Ok(v.to_string()) };
    let inner = inner.strip_suffix('"').ok_or("an unterminated quoted value")?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().ok_or("a quoted value ends in \\")?),
            '"' => return Err("a \" inside a quoted value must be written \\\"".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `(a,"b,c",d)` → [a, b,c, d].
fn in_list(v: &str) -> Result<Vec<String>, Malformed> {
    let inner = v.strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or("in takes a list: in.(a,b)")?;
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = inner.chars().peekable();
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) if cur.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            ('"', true) => quoted = false,
            ('\\', true) => cur.push(chars.next().ok_or("a quoted value ends in \\")?),
            (',', false) => {
                out.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            ('"', false) | ('(', false) | (')', false) => return Err("quote a value that holds \", ( or )".into()),
            (c, _) => {
                if was_quoted && !quoted {
                    return Err("text after a quoted value".into());
                }
                cur.push(c)
            }
        }
    }
    if quoted {
        return Err("an unterminated quoted value".into());
    }
    out.push(cur);
    Ok(out)
}

/// A recursive-descent parser of `or(…)`/`and(…)` trees, bounded in depth
/// and in conditions.
struct TreeParser<'a, 'c> {
    text: &'a str,
    pos: usize,
    limits: Limits,
    conditions: &'c mut usize,
}

impl<'a> TreeParser<'a, '_> {
    fn fail(&self, why: impl Into<String>) -> QueryError {
        QueryError::parse("logic tree", self.text, why)
    }

    fn rest(&self) -> &'a str {
        let text: &'a str = self.text;
        text.get(self.pos..).unwrap_or("")
    }

    /// `[not.](or|and)(item,item,…)` at `pos`.
    fn group(&mut self, negated_prefix: bool, depth: usize) -> Result<Filter, QueryError> {
        if depth > self.limits.max_depth {
            return Err(self.fail(format!("logic trees nest at most {} deep", self.limits.max_depth)));
        }
        let mut negated = negated_prefix;
        if self.rest().starts_with("not.") {
            negated = true;
            self.pos += 4;
        }
        let any = if self.rest().starts_with("or(") {
            self.pos += 3;
            true
        } else if self.rest().starts_with("and(") {
            self.pos += 4;
            false
        } else {
            return Err(self.fail("expected or(…) or and(…)"));
        };
        let mut items = Vec::new();
        loop {
            items.push(self.item(depth)?);
            match self.rest().chars().next() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.fail(format!("expected , or ) at position {}", self.pos + 1))),
            }
        }
        Ok(Filter::Group { any, negated, items })
    }

    /// A nested group, or `col.[not.]op.value`.
    fn item(&mut self, depth: usize) -> Result<Filter, QueryError> {
        let rest = self.rest();
        if rest.starts_with("or(") || rest.starts_with("and(") || rest.starts_with("not.or(") || rest.starts_with("not.and(") {
            return self.group(false, depth + 1);
        }
        // The condition runs to the next , or ) outside quotes and parentheses.
        let bytes = rest.as_bytes();
        let (mut i, mut quoted, mut parens) = (0usize, false, 0usize);
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b'(' if !quoted => parens += 1,
                b')' if !quoted && parens > 0 => parens -= 1,
                b',' | b')' if !quoted && parens == 0 => break,
                _ => {}
            }
            i += 1;
        }
        let text = &rest[..i.min(rest.len())];
        let (col, cond) = text.split_once('.').ok_or_else(|| self.fail(format!("expected col.op.value, got {text:?}")))?;
        let col = column(col).ok_or_else(|| self.fail(format!("{col:?} is not a column name")))?;
        let (negated, op) = condition(cond, true).map_err(|why| self.fail(why))?;
        if let Op::In(values) = &op {
            if values.len() > self.limits.max_in_values {
                return Err(self.fail(format!("at most {} values in one in.(…)", self.limits.max_in_values)));
            }
        }
        *self.conditions += 1;
        if *self.conditions > self.limits.max_conditions {
            return Err(self.fail(format!("at most {} conditions in one request", self.limits.max_conditions)));
        }
        self.pos += text.len();
        Ok(Filter::Cond { column: col, negated, op })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<Query, QueryError> {
        let owned: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse(&owned, Limits::default())
    }

    fn cond(column: &str, negated: bool, op: Op) -> Filter {
        Filter::Cond { column: column.into(), negated, op }
    }

    #[test]
    fn what_postgrest_js_sends_is_understood() {
        let got = q(&[
            ("select", "id,title,starts_at"),
            ("status", "eq.scheduled"),
            ("title", "ilike.*review*"),
            ("client_id", "not.is.null"),
            ("id", "in.(1,2,\"3\")"),
            ("order", "starts_at.desc.nullslast,id"),
            ("limit", "25"),
            ("offset", "50"),
        ])
        .unwrap();
        assert_eq!(got.select, Some(vec!["id".into(), "title".into(), "starts_at".into()]));
        assert_eq!(
            got.filters,
            vec![
                cond("status", false, Op::Eq("scheduled".into())),
                cond("title", false, Op::ILike("%review%".into())),
                cond("client_id", true, Op::Is(IsValue::Null)),
                cond("id", false, Op::In(vec!["1".into(), "2".into(), "3".into()])),
            ]
        );
        assert_eq!(
            got.order,
            vec![
                Order { column: "starts_at".into(), descending: true, nulls: Some(Nulls::Last) },
                Order { column: "id".into(), descending: false, nulls: None }
            ]
        );
        assert_eq!((got.limit, got.offset), (Some(25), Some(50)));
        assert_eq!(q(&[("select", "*")]).unwrap().select, None);
    }

    #[test]
    fn logic_trees_nest_and_quote() {
        let got = q(&[("or", "(status.eq.canceled,and(title.like.A*,notes.not.eq.\"x,(y)\"),not.or(id.lt.3,id.gt.9))")]).unwrap();
        assert_eq!(
            got.filters,
            vec![Filter::Group {
                any: true,
                negated: false,
                items: vec![
                    cond("status", false, Op::Eq("canceled".into())),
                    Filter::Group {
                        any: false,
                        negated: false,
                        items: vec![cond("title", false, Op::Like("A%".into())), cond("notes", true, Op::Eq("x,(y)".into()))]
                    },
                    Filter::Group {
                        any: true,
                        negated: true,
                        items: vec![cond("id", false, Op::Lt("3".into())), cond("id", false, Op::Gt("9".into()))]
                    },
                ]
            }]
        );
        let inside = q(&[("and", "(id.in.(1,\"2,3\"),title.is.true)")]).unwrap();
        assert_eq!(
            inside.filters,
            vec![Filter::Group {
                any: false,
                negated: false,
                items: vec![cond("id", false, Op::In(vec!["1".into(), "2,3".into()])), cond("title", false, Op::Is(IsValue::True))]
            }]
        );
    }

    #[test]
    fn every_malformed_parameter_is_a_pgrst100_with_a_reason() {
        for pairs in [
            vec![("status", "scheduled")],
            vec![("status", "eq")],
            vec![("status", "regex.x")],
            vec![("status", "is.maybe")],
            vec![("id", "in.1,2")],
            vec![("id", "in.(\"1)")],
            vec![("id", "in.(a\"b\")")],
            vec![("bad col", "eq.1")],
            vec![("order", "id.sideways")],
            vec![("order", "id.asc.desc")],
            vec![("order", "")],
            vec![("limit", "-1")],
            vec![("offset", "ten")],
            vec![("select", "id,clients(name)")],
            vec![("select", "id;drop")],
            vec![("or", "status.eq.a")],
            vec![("or", "(status.eq.a")],
            vec![("or", "(status.eq.a))")],
            vec![("or", "(status)")],
            vec![("or", "()")],
            vec![("and", "(x.eq.\"unterminated)")],
            vec![("columns", "a,,b")],
        ] {
            let e = q(&pairs).expect_err(&format!("{pairs:?} must be refused"));
            assert_eq!(e.code, "PGRST100", "{pairs:?}");
            assert!(e.message.starts_with("failed to parse "), "{e:?}");
            assert!(e.details.as_deref().is_some_and(|d| !d.is_empty()), "{e:?}");
        }
    }

    #[test]
    fn bounds_hold_whatever_the_query_says() {
        let deep = format!("({}id.eq.1{})", "or(".repeat(20), ")".repeat(20));
        assert!(q(&[("or", &deep)]).unwrap_err().details.unwrap().contains("deep"));
        assert!(q(&[("not.or", "(id.eq.1,id.eq.2)")]).unwrap().filters[0] != q(&[("or", "(id.eq.1,id.eq.2)")]).unwrap().filters[0]);
        let many: Vec<(String, String)> = (0..100).map(|_| ("id".to_string(), "eq.1".to_string())).collect();
        assert!(parse(&many, Limits::default()).unwrap_err().details.unwrap().contains("conditions"));
        let wide = format!("(id.in.({}))", vec!["1"; 600].join(","));
        assert!(q(&[("and", &wide)]).unwrap_err().details.unwrap().contains("values"));
    }
}
