//! `/api/clients`: an adviser's clients. Deleting one clears it from the
//! adviser's meetings and deletes its pipeline entries, each change logged
//! (see [`Store::delete_record`](crate::store::Store::delete_record)).

use serde::Deserialize;
use serde_json::Value;

use super::input::{self, nullable, opt_bounded, required_text};
use super::{paging, Columns, ListQuery, Resource};
use crate::http::error::{ApiError, ApiResult};
use crate::http::QueryParams;
use crate::store::records::RecordFilter;
use crate::store::Table;

pub struct Clients;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClient {
    name: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    notes: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    user_id: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientPatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    notes: Option<Option<String>>,
}

fn email(e: Option<String>) -> ApiResult<Option<String>> {
    match e.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) {
        Some(s) if !crate::store::users::valid_email(&s) => {
            Err(ApiError::Unprocessable(format!("email \"{}\" is not an email address", input::clip(&s))))
        }
        other => Ok(other),
    }
}

impl Resource for Clients {
    const TABLE: Table = Table::Clients;

    fn list_query(q: &QueryParams) -> ApiResult<ListQuery> {
        let mut lq = paging(q, &["q"], &["id"])?;
        if let Some(s) = q.get("q").filter(|s| !s.trim().is_empty()) {
            lq.filters.push(RecordFilter::Mentions(s.trim().to_string()));
        }
        Ok(lq)
    }

    fn create(body: &[u8]) -> ApiResult<Columns> {
        let c: NewClient = input::parse_body(body)?;
        let name = required_text("name", &c.name, 200)?;
        opt_bounded("phone", &c.phone, 50)?;
        opt_bounded("notes", &c.notes, 10_000)?;
        let mut cols = Columns::default();
        cols.set("name", name);
        cols.set("email", email(c.email)?);
        cols.set("phone", c.phone);
        cols.set("notes", c.notes);
        Ok(cols)
    }

    fn patch(_existing: &Value, body: &[u8]) -> ApiResult<Columns> {
        let p: ClientPatch = input::parse_body(body)?;
        let mut cols = Columns::default();
        if let Some(n) = p.name {
            cols.set("name", required_text("name", &n, 200)?);
        }
        if let Some(e) = p.email {
            cols.set("email", email(e)?);
        }
        if let Some(ph) = p.phone {
            opt_bounded("phone", &ph, 50)?;
            cols.set("phone", ph);
        }
        if let Some(n) = p.notes {
            opt_bounded("notes", &n, 10_000)?;
            cols.set("notes", n);
        }
        Ok(cols)
    }
}
