//! `/api/pipeline`: deals moving through lead → qualified → proposal → won / lost.

use std::collections::HashMap;

use rusqlite::types::Value as SqlValue;
use serde::Deserialize;
use serde_json::Value;

use super::input::{self, nullable, opt_bounded, required_text, text};
use super::{paging, ListQuery, Resource};
use crate::http::error::{ApiError, ApiResult};
use crate::store::{rows, Table, WriteTx};

pub struct Pipeline;

pub const STAGES: [&str; 5] = ["lead", "qualified", "proposal", "won", "lost"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDeal {
    title: String,
    #[serde(default)]
    client_id: Option<i64>,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    expected_close: Option<String>,
    #[serde(default)]
    notes: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    user_id: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DealPatch {
    #[serde(default)]
    title: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    client_id: Option<Option<i64>>,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default, deserialize_with = "nullable")]
    expected_close: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    notes: Option<Option<String>>,
}

fn stage(s: &str) -> ApiResult<String> {
    if STAGES.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(ApiError::Unprocessable(format!("stage must be one of lead, qualified, proposal, won, lost, not \"{}\"", input::clip(s))))
    }
}

fn value(v: f64) -> ApiResult<SqlValue> {
    if !v.is_finite() || v < 0.0 {
        return Err(ApiError::Unprocessable("value must be a number of zero or more".into()));
    }
    Ok(SqlValue::Real(v))
}

impl Resource for Pipeline {
    const TABLE: Table = Table::Pipeline;

    fn list_query(q: &HashMap<String, String>) -> ApiResult<ListQuery> {
        let mut lq = paging(q, &["stage", "client_id"], &["id"])?;
        if let Some(s) = q.get("stage") {
            if !STAGES.contains(&s.as_str()) {
                return Err(ApiError::BadRequest("stage must be one of lead, qualified, proposal, won, lost".into()));
            }
            lq.conditions.push(("stage = $".into(), SqlValue::Text(s.clone())));
        }
        if let Some(c) = q.get("client_id") {
            lq.conditions.push(("client_id = $".into(), SqlValue::Integer(input::parse_id(c)?)));
        }
        Ok(lq)
    }

    fn create(tx: &mut WriteTx<'_>, owner: i64, body: &[u8]) -> ApiResult<Vec<(&'static str, SqlValue)>> {
        let d: NewDeal = input::parse_body(body)?;
        let title = required_text("title", &d.title, 300)?;
        if let Some(c) = d.client_id {
            input::check_client(tx.conn(), c, owner)?;
        }
        opt_bounded("notes", &d.notes, 20_000)?;
        let close = match d.expected_close {
            Some(s) => Some(input::date("expected_close", &s)?),
            None => None,
        };
        Ok(vec![
            ("title", SqlValue::Text(title)),
            ("client_id", d.client_id.map(SqlValue::Integer).unwrap_or(SqlValue::Null)),
            ("stage", SqlValue::Text(stage(d.stage.as_deref().unwrap_or("lead"))?)),
            ("value", value(d.value.unwrap_or(0.0))?),
            ("expected_close", text(close)),
            ("notes", text(d.notes)),
        ])
    }

    fn patch(tx: &mut WriteTx<'_>, existing: &Value, body: &[u8]) -> ApiResult<Vec<(&'static str, SqlValue)>> {
        let p: DealPatch = input::parse_body(body)?;
        let mut cols = Vec::new();
        if let Some(t) = p.title {
            cols.push(("title", SqlValue::Text(required_text("title", &t, 300)?)));
        }
        if let Some(c) = p.client_id {
            if let Some(id) = c {
                input::check_client(tx.conn(), id, rows::owner_of(existing))?;
            }
            cols.push(("client_id", c.map(SqlValue::Integer).unwrap_or(SqlValue::Null)));
        }
        if let Some(s) = p.stage {
            cols.push(("stage", SqlValue::Text(stage(&s)?)));
        }
        if let Some(v) = p.value {
            cols.push(("value", value(v)?));
        }
        if let Some(c) = p.expected_close {
            let c = match c {
                Some(s) => Some(input::date("expected_close", &s)?),
                None => None,
            };
            cols.push(("expected_close", text(c)));
        }
        if let Some(n) = p.notes {
            opt_bounded("notes", &n, 20_000)?;
            cols.push(("notes", text(n)));
        }
        Ok(cols)
    }
}
