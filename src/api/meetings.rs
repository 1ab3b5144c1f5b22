//! `/api/meetings`: manual meetings are fully editable; on `google`,
//! `microsoft` and `calendly` meetings the source owns title, times, place
//! and status, and only the local fields (`client_id`, `notes`) change here.

use serde::Deserialize;
use serde_json::Value;

use super::input::{self, bounded, nullable, opt_bounded, required_text};
use super::{paging, Columns, ListQuery, Resource};
use crate::http::error::{ApiError, ApiResult};
use crate::http::QueryParams;
use crate::model::MeetingStatus;
use crate::store::records::RecordFilter;
use crate::store::Table;

pub struct Meetings;

/// Where meetings come from: synced ones belong to their source.
const SOURCES: [&str; 4] = ["google", "microsoft", "calendly", "manual"];
const MANUAL: &str = "manual";

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

fn status(s: &str) -> ApiResult<MeetingStatus> {
    MeetingStatus::parse(s)
        .ok_or_else(|| ApiError::Unprocessable(format!("status must be one of scheduled, canceled, no_show, not \"{}\"", input::clip(s))))
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

fn attendees(a: Vec<Value>) -> ApiResult<Value> {
    if a.len() > 500 {
        return Err(ApiError::Unprocessable("at most 500 attendees".into()));
    }
    Ok(Value::Array(a))
}

fn check_times(starts: &str, ends: &str) -> ApiResult<()> {
    if ends <= starts {
        return Err(ApiError::Unprocessable("ends_at must be after starts_at".into()));
    }
    Ok(())
}

impl Resource for Meetings {
    const TABLE: Table = Table::Meetings;

    fn list_query(q: &QueryParams) -> ApiResult<ListQuery> {
        let mut lq = paging(q, &["from", "to", "status", "client_id", "source"], &["starts_at", "id"])?;
        if let Some(from) = q.get("from") {
            lq.filters.push(RecordFilter::EndsAfter(input::timestamp("from", from)?));
        }
        if let Some(to) = q.get("to") {
            lq.filters.push(RecordFilter::StartsBefore(input::timestamp("to", to)?));
        }
        if let Some(s) = q.get("status") {
            let s =
                MeetingStatus::parse(s).ok_or_else(|| ApiError::BadRequest("status must be one of scheduled, canceled, no_show".into()))?;
            lq.filters.push(RecordFilter::Status(s));
        }
        if let Some(s) = q.get("source") {
            if !SOURCES.contains(&s.as_str()) {
                return Err(ApiError::BadRequest(format!("source must be one of {}", SOURCES.join(", "))));
            }
            lq.filters.push(RecordFilter::Source(s.clone()));
        }
        if let Some(c) = q.get("client_id") {
            lq.filters.push(RecordFilter::ClientId(input::parse_id(c)?));
        }
        Ok(lq)
    }

    fn create(body: &[u8]) -> ApiResult<Columns> {
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
        let mut cols = Columns { client_id: Some(m.client_id), ..Columns::default() };
        cols.set("source", MANUAL);
        cols.set("title", title);
        cols.set("starts_at", starts);
        cols.set("ends_at", ends);
        cols.set("description", m.description);
        cols.set("location", m.location);
        cols.set("meeting_url", m.meeting_url);
        cols.set("all_day", m.all_day.unwrap_or(false));
        cols.set("timezone", m.timezone);
        cols.set("status", status(m.status.as_deref().unwrap_or(MeetingStatus::Scheduled.as_str()))?.as_str());
        cols.set("attendees", attendees(m.attendees.unwrap_or_default())?);
        cols.set("notes", m.notes);
        Ok(cols)
    }

    fn patch(existing: &Value, body: &[u8]) -> ApiResult<Columns> {
        let p: MeetingPatch = input::parse_body(body)?;
        let source = existing.get("source").and_then(Value::as_str).unwrap_or(MANUAL).to_string();
        let cur = |k: &str| existing.get(k).cloned().unwrap_or(Value::Null);
        let mut cols = Columns::default();
        let mut source_owned_changes: Vec<&str> = Vec::new();
        // A column the source owns: noted when it would change.
        let mut set = |name: &'static str, new: Value, cols: &mut Columns| {
            if new != cur(name) {
                source_owned_changes.push(name);
            }
            cols.set(name, new);
        };

        if let Some(t) = p.title {
            set("title", required_text("title", &t, 500)?.into(), &mut cols);
        }
        let starts = match p.starts_at {
            Some(s) => {
                let s = input::timestamp("starts_at", &s)?;
                set("starts_at", Value::String(s.clone()), &mut cols);
                s
            }
            None => cur("starts_at").as_str().unwrap_or_default().to_string(),
        };
        let ends = match p.ends_at {
            Some(s) => {
                let s = input::timestamp("ends_at", &s)?;
                set("ends_at", Value::String(s.clone()), &mut cols);
                s
            }
            None => cur("ends_at").as_str().unwrap_or_default().to_string(),
        };
        for (name, val, max) in [("description", p.description, 20_000), ("location", p.location, 1000), ("timezone", p.timezone, 100)] {
            if let Some(v) = val {
                opt_bounded(name, &v, max)?;
                set(name, v.into(), &mut cols);
            }
        }
        if let Some(u) = p.meeting_url {
            url("meeting_url", &u)?;
            set("meeting_url", u.into(), &mut cols);
        }
        if let Some(a) = p.all_day {
            set("all_day", Value::Bool(a), &mut cols);
        }
        if let Some(s) = p.status {
            set("status", status(&s)?.as_str().into(), &mut cols);
        }
        if let Some(a) = p.attendees {
            set("attendees", attendees(a)?, &mut cols);
        }
        if source != MANUAL && !source_owned_changes.is_empty() {
            return Err(ApiError::Conflict(format!(
                "{} of a {source} meeting belong to {source}; change them there (here only client_id and notes can change)",
                source_owned_changes.join(", ")
            )));
        }
        // After the ownership check: on a synced meeting, touching its times is a 409 whatever they are.
        check_times(&starts, &ends)?;
        // Local fields, editable on every meeting (the store checks the client is the owner's).
        cols.client_id = p.client_id;
        if let Some(n) = p.notes {
            opt_bounded("notes", &n, 20_000)?;
            cols.set("notes", n);
        }
        Ok(cols)
    }
}
