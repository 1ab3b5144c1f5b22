//! `/api/meetings`: manual meetings are fully editable; on `google` and
//! `calendly` meetings the source owns title, times, place and status, and
//! only the local fields (`client_id`, `notes`) change here.

use std::collections::HashMap;

use rusqlite::types::Value as SqlValue;
use serde::Deserialize;
use serde_json::Value;

use super::input::{self, bounded, nullable, opt_bounded, required_text, text};
use super::{paging, ListQuery, Resource};
use crate::http::error::{ApiError, ApiResult};
use crate::store::{rows, Table, WriteTx};

pub struct Meetings;

pub const STATUSES: [&str; 3] = ["scheduled", "canceled", "no_show"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMeeting {
    title: String,
    starts_at: String,
    ends_at: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    meeting_url: Option<String>,
    #[serde(default)]
    all_day: Option<bool>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    client_id: Option<i64>,
    #[serde(default)]
    attendees: Option<Vec<Value>>,
    #[serde(default)]
    notes: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    user_id: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MeetingPatch {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    location: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    meeting_url: Option<Option<String>>,
    #[serde(default)]
    all_day: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    timezone: Option<Option<String>>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    client_id: Option<Option<i64>>,
    #[serde(default)]
    attendees: Option<Vec<Value>>,
    #[serde(default, deserialize_with = "nullable")]
    notes: Option<Option<String>>,
}

fn status(s: &str) -> ApiResult<String> {
    if STATUSES.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(ApiError::Unprocessable(format!("status must be one of scheduled, canceled, no_show, not \"{}\"", input::clip(s))))
    }
}

fn url(field: &str, u: &Option<String>) -> ApiResult<()> {
    if let Some(u) = u {
        bounded(field, u, 2000)?;
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            return Err(ApiError::Unprocessable(format!("{field} must be an http(s) URL")));
        }
    }
    Ok(())
}

fn attendees(a: Vec<Value>) -> ApiResult<SqlValue> {
    if a.len() > 500 {
        return Err(ApiError::Unprocessable("at most 500 attendees".into()));
    }
    Ok(SqlValue::Text(Value::Array(a).to_string()))
}

fn check_times(starts: &str, ends: &str) -> ApiResult<()> {
    if ends <= starts {
        return Err(ApiError::Unprocessable("ends_at must be after starts_at".into()));
    }
    Ok(())
}

impl Resource for Meetings {
    const TABLE: Table = Table::Meetings;

    fn list_query(q: &HashMap<String, String>) -> ApiResult<ListQuery> {
        let mut lq = paging(q, &["from", "to", "status", "client_id", "source"], &["starts_at", "id"])?;
        if let Some(from) = q.get("from") {
            lq.conditions.push(("ends_at > $".into(), SqlValue::Text(input::timestamp("from", from)?)));
        }
        if let Some(to) = q.get("to") {
            lq.conditions.push(("starts_at < $".into(), SqlValue::Text(input::timestamp("to", to)?)));
        }
        if let Some(s) = q.get("status") {
            if !STATUSES.contains(&s.as_str()) {
                return Err(ApiError::BadRequest("status must be one of scheduled, canceled, no_show".into()));
            }
            lq.conditions.push(("status = $".into(), SqlValue::Text(s.clone())));
        }
        if let Some(s) = q.get("source") {
            if !["google", "calendly", "manual"].contains(&s.as_str()) {
                return Err(ApiError::BadRequest("source must be one of google, calendly, manual".into()));
            }
            lq.conditions.push(("source = $".into(), SqlValue::Text(s.clone())));
        }
        if let Some(c) = q.get("client_id") {
            lq.conditions.push(("client_id = $".into(), SqlValue::Integer(input::parse_id(c)?)));
        }
        Ok(lq)
    }

    fn create(tx: &mut WriteTx<'_>, owner: i64, body: &[u8]) -> ApiResult<Vec<(&'static str, SqlValue)>> {
        let m: NewMeeting = input::parse_body(body)?;
        let title = required_text("title", &m.title, 500)?;
        let starts = input::timestamp("starts_at", &m.starts_at)?;
        let ends = input::timestamp("ends_at", &m.ends_at)?;
        check_times(&starts, &ends)?;
        opt_bounded("description", &m.description, 20_000)?;
        opt_bounded("location", &m.location, 1000)?;
        opt_bounded("timezone", &m.timezone, 100)?;
        opt_bounded("notes", &m.notes, 20_000)?;
        url("meeting_url", &m.meeting_url)?;
        if let Some(c) = m.client_id {
            input::check_client(tx.conn(), c, owner)?;
        }
        Ok(vec![
            ("source", SqlValue::Text("manual".into())),
            ("title", SqlValue::Text(title)),
            ("starts_at", SqlValue::Text(starts)),
            ("ends_at", SqlValue::Text(ends)),
            ("description", text(m.description)),
            ("location", text(m.location)),
            ("meeting_url", text(m.meeting_url)),
            ("all_day", SqlValue::Integer(m.all_day.unwrap_or(false) as i64)),
            ("timezone", text(m.timezone)),
            ("status", SqlValue::Text(status(m.status.as_deref().unwrap_or("scheduled"))?)),
            ("client_id", m.client_id.map(SqlValue::Integer).unwrap_or(SqlValue::Null)),
            ("attendees", attendees(m.attendees.unwrap_or_default())?),
            ("notes", text(m.notes)),
        ])
    }

    fn patch(tx: &mut WriteTx<'_>, existing: &Value, body: &[u8]) -> ApiResult<Vec<(&'static str, SqlValue)>> {
        let p: MeetingPatch = input::parse_body(body)?;
        let source = existing.get("source").and_then(Value::as_str).unwrap_or("manual").to_string();
        let owner = rows::owner_of(existing);
        let cur = |k: &str| existing.get(k).cloned().unwrap_or(Value::Null);
        let mut cols: Vec<(&'static str, SqlValue)> = Vec::new();
        let mut source_owned_changes: Vec<&str> = Vec::new();
        let mut set = |name: &'static str, new_json: Value, sql: SqlValue, cols: &mut Vec<(&'static str, SqlValue)>| {
            if new_json != cur(name) {
                source_owned_changes.push(name);
            }
            cols.push((name, sql));
        };

        if let Some(t) = p.title {
            let t = required_text("title", &t, 500)?;
            set("title", Value::String(t.clone()), SqlValue::Text(t), &mut cols);
        }
        let starts = match p.starts_at {
            Some(s) => {
                let s = input::timestamp("starts_at", &s)?;
                set("starts_at", Value::String(s.clone()), SqlValue::Text(s.clone()), &mut cols);
                s
            }
            None => cur("starts_at").as_str().unwrap_or_default().to_string(),
        };
        let ends = match p.ends_at {
            Some(s) => {
                let s = input::timestamp("ends_at", &s)?;
                set("ends_at", Value::String(s.clone()), SqlValue::Text(s.clone()), &mut cols);
                s
            }
            None => cur("ends_at").as_str().unwrap_or_default().to_string(),
        };
        for (name, val, max) in [("description", p.description, 20_000), ("location", p.location, 1000), ("timezone", p.timezone, 100)] {
            if let Some(v) = val {
                opt_bounded(name, &v, max)?;
                set(name, v.clone().map(Value::String).unwrap_or(Value::Null), text(v), &mut cols);
            }
        }
        if let Some(u) = p.meeting_url {
            url("meeting_url", &u)?;
            set("meeting_url", u.clone().map(Value::String).unwrap_or(Value::Null), text(u), &mut cols);
        }
        if let Some(a) = p.all_day {
            set("all_day", Value::Bool(a), SqlValue::Integer(a as i64), &mut cols);
        }
        if let Some(s) = p.status {
            let s = status(&s)?;
            set("status", Value::String(s.clone()), SqlValue::Text(s), &mut cols);
        }
        if let Some(a) = p.attendees {
            set("attendees", Value::Array(a.clone()), attendees(a)?, &mut cols);
        }
        if source != "manual" && !source_owned_changes.is_empty() {
            return Err(ApiError::Conflict(format!(
                "{} of a {source} meeting belong to {source}; change them there (here only client_id and notes can change)",
                source_owned_changes.join(", ")
            )));
        }
        // After the ownership check: on a synced meeting, touching its times is a 409 whatever they are.
        check_times(&starts, &ends)?;
        // Local fields, editable on every meeting.
        if let Some(c) = p.client_id {
            if let Some(id) = c {
                input::check_client(tx.conn(), id, owner)?;
            }
            cols.push(("client_id", c.map(SqlValue::Integer).unwrap_or(SqlValue::Null)));
        }
        if let Some(n) = p.notes {
            opt_bounded("notes", &n, 20_000)?;
            cols.push(("notes", text(n)));
        }
        Ok(cols)
    }
}
