//! `/api/pipeline`: deals moving through lead → qualified → proposal → won / lost.

use serde::Deserialize;
use serde_json::Value;

use super::input::{self, nullable, opt_bounded, required_text};
use super::{paging, Columns, ListQuery, Resource};
use crate::http::error::{ApiError, ApiResult};
use crate::http::QueryParams;
use crate::store::records::RecordFilter;
use crate::store::Table;

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

fn value(v: f64) -> ApiResult<f64> {
    if !v.is_finite() || v < 0.0 {
        return Err(ApiError::Unprocessable("value must be a number of zero or more".into()));
    }
    Ok(v)
}

impl Resource for Pipeline {
    const TABLE: Table = Table::Pipeline;

    fn list_query(q: &QueryParams) -> ApiResult<ListQuery> {
        let mut lq = paging(q, &["stage", "client_id"], &["id"])?;
        if let Some(s) = q.get("stage") {
            if !STAGES.contains(&s.as_str()) {
                return Err(ApiError::BadRequest("stage must be one of lead, qualified, proposal, won, lost".into()));
            }
            lq.filters.push(RecordFilter::Stage(s.clone()));
        }
        if let Some(c) = q.get("client_id") {
            lq.filters.push(RecordFilter::ClientId(input::parse_id(c)?));
        }
        Ok(lq)
    }

    fn create(body: &[u8]) -> ApiResult<Columns> {
        let d: NewDeal = input::parse_body(body)?;
        let title = required_text("title", &d.title, 300)?;
        opt_bounded("notes", &d.notes, 20_000)?;
        let close = match d.expected_close {
            Some(s) => Some(input::date("expected_close", &s)?),
            None => None,
        };
        let mut cols = Columns { client_id: Some(d.client_id), ..Columns::default() };
        cols.set("title", title);
        cols.set("stage", stage(d.stage.as_deref().unwrap_or("lead"))?);
        cols.set("value", value(d.value.unwrap_or(0.0))?);
        cols.set("expected_close", close);
        cols.set("notes", d.notes);
        Ok(cols)
    }

    fn patch(_existing: &Value, body: &[u8]) -> ApiResult<Columns> {
        let p: DealPatch = input::parse_body(body)?;
        let mut cols = Columns { client_id: p.client_id, ..Columns::default() };
        if let Some(t) = p.title {
            cols.set("title", required_text("title", &t, 300)?);
        }
        if let Some(s) = p.stage {
            cols.set("stage", stage(&s)?);
        }
        if let Some(v) = p.value {
            cols.set("value", value(v)?);
        }
        if let Some(c) = p.expected_close {
            let c = match c {
                Some(s) => Some(input::date("expected_close", &s)?),
                None => None,
            };
            cols.set("expected_close", c);
        }
        if let Some(n) = p.notes {
            opt_bounded("notes", &n, 20_000)?;
            cols.set("notes", n);
        }
        Ok(cols)
    }
}
